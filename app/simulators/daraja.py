"""Safaricom Daraja (M-PESA) stand-in at /simulator/daraja (contracts/daraja.md).

Every Daraja path is served under the prefix, so MPESA_BASE_URL=http://host:port/simulator/daraja
makes `DarajaClient` work unchanged. Requests are checked the way the real API checks them
(token, password and Kenyan timestamp, field lengths, whole amounts, phone format, callback
URLs) and refused with Daraja's error body `{"requestId", "errorCode", "errorMessage"}`,
HTTP status = the code's first three digits. Callbacks go out over HTTP from a daemon
thread after `delay` seconds; every delivery and our server's answer is recorded.

Daraja API (Bearer token from the OAuth call on every POST):
  GET  /oauth/v1/generate?grant_type=client_credentials   HTTP Basic key/secret
  POST /mpesa/stkpush/v1/processrequest                  STK push, then the stkCallback
  POST /mpesa/stkpushquery/v1/query                      500.001.1001 while pending
  POST /mpesa/c2b/v1/registerurl (and v2)                Confirmation/Validation URLs
  POST /mpesa/b2c/v3/paymentrequest (and v1)             then the Result to ResultURL
  POST /mpesa/transactionstatus/v1/query                 then the Result to ResultURL

Wrong STK password answers 500.001.1001 "Wrong credentials" (Daraja's overloaded code);
a wrong B2C/status initiator or credential is acknowledged and answered by a Result with
ResultCode 2001, as the real API does.

Controls (JSON or form; forms redirect to the page):
  POST /simulator/daraja/phones/<phone>/outcome  {"stk": "cancelled", "b2c": "timeout",
       "name": "Jane Wanjiku"}; sticky until changed; "default" resets any of them,
       "" or absent keeps it. The name is what STK, B2C and C2B bodies show (John Doe).
       Also POST /simulator/daraja/outcome with "phone" in the body.
       stk: success, insufficient (1), cancelled (1032), wrong_pin (2001), unreachable
            (1037), timeout (no callback, query answers "1037"), lost (paid, no callback,
            query answers "0"), manual (waits on the page or .../complete).
       b2c: success, insufficient (1), unregistered (2040), initiator (2001), timeout
            (timeout body to QueueTimeOutURL, nothing paid), lost (paid, no Result).
  POST /simulator/daraja/stk/<CheckoutRequestID>/complete  {"outcome": "success"}
       (any stk outcome but manual) completes a pending prompt; 404 unknown, 409 done.
  POST /simulator/daraja/c2b/pay  {"phone", "amount", "account", "msisdn": "hashed" |
       "masked" | "plain", "shortcode"?, "skip_validation"?}: a member pays the Paybill.
       202 {"TransID", ...} at once; then ValidationURL (if registered) and, when it
       answers ResultCode "0", ConfirmationURL. No validation answer: the registered
       ResponseType decides. "skip_validation": true goes straight to ConfirmationURL,
       as Safaricom does for a shortcode without external validation: an account that
       matches no one lands in suspense (the page's "skip validation" box).
  POST /simulator/daraja/settings  {"delay": 0, "status_result_code": 0 | "00000000"}
  GET  /simulator/daraja/state  pending prompts, recent prompts, B2C and C2B payments,
       API requests, callbacks sent (with the HTTP status and body our server answered).
       `phone_state(phone)` reads one phone's share of it (the console's phone page).
  GET  /simulator/daraja/  the simulated phone: prompts to accept or refuse, outcomes per
       phone, a Paybill form, callbacks and their answers.

Transaction Status Result (to the status query's ResultURL): the envelope's
OriginatorConversationID/ConversationID are the status query's own (the acknowledgement's;
a caller-given OriginatorConversationID is echoed). For a completed payment the
ResultParameter list holds, as Daraja's sample does: DebitPartyName twice (the second
carries the credit party), CreditPartyName, OriginatorConversationID and ConversationID
of the ORIGINAL payment (B2C: ours and its AG_…; STK: MerchantRequestID and
CheckoutRequestID; C2B: the TransID twice), InitiatedTime/FinalisedTime (numbers, Kenyan),
TransactionReason without Value, TransactionStatus "Completed", Amount, ReceiptNo;
ReferenceData.ReferenceItem is a list. A receiver matches on ReceiptNo or on the original
OriginatorConversationID parameter. Never made or unknown: ResultCode "R000001", no
parameters.

All state is JSON in Redis under `simulator:daraja:`, each key with a TTL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import string
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit

import redis
import requests
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

from app.config import FORBIDDEN_CALLBACK_WORDS, Settings
from app.extensions import redis_client
from app.integrations.daraja import daraja_timestamp, stk_password
from app.models.types import utcnow
from app.money import MoneyError, to_decimal
from app.phone import PhoneError, normalise_phone

log = logging.getLogger(__name__)

bp = Blueprint("simulator_daraja", __name__, url_prefix="/simulator/daraja")

TIMEOUT = (3.05, 15)  # connect, read: what Safaricom's own callers allow, roughly
TOKEN_LIFE = 3599
DAY = 24 * 3600
WEEK = 7 * DAY
MONTH = 30 * DAY
KEEP = 50  # items kept in each "recent" list
DEFAULT_DELAY = 1.0
DEFAULT_NAME = "John Doe"
B2C_MIN, B2C_MAX = 10, 250_000
START_BALANCE_CENTS = 10_000_000 * 100  # the utility account the B2C results report

OK_DESC = "The service request is processed successfully."
STK_OUTCOMES: dict[str, tuple[int, str]] = {
    "success": (0, OK_DESC),
    "insufficient": (1, "The balance is insufficient for the transaction."),
    "cancelled": (1032, "Request cancelled by user"),
    "wrong_pin": (2001, "The initiator information is invalid."),
    "unreachable": (1037, "DS timeout user cannot be reached"),
    "timeout": (1037, "DS timeout user cannot be reached"),
    "lost": (0, OK_DESC),
}
STK_SILENT = ("timeout", "lost")  # final, but no callback is ever sent
STK_PAID = ("success", "lost")
MANUAL = "manual"
STK_CHOICES = (*STK_OUTCOMES, MANUAL)

B2C_OUTCOMES: dict[str, tuple[int, str]] = {
    "success": (0, OK_DESC),
    "insufficient": (1, "The balance is insufficient for the transaction."),
    "unregistered": (
        2040,
        "Credit Party customer type (Unregistered or Registered Customer) can't be "
        "supported by the service.",
    ),
    "initiator": (2001, "The initiator information is invalid."),
    "timeout": (1037, "The service request timed out."),
    "lost": (0, OK_DESC),
}
B2C_CHOICES = tuple(B2C_OUTCOMES)
B2C_PAID = ("success", "lost")
B2C_COMMANDS = ("BusinessPayment", "SalaryPayment", "PromotionPayment")
B2C_BELOW_MIN = (2, "Declined due to limit rule: less than the minimum transaction amount.")
B2C_ABOVE_MAX = (3, "Declined due to limit rule: greater than the maximum transaction amount.")
B2C_DUPLICATE = (15, "Duplicate OriginatorConversationID.")
NOT_FOUND = ("R000001", "The transaction does not exist.")
MSISDN_STYLES = ("hashed", "masked", "plain")

_MSISDN = re.compile(r"^254[17]\d{8}$")
_TIMESTAMP = re.compile(r"^\d{14}$")
_ALNUM = string.ascii_uppercase + string.digits

_PREFIX = "simulator:daraja:"
K_SETTINGS = _PREFIX + "settings"
K_PHONES = _PREFIX + "phones"
K_STK_RECENT = _PREFIX + "stk:recent"
K_B2C_RECENT = _PREFIX + "b2c:recent"
K_C2B_RECENT = _PREFIX + "c2b:recent"
K_REQUESTS = _PREFIX + "requests"
K_CALLBACKS = _PREFIX + "callbacks"
K_BALANCE = _PREFIX + "b2c:balance"


def _key(*parts: str) -> str:
    """One Redis key under the simulator's prefix, e.g. _key("stk", checkout_id)."""
    return _PREFIX + ":".join(parts)


