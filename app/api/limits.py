"""Rate limits per API client and route (Flask-Limiter on the project's Redis): the
standard RateLimit headers on every answer, 429 with Retry-After past the limit. Only
/api/v1 is limited here; USSD, SMS and the providers' callbacks keep their own guards.

One Limiter per app, never a module global: its storage is the app's own Redis, and the
tests (and a production app built beside them) make many apps in one process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, g, request
from flask_limiter import Limiter


def limit_key() -> str:
    """The caller: its client id once the token is checked, else its address (the token
    endpoint, and calls without a valid token)."""
    caller = g.get("api_caller")
    if caller is not None:
        return f"client:{caller.client.client_id}"
    return f"addr:{request.remote_addr}"


def init_limits(app: Flask) -> None:
    """The app's limiter, storing its counters in the app's Redis (embedded or server)."""
    url = app.config["REDIS_URL"]
    if url.startswith("unix://"):
        url = "redis+unix://" + url[len("unix://") :]
    app.config.setdefault("RATELIMIT_STORAGE_URI", url)
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    limiter = app.extensions["sacco_limiter"] = Limiter(
        key_func=limit_key,
        app=app,
        headers_enabled=True,
        strategy="moving-window",
        key_prefix="sacco:api",
        # Nothing is limited unless a route says so (the console, USSD, SMS and callbacks
        # are not this limiter's).
        default_limits=[],
    )
    # Its before-request check would otherwise resolve limits for every request, a USSD
    # hop included (about a tenth of a first hop's time), to find none.
    limiter.request_filter(_not_api)


def _not_api() -> bool:
    return not request.path.startswith("/api/")


def api_rate_limit() -> str:
    settings = current_app.config["SETTINGS"]
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        return str(settings.API_WRITE_RATE_LIMIT)
    return str(settings.API_RATE_LIMIT)


def rate_limited(view: Callable[..., Any]) -> Callable[..., Any]:
    """`view` under the current app's limiter, per client and route: the limited view is
    made once per app (each app's limiter keeps its own routes) and reused."""
    made: dict[int, Callable[..., Any]] = {}

    def call(*args: Any, **kwargs: Any) -> Any:
        limiter: Limiter = current_app.extensions["sacco_limiter"]
        limited = made.get(id(limiter))
        if limited is None:
            limited = made[id(limiter)] = limiter.limit(api_rate_limit, key_func=limit_key)(view)
        return limited(*args, **kwargs)

    return call
