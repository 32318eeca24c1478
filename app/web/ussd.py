"""`POST /ussd` (Africa's Talking USSD hops) and `POST /ussd/events` (end of session).

The reply is always 200 text/plain starting CON or END: on any failure, Redis or the
database down included, the member gets END with a short apology and the error is
logged with the session id.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request
from sqlalchemy import select

from app.extensions import db, redis_client
from app.models import Member, UssdEvent
from app.ussd.engine import (
    SessionStore,
    UssdInputError,
    UssdRequest,
    UssdResponse,
    run_hop,
)
from app.ussd.retry import once_more_on_disconnect
from app.web.trust import at_guard
from ussd_menus.screens import SCREENS, start
from ussd_menus.text import t

bp = Blueprint("ussd", __name__)
# Only Africa's Talking: its addresses (AT_ALLOWED_IPS) and its URL token, if set.
bp.before_request(at_guard)
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
        if _too_many_starts(hop, store):
            return _reply(UssdResponse(t("too_many", _language(hop.phone)), end=True))
        return _reply(once_more_on_disconnect(lambda: run_hop(hop, store, SCREENS, start, t)))
    except Exception:  # noqa: BLE001 - the member must get an END, whatever broke
        db.session.rollback()
        log.exception("ussd hop failed (session %s)", hop.session_id)
        return _reply(UssdResponse(t("failure", _language(hop.phone)), end=True))


def _too_many_starts(hop: UssdRequest, store: SessionStore) -> bool:
    """Every session id not seen before for this phone is a start, whatever its first
    text (a script that opens each session with `9` is no less a flood); a resent hop of
    a known session is not: the session store already holds every session answered. A
    start over the limit is refused and not stored, so the same session tried again after
    the minute goes through."""
    # One round trip reads the session (the hop itself uses it next) and counts a start.
    return store.load_or_count_start(hop, f"ussd:starts:{hop.phone}", 60) > STARTS_PER_MINUTE


def _language(phone: str) -> str:
    """The member's language for the screens shown before (or instead of) the menus: one
    indexed column by phone; English when the phone is no member's or the lookup fails."""
    try:
        language = db.session.scalar(select(Member.language).where(Member.phone == phone))
        db.session.rollback()
    except Exception:  # noqa: BLE001 - an apology must not fail for want of its language
        db.session.rollback()
        return "en"
    return language or "en"


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
