"""Safaricom Daraja (M-PESA) over `requests` (contracts/daraja.md).

Every path is appended to MPESA_BASE_URL, so the sandbox, the local simulator or a test
server can stand in. The OAuth token is cached in Redis for less than its life, with one
refresher at a time. Errors come back typed by Daraja's error code; a request that got no
answer raises `DarajaNoAnswer`, whose outcome is unknown: a money-moving request is then
settled by a query, never sent again blindly.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

import redis
import requests
from flask import current_app

from app.config import FORBIDDEN_CALLBACK_WORDS, Settings
from app.money import MoneyError, is_whole_shillings, money_input
from app.phone import PhoneError, normalise_phone

TIMEOUT = (3.05, 15)  # connect, read
TOKEN_KEY = "sacco:daraja:token"  # noqa: S105 - a Redis key, not a secret
TOKEN_LOCK = "sacco:daraja:token:refreshing"  # noqa: S105 - a Redis key
TOKEN_MARGIN_SECONDS = 60  # refresh this long before Safaricom's expiry
INVALID_TOKEN_CODES = {"404.001.03", "400.003.01"}


class DarajaError(Exception):
    """Daraja refused or could not take a request. `code` is Daraja's errorCode."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class DarajaInvalidRequest(DarajaError):
    """Our request is wrong (400.002.02 names the field, or our own checks refused it)."""


class DarajaAuthError(DarajaError):
    """Credentials or token refused (404.001.03, 404.001.04, 400.003.01, wrong credentials)."""


class DarajaStillProcessing(DarajaError):
    """STK query: the member is still on the prompt (500.001.1001, 'being processed')."""


class DarajaBusy(DarajaError):
    """Rate limit, quota or Safaricom's own error: try later (500.003.02/03, 500.002.1001)."""


class DarajaNoAnswer(DarajaError):
    """No answer (timeout, connection lost): the request may or may not have been taken."""


def daraja_timestamp(now: datetime, tz: ZoneInfo) -> str:
    """YYYYMMDDHHmmss in Kenyan time, whatever the server's zone."""
    if now.tzinfo is None:
        raise ValueError("naive datetime")
    return now.astimezone(tz).strftime("%Y%m%d%H%M%S")


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode()


def daraja_phone(raw: str) -> str:
    try:
        return normalise_phone(raw)
    except PhoneError as exc:
        raise DarajaInvalidRequest(str(exc)) from None


def daraja_amount(value: object) -> str:
    """M-PESA moves whole shillings only; Daraja wants the amount as a string."""
    try:
        amount = money_input(value)
    except MoneyError as exc:
        raise DarajaInvalidRequest(str(exc)) from None
    if not is_whole_shillings(amount):
        raise DarajaInvalidRequest(f"M-PESA moves whole shillings only, not {amount}")
    return str(int(amount))


def _error_from(body: dict[str, Any], status: int) -> DarajaError:
    code = str(body.get("errorCode") or "")
    message = str(body.get("errorMessage") or f"HTTP {status}")
    # 400.008.01/02: the OAuth call refused our key and secret (or grant type).
    if code in INVALID_TOKEN_CODES or code in ("404.001.04", "400.008.01", "400.008.02"):
        return DarajaAuthError(message, code)
    if code == "500.001.1001":
        # One code, three meanings: decide on the message (contracts: "Seen in the field").
        lowered = message.lower()
        if "being processed" in lowered:
            return DarajaStillProcessing(message, code)
        if "credential" in lowered:
            return DarajaAuthError(message, code)
        return DarajaBusy(message, code)
    if code.startswith("400."):
        return DarajaInvalidRequest(message, code)
    if code in ("500.003.02", "500.003.03", "500.002.1001") or status >= 500:
        return DarajaBusy(message, code or None)
    return DarajaError(message, code or None)


@dataclass(frozen=True)
class DarajaConfig:
    base_url: str
    consumer_key: str
    consumer_secret: str
    shortcode: str
    passkey: str
    tz: ZoneInfo
    b2c_shortcode: str = ""
    initiator_name: str = ""
    security_credential: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> DarajaConfig:
        cred = settings.mpesa_credential
        return cls(
            base_url=settings.mpesa_base_url,
            consumer_key=cred("consumer_key"),
            consumer_secret=cred("consumer_secret"),
            shortcode=settings.MPESA_SHORTCODE,
            passkey=cred("passkey"),
            tz=settings.tz,
            b2c_shortcode=settings.MPESA_B2C_SHORTCODE,
            initiator_name=cred("initiator_name"),
            security_credential=cred("security_credential"),
        )


