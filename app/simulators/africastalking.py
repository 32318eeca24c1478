"""Africa's Talking SMS stand-in at /simulator/at (contracts/africastalking.md).

`POST /simulator/at/version1/messaging` checks a send the way the real API does and
answers its exact JSON, so `SmsGateway` with AT_API_BASE_URL pointing here works
unchanged. Each phone has an inbox in Redis (a JSON list, newest last). A test or a
developer can choose the per-recipient statusCode of the next sends to a number
(`POST /simulator/at/next-status`, each consumed once). `GET /simulator/at/` is the
simulated phone: inboxes, a "deliver" button that sends our own delivery-report
callback, and a form to text the SACCO (our inbound callback).
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from decimal import Decimal
from typing import Any, cast

from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template_string,
    request,
    url_for,
)
from werkzeug.wrappers import Response as BaseResponse  # what redirect() returns

from app.extensions import redis_client
from app.models.types import utcnow
from app.phone import PhoneError, normalise_phone
from app.web.trust import at_token_args

bp = Blueprint("simulator_at", __name__, url_prefix="/simulator/at")

STATUS_NAMES = {
    100: "Processed",
    101: "Success",
    102: "Queued",
    401: "RiskHold",
    402: "InvalidSenderId",
    403: "InvalidPhoneNumber",
    404: "UnsupportedNumberType",
    405: "InsufficientBalance",
    406: "UserInBlacklist",
    407: "CouldNotRoute",
    500: "InternalServerError",
    501: "GatewayError",
    502: "RejectedByGateway",
}
ACCEPTED = (100, 101, 102)
COST = "KES 0.8000"
COST_AMOUNT = Decimal("0.8000")
DEFAULT_SENDER = "AFRICASTKNG"
SHORTCODE = "22384"  # where simulated members text the SACCO
INBOX_KEEP = 100  # messages kept per phone
_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
# Alphanumeric sender ids are at most 11 characters; numeric short codes 3-6 digits.
_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ._-]{1,11}$|^\d{3,6}$")

_PHONES = "simulator:at:phones"


def _inbox_key(phone: str) -> str:
    return f"simulator:at:inbox:{phone}"


def _next_key(phone: str) -> str:
    return f"simulator:at:next:{phone}"


def _message_key(message_id: str) -> str:
    return f"simulator:at:message:{message_id}"


def sim_phone(raw: str) -> str:
    """The +E.164 form the provider uses as the inbox key (07…, 2547…, +2547… alike)."""
    try:
        return "+" + normalise_phone(raw)
    except PhoneError:
        value = re.sub(r"[\s\-()]", "", raw or "")
        return value if value.startswith("+") else "+" + value


def _text(body: str, status: int) -> Response:
    return Response(body, status=status, mimetype="text/plain")


@bp.post("/version1/messaging")
def messaging() -> Response | tuple[Response, int]:
    """Bulk SMS send: form username, to, message, bulkSMSMode, optional from/enqueue."""
    if not request.headers.get("apiKey"):
        return _text("The supplied authentication is invalid", 401)
    if "application/json" not in request.headers.get("Accept", ""):
        # The real API answers XML then; nothing in this project can read that.
        return _text("This stand-in answers only Accept: application/json", 406)
    form = request.form
    for name in ("username", "to", "message", "bulkSMSMode"):
        if not form.get(name, "").strip():
            return _text(f"Request is missing required form field '{name}'", 400)
    if form["bulkSMSMode"] != "1":
        return _text("bulkSMSMode must be 1 for bulk messages", 400)
    sender = form.get("from")
    if sender is not None and not _SENDER.match(sender):
        return jsonify(SMSMessageData={"Message": "InvalidSenderId", "Recipients": []}), 201

    redis = redis_client()
    recipients: list[dict[str, Any]] = []
    for number in form["to"].split(","):
        number = number.strip()
        if _E164.match(number):
            # One value (no count given): bytes from our non-decoding client, or None.
            chosen = cast(bytes | None, redis.lpop(_next_key(number)))
            code = int(chosen) if chosen is not None else 101
        else:
            code = 403  # no + or not a number: the real API refuses it per recipient
        recipient: dict[str, Any] = {
            "statusCode": code,
            "number": number,
            "status": STATUS_NAMES.get(code, "Unknown"),
            "cost": "0",
            "messageId": "None",
        }
        if code in ACCEPTED:
            recipient["cost"] = COST
            recipient["messageId"] = f"ATXid_{secrets.token_hex(16)}"
            _deliver_to_inbox(
                number,
                {
                    "messageId": recipient["messageId"],
                    "from": sender or DEFAULT_SENDER,
                    "to": number,
                    "message": form["message"],
                    "status": "Submitted",
                    "cost": COST,
                    "at": utcnow().isoformat(timespec="seconds"),
                },
            )
        recipients.append(recipient)
    sent = sum(1 for r in recipients if r["statusCode"] in ACCEPTED)
    total = f"KES {sent * COST_AMOUNT:.4f}" if sent else "0"
    return jsonify(
        SMSMessageData={
            "Message": f"Sent to {sent}/{len(recipients)} Total Cost: {total}",
            "Recipients": recipients,
        }
    ), 201


def _deliver_to_inbox(phone: str, item: dict[str, Any]) -> None:
    redis = redis_client()
    with redis.pipeline() as pipe:
        pipe.rpush(_inbox_key(phone), json.dumps(item))
        pipe.ltrim(_inbox_key(phone), -INBOX_KEEP, -1)
        pipe.sadd(_PHONES, phone)
        pipe.set(_message_key(item["messageId"]), phone, ex=7 * 24 * 3600)
        pipe.execute()


def inbox(phone: str) -> list[dict[str, Any]]:
    """Messages the simulated phone received, oldest first."""
    return [json.loads(raw) for raw in redis_client().lrange(_inbox_key(sim_phone(phone)), 0, -1)]


def _params() -> dict[str, Any]:
    return dict(request.get_json(silent=True) or request.form)


@bp.post("/next-status")
def next_status() -> BaseResponse | tuple[Response, int]:
    """Queue the statusCode the next send to `phone` gets (each one used once)."""
    params = _params()
    phone = sim_phone(str(params.get("phone", "")))
    try:
        code = int(params.get("statusCode", ""))
    except (TypeError, ValueError):
        code = 0
    if code not in STATUS_NAMES or not _E164.match(phone):
        return jsonify(error="phone (E.164) and a known statusCode are required"), 400
    redis = redis_client()
    redis.rpush(_next_key(phone), code)
    queued = [int(c) for c in redis.lrange(_next_key(phone), 0, -1)]
    if request.is_json:
        return jsonify(phone=phone, queued=queued)
    return redirect(url_for(".index"), code=303)


@bp.get("/inbox/<phone>")
def inbox_json(phone: str) -> Response:
    return jsonify(phone=sim_phone(phone), messages=inbox(phone))


@bp.post("/deliver")
def deliver() -> BaseResponse:
    """Send our /sms/delivery-reports the report the network would (Success by default).

    The report goes through the app itself (no network), with the provider's form fields.
    """
    message_id = request.form.get("messageId", "")
    status = request.form.get("status", "Success")
    redis = redis_client()
    raw_phone = redis.get(_message_key(message_id))
    if raw_phone is None:
        return _text("unknown messageId", 404)
    phone = cast(bytes, raw_phone).decode()  # redis-py types replies as bytes or str
    form = {"id": message_id, "status": status, "phoneNumber": phone, "networkCode": "99999"}
    if status in ("Rejected", "Failed"):
        form["failureReason"] = request.form.get("failureReason", "DeliveryFailure")
    answer = current_app.test_client().post(
        url_for("sms.delivery_reports", **at_token_args()), data=form
    )
    for index, item_raw in enumerate(redis.lrange(_inbox_key(phone), 0, -1)):
        item = json.loads(item_raw)
        if item["messageId"] == message_id:
            item["status"] = status
            redis.lset(_inbox_key(phone), index, json.dumps(item))
    if request.accept_mimetypes.best == "application/json":
        return jsonify(messageId=message_id, status=status, callbackStatus=answer.status_code)
    return redirect(url_for(".index"), code=303)


@bp.post("/inbound")
def send_inbound() -> BaseResponse:
    """A simulated member texts the SACCO: our /sms/inbound gets the provider's form."""
    phone = sim_phone(request.form.get("phone", ""))
    form = {
        "from": phone,
        "to": SHORTCODE,
        "text": request.form.get("text", ""),
        "id": str(uuid.uuid4()),
        "linkId": str(uuid.uuid4()),
        "date": utcnow().strftime("%Y-%m-%d %H:%M:%S"),
        "networkCode": "99999",
    }
    answer = current_app.test_client().post(url_for("sms.inbound", **at_token_args()), data=form)
    redis_client().sadd(_PHONES, phone)
    if request.accept_mimetypes.best == "application/json":
        return jsonify(id=form["id"], callbackStatus=answer.status_code)
    return redirect(url_for(".index"), code=303)


