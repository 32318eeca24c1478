"""B2C payouts: a loan's (approval writes the request, loans.loan_approve; the result
disburses the loan) and a member's withdrawal from savings (savings.withdrawal_request
takes the money out and writes the request; the result moves it from pending to the B2C
utility account, or a certain failure puts it back, once). This sends both. A timeout or
a missing result asks Transaction Status, never a blind resend."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import CursorResult, select, update

from app.clock import business_date
from app.extensions import db
from app.integrations.daraja import (
    DarajaAuthError,
    DarajaError,
    DarajaInvalidRequest,
    daraja_client,
)
from app.models import Account, JournalEntry, JournalLine, Loan, Member, MpesaRequest, Payment
from app.models.types import utcnow
from app.money import ZERO
from app.schemas.mpesa import amount_of, kenyan_time
from app.services.ledger import DuplicatePosting, credit, debit, gl_account, journal_post
from app.services.loans import LoanError, loan_disburse, loan_payout_failed, loan_start_payout
from app.services.locking import lock_existing, lock_row
from app.services.payments.common import (
    B2C_FAILURES,
    QUERY_PAYOUT_JOB,
    find_request,
    finish,
    late_note,
    mpesa_value_date,
    payment_record,
    queue_job,
    settings,
)
from app.services.savings.withdrawals import PENDING, WITHDRAWAL, withdrawal_key
from app.services.sms import sms_queue
from app.sms_templates import render_sms


def payments_send_payout(*, request_id: int) -> str:
    """Send a pending payout: for a loan, the loan moves approved -> disbursing under the
    member's and the loan's locks (the limit is checked one last time); a withdrawal's money
    left the account when it was asked for. Then the B2C request goes."""
    request = db.session.get(MpesaRequest, request_id)
    if request is None or request.status != "pending":
        return request.status if request else "missing"
    loan_id = request.loan_id
    # loan_approve writes every loan payout with its loan; a withdrawal has none.
    assert loan_id is not None or request.purpose == WITHDRAWAL
    try:
        if loan_id is not None:
            loan_start_payout(loan_id=loan_id, commit=False)
    except LoanError as exc:
        assert loan_id is not None  # only loan_start_payout raises it
        db.session.rollback()
        request = lock_existing(MpesaRequest, request_id)
        if request.status == "pending":
            finish(request, "failed", None, f"not sent: {exc}")
            loan = db.session.get(Loan, loan_id)
            if loan is not None and loan.status == "approved":
                loan.payout_error = f"not sent: {exc}"[:255]
        # Not pending: another run of this job sent it (the loan is disbursing because of
        # it), and its status is the answer, not this run's refusal.
        status = request.status
        db.session.commit()
        return status
    # An UPDATE gives a CursorResult (with rowcount); SQLAlchemy 2.1 types it as a Result.
    claimed = cast(
        CursorResult[Any],  # pragma: no mutate: cast() does nothing at run time
        db.session.execute(
            update(MpesaRequest)
            .where(MpesaRequest.id == request_id, MpesaRequest.status == "pending")
            .values(status="sending", attempts=MpesaRequest.attempts + 1)
        ),
    ).rowcount
    if not claimed:
        db.session.rollback()  # another job sent it: the loan stays as that job left it
        request = db.session.get(MpesaRequest, request_id)
        assert request is not None  # read above; requests are never deleted
        return request.status
    db.session.commit()
    request = db.session.get(MpesaRequest, request_id)
    assert request is not None  # claimed just above
    s = settings()
    try:
        reply = daraja_client().b2c_payment(
            originator_conversation_id=request.originator_conversation_id or "",
            phone=request.phone,
            amount=request.amount,
            remarks=f"{_remark(request)} {request.account_reference}",
            result_url=s.callback_url("b2c/result"),
            timeout_url=s.callback_url("b2c/timeout"),
        )
    except (DarajaInvalidRequest, DarajaAuthError) as exc:
        # Refused before processing: no money left, the loan goes back to approved.
        request = lock_existing(MpesaRequest, request_id)
        finish(request, "failed", exc.code, f"refused before processing: {exc}")
        if loan_id is not None:
            loan_payout_failed(loan_id=loan_id, reason=f"M-PESA refused: {exc}", commit=False)
        else:
            _withdrawal_return(request, reason="M-PESA refused the payment")
        db.session.commit()
        return "failed"
    except DarajaError as exc:
        request = lock_existing(MpesaRequest, request_id)
        finish(request, "unknown", exc.code, f"no clear answer: {exc}")
        db.session.commit()
        return "unknown"
    request = lock_existing(MpesaRequest, request_id)
    request.conversation_id = str(reply.get("ConversationID") or "")[:64] or None
    request.sent_at = utcnow()
    if request.status == "sending":
        request.status = "sent"
    db.session.commit()
    return request.status


def _remark(request: MpesaRequest) -> str:
    return "Withdrawal" if request.purpose == WITHDRAWAL else "Loan"


def find_payout(data: dict[str, Any]) -> MpesaRequest | None:
    """The payout a B2C result or timeout answers (our OriginatorConversationID first)."""
    return find_request(
        "b2c",
        (MpesaRequest.originator_conversation_id, data.get("originator_conversation_id")),
        (MpesaRequest.conversation_id, data.get("conversation_id")),
    )


def payout_paid(
    request: MpesaRequest,
    *,
    receipt: str,
    amount: Decimal | None,
    paid_at: datetime | None,
    callback_id: int | None,
    desc: str,
) -> str:
    """The money reached the member: disburse the loan, or settle the withdrawal, once
    (locked request; caller commits)."""
    if request.status in ("succeeded", "failed") and request.receipt:
        return "duplicate"
    if request.flag:
        return "flagged"
    if amount is not None and amount != request.amount:
        request.flag = f"paid KES {amount} but KES {request.amount} was requested"[:255]
        return "flagged"
    if request.purpose == WITHDRAWAL:
        return _withdrawal_paid(
            request, receipt=receipt, paid_at=paid_at, callback_id=callback_id, desc=desc
        )
    if request.status == "failed" and _retried(request):
        # We had recorded it as failed (Safaricom said so) and staff sent the money again:
        # two payouts may have left. Nothing is posted on a guess; staff settle it.
        request.flag = f"paid ({receipt}) after it was recorded as failed and sent again"
        return "flagged"
    payment = _payment_out(request, receipt=receipt, callback_id=callback_id, paid_at=paid_at)
    if payment is None:
        return "flagged"
    loan = db.session.get(Loan, request.loan_id)
    assert loan is not None and request.loan_id is not None  # every payout has its loan
    if loan.status == "approved":
        # A failure was recorded before this success (a status answer after a timeout):
        # the money did leave, so the loan goes out from approved.
        loan_start_payout(loan_id=loan.id, commit=False, check_limit=False)
    loan = loan_disburse(
        loan_id=request.loan_id,
        reference=receipt,
        value_date=mpesa_value_date(paid_at),
        channel="b2c",
        commit=False,
    )
    payment.journal_entry_id = db.session.scalar(
        select(JournalEntry.id).where(JournalEntry.idempotency_key == f"disburse:{loan.loan_no}")
    )
    late_note(payment.journal_entry_id, paid_at)
    request.receipt = receipt
    finish(request, "succeeded", "0", desc)
    return "processed"


def _payment_out(
    request: MpesaRequest, *, receipt: str, callback_id: int | None, paid_at: datetime | None
) -> Payment | None:
    """The payout's Payment row; None (the request flagged for staff) when its receipt is
    another payment's already."""
    payment = payment_record(
        request=request,
        callback_id=callback_id,
        receipt=receipt,
        channel="b2c",
        direction="out",
        transacted_at=paid_at,
    )
    if payment is None:
        request.flag = f"receipt {receipt} was recorded for another payment"
    return payment


