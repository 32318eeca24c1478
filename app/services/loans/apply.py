"""A loan asked for and decided: the fee, the application (auto-approved within a product's
limit), the officer who follows it up, and the staff decisions (recommend, approve,
reject) or the member's withdrawal."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from flask import current_app
from sqlalchemy import func, select

from app.clock import business_today
from app.extensions import db
from app.models import Loan, LoanProduct, StaffUser
from app.models.types import utcnow
from app.money import ZERO, round_money
from app.selectors.guarantees import loan_cover, product_needs_security
from app.selectors.loans import loan_eligibility
from app.services.audit import audit_record
from app.services.loans._common import (
    TRANSITIONS,
    LoanError,
    _actor_name,
    _amount,
    _check_limit,
    _get_loan,
    _lock_for_lending,
    _lock_member,
    _periods,
    _transition,
)
from app.services.loans.disburse import _payout_request, _queue_payout
from app.services.notifications import notify_loan_approved, notify_loan_rejected
from app.services.permissions import permission_require


def loan_fee(product: LoanProduct, principal: Decimal) -> Decimal:
    """The fee deducted at disbursement, within the product's minimum and maximum."""
    if product.fee_type == "none" or not product.fee_value:
        return ZERO
    if product.fee_type == "fixed":
        fee = round_money(product.fee_value)
    else:
        fee = round_money(principal * product.fee_value / 100)
    if product.fee_min is not None:
        fee = max(fee, product.fee_min)
    if product.fee_max is not None:
        fee = min(fee, product.fee_max)
    return min(fee, principal)


def loan_apply(
    *,
    member_id: int,
    product_id: int,
    amount: object,
    term: int | None = None,
    channel: str = "ussd",
    as_of: date,
    actor: StaffUser | str | None = None,
) -> Loan:
    """Submit an application; auto-approve it when the product allows (instant loans)."""
    principal = _amount(amount)
    product = db.session.get(LoanProduct, product_id)
    member = _lock_member(member_id)
    if product is None or not product.active:
        raise LoanError("unknown loan product")
    term = product.default_term if term is None else term
    if not (product.min_term <= term <= product.max_term):
        raise LoanError(
            f"term must be {product.min_term} to {product.max_term} {_periods(product)}"
        )
    if principal < product.min_amount:
        raise LoanError(f"the minimum for {product.name} is KES {product.min_amount:,.0f}")
    if product.max_amount is not None and principal > product.max_amount:
        raise LoanError(f"the maximum for {product.name} is KES {product.max_amount:,.0f}")
    if product.installment_multiple and principal != principal.to_integral_value():
        raise LoanError("mobile loans are in whole shillings")
    fee = loan_fee(product, principal)
    if fee >= principal:
        raise LoanError(f"the fee of KES {fee:,.2f} would take the whole loan; borrow more")
    eligibility = loan_eligibility(member=member, product=product, as_of=as_of)
    if not eligibility.eligible:
        raise LoanError(eligibility.reason or "not eligible")
    if principal > eligibility.limit:
        raise LoanError(f"the most you can borrow now is KES {eligibility.limit:,.0f}")

    loan = Loan(
        member_id=member.id,
        product_id=product.id,
        status="submitted",
        channel=channel,
        principal=principal,
        annual_rate=product.annual_rate,
        term=term,
        frequency=product.frequency,
        interest_method=product.interest_method,
        amortization=product.amortization,
        installment_multiple=product.installment_multiple,
        fee_amount=fee,
    )
    db.session.add(loan)
    db.session.flush()
    loan.loan_no = f"L{loan.id:06d}"
    audit_record(
        actor=_actor_name(actor) if actor else f"member:{member.member_no}",
        action="loan.submit",
        object_type="loan",
        object_id=loan.loan_no,
        after={
            "status": "submitted",
            "principal": principal,
            "term": term,
            "product": product.code,
        },
    )
    # "Under" the limit, as SPEC says: an application of exactly the limit goes to staff.
    # A product secured by guarantors waits for them, whatever its auto-approval limit.
    if (
        product.auto_approve_limit is not None
        and principal < product.auto_approve_limit
        and not product_needs_security(product)
    ):
        loan.decided_at = utcnow()
        _transition(loan, "approve", "system", note="auto-approved within the product limit")
        default = loan_default_officer()  # no staff decided: the branch's default follows up
        loan.officer_id = default.id if default is not None else None
        notify_loan_approved(member=member, loan_no=loan.loan_no, amount=principal)
        payout = _payout_request(loan, member, "system")
    else:
        payout = None
    db.session.commit()
    _queue_payout(payout)
    return loan