# -- errors -----------------------------------------------------------------------------


class Refused(Exception):
    """Daraja refuses the request before processing it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(field: str) -> Refused:
    # Daraja names the offending field, and only that one.
    return Refused("400.002.02", f"Bad Request - Invalid {field}")


def _request_id() -> str:
    return f"{secrets.randbelow(90000) + 10000}-{secrets.randbelow(9 * 10**7) + 10**7}-1"


def _error(code: str, message: str) -> tuple[Response, int]:
    body = jsonify(requestId=_request_id(), errorCode=code, errorMessage=message)
    return body, int(code[:3])


@bp.errorhandler(Refused)
def _refused(exc: Refused) -> tuple[Response, int]:
    return _error(exc.code, exc.message)


# -- small helpers ----------------------------------------------------------------------


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


def _load(r: redis.Redis, key: str) -> dict[str, Any] | None:
    raw = r.get(key)
    return json.loads(raw) if raw is not None else None


def _save(r: redis.Redis, key: str, value: dict[str, Any], ttl: int) -> None:
    r.set(key, json.dumps(value), ex=ttl)


def _push(r: redis.Redis, key: str, value: object, keep: int = KEEP, ttl: int = DAY) -> None:
    with r.pipeline() as pipe:
        pipe.lpush(key, json.dumps(value))
        pipe.ltrim(key, 0, keep - 1)
        pipe.expire(key, ttl)
        pipe.execute()


def _recent(r: redis.Redis, key: str) -> list[Any]:
    return [json.loads(raw) for raw in r.lrange(key, 0, -1)]


def _iso(now: datetime) -> str:
    return now.isoformat(timespec="seconds")


def _kenya_number(now: datetime, settings: Settings) -> int:
    """Daraja's numeric YYYYMMDDHHmmss, Kenyan time."""
    return int(daraja_timestamp(now, settings.tz))


def _receipt() -> str:
    """An M-PESA receipt: 10 upper-case letters and digits, starting with a letter."""
    return secrets.choice(string.ascii_uppercase) + "".join(
        secrets.choice(_ALNUM) for _ in range(9)
    )


def _conversation_id(now: datetime) -> str:
    return f"AG_{now:%Y%m%d}_{secrets.token_hex(10)}"


def _params() -> dict[str, Any]:
    return dict(request.get_json(silent=True) or request.form)


def _wants_json() -> bool:
    return request.is_json or request.accept_mimetypes.best == "application/json"


def _back() -> BaseResponse:
    return redirect(url_for(".index"), code=303)


def _sim_settings(r: redis.Redis) -> dict[str, Any]:
    return {"delay": DEFAULT_DELAY, "status_result_code": 0, **(_load(r, K_SETTINGS) or {})}


def _prefs(r: redis.Redis, msisdn: str) -> dict[str, Any]:
    return _load(r, _key("phone", msisdn)) or {}


def _names(full: str) -> tuple[str, str, str]:
    parts = full.split()
    if not parts:
        return "", "", ""
    if len(parts) == 1:
        return parts[0], "", ""
    return parts[0], " ".join(parts[1:-1]), parts[-1]


# -- request checks, as Daraja makes them -------------------------------------------------


def _authorised(r: redis.Redis) -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or not token.strip():
        raise Refused("404.001.04", "Invalid Authentication passed")
    if not r.exists(_key("token", token.strip())):
        raise Refused("404.001.03", "Invalid Access Token")


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise Refused("400.002.02", "Bad Request - Invalid JSON body")
    return body


def _text(body: dict[str, Any], field: str, max_length: int | None = None) -> str:
    value = body.get(field)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # integrators send shortcodes and phones as numbers too
    if not isinstance(value, str) or not value.strip():
        raise _invalid(field)
    if max_length is not None and len(value) > max_length:
        raise _invalid(field)
    return value


def _msisdn(body: dict[str, Any], field: str) -> str:
    value = _text(body, field)
    if not _MSISDN.match(value):
        raise _invalid(field)
    return value


def _amount(body: dict[str, Any], field: str = "Amount") -> int:
    value = body.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _invalid(field)
    try:
        amount = to_decimal(value)
    except MoneyError:
        raise _invalid(field) from None
    if amount != amount.to_integral_value() or amount < 1:
        raise _invalid(field)
    return int(amount)


def _url(body: dict[str, Any], field: str, *, forbid_words: bool = False) -> str:
    value = _text(body, field)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or re.search(r"\s", value):
        raise _invalid(field)
    if forbid_words and any(word in value.lower() for word in FORBIDDEN_CALLBACK_WORDS):
        raise _invalid(field)
    return value


