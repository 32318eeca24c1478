"""The journal summed for the statements: closed months from their monthly totals, the
rest from the journal lines themselves.

A statement over a year of a busy SACCO reads a million journal lines; a closed month
cannot change (the ledger refuses any posting dated inside it), so its lines are summed
once, by what places them on the chart (ledger kind, loan product, general account code)
and by entry kind (a statement may leave the year-end close out), into
journal_month_totals. `journal_totals` then reads each month wholly inside the range from
those rows and only the days outside them (the open months, the part-months at either
end) from the lines, so every figure is still the sum of its lines to the cent.

A month's totals are read only while the close they were built under stands: at most the
books' closed-through day, and built under that month's latest close (a month reopened
and closed again must be summed again: postings may have come in while it was open).
The nightly books-kpis job builds the totals of every month closed since; until then a
closed month is read from its lines, as an open one is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import case, delete, func, insert, literal, or_, select

from app.extensions import db
from app.models import Account, JournalEntry, JournalLine, Loan, PeriodEvent
from app.models.books import JournalMonthTotal
from app.services.ledger import books_closed_through

# The events that close a month (December's is the year-end close).
CLOSING = ("close", "year_end")

Row = tuple[str, int | None, str | None, Decimal]


def _groups() -> tuple[Any, ...]:
    """What places a ledger account on the chart: its kind, a loan's product (principal
    only: each product has its line), a general account's code."""
    product = case((Account.kind == "loan_principal", Loan.product_id), else_=literal(None))
    general = case((Account.kind == "general", Account.code), else_=literal(None))
    return Account.kind, product.label("product_id"), general.label("general_code")


def _month_start(month_end: date) -> date:
    return month_end.replace(day=1)


def _closes() -> dict[date, int]:
    """Each closed month's end and the id of its latest close."""
    return dict(
        db.session.execute(
            select(PeriodEvent.period_end, func.max(PeriodEvent.id))
            .where(PeriodEvent.action.in_(CLOSING))
            .group_by(PeriodEvent.period_end)
        ).all()
    )


def usable_months(closed: date | None = None) -> list[date]:
    """The month ends whose totals may be read now (sorted): closed, and built under the
    close that stands."""
    closed = closed if closed is not None else books_closed_through()
    if closed is None:
        return []
    closes = _closes()
    built = db.session.execute(
        select(JournalMonthTotal.month_end, JournalMonthTotal.event_id)
        .where(JournalMonthTotal.month_end <= closed)
        .distinct()
    ).all()
    return sorted({end for end, event in built if closes.get(end) == event})


def _outside(
    since: date | None, as_of: date, months: Sequence[date]
) -> list[tuple[date | None, date]]:
    """The day ranges (first, last; first None: from the beginning) of (since, as_of] that
    no month of `months` covers."""
    ranges: list[tuple[date | None, date]] = []
    start: date | None = since + timedelta(days=1) if since is not None else None
    for end in months:
        first = _month_start(end)
        if start is None or first > start:
            ranges.append((start, first - timedelta(days=1)))
        start = end + timedelta(days=1)
    if start is None or start <= as_of:
        ranges.append((start, as_of))
    return ranges


def journal_totals(
    *, as_of: date, since: date | None = None, exclude_kinds: Iterable[str] = ()
) -> list[Row]:
    """(ledger kind, loan product id or None, general code or None, debit-positive sum) of
    the journal lines with a value date after `since` (None: from the beginning) up to and
    including `as_of`, entries of `exclude_kinds` left out; a grouping may come twice (from
    the monthly totals and from the lines), the caller adds them up."""
    excluded = list(exclude_kinds)
    months = [
        end
        for end in usable_months()
        if end <= as_of and (since is None or _month_start(end) > since)
    ]
    rows: list[Row] = []
    if months:
        t = JournalMonthTotal
        stmt = (
            select(t.kind, t.product_id, t.general_code, func.sum(t.amount))
            .where(t.month_end.in_(months))
            .group_by(t.kind, t.product_id, t.general_code)
        )
        if excluded:
            stmt = stmt.where(t.entry_kind.not_in(excluded))
        rows += [(k, p, g, Decimal(a or 0)) for k, p, g, a in db.session.execute(stmt)]
    ranges = _outside(since, as_of, months)
    if ranges:
        kind, product, general = _groups()
        days = [
            JournalEntry.value_date <= last
            if first is None
            else JournalEntry.value_date.between(first, last)
            for first, last in ranges
        ]
        stmt = (
            select(kind, product, general, func.sum(JournalLine.amount))
            .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
            .join(Account, Account.id == JournalLine.account_id)
            .outerjoin(Loan, Loan.id == Account.loan_id)
            .where(or_(*days))
            .group_by(kind, product, general)
        )
        if excluded:
            stmt = stmt.where(JournalEntry.kind.not_in(excluded))
        rows += [(k, p, g, Decimal(a or 0)) for k, p, g, a in db.session.execute(stmt)]
    return rows


def journal_totals_refresh() -> list[date]:
    """Sum every closed month not yet summed under the close that stands (a month reopened
    and closed again is summed again). Holds the books' shared lock while it reads, so no
    month can be reopened under it. Commits; the months summed."""
    closed = books_closed_through(lock=True)
    if closed is None:
        db.session.commit()
        return []
    closes = {end: event for end, event in _closes().items() if end <= closed}
    have = set(usable_months(closed))
    done = []
    kind, product, general = _groups()
    for end, event in sorted(closes.items()):
        if end in have:
            continue
        db.session.execute(delete(JournalMonthTotal).where(JournalMonthTotal.month_end == end))
        summed = (
            select(
                literal(end).label("month_end"),
                kind,
                product,
                general,
                JournalEntry.kind.label("entry_kind"),
                func.sum(JournalLine.amount),
                literal(event).label("event_id"),
            )
            .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
            .join(Account, Account.id == JournalLine.account_id)
            .outerjoin(Loan, Loan.id == Account.loan_id)
            .where(JournalEntry.value_date.between(_month_start(end), end))
            .group_by(kind, product, general, JournalEntry.kind)
        )
        db.session.execute(
            insert(JournalMonthTotal).from_select(
                [
                    "month_end",
                    "kind",
                    "product_id",
                    "general_code",
                    "entry_kind",
                    "amount",
                    "event_id",
                ],
                summed,
            )
        )
        done.append(end)
    db.session.commit()
    return done
