"""What every part of a loan's life shares: the states and their transitions, the error, the
locks (member first, then loan), the limit check, and the loan's receivable accounts. The
parts import from here and never from each other in a circle."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import select

from app.errors import SaccoError
from app.extensions import db
from app.models import Account, Loan, LoanProduct, Member, StaffUser
from app.money import MoneyError, money_input
from app.selectors.loans import LIVE_STATUSES, loan_eligibility
from app.services.audit import audit_record
from app.services.guarantees import ENDING, guarantees_end
from app.services.ledger import account_get_or_create
from app.services.locking import lock_row
from app.services.webhooks import webhook_loan

# The job that sends a payout (by dotted path: this module must not import the workers).
SEND_PAYOUT_JOB = "workers.payments.send_payout"


COMPONENTS = ("penalty", "fees", "interest", "principal")  # repayment order within a row


RECEIVABLE = {
    "principal": ("LNP", "loan_principal", "Principal"),
    "interest": ("LNI", "loan_interest", "Interest"),
    "fees": ("LNF", "loan_fees", "Fees"),
    "penalty": ("LNX", "loan_penalty", "Penalty"),
}


# Allowed transitions: action -> (from states, to state)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "recommend": (("submitted",), "recommended"),
    "approve": (("submitted", "recommended"), "approved"),
    "reject": (("submitted", "recommended", "approved"), "rejected"),
    "withdraw": (("submitted", "recommended", "approved"), "withdrawn"),
    "start_payout": (("approved",), "disbursing"),
    "payout_failed": (("disbursing",), "approved"),
    "disburse": (("approved", "disbursing"), "active"),
    "close": (LIVE_STATUSES, "closed"),
    "write_off": (LIVE_STATUSES, "written_off"),
    "restructure": (LIVE_STATUSES, "restructured"),
}


class LoanError(SaccoError):
    """A loan action that must not happen; the message says why. Nothing was written."""


def _actor_name(actor: StaffUser | str | None) -> str:
    if actor is None:
        return "system"
    if isinstance(actor, StaffUser):
        return f"staff:{actor.email}"
    return actor


def _transition(
    loan: Loan, action: str, actor: StaffUser | str | None, note: str | None = None
) -> None:
    allowed, target = TRANSITIONS[action]
    if loan.status not in allowed:
        raise LoanError(f"loan {loan.loan_no} is {loan.status}; cannot {action.replace('_', ' ')}")
    before = loan.status
    loan.status = target
    audit_record(
        actor=_actor_name(actor),
        action=f"loan.{action}",
        object_type="loan",
        object_id=loan.loan_no,
        before={"status": before},
        after={"status": target},
        note=note,
    )
    if action == "approve":  # auto-approved or by staff: this is the one place
        webhook_loan("loan.approved", loan)
    if target in ENDING:
        # An ended loan holds no one's deposits: its guarantees go with it, in this
        # transaction (every status change passes here).
        guarantees_end(loan, _actor_name(actor))


def _get_loan(loan_id: int) -> Loan:
    """The loan under its lock: every change to a loan starts here."""
    loan = lock_row(Loan, loan_id)
    if loan is None:
        raise LoanError(f"no loan {loan_id}")
    return loan


def _lock_member(member_id: int) -> Member:
    """Take the member's lock: lending is decided one application at a time per member,
    so two applications (or approvals) cannot each use the same limit."""
    member = lock_row(Member, member_id)
    if member is None:
        raise LoanError(f"no member {member_id}")
    return member


def _check_limit(loan: Loan, member: Member, as_of: date) -> None:
    """Under the member's lock: this loan still fits the member's limit, as at apply."""
    eligibility = loan_eligibility(member=member, product=loan.product, as_of=as_of, deciding=loan)
    if not eligibility.eligible:
        raise LoanError(eligibility.reason or "not eligible")
    if loan.principal > eligibility.limit:
        raise LoanError(
            f"loan {loan.loan_no} of KES {loan.principal:,.0f} is above the member's limit "
            f"now (KES {eligibility.limit:,.0f})"
        )


def _lock_for_lending(loan_id: int) -> tuple[Loan, Member]:
    """Member first, then loan: every path that takes both takes them in this order."""
    member_id = db.session.scalar(select(Loan.member_id).where(Loan.id == loan_id))
    if member_id is None:
        raise LoanError(f"no loan {loan_id}")
    member = _lock_member(member_id)
    return _get_loan(loan_id), member


def _amount(value: object, what: str = "amount") -> Decimal:
    try:
        return money_input(value, what)
    except MoneyError as exc:
        raise LoanError(str(exc)) from None


def _periods(product: LoanProduct) -> str:
    return "months" if product.frequency == "monthly" else "weeks"


def loan_account(loan: Loan, component: str) -> Account:
    prefix, kind, label = RECEIVABLE[component]
    return account_get_or_create(
        code=f"{prefix}-{loan.loan_no}",
        kind=kind,
        name=f"{label} {loan.loan_no}",
        member_id=loan.member_id,
        loan_id=loan.id,
    )
