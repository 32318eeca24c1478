"""Load-balancer health and Prometheus scrape."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from app.extensions import QUEUE_NAMES, db, queue, redis_client
from app.metrics import metrics_text

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    checks: dict[str, str] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
        db.session.rollback()
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        redis_client().ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"error: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    return jsonify(
        status="ok" if healthy else "unavailable", checks=checks
    ), 200 if healthy else 503


@bp.get("/metrics")
def metrics() -> Response:
    return Response(metrics_text(_queue_depths), mimetype=CONTENT_TYPE_LATEST)


def _queue_depths() -> dict[str, int]:
    try:
        return {name: queue(name).count for name in QUEUE_NAMES}
    except Exception as exc:  # noqa: BLE001 - a scrape must still answer when Redis is down
        log.warning("queue depth unavailable: %s", type(exc).__name__)
        return {}
