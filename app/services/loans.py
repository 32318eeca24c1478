"""The loan lifecycle: every state change of a loan happens here, guarded and audited.

submitted -> [recommended] -> approved -> [disbursing] -> active -> closed
and the side exits: rejected, withdrawn, written_off, restructured (still repayable).

Ledger, at disbursement: the principal and the whole scheduled interest become
receivables (interest is charged per the schedule, as Fineract does by default, so an
early payoff still owes it); fees deducted at disbursement go straight to income and the
member receives the principal less fees. Penalties become receivables when the daily job
charges them. Repayments credit the receivables in the SPEC's order; anything beyond the
whole debt goes to savings.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from flask import current_app
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import lazyload

from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db, enqueue
from app.models import Account, Installment, Loan, LoanProduct, Member, MpesaRequest, StaffUser
from app.models.mpesa import OPEN_STATUSES
from app.models.types import utcnow
from app.money import ZERO, MoneyError, is_whole_shillings, money_input, round_money, to_decimal
from app.selectors.loans import (
    LIVE_STATUSES,
    LoanDebt,
    aging_bucket,
    current_installments,
    loan_debt,
    loan_eligibility,
)
from app.selectors.members import member_balances
from app.services.audit import audit_record
from app.services.ledger import (
    Draft,
    DuplicatePosting,
    Line,
    account_get_or_create,
    accounts_get_or_create,
    credit,
    debit,
    gl_account,
    journal_post,
    journal_post_many,
    member_account,
    money_in_account,
)
from app.services.loan_schedule import Schedule, ScheduleError, schedule_build
from app.services.locking import lock_row
from app.services.notifications import (
    notify_deposit_received,
    notify_loan_approved,
    notify_loan_disbursed,
    notify_loan_rejected,
    notify_repayment_received,
)
from app.services.permissions import permission_require

log = logging.getLogger(__name__)

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
    if product.auto_approve_limit is not None and principal < product.auto_approve_limit:
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


def _periods(product: LoanProduct) -> str:
    return "months" if product.frequency == "monthly" else "weeks"


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


def _payout_request(loan: Loan, member: Member, actor: str) -> MpesaRequest | None:
    """The approval's promise ("we will send the money to your M-PESA"), written in the
    same transaction as the approval: a B2C request with our OriginatorConversationID,
    stored before anything is sent, so a retry reuses it and Safaricom refuses a twin.
    None when M-PESA cannot carry the amount (not whole shillings): staff pay it out."""
    amount = loan.principal - loan.fee_amount
    if not is_whole_shillings(amount):
        loan.payout_error = (
            f"KES {amount:,.2f} is not whole shillings: M-PESA cannot send it; pay by bank"
        )
        return None
    request = MpesaRequest(
        kind="b2c",
        status="pending",
        purpose="disbursement",
        originator_conversation_id=str(uuid.uuid4()),
        member_id=member.id,
        loan_id=loan.id,
        phone=member.phone,
        amount=amount,
        account_reference=loan.loan_no,
        channel="system",
        requested_by=actor,
    )
    db.session.add(request)
    loan.payout_error = None
    return request


def _queue_payout(request: MpesaRequest | None) -> None:
    """After commit: hand the payout to a worker. If Redis is down the row stays pending
    and the reconciliation job queues it."""
    if request is None:
        return
    try:
        enqueue("payments", SEND_PAYOUT_JOB, request.id, job_id=f"payout-{request.id}")
    except Exception as exc:  # noqa: BLE001 - the pending row is the record
        log.warning("could not queue payout %s: %s", request.id, type(exc).__name__)


def loan_retry_payout(*, loan_id: int, staff: StaffUser | str) -> MpesaRequest:
    """Staff send an approved loan's money again after a payout failed for good (a new
    request: the old one's result said no money left)."""
    permission_require(staff, "loan.disburse")
    loan, member = _lock_for_lending(loan_id)
    if loan.status != "approved":
        raise LoanError(f"loan {loan.loan_no} is {loan.status}; only approved loans are paid out")
    if _open_payout(loan.id) is not None:
        raise LoanError(f"loan {loan.loan_no} has a payout on its way already")
    _check_limit(loan, member, business_today())
    request = _payout_request(loan, member, _actor_name(staff))
    if request is None:
        raise LoanError(loan.payout_error or "M-PESA cannot send this amount")
    audit_record(
        actor=_actor_name(staff),
        action="loan.retry_payout",
        object_type="loan",
        object_id=loan.loan_no,
        after={"amount": request.amount, "phone": request.phone},
    )
    db.session.commit()
    _queue_payout(request)
    return request


