"""Suspicious activity read from the audit log, for the dashboard's alert.

Three rules, each one aggregate query over a bounded window of `audit_log.at` (indexed), so
the cost follows the window, not the size of the log:

- failed sign-ins: FAILED_LOGINS or more `staff.login_failed` rows for one email, or from one
  address, in the last FAILED_LOGIN_WINDOW;
- write-offs and reversals: RISKY_PER_DAY or more such actions by one staff member on one
  Kenyan day, over the last LOOKBACK_DAYS days (today included);
- out of hours: anything a staff member did before WORK_START or from WORK_END on, or on a
  Sunday, Kenyan time, over the same days, but for ROUTINE actions.

Decisions where the issue is silent:

- Only actors named "staff:<email>" count for the last two rules: jobs ("system"), members
  on USSD and unknown emails ("anonymous") do their work at any hour. A failed sign-in is
  grouped by the email typed (the log's object id), whoever it names, and by the address
  kept in the row's `after`.
- Write-off and reversal actions are `loan.write_off`, anything under `write_off.` (the
  board workflow) and any action naming a reversal (`loan.penalty_reverse` and those to
  come), counted together: three different ones by one person in a day are as unusual as
  three of one kind.
- The Kenyan day and the working hours are turned into UTC ranges here (the zone comes from
  the settings) and handed to the database as plain comparisons on `at`: the same SQL on
  SQLite and PostgreSQL, and the index on `at` still serves it. Keys that need bound
  parameters (a JSON key, a CASE of days) are grouped in an outer query over a subquery:
  PostgreSQL refuses a GROUP BY whose parameters are numbered apart from the SELECT's.
- Each rule lists at most ALERT_ROWS lines, the largest counts first.
- The box lists what needs someone's attention. A staff member signing in or out at night
  (ROUTINE) is not that: it listed every viewer's own evening sign-in. What they did once
  signed in (a loan approved, a member changed, a refusal, a download) still counts out of
  hours, and failed sign-ins have their own rule whatever the hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select

from app.extensions import db
from app.models import AuditLog

FAILED_LOGINS = 5
FAILED_LOGIN_WINDOW = timedelta(hours=24)
RISKY_PER_DAY = 3
LOOKBACK_DAYS = 7
WORK_START = time(7, 0)
WORK_END = time(19, 0)
SUNDAY = 6  # date.weekday()
ALERT_ROWS = 10
STAFF_PREFIX = "staff:"
LOGIN_FAILED = "staff.login_failed"
ROUTINE = ("staff.login", "staff.logout")  # not worth an alert at any hour


@dataclass(frozen=True)
class Alert:
    rule: str  # failed_logins_email | failed_logins_address | risky_actions | out_of_hours
    who: str  # the email, the address, or the staff actor ("staff:<email>")
    count: int
    first: datetime  # UTC, aware
    last: datetime
    day: date | None = None  # the Kenyan day, for the per-day rule

    @property
    def actor(self) -> str | None:
        return self.who if self.who.startswith(STAFF_PREFIX) else None


def _aware(moment: datetime | str) -> datetime:
    """MIN/MAX of a timestamp come back without the column's type on SQLite (a string)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _start_of(day: date, tz: tzinfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)


def _at(day: date, clock: time, tz: tzinfo) -> datetime:
    return datetime.combine(day, clock, tzinfo=tz).astimezone(UTC)


def _days(today: date) -> list[date]:
    return [today - timedelta(days=k) for k in range(LOOKBACK_DAYS - 1, -1, -1)]


def _is_risky() -> Any:
    action = AuditLog.action
    return or_(
        action == "loan.write_off",
        action.like("write_off.%"),
        action.like("%revers%"),
    )