class DarajaClient:
    def __init__(
        self, config: DarajaConfig, cache: redis.Redis, session: requests.Session | None = None
    ) -> None:
        self.config = config
        self.cache = cache
        self.http = session or requests.Session()

    # -- OAuth ---------------------------------------------------------------------------

    def token(self, *, fresh: bool = False) -> str:
        """The cached access token; one process fetches a new one while others wait."""
        if not fresh:
            cached = self.cache.get(TOKEN_KEY)
            if cached:
                # The client does not decode replies; redis-py types them as bytes or str.
                return cast(bytes, cached).decode()
        deadline = time.monotonic() + 10
        while not self.cache.set(TOKEN_LOCK, "1", nx=True, ex=15):
            time.sleep(0.1)
            cached = self.cache.get(TOKEN_KEY)
            if cached and not fresh:
                return cast(bytes, cached).decode()
            if time.monotonic() > deadline:
                raise DarajaBusy("another process is fetching the M-PESA token")
        try:
            # Whoever held the lock before us may have just cached a token.
            cached = None if fresh else self.cache.get(TOKEN_KEY)
            return cast(bytes, cached).decode() if cached else self._fetch_token()
        finally:
            self.cache.delete(TOKEN_LOCK)

    def _fetch_token(self) -> str:
        try:
            response = self.http.get(
                f"{self.config.base_url}/oauth/v1/generate",
                params={"grant_type": "client_credentials"},
                auth=(self.config.consumer_key, self.config.consumer_secret),
                timeout=TIMEOUT,
            )
        except requests.RequestException as exc:
            raise DarajaNoAnswer(f"token: {type(exc).__name__}") from None
        body = _json(response)
        if response.status_code != 200 or "access_token" not in body:
            raise _error_from(body, response.status_code)
        try:
            life = int(str(body.get("expires_in", "3599")))
        except ValueError:
            life = 3599
        token = str(body["access_token"])
        self.cache.set(TOKEN_KEY, token, ex=max(life - TOKEN_MARGIN_SECONDS, 1))
        return token

    # -- requests --------------------------------------------------------------------------

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with the bearer token; an invalid token is refreshed once and retried
        (safe: Daraja refused the request before processing it)."""
        for attempt in (1, 2):
            token = self.token(fresh=attempt == 2)
            try:
                response = self.http.post(
                    f"{self.config.base_url}{path}",
                    json=payload,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=TIMEOUT,
                )
            except requests.RequestException as exc:
                raise DarajaNoAnswer(f"{path}: {type(exc).__name__}") from None
            body = _json(response)
            if response.status_code == 200 and "errorCode" not in body:
                return body
            error = _error_from(body, response.status_code)
            if attempt == 1 and error.code in INVALID_TOKEN_CODES:
                continue
            raise error
        raise AssertionError("unreachable")

    def stk_push(
        self,
        *,
        phone: str,
        amount: object,
        account_reference: str,
        description: str,
        callback_url: str,
        now: datetime,
    ) -> dict[str, Any]:
        """Ask the member's phone for their PIN; returns Daraja's synchronous reply."""
        if not 1 <= len(account_reference) <= 12:
            raise DarajaInvalidRequest("AccountReference must be 1 to 12 characters")
        if not 1 <= len(description) <= 13:
            raise DarajaInvalidRequest("TransactionDesc must be 1 to 13 characters")
        _check_callback_url(callback_url)
        msisdn = daraja_phone(phone)
        timestamp = daraja_timestamp(now, self.config.tz)
        reply = self.post(
            "/mpesa/stkpush/v1/processrequest",
            {
                "BusinessShortCode": self.config.shortcode,
                "Password": stk_password(self.config.shortcode, self.config.passkey, timestamp),
                "Timestamp": timestamp,
                "TransactionType": "CustomerPayBillOnline",
                "Amount": daraja_amount(amount),
                "PartyA": msisdn,
                "PartyB": self.config.shortcode,
                "PhoneNumber": msisdn,
                "CallBackURL": callback_url,
                "AccountReference": account_reference,
                "TransactionDesc": description,
            },
        )
        if str(reply.get("ResponseCode")) != "0" or not reply.get("CheckoutRequestID"):
            raise DarajaError(str(reply.get("ResponseDescription") or "STK push refused"))
        return reply

    def stk_query(self, *, checkout_request_id: str, now: datetime) -> dict[str, Any]:
        """The final state of a push; DarajaStillProcessing while the member is deciding."""
        timestamp = daraja_timestamp(now, self.config.tz)
        return self.post(
            "/mpesa/stkpushquery/v1/query",
            {
                "BusinessShortCode": self.config.shortcode,
                "Password": stk_password(self.config.shortcode, self.config.passkey, timestamp),
                "Timestamp": timestamp,
                "CheckoutRequestID": checkout_request_id,
            },
        )

    def register_urls(self, *, confirmation_url: str, validation_url: str) -> dict[str, Any]:
        """Tell Safaricom where Paybill payments are validated and confirmed."""
        for url in (confirmation_url, validation_url):
            _check_callback_url(url)
        return self.post(
            "/mpesa/c2b/v1/registerurl",
            {
                "ShortCode": self.config.shortcode,
                "ResponseType": "Completed",
                "ConfirmationURL": confirmation_url,
                "ValidationURL": validation_url,
            },
        )

    def b2c_payment(
        self,
        *,
        originator_conversation_id: str,
        phone: str,
        amount: object,
        remarks: str,
        result_url: str,
        timeout_url: str,
    ) -> dict[str, Any]:
        """Send money to a member. `originator_conversation_id` is ours, stored before this
        call and reused on any retry, so Safaricom refuses a duplicate (result code 15)."""
        for url in (result_url, timeout_url):
            _check_callback_url(url)
        return self.post(
            "/mpesa/b2c/v3/paymentrequest",
            {
                "OriginatorConversationID": originator_conversation_id,
                "InitiatorName": self.config.initiator_name,
                "SecurityCredential": self.config.security_credential,
                "CommandID": "BusinessPayment",
                "Amount": daraja_amount(amount),
                "PartyA": self.config.b2c_shortcode,
                "PartyB": daraja_phone(phone),
                "Remarks": remarks[:100] or "Loan",
                "QueueTimeOutURL": timeout_url,
                "ResultURL": result_url,
                "Occassion": "Loan",  # sic: Daraja's spelling
            },
        )

    def transaction_status(
        self,
        *,
        transaction_id: str | None = None,
        originator_conversation_id: str | None = None,
        result_url: str,
        timeout_url: str,
    ) -> dict[str, Any]:
        """Ask what became of a payment (the answer comes to `result_url` later)."""
        if not (transaction_id or originator_conversation_id):
            raise DarajaInvalidRequest("a TransactionID or OriginalConversationID is needed")
        for url in (result_url, timeout_url):
            _check_callback_url(url)
        payload: dict[str, Any] = {
            "Initiator": self.config.initiator_name,
            "SecurityCredential": self.config.security_credential,
            "CommandID": "TransactionStatusQuery",
            "PartyA": self.config.b2c_shortcode or self.config.shortcode,
            "IdentifierType": "4",
            "ResultURL": result_url,
            "QueueTimeOutURL": timeout_url,
            "Remarks": "Reconciliation",
            "Occasion": "Reconciliation",
        }
        if transaction_id:
            payload["TransactionID"] = transaction_id
        else:
            payload["OriginalConversationID"] = originator_conversation_id
        return self.post("/mpesa/transactionstatus/v1/query", payload)


def _check_callback_url(url: str) -> None:
    if url != url.strip() or " " in url:
        raise DarajaInvalidRequest(f"callback URL has spaces: {url!r}")
    lowered = url.lower()
    banned = [w for w in FORBIDDEN_CALLBACK_WORDS if w in lowered]
    if banned:
        raise DarajaInvalidRequest(f"Safaricom refuses callback URLs containing {banned[0]!r}")


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def daraja_client() -> DarajaClient:
    """The client for this app's settings (the local stand-in when M-PESA is simulated)."""
    from app.extensions import redis_client

    return DarajaClient(DarajaConfig.from_settings(current_app.config["SETTINGS"]), redis_client())
