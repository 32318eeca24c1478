"""Rate limits per API client and route (Flask-Limiter on the project's Redis): the
standard RateLimit headers on every answer, 429 with Retry-After past the limit. Only
/api/v1 is limited here; USSD, SMS and the providers' callbacks keep their own guards."""

from __future__ import annotations

from flask import Flask, g, request
from flask_limiter import Limiter

from app.api import PREFIX


def limit_key() -> str:
    """The caller: its client id once the token is checked, else its address (the token
    endpoint, and calls without a valid token)."""
    caller = g.get("api_caller")
    if caller is not None:
        return f"client:{caller.client.client_id}"
    return f"addr:{request.remote_addr}"


limiter = Limiter(
    key_func=limit_key,
    headers_enabled=True,
    strategy="moving-window",
    key_prefix="sacco:api",
    # Nothing is limited unless a route or blueprint says so (the console, USSD, SMS
    # and callbacks are not this limiter's).
    default_limits=[],
)


def init_limits(app: Flask) -> None:
    """The limiter, storing its counters in the app's Redis (embedded or server)."""
    url = app.config["REDIS_URL"]
    if url.startswith("unix://"):
        url = "redis+unix://" + url[len("unix://") :]
    app.config.setdefault("RATELIMIT_STORAGE_URI", url)
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    limiter.init_app(app)


def api_rate_limit() -> str:
    from flask import current_app

    settings = current_app.config["SETTINGS"]
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        return str(settings.API_WRITE_RATE_LIMIT)
    return str(settings.API_RATE_LIMIT)


def is_api_request() -> bool:
    return request.path.startswith(PREFIX)
