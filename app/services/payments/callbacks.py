"""Callbacks: the raw body is stored before anything else, then processed in a job.

`callback_store` writes and commits the raw record (size-capped) and parses it;
`callback_process` (a job) settles what it says under row locks: the callback's, then the
request's, then (inside the loan service) the member's and the loan's. Duplicates and
concurrent twins find the request settled under its lock and post nothing; the unique
receipt is the last word if two paths meet.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError
from rq import Retry
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db, redis_client
from app.metrics import CALLBACKS
from app.models import MpesaCallback, MpesaRequest
from app.models.types import utcnow
from app.schemas.mpesa import C2BSchema, ResultSchema, StkCallbackSchema
from app.services.locking import lock_existing, lock_row
from app.services.payments.b2c import (
    b2c_apply,
    find_payout,
    find_status_query,
    payout_status_due,
    payout_timed_out,
    status_apply,
)
from app.services.payments.c2b import c2b_confirm, c2b_validate
from app.services.payments.common import PROCESS_CALLBACK_JOB, log, queue_job
from app.services.payments.stk import find_stk, stk_apply, stk_mismatch, stk_paid_at

RAW_CAP = 64 * 1024  # bytes of a body kept; the rest is counted, not stored

SCHEMAS: dict[str, type[Schema]] = {
    "stk": StkCallbackSchema,
    "c2b_validation": C2BSchema,
    "c2b_confirmation": C2BSchema,
    "b2c_result": ResultSchema,
    "b2c_timeout": ResultSchema,
    "status_result": ResultSchema,
    "status_timeout": ResultSchema,
}


@dataclass
class Received:
    """What the web layer needs to answer: the stored row and the parsed body, if any."""

    callback_id: int
    readable: bool
    data: dict[str, Any] | None
    error: str | None


def callback_store(
    *,
    kind: str,
    raw: bytes,
    size: int,
    remote_addr: str | None,
    received_at: datetime | None = None,
) -> Received:
    """Keep the body first (committed on its own), then parse and validate it.

    An unreadable body (not JSON) or one its schema refuses is kept with its status and
    reason for staff; nothing else happens to it.
    """
    row = MpesaCallback(
        kind=kind,
        raw_body=_text(raw),
        body_size=size,
        remote_addr=(remote_addr or "")[:64] or None,
        received_at=received_at or utcnow(),
    )
    db.session.add(row)
    db.session.flush()
    callback_id = row.id  # read now: after the commit, reading it back may be what fails
    db.session.commit()
    try:
        if size > RAW_CAP:
            return _refuse(row, "invalid", f"body of {size} bytes is over the {RAW_CAP} cap")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _refuse(row, "invalid", "not JSON", readable=False)
        try:
            # marshmallow refuses a body that is not an object ("Invalid input type.").
            data = SCHEMAS[kind]().load(body)
        except ValidationError as exc:
            return _refuse(row, "invalid", f"refused by schema: {exc.messages}")
        row.reference = _reference(kind, data)
        db.session.commit()
    except SQLAlchemyError as exc:
        db.session.rollback()
        raise CallbackKept(callback_id) from exc
    return Received(callback_id, True, data, None)


class CallbackKept(Exception):
    """The raw body was committed, then the database was lost before it was parsed (a
    terminated backend, a restart). The row is safe as `received` and the reconcile
    sweep processes it: the caller answers as usual and must not keep a second copy."""

    def __init__(self, callback_id: int) -> None:
        # The message shows only if this escapes, and both callers catch it.
        super().__init__(f"callback {callback_id} kept unparsed")  # pragma: no mutate
        self.callback_id = callback_id


SPOOL_KEY = "sacco:payments:spool"


def callback_spool(*, kind: str, raw: bytes, size: int, remote_addr: str | None) -> None:
    """The database could not take the raw record: keep it in Redis instead, so a callback
    that Safaricom will not send again is not lost. The sweep writes it to the database
    (`callback_unspool`). Raises if Redis is down too: then nothing can keep it."""
    entry = {
        "kind": kind,
        "raw": base64.b64encode(raw[:RAW_CAP]).decode(),  # what a row keeps; size tells the rest
        "size": size,
        "remote_addr": remote_addr,
        "received_at": utcnow().isoformat(),
    }
    redis_client().rpush(SPOOL_KEY, json.dumps(entry))
    log.error("callback %s kept in Redis: the database refused it", kind)


def callback_unspool(*, limit: int = 1000) -> int:
    """Write callbacks kept in Redis while the database was down, oldest first, and queue
    their processing. An entry leaves Redis only after its row is committed (a crash in
    between stores it twice: the second is processed as a duplicate, nothing more)."""
    redis = redis_client()
    done = 0
    while done < limit:
        item = redis.lindex(SPOOL_KEY, 0)
        if item is None:
            break
        entry = json.loads(item)
        try:
            received = callback_store(
                kind=entry["kind"],
                raw=base64.b64decode(entry["raw"]),
                size=int(entry["size"]),
                remote_addr=entry.get("remote_addr"),
                received_at=datetime.fromisoformat(entry["received_at"]),
            )
        except CallbackKept:
            redis.lpop(SPOOL_KEY)  # its row is committed: the lost-job sweep processes it
            done += 1
            continue
        if entry["kind"] == "c2b_validation":
            # Answered "accepted" while the database was down; only the record is left.
            row = db.session.get(MpesaCallback, received.callback_id)
            if row is not None and row.status == "received":
                row.status = "processed"
                row.error = "answered 0 while the database was down"
                db.session.commit()
        elif received.data is not None:
            callback_enqueue(received.callback_id)
        redis.lpop(SPOOL_KEY)
        done += 1
    return done


def _text(raw: bytes) -> str:
    """The body as text that any database can hold: bytes that are not UTF-8 and NULs
    (PostgreSQL refuses them in text) are written as escapes, so the record stays
    faithful and the insert cannot fail."""
    return raw[:RAW_CAP].decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")


def _refuse(row: MpesaCallback, status: str, why: str, *, readable: bool = True) -> Received:
    row.status = status
    row.error = why[:2000]  # pragma: no mutate: a guard; every reason is far shorter
    row.processed_at = utcnow()
    db.session.commit()
    CALLBACKS.labels(row.kind, status).inc()
    log.warning("callback %s %s kept as %s: %s", row.id, row.kind, status, why[:200])
    return Received(row.id, readable, None, why)


def _reference(kind: str, data: dict[str, Any]) -> str | None:
    value = (
        {
            "stk": data.get("checkout_request_id"),
            "c2b_validation": data.get("trans_id"),
            "c2b_confirmation": data.get("trans_id"),
        }.get(kind)
        or data.get("originator_conversation_id")
        or data.get("conversation_id")
    )
    return str(value)[:64] if value else None


def callback_refused(*, kind: str, raw: bytes, size: int, remote_addr: str | None) -> int:
    """A callback from an address outside the allowlist: kept for staff, never processed."""
    row = MpesaCallback(
        kind=kind,
        raw_body=_text(raw),
        body_size=size,
        remote_addr=(remote_addr or "")[:64] or None,
        status="refused",
        error=f"source address {remote_addr} is not in MPESA_ALLOWED_IPS",
        processed_at=utcnow(),
    )
    db.session.add(row)
    db.session.commit()
    CALLBACKS.labels(kind, "refused").inc()
    return row.id


def callback_validate(received: Received) -> tuple[str, str]:
    """C2B validation, answered in the request (Safaricom waits about 8 s)."""
    code, why = c2b_validate(received.data or {})
    row = db.session.get(MpesaCallback, received.callback_id)
    assert row is not None  # callback_store wrote it for this request
    row.status = "processed"
    row.error = f"answered {code}: {why}"[:2000]
    row.processed_at = utcnow()
    db.session.commit()
    CALLBACKS.labels("c2b_validation", "accepted" if code == "0" else "rejected").inc()
    return code, why


def callback_enqueue(callback_id: int) -> None:
    # A retry is safe here (unlike a send): processing is exactly-once by the database,
    # so a deadlock or a dropped connection is simply tried again.
    queue_job(
        PROCESS_CALLBACK_JOB,
        callback_id,
        job_id=f"callback-{callback_id}",
        retry=Retry(max=3, interval=[5, 30, 120]),
    )


def callback_process(*, callback_id: int) -> str:
    """Settle one stored callback. Safe to run any number of times, at once or later."""
    row = lock_row(MpesaCallback, callback_id)
    if row is None:
        return "missing"
    if row.status not in ("received", "unmatched", "failed"):
        db.session.rollback()
        return row.status
    try:
        data = SCHEMAS[row.kind]().load(json.loads(row.raw_body))
        outcome, request_id, follow_up = HANDLERS[row.kind](data, row.id)
    except Exception as exc:
        db.session.rollback()
        row = lock_existing(MpesaCallback, callback_id)
        row.status = "failed"
        row.error = f"{type(exc).__name__}: {exc}"[:2000]
        db.session.commit()
        CALLBACKS.labels(row.kind, "failed").inc()
        raise  # RQ retries the job; exactly once is the database's job
    # The callback was dealt with whatever the request's fate (failed, unknown, suspense);
    # duplicate, unmatched and flagged stay visible as such.
    status = outcome if outcome in ("duplicate", "unmatched", "flagged") else "processed"
    db.session.execute(
        update(MpesaCallback)
        .where(MpesaCallback.id == callback_id)
        .values(
            status=status,
            request_id=request_id,
            processed_at=utcnow(),
            error=None if status == "processed" else f"{outcome}",
        )
    )
    db.session.commit()
    CALLBACKS.labels(row.kind, outcome).inc()
    if follow_up is not None:
        follow_up()
    return outcome


Handled = tuple[str, int | None, Callable[[], None] | None]


def _stk(data: dict[str, Any], callback_id: int) -> Handled:
    found = find_stk(data)
    if found is None:
        # Maybe before our write of its CheckoutRequestID committed: kept, matched later.
        return "unmatched", None, None
    request = lock_existing(MpesaRequest, found.id)
    amount = data.get("amount")
    outcome = stk_apply(
        request,
        code=data["result_code"],
        desc=data["result_desc"],
        receipt=data.get("receipt"),
        paid_at=stk_paid_at(data.get("transaction_date")),
        callback_id=callback_id,
        mismatch=stk_mismatch(request, data) if data["result_code"] == "0" else None,
        paid_amount=Decimal(amount) if amount is not None else None,
    )
    return outcome, request.id, None


def _c2b(data: dict[str, Any], callback_id: int) -> Handled:
    return c2b_confirm(data, callback_id), None, None


def _settle_payout(
    data: dict[str, Any],
    callback_id: int,
    apply: Callable[[MpesaRequest, dict[str, Any], int], str],
) -> Handled:
    """A B2C result or timeout: settle the payout; an unknown outcome asks Transaction
    Status after commit (never a resend)."""
    found = find_payout(data)
    if found is None:
        return "unmatched", None, None
    request = lock_existing(MpesaRequest, found.id)
    outcome = apply(request, data, callback_id)
    follow = (lambda: payout_status_due(request.id)) if outcome == "unknown" else None
    return outcome, request.id, follow


# Plain functions, not closures made when the module loads: mutation testing swaps a
# function's body at call time, which a closure made at import would never show it.
def _b2c_result(data: dict[str, Any], callback_id: int) -> Handled:
    return _settle_payout(data, callback_id, b2c_apply)


def _b2c_timeout(data: dict[str, Any], callback_id: int) -> Handled:
    return _settle_payout(data, callback_id, lambda request, _data, _cb: payout_timed_out(request))


def _status(data: dict[str, Any], callback_id: int) -> Handled:
    found = find_status_query(data)
    if found is None:
        return "unmatched", None, None
    query = lock_existing(MpesaRequest, found.id)
    return status_apply(query, data, callback_id), query.id, None


def _status_timeout(data: dict[str, Any], callback_id: int) -> Handled:
    found = find_status_query(data)
    if found is None:
        return "unmatched", None, None
    query = lock_existing(MpesaRequest, found.id)
    if query.status == "sent":
        query.status = "failed"
        query.result_desc = "status query timed out; the reconciliation job asks again"
    return "processed", query.id, None


HANDLERS: dict[str, Callable[[dict[str, Any], int], Handled]] = {
    "stk": _stk,
    "c2b_confirmation": _c2b,
    "b2c_result": _b2c_result,
    "b2c_timeout": _b2c_timeout,
    "status_result": _status,
    "status_timeout": _status_timeout,
}