def _checked_password(body: dict[str, Any], settings: Settings) -> str:
    """BusinessShortCode, Timestamp (Kenyan, within an hour) and Password; the shortcode."""
    shortcode = _text(body, "BusinessShortCode")
    if shortcode != settings.MPESA_SHORTCODE:
        raise _invalid("BusinessShortCode")
    stamp = _text(body, "Timestamp")
    if not _TIMESTAMP.match(stamp):
        raise _invalid("Timestamp")
    try:
        when = datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=settings.tz)
    except ValueError:
        raise _invalid("Timestamp") from None
    # A UTC timestamp from a server in UTC is three hours off: refused, as it would be live.
    if abs(utcnow() - when) > timedelta(hours=1):
        raise _invalid("Timestamp")
    password = _text(body, "Password")
    expected = stk_password(shortcode, settings.mpesa_credential("passkey"), stamp)
    if not secrets.compare_digest(password, expected):
        raise Refused("500.001.1001", "Wrong credentials")
    return shortcode


def _initiator_ok(name: str, credential: str, settings: Settings) -> bool:
    return secrets.compare_digest(
        name, settings.mpesa_credential("initiator_name")
    ) and secrets.compare_digest(credential, settings.mpesa_credential("security_credential"))


# -- background delivery -----------------------------------------------------------------


class _Deliveries:
    """Counts callback threads in flight, so a test can wait until the simulator is idle."""

    def __init__(self) -> None:
        self._running = 0
        self._changed = threading.Condition()

    def start(self, delay: float, work: Callable[[], object]) -> None:  # its result unused
        with self._changed:
            self._running += 1
        threading.Thread(
            target=self._run, args=(delay, work), name="daraja-simulator", daemon=True
        ).start()

    def _run(self, delay: float, work: Callable[[], object]) -> None:
        try:
            if delay > 0:
                time.sleep(delay)
            work()
        except Exception:  # noqa: BLE001 - a stand-in's failure is logged, never raised
            log.exception("daraja simulator: background work failed")
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True


_deliveries = _Deliveries()


def wait_idle(timeout: float = 10.0) -> bool:
    """True once no callback of this process is waiting or in flight (tests use it)."""
    return _deliveries.wait_idle(timeout)


def _deliver(r: redis.Redis, kind: str, ref: str, url: str, body: dict[str, Any]) -> dict:
    """POST one callback; the answer (or why there was none) is recorded, never raised."""
    record: dict[str, Any] = {
        "at": _iso(utcnow()),
        "kind": kind,
        "ref": ref,
        "url": url,
        "body": body,
        "status": None,
        "answer": None,
        "error": None,
    }
    try:
        response = requests.post(url, json=body, timeout=TIMEOUT)
    except requests.RequestException as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"[:300]
    else:
        record["status"] = response.status_code
        try:
            record["answer"] = response.json()
        except ValueError:
            record["answer"] = response.text[:500]
    _push(r, K_CALLBACKS, record, keep=100)
    return record


def _after(r: redis.Redis, delay: float, kind: str, ref: str, url: str, body: dict) -> None:
    _deliveries.start(delay, lambda: _deliver(r, kind, ref, url, body))


# -- OAuth -------------------------------------------------------------------------------


@bp.get("/oauth/v1/generate")
def oauth() -> Response | tuple[Response, int]:
    settings = _settings()
    auth = request.authorization
    if (
        auth is None
        or auth.type != "basic"
        or auth.username != settings.mpesa_credential("consumer_key")
        or auth.password != settings.mpesa_credential("consumer_secret")
    ):
        return _error("400.008.01", "Invalid Authentication passed")
    if request.args.get("grant_type") != "client_credentials":
        return _error("400.008.02", "Invalid grant type passed")
    token = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(28))
    redis_client().set(_key("token", token), "1", ex=TOKEN_LIFE)
    return jsonify(access_token=token, expires_in=str(TOKEN_LIFE))


# -- STK push and query --------------------------------------------------------------------


def _settle_prompt(
    r: redis.Redis, prompt: dict[str, Any], outcome: str, when: datetime, settings: Settings
) -> None:
    """Decide the prompt: result code, and for a payment the receipt, recorded for
    Transaction Status."""
    code, desc = STK_OUTCOMES[outcome]
    prompt.update(status="done", outcome=outcome, ResultCode=code, ResultDesc=desc)
    prompt["completed"] = _iso(when)
    if outcome in STK_PAID:
        receipt = _receipt()
        prompt["MpesaReceiptNumber"] = receipt
        prompt["TransactionDate"] = _kenya_number(when, settings)
        _save(
            r,
            _key("receipt", receipt),
            {
                "receipt": receipt,
                "kind": "stk",
                "amount": prompt["amount"],
                "debit": f"{prompt['phone']} - {prompt['name']}",
                "credit": f"{prompt['shortcode']} - SACCO",
                "reason": "Pay Bill Online",
                "originator_id": prompt["MerchantRequestID"],
                "conversation_id": prompt["CheckoutRequestID"],
                "initiated": _kenya_number(when, settings),
                "finalised": _kenya_number(when, settings),
            },
            WEEK,
        )


def _stk_callback(prompt: dict[str, Any]) -> dict[str, Any]:
    callback: dict[str, Any] = {
        "MerchantRequestID": prompt["MerchantRequestID"],
        "CheckoutRequestID": prompt["CheckoutRequestID"],
        "ResultCode": prompt["ResultCode"],
        "ResultDesc": prompt["ResultDesc"],
    }
    if prompt["ResultCode"] == 0:
        callback["CallbackMetadata"] = {
            "Item": [
                {"Name": "Amount", "Value": float(prompt["amount"])},
                {"Name": "MpesaReceiptNumber", "Value": prompt["MpesaReceiptNumber"]},
                {"Name": "TransactionDate", "Value": prompt["TransactionDate"]},
                {"Name": "PhoneNumber", "Value": int(prompt["phone"])},
            ]
        }
    return {"Body": {"stkCallback": callback}}


def _send_stk_callback(r: redis.Redis, prompt: dict[str, Any], delay: float) -> None:
    if prompt["outcome"] in STK_SILENT:
        return
    _after(
        r,
        delay,
        "stk",
        prompt["CheckoutRequestID"],
        prompt["callback_url"],
        _stk_callback(prompt),
    )


