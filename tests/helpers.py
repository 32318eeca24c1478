"""Shared test helpers. Job functions here are run by a real RQ worker, which imports them
by their dotted path (`tests.helpers.NAME`)."""

from __future__ import annotations

import dataclasses
import itertools
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, make_url, select, text
from werkzeug.test import TestResponse

from app import create_app
from app.cli.runtime import make_worker
from app.extensions import db
from app.models import Member, SmsInbound, SmsMessage
from app.phone import PhoneError, normalise_phone
from app.services.ledger import ledger_check
from app.services.staff import staff_add
from app.sms_templates import GSM7_BASIC
from app.ussd.engine import MAX_SCREEN


def job_rename_member_then_fail(member_id: int) -> None:
    """A job that fails halfway through a change, leaving it in the session."""
    member = db.session.get(Member, member_id)
    assert member is not None
    member.name = "Never Saved"
    raise RuntimeError("the job failed before it committed")


def job_member_name(member_id: int) -> str:
    member = db.session.get(Member, member_id)
    assert member is not None
    return member.name


def at_reply(code: int = 101, status: str = "Success", message_id: str = "ATXid_abc123") -> dict:
    sent = code in (100, 101, 102)
    return {
        "SMSMessageData": {
            "Message": f"Sent to {int(sent)}/1 Total Cost: KES 0.8000",
            "Recipients": [
                {
                    "statusCode": code,
                    "number": "+254700000001",
                    "status": status,
                    "cost": "KES 0.8000" if sent else "0",
                    "messageId": message_id if sent else "None",
                }
            ],
        }
    }


_inbound_ids = itertools.count(1)


def sms_in(client: FlaskClient, phone: str, text: str, sms_id: str | None = None) -> SmsMessage:
    """Text the SACCO from `phone` as Africa's Talking delivers it; the reply it sent
    (`sms_id` repeats a provider's retry)."""
    form = {"from": phone, "to": "22384", "text": text, "id": sms_id or f"in-{next(_inbound_ids)}"}
    assert client.post("/sms/inbound", data=form).status_code == 200
    return sms_last_reply()


def sms_last_reply() -> SmsMessage:
    """The newest SMS to the member who texted last."""
    db.session.expire_all()
    inbound = db.session.scalars(select(SmsInbound).order_by(SmsInbound.id.desc())).first()
    assert inbound is not None, "nobody has texted"
    reply = db.session.scalars(
        select(SmsMessage)
        .where(SmsMessage.member_id == inbound.member_id)
        .order_by(SmsMessage.id.desc())
    ).first()
    assert reply is not None, "no reply"
    return reply


def sent_sms(
    template: str, *, phone: str | None = None, member_id: int | None = None
) -> list[SmsMessage]:
    """The SMS of `template` queued so far, oldest first, to `phone` or `member_id` if
    given. Rows already loaded are read afresh: a worker may have sent them since."""
    query = select(SmsMessage).where(SmsMessage.template == template)
    if phone is not None:
        query = query.where(SmsMessage.phone == phone)
    if member_id is not None:
        query = query.where(SmsMessage.member_id == member_id)
    query = query.order_by(SmsMessage.id).execution_options(populate_existing=True)
    return list(db.session.scalars(query))


def sms_bodies(
    template: str, *, phone: str | None = None, member_id: int | None = None
) -> list[str]:
    """The words of `sent_sms`, oldest first."""
    return [m.body for m in sent_sms(template, phone=phone, member_id=member_id)]


def assert_books_reconcile() -> None:
    db.session.remove()
    problems = ledger_check()
    db.session.rollback()
    assert problems == [], "the books do not reconcile:\n" + "\n".join(
        f"{p.what}: {p.detail}" for p in problems
    )