def _retried(request: MpesaRequest) -> bool:
    later = db.session.scalar(
        select(MpesaRequest.id).where(
            MpesaRequest.kind == "b2c",
            MpesaRequest.loan_id == request.loan_id,
            MpesaRequest.id > request.id,
        )
    )
    return later is not None


def payout_failed(request: MpesaRequest, *, code: str, desc: str) -> str:
    """No money left for certain: the loan goes back to approved with the reason; a
    withdrawal's money goes back to the account it came from."""
    if request.status in ("succeeded", "failed"):
        return "duplicate"
    finish(request, "failed", code, desc)
    reason = B2C_FAILURES.get(code, desc or f"result code {code}")
    if request.purpose == WITHDRAWAL:
        _withdrawal_return(request, reason=reason)
        return "failed"
    loan = db.session.get(Loan, request.loan_id)
    if loan is not None and loan.status == "disbursing":
        loan_payout_failed(loan_id=loan.id, reason=f"M-PESA payout failed: {reason}", commit=False)
    return "failed"


def b2c_apply(request: MpesaRequest, data: dict[str, Any], callback_id: int | None) -> str:
    """A B2C result for a locked request."""
    code = data["result_code"]
    if code == "0":
        params = data["params"]
        receipt = str(params.get("TransactionReceipt") or data.get("transaction_id") or "")
        if not receipt:
            request.flag = "success result without a receipt"
            return "flagged"
        return payout_paid(
            request,
            receipt=receipt.strip().upper()[:20],
            amount=amount_of(params.get("TransactionAmount")),
            paid_at=kenyan_time(
                params.get("TransactionCompletedDateTime"), settings().tz, ("%d.%m.%Y %H:%M:%S",)
            ),
            callback_id=callback_id,
            desc=data["result_desc"],
        )
    if code in B2C_FAILURES:
        return payout_failed(request, code=code, desc=data["result_desc"])
    if request.status in ("succeeded", "failed"):
        # A settled payout is not reopened, nor asked about, by a later doubtful answer.
        return "duplicate"
    # 15 (duplicate id: the first may have paid), or a code we do not know: ask.
    finish(request, "unknown", code, data["result_desc"] or "to be asked")
    return "unknown"


