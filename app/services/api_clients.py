"""API clients and their tokens (issue 22): an admin registers a client with scopes, the
client trades its id and secret for a short signed token (OAuth2 client credentials),
and every API call checks that token, its scopes, the client's standing and address.

Secrets are random (256 bits) and stored as a SHA-256 hash: a fast hash is right for a
secret nobody chose (a password needs a slow one); the secret is shown once. Tokens are
JWTs signed with a key derived from SECRET_KEY, valid API_TOKEN_MINUTES; a revoked token
(by its jti) or a revoked client stops working at once, whatever the expiry says.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from flask import current_app
from sqlalchemy import delete, select

from app.errors import SaccoError
from app.extensions import db
from app.models import ApiClient, ApiTokenRevocation
from app.models.types import utcnow
from app.services.audit import audit_record
from app.services.permissions import permission_require

# What a client may be allowed: resource:read|write (webhooks: manage its subscriptions).
SCOPES: dict[str, str] = {
    "members:read": "look members up and read their status",
    "members:write": "register members",
    "accounts:read": "read account balances, holds and statements",
    "loans:read": "read loan products, eligibility and loans",
    "loans:write": "apply for loans",
    "payments:read": "read payments and M-PESA prompt status",
    "payments:write": "send M-PESA prompts to members' phones",
    "promises:write": "record promises to pay",
    "guarantees:read": "read guarantee requests",
    "guarantees:write": "answer guarantee requests",
    "webhooks:manage": "subscribe to events",
}

ISSUER = "sacco"
AUDIENCE = "sacco-api"


class ApiAuthError(SaccoError):
    """A token or client that may not call: `code` is the problem's stable code."""

    def __init__(self, message: str, code: str = "invalid_token", status: int = 401) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class ApiClientError(SaccoError):
    """A client registration or change that must not happen; nothing was written."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _signing_key() -> str:
    # Derived, so a token can never pass as anything else signed with SECRET_KEY.
    return hmac.new(
        current_app.config["SECRET_KEY"].encode(), b"sacco-api-token", hashlib.sha256
    ).hexdigest()


def _actor(staff: Any) -> str:
    email = getattr(staff, "email", None)
    return f"staff:{email}" if email else str(staff)


def _checked_scopes(scopes: list[str]) -> list[str]:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ApiClientError(f"unknown scope {unknown[0]!r}")
    if not scopes:
        raise ApiClientError("choose at least one scope")
    return sorted(set(scopes))


def _checked_ips(values: list[str]) -> list[str]:
    checked = []
    for value in values:
        value = value.strip()
        if not value:
            continue
        try:
            checked.append(str(ipaddress.ip_network(value, strict=False)))
        except ValueError:
            raise ApiClientError(f"{value!r} is not an address or network") from None
    return checked


@dataclass(frozen=True)
class Registered:
    client: ApiClient
    secret: str  # shown once; only its hash is kept


def api_client_register(
    *, name: str, scopes: list[str], staff: Any, allowed_ips: list[str] | None = None
) -> Registered:
    """Register a client (admin): its id and secret, the secret shown this once. Commits."""
    permission_require(staff, "api.manage")
    name = (name or "").strip()
    if not name:
        raise ApiClientError("the client needs a name")
    client = ApiClient(
        client_id=f"sacco_{secrets.token_hex(8)}",
        name=name[:120],
        secret_hash="",
        scopes=_checked_scopes(scopes),
        allowed_ips=_checked_ips(allowed_ips or []),
        active=True,
        created_by=_actor(staff),
    )
    secret = secrets.token_urlsafe(32)
    client.secret_hash = _hash(secret)
    db.session.add(client)
    db.session.flush()
    audit_record(
        actor=_actor(staff),
        action="api_client.register",
        object_type="api_client",
        object_id=client.client_id,
        after={"name": client.name, "scopes": client.scopes, "allowed_ips": client.allowed_ips},
    )
    db.session.commit()
    return Registered(client, secret)


def api_client_revoke(*, client_id: str, staff: Any) -> ApiClient:
    """Revoke a client: its tokens stop working at once. Commits."""
    permission_require(staff, "api.manage")
    client = db.session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
    if client is None:
        raise ApiClientError(f"no API client {client_id}")
    if not client.active:
        raise ApiClientError(f"{client.name} is revoked already")
    client.active = False
    client.revoked_at = utcnow()
    audit_record(
        actor=_actor(staff),
        action="api_client.revoke",
        object_type="api_client",
        object_id=client.client_id,
        before={"active": True},
        after={"active": False},
    )
    db.session.commit()
    return client


def api_client_authenticate(client_id: str, secret: str) -> ApiClient:
    """The client these credentials name, or ApiAuthError("invalid_client")."""
    client = db.session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
    # Compared even when no client matched, so timing does not tell which ids exist.
    expected = client.secret_hash if client is not None else _hash(secrets.token_hex(8))
    if not hmac.compare_digest(expected, _hash(secret or "")) or client is None:
        raise ApiAuthError("unknown client or wrong secret", "invalid_client")
    if not client.active:
        raise ApiAuthError("this client is revoked", "invalid_client")
    return client


@dataclass(frozen=True)
class Token:
    access_token: str
    expires_in: int
    scope: str


def api_token_issue(client: ApiClient, scope: str | None = None) -> Token:
    """A signed token for `client`, with the scopes asked (a subset of its own) or all."""
    asked = (scope or "").split()
    granted = list(client.scopes) if not asked else asked
    if any(s not in client.scopes for s in granted):
        raise ApiAuthError("a scope asked for is not this client's", "invalid_scope", 400)
    minutes = int(current_app.config["SETTINGS"].API_TOKEN_MINUTES)
    now = datetime.now(UTC)
    scope_text = " ".join(sorted(granted))
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": client.client_id,
        "scope": scope_text,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + timedelta(minutes=minutes),
    }
    token = jwt.encode(claims, _signing_key(), algorithm="HS256")
    return Token(token, minutes * 60, scope_text)


@dataclass(frozen=True)
class Caller:
    client: ApiClient
    scopes: frozenset[str]
    jti: str
    expires_at: datetime


def _claims(token: str) -> dict[str, Any]:
    """The token's claims, once its signature, audience, issuer and expiry check out."""
    return jwt.decode(
        token,
        _signing_key(),
        algorithms=["HS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"require": ["exp", "iat", "sub", "jti"]},
    )


def api_token_verify(token: str, remote_addr: str | None) -> Caller:
    """Who is calling with this bearer token (ApiAuthError when it may not call)."""
    try:
        claims = _claims(token)
    except jwt.ExpiredSignatureError:
        raise ApiAuthError("the token has expired: ask for a new one") from None
    except jwt.PyJWTError:
        raise ApiAuthError("the token is not valid") from None
    client = db.session.scalar(select(ApiClient).where(ApiClient.client_id == claims["sub"]))
    if client is None or not client.active:
        raise ApiAuthError("this client is revoked")
    revoked = db.session.scalar(
        select(ApiTokenRevocation.id).where(ApiTokenRevocation.jti == claims["jti"])
    )
    if revoked is not None:
        raise ApiAuthError("the token was revoked")
    if client.allowed_ips and not _address_allowed(remote_addr, client.allowed_ips):
        raise ApiAuthError("calls from this address are not allowed", "address_not_allowed", 403)
    return Caller(
        client,
        frozenset(str(claims.get("scope", "")).split()),
        claims["jti"],
        datetime.fromtimestamp(claims["exp"], UTC),
    )


def _address_allowed(remote_addr: str | None, networks: list[str]) -> bool:
    if not remote_addr:
        return False
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)


def api_token_revoke(token: str) -> None:
    """Revoke one token (RFC 7009): unknown or expired tokens are not an error. Commits."""
    try:
        claims = _claims(token)
    except jwt.PyJWTError:
        return
    client = db.session.scalar(select(ApiClient).where(ApiClient.client_id == claims["sub"]))
    if client is None:
        return
    db.session.execute(delete(ApiTokenRevocation).where(ApiTokenRevocation.expires_at < utcnow()))
    exists = db.session.scalar(
        select(ApiTokenRevocation.id).where(ApiTokenRevocation.jti == claims["jti"])
    )
    if exists is None:
        db.session.add(
            ApiTokenRevocation(
                jti=claims["jti"],
                client_id=client.id,
                expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            )
        )
    db.session.commit()
