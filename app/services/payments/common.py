"""What every M-PESA path shares: the error, row locks, outcomes and their metrics."""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.clock import business_date
from app.config import Settings
from app.errors import SaccoError
from app.extensions import db, enqueue
from app.metrics import MPESA_OUTCOMES, MPESA_SECONDS
from app.models import JournalEntry, MpesaRequest, Payment
from app.models.types import utcnow
from app.services.ledger import credit, debit, gl_account, journal_post, open_value_date
from app.services.loans import SEND_PAYOUT_JOB  # noqa: F401 - one constant, re-exported

log = logging.getLogger("app.payments")

# Jobs by dotted path: services never import the workers that import them.
SEND_STK_JOB = "workers.payments.send_stk"
QUERY_PAYOUT_JOB = "workers.payments.query_payout"
PROCESS_CALLBACK_JOB = "workers.payments.process_callback"


# STK result codes whose meaning is final and what the member reads (contracts/daraja.md).
STK_FAILURES: dict[str, str] = {
    "1": "your M-PESA balance was not enough",
    "17": "M-PESA refused a repeat of the same payment; wait 2 minutes",
    "26": "M-PESA was busy",
    "1001": "another M-PESA payment was in progress on your phone",
    "1019": "the M-PESA prompt expired before you answered",
    "1025": "M-PESA could not send the prompt to your phone",
    "9999": "M-PESA could not send the prompt to your phone",
    "1032": "you cancelled the M-PESA prompt",
    "1036": "your phone could not be reached",
    "1037": "your phone could not be reached",
    "2001": "the M-PESA PIN was wrong",
}
# B2C result codes that say for certain that no money left (a retry by staff is safe).
# 15 (duplicate OriginatorConversationID) is not here: the first one may have paid.
B2C_FAILURES: dict[str, str] = {
    "1": "the SACCO's M-PESA utility account is short of funds",
    "2": "the amount is below the M-PESA minimum",
    "3": "the amount is above the M-PESA maximum",
    "4": "the member's daily M-PESA limit is reached",
    "8": "the member's M-PESA account would pass its maximum balance",
    "11": "the SACCO's M-PESA account is in an invalid state",
    "21": "the initiator may not make this payment",
    "2001": "the initiator information is invalid",
    "2006": "the member's M-PESA account status does not allow it",
    "2028": "M-PESA does not permit this payment",
    "2040": "the number is not registered for M-PESA",
    "8006": "the security credential is locked",
    "SFC_IC0003": "the number does not exist on M-PESA",
}


class PaymentError(SaccoError):
    """A payment action that must not happen; the message says why. Nothing was written."""


def settings() -> Settings:
    return current_app.config["SETTINGS"]


def payment_record(
    *, request: MpesaRequest | None = None, callback_id: int | None = None, **fields: object
) -> Payment | None:
    """Write the one Payment row a receipt may have, in a savepoint; None when the receipt
    is recorded already (through this channel or another): the unique constraint decides,
    so two workers at the same instant cannot both post it. With `request`, the amount,
    phone, member and loan come from the request we made."""
    if request is not None:
        fields = {
            "amount": request.amount,
            "phone": request.phone,
            "bill_ref": request.account_reference,
            "member_id": request.member_id,
            "loan_id": request.loan_id,
            "request_id": request.id,
            **fields,
        }
    payment = Payment(callback_id=callback_id, **fields)
    try:
        with db.session.begin_nested():
            db.session.add(payment)
    except IntegrityError:
        return None
    return payment


def mpesa_value_date(paid_at: datetime | None) -> date:
    """The value date of M-PESA money: the business date of its M-PESA time, or the first
    open day when the books of that day are closed. A member's payment confirmed after its
    month closed still posts (never lost); `late_note` then says so on the entry."""
    return open_value_date(business_date(paid_at))


def late_note(entry_id: int | None, paid_at: datetime | None) -> None:
    """Say on the entry when its value date is not the M-PESA day (that day's books were
    closed), in front so a long description never cuts it off."""
    paid_on = business_date(paid_at)
    entry = db.session.get(JournalEntry, entry_id) if entry_id is not None else None
    if entry is None or entry.value_date == paid_on or entry.description.startswith("Late"):
        return
    entry.description = (
        f"Late: paid {paid_on} (books closed), dated {entry.value_date}. {entry.description}"
    )[:255]


def suspense_post(
    payment: Payment, *, suggested_member_id: int | None, description: str, value_date: date
) -> None:
    """Book money that matched nowhere (a Paybill account nobody has, a prompt that cannot
    take what was paid) into GL-SUSPENSE, where staff assign it. The receipt keys it."""
    payment.status = "suspense"
    payment.member_id = None
    payment.loan_id = None
    payment.suggested_member_id = suggested_member_id
    entry = journal_post(
        kind="suspense",
        lines=[
            debit(gl_account("GL-MPESA-CLEARING"), payment.amount),
            credit(gl_account("GL-SUSPENSE"), payment.amount),
        ],
        value_date=value_date,
        description=description,
        idempotency_key=f"suspense:{payment.receipt}",
    )
    payment.journal_entry_id = entry.id


def find_request(kind: str, *candidates: tuple[Any, str | None]) -> MpesaRequest | None:
    """The request of `kind` whose column equals the first candidate value that matches."""
    for column, value in candidates:
        if value:
            found = db.session.scalar(
                select(MpesaRequest).where(column == value, MpesaRequest.kind == kind)
            )
            if found is not None:
                return found
    return None


def finish(request: MpesaRequest, status: str, code: str | None, desc: str | None) -> None:
    """Record a request's final (or unknown) state and count it."""
    request.status = status
    if code is not None:
        request.result_code = code[:16]
    if desc is not None:
        request.result_desc = desc[:255]
    if status in ("succeeded", "failed"):
        now = utcnow()
        request.completed_at = now
        created = request.created_at
        if created is not None:
            MPESA_SECONDS.labels(request.kind).observe((now - created).total_seconds())
    MPESA_OUTCOMES.labels(request.kind, status).inc()


def queue_job(func: str, *args: object, job_id: str | None = None, **options: Any) -> None:
    """Queue after commit; if Redis is down the row is the record and the reconciliation
    job picks it up, so a lost enqueue never loses a payment."""
    try:
        enqueue("payments", func, *args, job_id=job_id, **options)
    except Exception as exc:  # noqa: BLE001 - the row in the database is the record
        log.warning("could not queue %s%s: %s", func, args, type(exc).__name__)