# -- a member's withdrawal from savings ------------------------------------------------------


def _withdrawal_paid(
    request: MpesaRequest,
    *,
    receipt: str,
    paid_at: datetime | None,
    callback_id: int | None,
    desc: str,
) -> str:
    """The withdrawal reached the member's M-PESA: the pending amount leaves the B2C
    utility account (keyed by the receipt), the Payment is recorded, the member texted."""
    if request.status == "failed":
        # Recorded as failed and the money already put back: paying it now would pay it
        # twice. Nothing is posted on a guess; staff settle it with the member.
        request.flag = f"paid ({receipt}) after the money was put back in savings"[:255]
        return "flagged"
    payment = _payment_out(request, receipt=receipt, callback_id=callback_id, paid_at=paid_at)
    if payment is None:
        return "flagged"
    entry = journal_post(
        kind="withdrawal_paid",
        lines=[
            debit(gl_account(PENDING), request.amount),
            credit(gl_account("GL-B2C-UTILITY"), request.amount),
        ],
        value_date=mpesa_value_date(paid_at),
        description=f"Withdrawal {request.account_reference} paid {receipt}",
        idempotency_key=f"withdrawal-paid:{receipt}",
        member_id=request.member_id,
    )
    payment.journal_entry_id = entry.id
    late_note(entry.id, paid_at)
    request.receipt = receipt
    finish(request, "succeeded", "0", desc)
    account = db.session.get(Account, request.account_id)
    _withdrawal_sms(
        request,
        "withdrawal_sent",
        key=f"withdrawal-sent:{request.id}",
        receipt=receipt,
        savings=account.display_balance if account is not None else ZERO,
    )
    return "processed"


def _withdrawal_return(request: MpesaRequest, *, reason: str) -> None:
    """No money left for certain: the amount comes back from pending and the fee from
    income, in one entry whose key (the request) makes a second delivery post nothing."""
    account = db.session.get(Account, request.account_id)
    assert account is not None  # withdrawal_request writes every withdrawal with its account
    fee = _withdrawal_fee(request)
    lines = [debit(gl_account(PENDING), request.amount)]
    if fee > 0:
        lines.append(debit(gl_account("GL-INCOME-FEES"), fee))
    lines.append(credit(account, request.amount + fee))
    try:
        journal_post(
            kind="withdrawal_return",
            lines=lines,
            value_date=business_date(None),
            description=f"Withdrawal {request.account_reference} failed: money returned",
            idempotency_key=f"withdrawal-return:{request.id}",
            member_id=request.member_id,
        )
    except DuplicatePosting:
        return  # returned already: the member was told then
    _withdrawal_sms(
        request, "withdrawal_failed", key=f"withdrawal-failed:{request.id}", reason=reason
    )


def _withdrawal_fee(request: MpesaRequest) -> Decimal:
    """The fee the withdrawal was charged (the product's fee may have changed since): the
    fee-income credit of the entry that took the money out."""
    fee = db.session.scalar(
        select(JournalLine.amount)
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .join(Account, Account.id == JournalLine.account_id)
        .where(
            JournalEntry.idempotency_key == withdrawal_key(request.id),
            Account.code == "GL-INCOME-FEES",
        )
    )
    return -fee if fee is not None else ZERO


