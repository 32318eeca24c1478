"""The integration API at /api/v1: REST over the same services the console and USSD use.

OpenAPI 3 is generated from the code (flask-smorest over the marshmallow schemas) at
/api/v1/openapi.json; Swagger UI at /api/v1/docs loads its files from the
swagger-ui-bundle package, so the page works with no request leaving the server.
Errors are problem documents (RFC 9457): application/problem+json with a stable `code`.
"""

from __future__ import annotations

import json
from typing import Any

from apispec import BasePlugin
from flask import Flask, Response, request, send_from_directory
from flask_smorest import Api as SmorestApi
from werkzeug.exceptions import HTTPException

from app.api.common import ProblemSchema

PREFIX = "/api/v1"
PROBLEM = "application/problem+json"
DOCS_ASSETS = f"{PREFIX}/docs/assets/"

# A stable code per HTTP status, for errors raised without their own.
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    500: "server_error",
}


def problem(
    status: int, code: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    """One error as the API answers every error: a problem document with a stable code."""
    body = {
        "type": f"https://sacco.example/problems/{code}",
        "title": _title(status),
        "status": status,
        "code": code,
        "detail": detail,
        **extra,
    }
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _title(status: int) -> str:
    from werkzeug.http import HTTP_STATUS_CODES

    return HTTP_STATUS_CODES.get(status, "Error")


def _as_problem(response: dict[str, Any]) -> dict[str, Any]:
    content = response.get("content") or {}
    if "application/json" in content:
        content = {PROBLEM if k == "application/json" else k: v for k, v in content.items()}
        response = {**response, "content": content}
    return response


class ProblemContent(BasePlugin):
    """The document says what the wire carries: every error (4xx, 5xx, default) is
    application/problem+json, so a client (and schemathesis) reads it as such."""

    def response_helper(self, response: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # flask-smorest's status components (UNPROCESSABLE_ENTITY, DEFAULT_ERROR...)
        return _as_problem(response)

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        for operation in (operations or {}).values():
            responses = operation.get("responses") or {}
            for status, response in list(responses.items()):
                if isinstance(response, dict) and str(status)[0] in "45d":
                    responses[status] = _as_problem(response)


class Api(SmorestApi):
    """flask-smorest's Api, whose errors on /api/ paths are problem documents; the rest of
    the app (console, USSD, callbacks) keeps its own error pages."""

    # flask-smorest's documented hook: the error components document our problems.
    ERROR_SCHEMA = ProblemSchema

    def handle_http_exception(self, error: HTTPException) -> Any:
        if not request.path.startswith(PREFIX):
            return error  # what Flask does with no handler: the console's pages stay
        status = error.code or 500
        data = getattr(error, "data", None) or {}
        code = data.get("code") or _CODES.get(status, "error")
        detail = data.get("message") or error.description or _title(status)
        extra: dict[str, Any] = {}
        # webargs (a body or query that fails its schema) names the fields in "messages".
        errors = data.get("errors") or data.get("messages")
        if errors:
            extra["errors"] = errors
        headers = dict(data.get("headers") or {})
        if error.response is not None:  # e.g. Flask-Limiter's 429 carries its headers
            headers.update(
                {k: v for k, v in error.response.headers.items() if k.lower() != "content-type"}
            )
        return problem(status, code, str(detail), headers=headers, **extra)


def init_api(app: Flask) -> None:
    """Mount /api/v1 on `app`: the OpenAPI document, the docs page and every resource."""
    app.config.setdefault("API_TITLE", "SACCO integration API")
    app.config.setdefault("API_VERSION", "v1")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", PREFIX)
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    app.config.setdefault("OPENAPI_SWAGGER_UI_PATH", "/docs")
    app.config.setdefault("OPENAPI_SWAGGER_UI_URL", DOCS_ASSETS)
    api = Api(
        app,
        spec_kwargs={
            "info": {
                "description": (
                    "Members, accounts, loans and M-PESA payments of the SACCO, for the "
                    "systems it works with. Get a token with your client id and secret "
                    "(POST /api/v1/oauth/token, client credentials), then send it as "
                    "`Authorization: Bearer <token>`. Every POST takes an Idempotency-Key."
                )
            },
            "extra_plugins": [ProblemContent()],
        },
    )
    api.spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    app.extensions["sacco_api"] = api

    from swagger_ui_bundle import swagger_ui_path

    @app.get(f"{DOCS_ASSETS}<path:filename>", endpoint="api_docs_assets")
    def docs_assets(filename: str) -> Response:
        return send_from_directory(swagger_ui_path, filename, max_age=3600)

    from app.api.auth import blp as auth_blp
    from app.api.limits import init_limits

    init_limits(app)
    api.register_blueprint(auth_blp)
    from app.api import resources

    for blp in resources.BLUEPRINTS:
        api.register_blueprint(blp)
