"""Prometheus metrics. Defined once per process; later parts add their own counters here.

With several processes (gunicorn workers, the RQ worker under `sacco up`) each keeps its
own counts; when PROMETHEUS_MULTIPROC_DIR is set they write them there and a scrape adds
them up, so /metrics shows the whole service rather than whichever worker answered.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Iterator

from flask import Flask, g, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import values as _values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector


def _process_id() -> str:
    """Each process's metrics file is named by this. Under docker compose the web, worker
    and scheduler containers share one folder but not one pid space (each has its pid 1),
    so the host name (the container's id) goes before the pid."""
    host = re.sub(r"[^A-Za-z0-9]", "-", socket.gethostname())[:40]
    return f"{host}-{os.getpid()}"


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Before any metric below is made: each takes its value class as it is created.
    _values.ValueClass = _values.MultiProcessValue(_process_id)

REQUEST_LATENCY = Histogram(
    "sacco_http_request_duration_seconds",
    "HTTP request latency by route",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REQUESTS = Counter(
    "sacco_http_requests_total", "HTTP requests by route", ["method", "route", "status"]
)
CALLBACKS = Counter("sacco_callbacks_total", "Provider callbacks received", ["kind", "outcome"])
PROVIDER_REFUSED = Counter(
    "sacco_provider_refused_total",
    "Requests to provider routes refused: source outside the allowlist, or a wrong token",
    ["provider", "route", "reason"],
)
MPESA_OUTCOMES = Counter(
    "sacco_mpesa_requests_total", "STK and B2C requests by final state", ["kind", "outcome"]
)
MPESA_SECONDS = Histogram(
    "sacco_mpesa_request_seconds",
    "Time from writing an M-PESA request to its final state",
    ["kind"],
    buckets=(1, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 86400),
)
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


class _QueueDepth:
    """Read at scrape time from Redis: a depth is a fact about Redis, not about a process."""

    def __init__(self, depths: Callable[[], dict[str, int]]) -> None:
        self._depths = depths

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "sacco_queue_depth", "Jobs waiting in each RQ queue", labels=["queue"]
        )
        for name, depth in self._depths().items():
            family.add_metric([name], depth)
        yield family


def metrics_text(queue_depths: Callable[[], dict[str, int]]) -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    depth_registry = CollectorRegistry()
    depth_registry.register(_QueueDepth(queue_depths))
    return generate_latest(registry) + generate_latest(depth_registry)
