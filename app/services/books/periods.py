"""Closing the books: a month at a time, the year with its result moved to retained
earnings, and reopening (an admin's audited act, with a reason).

Closed means final: `journal_post` refuses any value date on or before the last closed
day (app.services.ledger.period_guard), so a correction posts in the open period and names
the entry it corrects (`journal_correct`).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, or_, select

from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import Account, BooksState, ChartAccount, JournalEntry, JournalLine, PeriodEvent
from app.money import ZERO
from app.services.audit import audit_record
from app.services.books.chart import GENERAL_PREFIX, RESULT_TYPES, YEAR_END_KIND, kinds_of_type
from app.services.bulk import insert_ignoring
from app.services.ledger import (
    GL_ACCOUNTS,
    LedgerError,
    Line,
    books_closed_through,
    credit,
    debit,
    gl_account,
    journal_post,
)
from app.services.permissions import permission_require


class PeriodError(SaccoError):
    """A close or reopen that must not happen; nothing was written."""


def month_bounds(day: date) -> tuple[date, date]:
    """The first and last day of `day`'s month."""
    last = calendar.monthrange(day.year, day.month)[1]
    return day.replace(day=1), day.replace(day=last)


def _state_locked() -> BooksState:
    """The one books_state row, created if missing and locked against postings' checks."""
    db.session.execute(insert_ignoring(BooksState, ["id"]), [{"id": 1, "closed_through": None}])
    state = db.session.scalar(
        select(BooksState)
        .where(BooksState.id == 1)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert state is not None  # inserted above
    return state


def _actor(actor: Any) -> str:
    email = getattr(actor, "email", None)
    return f"staff:{email}" if email else str(actor)


def period_close(*, month: date, actor: Any) -> PeriodEvent:
    """Close the month holding `month` (and, for December, the year). Months close in
    order and only once over; after this no posting may carry a date inside them. Commits."""
    permission_require(actor, "books.close")
    start, end = month_bounds(month)
    if end >= business_today():
        raise PeriodError(f"{start:%B %Y} is not over yet: it closes from {end + timedelta(1)}")
    state = _state_locked()
    closed = state.closed_through
    if closed is not None and end <= closed:
        db.session.rollback()
        raise PeriodError(f"{start:%B %Y} is closed already")
    if closed is not None and start > closed + timedelta(days=1):
        waiting = month_bounds(closed + timedelta(days=1))[0]
        db.session.rollback()
        raise PeriodError(f"close {waiting:%B %Y} first: months close in order")
    entry = None
    if end.month == 12:
        entry = _year_end_entry(end.year, _actor(actor))
    state.closed_through = end
    event = PeriodEvent(
        action="year_end" if entry is not None or end.month == 12 else "close",
        period_start=start,
        period_end=end,
        actor=_actor(actor),
        entry_id=entry.id if entry is not None else None,
    )
    db.session.add(event)
    audit_record(
        actor=_actor(actor),
        action="books.close",
        object_type="period",
        object_id=f"{start:%Y-%m}",
        before={"closed_through": closed.isoformat() if closed else None},
        after={"closed_through": end.isoformat(), "year_end_entry": event.entry_id},
    )
    db.session.commit()
    return event


def period_reopen(*, month: date, actor: Any, reason: str) -> PeriodEvent:
    """Reopen the closed month holding `month`, and every month closed after it (the books
    close in order). An admin's act, audited with the reason. Commits."""
    permission_require(actor, "books.reopen")
    reason = (reason or "").strip()
    if len(reason) < 5:
        raise PeriodError("say why the period reopens (a few words at least)")
    start, end = month_bounds(month)
    state = _state_locked()
    closed = state.closed_through
    if closed is None or closed < end:
        db.session.rollback()
        raise PeriodError(f"{start:%B %Y} is not closed")
    state.closed_through = start - timedelta(days=1)
    event = PeriodEvent(
        action="reopen",
        period_start=start,
        period_end=closed,
        actor=_actor(actor),
        reason=reason[:255],
    )
    db.session.add(event)
    audit_record(
        actor=_actor(actor),
        action="books.reopen",
        object_type="period",
        object_id=f"{start:%Y-%m}",
        before={"closed_through": closed.isoformat()},
        after={"closed_through": state.closed_through.isoformat()},
        note=reason,
    )
    db.session.commit()
    return event


def _result_accounts_filter() -> Any:
    """Ledger accounts whose balance is the year's result: income, expense and the
    dividends declared out of it (closed to retained earnings with the year)."""
    kinds = [*kinds_of_type("income"), *kinds_of_type("expense"), "dividends"]
    general = select(ChartAccount.maps).where(
        ChartAccount.type.in_(RESULT_TYPES), ChartAccount.maps.like(f"{GENERAL_PREFIX}%")
    )
    return or_(Account.kind.in_(kinds), and_(Account.kind == "general", Account.code.in_(general)))


def _year_end_entry(year: int, actor: str) -> JournalEntry | None:
    """Move what the year's result accounts still hold for the year to retained earnings,
    dated the year's last day. After a reopen and a second close only the difference
    moves (each close numbered in the key, so the entries never collide)."""
    first, last = date(year, 1, 1), date(year, 12, 31)
    rows = db.session.execute(
        select(Account, func.sum(JournalLine.amount))
        .join(JournalLine, JournalLine.account_id == Account.id)
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .where(_result_accounts_filter(), JournalEntry.value_date.between(first, last))
        .group_by(Account.id)
        .order_by(Account.id)
    ).all()
    lines: list[Line] = []
    total = ZERO
    for account, amount in rows:
        amount = Decimal(amount or 0)
        if amount == 0:
            continue
        lines.append(credit(account, amount) if amount > 0 else debit(account, -amount))
        total += amount
    if not lines:
        return None
    retained = gl_account("GL-RETAINED-EARNINGS")
    # The result accounts were debit-heavy by `total` (a loss): retained earnings takes it.
    lines.append(debit(retained, total) if total > 0 else credit(retained, -total))
    earlier = db.session.scalar(
        select(func.count(PeriodEvent.id)).where(
            PeriodEvent.action == "year_end", PeriodEvent.period_end == last
        )
    )
    try:
        return journal_post(
            kind=YEAR_END_KIND,
            lines=lines,
            value_date=last,
            description=f"Year-end close {year}: the year's result to retained earnings",
            idempotency_key=f"year-end:{year}:{(earlier or 0) + 1}",
            actor=actor,
        )
    except LedgerError as exc:
        db.session.rollback()
        raise PeriodError(str(exc)) from exc


@dataclass(frozen=True)
class PeriodStatus:
    closed_through: date | None
    next_to_close: date  # the first day of the month that closes next
    events: list[PeriodEvent]


def periods_status(limit: int = 24) -> PeriodStatus:
    """What the console shows: the last closed day, the month that closes next, history."""
    closed = books_closed_through()
    if closed is None:
        first = db.session.scalar(select(func.min(JournalEntry.value_date)))
        next_month = month_bounds(first or business_today())[0]
    else:
        next_month = closed + timedelta(days=1)
    events = list(
        db.session.scalars(select(PeriodEvent).order_by(PeriodEvent.id.desc()).limit(limit))
    )
    return PeriodStatus(closed, next_month, events)


def journal_correct(
    *,
    corrects_entry_id: int,
    lines: list[tuple[str, Decimal]],
    value_date: date,
    description: str,
    actor: Any,
) -> JournalEntry:
    """A correction of an entry in a closed period, posted in the open one and naming what
    it corrects. `lines`: (ledger account code, signed amount, debit positive). Commits."""
    permission_require(actor, "books.journal")
    original = db.session.get(JournalEntry, corrects_entry_id)
    if original is None:
        raise PeriodError(f"no journal entry #{corrects_entry_id} to correct")
    return journal_manual(
        lines=lines,
        value_date=value_date,
        description=f"Correction of #{original.id}: {description}",
        actor=actor,
        corrects_entry_id=original.id,
    )


def journal_manual(
    *,
    lines: list[tuple[str, Decimal]],
    value_date: date,
    description: str,
    actor: Any,
    corrects_entry_id: int | None = None,
) -> JournalEntry:
    """A general journal entry by staff onto general-ledger accounts (GL-… or COA-…): never
    onto a member's or a loan's account, which only their own services move. Commits."""
    permission_require(actor, "books.journal")
    if not description.strip():
        raise PeriodError("a journal entry needs a description")
    codes = [code for code, _ in lines]
    accounts = {
        a.code: a for a in db.session.scalars(select(Account).where(Account.code.in_(codes)))
    }
    posted: list[Line] = []
    for code, amount in lines:
        account = accounts.get(code)
        if account is None and code in GL_ACCOUNTS:
            account = gl_account(code)  # a GL account nothing has posted to yet
        if account is None:
            raise PeriodError(f"no account {code}")
        if account.member_id is not None or account.loan_id is not None:
            raise PeriodError(f"{code} is a member's or a loan's account: use its own service")
        posted.append(Line(account, amount))
    try:
        entry = journal_post(
            kind="journal",
            lines=posted,
            value_date=value_date,
            description=description.strip(),
            actor=_actor(actor),
            corrects_entry_id=corrects_entry_id,
        )
    except LedgerError as exc:
        db.session.rollback()
        raise PeriodError(str(exc)) from exc
    audit_record(
        actor=_actor(actor),
        action="journal.post",
        object_type="journal_entry",
        object_id=entry.id,
        after={"lines": [[c, str(a)] for c, a in lines], "value_date": value_date.isoformat()},
        note=description.strip(),
    )
    db.session.commit()
    return entry
