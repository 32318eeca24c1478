"""Safaricom's callbacks: /payments/<token>/... (SPEC "HTTP surface").

Each route checks the path token (404 otherwise) and the optional source allowlist,
stores the raw body, answers at once in the form Daraja expects, and leaves the work to a
job. A truly unreadable body gets 400; anything else is acknowledged and kept, odd or
not, for staff to see. With the database down the body is kept in Redis and written by
the next sweep; only with Redis down as well is the answer a 503, so Safaricom may retry.
A connection lost after the body was stored (a terminated backend, a restart) is no 500
either: the answer is the usual one and the stored row is processed by the sweep.
"""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, Response, abort, current_app, jsonify, request
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db
from app.services.payments import (
    RAW_CAP,
    callback_enqueue,
    callback_refused,
    callback_spool,
    callback_store,
    callback_validate,
)
from app.services.payments.callbacks import CallbackKept
from app.web.trust import provider_refused, source_allowed

log = logging.getLogger(__name__)
bp = Blueprint("payments", __name__, url_prefix="/payments/<token>")

ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}
ROUTES = {
    "stk/callback": "stk",
    "c2b/validation": "c2b_validation",
    "c2b/confirmation": "c2b_confirmation",
    "b2c/result": "b2c_result",
    "b2c/timeout": "b2c_timeout",
    "status/result": "status_result",
    "status/timeout": "status_timeout",
}


@bp.url_value_preprocessor
def _check_token(endpoint: str | None, values: dict[str, object] | None) -> None:
    token = str((values or {}).pop("token", ""))
    expected = current_app.config["SETTINGS"].CALLBACK_TOKEN
    if not hmac.compare_digest(token.encode(), expected.encode()):
        abort(404)


def _body() -> tuple[bytes, int]:
    """At most RAW_CAP + 1 bytes read, and the size the sender declared (or read)."""
    raw = request.stream.read(RAW_CAP + 1)
    return raw, max(request.content_length or 0, len(raw))


def _receive(kind: str) -> Response | tuple[Response, int]:
    raw, size = _body()
    address = request.remote_addr
    if not source_allowed(address, current_app.config["SETTINGS"].MPESA_ALLOWED_IPS):
        provider_refused("mpesa", "address")
        try:
            callback_refused(kind=kind, raw=raw, size=size, remote_addr=address)
        except SQLAlchemyError:
            db.session.rollback()  # refused all the same; the metric has counted it
        return jsonify({"ResultCode": 1, "ResultDesc": "Rejected: source not allowed"}), 403
    try:
        received = callback_store(kind=kind, raw=raw, size=size, remote_addr=address)
    except CallbackKept as kept:
        # Stored, then the connection was lost: the sweep processes the row; a spooled
        # copy would only be a duplicate.
        log.error(
            "callback %s %s stored, not yet parsed: the database was lost", kept.callback_id, kind
        )
        return _usual_answer(kind)
    except SQLAlchemyError:
        # The connection was lost or refused (a restart, a terminated backend, a full
        # disk) before the record was safe: Redis keeps it.
        db.session.rollback()
        return _spooled(kind, raw, size, address)
    if not received.readable:
        return jsonify({"ResultCode": 1, "ResultDesc": "Rejected: body is not JSON"}), 400
    if kind == "c2b_validation":
        if received.data is None:
            # A body we cannot read cannot be matched: with validation on it is refused.
            return jsonify({"ResultCode": "C2B00016", "ResultDesc": "Rejected"})
        try:
            code, _why = callback_validate(received)
        except SQLAlchemyError:
            # The record is stored; only the lookup was cut off. Accept, as with the
            # database down: the money may go to suspense, never be lost or bounced by us.
            db.session.rollback()
            log.error(
                "c2b validation %s accepted unchecked: the database was lost", received.callback_id
            )
            code = "0"
        return jsonify(
            {"ResultCode": code, "ResultDesc": "Accepted" if code == "0" else "Rejected"}
        )
    if received.data is not None:
        callback_enqueue(received.callback_id)
    if kind == "c2b_confirmation":
        return jsonify({"ResultCode": 0, "ResultDesc": "Success"})
    return jsonify(ACCEPTED)


def _spooled(
    kind: str, raw: bytes, size: int, address: str | None
) -> Response | tuple[Response, int]:
    """The database is down: keep the callback in Redis and answer as usual (validation
    accepts: the money may still go to suspense, never be lost). Only with Redis down too
    is it refused, so that Safaricom may try again."""
    try:
        callback_spool(kind=kind, raw=raw, size=size, remote_addr=address)
    except RedisError:
        return jsonify({"ResultCode": 1, "ResultDesc": "Temporarily unavailable"}), 503
    return _usual_answer(kind)


def _usual_answer(kind: str) -> Response:
    """What Daraja expects when the record is safe but could not be looked at now."""
    if kind == "c2b_validation":
        return jsonify({"ResultCode": "0", "ResultDesc": "Accepted"})
    if kind == "c2b_confirmation":
        return jsonify({"ResultCode": 0, "ResultDesc": "Success"})
    return jsonify(ACCEPTED)


def _route(path: str, kind: str) -> None:
    def view() -> Response | tuple[Response, int]:
        return _receive(kind)

    view.__name__ = kind
    bp.add_url_rule(f"/{path}", endpoint=kind, view_func=view, methods=["POST"])


for _path, _kind in ROUTES.items():
    _route(_path, _kind)