def _open_payout(loan_id: int) -> MpesaRequest | None:
    return db.session.scalar(
        select(MpesaRequest).where(
            MpesaRequest.loan_id == loan_id,
            MpesaRequest.kind == "b2c",
            MpesaRequest.status.in_(OPEN_STATUSES),
        )
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


def loan_start_payout(
    *,
    loan_id: int,
    as_of: date | None = None,
    commit: bool = True,
    check_limit: bool = True,
) -> Loan:
    """Mark an approved loan as being paid out (the B2C request is about to go): the last
    moment the limit can still stop the money, so it is checked again here. Without
    `check_limit` only when M-PESA says the money has left already."""
    loan, member = _lock_for_lending(loan_id)
    if loan.status == "approved" and check_limit:
        _check_limit(loan, member, as_of or business_today())
    _transition(loan, "start_payout", "system")
    if commit:
        db.session.commit()
    return loan


def loan_payout_failed(*, loan_id: int, reason: str, commit: bool = True) -> Loan:
    """The payout did not happen: back to approved, with the reason for staff, so it can
    be sent again or rejected."""
    loan = _get_loan(loan_id)
    _transition(loan, "payout_failed", "system", reason)
    loan.payout_error = reason[:255]
    if commit:
        db.session.commit()
    return loan


def loan_account(loan: Loan, component: str) -> Account:
    prefix, kind, label = RECEIVABLE[component]
    return account_get_or_create(
        code=f"{prefix}-{loan.loan_no}",
        kind=kind,
        name=f"{label} {loan.loan_no}",
        member_id=loan.member_id,
        loan_id=loan.id,
    )


def _write_schedule(loan: Loan, principal: Decimal, start: date, version: int) -> Schedule:
    """Add installment rows for a schedule and return it."""
    try:
        schedule = schedule_build(
            principal=principal,
            annual_rate=loan.annual_rate,
            installments=loan.term,
            interest_method=loan.interest_method,
            amortization=loan.amortization,
            frequency=loan.frequency,
            multiple_of=loan.installment_multiple,
            start_date=start,
        )
    except ScheduleError as exc:
        raise LoanError(str(exc)) from exc
    for row in schedule.rows:
        db.session.add(
            Installment(
                loan_id=loan.id,
                version=version,
                number=row.number,
                due_date=row.due_date,
                principal_due=row.principal,
                interest_due=row.interest,
            )
        )
    return schedule


def loan_disburse(
    *,
    loan_id: int,
    reference: str,
    value_date: date,
    channel: str = "b2c",
    actor: StaffUser | str | None = None,
    commit: bool = True,
) -> Loan:
    """The money reached the member (B2C result, or staff recording a bank/cash payout).

    Writes the schedule from the disbursement date and posts principal, interest, fees
    and the payout as one entry. `reference` (the M-PESA receipt) keys the posting, so a
    repeated result cannot disburse twice.
    """
    if actor is not None:
        permission_require(actor, "loan.disburse")
    loan, member = _lock_for_lending(loan_id)
    if loan.status == "approved":
        # Paid out by staff without a B2C request: nothing has left yet, so the limit can
        # still refuse. From "disbursing" the money has gone: it is recorded whatever.
        _check_limit(loan, member, value_date)
        payout = _open_payout(loan.id)
        if payout is not None and payout.status != "pending":
            raise LoanError(
                f"an M-PESA payout of loan {loan.loan_no} is on its way; wait for its result"
            )
        if payout is not None:
            # Not sent yet: staff paid another way, so the queued payout must never go.
            payout.status = "failed"
            payout.result_desc = f"cancelled: paid out by {channel} {reference}"[:255]
    loan.payout_error = None
    _transition(loan, "disburse", actor, f"{channel} {reference}")
    loan.disbursed_on = value_date
    schedule = _write_schedule(loan, loan.principal, value_date, version=1)
    total_interest = schedule.total_interest
    payout_account = gl_account("GL-B2C-UTILITY")
    lines: list[Line] = [
        debit(loan_account(loan, "principal"), loan.principal),
        credit(payout_account, loan.principal - loan.fee_amount),
    ]
    if loan.fee_amount > 0:
        lines.append(credit(gl_account("GL-INCOME-FEES"), loan.fee_amount))
    if total_interest > 0:
        lines.append(debit(loan_account(loan, "interest"), total_interest))
        lines.append(credit(gl_account("GL-INCOME-INTEREST"), total_interest))
    journal_post(
        kind="disbursement",
        lines=lines,
        value_date=value_date,
        description=f"Disbursement {loan.loan_no} {reference}",
        idempotency_key=f"disburse:{loan.loan_no}",
        actor=_actor_name(actor),
        member_id=loan.member_id,
        loan_id=loan.id,
    )
    first = schedule.rows[0]  # the schedule just written: no need to read it back
    notify_loan_disbursed(
        member=loan.member,
        loan_no=loan.loan_no or "",
        amount=loan.principal - loan.fee_amount,
        fee=loan.fee_amount,
        receipt=reference,
        first_due_date=first.due_date,
        first_installment=first.total,
    )
    if commit:
        db.session.commit()
    return loan


@dataclass
class RepaymentResult:
    loan_no: str
    amount: Decimal
    allocated: dict[str, Decimal] = field(default_factory=dict)
    to_savings: Decimal = ZERO
    recovered: Decimal = ZERO  # on a written-off loan
    balance_left: Decimal = ZERO
    closed: bool = False
    entry_id: int | None = None


def loan_repay(
    *,
    loan_id: int,
    amount: object,
    reference: str,
    value_date: date,
    source: str = "mpesa",
    actor: StaffUser | str | None = None,
    commit: bool = True,
) -> RepaymentResult:
    """Apply a payment: penalty -> fees -> interest -> principal, oldest installment first.

    Future installments are paid in order when money remains (prepayment); anything beyond
    the whole debt goes to savings. On a written-off loan the money is a recovery (income,
    up to what was written off); a closed loan takes nothing, so it goes to savings: money
    is never lost. `reference` (the M-PESA receipt) makes the posting idempotent.
    """
    value = _amount(amount)
    loan = _get_loan(loan_id)
    member = db.session.get(Member, loan.member_id)
    assert member is not None  # a loan's member is a foreign key
    # mpesa: fresh money through M-PESA; suspense: M-PESA money staff assign; savings:
    # the member's own savings.
    source_account = (
        member_account(member, "savings") if source == "savings" else money_in_account(source)
    )
    result = RepaymentResult(loan_no=loan.loan_no or "", amount=value)
    # A savepoint: a refused or duplicate posting leaves the schedule as it was, so a
    # caller that carries on (or commits) after DuplicatePosting pays nothing twice.
    with db.session.begin_nested():
        remaining = value
        lines: list[Line] = [debit(source_account, value)]
        if loan.status in LIVE_STATUSES:
            paid = {c: ZERO for c in COMPONENTS}
            for row in current_installments(loan.id, fresh=True):
                for component in COMPONENTS:
                    owed = getattr(row, f"{component}_due") - getattr(row, f"{component}_paid")
                    take = min(owed, remaining)
                    if take > 0:
                        setattr(row, f"{component}_paid", getattr(row, f"{component}_paid") + take)
                        paid[component] += take
                        remaining -= take
                if row.outstanding == 0 and row.paid_on is None:
                    row.paid_on = value_date
                if remaining == 0:
                    break
            for component in COMPONENTS:
                if paid[component] > 0:
                    lines.append(credit(loan_account(loan, component), paid[component]))
            result.allocated = {c: v for c, v in paid.items() if v > 0}
        elif loan.status == "written_off":
            # A recovery: it reduces the written-off debt as income, never the member's
            # savings, which they could withdraw again.
            recovered = min(remaining, loan.written_off_amount - loan.recovered_amount)
            if recovered > 0:
                lines.append(credit(gl_account("GL-INCOME-RECOVERY"), recovered))
                loan.recovered_amount += recovered
                result.recovered = recovered
                remaining -= recovered
        if remaining > 0:
            if source == "savings":
                # Paying from savings more than is owed would just move money back.
                owed = value - remaining
                raise LoanError(f"loan {loan.loan_no} owes only KES {owed:,.2f}")
            lines.append(credit(member_account(member, "savings"), remaining))
            result.to_savings = remaining
        entry = journal_post(
            kind="repayment",
            lines=lines,
            value_date=value_date,
            description=f"Repayment {loan.loan_no} {reference}",
            idempotency_key=f"repay:{reference}",
            actor=_actor_name(actor),
            member_id=loan.member_id,
            loan_id=loan.id,
        )
    result.entry_id = entry.id
    debt = loan_debt(loan_id=loan.id)
    result.balance_left = debt.total
    if loan.status == "written_off":
        result.balance_left = loan.written_off_amount - loan.recovered_amount
    if loan.status in LIVE_STATUSES and debt.total == 0:
        _transition(loan, "close", actor, f"paid in full by {reference}")
        loan.closed_on = value_date
        loan.days_past_due = 0
        loan.aging_bucket = "current"
        result.closed = True
    # A compromise agreement in force counts what reached the loan against its schedule,
    # and its completion settles the loan. In its own savepoint, and never raising: the
    # member has paid, and a fault in the agreement's bookkeeping must not undo that
    # (it is logged; staff see the agreement short of the payment).
    reached_loan = sum(result.allocated.values(), ZERO) + result.recovered
    if reached_loan > 0:
        from app.services.agreements import agreement_allocate  # it imports this module

        try:
            with db.session.begin_nested():
                allocation = agreement_allocate(
                    loan_id=loan.id, amount=reached_loan, value_date=value_date, actor=actor
                )
        except Exception:  # noqa: BLE001 - see above
            log.exception("agreement allocation failed for %s %s", loan.loan_no, reference)
        else:
            if allocation is not None and allocation.completed and loan.status == "closed":
                result.closed, result.balance_left = True, ZERO
    if result.allocated or result.recovered:
        notify_repayment_received(
            member=member,
            amount=value,
            loan_no=loan.loan_no or "",
            balance_left=result.balance_left,
            receipt=reference,
        )
    elif result.to_savings:
        notify_deposit_received(
            member=member,
            amount=value,
            savings_balance=member_balances(member_id=member.id).savings,
            receipt=reference,
        )
    if commit:
        db.session.commit()
    return result


def loan_charge_penalty(*, installment: Installment, amount: Decimal, as_of: date) -> bool:
    """Charge one overdue installment's penalty once; False when it was charged already.

    Keyed by the installment (and by how many times staff reversed its penalty, so one
    wrongly charged and reversed can still be charged when it is really late)."""
    loan = installment.loan
    draft = _penalty_draft(
        loan,
        installment,
        amount,
        as_of,
        loan_account(loan, "penalty"),
        gl_account("GL-INCOME-PENALTY"),
    )
    try:
        journal_post(
            kind=draft.kind,
            lines=draft.lines,
            value_date=draft.value_date,
            description=draft.description,
            idempotency_key=draft.idempotency_key,
            member_id=draft.member_id,
            loan_id=draft.loan_id,
        )
    except DuplicatePosting:
        return False
    installment.penalty_due += amount
    installment.last_penalty_on = as_of
    return True


def penalty_for(product: LoanProduct, row: Installment) -> Decimal:
    """The penalty one overdue installment earns under its product's rule (zero: none)."""
    if product.penalty_type == "fixed":
        return round_money(product.penalty_value)
    if product.penalty_type == "percent":
        overdue = sum(
            (getattr(row, f"{c}_due") - getattr(row, f"{c}_paid") for c in COMPONENTS[1:]),
            ZERO,
        )
        return round_money(overdue * product.penalty_value / 100)
    return ZERO


def loan_reverse_penalty(
    *, loan_id: int, installment_number: int, staff: StaffUser, reason: str, value_date: date
) -> Decimal:
    """Take back a penalty charged in error (a job run for the wrong date, say).

    One reversing entry: penalty income gives back the whole charge; what was still owed
    leaves the penalty receivable, and what the member had already paid of it goes to their
    savings. The installment owes no penalty after, and may be charged again if it is
    really late. Audited; returns the amount reversed.
    """
    permission_require(staff, "penalty.reverse")
    reason = (reason or "").strip()
    if not reason:
        raise LoanError("a penalty reversal needs a reason")
    loan = _get_loan(loan_id)
    row = next(
        (r for r in current_installments(loan.id, fresh=True) if r.number == installment_number),
        None,
    )
    if row is None:
        raise LoanError(f"loan {loan.loan_no} has no installment {installment_number}")
    charged, paid = row.penalty_due, row.penalty_paid
    if charged <= 0:
        raise LoanError(f"installment {installment_number} of {loan.loan_no} has no penalty")
    lines: list[Line] = [debit(gl_account("GL-INCOME-PENALTY"), charged)]
    if charged - paid > 0:
        lines.append(credit(loan_account(loan, "penalty"), charged - paid))
    if paid > 0:
        lines.append(credit(member_account(loan.member, "savings"), paid))
    journal_post(
        kind="penalty_reversal",
        lines=lines,
        value_date=value_date,
        description=f"Penalty reversed {loan.loan_no} #{row.number}: {reason}"[:255],
        idempotency_key=f"penalty-reversal:{row.id}:{row.penalty_reversals + 1}",
        actor=_actor_name(staff),
        member_id=loan.member_id,
        loan_id=loan.id,
    )
    before = {"penalty_due": charged, "penalty_paid": paid, "charged_on": row.last_penalty_on}
    row.penalty_due = row.penalty_paid = ZERO
    row.last_penalty_on = None
    row.penalty_reversals += 1
    audit_record(
        actor=_actor_name(staff),
        action="loan.penalty_reverse",
        object_type="loan",
        object_id=loan.loan_no,
        before={"installment": row.number, **before},
        after={"installment": row.number, "penalty_due": ZERO, "refunded": paid},
        note=reason,
    )
    db.session.commit()
    return charged


@dataclass(frozen=True)
class ArrearsDecision:
    """What the daily arrears rule says of one loan on one day."""

    penalties: list[tuple[Installment, Decimal]]  # rows to charge now, with the amount
    days_past_due: int
    aging_bucket: str
    in_default: bool

    @property
    def standing(self) -> tuple[int, str, bool]:
        return (self.days_past_due, self.aging_bucket, self.in_default)


def arrears_decide(
    product: LoanProduct, rows: Sequence[Installment], as_of: date
) -> ArrearsDecision:
    """The one arrears rule, for one loan or a chunk of the book: `rows` are the loan's
    live schedule in installment order, read under the loan's lock. Days past due count
    from the oldest unpaid row due before `as_of`; a row more than grace_days late earns
    its product's penalty once; default is more than default_threshold_days late."""
    overdue = [row for row in rows if row.paid_on is None and row.due_date < as_of]
    penalties = []
    for row in overdue:
        if (as_of - row.due_date).days > product.grace_days and row.last_penalty_on is None:
            amount = penalty_for(product, row)
            if amount > 0:
                penalties.append((row, amount))
    dpd = (as_of - overdue[0].due_date).days if overdue else 0
    return ArrearsDecision(penalties, dpd, aging_bucket(dpd), dpd > product.default_threshold_days)


def loan_update_arrears(*, loan_id: int, as_of: date) -> bool:
    """Days past due, aging bucket, default flag and penalties of one loan for `as_of`.

    Under the loan's lock, from rows re-read under it: a repayment or a restructure that
    committed while the daily job was scanning is seen here, so a paid-off loan gets no
    penalty and a replaced installment is never charged. Commits; True if it changed.
    """
    loan = _get_loan(loan_id)
    if loan.status not in LIVE_STATUSES:
        db.session.commit()
        return False
    decision = arrears_decide(loan.product, current_installments(loan.id, fresh=True), as_of)
    changed = False
    for row, amount in decision.penalties:
        changed |= loan_charge_penalty(installment=row, amount=amount, as_of=as_of)
    if (loan.days_past_due, loan.aging_bucket, loan.in_default) != decision.standing:
        loan.days_past_due, loan.aging_bucket, loan.in_default = decision.standing
        changed = True
    db.session.commit()
    return changed


def _penalty_draft(
    loan: Loan, row: Installment, amount: Decimal, as_of: date, account: Account, income: Account
) -> Draft:
    """`loan_charge_penalty`'s entry, for the bulk path: the same key, lines and words."""
    reversals = row.penalty_reversals
    return Draft(
        kind="penalty",
        lines=[debit(account, amount), credit(income, amount)],
        value_date=as_of,
        description=f"Late penalty {loan.loan_no} #{row.number}",
        idempotency_key=f"penalty:{row.id}" + (f":{reversals}" if reversals else ""),
        member_id=loan.member_id,
        loan_id=loan.id,
    )


def loans_update_arrears(loan_ids: Sequence[int], *, as_of: date) -> int:
    """`loan_update_arrears` for a chunk of the book, in the caller's transaction (the
    close-of-business job commits per chunk): the loans locked in id order and re-read
    under the locks, their schedules and products in one query each, the same rule
    (`arrears_decide`), the penalties posted in bulk. Returns how many loans changed."""
    loans = list(
        db.session.scalars(
            select(Loan)
            .where(Loan.id.in_(sorted(loan_ids)), Loan.status.in_(LIVE_STATUSES))
            .order_by(Loan.id)
            .with_for_update(of=Loan)
            # Not the loan's eager loads (member, product, the whole schedule): the rows
            # the rule reads come in one query below, the products in another.
            .options(lazyload("*"))
            .execution_options(populate_existing=True)
        )
    )
    if not loans:
        return 0
    rows: dict[int, list[Installment]] = {loan.id: [] for loan in loans}
    # Only what arrears_decide looks at: the live rows due before as_of and unpaid.
    for row in db.session.scalars(
        select(Installment)
        .where(
            Installment.loan_id.in_(list(rows)),
            Installment.superseded.is_(False),
            Installment.paid_on.is_(None),
            Installment.due_date < as_of,
        )
        .order_by(Installment.loan_id, Installment.number)
        .options(lazyload("*"))
        .execution_options(populate_existing=True)
    ):
        rows[row.loan_id].append(row)
    products = {
        p.id: p
        for p in db.session.scalars(
            select(LoanProduct).where(LoanProduct.id.in_({loan.product_id for loan in loans}))
        )
    }
    decisions = {
        loan.id: arrears_decide(products[loan.product_id], rows[loan.id], as_of) for loan in loans
    }
    charging = [loan for loan in loans if decisions[loan.id].penalties]
    posted: set[str] = set()
    drafts: list[tuple[Installment, Decimal, Draft]] = []
    if charging:
        prefix, kind, label = RECEIVABLE["penalty"]
        accounts = accounts_get_or_create(
            [
                dict(
                    code=f"{prefix}-{loan.loan_no}",
                    kind=kind,
                    name=f"{label} {loan.loan_no}",
                    member_id=loan.member_id,
                    loan_id=loan.id,
                )
                for loan in charging
            ]
        )
        income = gl_account("GL-INCOME-PENALTY")
        for loan in charging:
            account = accounts[f"{prefix}-{loan.loan_no}"]
            for row, amount in decisions[loan.id].penalties:
                drafts.append(
                    (row, amount, _penalty_draft(loan, row, amount, as_of, account, income))
                )
        posted = journal_post_many([draft for _, _, draft in drafts])
    # Written as two executemany UPDATEs: the ORM's flush would send one per row.
    charged = [(row, amount) for row, amount, draft in drafts if draft.idempotency_key in posted]
    moved = [
        dict(b_id=loan.id, b_dpd=dpd, b_bucket=bucket, b_default=default)
        for loan in loans
        for dpd, bucket, default in [decisions[loan.id].standing]
        if (loan.days_past_due, loan.aging_bucket, loan.in_default) != (dpd, bucket, default)
    ]
    changed = {row.loan_id for row, _ in charged} | {m["b_id"] for m in moved}
    if charged:
        table = Installment.__table__
        db.session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(
                penalty_due=table.c.penalty_due + bindparam("b_amount"),
                last_penalty_on=bindparam("b_on"),
            ),
            [dict(b_id=row.id, b_amount=amount, b_on=as_of) for row, amount in charged],
        )
    if moved:
        table = Loan.__table__
        db.session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(
                days_past_due=bindparam("b_dpd"),
                aging_bucket=bindparam("b_bucket"),
                in_default=bindparam("b_default"),
            ),
            moved,
        )
    # What the session holds of them is stale now (the caller's commit expires it anyway).
    for obj in [*loans, *(row for row, _ in charged)]:
        db.session.expire(obj)
    return len(changed)