@bp.get("/")
def index() -> str:
    phones = sorted(p.decode() for p in cast(set[bytes], redis_client().smembers(_PHONES)))
    boxes = [(phone, list(reversed(inbox(phone)))) for phone in phones]
    return render_template_string(_PAGE, boxes=boxes, statuses=STATUS_NAMES)


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Africa's Talking simulator</title>
<style>
body{font-family:sans-serif;margin:1.5em;max-width:60em}
.phone{border:1px solid #ccc;border-radius:6px;padding:.5em 1em;margin:1em 0}
.sms{border-top:1px solid #eee;padding:.4em 0;white-space:pre-wrap}
.meta{color:#666;font-size:.85em}
form{display:inline}
</style></head><body>
<h1>Africa's Talking simulator</h1>
<p>Messages the SACCO sent, per phone (newest first).</p>
<form method="post" action="{{ url_for('.send_inbound') }}">
  Text the SACCO from <input name="phone" placeholder="0712345678" required>
  <input name="text" placeholder="BAL"> <button>Send SMS</button>
</form>
<form method="post" action="{{ url_for('.next_status') }}">
  | Next send to <input name="phone" placeholder="0712345678" required> answers
  <select name="statusCode">{% for code, name in statuses.items() %}
  <option value="{{ code }}">{{ code }} {{ name }}</option>{% endfor %}</select>
  <button>Set</button>
</form>
{% for phone, messages in boxes %}
<div class="phone"><h2>{{ phone }}</h2>
{% for m in messages %}<div class="sms">{{ m.message }}
<div class="meta">from {{ m["from"] }} at {{ m.at }} | {{ m.messageId }} | {{ m.status }}
{% if m.status not in ("Success", "Failed") %}
<form method="post" action="{{ url_for('.deliver') }}">
<input type="hidden" name="messageId" value="{{ m.messageId }}">
<button name="status" value="Success">deliver</button>
<button name="status" value="Failed">fail</button></form>{% endif %}</div></div>
{% else %}<p class="meta">No messages.</p>{% endfor %}
</div>
{% else %}<p>No phone has received anything yet.</p>{% endfor %}
</body></html>
"""
