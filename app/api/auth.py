"""Client credentials in, bearer token out (RFC 6749 s4.4), and the check every resource
makes: a valid token with the scope the route needs. Only a bearer token opens the API
(a console session cookie is never read here), and a token never opens the console
(Flask-Login reads only its session)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, g, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from app.api import PREFIX, problem
from app.api.limits import rate_limited
from app.extensions import db
from app.services.api_clients import (
    ApiAuthError,
    api_client_authenticate,
    api_token_issue,
    api_token_revoke,
    api_token_verify,
)
from app.services.audit import audit_record

blp = Blueprint(
    "oauth",
    __name__,
    url_prefix=f"{PREFIX}/oauth",
    description="Tokens for API clients (OAuth2 client credentials).",
)

F = TypeVar("F", bound=Callable[..., Any])


class TokenRequest(Schema):
    grant_type = fields.String(required=True, metadata={"example": "client_credentials"})
    scope = fields.String(metadata={"description": "space-separated; default all of yours"})
    client_id = fields.String(metadata={"description": "or HTTP Basic authentication"})
    client_secret = fields.String()


class TokenResponse(Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"example": "Bearer"})
    expires_in = fields.Integer(required=True)
    scope = fields.String(required=True)


class RevokeRequest(Schema):
    token = fields.String(required=True)


def _oauth_error(error: str, description: str, status: int = 400) -> Response:
    # RFC 6749 s5.2: the token endpoint answers in OAuth's own error format.
    response = jsonify({"error": error, "error_description": description})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="sacco-api"'
    response.headers["Cache-Control"] = "no-store"
    return response


@blp.route("/token")
class TokenView(MethodView):
    @blp.arguments(TokenRequest, location="form")
    @blp.response(200, TokenResponse)
    @blp.alt_response(400, description="OAuth error (RFC 6749 s5.2)")
    @blp.alt_response(401, description="unknown client or wrong secret")
    def post(self, form: dict[str, Any]) -> Any:
        """A token for your client: grant_type=client_credentials, with HTTP Basic
        authentication (client id and secret) or both in the form. Not idempotency-keyed:
        each call gives a new token."""
        if form.get("grant_type") != "client_credentials":
            return _oauth_error("unsupported_grant_type", "only client_credentials is offered")
        basic = request.authorization
        if basic is not None and basic.type == "basic":
            client_id, secret = basic.username or "", basic.password or ""
        else:
            client_id, secret = form.get("client_id") or "", form.get("client_secret") or ""
        try:
            client = api_client_authenticate(client_id, secret)
            token = api_token_issue(client, form.get("scope"))
        except ApiAuthError as exc:
            db.session.rollback()
            return _oauth_error(exc.code, str(exc), 401 if exc.code == "invalid_client" else 400)
        audit_record(
            actor=f"api:{client.client_id}",
            action="api.token",
            object_type="api_client",
            object_id=client.client_id,
            after={"scope": token.scope},
        )
        db.session.commit()
        response = jsonify(
            access_token=token.access_token,
            token_type="Bearer",  # noqa: S106 - the OAuth token type, not a secret
            expires_in=token.expires_in,
            scope=token.scope,
        )
        response.headers["Cache-Control"] = "no-store"
        return response


@blp.route("/revoke")
class RevokeView(MethodView):
    @blp.arguments(RevokeRequest, location="form")
    @blp.response(200)
    def post(self, form: dict[str, Any]) -> Any:
        """Revoke a token (RFC 7009): it stops working at once. Unknown tokens are not an
        error."""
        api_token_revoke(form["token"])
        return {}


def require_scope(scope: str) -> Callable[[F], F]:
    """The route needs a bearer token carrying `scope`: 401 without a valid token, 403
    without the scope; the caller is `g.api_caller`, and the call is audited."""

    def decorate(view: F) -> F:
        # Limited per client and route, once the token says who the client is.
        limited = rate_limited(view)

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            header = request.headers.get("Authorization", "")
            kind, _, token = header.partition(" ")
            if kind.lower() != "bearer" or not token.strip():
                return problem(
                    401,
                    "unauthorized",
                    "send a bearer token: Authorization: Bearer <token>",
                    headers={"WWW-Authenticate": 'Bearer realm="sacco-api"'},
                )
            try:
                caller = api_token_verify(token.strip(), request.remote_addr)
            except ApiAuthError as exc:
                db.session.rollback()
                return problem(
                    exc.status,
                    exc.code,
                    str(exc),
                    headers={"WWW-Authenticate": f'Bearer error="{exc.code}"'},
                )
            if scope not in caller.scopes:
                db.session.rollback()
                return problem(
                    403,
                    "insufficient_scope",
                    f"this token does not carry the {scope} scope",
                    headers={
                        "WWW-Authenticate": f'Bearer error="insufficient_scope" scope="{scope}"'
                    },
                )
            g.api_caller = caller
            return limited(*args, **kwargs)

        wrapper._api_scope = scope  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def audit_api_call(response: Response) -> Response:
    """After every API call a token made: one audit row with the client and the outcome."""
    caller = g.get("api_caller")
    if caller is None or not request.path.startswith(PREFIX):
        return response
    db.session.rollback()  # whatever the view left open; its own work is committed
    audit_record(
        actor=f"api:{caller.client.client_id}",
        action="api.call",
        object_type="api",
        # Printable only: a NUL in a path is a call to audit, not a reason to fail it.
        object_id="".join(
            c if c.isprintable() else "?" for c in f"{request.method} {request.path}"
        )[:255],
        after={"status": response.status_code},
    )
    db.session.commit()
    return response
