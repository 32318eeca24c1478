"""Africa's Talking SMS callbacks: inbound texts, delivery reports, opt-outs (form fields).

The provider retries until it gets a 200, so every callback we could read is answered
200, garbage included (logged and counted): retrying garbage would never help. Only when
we could not store or process it at all (the database is down) do we answer 503, so the
provider tries again later and nothing is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, Response, request
from marshmallow import Schema, ValidationError

from app.extensions import db
from app.metrics import CALLBACKS
from app.schemas.sms import SmsDeliveryReportSchema, SmsInboundSchema, SmsOptOutSchema
from app.services.sms_inbound import sms_delivery_report, sms_opt_out, sms_receive
from app.web.trust import at_guard

bp = Blueprint("sms", __name__, url_prefix="/sms")
# Only Africa's Talking: its addresses (AT_ALLOWED_IPS) and its URL token, if set.
bp.before_request(at_guard)
log = logging.getLogger(__name__)

_inbound_schema = SmsInboundSchema()
_report_schema = SmsDeliveryReportSchema()
_opt_out_schema = SmsOptOutSchema()


def _ok() -> Response:
    return Response("OK", status=200, mimetype="text/plain")


def _handle(kind: str, schema: Schema, act: Callable[[dict], str]) -> Response:
    try:
        data = schema.load(request.form.to_dict())
    except ValidationError as exc:
        # Field names only: values may hold phone numbers or a member's text.
        log.warning("%s callback refused: bad fields %s", kind, sorted(exc.messages))
        CALLBACKS.labels(kind, "invalid").inc()
        return _ok()
    try:
        outcome = act(data)
    except Exception:  # noqa: BLE001 - an unexpected failure must not 200 a lost callback
        db.session.rollback()
        log.exception("%s callback could not be processed", kind)
        CALLBACKS.labels(kind, "error").inc()
        return Response("try again", status=503, mimetype="text/plain")
    CALLBACKS.labels(kind, outcome).inc()
    return _ok()


@bp.post("/inbound")
def inbound() -> Response:
    return _handle(
        "sms_inbound",
        _inbound_schema,
        lambda d: (
            sms_receive(
                provider_id=d["provider_id"],
                phone=d["phone"],
                text=d["text"],
                to=d["to"],
                link_id=d["link_id"],
            ).outcome
        ),
    )


@bp.post("/delivery-reports")
def delivery_reports() -> Response:
    return _handle(
        "sms_delivery_report",
        _report_schema,
        lambda d: sms_delivery_report(
            provider_message_id=d["provider_message_id"],
            status=d["status"],
            failure_reason=d["failure_reason"],
        ),
    )


@bp.post("/opt-out")
def opt_out() -> Response:
    return _handle(
        "sms_opt_out",
        _opt_out_schema,
        lambda d: sms_opt_out(phone=d["phone"], sender_id=d["sender_id"]),
    )