@bp.post("/mpesa/stkpush/v1/processrequest")
def stk_push() -> Response:
    settings = _settings()
    r = redis_client()
    _authorised(r)
    body = _body()
    shortcode = _checked_password(body, settings)
    kind = _text(body, "TransactionType")
    if kind not in ("CustomerPayBillOnline", "CustomerBuyGoodsOnline"):
        raise _invalid("TransactionType")
    amount = _amount(body)
    _msisdn(body, "PartyA")
    party_b = _text(body, "PartyB")
    if not party_b.isdigit() or (kind == "CustomerPayBillOnline" and party_b != shortcode):
        raise _invalid("PartyB")
    phone = _msisdn(body, "PhoneNumber")
    callback_url = _url(body, "CallBackURL")
    reference = _text(body, "AccountReference", max_length=12)
    description = _text(body, "TransactionDesc", max_length=13)

    now = utcnow()
    delay = float(_sim_settings(r)["delay"])
    prefs = _prefs(r, phone)
    outcome = prefs.get("stk") or "success"
    kenya = now.astimezone(settings.tz)
    prompt: dict[str, Any] = {
        "MerchantRequestID": _request_id(),
        "CheckoutRequestID": f"ws_CO_{kenya:%d%m%Y%H%M%S}{secrets.randbelow(10**10):010d}",
        "phone": phone,
        "name": prefs.get("name") or DEFAULT_NAME,
        "shortcode": shortcode,
        "amount": amount,
        "reference": reference,
        "description": description,
        "callback_url": callback_url,
        "created": _iso(now),
        "status": "pending",
        "outcome": outcome,
        "due": None,
    }
    if outcome != MANUAL:
        # Decided now, visible to STK query only once the member "answers" (after delay).
        _settle_prompt(r, prompt, outcome, now + timedelta(seconds=delay), settings)
        prompt["due"] = time.time() + delay
    _save(r, _key("stk", prompt["CheckoutRequestID"]), prompt, DAY)
    _push(r, K_STK_RECENT, prompt["CheckoutRequestID"])
    if outcome != MANUAL:
        _send_stk_callback(r, prompt, delay)
    return jsonify(
        MerchantRequestID=prompt["MerchantRequestID"],
        CheckoutRequestID=prompt["CheckoutRequestID"],
        ResponseCode="0",
        ResponseDescription="Success. Request accepted for processing",
        CustomerMessage="Success. Request accepted for processing",
    )


def _is_pending(prompt: dict[str, Any]) -> bool:
    return prompt["status"] == "pending" or time.time() < float(prompt["due"] or 0)


@bp.post("/mpesa/stkpushquery/v1/query")
def stk_query() -> Response | tuple[Response, int]:
    settings = _settings()
    r = redis_client()
    _authorised(r)
    body = _body()
    _checked_password(body, settings)
    checkout_id = _text(body, "CheckoutRequestID")
    prompt = _load(r, _key("stk", checkout_id))
    if prompt is None:
        raise _invalid("CheckoutRequestID")
    if _is_pending(prompt):
        return _error("500.001.1001", "The transaction is being processed")
    return jsonify(
        ResponseCode="0",
        ResponseDescription="The service request has been accepted successsfully",  # sic
        MerchantRequestID=prompt["MerchantRequestID"],
        CheckoutRequestID=prompt["CheckoutRequestID"],
        ResultCode=str(prompt["ResultCode"]),
        ResultDesc=prompt["ResultDesc"],
    )


@bp.post("/stk/<checkout_id>/complete")
def complete_stk(checkout_id: str) -> BaseResponse | tuple[Response, int]:
    """The member answers a manual prompt (the page's buttons, or a test)."""
    outcome = str(_params().get("outcome") or "success")
    if outcome not in STK_OUTCOMES:
        return jsonify(error=f"outcome must be one of {', '.join(STK_OUTCOMES)}"), 400
    r = redis_client()
    prompt = _load(r, _key("stk", checkout_id))
    if prompt is None:
        return jsonify(error="unknown CheckoutRequestID"), 404
    # Two clicks, or a click racing an API call: only the first completes the prompt.
    if prompt["status"] != "pending" or not r.set(
        _key("stk", "done", checkout_id), "1", nx=True, ex=DAY
    ):
        return jsonify(error="this prompt is already completed"), 409
    _settle_prompt(r, prompt, outcome, utcnow(), _settings())
    _save(r, _key("stk", checkout_id), prompt, DAY)
    _send_stk_callback(r, prompt, 0)  # the member has just answered: no extra wait
    if _wants_json():
        return jsonify(
            CheckoutRequestID=checkout_id, outcome=outcome, ResultCode=prompt["ResultCode"]
        )
    return _back()


# -- C2B -----------------------------------------------------------------------------------


@bp.post("/mpesa/c2b/v1/registerurl")
@bp.post("/mpesa/c2b/v2/registerurl")
def register_urls() -> Response:
    settings = _settings()
    r = redis_client()
    _authorised(r)
    body = _body()
    shortcode = _text(body, "ShortCode")
    if shortcode != settings.MPESA_SHORTCODE:
        raise _invalid("ShortCode")
    response_type = _text(body, "ResponseType")
    if response_type not in ("Completed", "Cancelled"):
        raise _invalid("ResponseType")
    confirmation = _url(body, "ConfirmationURL", forbid_words=True)
    validation = _url(body, "ValidationURL", forbid_words=True)
    _save(
        r,
        _key("c2b", "urls", shortcode),
        {
            "ShortCode": shortcode,
            "ResponseType": response_type,
            "ConfirmationURL": confirmation,
            "ValidationURL": validation,
            "at": _iso(utcnow()),
        },
        MONTH,
    )
    return jsonify(
        OriginatorCoversationID=_request_id(),  # sic: Daraja's spelling
        ResponseCode="0",
        ResponseDescription="Success",
    )


def _msisdn_as(msisdn: str, style: str) -> str:
    if style == "hashed":
        return hashlib.sha256(msisdn.encode()).hexdigest()
    if style == "masked":
        return f"{msisdn[:5]}****{msisdn[-3:]}"
    return msisdn


