"""Reads for the collections desk: an officer's loans in arrears in the order to work
them today, each loan's activity, the day's target and progress, and the team leaderboard.

Every figure is an aggregate the database computes (sums grouped by loan or by officer);
no list here loads the book to add it up in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import and_, case, exists, func, or_, select, type_coerce

from app.extensions import db
from app.models import (
    Installment,
    JournalEntry,
    JournalLine,
    Loan,
    Member,
    PromiseToPay,
    SmsMessage,
    StaffUser,
)
from app.models.recovery import CollectionTarget, ContactLog
from app.models.types import Money
from app.money import ZERO
from app.selectors.loans import LIVE_STATUSES, UNPAID
from app.selectors.promises import Fulfilment, month_bounds, officer_promise_keeping
from app.sms_templates import sms_body_for_staff
from app.words import plural

# A loan this many days late or fewer is "newly late": a call now is worth most.
NEWLY_LATE_DAYS = 7
# A broken promise stays near the top of the desk this many days after its date.
BROKEN_RECENT_DAYS = 7
OFFICER_ROLES = ("loan_officer", "branch_manager")

# The desk's order of work; the number is the sort key.
DUE_TODAY, BROKEN, NEWLY_LATE, BIGGEST = 1, 2, 3, 4

_PRINCIPAL_LEFT = type_coerce(Installment.principal_due - Installment.principal_paid, Money())


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """A Kenyan business day as an aware [start, end) range for UTC timestamp columns."""
    tz = current_app.config["SETTINGS"].tz
    start = datetime.combine(day, time(0), tzinfo=tz)
    return start, start + timedelta(days=1)


def loan_arrears(*, loan_id: int, as_of: date) -> Decimal:
    """What fell due on a loan before `as_of` and is still unpaid (every component)."""
    owed = db.session.scalar(
        select(func.sum(UNPAID)).where(
            Installment.loan_id == loan_id,
            Installment.superseded.is_(False),
            Installment.due_date < as_of,
        )
    )
    return owed or ZERO


# --- the officer desk ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeskRow:
    loan_id: int
    loan_no: str
    member_id: int
    member_no: str
    member_name: str
    phone: str
    days_past_due: int
    arrears: Decimal
    priority: int
    promise: PromiseToPay | None  # the promise that put it here, or the latest one
    last_contact_at: datetime | None
    last_outcome: str | None

    @property
    def reason(self) -> str:
        """Why the loan is where it is on the list, in words."""
        p = self.promise
        if self.priority == DUE_TODAY and p is not None:
            return f"promised KES {p.amount:,.2f} by today"
        if self.priority == BROKEN and p is not None:
            if p.status == "open":
                return f"promise of KES {p.amount:,.2f} for {p.promised_date:%d/%m} passed unpaid"
            if p.status == "partly":
                paid = p.paid_amount or ZERO
                return (
                    f"promise of KES {p.amount:,.2f} for {p.promised_date:%d/%m} partly kept "
                    f"(KES {paid:,.2f} paid)"
                )
            return f"promise of KES {p.amount:,.2f} for {p.promised_date:%d/%m} broken"
        if self.priority == NEWLY_LATE:
            return f"newly late: {self.days_past_due} day{'s' if self.days_past_due != 1 else ''}"
        return f"KES {self.arrears:,.2f} in arrears, {plural(self.days_past_due, 'day')} late"


def _officer_clause(officer_id: int | None) -> Any:
    return Loan.officer_id.is_(None) if officer_id is None else Loan.officer_id == officer_id


def officer_desk(
    *, officer_id: int | None, as_of: date, page: int, per_page: int
) -> tuple[list[DeskRow], int]:
    """One page of the officer's loans in arrears (officer None: loans nobody follows up),
    in the order to work them today: a promise due today, a promise broken in the last
    week (one dated yesterday shows this morning, settled or not yet), newly late (1 to 7
    days), then the rest; biggest arrears first within each. And how many in all."""
    mine = (
        _officer_clause(officer_id),
        Loan.status.in_(LIVE_STATUSES),
        Loan.days_past_due > 0,
    )
    total = db.session.scalar(select(func.count()).select_from(Loan).where(*mine)) or 0
    arrears = (
        select(Installment.loan_id, func.sum(UNPAID).label("owed"))
        .join(Loan, Loan.id == Installment.loan_id)
        .where(*mine, Installment.superseded.is_(False), Installment.due_date < as_of)
        .group_by(Installment.loan_id)
        .subquery()
    )
    due_today = exists().where(
        PromiseToPay.loan_id == Loan.id,
        PromiseToPay.status == "open",
        PromiseToPay.promised_date == as_of,
    )
    broken = exists().where(
        PromiseToPay.loan_id == Loan.id,
        PromiseToPay.promised_date < as_of,
        PromiseToPay.promised_date >= as_of - timedelta(days=BROKEN_RECENT_DAYS),
        # "open" past its date: the morning job has not settled it yet; it is late all
        # the same (paid in full, it would have been settled kept the day it was paid).
        PromiseToPay.status.in_(("broken", "partly", "open")),
    )
    priority = case(
        (due_today, DUE_TODAY),
        (broken, BROKEN),
        (Loan.days_past_due <= NEWLY_LATE_DAYS, NEWLY_LATE),
        else_=BIGGEST,
    ).label("priority")
    owed = type_coerce(func.coalesce(arrears.c.owed, 0), Money()).label("owed")
    rows = db.session.execute(
        select(
            Loan.id,
            Loan.loan_no,
            Loan.member_id,
            Loan.days_past_due,
            Member.member_no,
            Member.name,
            Member.phone,
            owed,
            priority,
        )
        .join(Member, Member.id == Loan.member_id)
        .outerjoin(arrears, arrears.c.loan_id == Loan.id)
        .where(*mine)
        .order_by(
            priority,
            # coalesced: SQLite and PostgreSQL put NULLs at opposite ends
            func.coalesce(arrears.c.owed, 0).desc(),
            Loan.days_past_due.desc(),
            Loan.id,
        )
        .offset(max(page - 1, 0) * per_page)
        .limit(per_page)
    ).all()
    ids = [r.id for r in rows]
    promises = _desk_promises(ids, as_of)
    contacts = _last_contacts(ids)
    return [
        DeskRow(
            loan_id=r.id,
            loan_no=r.loan_no or f"#{r.id}",
            member_id=r.member_id,
            member_no=r.member_no or "",
            member_name=r.name,
            phone=r.phone or "",
            days_past_due=r.days_past_due,
            arrears=r.owed or ZERO,
            priority=r.priority,
            promise=promises.get(r.id),
            last_contact_at=contacts.get(r.id, (None, None))[0],
            last_outcome=contacts.get(r.id, (None, None))[1],
        )
        for r in rows
    ], total


def _desk_promises(loan_ids: Sequence[int], as_of: date) -> dict[int, PromiseToPay]:
    """Per loan of a page: the open promise if any, else the latest one (one query)."""
    if not loan_ids:
        return {}
    found: dict[int, PromiseToPay] = {}
    rows = db.session.scalars(
        select(PromiseToPay)
        .where(
            PromiseToPay.loan_id.in_(loan_ids),
            or_(
                PromiseToPay.status == "open",
                PromiseToPay.promised_date >= as_of - timedelta(days=BROKEN_RECENT_DAYS),
            ),
        )
        .order_by(PromiseToPay.loan_id, PromiseToPay.promised_date.desc(), PromiseToPay.id.desc())
    )
    for promise in rows:
        held = found.get(promise.loan_id)
        # One open promise at most per loan; it is the one to act on when its day comes.
        if held is None or (promise.status == "open" and promise.promised_date <= as_of):
            found[promise.loan_id] = promise
    return found


def _last_contacts(loan_ids: Sequence[int]) -> dict[int, tuple[datetime, str]]:
    if not loan_ids:
        return {}
    latest = (
        select(ContactLog.loan_id, func.max(ContactLog.id).label("id"))
        .where(ContactLog.loan_id.in_(loan_ids))
        .group_by(ContactLog.loan_id)
        .subquery()
    )
    rows = db.session.execute(
        select(ContactLog.loan_id, ContactLog.at, ContactLog.outcome).join(
            latest, latest.c.id == ContactLog.id
        )
    )
    return {r.loan_id: (r.at, r.outcome) for r in rows}


def collection_officers() -> list[StaffUser]:
    """Who can be given loans: active loan officers and branch managers, by email."""
    return list(
        db.session.scalars(
            select(StaffUser)
            .where(StaffUser.role.in_(OFFICER_ROLES), StaffUser.active.is_(True))
            .order_by(StaffUser.email)
        )
    )


# --- targets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetProgress:
    day: date
    target: CollectionTarget | None
    collected: Decimal  # repayments on the officer's loans with this value date
    contacted: int  # distinct loans the officer logged a contact for today

    def percent(self, done: Decimal | int, goal: Decimal | int | None) -> int | None:
        if not goal:
            return None
        return min(int(Decimal(100) * Decimal(done) / Decimal(goal)), 100)

    @property
    def collected_percent(self) -> int | None:
        return self.percent(self.collected, self.target.amount if self.target else None)

    @property
    def contacted_percent(self) -> int | None:
        return self.percent(self.contacted, self.target.accounts if self.target else None)


def _collected(*where: Any) -> Any:
    """Money received by repayment entries (their debit line: what came in, whatever it
    paid), on loans matching `where`."""
    return (
        select(Loan.officer_id, func.sum(JournalLine.amount).label("collected"))
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .join(Loan, Loan.id == JournalEntry.loan_id)
        .where(JournalEntry.kind == "repayment", JournalLine.amount > 0, *where)
        .group_by(Loan.officer_id)
    )


def target_progress(*, officer_id: int, day: date) -> TargetProgress:
    target = db.session.scalar(
        select(CollectionTarget).where(
            CollectionTarget.staff_id == officer_id, CollectionTarget.day == day
        )
    )
    collected = db.session.execute(
        _collected(Loan.officer_id == officer_id, JournalEntry.value_date == day)
    ).first()
    start, end = day_bounds(day)
    contacted = db.session.scalar(
        select(func.count(func.distinct(ContactLog.loan_id))).where(
            ContactLog.staff_id == officer_id, ContactLog.at >= start, ContactLog.at < end
        )
    )
    return TargetProgress(
        day=day,
        target=target,
        collected=(collected.collected if collected else None) or ZERO,
        contacted=int(contacted or 0),
    )


# --- the leaderboard -------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaderRow:
    officer_id: int
    email: str
    name: str
    collected: Decimal
    keeping: Fulfilment
    book: Decimal  # outstanding principal of their live loans
    par30_principal: Decimal  # of that, on loans more than 30 days late

    @property
    def par30(self) -> Decimal | None:
        """PAR30 as a percentage to one place; None for an empty book."""
        if not self.book:
            return None
        return (Decimal(100) * self.par30_principal / self.book).quantize(Decimal("0.1"))


def team_leaderboard(*, month: date) -> list[LeaderRow]:
    """Per officer: repayments on their loans this month (by value date), how their
    members kept promises falling due this month, and PAR30 of their book now. Four
    grouped queries, one row per officer each; the biggest collector first."""
    start, end = month_bounds(month)
    collected = {
        r.officer_id: r.collected or ZERO
        for r in db.session.execute(
            _collected(JournalEntry.value_date >= start, JournalEntry.value_date < end)
        )
    }
    keeping = officer_promise_keeping(start=start, end=end)
    late = Loan.days_past_due > 30
    books = {
        r.officer_id: (r.book or ZERO, r.par30 or ZERO)
        for r in db.session.execute(
            select(
                Loan.officer_id,
                func.sum(_PRINCIPAL_LEFT).label("book"),
                type_coerce(func.sum(case((late, _PRINCIPAL_LEFT), else_=0)), Money()).label(
                    "par30"
                ),
            )
            .join(Installment, Installment.loan_id == Loan.id)
            .where(Loan.status.in_(LIVE_STATUSES), Installment.superseded.is_(False))
            .group_by(Loan.officer_id)
        )
    }
    holders = {k for k in (*collected, *keeping, *books) if k is not None}
    staff = db.session.scalars(
        select(StaffUser).where(
            or_(
                and_(StaffUser.role == "loan_officer", StaffUser.active.is_(True)),
                StaffUser.id.in_(holders),
            )
        )
    ).all()
    rows = [
        LeaderRow(
            officer_id=s.id,
            email=s.email,
            name=s.name or s.email,
            collected=collected.get(s.id, ZERO),
            keeping=keeping.get(s.id, Fulfilment(0, 0, 0)),
            book=books.get(s.id, (ZERO, ZERO))[0],
            par30_principal=books.get(s.id, (ZERO, ZERO))[1],
        )
        for s in staff
    ]
    return sorted(rows, key=lambda r: (-r.collected, r.email))


# --- a loan's activity -----------------------------------------------------------------------


@dataclass(frozen=True)
class Activity:
    at: datetime
    kind: str  # contact | promise | payment | sms
    text: str
    who: str | None = None


def loan_timeline(*, loan_id: int, page: int, per_page: int) -> tuple[list[Activity], bool]:
    """One page of what happened on a loan, newest first: contacts, promises, repayments
    and the member's SMS. Each source reads at most as far as this page reaches; whether
    there is more is the second value."""
    loan = db.session.get(Loan, loan_id)
    if loan is None:
        return [], False
    reach = page * per_page + 1
    events: list[Activity] = []
    for log, email in db.session.execute(
        select(ContactLog, StaffUser.email)
        .join(StaffUser, StaffUser.id == ContactLog.staff_id)
        .where(ContactLog.loan_id == loan_id)
        .order_by(ContactLog.at.desc(), ContactLog.id.desc())
        .limit(reach)
    ):
        text = f"{log.kind}: {log.outcome.replace('_', ' ')}"
        events.append(
            Activity(log.at, "contact", f"{text}. {log.note}" if log.note else text, email)
        )
    for promise, email in db.session.execute(
        select(PromiseToPay, StaffUser.email)
        .outerjoin(StaffUser, StaffUser.id == PromiseToPay.recorded_by_id)
        .where(PromiseToPay.loan_id == loan_id)
        .order_by(PromiseToPay.created_at.desc(), PromiseToPay.id.desc())
        .limit(reach)
    ):
        text = (
            f"promise of KES {promise.amount:,.2f} by {promise.promised_date:%d/%m/%Y} "
            f"({promise.channel}): {promise.status}"
        )
        if promise.paid_amount is not None and promise.status != "open":
            text += f", KES {promise.paid_amount:,.2f} paid towards it"
        events.append(Activity(promise.created_at, "promise", text, email))
    for _id, posted_at, description, amount in db.session.execute(
        select(
            JournalEntry.id,
            JournalEntry.posted_at,
            JournalEntry.description,
            func.sum(JournalLine.amount),
        )
        .join(JournalLine, JournalLine.entry_id == JournalEntry.id)
        .where(
            JournalEntry.loan_id == loan_id,
            JournalEntry.kind == "repayment",
            JournalLine.amount > 0,
        )
        .group_by(JournalEntry.id, JournalEntry.posted_at, JournalEntry.description)
        .order_by(JournalEntry.posted_at.desc(), JournalEntry.id.desc())
        .limit(reach)
    ):
        events.append(
            Activity(posted_at, "payment", f"KES {amount or ZERO:,.2f} received: {description}")
        )
    for sms in db.session.scalars(
        select(SmsMessage)
        .where(SmsMessage.member_id == loan.member_id)
        .order_by(SmsMessage.created_at.desc(), SmsMessage.id.desc())
        .limit(reach)
    ):
        events.append(
            Activity(
                sms.created_at,
                "sms",
                f"{sms.template.replace('_', ' ')} ({sms.status}): "
                f"{sms_body_for_staff(sms.template, sms.body)}",  # codes starred out
            )
        )
    events.sort(key=lambda e: e.at, reverse=True)
    start = (page - 1) * per_page
    return events[start : start + per_page], len(events) > start + per_page