def truncate_all() -> None:
    """Every table empty and every id counting from 1 again, as after the migrations.

    On PostgreSQL a TRUNCATE costs a new file for each table and index, written or not
    (about 0.4 s for the whole schema on a slow machine, after every test), so only the
    tables holding rows are truncated, and then the id sequences still advanced (an insert
    rolled back leaves no row but a used id) are restarted."""
    tables = [t.name for t in reversed(db.metadata.sorted_tables)]
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            holding = conn.scalars(
                text(
                    " UNION ALL ".join(
                        f"SELECT '{table}' WHERE EXISTS (SELECT 1 FROM {table})"  # noqa: S608 - names from our metadata
                        for table in tables
                    )
                )
            ).all()
            if holding:
                conn.execute(text(f"TRUNCATE {', '.join(holding)} RESTART IDENTITY CASCADE"))
            advanced = conn.scalars(
                text(
                    "SELECT quote_ident(sequencename) FROM pg_sequences "
                    "WHERE schemaname = current_schema() AND last_value IS NOT NULL"
                )
            ).all()
            for sequence in advanced:
                conn.execute(text(f"ALTER SEQUENCE {sequence} RESTART"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - names from our metadata


def phone_error(phone: str) -> str:
    """The words a service refuses `phone` with: normalise_phone's own."""
    try:
        normalise_phone(phone)
    except PhoneError as error:
        return str(error)
    raise AssertionError(f"{phone} is a good phone number")


# -- Daraja payloads, shaped as contracts/daraja.md documents them ------------------------


def stk_body(
    checkout_id: str,
    code: int | str = 0,
    *,
    amount: object = 500,
    receipt: str = "NLJ7RT61SV",
    phone: object = 254708374149,
    desc: str | None = None,
) -> dict:
    callback: dict = {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": checkout_id,
        "ResultCode": code,
        "ResultDesc": desc
        or (
            "The service request is processed successfully."
            if code in (0, "0")
            else "Request cancelled by user"
        ),
    }
    if code in (0, "0"):
        callback["CallbackMetadata"] = {
            "Item": [
                {"Name": "Amount", "Value": amount},
                {"Name": "MpesaReceiptNumber", "Value": receipt},
                {"Name": "Balance"},
                {"Name": "TransactionDate", "Value": 20261121102115},
                {"Name": "PhoneNumber", "Value": phone},
            ]
        }
    return {"Body": {"stkCallback": callback}}


def c2b_body(
    trans_id: str = "RKTQDM7W6S",
    *,
    amount: object = "1000",
    account: str = "M000001",
    msisdn: str = "25470****149",
    shortcode: str = "174379",
) -> dict:
    return {
        "TransactionType": "Pay Bill",
        "TransID": trans_id,
        "TransTime": "20261121063845",
        "TransAmount": amount,
        "BusinessShortCode": shortcode,
        "BillRefNumber": account,
        "InvoiceNumber": "",
        "OrgAccountBalance": "",
        "ThirdPartyTransID": "",
        "MSISDN": msisdn,
        "FirstName": "John",
        "MiddleName": "",
        "LastName": "Doe",
    }


def b2c_result_body(
    originator_id: str,
    code: int | str = 0,
    *,
    amount: object = 10,
    receipt: str = "NLJ41HAY6Q",
    desc: str | None = None,
) -> dict:
    result: dict = {
        "ResultType": 0,
        "ResultCode": code,
        "ResultDesc": desc or "The service request is processed successfully.",
        "OriginatorConversationID": originator_id,
        "ConversationID": "AG_20191219_00004e48cf7e3533f581",
        "TransactionID": receipt,
        "ReferenceData": {"ReferenceItem": {"Key": "QueueTimeoutURL", "Value": "https://x"}},
    }
    if code in (0, "0"):
        result["ResultParameters"] = {
            "ResultParameter": [
                {"Key": "TransactionAmount", "Value": amount},
                {"Key": "TransactionReceipt", "Value": receipt},
                {"Key": "B2CRecipientIsRegisteredCustomer", "Value": "Y"},
                {"Key": "ReceiverPartyPublicName", "Value": "254708374149 - John Doe"},
                {"Key": "TransactionCompletedDateTime", "Value": "21.11.2026 11:45:50"},
                {"Key": "B2CUtilityAccountAvailableFunds", "Value": 10116.00},
            ]
        }
    return {"Result": result}


class Worker(threading.Thread):
    """Runs `fn` in its own app context, so its own session and connection."""

    def __init__(self, app: Flask, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.app, self.fn = app, fn
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        with self.app.app_context():
            try:
                self.result = self.fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                self.error = exc
                db.session.rollback()
            finally:
                db.session.remove()

    def outcome(self, timeout: float = 30) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def settings_change(app: Flask, monkeypatch: pytest.MonkeyPatch, **values: object) -> None:
    """Settings changed for this test, in this process and in the worker processes a run
    starts (they read the environment)."""
    changed = dataclasses.replace(app.config["SETTINGS"], **values)
    monkeypatch.setitem(app.config, "SETTINGS", changed)
    for name, value in values.items():
        monkeypatch.setenv(name, str(value))


@contextmanager
def row_locked(app: Flask, table: str, row_id: int) -> Iterator[None]:
    """`table`'s row `row_id` held FOR UPDATE by another session until the block ends:
    what the block starts waits on it (wait_until_blocked), then goes when it is let go."""
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        db.session.execute(
            text(f"SELECT id FROM {table} WHERE id = :id FOR UPDATE"),  # noqa: S608 - ours
            {"id": row_id},
        )
        locked.set()
        release.wait(30)
        db.session.commit()

    holder = Worker(app, hold)
    holder.start()
    assert locked.wait(20)
    try:
        yield
    finally:
        release.set()
        holder.outcome()


def assert_not_held(table: str, row_id: int, mode: str = "UPDATE") -> None:
    """`table`'s row `row_id` can be locked FOR `mode` at once: no other session holds a
    lock that conflicts (NOWAIT is refused at once instead of waiting). What a race test
    asks of a session it has left waiting: that it holds none of the rows it will lock
    next (lock order), or only a lock this one can share."""
    with db.engine.connect() as conn:
        conn.execute(
            text(f"SELECT id FROM {table} WHERE id = :id FOR {mode} NOWAIT"),  # noqa: S608 - ours
            {"id": row_id},
        ).all()
        conn.rollback()


def wait_until_blocked(count: int = 1, timeout: float = 10) -> None:
    """Until `count` other sessions wait on a row lock (seen in pg_stat_activity)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.engine.connect() as conn:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            ).scalar_one()
        if waiting >= count:
            return
        time.sleep(0.05)
    raise AssertionError("no session ended up waiting on the lock")


def holder_then_waiter(
    app: Flask,
    holder: Callable[[], Any],
    held: threading.Event,
    waiter: Callable[[], Any],
    timeout: float = 20,
) -> tuple[Worker, Worker]:
    """The interleaving a race test forces: `holder` runs until it sets `held` (it holds its
    row locks then), `waiter` starts next, and both are returned once `waiter` waits on a
    row lock."""
    first = Worker(app, holder)
    first.start()
    assert held.wait(timeout), "the holder never took its locks"
    second = Worker(app, waiter)
    second.start()
    wait_until_blocked()
    return first, second


def worker_database(url: str, worker: str) -> str:
    """The database of one xdist worker ("gw0", "gw1", ...): on PostgreSQL `<name>_<worker>`
    on the same server, created the first time; a SQLite file gets the worker in its name."""
    parsed = make_url(url)
    name = parsed.database or ""
    if parsed.get_backend_name() == "sqlite":
        if name in ("", ":memory:"):
            return url
        path = Path(name)
        return parsed.set(database=str(path.with_stem(f"{path.stem}_{worker}"))).render_as_string(
            hide_password=False
        )
    own = f"{name}_{worker}"
    engine = create_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            found = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": own})
            if not found:
                conn.execute(text(f'CREATE DATABASE "{own}"'))
    finally:
        engine.dispose()
    return parsed.set(database=own).render_as_string(hide_password=False)


def worker_redis_db(url: str, worker: str) -> str:
    """The Redis db of one xdist worker: the URL's db number counted down by the worker's
    index (CI's db 15 gives gw0 15 and gw1 14), on the same server."""
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    index = int(worker.removeprefix("gw"))
    return urlunsplit(parts._replace(path=f"/{(base - index) % 16}"))


def make_app(urls: dict[str, str], **overrides: object) -> Flask:
    settings = {"APP_ENV": "test", "DEMO_DATA": False, "SECRET_KEY": "test-secret", **urls}
    settings.update(overrides)
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


def work_until(done: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Run the worker (burst) until `done()` is truthy: the simulator calls back from its
    own thread, so the callback's job may land a moment after the send job ran."""
    deadline = time.monotonic() + timeout
    while True:
        make_worker(("payments", "sms", "default")).work(burst=True)
        db.session.remove()
        result = done()
        # On SQLite any open transaction holds the write lock the server's callback needs.
        db.session.commit()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


_ussd_sessions = itertools.count(1)


class Phone:
    """A member's phone in one USSD session through `POST /ussd`, as Africa's Talking
    sends it: each `press` sends the whole text so far, `send` any text as is. Every
    reply is checked: 200, text/plain, CON/END, at most 182 GSM-7 characters."""

    def __init__(self, client: FlaskClient, phone: str = "+254711223344") -> None:
        self.client, self.phone = client, phone
        self.session_id = f"ATUid_test{next(_ussd_sessions)}"
        self.inputs: list[str] = []

    def send(self, text: str) -> str:
        reply = self.client.post(
            "/ussd",
            data={
                "sessionId": self.session_id,
                "serviceCode": "*384*96#",
                "phoneNumber": self.phone,
                "networkCode": "63902",
                "text": text,
            },
        )
        assert reply.status_code == 200 and reply.mimetype == "text/plain"
        body = reply.get_data(as_text=True)
        assert body.startswith(("CON ", "END ")), body
        assert len(body) - 4 <= MAX_SCREEN and set(body[4:]) <= GSM7_BASIC, body
        return body

    def dial(self) -> str:
        return self.send("")

    def press(self, entry: str) -> str:
        self.inputs.append(entry)
        return self.send("*".join(self.inputs))

    def set_up_pin(self, answer: str, pin: str = "4826") -> str:
        """A member's first dial (no PIN yet): `answer` (the ID number or an activation
        code) to the second-factor screen, then the PIN twice. Returns the main menu."""
        assert "PIN" in self.dial()
        assert "PIN" in self.press(answer)  # choose a PIN
        assert "PIN" in self.press(pin)  # the same again
        main = self.press(pin)
        assert main.startswith("CON 1. "), main
        return main


# -- the staff console --------------------------------------------------------------------

PASSWORD = "staff-password-1"


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object) -> TestResponse:
    """One browser request in its own app context, as in production.

    The test holds an app context of its own, and a request inside it would share `g`
    (where Flask-Login caches the user) with every other request of the test: a login
    could then "stick" without the session cookie doing its job.
    """
    with client.application.app_context():
        return client.open(path, method=method, **kwargs)


_TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_token(client: FlaskClient) -> str:
    """A CSRF token for this client's session, as a browser gets one: from a page's form.
    (Tokens are bound to the session, not to one form, so any form of the console takes it.)"""
    page = browse(client, "/admin/login").get_data(as_text=True)
    found = _TOKEN.search(page)
    assert found, "the login page carries no CSRF token"
    return found.group(1)


def login(client: FlaskClient, email: str, password: str = PASSWORD, next_: str | None = None):  # noqa: ANN201
    query = {"next": next_} if next_ is not None else None
    return browse(
        client,
        "/admin/login",
        "POST",
        data={"email": email, "password": password, "csrf_token": csrf_token(client)},
        query_string=query,
    )


def post_form(client: FlaskClient, path: str, data: dict[str, object] | None = None):  # noqa: ANN201
    """A console form posted as the browser posts it: with the session's CSRF token."""
    return browse(client, path, "POST", data={**(data or {}), "csrf_token": csrf_token(client)})


def staff(role: str) -> str:
    email = f"{role.replace('_', '.')}@sacco.test"
    staff_add(email=email, role=role, password=PASSWORD)
    return email


# Settings a production server starts with (tests of config and of what production hides).
PRODUCTION = {
    "APP_ENV": "production",
    "DATABASE_URL": "postgresql+psycopg://sacco@db.internal/sacco",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "SECRET_KEY": "a-long-random-production-secret",
    "CALLBACK_TOKEN": "cb7f3e9a21d4",
    "CALLBACK_BASE_URL": "https://channels.example-sacco.co.ke",
    "AT_API_KEY": "at-key",
    "AT_ALLOWED_IPS": "203.0.113.0/24",  # a documentation range standing for the provider's
    "MPESA_CONSUMER_KEY": "ck",
    "MPESA_CONSUMER_SECRET": "cs",
    "MPESA_PASSKEY": "pk",
    "MPESA_INITIATOR_NAME": "apiop",
    "MPESA_SECURITY_CREDENTIAL": "cred",
}


# -- the console in a real browser (tests/test_browser*.py) ---------------------------------
# Debian's `chromium` driven by Playwright, which never downloads a browser of its own.
# Without chromium a browser test is skipped, unless SACCO_BROWSER_TEST=required (.ci/run
# installs chromium and sets it), where a missing browser is a failure.


def chromium_path() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_page(*, width: int, height: int, timeout_ms: int = 15_000) -> Any:
    """A context manager giving a Playwright page of `width` x `height` CSS pixels."""
    import contextlib
    import os

    @contextlib.contextmanager
    def opened() -> Any:
        executable = chromium_path()
        if executable is None:
            if os.environ.get("SACCO_BROWSER_TEST") == "required":
                pytest.fail("SACCO_BROWSER_TEST=required but chromium is not installed")
            pytest.skip("no chromium here (apt-get install chromium) for the browser test")
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=executable,
                # Root in a container has no user namespace for Chromium's sandbox.
                args=["--no-sandbox", "--disable-dev-shm-usage"],
            )
            try:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.set_default_timeout(timeout_ms)
                yield page
            finally:
                browser.close()

    return opened()


def screenshot(page: Any, name: str) -> None:
    """A full-page PNG in screenshots/ (or $SACCO_SCREENSHOTS) for a person to look at."""
    import os
    from pathlib import Path

    shots = Path(os.environ.get("SACCO_SCREENSHOTS", "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def browser_sign_in(page: Any, live_url: str, email: str) -> None:
    page.goto(f"{live_url}/admin/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
