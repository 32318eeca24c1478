from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db, queue
from tests.helpers import make_app

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@contextmanager
def other_app(urls: dict[str, str], **overrides: object) -> Iterator[Flask]:
    """A second app on the same settings but for `overrides`, closed after use."""
    app = make_app(urls, **overrides)
    try:
        yield app
    finally:
        with app.app_context():
            db.engine.dispose()
        app.extensions["redis"].close()


def test_healthz_is_200_when_database_and_redis_answer(client: FlaskClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_healthz_is_503_naming_redis_when_redis_is_unreachable(_urls: dict[str, str]) -> None:
    with other_app(_urls, REDIS_URL=UNREACHABLE_REDIS) as broken:
        response = broken.test_client().get("/healthz")

    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("error: ")


@pytest.mark.parametrize(
    "database_url",
    [
        "postgresql+psycopg://postgres@127.0.0.1:1/x",
        "sqlite:////nonexistent-sacco-dir/deeper/sacco.db",
    ],
)
def test_healthz_is_503_naming_the_database_when_it_is_unreachable(
    _urls: dict[str, str], database_url: str
) -> None:
    with other_app(_urls, DATABASE_URL=database_url) as broken:
        response = broken.test_client().get("/healthz")
        again = broken.test_client().get("/healthz")  # the failed session was cleaned up

    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "error: OperationalError"
    assert body["checks"]["redis"] == "ok"
    assert again.status_code == 503 and again.get_json() == body


def test_metrics_expose_latency_per_route_and_queue_depth(app: Flask, client: FlaskClient) -> None:
    queue("default").enqueue("builtins.print", "hello")
    queue("default").enqueue("builtins.print", "again")
    assert client.get("/healthz").status_code == 200

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    body = response.get_data(as_text=True)
    assert "# TYPE sacco_http_request_duration_seconds histogram" in body
    buckets = [
        (dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value))
        for labels, value in re.findall(
            r"^sacco_http_request_duration_seconds_bucket\{([^}]*)\} (\S+)$", body, re.MULTILINE
        )
    ]
    healthz = {
        labels["le"]: value
        for labels, value in buckets
        if (labels["method"], labels["route"], labels["status"]) == ("GET", "/healthz", "200")
    }
    assert {"0.005", "0.1", "10.0", "+Inf"} <= set(healthz)
    assert healthz["+Inf"] >= 1  # counters are per process: other tests add to them
    assert re.search(r'^sacco_queue_depth\{queue="default"\} 2\.0$', body, re.MULTILINE)
    assert re.search(r'^sacco_queue_depth\{queue="payments"\} 0\.0$', body, re.MULTILINE)
    assert re.search(r'^sacco_queue_depth\{queue="sms"\} 0\.0$', body, re.MULTILINE)


def test_metrics_label_routes_by_rule_not_by_path(client: FlaskClient) -> None:
    client.get("/no/such/page/12345")

    body = client.get("/metrics").get_data(as_text=True)

    assert 'route="unmatched"' in body
    # In a label, not anywhere: a sample's value (a _created timestamp) may hold the digits.
    labels = re.findall(r"\{([^}]*)\}", body)
    assert labels and not [found for found in labels if "12345" in found]


def test_metrics_still_answer_when_redis_is_down(_urls: dict[str, str]) -> None:
    with other_app(_urls, REDIS_URL=UNREACHABLE_REDIS) as broken:
        response = broken.test_client().get("/metrics")

    assert response.status_code == 200
    assert "sacco_http_request_duration_seconds" in response.get_data(as_text=True)


def test_every_response_carries_a_request_id(client: FlaskClient) -> None:
    assert (
        client.get("/healthz", headers={"X-Request-ID": "lb-42"}).headers["X-Request-ID"] == "lb-42"
    )
    generated = client.get("/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)


def test_the_home_page_links_the_console_simulator_health_and_metrics(
    client: FlaskClient,
) -> None:
    response = client.get("/")
    assert response.status_code == 200
    links = re.findall(r'href="([^"]+)"', response.get_data(as_text=True))
    assert links == ["/admin/", "/simulator/at/", "/simulator/daraja/", "/healthz", "/metrics"]
    for link in links:
        assert client.get(link).status_code in (200, 302), link  # the console asks to log in


def test_metrics_of_several_processes_and_hosts_are_added_up(tmp_path) -> None:  # noqa: ANN001
    """Under docker compose the web, worker and scheduler share the metrics folder but
    not a pid space (each container has its own pid 1): files are named by host and pid,
    so two processes never write one file, and a scrape adds them all up."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    bump = (
        "from app.metrics import CALLBACKS; CALLBACKS.labels('c2b_confirmation', 'processed').inc()"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", bump], cwd=root, env=env, check=True, timeout=60)
    files = sorted(p.name for p in tmp_path.iterdir())
    host = re.sub(r"[^A-Za-z0-9]", "-", socket.gethostname())[:40]
    assert len(files) == 2 and all(f.startswith(f"counter_{host}-") for f in files), files

    scrape = (
        "from app.metrics import metrics_text; import sys; "
        "sys.stdout.write(metrics_text(lambda: {}).decode())"
    )
    out = subprocess.run(
        [sys.executable, "-c", scrape],
        cwd=root,
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    assert 'sacco_callbacks_total{kind="c2b_confirmation",outcome="processed"} 2.0' in out, out