@bp.post("/c2b/pay")
def c2b_pay() -> BaseResponse | tuple[Response, int]:
    """A member pays the Paybill from their phone."""
    settings = _settings()
    r = redis_client()
    params = _params()
    try:
        phone = normalise_phone(str(params.get("phone", "")))
    except PhoneError as exc:
        return jsonify(error=str(exc)), 400
    try:
        amount = to_decimal(params.get("amount", ""))
    except MoneyError:
        amount = None
    if amount is None or amount != amount.to_integral_value() or amount < 1:
        return jsonify(error="amount must be whole shillings, at least 1"), 400
    account = str(params.get("account", ""))  # kept exactly as the member typed it
    if not account.strip():
        return jsonify(error="account (the member number typed) is required"), 400
    style = str(params.get("msisdn") or "hashed")
    if style not in MSISDN_STYLES:
        return jsonify(error=f"msisdn must be one of {', '.join(MSISDN_STYLES)}"), 400
    shortcode = str(params.get("shortcode") or settings.MPESA_SHORTCODE)
    skip_validation = str(params.get("skip_validation", "")).lower() in ("1", "true", "on", "yes")
    urls = _load(r, _key("c2b", "urls", shortcode))
    if urls is None:
        return jsonify(
            error=f"no URLs registered for {shortcode}: POST /mpesa/c2b/v1/registerurl first"
        ), 409

    now = utcnow()
    trans_id = _receipt()
    first, middle, last = _names(_prefs(r, phone).get("name") or DEFAULT_NAME)
    body = {
        "TransactionType": "Pay Bill",
        "TransID": trans_id,
        "TransTime": daraja_timestamp(now, settings.tz),
        "TransAmount": str(int(amount)),
        "BusinessShortCode": shortcode,
        "BillRefNumber": account,
        "InvoiceNumber": "",
        "OrgAccountBalance": "",
        "ThirdPartyTransID": "",
        "MSISDN": _msisdn_as(phone, style),
        "FirstName": first,
        "MiddleName": middle,
        "LastName": last,
    }
    payment = {
        "TransID": trans_id,
        "phone": phone,
        "amount": int(amount),
        "account": account,
        "status": "pending",
        "at": _iso(now),
        "validation": "skipped" if skip_validation else None,
        "confirmation": None,
    }
    _save(r, _key("c2b", trans_id), payment, WEEK)
    _push(r, K_C2B_RECENT, trans_id)
    delay = float(_sim_settings(r)["delay"])
    receipt = {
        "receipt": trans_id,
        "kind": "c2b",
        "amount": int(amount),
        "debit": f"{phone} - {' '.join(p for p in (first, middle, last) if p)}",
        "credit": f"{shortcode} - SACCO",
        "reason": "Pay Bill",
        "originator_id": trans_id,
        "conversation_id": trans_id,
        "initiated": _kenya_number(now, settings),
        "finalised": _kenya_number(now, settings),
    }
    if skip_validation:
        urls = {**urls, "ValidationURL": None}
    _deliveries.start(delay, lambda: _run_c2b(r, urls, body, payment, receipt))
    if _wants_json():
        return jsonify(
            TransID=trans_id,
            TransTime=body["TransTime"],
            MSISDN=body["MSISDN"],
            BillRefNumber=account,
            TransAmount=body["TransAmount"],
        ), 202
    return _back()


def _run_c2b(
    r: redis.Redis,
    urls: dict[str, Any],
    body: dict[str, Any],
    payment: dict[str, Any],
    receipt: dict[str, Any],
) -> None:
    """Validation, then (if accepted) the money moves and Confirmation is told."""
    trans_id = body["TransID"]
    proceed = True
    if urls.get("ValidationURL"):
        sent = _deliver(r, "c2b_validation", trans_id, urls["ValidationURL"], body)
        payment["validation"] = {"status": sent["status"], "answer": sent["answer"]}
        answer = sent["answer"]
        if sent["status"] == 200 and isinstance(answer, dict) and "ResultCode" in answer:
            proceed = str(answer["ResultCode"]) == "0"
        else:
            # No usable answer: Safaricom applies the ResponseType chosen at registration.
            proceed = urls.get("ResponseType") == "Completed"
    if not proceed:
        payment["status"] = "rejected"
        _save(r, _key("c2b", trans_id), payment, WEEK)
        return
    payment["status"] = "completed"
    _save(r, _key("receipt", trans_id), receipt, WEEK)
    _save(r, _key("c2b", trans_id), payment, WEEK)
    sent = _deliver(r, "c2b_confirmation", trans_id, urls["ConfirmationURL"], body)
    payment["confirmation"] = {"status": sent["status"], "answer": sent["answer"]}
    _save(r, _key("c2b", trans_id), payment, WEEK)


# -- B2C -----------------------------------------------------------------------------------


def _b2c_envelope(
    code: int | str, desc: str, originator_id: str, conversation_id: str, transaction_id: str
) -> dict[str, Any]:
    return {
        "ResultType": 0,
        "ResultCode": code,
        "ResultDesc": desc,
        "OriginatorConversationID": originator_id,
        "ConversationID": conversation_id,
        "TransactionID": transaction_id,
    }


def _b2c_result(payment: dict[str, Any], settings: Settings, balance_cents: int) -> dict:
    result = _b2c_envelope(
        payment["ResultCode"],
        payment["ResultDesc"],
        payment["OriginatorConversationID"],
        payment["ConversationID"],
        payment["TransactionID"],
    )
    if payment["ResultCode"] == 0:
        completed = datetime.fromisoformat(payment["completed"]).astimezone(settings.tz)
        result["ResultParameters"] = {
            "ResultParameter": [
                {"Key": "TransactionAmount", "Value": payment["amount"]},
                {"Key": "TransactionReceipt", "Value": payment["receipt"]},
                {"Key": "B2CRecipientIsRegisteredCustomer", "Value": "Y"},
                {"Key": "B2CChargesPaidAccountAvailableFunds", "Value": 0.00},
                {
                    "Key": "ReceiverPartyPublicName",
                    "Value": f"{payment['phone']} - {payment['name']}",
                },
                {
                    "Key": "TransactionCompletedDateTime",
                    "Value": completed.strftime("%d.%m.%Y %H:%M:%S"),
                },
                {"Key": "B2CUtilityAccountAvailableFunds", "Value": balance_cents / 100},
                {"Key": "B2CWorkingAccountAvailableFunds", "Value": 900000.00},
            ]
        }
    result["ReferenceData"] = {
        "ReferenceItem": {"Key": "QueueTimeoutURL", "Value": payment["timeout_url"]}
    }
    return {"Result": result}


