"""List filters by a Kenyan calendar day on a UTC timestamp column.

Flask-Admin's own datetime filters hand the column a naive datetime, which UTCDateTime
refuses (a 500), and a day typed by staff means a day in Nairobi, not in UTC: 00:30 on
the 21st in Nairobi is 21:30 on the 20th in UTC.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from flask import current_app
from flask_admin.babel import lazy_gettext
from flask_admin.contrib.sqla.filters import BaseSQLAFilter
from flask_admin.model import filters


def day_start(day: date) -> datetime:
    """Midnight at the start of `day` in Kenyan time (an aware datetime)."""
    return datetime.combine(day, time(0), tzinfo=current_app.config["SETTINGS"].tz)


class _KenyanDay(BaseSQLAFilter, filters.BaseDateFilter):
    def apply(self, query: Any, value: date, alias: Any = None) -> Any:
        column = self.get_column(alias)
        start, end = day_start(value), day_start(value + timedelta(days=1))
        return query.filter(*self.bounds(column, start, end))

    def bounds(self, column: Any, start: datetime, end: datetime) -> tuple[Any, ...]:
        raise NotImplementedError


class DayOn(_KenyanDay):
    def bounds(self, column: Any, start: datetime, end: datetime) -> tuple[Any, ...]:
        return (column >= start, column < end)

    def operation(self) -> str:
        return str(lazy_gettext("on (Kenyan date)"))


class DayFrom(_KenyanDay):
    def bounds(self, column: Any, start: datetime, end: datetime) -> tuple[Any, ...]:
        return (column >= start,)

    def operation(self) -> str:
        return str(lazy_gettext("from (Kenyan date)"))


class DayTo(_KenyanDay):
    def bounds(self, column: Any, start: datetime, end: datetime) -> tuple[Any, ...]:
        return (column < end,)

    def operation(self) -> str:
        return str(lazy_gettext("up to and including"))


def day_filters(column: Any, name: str) -> list[_KenyanDay]:
    """The three filters a list offers for one timestamp column."""
    return [DayOn(column, name), DayFrom(column, name), DayTo(column, name)]
