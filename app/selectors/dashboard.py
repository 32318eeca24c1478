"""The console's landing page figures: each one an aggregate query (COUNT / SUM / GROUP BY)
that returns a handful of rows whatever the size of the book, never rows summed in Python.

Decisions where the issue is silent:

- Outstanding principal is the ledger's cached balance of each live loan's principal
  account (`sacco ledger check` proves it equals what the schedule says), one account a
  loan instead of a dozen installment rows.
- PAR30 counts loans more than 30 days past due, as `portfolio_at_risk` and the daily
  snapshot do, so the dashboard and the snapshot never disagree on the same day; the
  buckets are those of `aging_bucket`, worked out from `days_past_due` in SQL.
- "Collected" is loan repayments: the money side of every `repayment` journal entry by
  its value date (M-PESA, suspense money staff placed, or savings), so a repayment
  staff record by hand counts too; deposits to savings do not.
- An officer's collections are the STK prompts that officer sent from the console and
  the member paid (requested_by "staff:<email>", status succeeded), by the time the
  payment completed. Approvals are loans whose checker (approved_by_id) they were,
  by decision time; recommendations count this month's applications they recommended
  (a loan keeps who recommended it, not when).
- SMS delivery rate: delivered over delivered + failed, for messages written in the last
  30 days; messages still waiting for a report are shown apart, not counted as failures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal

from sqlalchemy import Case, and_, case, func, select

from app.extensions import db
from app.models import (
    Account,
    JournalEntry,
    JournalLine,
    Loan,
    Member,
    MpesaRequest,
    Payment,
    SmsMessage,
    StaffUser,
)
from app.money import ZERO
from app.selectors.loans import LIVE_STATUSES

BUCKETS = ("current", "1-30", "31-60", "61-90", "90+")
PAR_BUCKETS = ("31-60", "61-90", "90+")  # more than 30 days past due
AWAITING_DECISION = ("submitted", "recommended")
CHART_DAYS = 30
OFFICER_ROWS = 25  # a branch's staff; more would not be read at a glance
STAFF_PREFIX = "staff:"


@dataclass(frozen=True)
class Tally:
    """A count of things and the money in them."""

    count: int = 0
    amount: Decimal = ZERO


@dataclass(frozen=True)
class Officer:
    name: str
    email: str
    role: str
    approved: Tally = Tally()
    recommended: int = 0
    collected: Tally = Tally()


@dataclass(frozen=True)
class Dashboard:
    today: date
    members: int
    active_members: int
    savings: Decimal  # deposits: the ledger's historical name
    member_savings: Decimal  # savings: withdrawable, fixed deposits and targets
    share_capital: Decimal
    live_loans: int
    outstanding: Decimal
    par30_amount: Decimal
    par30: Decimal  # ratio, 4 decimals
    buckets: dict[str, Tally]
    disbursed_today: Tally
    disbursed_month: Tally
    collected_today: Tally
    collected_month: Tally
    collections_by_day: list[tuple[date, Decimal]]
    pending: dict[str, Tally]
    suspense: Tally
    sms_delivered: int
    sms_failed: int
    sms_waiting: int
    officers: list[Officer] = field(default_factory=list)

    @property
    def pending_total(self) -> Tally:
        return Tally(
            sum(m.count for m in self.pending.values()),
            sum((m.amount for m in self.pending.values()), ZERO),
        )

    @property
    def sms_rate(self) -> Decimal | None:
        """Delivered over finished (delivered or failed); None before any report."""
        finished = self.sms_delivered + self.sms_failed
        if not finished:
            return None
        return (Decimal(self.sms_delivered) / finished).quantize(Decimal("0.0001"))


def _utc_start(day: date, tz: tzinfo) -> datetime:
    """Midnight of a Kenyan business day, as the UTC moment the timestamp columns hold."""
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)


def _money(count: int | None, amount: Decimal | None) -> Tally:
    return Tally(int(count or 0), Decimal(amount or ZERO))


def members_count() -> tuple[int, int]:
    """All members, and the active ones."""
    total, active = db.session.execute(
        select(func.count(), func.count(case((Member.status == "active", 1))))
    ).one()
    return int(total), int(active or 0)


def deposits_held() -> tuple[Decimal, Decimal, Decimal]:
    """Members' deposits (ledger kind "savings"), savings (withdrawable accounts, fixed
    deposits and targets together) and share capital, as a person reads them (positive)."""
    rows = db.session.execute(
        select(Account.kind, func.sum(Account.balance))
        .where(Account.kind.in_(("savings", *SAVINGS_KINDS, "share_capital")))
        .group_by(Account.kind)
    ).all()
    held = {kind: -(total or ZERO) for kind, total in rows}
    return (
        held.get("savings", ZERO),
        sum((held.get(kind, ZERO) for kind in SAVINGS_KINDS), ZERO),
        held.get("share_capital", ZERO),
    )


# Everything members save beside their deposits: the dashboard's "Savings" figure.
SAVINGS_KINDS = ("member_savings", "fixed_deposit", "target_savings")


def bucket_of_days_past_due() -> Case[str]:
    """`aging_bucket(days_past_due)` in SQL, so the grouping happens in the database."""
    dpd = Loan.days_past_due
    return case(
        (dpd <= 0, "current"),
        (dpd <= 30, "1-30"),
        (dpd <= 60, "31-60"),
        (dpd <= 90, "61-90"),
        else_="90+",
    )


def portfolio_by_bucket() -> dict[str, Tally]:
    """Live loans and their outstanding principal per aging bucket."""
    bucket = bucket_of_days_past_due().label("bucket")
    rows = db.session.execute(
        select(bucket, func.count(), func.sum(Account.balance))
        .select_from(Loan)
        .join(Account, and_(Account.loan_id == Loan.id, Account.kind == "loan_principal"))
        .where(Loan.status.in_(LIVE_STATUSES))
        .group_by(bucket)
    ).all()
    found = {name: _money(n, amount) for name, n, amount in rows}
    return {name: found.get(name, Tally()) for name in BUCKETS}


def disbursed_since(*, start: date, today: date) -> tuple[Tally, Tally]:
    """Loans paid out today, and since `start` (the month's first day)."""
    is_today = Loan.disbursed_on == today
    row = db.session.execute(
        select(
            func.count(case((is_today, 1))),
            func.sum(case((is_today, Loan.principal))),
            func.count(),
            func.sum(Loan.principal),
        ).where(Loan.disbursed_on >= start, Loan.disbursed_on <= today)
    ).one()
    return _money(row[0], row[1]), _money(row[2], row[3])


def repayments_by_day(*, start: date, today: date) -> dict[date, Tally]:
    """Repayments by value date from `start` to today: at most a month of rows. The money
    side of an entry is its one debit line (M-PESA clearing, suspense or savings)."""
    rows = db.session.execute(
        select(JournalEntry.value_date, func.count(), func.sum(JournalLine.amount))
        .join(JournalLine, JournalLine.entry_id == JournalEntry.id)
        .where(
            JournalEntry.kind == "repayment",
            JournalEntry.value_date >= start,
            JournalEntry.value_date <= today,
            JournalLine.amount > 0,
        )
        .group_by(JournalEntry.value_date)
    ).all()
    return {day: _money(n, amount) for day, n, amount in rows}


def loans_awaiting_decision() -> dict[str, Tally]:
    """Applications waiting for a recommendation (submitted) or a checker (recommended)."""
    rows = db.session.execute(
        select(Loan.status, func.count(), func.sum(Loan.principal))
        .where(Loan.status.in_(AWAITING_DECISION))
        .group_by(Loan.status)
    ).all()
    found = {status: _money(n, amount) for status, n, amount in rows}
    return {status: found.get(status, Tally()) for status in AWAITING_DECISION}


def suspense_waiting() -> Tally:
    """M-PESA money that matched no member, waiting for staff to place it."""
    n, amount = db.session.execute(
        select(func.count(), func.sum(Payment.amount)).where(Payment.status == "suspense")
    ).one()
    return _money(n, amount)


def sms_outcomes(*, since: datetime) -> tuple[int, int, int]:
    """Messages written since `since`: delivered, failed, and sent still awaiting a report."""
    rows = db.session.execute(
        select(SmsMessage.status, func.count())
        .where(
            SmsMessage.created_at >= since,
            SmsMessage.status.in_(("delivered", "failed", "sent")),
        )
        .group_by(SmsMessage.status)
    ).all()
    by_status = {status: int(n) for status, n in rows}
    return by_status.get("delivered", 0), by_status.get("failed", 0), by_status.get("sent", 0)


def officer_figures(*, since: datetime) -> list[Officer]:
    """Per staff member this month: approvals (as checker), recommendations, and STK
    prompts sent from the console that members paid. Three grouped queries, one row per
    staff member in each; only staff with something to show are listed."""
    approved = {
        staff_id: _money(n, amount)
        for staff_id, n, amount in db.session.execute(
            select(Loan.approved_by_id, func.count(), func.sum(Loan.principal))
            .where(Loan.approved_by_id.is_not(None), Loan.decided_at >= since)
            .group_by(Loan.approved_by_id)
            .order_by(func.count().desc())
            .limit(OFFICER_ROWS)
        )
    }
    recommended = {
        staff_id: int(n)
        for staff_id, n in db.session.execute(
            select(Loan.recommended_by_id, func.count())
            .where(Loan.recommended_by_id.is_not(None), Loan.applied_at >= since)
            .group_by(Loan.recommended_by_id)
            .order_by(func.count().desc())
            .limit(OFFICER_ROWS)
        )
    }
    collected: dict[str, Tally] = {}
    for who, n, amount in db.session.execute(
        select(MpesaRequest.requested_by, func.count(), func.sum(MpesaRequest.amount))
        .where(
            MpesaRequest.kind == "stk",
            MpesaRequest.status == "succeeded",
            MpesaRequest.completed_at >= since,
            MpesaRequest.requested_by.like(f"{STAFF_PREFIX}%"),
        )
        .group_by(MpesaRequest.requested_by)
        .order_by(func.count().desc())
        .limit(OFFICER_ROWS)
    ):
        assert who is not None  # the LIKE above never matches NULL
        collected[who.removeprefix(STAFF_PREFIX)] = _money(n, amount)
    ids = set(approved) | set(recommended)
    if not ids and not collected:
        return []
    staff = db.session.scalars(
        select(StaffUser).where(StaffUser.id.in_(ids) | StaffUser.email.in_(collected))
    ).all()
    officers = [
        Officer(
            name=user.name or user.email,
            email=user.email,
            role=user.role,
            approved=approved.get(user.id, Tally()),
            recommended=recommended.get(user.id, 0),
            collected=collected.get(user.email, Tally()),
        )
        for user in staff
    ]
    officers.sort(key=lambda o: (-o.collected.amount, -o.approved.count, o.email))
    return officers[:OFFICER_ROWS]


def dashboard_figures(*, today: date, tz: tzinfo) -> Dashboard:
    """Everything the landing page shows, for the Kenyan business day `today`."""
    month_start = today.replace(day=1)
    chart_start = today - timedelta(days=CHART_DAYS - 1)
    members, active = members_count()
    savings, member_savings, shares = deposits_held()
    buckets = portfolio_by_bucket()
    outstanding = sum((m.amount for m in buckets.values()), ZERO)
    at_risk = sum((buckets[b].amount for b in PAR_BUCKETS), ZERO)
    disbursed_today, disbursed_month = disbursed_since(start=month_start, today=today)
    repaid = repayments_by_day(start=min(month_start, chart_start), today=today)
    month = [m for day, m in repaid.items() if day >= month_start]
    delivered, failed, waiting = sms_outcomes(since=_utc_start(today - timedelta(days=29), tz))
    return Dashboard(
        today=today,
        members=members,
        active_members=active,
        savings=savings,
        member_savings=member_savings,
        share_capital=shares,
        live_loans=sum(m.count for m in buckets.values()),
        outstanding=outstanding,
        par30_amount=at_risk,
        par30=(at_risk / outstanding).quantize(Decimal("0.0001")) if outstanding else ZERO,
        buckets=buckets,
        disbursed_today=disbursed_today,
        disbursed_month=disbursed_month,
        collected_today=repaid.get(today, Tally()),
        collected_month=Tally(sum(m.count for m in month), sum((m.amount for m in month), ZERO)),
        collections_by_day=[
            (day, repaid.get(day, Tally()).amount)
            for day in (chart_start + timedelta(days=k) for k in range(CHART_DAYS))
        ],
        pending=loans_awaiting_decision(),
        suspense=suspense_waiting(),
        sms_delivered=delivered,
        sms_failed=failed,
        sms_waiting=waiting,
        officers=officer_figures(since=_utc_start(month_start, tz)),
    )
