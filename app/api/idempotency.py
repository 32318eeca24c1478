"""Idempotency-Key for every POST (built once, used by every POST of /api/v1).

The first request with a key is answered and its response kept, per client and key, with
a hash of the request; a retry with the same key and body gets that same response again
(`Idempotent-Replayed: true`), never a second prompt or payment; the same key with
another body is refused (422). Two identical requests at the same instant: the unique
constraint on (client, key) lets one in, the other waits for its answer. Keys are kept
API_IDEMPOTENCY_HOURS (24 by default); after that a key is new again, and the hourly
`api-idempotency-expire` job deletes it.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from flask import current_app, g, make_response, request
from flask.typing import ResponseReturnValue
from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.exc import IntegrityError

from app.api import problem
from app.extensions import db
from app.models import ApiIdempotencyKey
from app.models.types import utcnow

F = TypeVar("F", bound=Callable[..., Any])
HEADER = "Idempotency-Key"
WAIT_SECONDS = 10.0  # how long a retry waits for the first request's answer
STALE_SECONDS = 300  # a pending key older than this belongs to a request that died
EXPIRE_CHUNK = 5000  # keys deleted per transaction by the hourly clean-up


def _request_hash() -> str:
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(b"\0" + request.path.encode() + b"\0")
    digest.update(request.get_data(cache=True))
    return digest.hexdigest()


def _replay(row: ApiIdempotencyKey) -> ResponseReturnValue:
    response = make_response(row.response_body or "", row.response_status or 200)
    for name, value in (row.response_headers or {}).items():
        response.headers[name] = value
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _expired(now: datetime) -> ColumnElement[bool]:
    """A key past its keeping: answered more than API_IDEMPOTENCY_HOURS ago, or pending
    for a request that died mid-way (its process killed), which never answered: after a
    few minutes its key is free again rather than 409 for a day."""
    hours = int(current_app.config["SETTINGS"].API_IDEMPOTENCY_HOURS)
    return or_(
        ApiIdempotencyKey.created_at < now - timedelta(hours=hours),
        and_(
            ApiIdempotencyKey.status == "pending",
            ApiIdempotencyKey.created_at < now - timedelta(seconds=STALE_SECONDS),
        ),
    )


def idempotency_keys_expire(now: datetime | None = None) -> int:
    """Delete every key past its keeping, a chunk at a time (each its own short
    transaction, so no API call waits on a long delete); how many. A key that comes back
    is freed by `_claim` anyway: this keeps the table to a day of keys."""
    expired = _expired(now or utcnow())
    deleted = 0
    while True:
        ids = list(
            db.session.scalars(
                select(ApiIdempotencyKey.id)
                .where(expired)
                .order_by(ApiIdempotencyKey.id)
                .limit(EXPIRE_CHUNK)
            )
        )
        if ids:
            db.session.execute(delete(ApiIdempotencyKey).where(ApiIdempotencyKey.id.in_(ids)))
        db.session.commit()
        deleted += len(ids)
        if len(ids) < EXPIRE_CHUNK:
            return deleted


def _claim(client_id: int, key: str, digest: str) -> ApiIdempotencyKey | None:
    """Insert the key as pending and commit (None), or the row another request holds."""
    db.session.execute(
        delete(ApiIdempotencyKey).where(
            ApiIdempotencyKey.client_id == client_id,
            ApiIdempotencyKey.key == key,
            _expired(utcnow()),
        )
    )
    try:
        db.session.add(
            ApiIdempotencyKey(
                client_id=client_id,
                key=key,
                request_hash=digest,
                method=request.method,
                path=request.path[:255],
                status="pending",
            )
        )
        db.session.commit()
        return None
    except IntegrityError:
        db.session.rollback()
    return db.session.scalar(
        select(ApiIdempotencyKey).where(
            ApiIdempotencyKey.client_id == client_id, ApiIdempotencyKey.key == key
        )
    )


def idempotent(view: F) -> F:
    """The POST needs an Idempotency-Key header (1-255 printable characters); see above.
    Put it under `require_scope`, which names the client. It sits inside flask-smorest's
    `@blp.response`, so what it stores is the view's own return value: a POST view returns
    its schema's dump (or a `problem`), never a bare model, so the stored answer and the
    replay are the bytes the schema gives. An `abort()` (404, 422 from parsing) is not an
    answer: the key is freed, and a 5xx frees it too, so a retry runs again."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = (request.headers.get(HEADER) or "").strip()
        if not key or len(key) > 255 or not key.isprintable():
            return problem(
                400,
                "idempotency_key_required",
                f"send an {HEADER} header (1 to 255 characters) with every POST",
            )
        caller = g.api_caller
        digest = _request_hash()
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            held = _claim(caller.client.id, key, digest)
            if held is None:
                break
            if held.request_hash != digest:
                return problem(
                    422,
                    "idempotency_key_reused",
                    f"this {HEADER} was used for a different request",
                )
            if held.status == "done":
                return _replay(held)
            db.session.rollback()
            if time.monotonic() > deadline:
                return problem(
                    409,
                    "idempotency_key_in_progress",
                    "the first request with this key is still running; retry shortly",
                    headers={"Retry-After": "1"},
                )
            time.sleep(0.05)
        try:
            response = make_response(view(*args, **kwargs))
        except Exception:
            db.session.rollback()
            _release(caller.client.id, key)
            raise
        if response.status_code >= 500:
            _release(caller.client.id, key)  # a failure is not an answer: let a retry run
            return response
        db.session.rollback()
        row = db.session.scalar(
            select(ApiIdempotencyKey).where(
                ApiIdempotencyKey.client_id == caller.client.id, ApiIdempotencyKey.key == key
            )
        )
        if row is not None:
            row.status = "done"
            row.response_status = response.status_code
            row.response_body = response.get_data(as_text=True)
            row.response_headers = {
                name: value
                for name, value in response.headers.items()
                if name in ("Content-Type", "Location")
            }
            db.session.commit()
        return response

    return wrapper  # type: ignore[return-value]


def _release(client_id: int, key: str) -> None:
    db.session.execute(
        delete(ApiIdempotencyKey).where(
            ApiIdempotencyKey.client_id == client_id,
            ApiIdempotencyKey.key == key,
            ApiIdempotencyKey.status == "pending",
        )
    )
    db.session.commit()
