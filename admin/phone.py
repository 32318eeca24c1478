"""The phone page: a member's phone in one browser tab, when the local simulators are in use.

Staff type a number and play the member: dial the USSD code (every hop goes through the
app's own `/ussd` handler with the form Africa's Talking posts), read the SMS the SACCO
sent that number (the Africa's Talking stand-in's inbox), answer the M-PESA prompts the
Daraja stand-in holds, and pay the Paybill. Never registered in production, nor when
both providers are the real ones.

The page's script posts to this view (login and CSRF checked here), and the view hands
each request to the app itself, to the same routes the providers and the simulators'
own pages use: nothing here decides what a hop or a payment does.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from flask import abort, current_app, jsonify, request, url_for
from flask_admin import Admin, BaseView, expose
from werkzeug.wrappers import Response

from admin.auth import SecureMixin, TokenForm
from app.config import Settings
from app.extensions import db
from app.phone import PhoneError, normalise_phone
from app.selectors.phones import member_to_dial, members_to_dial
from app.web.trust import at_token_args

INBOX_SHOWN = 20  # the stand-in keeps 100 per phone; a phone screen shows the newest
RECENT_SHOWN = 5  # answered prompts and Paybill payments shown under the pending ones
NETWORK_CODE = "63902"  # Safaricom, as Africa's Talking reports it
# How a session ended, as Africa's Talking's end-of-session notice says it: the menu's
# END (Success), the member pressing Cancel or walking away (Incomplete), an error (Failed).
END_STATUSES = ("Success", "Incomplete", "Failed")
# The Daraja stand-in's answers a member can give a prompt (its STK_OUTCOMES names).
STK_ANSWERS = {
    "success": "Accept (enter PIN)",
    "cancelled": "Cancel",
    "wrong_pin": "Wrong PIN",
    "timeout": "Let it time out",
}
# What a refused Paybill payment means, in words, for the stand-in's 409.
NOT_REGISTERED = (
    "M-PESA does not know where to send Paybill payments yet: run `sacco mpesa "
    "register-urls` (`sacco up` does it as it starts)."
)


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


def simulators_in_use(settings: Settings) -> bool:
    """The page exists only while SMS or M-PESA go to our own stand-ins."""
    return not settings.is_production and (settings.at_simulated or settings.mpesa_simulated)


def _error(message: str, status: int = 400) -> tuple[Response, int]:
    return jsonify(error=message), status


def _mpesa_refused() -> tuple[Response, int] | None:
    """The Daraja stand-in is registered only while M-PESA is simulated (SMS may be
    simulated alone): its controls then have nothing to talk to."""
    if _settings().mpesa_simulated:
        return None
    return _error("M-PESA goes to Safaricom itself here: no simulated phone to answer.", 404)


def _end_status(raw: str | None) -> str:
    return raw if raw in END_STATUSES else "Incomplete"


def _kenyan(moment: str | None) -> str:
    """A stand-in's ISO time (UTC) as staff read times: Kenyan, to the minute."""
    if not moment:
        return ""
    try:
        when = datetime.fromisoformat(moment)
    except ValueError:
        return moment
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(_settings().tz).strftime("%Y-%m-%d %H:%M")


def _shillings(amount: object) -> str:
    return f"KES {int(str(amount)):,}" if str(amount).isdigit() else f"KES {amount}"


def _forward(path: str, **kwargs: Any) -> tuple[int, str, Any]:
    """POST to the app itself, as the provider (or the simulated phone) would: through its
    whole request handling, in an app context of its own so the handler gets its own
    database session and `g`, not the staff member's. Returns status, text and JSON."""
    db.session.rollback()  # hold no transaction while the handler writes on its own
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with app.app_context():
        answer = app.test_client().post(path, **kwargs)
        return answer.status_code, answer.get_data(as_text=True), answer.get_json(silent=True)


