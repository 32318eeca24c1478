"""Africa's Talking SMS through the `africastalking` SDK (contracts/africastalking.md).

We construct the service object ourselves (the SDK's module globals are None until
`initialize`) and point it at AT_API_BASE_URL when that is set, so the simulator,
a sandbox or a test server can stand in.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import requests
from africastalking.Service import AfricasTalkingException
from africastalking.SMS import SMSService
from flask import current_app

log = logging.getLogger(__name__)

TIMEOUT = (3.05, 10)
ACCEPTED = {100, 101, 102}  # Processed, Sent, Queued
RETRY_LATER = {402, 405, 500, 501, 502}  # sender id, balance, provider errors
FINAL = {401, 403, 404, 406, 407}  # risk hold, bad number, unsupported, blacklisted, no route


@dataclass(frozen=True)
class SendOutcome:
    """What became of one message: accepted, worth another try later, or failed for good."""

    outcome: str  # accepted | retry | failed
    status_code: int | None = None
    status: str | None = None
    message_id: str | None = None
    cost: str | None = None
    cost_amount: Decimal | None = None
    error: str | None = None


def _cost_amount(cost: str | None) -> Decimal | None:
    # "KES 0.8000" -> 0.8000
    try:
        return Decimal((cost or "").split()[-1]) if cost else None
    except (InvalidOperation, IndexError):
        return None


class SmsGateway:
    def __init__(
        self, *, username: str, api_key: str, sender_id: str | None, base_url: str | None
    ) -> None:
        self._service = SMSService(username, api_key)
        if base_url:
            # The SDK has no base-URL option; its request helper builds on this attribute.
            self._service._baseUrl = f"{base_url.rstrip('/')}/version1"
        self._sender_id = sender_id or None

    def send(self, *, phone: str, message: str) -> SendOutcome:
        """Send to one number (E.164 with +). Never raises for provider or network trouble."""
        try:
            reply = self._service.send(message, [phone], sender_id=self._sender_id, timeout=TIMEOUT)
        except requests.exceptions.JSONDecodeError:
            # Said application/json but was not: as unreadable as a non-JSON reply.
            return SendOutcome("retry", error="unreadable reply: invalid JSON")
        except requests.RequestException as exc:  # refused, timed out, cut off mid-reply
            return SendOutcome("retry", error=f"network: {type(exc).__name__}")
        except AfricasTalkingException as exc:
            # Non-2xx from the gateway: the body says why; worth trying again later.
            return SendOutcome("retry", error=f"gateway: {str(exc)[:200]}")
        except ValueError as exc:  # the SDK refuses a malformed number before sending
            return SendOutcome("failed", status_code=403, error=str(exc)[:200])
        return parse_send_reply(reply)


def parse_send_reply(reply: Any) -> SendOutcome:
    """Read the SDK's answer (a dict when JSON, the raw text otherwise; its shape is checked
    here, so it is typed as the untyped JSON it is)."""
    if isinstance(reply, str):
        try:
            reply = json.loads(reply)
        except ValueError:
            return SendOutcome("retry", error=f"unreadable reply: {reply[:200]}")
    try:
        recipients = reply["SMSMessageData"]["Recipients"]
    except (KeyError, TypeError):
        return SendOutcome("retry", error=f"unexpected reply: {str(reply)[:200]}")
    if not recipients:
        # No recipient row: the gateway refused the whole request (e.g. bad sender id).
        message = str(reply.get("SMSMessageData", {}).get("Message", ""))
        return SendOutcome("retry", error=f"no recipients: {message[:200]}")
    first = recipients[0]
    try:
        code = int(first.get("statusCode"))
    except (TypeError, ValueError):
        code = None
    outcome = SendOutcome(
        "accepted" if code in ACCEPTED else "retry" if code in RETRY_LATER else "failed",
        status_code=code,
        status=first.get("status"),
        message_id=first.get("messageId") or None,
        cost=first.get("cost"),
        cost_amount=_cost_amount(first.get("cost")),
    )
    if code is not None and code not in ACCEPTED | RETRY_LATER | FINAL:
        log.warning("unknown SMS status code %s treated as failed", code)
    return outcome


def sms_gateway() -> SmsGateway:
    settings = current_app.config["SETTINGS"]
    return SmsGateway(
        username=settings.AT_USERNAME,
        # The simulator checks only that a key is present.
        api_key=settings.AT_API_KEY or "simulator",
        sender_id=settings.AT_SENDER_ID,
        base_url=settings.at_base_url,
    )