def loan_write_off(*, loan_id: int, staff: StaffUser, reason: str, value_date: date) -> Loan:
    """Take a defaulted loan off the books: every receivable moves to the write-off expense."""
    permission_require(staff, "loan.write_off")
    loan = _get_loan(loan_id)
    if not loan.in_default:
        raise LoanError(
            f"loan {loan.loan_no} is not in default; only defaulted loans are written off"
        )
    _transition(loan, "write_off", staff, reason)
    # What it still said is kept on the loan, for recoveries to count against.
    loan.written_off_amount = _write_off_receivables(
        loan,
        value_date=value_date,
        description=f"Write-off {loan.loan_no}: {reason}",
        idempotency_key=f"write_off:{loan.loan_no}",
        actor=staff,
    ).total
    loan.closed_on = value_date
    db.session.commit()
    return loan


def _write_off_receivables(
    loan: Loan,
    *,
    value_date: date,
    description: str,
    idempotency_key: str,
    actor: StaffUser | str | None,
) -> LoanDebt:
    """Move everything the loan still owes to the write-off expense in one entry and
    retire its schedule (the rows stay, superseded, for the record); returns what went.
    A write-off and a settlement's discount both end a loan's debt this way."""
    debt = loan_debt(loan_id=loan.id)
    if debt.total <= 0:
        return debt
    for row in current_installments(loan.id, fresh=True):
        row.superseded = True
    lines: list[Line] = [debit(gl_account("GL-WRITE-OFF"), debt.total)]
    for component in COMPONENTS:
        owed = getattr(debt, component)
        if owed > 0:
            lines.append(credit(loan_account(loan, component), owed))
    journal_post(
        kind="write_off",
        lines=lines,
        value_date=value_date,
        description=description[:255],
        idempotency_key=idempotency_key,
        actor=_actor_name(actor),
        member_id=loan.member_id,
        loan_id=loan.id,
    )
    return debt


