""" "Today" is the business date in Kenya (`TIMEZONE`), never the host's date: a server on
UTC would otherwise start tomorrow's penalties three hours late, or yesterday's early."""

from __future__ import annotations

from datetime import date, datetime

from flask import current_app


def business_today() -> date:
    return datetime.now(current_app.config["SETTINGS"].tz).date()


def business_date(moment: datetime | None) -> date:
    """The business date of a moment (an M-PESA time, when a promise was made); today's
    when there is none."""
    if moment is None:
        return business_today()
    return moment.astimezone(current_app.config["SETTINGS"].tz).date()