def _withdrawal_sms(request: MpesaRequest, template: str, *, key: str, **params: object) -> None:
    member = db.session.get(Member, request.member_id)
    if member is None:
        return
    sms_queue(
        template=template,
        body=render_sms(
            template,
            member.language,
            amount=request.amount,
            account=request.account_reference or "",
            fee=_withdrawal_fee(request),
            **params,
        ),
        phone=request.phone,
        idempotency_key=key,
        member=member,
        language=member.language,
    )


def payout_timed_out(request: MpesaRequest) -> str:
    """Safaricom's queue timed out: outcome unknown, Transaction Status will say."""
    if request.status in ("succeeded", "failed"):
        return "duplicate"
    finish(request, "unknown", None, "queue timeout: asking Transaction Status")
    return "unknown"


def payments_query_payout(*, request_id: int) -> str:
    """Ask Transaction Status about a payout whose result never came (or timed out). The
    answer arrives at /status/result; the query is recorded as a request of its own."""
    parent = db.session.get(MpesaRequest, request_id)
    if parent is None or parent.status in ("succeeded", "failed", "pending"):
        return parent.status if parent else "missing"
    s = settings()
    try:
        # A payout still waiting has no receipt (it is kept only once paid): it is asked
        # about by our own OriginatorConversationID.
        reply = daraja_client().transaction_status(
            originator_conversation_id=parent.originator_conversation_id,
            result_url=s.callback_url("status/result"),
            timeout_url=s.callback_url("status/timeout"),
        )
    except DarajaError as exc:
        parent.checked_at = utcnow()
        parent.result_desc = f"status query not taken: {exc}"[:255]
        db.session.commit()
        return "not asked"
    query = MpesaRequest(
        kind="status",
        status="sent",
        purpose="status",
        parent_id=parent.id,
        member_id=parent.member_id,
        loan_id=parent.loan_id,
        phone=parent.phone,
        amount=parent.amount,
        conversation_id=str(reply.get("ConversationID") or "")[:64] or None,
        originator_conversation_id=_fresh_id(reply.get("OriginatorConversationID"), parent),
        channel="system",
        requested_by="reconciliation",
        sent_at=utcnow(),
    )
    db.session.add(query)
    parent.checked_at = utcnow()
    db.session.commit()
    return "asked"


def _fresh_id(value: object, parent: MpesaRequest) -> str | None:
    """The query's own OriginatorConversationID, unless it merely echoes the payout's."""
    text = str(value or "").strip()[:64]
    return text if text and text != parent.originator_conversation_id else None


def find_status_query(data: dict[str, Any]) -> MpesaRequest | None:
    return find_request(
        "status",
        (MpesaRequest.conversation_id, data.get("conversation_id")),
        (MpesaRequest.originator_conversation_id, data.get("originator_conversation_id")),
    )


def status_apply(query: MpesaRequest, data: dict[str, Any], callback_id: int | None) -> str:
    """A Transaction Status answer: settle the payout it asked about (both rows locked)."""
    parent = lock_row(MpesaRequest, query.parent_id) if query.parent_id else None
    if query.status in ("succeeded", "failed"):
        return "duplicate"
    finish(
        query,
        "succeeded" if data["result_code"] == "0" else "failed",
        data["result_code"],
        data["result_desc"],
    )
    if parent is None or parent.status in ("succeeded", "failed"):
        return "duplicate"
    params = data["params"]
    completed = str(params.get("TransactionStatus") or "").strip().lower() == "completed"
    if data["result_code"] == "0" and completed and params.get("ReceiptNo"):
        return payout_paid(
            parent,
            receipt=str(params["ReceiptNo"]).strip().upper()[:20],
            amount=amount_of(params.get("Amount")),
            paid_at=kenyan_time(
                params.get("FinalisedTime"), settings().tz, ("%Y%m%d%H%M%S", "%d.%m.%Y %H:%M:%S")
            ),
            callback_id=callback_id,
            desc="paid (Transaction Status)",
        )
    if data["result_code"] != "0":
        # Safaricom has no such completed transaction: no money left.
        return payout_failed(parent, code=data["result_code"], desc=data["result_desc"])
    return "unknown"


def payout_status_due(request_id: int) -> None:
    queue_job(QUERY_PAYOUT_JOB, request_id)
