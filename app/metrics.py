"""Prometheus metrics. Defined once per process; later parts add their own counters here."""

from __future__ import annotations

import time

from flask import Flask, g, request
from prometheus_client import Counter, Gauge, Histogram

REQUEST_LATENCY = Histogram(
    "sacco_http_request_duration_seconds",
    "HTTP request latency by route",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REQUESTS = Counter(
    "sacco_http_requests_total", "HTTP requests by route", ["method", "route", "status"]
)
QUEUE_DEPTH = Gauge("sacco_queue_depth", "Jobs waiting in each RQ queue", ["queue"])
CALLBACKS = Counter("sacco_callbacks_total", "Provider callbacks received", ["kind", "outcome"])
SMS_SENT = Counter("sacco_sms_sent_total", "SMS accepted by the provider", ["template"])
SMS_FAILED = Counter("sacco_sms_failed_total", "SMS that failed for good", ["template"])


def init_metrics(app: Flask) -> None:
    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response):  # noqa: ANN001, ANN202
        started = getattr(g, "started", None)
        if started is not None:
            # The rule, not the path: callback tokens and ids must not become labels.
            route = request.url_rule.rule if request.url_rule else "unmatched"
            labels = (request.method, route, str(response.status_code))
            REQUEST_LATENCY.labels(*labels).observe(time.perf_counter() - started)
            REQUESTS.labels(*labels).inc()
        return response
