"""Who may call the provider routes: one allowlist check for Safaricom's callbacks and
Africa's Talking's, and the optional secret Africa's Talking carries in its URLs.

The address checked is `request.remote_addr`: the socket's peer, or, with
TRUSTED_PROXIES set, the hop our own proxies saw (ProxyFix in app/__init__.py), so a
caller cannot forge its way in with an X-Forwarded-For of its own.

Africa's Talking signs nothing, but the callback URLs set on its dashboard may carry a
query string: with AT_CALLBACK_TOKEN set, every AT route (`/ussd`, `/ussd/events`,
`/sms/*`) wants `?token=<AT_CALLBACK_TOKEN>` and refuses anything else with 403.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from flask import Response, current_app, request

from app.metrics import PROVIDER_REFUSED

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
TOKEN_ARG = "token"  # noqa: S105 - the query parameter's name, not a secret


@lru_cache(maxsize=16)
def _networks(allowlist: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    # Entries were checked at start-up (app/config.py); parse each list once per process.
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in allowlist)


def source_allowed(address: str | None, allowlist: Iterable[str]) -> bool:
    """True when `allowlist` is empty (no restriction) or holds `address`."""
    entries = tuple(allowlist)
    if not entries:
        return True
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in network for network in _networks(entries))


def provider_refused(provider: str, reason: str) -> None:
    """Count a refusal by route, never by address or token: labels stay few."""
    route = request.url_rule.rule if request.url_rule else "unmatched"
    PROVIDER_REFUSED.labels(provider, route, reason).inc()
    log.warning("%s route %s refused: %s (source %s)", provider, route, reason, request.remote_addr)


def at_token_args() -> dict[str, Any]:
    """What our own stand-ins add to a URL of an AT route (url_for(..., **at_token_args()))
    so that they pass the same check as the provider."""
    token = current_app.config["SETTINGS"].AT_CALLBACK_TOKEN
    return {TOKEN_ARG: token} if token else {}


def at_guard() -> Response | None:
    """before_request of the Africa's Talking blueprints: 403 unless the source is on
    AT_ALLOWED_IPS and the URL carries AT_CALLBACK_TOKEN (each when set). A refused
    request is answered before the handler runs, so it changes nothing."""
    settings = current_app.config["SETTINGS"]
    if not source_allowed(request.remote_addr, settings.at_allowlist):
        provider_refused("africastalking", "address")
        return Response("forbidden", status=403, mimetype="text/plain")
    expected = settings.AT_CALLBACK_TOKEN
    if expected:
        given = request.args.get(TOKEN_ARG, "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            provider_refused("africastalking", "token")
            return Response("forbidden", status=403, mimetype="text/plain")
    return None