@bp.post("/mpesa/b2c/v3/paymentrequest")
@bp.post("/mpesa/b2c/v1/paymentrequest")
def b2c_payment() -> Response:
    settings = _settings()
    r = redis_client()
    _authorised(r)
    body = _body()
    if "/v3/" in request.path:
        originator_id = _text(body, "OriginatorConversationID", max_length=100)
    else:  # v1 made one up when the caller sent none
        originator_id = str(body.get("OriginatorConversationID") or _request_id())
    initiator = _text(body, "InitiatorName")
    credential = _text(body, "SecurityCredential")
    if body.get("CommandID") not in B2C_COMMANDS:
        raise _invalid("CommandID")
    amount = _amount(body)
    if _text(body, "PartyA") != settings.MPESA_B2C_SHORTCODE:
        raise _invalid("PartyA")
    phone = _msisdn(body, "PartyB")
    _text(body, "Remarks", max_length=100)
    result_url = _url(body, "ResultURL")
    timeout_url = _url(body, "QueueTimeOutURL")

    now = utcnow()
    delay = float(_sim_settings(r)["delay"])
    prefs = _prefs(r, phone)
    conversation_id = _conversation_id(now)
    receipt = _receipt()
    payment: dict[str, Any] = {
        "OriginatorConversationID": originator_id,
        "ConversationID": conversation_id,
        "phone": phone,
        "name": prefs.get("name") or DEFAULT_NAME,
        "amount": amount,
        "command": body["CommandID"],
        "result_url": result_url,
        "timeout_url": timeout_url,
        "at": _iso(now),
        "completed": _iso(now + timedelta(seconds=delay)),
        "receipt": None,
        "TransactionID": f"{receipt[:3]}0000000",  # what failures carry: not a receipt
    }
    if not _initiator_ok(initiator, credential, settings):
        payment["outcome"] = "initiator"
        payment["ResultCode"], payment["ResultDesc"] = B2C_OUTCOMES["initiator"]
    elif amount < B2C_MIN:
        payment["outcome"] = "below_minimum"
        payment["ResultCode"], payment["ResultDesc"] = B2C_BELOW_MIN
    elif amount > B2C_MAX:
        payment["outcome"] = "above_maximum"
        payment["ResultCode"], payment["ResultDesc"] = B2C_ABOVE_MAX
    else:
        payment["outcome"] = prefs.get("b2c") or "success"
        payment["ResultCode"], payment["ResultDesc"] = B2C_OUTCOMES[payment["outcome"]]
    paid = payment["outcome"] in B2C_PAID
    payment["status"] = (
        "paid" if paid else "not_sent" if payment["outcome"] == "timeout" else "failed"
    )
    if paid:
        payment["receipt"] = payment["TransactionID"] = receipt

    # The OriginatorConversationID is claimed atomically: a repeat is never paid again.
    if not r.set(_key("b2c", originator_id), json.dumps(payment), nx=True, ex=WEEK):
        code, desc = B2C_DUPLICATE
        duplicate = _b2c_envelope(
            code, desc, originator_id, conversation_id, f"{receipt[:3]}0000000"
        )
        duplicate["ReferenceData"] = {
            "ReferenceItem": {"Key": "QueueTimeoutURL", "Value": timeout_url}
        }
        _after(r, delay, "b2c_result", originator_id, result_url, {"Result": duplicate})
        return _b2c_ack(originator_id, conversation_id)

    r.set(_key("b2c", "conv", conversation_id), originator_id, ex=WEEK)
    _push(r, K_B2C_RECENT, originator_id)
    balance = _balance(r)
    if paid:
        balance = int(r.decrby(K_BALANCE, amount * 100))
        r.expire(K_BALANCE, MONTH)
        _save(
            r,
            _key("receipt", receipt),
            {
                "receipt": receipt,
                "kind": "b2c",
                "amount": amount,
                "debit": f"{settings.MPESA_B2C_SHORTCODE} - SACCO",
                "credit": f"{phone} - {payment['name']}",
                "reason": "Business Payment to Customer via API",
                "originator_id": originator_id,
                "conversation_id": conversation_id,
                "initiated": _kenya_number(now, settings),
                "finalised": _kenya_number(now + timedelta(seconds=delay), settings),
            },
            WEEK,
        )
    if payment["outcome"] == "timeout":
        code, desc = B2C_OUTCOMES["timeout"]
        timeout_body = _b2c_envelope(
            code, desc, originator_id, conversation_id, payment["TransactionID"]
        )
        timeout_body["ResultType"] = 1
        _after(r, delay, "b2c_timeout", originator_id, timeout_url, {"Result": timeout_body})
    elif payment["outcome"] != "lost":
        result = _b2c_result(payment, settings, balance)
        _after(r, delay, "b2c_result", originator_id, result_url, result)
    return _b2c_ack(originator_id, conversation_id)


def _balance(r: redis.Redis) -> int:
    r.set(K_BALANCE, START_BALANCE_CENTS, nx=True, ex=MONTH)
    return int(r.get(K_BALANCE) or START_BALANCE_CENTS)


def _b2c_ack(originator_id: str, conversation_id: str) -> Response:
    return jsonify(
        ConversationID=conversation_id,
        OriginatorConversationID=originator_id,
        ResponseCode="0",
        ResponseDescription="Accept the service request successfully.",
    )


# -- Transaction status ----------------------------------------------------------------------


def _find_receipt(
    r: redis.Redis, transaction_id: str | None, original_id: str | None
) -> dict[str, Any] | None:
    if transaction_id:
        return _load(r, _key("receipt", transaction_id))
    assert original_id
    payment = _load(r, _key("b2c", original_id))
    if payment is None:
        # Integrators pass the AG_… ConversationID here too.
        mapped = cast(bytes | None, r.get(_key("b2c", "conv", original_id)))  # not decoded
        payment = _load(r, _key("b2c", mapped.decode())) if mapped else None
    if payment is None or payment.get("status") != "paid":
        return None
    return _load(r, _key("receipt", payment["receipt"]))


@bp.post("/mpesa/transactionstatus/v1/query")
def transaction_status() -> Response:
    settings = _settings()
    r = redis_client()
    _authorised(r)
    body = _body()
    initiator = _text(body, "Initiator")
    credential = _text(body, "SecurityCredential")
    if body.get("CommandID") != "TransactionStatusQuery":
        raise _invalid("CommandID")
    transaction_id = body.get("TransactionID") or None
    original_id = body.get("OriginalConversationID") or None
    if not (transaction_id or original_id):
        raise _invalid("TransactionID")
    if transaction_id is not None and not isinstance(transaction_id, str):
        raise _invalid("TransactionID")
    if original_id is not None and not isinstance(original_id, str):
        raise _invalid("OriginalConversationID")
    if not _text(body, "PartyA").isdigit():
        raise _invalid("PartyA")
    if str(body.get("IdentifierType")) not in ("1", "2", "4", "11"):
        raise _invalid("IdentifierType")
    _text(body, "Remarks", max_length=100)
    result_url = _url(body, "ResultURL")
    timeout_url = _url(body, "QueueTimeOutURL")
    occasion = str(body.get("Occasion") or "")

    now = utcnow()
    sim = _sim_settings(r)
    query_id = str(body.get("OriginatorConversationID") or _request_id())
    conversation_id = _conversation_id(now)
    found = _find_receipt(r, transaction_id, original_id)
    filler = f"{(found or {}).get('receipt', _receipt())[:3]}0000000"
    code: int | str  # B2C_OUTCOMES' are numbers, "not found" is R000001
    if not _initiator_ok(initiator, credential, settings):
        code, desc = B2C_OUTCOMES["initiator"]
        result = _b2c_envelope(code, desc, query_id, conversation_id, filler)
    elif found is None:
        code, desc = NOT_FOUND
        result = _b2c_envelope(code, desc, query_id, conversation_id, filler)
    else:
        result = _b2c_envelope(
            sim["status_result_code"], OK_DESC, query_id, conversation_id, filler
        )
        result["ResultParameters"] = {"ResultParameter": _status_parameters(found)}
    result["ReferenceData"] = {
        "ReferenceItem": [
            {"Key": "Occasion", "Value": occasion},
            {"Key": "QueueTimeoutURL", "Value": timeout_url},
        ]
    }
    _after(r, float(sim["delay"]), "status_result", query_id, result_url, {"Result": result})
    return jsonify(
        OriginatorConversationID=query_id,
        ConversationID=conversation_id,
        ResponseCode="0",
        ResponseDescription="Accept the service request successfully.",
    )


