"""The reconciliation sweep (every 2 minutes, and `sacco jobs run reconcile-payments`).

It settles what callbacks did not: STK prompts pending over 3 minutes are queried (still
processing stays pending; a final code is applied), flagged ones too, every 30 minutes,
until Safaricom's answer resolves them (staff see them meanwhile); payouts without a result after 10
minutes get a Transaction Status query; requests never sent (Redis was down) are queued;
a send that died mid-way becomes unknown (never resent); callbacks whose job was lost are
processed; anything still open after 24 hours is flagged for staff.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update

from app.extensions import db
from app.integrations.daraja import DarajaError, DarajaStillProcessing, daraja_client
from app.models import MpesaCallback, MpesaRequest
from app.models.mpesa import OPEN_STATUSES
from app.models.types import utcnow
from app.schemas.mpesa import result_code
from app.services.loans import SEND_PAYOUT_JOB
from app.services.locking import lock_existing
from app.services.payments.b2c import payments_query_payout
from app.services.payments.callbacks import HANDLERS, callback_enqueue, callback_unspool
from app.services.payments.common import SEND_STK_JOB, queue_job
from app.services.payments.stk import PROMPT_WINDOW, stk_apply

STK_QUERY_AFTER = PROMPT_WINDOW
STK_QUERY_EVERY = timedelta(minutes=2)
# A flagged prompt is asked again less often: its answer is late or disputed, and staff
# see it meanwhile (it holds back no new prompt).
FLAGGED_QUERY_EVERY = timedelta(minutes=30)
B2C_QUERY_AFTER = timedelta(minutes=10)
LOST_JOB_AFTER = timedelta(minutes=1)
DEAD_SEND_AFTER = timedelta(minutes=5)
FLAG_AFTER = timedelta(hours=24)


@dataclass
class Sweep:
    scanned: int = 0
    updated: int = 0
    errors: list[str] = field(default_factory=list)


def payments_reconcile() -> Sweep:
    """One sweep; each item in a transaction of its own, one failure does not stop it."""
    sweep = Sweep()
    now = utcnow()
    _unspool(sweep)
    _requeue_unsent(sweep, now)
    _dead_sends(sweep, now)
    _query_stk(sweep, now)
    _flag_unanswered_pushes(sweep, now)
    _query_payouts(sweep, now)
    _requeue_callbacks(sweep, now)
    _flag_stale(sweep, now)
    return sweep


def _unspool(sweep: Sweep) -> None:
    # Callbacks kept in Redis while the database was down come first: they are money.
    try:
        written = callback_unspool()
    except Exception as exc:  # noqa: BLE001 - left in Redis for the next sweep
        db.session.rollback()
        sweep.errors.append(f"spooled callbacks: {type(exc).__name__}: {exc}")
        return
    sweep.scanned += written  # pragma: no mutate: the sweep's first step; counts start at 0
    sweep.updated += written  # pragma: no mutate: as above


def _requeue_unsent(sweep: Sweep, now) -> None:  # noqa: ANN001
    rows = db.session.execute(
        select(MpesaRequest.id, MpesaRequest.kind).where(
            MpesaRequest.status == "pending",
            MpesaRequest.kind.in_(("stk", "b2c")),
            MpesaRequest.created_at < now - LOST_JOB_AFTER,
        )
    ).all()
    db.session.commit()
    for request_id, kind in rows:
        sweep.scanned += 1
        # Never sent, so sending is safe; the send job claims the row, once.
        queue_job(SEND_STK_JOB if kind == "stk" else SEND_PAYOUT_JOB, request_id)
        sweep.updated += 1


def _dead_sends(sweep: Sweep, now) -> None:  # noqa: ANN001
    # An UPDATE gives a CursorResult (with rowcount); SQLAlchemy 2.1 types it as a Result.
    result = cast(
        CursorResult[Any],  # pragma: no mutate: cast() does nothing at run time
        db.session.execute(
            update(MpesaRequest)
            .where(
                MpesaRequest.status == "sending", MpesaRequest.updated_at < now - DEAD_SEND_AFTER
            )
            .values(status="unknown", result_desc="the send was cut off: outcome unknown")
        ),
    )
    db.session.commit()
    sweep.updated += result.rowcount or 0


def _query_stk(sweep: Sweep, now) -> None:  # noqa: ANN001
    due = db.session.scalars(
        select(MpesaRequest.id).where(
            MpesaRequest.kind == "stk",
            MpesaRequest.status.in_(("sent", "unknown")),
            MpesaRequest.checkout_request_id.is_not(None),
            MpesaRequest.created_at < now - STK_QUERY_AFTER,
            (MpesaRequest.checked_at.is_(None))
            | (MpesaRequest.flag.is_(None) & (MpesaRequest.checked_at < now - STK_QUERY_EVERY))
            | (MpesaRequest.checked_at < now - FLAGGED_QUERY_EVERY),
        )
    ).all()
    db.session.commit()
    if not due:
        return
    client = daraja_client()
    for request_id in due:
        sweep.scanned += 1
        request = db.session.get(MpesaRequest, request_id)
        # Read by id just above, with a CheckoutRequestID: the query asks for sent prompts.
        assert request is not None  # pragma: no mutate: narrows the type only
        assert request.checkout_request_id is not None  # pragma: no mutate: as above
        try:
            reply = client.stk_query(checkout_request_id=request.checkout_request_id, now=now)
        except DarajaStillProcessing:
            _checked(request_id)
            continue
        except DarajaError as exc:
            _checked(request_id)
            sweep.errors.append(f"stk query {request_id}: {exc}")
            continue
        try:
            code = result_code(reply.get("ResultCode"))
        except Exception:  # noqa: BLE001 - an answer without a code settles nothing
            _checked(request_id)
            continue
        request = lock_existing(MpesaRequest, request_id)
        request.checked_at = utcnow()
        try:
            outcome = stk_apply(
                request,
                code=code,
                desc=str(reply.get("ResultDesc") or ""),
                receipt=None,  # a query carries no receipt; a late callback adds it
                paid_at=None,
                callback_id=None,
            )
            db.session.commit()
        except Exception as exc:  # noqa: BLE001 - one bad item must not stop the sweep
            db.session.rollback()
            sweep.errors.append(f"stk {request_id}: {type(exc).__name__}: {exc}")
            continue
        sweep.updated += int(outcome in ("processed", "failed"))


def _flag_unanswered_pushes(sweep: Sweep, now) -> None:  # noqa: ANN001
    # A push whose submit got no answer has no CheckoutRequestID to query. Past the
    # prompt's window it is flagged for staff, so it holds the loan's next prompt back no
    # longer; a callback still finds it (same phone and amount, within a day) and settles it.
    result = cast(
        CursorResult[Any],  # pragma: no mutate: cast() does nothing at run time
        db.session.execute(
            update(MpesaRequest)
            .where(
                MpesaRequest.kind == "stk",
                MpesaRequest.status == "unknown",
                MpesaRequest.checkout_request_id.is_(None),
                MpesaRequest.flag.is_(None),
                MpesaRequest.created_at < now - PROMPT_WINDOW,
            )
            .values(flag="the push got no answer and cannot be queried: check with Safaricom")
        ),
    )
    db.session.commit()
    sweep.updated += result.rowcount or 0


def _checked(request_id: int) -> None:
    db.session.execute(
        update(MpesaRequest).where(MpesaRequest.id == request_id).values(checked_at=utcnow())
    )
    db.session.commit()


def _query_payouts(sweep: Sweep, now) -> None:  # noqa: ANN001
    due = db.session.scalars(
        select(MpesaRequest.id).where(
            MpesaRequest.kind == "b2c",
            MpesaRequest.status.in_(("sent", "unknown")),
            MpesaRequest.flag.is_(None),
            (MpesaRequest.status == "unknown") | (MpesaRequest.created_at < now - B2C_QUERY_AFTER),
            (MpesaRequest.checked_at.is_(None)) | (MpesaRequest.checked_at < now - B2C_QUERY_AFTER),
        )
    ).all()
    db.session.commit()
    for request_id in due:
        sweep.scanned += 1
        try:
            asked = payments_query_payout(request_id=request_id)
        except Exception as exc:  # noqa: BLE001
            db.session.rollback()
            sweep.errors.append(f"payout query {request_id}: {type(exc).__name__}: {exc}")
            continue
        sweep.updated += int(asked == "asked")


def _requeue_callbacks(sweep: Sweep, now) -> None:  # noqa: ANN001
    # Received but never processed (the job was lost), or kept unmatched while its
    # request's id was still being written.
    rows = db.session.scalars(
        select(MpesaCallback.id).where(
            MpesaCallback.kind.in_(tuple(HANDLERS)),
            MpesaCallback.status.in_(("received", "unmatched")),
            MpesaCallback.received_at < now - LOST_JOB_AFTER,
            MpesaCallback.received_at > now - FLAG_AFTER,
        )
    ).all()
    db.session.commit()
    for callback_id in rows:
        sweep.scanned += 1
        callback_enqueue(callback_id)


def _flag_stale(sweep: Sweep, now) -> None:  # noqa: ANN001
    result = cast(
        CursorResult[Any],  # pragma: no mutate: cast() does nothing at run time
        db.session.execute(
            update(MpesaRequest)
            .where(
                MpesaRequest.status.in_(OPEN_STATUSES),
                MpesaRequest.flag.is_(None),
                MpesaRequest.created_at < now - FLAG_AFTER,
            )
            .values(flag="no final answer after 24 hours: check with Safaricom")
        ),
    )
    db.session.commit()
    sweep.updated += result.rowcount or 0
