"""Loan reads: eligibility and limits, what a loan owes, arrears and the portfolio."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from sqlalchemy import and_, case, distinct, func, select, true, type_coerce

from app.extensions import db
from app.models import (
    AuditLog,
    Installment,
    Loan,
    LoanProduct,
    Member,
    MemberExit,
    Payment,
    StaffUser,
)
from app.models.types import Money
from app.money import ZERO, round_money
from app.selectors.members import member_balances

LIVE_STATUSES = ("active", "restructured")  # disbursed and still owing

# What an installment still owes, all four parts: one expression for every query that sums
# it. Money keeps cents as integers on SQLite, so the sum is read back through its type.
UNPAID = type_coerce(
    Installment.principal_due
    - Installment.principal_paid
    + Installment.interest_due
    - Installment.interest_paid
    + Installment.fees_due
    - Installment.fees_paid
    + Installment.penalty_due
    - Installment.penalty_paid,
    Money(),
)
PENDING_STATUSES = ("submitted", "recommended", "approved", "disbursing")


@dataclass(frozen=True)
class Eligibility:
    eligible: bool
    limit: Decimal
    reason: str | None = None  # in words a member understands; None when eligible
    code: str | None = None  # machine-readable reason


def _refuse(code: str, reason: str, limit: Decimal = ZERO) -> Eligibility:
    return Eligibility(False, limit, reason, code)


def loan_eligibility(
    *, member: Member, product: LoanProduct, as_of: date, deciding: Loan | None = None
) -> Eligibility:
    """The member's limit for this product, or why they cannot borrow from it now.

    One function for USSD and the console, so a member and a loan officer see the same
    answer. Limit = savings × the product's multiple − what the member still owes in
    principal, capped by the product's maximum. `deciding` is the application being
    approved or paid out: it does not count against its own limit.
    """
    others = Loan.id != deciding.id if deciding is not None else true()
    if member.status != "active":
        return _refuse("member_inactive", "Your membership is not active. Visit a branch.")
    leaving = select(MemberExit.id).where(
        MemberExit.member_id == member.id, MemberExit.status == "notice"
    )
    if db.session.scalar(leaving) is not None:
        # Their deposits are to be refunded, not lent against.
        return _refuse("exit_notice", "You have given notice to leave the SACCO.")
    if not product.active:
        return _refuse("product_inactive", "This loan is not available now.")
    if member.created_at.date() > as_of - timedelta(days=product.min_membership_days):
        return _refuse(
            "membership_age",
            f"You can apply after {product.min_membership_days} days of membership.",
        )
    in_arrears = db.session.scalar(
        select(func.count())
        .select_from(Loan)
        .where(
            Loan.member_id == member.id,
            Loan.status.in_(LIVE_STATUSES),
            Loan.days_past_due > 0,
        )
    )
    if in_arrears:
        return _refuse("arrears", "You have a loan in arrears. Pay it first to borrow again.")
    # A loan written off is off the books, not forgiven: until it is recovered in full the
    # member is refused, as a loan in arrears would refuse them (SPEC "Loans").
    unrecovered = select(Loan.id).where(
        Loan.member_id == member.id,
        Loan.status == "written_off",
        Loan.recovered_amount < Loan.written_off_amount,
    )
    if db.session.scalar(unrecovered.limit(1)) is not None:
        return _refuse("written_off", "A loan of yours was written off. Repay it to borrow again.")
    pending = db.session.scalar(
        select(func.count())
        .select_from(Loan)
        .where(
            Loan.member_id == member.id,
            Loan.product_id == product.id,
            Loan.status.in_(PENDING_STATUSES),
            others,
        )
    )
    if pending:
        return _refuse("pending", "You already have an application being processed.")
    balances = member_balances(member_id=member.id)
    if balances.share_capital < product.min_share_capital:
        return _refuse(
            "share_capital",
            f"You need share capital of KES {product.min_share_capital:,.0f} to apply.",
        )
    # Applications on their way to a payout count as owed: two products must not each
    # lend the full limit.
    in_flight = (
        db.session.scalar(
            select(func.sum(Loan.principal)).where(
                Loan.member_id == member.id,
                Loan.status.in_(("approved", "disbursing")),
                others,
            )
        )
        or ZERO
    )
    # The base is the member's deposits less what their guarantees of others' loans hold
    # (SPEC "Holds"); never share capital. Their own debt is subtracted below.
    from app.selectors.guarantees import guaranteed_by  # its statuses are defined here

    base = max(ZERO, balances.savings - guaranteed_by(member.id))
    limit = round_money(base * product.limit_multiple) - balances.loan_principal - in_flight
    if product.max_amount is not None:
        limit = min(limit, product.max_amount)
    # Mobile money is whole shillings: never offer a limit with cents.
    limit = max(ZERO, round_money(limit, Decimal(1), rounding=ROUND_FLOOR))
    if limit <= 0 or limit < product.min_amount:
        return _refuse(
            "limit",
            f"Your limit is below the minimum of KES {product.min_amount:,.0f}. "
            "Save more to qualify.",
            limit,
        )
    return Eligibility(True, limit)


@dataclass(frozen=True)
class LoanDebt:
    principal: Decimal
    interest: Decimal
    fees: Decimal
    penalty: Decimal

    @property
    def total(self) -> Decimal:
        return self.principal + self.interest + self.fees + self.penalty


def current_installments(loan_id: int, *, fresh: bool = False) -> list[Installment]:
    """The live schedule's rows. `fresh` re-reads rows the session already holds: a
    service that has just taken the loan's lock must not work from a copy read before."""
    stmt = (
        select(Installment)
        .where(Installment.loan_id == loan_id, Installment.superseded.is_(False))
        .order_by(Installment.number)
    )
    if fresh:
        stmt = stmt.execution_options(populate_existing=True)
    return list(db.session.scalars(stmt))


