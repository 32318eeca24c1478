"""`POST /ussd` (Africa's Talking USSD hops) and `POST /ussd/events` (end of session).

The reply is always 200 text/plain starting CON or END: on any failure, Redis or the
database down included, the member gets END with a short apology and the error is
logged with the session id.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request

from app.extensions import db, redis_client
from app.models import UssdEvent
from app.ussd.engine import SessionStore, UssdInputError, UssdRequest, UssdResponse, run_hop
from ussd_menus.screens import SCREENS, start
from ussd_menus.text import t

bp = Blueprint("ussd", __name__)
log = logging.getLogger("app.ussd")

STARTS_PER_MINUTE = 10  # per phone: a stuck phone or a script cannot flood us


def _reply(response: UssdResponse) -> Response:
    return Response(response.render(), status=200, mimetype="text/plain")


@bp.post("/ussd")
def ussd() -> Response:
    try:
        hop = UssdRequest.from_form(request.form)
    except UssdInputError as exc:
        log.warning("ussd hop refused: %s", exc)
        return _reply(UssdResponse(t("failure", "en"), end=True))
    try:
        store = SessionStore(redis_client(), current_app.config["SECRET_KEY"])
        if hop.text == "" and _too_many_starts(hop):
            return _reply(UssdResponse(t("too_many", "en"), end=True))
        return _reply(run_hop(hop, store, SCREENS, start, t))
    except Exception:  # noqa: BLE001 - the member must get an END, whatever broke
        db.session.rollback()
        log.exception("ussd hop failed (session %s)", hop.session_id)
        return _reply(UssdResponse(t("failure", "en"), end=True))


def _too_many_starts(hop: UssdRequest) -> bool:
    redis = redis_client()
    key = f"ussd:starts:{hop.phone}"
    count = redis.incr(key)
    if count == 1:
        redis.expire(key, 60)
    return count > STARTS_PER_MINUTE


def _int(value: str | None) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


@bp.post("/ussd/events")
def ussd_events() -> Response:
    """End-of-session notifications, for drop-off analysis. Always 200: the gateway only
    needs to know we have it."""
    form = request.form
    try:
        db.session.add(
            UssdEvent(
                session_id=str(form.get("sessionId") or "")[:100],
                phone=str(form.get("phoneNumber") or "")[:20] or None,
                status=str(form.get("status") or "")[:40] or None,
                hops=_int(form.get("hopsCount")),
                duration_ms=_int(form.get("durationInMillis")),
                last_response=str(form.get("lastAppResponse") or "")[:1000] or None,
                error=str(form.get("errorMessage") or "")[:255] or None,
                cost=str(form.get("cost") or "")[:20] or None,
            )
        )
        db.session.commit()
    except Exception:  # noqa: BLE001 - a lost analytics row must not become a 5xx
        db.session.rollback()
        log.exception("ussd event not stored (session %s)", form.get("sessionId"))
    return Response("OK", status=200, mimetype="text/plain")