def loan_default_officer() -> StaffUser | None:
    """The officer who follows up a loan no staff member decided or brought in with an
    officer: DEFAULT_LOAN_OFFICER (an email), when it names an active staff member."""
    email = (current_app.config["SETTINGS"].DEFAULT_LOAN_OFFICER or "").strip().lower()
    if not email:
        return None
    return db.session.scalar(
        select(StaffUser).where(func.lower(StaffUser.email) == email, StaffUser.active.is_(True))
    )


def _needs_second_staff(loan: Loan) -> bool:
    threshold = loan.product.maker_checker_threshold
    return threshold is not None and loan.principal > threshold


def loan_recommend(*, loan_id: int, staff: StaffUser, note: str | None = None) -> Loan:
    """The maker's step: a loan above the maker-checker threshold needs it before approval."""
    loan = _get_loan(loan_id)
    permission_require(staff, "loan.recommend")
    _transition(loan, "recommend", staff, note)
    loan.recommended_by_id = staff.id
    db.session.commit()
    return loan


def loan_approve(
    *, loan_id: int, staff: StaffUser, note: str | None = None, as_of: date | None = None
) -> Loan:
    permission_require(staff, "loan.approve")
    loan, member = _lock_for_lending(loan_id)
    if _needs_second_staff(loan):
        if loan.status != "recommended":
            raise LoanError(
                f"loans above KES {loan.product.maker_checker_threshold:,.0f} need a "
                "recommendation by another staff member first"
            )
        if loan.recommended_by_id == staff.id:
            raise LoanError("the staff member who recommended a loan cannot also approve it")
    if loan.status in TRANSITIONS["approve"][0]:
        _check_limit(loan, member, as_of or business_today())
        _check_cover(loan)
    _transition(loan, "approve", staff, note)
    loan.approved_by_id = staff.id
    # Who follows the loan up: the officer who recommended it, else the approver (a
    # branch manager reassigns it from the officer desk).
    if loan.officer_id is None:
        loan.officer_id = loan.recommended_by_id or staff.id
    loan.decided_at = utcnow()
    if note and note.strip():
        loan.decision_reason = note.strip()[:255]  # staff read why it was approved
    notify_loan_approved(member=loan.member, loan_no=loan.loan_no or "", amount=loan.principal)
    payout = _payout_request(loan, member, _actor_name(staff))
    db.session.commit()
    _queue_payout(payout)
    return loan


def _check_cover(loan: Loan) -> None:
    """Under the member's lock: a loan of a secured product has its whole cover (guarantees
    accepted, collateral registered) before it is approved."""
    if not product_needs_security(loan.product):
        return
    cover = loan_cover(loan)
    if not cover.complete:
        raise LoanError(
            f"loan {loan.loan_no} is not secured yet: KES {cover.covered:,.0f} of KES "
            f"{cover.required:,.0f} covered, {cover.guarantors} of "
            f"{cover.min_guarantors} guarantors accepted"
        )


def loan_reject(*, loan_id: int, staff: StaffUser | str, reason: str) -> Loan:
    reason = (reason or "").strip()
    if not reason:
        raise LoanError("a rejection needs a reason the member can read")
    permission_require(staff, "loan.approve")
    loan = _get_loan(loan_id)
    _transition(loan, "reject", staff, reason)
    loan.decision_reason = reason[:255]
    loan.decided_at = utcnow()
    notify_loan_rejected(member=loan.member, loan_no=loan.loan_no or "", reason=reason[:120])
    db.session.commit()
    return loan


def loan_withdraw(*, loan_id: int, actor: StaffUser | str) -> Loan:
    """The member changed their mind (asked on USSD, or told staff)."""
    permission_require(actor, "loan.recommend")
    loan = _get_loan(loan_id)
    _transition(loan, "withdraw", actor)
    db.session.commit()
    return loan