def _status_parameters(found: dict[str, Any]) -> list[dict[str, Any]]:
    """Daraja's own sample, oddities included: DebitPartyName twice (the second holds the
    credit party) and TransactionReason without a Value."""
    return [
        {"Key": "DebitPartyName", "Value": found["debit"]},
        {"Key": "DebitPartyName", "Value": found["credit"]},
        {"Key": "CreditPartyName", "Value": found["credit"]},
        {"Key": "OriginatorConversationID", "Value": found["originator_id"]},
        {"Key": "InitiatedTime", "Value": found["initiated"]},
        {"Key": "DebitAccountType", "Value": "Utility Account"},
        {"Key": "DebitPartyCharges", "Value": "Fee For B2C Payment|KES|22.40"},
        {"Key": "TransactionReason"},
        {"Key": "ReasonType", "Value": found["reason"]},
        {"Key": "TransactionStatus", "Value": "Completed"},
        {"Key": "FinalisedTime", "Value": found["finalised"]},
        {"Key": "Amount", "Value": float(found["amount"])},
        {"Key": "ConversationID", "Value": found["conversation_id"]},
        {"Key": "ReceiptNo", "Value": found["receipt"]},
    ]


# -- controls ---------------------------------------------------------------------------------


@bp.post("/phones/<phone>/outcome")
@bp.post("/outcome")
def set_outcome(phone: str | None = None) -> BaseResponse | tuple[Response, int]:
    """Sticky per-phone outcomes for STK and B2C, and the name M-PESA shows."""
    params = _params()
    try:
        msisdn = normalise_phone(phone or str(params.get("phone", "")))
    except PhoneError as exc:
        return jsonify(error=str(exc)), 400
    r = redis_client()
    prefs = _prefs(r, msisdn)
    for kind, choices in (("stk", STK_CHOICES), ("b2c", B2C_CHOICES)):
        value = str(params.get(kind) or "").strip()
        if not value:
            continue
        if value == "default":
            prefs.pop(kind, None)
        elif value in choices:
            prefs[kind] = value
        else:
            return jsonify(error=f"{kind} must be default or one of {', '.join(choices)}"), 400
    name = " ".join(str(params.get("name") or "").split())[:60]
    if name == "default":
        prefs.pop("name", None)
    elif name:  # an empty form field keeps the name, like the outcomes
        prefs["name"] = name
    _save(r, _key("phone", msisdn), prefs, MONTH)
    r.sadd(K_PHONES, msisdn)
    r.expire(K_PHONES, MONTH)
    if _wants_json():
        return jsonify(phone=msisdn, **prefs)
    return _back()


@bp.post("/settings")
def change_settings() -> BaseResponse | tuple[Response, int]:
    params = _params()
    r = redis_client()
    current = _sim_settings(r)
    if "delay" in params and str(params["delay"]).strip() != "":
        try:
            delay = float(params["delay"])
        except (TypeError, ValueError):
            delay = -1.0
        if not 0 <= delay <= 120:
            return jsonify(error="delay is seconds, 0 to 120"), 400
        current["delay"] = delay
    if "status_result_code" in params:
        code = str(params["status_result_code"])
        if code not in ("0", "00000000"):
            return jsonify(error='status_result_code is 0 or "00000000"'), 400
        current["status_result_code"] = 0 if code == "0" else code
    _save(r, K_SETTINGS, current, MONTH)
    if _wants_json():
        return jsonify(current)
    return _back()


def _state() -> dict[str, Any]:
    r = redis_client()
    prompts = [p for p in (_load(r, _key("stk", i)) for i in _recent(r, K_STK_RECENT)) if p]
    phones = sorted(p.decode() for p in cast(set[bytes], r.smembers(K_PHONES)))  # not decoded
    settings = _settings()
    return {
        "settings": _sim_settings(r),
        "pending": [p for p in prompts if p["status"] == "pending"],
        "prompts": prompts,
        "phones": {phone: _prefs(r, phone) for phone in phones},
        "c2b_urls": _load(r, _key("c2b", "urls", settings.MPESA_SHORTCODE)),
        "c2b": [p for p in (_load(r, _key("c2b", i)) for i in _recent(r, K_C2B_RECENT)) if p],
        "b2c": [p for p in (_load(r, _key("b2c", i)) for i in _recent(r, K_B2C_RECENT)) if p],
        "requests": _recent(r, K_REQUESTS),
        "callbacks": _recent(r, K_CALLBACKS),
    }


@bp.get("/state")
def state() -> Response:
    return jsonify(_state())


def phone_state(phone: str) -> dict[str, Any]:
    """What one simulated phone sees (the console's phone page polls it): its outcomes,
    its STK prompts and Paybill payments, newest first. Reads only the bounded recent
    lists, with one MGET each, so a page polling every few seconds stays cheap."""
    msisdn = normalise_phone(phone)
    r = redis_client()

    def mine(recent: str, kind: str) -> list[dict[str, Any]]:
        keys = [_key(kind, ref) for ref in _recent(r, recent)]
        rows = [json.loads(raw) for raw in (r.mget(keys) if keys else []) if raw is not None]
        return [row for row in rows if row.get("phone") == msisdn]

    return {
        "phone": msisdn,
        "prefs": _prefs(r, msisdn),
        "delay": _sim_settings(r)["delay"],
        "prompts": mine(K_STK_RECENT, "stk"),
        "paybill": mine(K_C2B_RECENT, "c2b"),
    }


_API_ENDPOINTS = {
    f"{bp.name}.{name}"
    for name in (
        "oauth",
        "stk_push",
        "stk_query",
        "register_urls",
        "b2c_payment",
        "transaction_status",
    )
}