def loan_debt(*, loan_id: int) -> LoanDebt:
    """What is still owed on a loan, from its current schedule."""
    rows = current_installments(loan_id)
    return LoanDebt(
        principal=sum((r.principal_due - r.principal_paid for r in rows), ZERO),
        interest=sum((r.interest_due - r.interest_paid for r in rows), ZERO),
        fees=sum((r.fees_due - r.fees_paid for r in rows), ZERO),
        penalty=sum((r.penalty_due - r.penalty_paid for r in rows), ZERO),
    )


def aging_bucket(days_past_due: int) -> str:
    if days_past_due <= 0:
        return "current"
    if days_past_due <= 30:
        return "1-30"
    if days_past_due <= 60:
        return "31-60"
    if days_past_due <= 90:
        return "61-90"
    return "90+"


@dataclass(frozen=True)
class Portfolio:
    gross_principal: Decimal
    par30_principal: Decimal
    par30: Decimal  # ratio, 4 decimals
    buckets: dict[str, Decimal]
    loans: int


def portfolio_at_risk(*, as_of: date) -> Portfolio:
    """PAR30: outstanding principal of loans more than 30 days late over the gross portfolio.

    Reads days_past_due as the daily arrears job left it for `as_of`.
    """
    # Summed in the database by days past due: a few hundred rows whatever the book's
    # size, not one a loan; the buckets stay aging_bucket's (one rule, applied here).
    outstanding = type_coerce(
        func.sum(Installment.principal_due - Installment.principal_paid), Money()
    )
    rows = db.session.execute(
        select(Loan.days_past_due, outstanding, func.count(distinct(Loan.id)))
        .join(Installment, Installment.loan_id == Loan.id)
        .where(Loan.status.in_(LIVE_STATUSES), Installment.superseded.is_(False))
        .group_by(Loan.days_past_due)
    ).all()
    buckets = {name: ZERO for name in ("current", "1-30", "31-60", "61-90", "90+")}
    gross = par = ZERO
    loans = 0
    for dpd, principal, count in rows:
        principal = principal or ZERO
        gross += principal
        loans += count
        buckets[aging_bucket(dpd)] += principal
        if dpd > 30:
            par += principal
    ratio = (par / gross).quantize(Decimal("0.0001")) if gross else Decimal("0.0000")
    return Portfolio(gross, par, ratio, buckets, loans)


# --- the console's applications queue ----------------------------------------------------