def failed_logins(*, now: datetime) -> list[Alert]:
    """Emails and addresses with FAILED_LOGINS or more failed sign-ins in the window."""
    since = now - FAILED_LOGIN_WINDOW
    recent = and_(AuditLog.action == LOGIN_FAILED, AuditLog.at >= since, AuditLog.at <= now)
    by_email = db.session.execute(
        select(AuditLog.object_id, func.count(), func.min(AuditLog.at), func.max(AuditLog.at))
        .where(recent)
        .group_by(AuditLog.object_id)
        .having(func.count() >= FAILED_LOGINS)
        .order_by(func.count().desc(), AuditLog.object_id)
        .limit(ALERT_ROWS)
    ).all()
    tried = (
        select(AuditLog.after["address"].as_string().label("address"), AuditLog.at)
        .where(recent)
        .subquery()
    )
    by_address = db.session.execute(
        select(tried.c.address, func.count(), func.min(tried.c.at), func.max(tried.c.at))
        .where(tried.c.address.is_not(None), tried.c.address != "")
        .group_by(tried.c.address)
        .having(func.count() >= FAILED_LOGINS)
        .order_by(func.count().desc(), tried.c.address)
        .limit(ALERT_ROWS)
    ).all()
    return [
        Alert("failed_logins_email", who, int(n), _aware(a), _aware(b)) for who, n, a, b in by_email
    ] + [
        Alert("failed_logins_address", who, int(n), _aware(a), _aware(b))
        for who, n, a, b in by_address
    ]


def risky_actions(*, today: date, now: datetime, tz: tzinfo) -> list[Alert]:
    """Staff members with RISKY_PER_DAY or more write-off or reversal actions on one
    Kenyan day of the last LOOKBACK_DAYS."""
    days = _days(today)
    kenyan_day = case(
        *(
            (
                and_(
                    AuditLog.at >= _start_of(d, tz), AuditLog.at < _start_of(d + timedelta(1), tz)
                ),
                literal(d.isoformat()),
            )
            for d in days
        ),
    )
    done = (
        select(AuditLog.actor, kenyan_day.label("day"), AuditLog.at)
        .where(
            AuditLog.at >= _start_of(days[0], tz),
            AuditLog.at <= now,
            AuditLog.actor.like(f"{STAFF_PREFIX}%"),
            _is_risky(),
        )
        .subquery()
    )
    rows = db.session.execute(
        select(done.c.actor, done.c.day, func.count(), func.min(done.c.at), func.max(done.c.at))
        .group_by(done.c.actor, done.c.day)
        .having(func.count() >= RISKY_PER_DAY)
        .order_by(func.count().desc(), done.c.day.desc(), done.c.actor)
        .limit(ALERT_ROWS)
    ).all()
    return [
        Alert("risky_actions", who, int(n), _aware(a), _aware(b), date.fromisoformat(day))
        for who, day, n, a, b in rows
    ]


def out_of_hours_windows(*, today: date, tz: tzinfo) -> list[tuple[datetime, datetime]]:
    """The UTC stretches of the last LOOKBACK_DAYS Kenyan days outside working hours:
    before WORK_START and from WORK_END on, and the whole of a Sunday."""
    windows = []
    for day in _days(today):
        start, end = _start_of(day, tz), _start_of(day + timedelta(days=1), tz)
        if day.weekday() == SUNDAY:
            windows.append((start, end))
        else:
            windows += [(start, _at(day, WORK_START, tz)), (_at(day, WORK_END, tz), end)]
    return windows


def out_of_hours(*, today: date, now: datetime, tz: tzinfo) -> list[Alert]:
    """Staff members who did anything outside working hours in the last LOOKBACK_DAYS."""
    windows = out_of_hours_windows(today=today, tz=tz)
    outside = or_(*(and_(AuditLog.at >= a, AuditLog.at < b) for a, b in windows))
    rows = db.session.execute(
        select(AuditLog.actor, func.count(), func.min(AuditLog.at), func.max(AuditLog.at))
        .where(
            AuditLog.at >= windows[0][0],
            AuditLog.at <= now,
            AuditLog.actor.like(f"{STAFF_PREFIX}%"),
            AuditLog.action.not_in(ROUTINE),
            outside,
        )
        .group_by(AuditLog.actor)
        .order_by(func.count().desc(), AuditLog.actor)
        .limit(ALERT_ROWS)
    ).all()
    return [Alert("out_of_hours", who, int(n), _aware(a), _aware(b)) for who, n, a, b in rows]


def suspicious_activity(*, now: datetime, tz: tzinfo) -> list[Alert]:
    """Every rule's alerts, in the order the dashboard shows them (four queries)."""
    today = now.astimezone(tz).date()
    return (
        failed_logins(now=now)
        + risky_actions(today=today, now=now, tz=tz)
        + out_of_hours(today=today, now=now, tz=tz)
    )