@bp.after_request
def _record_request(response: Response) -> Response:
    """Keep what was asked of "Safaricom" and what it answered, for the page and tests."""
    if request.endpoint in _API_ENDPOINTS:
        try:
            answer = json.loads(response.get_data())
        except ValueError:
            answer = None
        _push(
            redis_client(),
            K_REQUESTS,
            {
                "at": _iso(utcnow()),
                "method": request.method,
                "path": request.path,
                "body": request.get_json(silent=True),
                "status": response.status_code,
                "answer": answer,
            },
        )
    return response


@bp.get("/")
def index() -> str:
    return render_template_string(
        _PAGE,
        state=_state(),
        stk_choices=STK_CHOICES,
        b2c_choices=B2C_CHOICES,
        styles=MSISDN_STYLES,
        at_simulator="simulator_at" in current_app.blueprints,
    )


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>M-PESA (Daraja) simulator</title>
<style>
body{font-family:sans-serif;margin:1.5em;max-width:70em}
.box{border:1px solid #ccc;border-radius:6px;padding:.5em 1em;margin:1em 0}
.prompt{border-top:1px solid #eee;padding:.5em 0}
.meta{color:#666;font-size:.85em}
pre{white-space:pre-wrap;font-size:.8em;background:#f7f7f7;padding:.3em;margin:.2em 0}
table{border-collapse:collapse}td,th{border-bottom:1px solid #eee;padding:.2em .5em;text-align:left}
form{display:inline}
</style></head><body>
<h1>M-PESA (Daraja) simulator</h1>
<p class="meta">Callbacks go out {{ state.settings.delay }} s after a request.
{% if at_simulator %}SMS the SACCO sends: <a href="{{ url_for('simulator_at.index') }}">
Africa's Talking simulator</a>.{% endif %}</p>

<div class="box"><h2>M-PESA prompts waiting for the member</h2>
{% for p in state.pending %}<div class="prompt">
<b>{{ p.phone }}</b> ({{ p.name }}): pay KES {{ p.amount }} to {{ p.shortcode }},
account {{ p.reference }} ({{ p.description }})
<div class="meta">{{ p.CheckoutRequestID }} | {{ p.created }}</div>
<form method="post" action="{{ url_for('.complete_stk', checkout_id=p.CheckoutRequestID) }}">
<button name="outcome" value="success">Accept (enter PIN)</button>
<button name="outcome" value="cancelled">Cancel</button>
<button name="outcome" value="wrong_pin">Wrong PIN</button>
<button name="outcome" value="timeout">Ignore (time out)</button>
</form></div>
{% else %}<p class="meta">No prompt is waiting. Set a phone's STK outcome to "manual" to
answer prompts here.</p>{% endfor %}
</div>

<div class="box"><h2>Outcomes per phone</h2>
<form method="post" action="{{ url_for('.set_outcome') }}">
Phone <input name="phone" placeholder="0712345678" required>
name <input name="name" placeholder="John Doe">
STK <select name="stk"><option value="">(keep)</option><option>default</option>
{% for c in stk_choices %}<option>{{ c }}</option>{% endfor %}</select>
B2C <select name="b2c"><option value="">(keep)</option><option>default</option>
{% for c in b2c_choices %}<option>{{ c }}</option>{% endfor %}</select>
<button>Set</button></form>
<table>{% for phone, prefs in state.phones.items() %}
<tr><td>{{ phone }}</td><td>{{ prefs.name or "" }}</td>
<td>STK: {{ prefs.stk or "success" }}</td><td>B2C: {{ prefs.b2c or "success" }}</td></tr>
{% endfor %}</table>
</div>

<div class="box"><h2>Pay the Paybill</h2>
{% if state.c2b_urls %}<p class="meta">Validation {{ state.c2b_urls.ValidationURL }},
confirmation {{ state.c2b_urls.ConfirmationURL }} ({{ state.c2b_urls.ResponseType }})</p>
{% else %}<p class="meta">No URLs registered yet: the server registers them with
/mpesa/c2b/v1/registerurl.</p>{% endif %}
<form method="post" action="{{ url_for('.c2b_pay') }}">
Phone <input name="phone" placeholder="0712345678" required>
amount <input name="amount" size="6" required>
account <input name="account" placeholder="M000123" required>
MSISDN sent <select name="msisdn">{% for s in styles %}<option>{{ s }}</option>{% endfor %}
</select>
<label title="as a shortcode without external validation: an account that matches no
member or loan is confirmed all the same and lands in suspense"><input type="checkbox"
name="skip_validation" value="1"> skip validation</label>
<button>Pay</button></form>
</div>

<div class="box"><h2>Settings</h2>
<form method="post" action="{{ url_for('.change_settings') }}">
Callback delay <input name="delay" size="4" value="{{ state.settings.delay }}"> s
<button>Save</button></form>
</div>

<div class="box"><h2>Callbacks sent (newest first)</h2>
{% for c in state.callbacks %}<div class="prompt">
<b>{{ c.kind }}</b> {{ c.ref }} to {{ c.url }}
<div class="meta">{{ c.at }} | answered
{% if c.status is none %}nothing ({{ c.error }}){% else %}HTTP {{ c.status }}{% endif %}</div>
<pre>{{ c.body | tojson }}</pre>{% if c.answer is not none %}<pre>{{ c.answer | tojson }}</pre>
{% endif %}</div>
{% else %}<p class="meta">None yet.</p>{% endfor %}
</div>

<div class="box"><h2>Recent STK prompts</h2><table>
{% for p in state.prompts %}<tr><td>{{ p.CheckoutRequestID }}</td><td>{{ p.phone }}</td>
<td>KES {{ p.amount }}</td><td>{{ p.reference }}</td><td>{{ p.outcome }}</td>
<td>{{ p.ResultCode if p.ResultCode is defined else "pending" }}</td>
<td>{{ p.MpesaReceiptNumber or "" }}</td></tr>
{% endfor %}</table></div>

<div class="box"><h2>Recent B2C payments</h2><table>
{% for p in state.b2c %}<tr><td>{{ p.OriginatorConversationID }}</td><td>{{ p.phone }}</td>
<td>KES {{ p.amount }}</td><td>{{ p.outcome }}</td><td>{{ p.status }}</td>
<td>{{ p.receipt or "" }}</td></tr>
{% endfor %}</table></div>

<div class="box"><h2>Paybill payments</h2><table>
{% for p in state.c2b %}<tr><td>{{ p.TransID }}</td><td>{{ p.phone }}</td>
<td>KES {{ p.amount }}</td><td>{{ p.account }}</td><td>{{ p.status }}</td></tr>
{% endfor %}</table></div>
</body></html>
"""