APPLICATION_STATUSES = ("submitted", "recommended")  # waiting for a staff decision


def loan_applications(
    *, page: int, per_page: int, status: str | None = None
) -> tuple[list[Loan], int]:
    """One page of applications waiting for a decision, oldest first (the member who
    asked first is answered first), and how many wait in all."""
    statuses = (status,) if status in APPLICATION_STATUSES else APPLICATION_STATUSES
    waiting = Loan.status.in_(statuses)
    total = db.session.scalar(select(func.count()).select_from(Loan).where(waiting)) or 0
    loans = db.session.scalars(
        select(Loan)
        .where(waiting)
        .order_by(Loan.applied_at, Loan.id)
        .offset(max(page - 1, 0) * per_page)
        .limit(per_page)
    ).all()
    return list(loans), total


@dataclass(frozen=True)
class ApplicantPosition:
    """What a checker weighs beside an application: the member's savings and limit (the
    same `loan_eligibility` the member's USSD menu used), other loans and arrears."""

    savings: Decimal
    share_capital: Decimal
    eligible: bool
    limit: Decimal
    reason: str | None  # why not eligible now, in the member's words
    other_loans: int  # running or pending loans besides this application
    owed: Decimal  # everything still owed on running loans
    arrears: Decimal  # of that, what fell due before `as_of` and is unpaid
    days_past_due: int  # the worst of the running loans


def applicant_position(*, loan: Loan, as_of: date) -> ApplicantPosition:
    eligibility = loan_eligibility(
        member=loan.member, product=loan.product, as_of=as_of, deciding=loan
    )
    balances = member_balances(member_id=loan.member_id)
    mine = (Loan.member_id == loan.member_id, Loan.id != loan.id)
    others = (
        db.session.scalar(
            select(func.count())
            .select_from(Loan)
            .where(*mine, Loan.status.in_((*LIVE_STATUSES, *PENDING_STATUSES)))
        )
        or 0
    )
    worst = db.session.scalar(
        select(func.coalesce(func.max(Loan.days_past_due), 0)).where(
            *mine, Loan.status.in_(LIVE_STATUSES)
        )
    )
    arrears = db.session.scalar(
        select(func.sum(UNPAID))
        .join(Loan, Loan.id == Installment.loan_id)
        .where(
            *mine,
            Loan.status.in_(LIVE_STATUSES),
            Installment.superseded.is_(False),
            Installment.due_date < as_of,
        )
    )
    return ApplicantPosition(
        savings=balances.savings,
        share_capital=balances.share_capital,
        eligible=eligibility.eligible,
        limit=eligibility.limit,
        reason=eligibility.reason,
        other_loans=others,
        owed=balances.loan_total,
        arrears=arrears or ZERO,
        days_past_due=int(worst or 0),
    )


# --- the console's loans list and loan page -------------------------------------------------


@dataclass(frozen=True)
class LoanFigures:
    """What a row of the loans list shows beside the loan itself."""

    owed: Decimal  # everything still owed on the live schedule
    due_now: Decimal  # of that, what fell due on or before `as_of`
    officer: str | None  # the officer's name (or email); None when nobody follows it up


def loan_list_figures(*, loan_ids: Sequence[int], as_of: date) -> dict[int, LoanFigures]:
    """Owed, due now and the officer of each loan on a page of the list: one grouped
    query for the page, however many loans it shows."""
    if not loan_ids:
        return {}
    due_now = type_coerce(case((Installment.due_date <= as_of, UNPAID), else_=0), Money())
    rows = db.session.execute(
        select(
            Loan.id,
            StaffUser.name,
            StaffUser.email,
            func.sum(UNPAID),
            func.sum(due_now),
        )
        .outerjoin(StaffUser, StaffUser.id == Loan.officer_id)
        .outerjoin(
            Installment,
            and_(Installment.loan_id == Loan.id, Installment.superseded.is_(False)),
        )
        .where(Loan.id.in_(loan_ids))
        .group_by(Loan.id, StaffUser.name, StaffUser.email)
    ).all()
    return {
        loan_id: LoanFigures(
            owed=owed or ZERO, due_now=now or ZERO, officer=(name or email) or None
        )
        for loan_id, name, email, owed, now in rows
    }