class PhoneView(SecureMixin, BaseView):
    """Open to every signed-in role: it is a demonstration on simulated providers, and
    what the member does there goes through the same rules as on a real phone."""

    permission = "view"

    def is_visible(self) -> bool:
        return simulators_in_use(_settings())

    def _handle_view(self, name: str, **kwargs: object) -> object:
        if not simulators_in_use(_settings()):
            abort(404)  # settings changed under a running app: as if never registered
        return super()._handle_view(name, **kwargs)

    def _phone(self, raw: str | None) -> str:
        return normalise_phone(str(raw or ""))

    @staticmethod
    def _token_refused() -> tuple[Response, int] | None:
        if TokenForm(request.form).validate():
            return None
        return _error("The page expired; reload it and try again.")

    @expose("/")
    def index(self) -> str:
        settings = _settings()
        return self.render(
            "admin_sacco/phone.html",
            members=members_to_dial(),
            service_code=settings.USSD_SERVICE_CODE,
            sms_on=settings.at_simulated,
            mpesa_on=settings.mpesa_simulated,
            answers=STK_ANSWERS,
        )

    @expose("/ussd", methods=("POST",))
    def ussd(self) -> Response | tuple[Response, int]:
        """One hop: `text` is every entry so far joined by `*`, as Africa's Talking sends
        it; no `session` means a new dial, which gets a new session id."""
        refused = self._token_refused()
        if refused is not None:
            return refused
        try:
            phone = self._phone(request.form.get("phone"))
        except PhoneError as exc:
            return _error(str(exc))
        session_id = (request.form.get("session") or "").strip()[:60]
        session_id = session_id or f"ATUid_console_{secrets.token_hex(12)}"
        _, body, _ = _forward(
            url_for("ussd.ussd", **at_token_args()),
            data={
                "sessionId": session_id,
                "serviceCode": _settings().USSD_SERVICE_CODE,
                "phoneNumber": f"+{phone}",
                "networkCode": NETWORK_CODE,
                "text": request.form.get("text", ""),
            },
        )
        ended = not body.startswith("CON ")
        screen = body[4:] if body.startswith(("CON ", "END ")) else body
        return jsonify(session=session_id, end=ended, screen=screen)

    @expose("/ussd-end", methods=("POST",))
    def ussd_end(self) -> Response | tuple[Response, int]:
        """The session is over (the menu said END, or Cancel was pressed): tell the app's
        `/ussd/events` as Africa's Talking does, so the member page lists the session.
        The page sends what it counted (hops, milliseconds, the last screen); never what
        the member typed."""
        refused = self._token_refused()
        if refused is not None:
            return refused
        try:
            phone = self._phone(request.form.get("phone"))
        except PhoneError as exc:
            return _error(str(exc))
        session_id = (request.form.get("session") or "").strip()[:60]
        if not session_id:
            return _error("No session to end.")
        status = _end_status(request.form.get("status"))
        now = datetime.now(UTC).astimezone(_settings().tz)
        code, _, _ = _forward(
            url_for("ussd.ussd_events", **at_token_args()),
            data={
                "date": now.strftime("%Y-%m-%d %H:%M:%S"),
                "sessionId": session_id,
                "serviceCode": _settings().USSD_SERVICE_CODE,
                "networkCode": NETWORK_CODE,
                "phoneNumber": f"+{phone}",
                "status": status,
                "cost": "KES 0.00",
                "durationInMillis": _digits(request.form.get("duration_ms")),
                "hopsCount": _digits(request.form.get("hops")),
                "lastAppResponse": (request.form.get("last") or "")[:1000],
                "errorMessage": "" if status == "Success" else "ended on the console phone",
            },
        )
        if code != 200:
            return _error(f"The session end was not recorded (HTTP {code}).", 502)
        return jsonify(ended=session_id, status=status)

    @expose("/state")
    def state(self) -> Response | tuple[Response, int]:
        """What the phone shows now: polled by the page every few seconds."""
        try:
            phone = self._phone(request.args.get("phone"))
        except PhoneError as exc:
            return _error(str(exc))
        settings = _settings()
        member = member_to_dial(phone=phone)
        db.session.rollback()  # a poll holds no transaction open
        found: dict[str, Any] = {
            "phone": f"+{phone}",
            "member": asdict(member) if member is not None else None,
        }
        if settings.at_simulated:
            found["sms"] = _inbox(phone)
        if settings.mpesa_simulated:
            found["mpesa"] = _mpesa(phone)
        return jsonify(found)

    @expose("/stk", methods=("POST",))
    def stk(self) -> Response | tuple[Response, int]:
        """The member answers a prompt, with the Daraja stand-in's own control."""
        refused = self._token_refused() or _mpesa_refused()
        if refused is not None:
            return refused
        outcome = request.form.get("outcome", "")
        checkout_id = (request.form.get("checkout_id") or "").strip()
        if outcome not in STK_ANSWERS or not checkout_id:
            return _error("Choose a prompt and an answer.")
        status, _, _ = _forward(
            url_for("simulator_daraja.complete_stk", checkout_id=checkout_id),
            json={"outcome": outcome},
        )
        if status == 404:
            return _error("That prompt is no longer on the phone.", 404)
        if status == 409:
            return _error("That prompt was already answered.", 409)
        if status != 200:
            return _error(f"M-PESA could not take the answer (HTTP {status}).", 502)
        return jsonify(done=STK_ANSWERS[outcome])

    @expose("/answer-here", methods=("POST",))
    def answer_here(self) -> Response | tuple[Response, int]:
        """Prompts to this phone wait for an answer on the page ("manual"), or the stand-in
        answers them itself after its delay (its default, "success")."""
        refused = self._token_refused() or _mpesa_refused()
        if refused is not None:
            return refused
        try:
            phone = self._phone(request.form.get("phone"))
        except PhoneError as exc:
            return _error(str(exc))
        manual = request.form.get("on") == "1"
        status, _, answer = _forward(
            url_for("simulator_daraja.set_outcome", phone=phone),
            json={"stk": "manual" if manual else "default"},
        )
        if status != 200:
            return _error((answer or {}).get("error") or f"HTTP {status}")
        return jsonify(answer_here=manual)

    @expose("/paybill", methods=("POST",))
    def paybill(self) -> Response | tuple[Response, int]:
        """The member pays the Paybill: the stand-in validates with our server, then
        confirms, as Safaricom does; the page shows how it went."""
        refused = self._token_refused() or _mpesa_refused()
        if refused is not None:
            return refused
        try:
            phone = self._phone(request.form.get("phone"))
        except PhoneError as exc:
            return _error(str(exc))
        status, _, answer = _forward(
            url_for("simulator_daraja.c2b_pay"),
            json={
                "phone": phone,
                "amount": (request.form.get("amount") or "").strip(),
                "account": (request.form.get("account") or "").strip(),
            },
        )
        if status == 409:
            return _error(NOT_REGISTERED, 409)
        if status != 202:
            return _error((answer or {}).get("error") or f"HTTP {status}")
        return jsonify(trans_id=answer["TransID"])