def loan_settle(
    *,
    loan_id: int,
    actor: StaffUser | str,
    reason: str,
    value_date: date,
    commit: bool = True,
) -> Loan:
    """Close a loan whose compromise settlement is paid: what it still owes (the discount
    agreed, and any penalty charged since) is written off by the write-off's journal path,
    and the loan is closed, not written off: the member settled, so money paid after it
    is theirs (savings), not a recovery. Audited; `written_off_amount` says what went.

    The agreement's approval by a branch manager is the authority; a staff actor needs
    agreement.approve. `commit=False` when the caller (a repayment) commits.
    """
    permission_require(actor, "agreement.approve")
    loan = _get_loan(loan_id)
    if loan.status not in LIVE_STATUSES:
        raise LoanError(f"loan {loan.loan_no} is {loan.status}; there is nothing to settle")
    debt = _write_off_receivables(
        loan,
        value_date=value_date,
        description=f"Settlement discount {loan.loan_no}: {reason}",
        idempotency_key=f"settle:{loan.loan_no}",
        actor=actor,
    )
    loan.written_off_amount = debt.total
    _transition(loan, "close", actor, reason)
    audit_record(
        actor=_actor_name(actor),
        action="loan.settle",
        object_type="loan",
        object_id=loan.loan_no,
        before={c: getattr(debt, c) for c in COMPONENTS},
        after={"status": "closed", "written_off": debt.total},
        note=reason,
    )
    loan.closed_on = value_date
    loan.days_past_due, loan.aging_bucket, loan.in_default = 0, "current", False
    if commit:
        db.session.commit()
    return loan