@dataclass(frozen=True)
class ScheduleRow:
    installment: Installment
    state: str  # paid | late | due today | part paid | upcoming
    days_late: int  # for a late row: days since it fell due


@dataclass(frozen=True)
class LoanPage:
    """Everything the console's loan page shows, read in a handful of queries."""

    schedule: list[ScheduleRow]
    superseded: list[Installment]  # rows a restructure replaced, kept for the record
    debt: LoanDebt | None  # None until the loan is paid out
    due_now: Decimal  # unpaid on installments due on or before `as_of`
    late_installments: int
    days_late: int  # since the oldest unpaid installment fell due, by today's schedule
    payments: list[Payment]  # newest first, at most `payments_limit`
    more_payments: bool
    officer: StaffUser | None
    recommended_by: StaffUser | None
    approved_by: StaffUser | None
    recommended_at: datetime | None  # when the recommendation was recorded (audit trail)
    decided_at: datetime | None  # approved or rejected


def _schedule_state(row: Installment, as_of: date) -> ScheduleRow:
    if row.outstanding <= 0:
        return ScheduleRow(row, "paid", 0)
    if row.due_date < as_of:
        return ScheduleRow(row, "late", (as_of - row.due_date).days)
    if row.due_date == as_of:
        return ScheduleRow(row, "due today", 0)
    return ScheduleRow(row, "part paid" if row.total_paid > 0 else "upcoming", 0)


def loan_page(*, loan: Loan, as_of: date, payments_limit: int = 20) -> LoanPage:
    rows = current_installments(loan.id)
    schedule = [_schedule_state(r, as_of) for r in rows]
    staff_ids = {i for i in (loan.officer_id, loan.recommended_by_id, loan.approved_by_id) if i}
    people = (
        {s.id: s for s in db.session.scalars(select(StaffUser).where(StaffUser.id.in_(staff_ids)))}
        if staff_ids
        else {}
    )
    recommended_at = (
        db.session.scalar(
            select(func.max(AuditLog.at)).where(
                AuditLog.object_type == "loan",
                AuditLog.object_id == loan.loan_no,
                AuditLog.action == "loan.recommend",
            )
        )
        if loan.recommended_by_id and loan.loan_no
        else None
    )
    payments = list(
        db.session.scalars(
            select(Payment)
            .where(Payment.loan_id == loan.id)
            .order_by(Payment.id.desc())
            .limit(payments_limit + 1)
        )
    )
    return LoanPage(
        schedule=schedule,
        superseded=[r for r in loan.installments if r.superseded],
        debt=loan_debt(loan_id=loan.id) if loan.disbursed_on else None,
        due_now=sum((r.outstanding for r in rows if r.due_date <= as_of), ZERO),
        late_installments=sum(1 for s in schedule if s.state == "late"),
        days_late=max((s.days_late for s in schedule), default=0),
        payments=payments[:payments_limit],
        more_payments=len(payments) > payments_limit,
        officer=people.get(loan.officer_id) if loan.officer_id else None,
        recommended_by=people.get(loan.recommended_by_id) if loan.recommended_by_id else None,
        approved_by=people.get(loan.approved_by_id) if loan.approved_by_id else None,
        recommended_at=recommended_at,
        decided_at=loan.decided_at,
    )


def loans_in_arrears_ids(as_of: date) -> list[int]:
    """The daily arrears run's loans: live loans with installments due and unpaid before
    `as_of` (its cost follows the arrears, not the size of the book), and live loans still
    marked late (paid or restructured since: they go back to current). In id order."""
    overdue = db.session.scalars(
        select(Installment.loan_id)
        .join(Loan, Installment.loan_id == Loan.id)
        .where(
            Loan.status.in_(LIVE_STATUSES),
            Installment.superseded.is_(False),
            Installment.paid_on.is_(None),
            Installment.due_date < as_of,
        )
        .distinct()
    )
    marked_late = db.session.scalars(
        select(Loan.id).where(Loan.status.in_(LIVE_STATUSES), Loan.days_past_due > 0)
    )
    return sorted({*overdue, *marked_late})
