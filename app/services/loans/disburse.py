"""An approved loan's money going out: the B2C payout request written with the approval and
queued after commit, its retry, start and failure, and the disbursement itself, which
writes the schedule and posts the loan's receivables."""

from __future__ import annotations

import logging
import uuid
from datetime import date
from decimal import Decimal

from sqlalchemy import select

from app.clock import business_today
from app.extensions import db, enqueue
from app.models import Installment, Loan, Member, MpesaRequest, StaffUser
from app.models.mpesa import OPEN_STATUSES
from app.money import is_whole_shillings
from app.services.audit import audit_record
from app.services.ledger import Line, credit, debit, gl_account, journal_post
from app.services.loan_schedule import Schedule, ScheduleError, schedule_build
from app.services.loans._common import (
    SEND_PAYOUT_JOB,
    LoanError,
    _actor_name,
    _check_limit,
    _get_loan,
    _lock_for_lending,
    _transition,
    loan_account,
)
from app.services.notifications import notify_loan_disbursed
from app.services.permissions import permission_require
from app.services.webhooks import webhook_loan

log = logging.getLogger(__name__)


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
    webhook_loan("loan.disbursed", loan)
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
