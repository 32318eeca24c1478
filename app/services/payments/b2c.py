"""B2C loan payouts: approval writes the request (loans.loan_approve); this sends it, and
the result disburses the loan. A timeout or a missing result asks Transaction Status,
never a blind resend."""

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
from app.models import JournalEntry, Loan, MpesaRequest
from app.models.types import utcnow
from app.schemas.mpesa import amount_of, kenyan_time
from app.services.loans import LoanError, loan_disburse, loan_payout_failed, loan_start_payout
from app.services.locking import lock_existing, lock_row
from app.services.payments.common import (
    B2C_FAILURES,
    QUERY_PAYOUT_JOB,
    find_request,
    finish,
    payment_record,
    queue_job,
    settings,
)


def payments_send_payout(*, request_id: int) -> str:
    """Send a pending payout: the loan moves approved -> disbursing under the member's and
    the loan's locks (the limit is checked one last time), then the B2C request goes."""
    request = db.session.get(MpesaRequest, request_id)
    if request is None or request.status != "pending":
        return request.status if request else "missing"
    loan_id = request.loan_id
    assert loan_id is not None  # loan_approve writes every payout with its loan
    try:
        loan_start_payout(loan_id=loan_id, commit=False)
    except LoanError as exc:
        db.session.rollback()
        request = lock_existing(MpesaRequest, request_id)
        if request.status == "pending":
            finish(request, "failed", None, f"not sent: {exc}")
            loan = db.session.get(Loan, loan_id)
            if loan is not None and loan.status == "approved":
                loan.payout_error = f"not sent: {exc}"[:255]
        db.session.commit()
        return "failed"
    # An UPDATE gives a CursorResult (with rowcount); SQLAlchemy 2.1 types it as a Result.
    claimed = cast(
        CursorResult[Any],
        db.session.execute(
            update(MpesaRequest)
            .where(MpesaRequest.id == request_id, MpesaRequest.status == "pending")
            .values(status="sending", attempts=MpesaRequest.attempts + 1, updated_at=utcnow())
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
            remarks=f"Loan {request.account_reference}",
            result_url=s.callback_url("b2c/result"),
            timeout_url=s.callback_url("b2c/timeout"),
        )
    except (DarajaInvalidRequest, DarajaAuthError) as exc:
        # Refused before processing: no money left, the loan goes back to approved.
        request = lock_existing(MpesaRequest, request_id)
        finish(request, "failed", exc.code, f"refused before processing: {exc}")
        loan_payout_failed(loan_id=loan_id, reason=f"M-PESA refused: {exc}", commit=False)
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
    """The money reached the member: disburse the loan once (locked request; caller commits)."""
    if request.status in ("succeeded", "failed") and request.receipt:
        return "duplicate"
    if request.flag:
        return "flagged"
    if amount is not None and amount != request.amount:
        request.flag = f"paid KES {amount} but KES {request.amount} was requested"[:255]
        return "flagged"
    if request.status == "failed" and _retried(request):
        # We had recorded it as failed (Safaricom said so) and staff sent the money again:
        # two payouts may have left. Nothing is posted on a guess; staff settle it.
        request.flag = f"paid ({receipt}) after it was recorded as failed and sent again"
        return "flagged"
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
        value_date=business_date(paid_at),
        channel="b2c",
        commit=False,
    )
    payment.journal_entry_id = db.session.scalar(
        select(JournalEntry.id).where(JournalEntry.idempotency_key == f"disburse:{loan.loan_no}")
    )
    request.receipt = receipt
    finish(request, "succeeded", "0", desc)
    return "processed"


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
    """No money left for certain: the loan goes back to approved with the reason."""
    if request.status in ("succeeded", "failed"):
        return "duplicate"
    finish(request, "failed", code, desc)
    reason = B2C_FAILURES.get(code, desc or f"result code {code}")
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
    # 15 (duplicate id: the first may have paid), or a code we do not know: ask.
    if request.status not in ("succeeded", "failed"):
        finish(request, "unknown", code, data["result_desc"] or "to be asked")
    return "unknown"


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
        reply = daraja_client().transaction_status(
            transaction_id=parent.receipt,
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