def loan_restructure(
    *,
    loan_id: int,
    staff: StaffUser,
    term: int,
    start_date: date,
    reason: str,
    annual_rate: object | None = None,
) -> Loan:
    """Replace the rest of a loan in arrears with a new schedule for what is owed.

    Arrears (penalties, fees and interest already due) are added to the new principal;
    interest scheduled for dates not yet reached is reversed, since the new schedule
    charges its own. The old rows stay, marked superseded.
    """
    permission_require(staff, "loan.restructure")
    reason = (reason or "").strip()
    if not reason:
        raise LoanError("a restructure needs a reason")
    loan = _get_loan(loan_id)
    if loan.status not in LIVE_STATUSES or loan.days_past_due <= 0:
        raise LoanError(
            f"loan {loan.loan_no} is not in arrears; only loans in arrears are restructured"
        )
    product = loan.product
    if not (1 <= term <= max(product.max_term, 1)):
        raise LoanError(f"the new term must be 1 to {product.max_term} {_periods(product)}")
    rows = current_installments(loan.id, fresh=True)
    future_interest = sum(
        (r.interest_due - r.interest_paid for r in rows if r.due_date > start_date), ZERO
    )
    capitalised = {
        c: sum((getattr(r, f"{c}_due") - getattr(r, f"{c}_paid") for r in rows), ZERO)
        for c in ("interest", "fees", "penalty")
    }
    capitalised["interest"] -= future_interest
    debt = loan_debt(loan_id=loan.id)
    new_principal = debt.principal + sum(capitalised.values(), ZERO)
    before = {"principal": loan.principal, "term": loan.term, "rate": loan.annual_rate}
    _transition(loan, "restructure", staff, reason)
    version = max(r.version for r in rows) + 1
    for row in rows:
        row.superseded = True
    loan.term = term
    if annual_rate is not None:
        loan.annual_rate = to_decimal(annual_rate)
    new_interest = _write_schedule(loan, new_principal, start_date, version=version).total_interest

    lines: list[Line] = []
    if future_interest > 0:
        lines += [
            debit(gl_account("GL-INCOME-INTEREST"), future_interest),
            credit(loan_account(loan, "interest"), future_interest),
        ]
    for component, owed in capitalised.items():
        if owed > 0:
            lines += [
                debit(loan_account(loan, "principal"), owed),
                credit(loan_account(loan, component), owed),
            ]
    if new_interest > 0:
        lines += [
            debit(loan_account(loan, "interest"), new_interest),
            credit(gl_account("GL-INCOME-INTEREST"), new_interest),
        ]
    if lines:
        journal_post(
            kind="restructure",
            lines=lines,
            value_date=start_date,
            description=f"Restructure {loan.loan_no} v{version}",
            idempotency_key=f"restructure:{loan.loan_no}:v{version}",
            actor=_actor_name(staff),
            member_id=loan.member_id,
            loan_id=loan.id,
        )
    audit_record(
        actor=_actor_name(staff),
        action="loan.reschedule",
        object_type="loan",
        object_id=loan.loan_no,
        before=before,
        after={
            "principal": new_principal,
            "term": term,
            "rate": loan.annual_rate,
            "version": version,
        },
        note=reason,
    )
    loan.days_past_due = 0
    loan.aging_bucket = "current"
    loan.in_default = False
    db.session.commit()
    return loan
