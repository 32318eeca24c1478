"""Promises to pay: a late member's word (USSD menu 6, SMS, or staff after a call) that
an amount will reach a loan by a date, and how a promise is settled once its date passes.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import func, select

from app.clock import business_date
from app.errors import SaccoError
from app.extensions import db
from app.models import (
    Account,
    Installment,
    JournalEntry,
    JournalLine,
    Loan,
    Member,
    PromiseToPay,
)
from app.money import ZERO, MoneyError, money_input, shillings_up
from app.selectors.loans import LIVE_STATUSES, UNPAID
from app.services.locking import lock_row
from app.services.notifications import notify_promise_recorded

MAX_DAYS_AHEAD = 14


class PromiseError(SaccoError):
    """A promise that cannot be recorded; the message says why (in English). `problem`,
    when set, is the PROMISE_PROBLEMS code and values, for words in the member's language."""

    def __init__(self, message: str, problem: tuple[str, dict[str, object]] | None = None):
        super().__init__(message)
        self.problem = problem


# Why a promise cannot be recorded, by code: (English, Kiswahili). A member who texts in
# Kiswahili reads the reason in Kiswahili; staff and USSD read the English.
PROMISE_PROBLEMS = {
    "no_loan": ("no such loan", "mkopo huo haupo"),
    "not_in_arrears": ("loan {loan_no} is not in arrears", "mkopo {loan_no} haujachelewa"),
    "date": (
        "the date must be within {days} days",
        "tarehe iwe ndani ya siku {days}",
    ),
    "open": (
        "a promise for {date} is open already",
        "ahadi ya {date} bado iko wazi",
    ),
    "too_much": (
        "loan {loan_no} owes KES {most} in all: promise at most KES {most}",
        "mkopo {loan_no} unadaiwa KES {most} kwa jumla: ahidi si zaidi ya KES {most}",
    ),
}


def promise_ceiling(*, loan_id: int) -> Decimal:
    """The most a promise may be for, on every channel: what the loan owes in all (its
    live schedule: principal, interest, fees, penalties, due or not), up to the next whole
    shilling, since M-PESA moves whole shillings (the cents beyond pay the next
    installment; beyond the whole debt, savings). Not only the arrears: a late member who
    promises to clear the loan, or to catch up and pay ahead, is taken at their word."""
    owed = db.session.scalar(
        select(func.sum(UNPAID)).where(
            Installment.loan_id == loan_id, Installment.superseded.is_(False)
        )
    )
    return shillings_up(owed or ZERO)


def promise_problem(
    *,
    loan: Loan | None,
    member_id: int,
    promised_date: date,
    as_of: date,
    amount: Decimal | None = None,
) -> tuple[str, dict[str, object]] | None:
    """Why this promise cannot be recorded (a PROMISE_PROBLEMS code and its values), or
    None: the loan is the member's and in arrears, the date from tomorrow to
    MAX_DAYS_AHEAD days ahead, no other promise for the loan is open, and the amount (when
    given) at most promise_ceiling. promise_record asks it again under the loan's lock."""
    if loan is None or loan.member_id != member_id:
        return "no_loan", {}
    if loan.status not in LIVE_STATUSES or loan.days_past_due <= 0:
        return "not_in_arrears", {"loan_no": loan.loan_no}
    if not as_of < promised_date <= as_of + timedelta(days=MAX_DAYS_AHEAD):
        return "date", {"days": MAX_DAYS_AHEAD}
    open_one = db.session.scalar(
        select(PromiseToPay).where(PromiseToPay.loan_id == loan.id, PromiseToPay.status == "open")
    )
    if open_one is not None:
        return "open", {"date": f"{open_one.promised_date:%d/%m}"}
    if amount is not None:
        most = promise_ceiling(loan_id=loan.id)
        if amount > most:
            return "too_much", {"loan_no": loan.loan_no, "most": f"{most:,.0f}"}
    return None


def promise_problem_words(
    problem: tuple[str, dict[str, object]],
    language: str = "en",  # pragma: no mutate: any language but "sw" is English
) -> str:
    """A refusal in the member's language (English for staff)."""
    english, swahili = PROMISE_PROBLEMS[problem[0]]
    return (swahili if language == "sw" else english).format(**problem[1])


def promise_record(
    *,
    member_id: int,
    loan_id: int,
    amount: object,
    promised_date: date,
    as_of: date,
    channel: str,
    recorded_by_id: int | None = None,
    commit: bool = True,
) -> PromiseToPay:
    """Record a promise for a loan in arrears: a date from tomorrow to 14 days ahead, an
    amount more than zero and at most what the loan owes (promise_ceiling). One open
    promise per loan: a new one is refused until the open one is settled. Texts the member
    a confirmation.

    Staff record one after a call (`recorded_by_id`, channel "staff") with `commit=False`:
    the call's log and audit row commit with the promise, as one unit."""
    try:
        value = money_input(amount)
    except MoneyError as exc:
        raise PromiseError(str(exc)) from None
    loan = lock_row(Loan, loan_id)
    problem = promise_problem(
        loan=loan, member_id=member_id, promised_date=promised_date, as_of=as_of, amount=value
    )
    if problem is not None:
        if commit:
            db.session.rollback()  # our transaction: let the loan's lock go
        # Otherwise the caller's (a call log, a texted promise in its savepoint) decides.
        raise PromiseError(promise_problem_words(problem), problem)
    assert loan is not None  # promise_problem refuses a missing loan
    promise = PromiseToPay(
        member_id=member_id,
        loan_id=loan.id,
        amount=value,
        promised_date=promised_date,
        channel=channel,
        recorded_by_id=recorded_by_id,
    )
    db.session.add(promise)
    db.session.flush()
    member = db.session.get(Member, member_id)
    assert member is not None  # the loan's own member: promise_problem checked it
    # str(loan) is its number: every loan has one from its application (or import).
    notify_promise_recorded(member=member, promise=promise, loan_no=str(loan))
    if commit:
        db.session.commit()
    return promise


def paid_since(*, loan_id: int, since: date) -> Decimal:
    """Repayments credited to the loan's own accounts with a value date from `since` on.

    Money a repayment sends on to savings (an overpayment) is not counted: it did not pay
    the loan. A repayment credits only its own loan's accounts (loan_repay), so the
    accounts' loan alone picks out this loan's repayments.
    """
    credited = db.session.scalar(
        select(func.sum(JournalLine.amount))
        .join(JournalLine.entry)
        .join(JournalLine.account)
        .where(
            JournalEntry.kind == "repayment",
            JournalEntry.value_date >= since,
            Account.loan_id == loan_id,
            JournalLine.amount < 0,  # pragma: no mutate: repayments only credit loans; no 0 lines
        )
    )
    return -(credited or ZERO)


def promise_settle(promise: PromiseToPay, loan: Loan, *, as_of: date) -> str:
    """Settle an open promise: past its date it becomes kept, partly (some of the amount
    arrived, not all) or broken; before it, kept if already paid. `paid_amount` records
    what arrived towards it (at most the amount promised). Returns the status (unchanged
    "open" when nothing is decided yet). The caller commits (the reminder job commits
    with its messages)."""
    paid = paid_since(loan_id=loan.id, since=business_date(promise.created_at))
    kept = loan.status not in LIVE_STATUSES or paid >= promise.amount
    if promise.promised_date < as_of:
        promise.status = "kept" if kept else ("partly" if paid > 0 else "broken")
    elif kept:
        promise.status = "kept"
    if promise.status != "open":
        promise.paid_amount = min(paid, promise.amount)
    return promise.status