def _digits(raw: str | None) -> str:
    value = (raw or "").strip()
    return value if value.isdigit() and len(value) <= 9 else ""


def _inbox(phone: str) -> dict[str, Any]:
    from app.simulators.africastalking import inbox

    messages = inbox(phone)  # oldest first, at most the stand-in's 100
    newest = list(reversed(messages))[:INBOX_SHOWN]
    return {
        "total": len(messages),
        "messages": [
            {
                "at": _kenyan(m.get("at")),
                "from": m.get("from", ""),
                "text": m.get("message", ""),
                "status": m.get("status", ""),
            }
            for m in newest
        ],
    }


def _mpesa(phone: str) -> dict[str, Any]:
    from app.simulators.daraja import phone_state

    state = phone_state(phone)
    pending = [p for p in state["prompts"] if p["status"] == "pending"]
    answered = [p for p in state["prompts"] if p["status"] != "pending"][:RECENT_SHOWN]
    return {
        "answer_here": state["prefs"].get("stk") == "manual",
        "delay": state["delay"],
        "pending": [
            {
                "id": p["CheckoutRequestID"],
                "amount": _shillings(p["amount"]),
                "reference": p["reference"],
                "description": p["description"],
                "at": _kenyan(p["created"]),
            }
            for p in pending
        ],
        "answered": [
            {
                "amount": _shillings(p["amount"]),
                "reference": p["reference"],
                "outcome": p.get("outcome", ""),
                "receipt": p.get("MpesaReceiptNumber", ""),
                "at": _kenyan(p.get("completed") or p["created"]),
            }
            for p in answered
        ],
        "paybill": [
            {
                "id": p["TransID"],
                "amount": _shillings(p["amount"]),
                "account": p["account"],
                "status": p["status"],
                "at": _kenyan(p["at"]),
            }
            for p in state["paybill"][:RECENT_SHOWN]
        ],
    }


def register(console: Admin) -> None:
    """Only while the local simulators are in use: never in production."""
    if console.app is not None and simulators_in_use(console.app.config["SETTINGS"]):
        console.add_view(PhoneView(name="Phone", endpoint="phone", url="/admin/phone"))
