"""Provider routes trust the provider, not the caller id (issue 17, items 1, 3 and 21).

Africa's Talking's routes (/ussd, /ussd/events, /sms/*) answer only AT_ALLOWED_IPS and,
when AT_CALLBACK_TOKEN is set, only URLs that carry it; production will not start without
an allowlist unless told `any`. M-PESA callbacks share the one allowlist check. A
callback whose database connection is cut mid-way is still answered as Safaricom expects
and kept exactly once.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, func, select, text

from app import create_app
from app.config import ConfigError, load_settings
from app.extensions import db, redis_client
from app.models import (
    Member,
    MpesaCallback,
    Payment,
    SmsInbound,
    SmsMessage,
    SmsSuppression,
    UssdEvent,
)
from app.services.payments import payments_reconcile
from app.services.payments.callbacks import SPOOL_KEY
from tests.factories import make_member
from tests.helpers import PRODUCTION, Worker, c2b_body, make_app, wait_until_blocked, work_until

PROVIDER = "203.0.113.10"  # inside AT_ALLOWED_IPS below
STRANGER = "198.51.100.7"  # anywhere else
TOKEN = "dev-callback-token"  # the M-PESA path token in tests (the dev default)
AT_TOKEN = "at-secret-4f2b9c"


def hop(phone: str = "+254711223344", text: str = "", session: str = "ATUid_t1") -> dict:
    return {
        "sessionId": session,
        "serviceCode": "*384*96#",
        "phoneNumber": phone,
        "networkCode": "63902",
        "text": text,
    }


def refused(provider: str, route: str, reason: str) -> float:
    labels = {"provider": provider, "route": route, "reason": reason}
    return REGISTRY.get_sample_value("sacco_provider_refused_total", labels) or 0.0


def count(model: type) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(model)) or 0


@pytest.fixture
def allowlist(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    changed = dataclasses.replace(app.config["SETTINGS"], AT_ALLOWED_IPS=("203.0.113.0/24",))
    monkeypatch.setitem(app.config, "SETTINGS", changed)


@pytest.fixture
def at_token(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    changed = dataclasses.replace(app.config["SETTINGS"], AT_CALLBACK_TOKEN=AT_TOKEN)
    monkeypatch.setitem(app.config, "SETTINGS", changed)


@pytest.fixture
def member(app: Flask) -> Member:
    member = make_member(phone="0711223344", name="Wanjiku Achieng", savings=2500)
    db.session.commit()
    return member


# -- start-up -------------------------------------------------------------------------------


def test_production_without_at_allowed_ips_refuses_to_start() -> None:
    environ = {k: v for k, v in PRODUCTION.items() if k != "AT_ALLOWED_IPS"}
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    assert str(caught.value) == "production needs these settings: AT_ALLOWED_IPS"
    with pytest.raises(ConfigError, match="AT_ALLOWED_IPS"):
        create_app(environ)


@pytest.mark.parametrize("waiver", ["any", "ANY"])
def test_production_with_at_allowed_ips_any_starts_and_admits_anyone(waiver: str) -> None:
    settings = load_settings(environ={**PRODUCTION, "AT_ALLOWED_IPS": waiver})
    assert settings.is_production and settings.at_allowlist == ()

    production = create_app({**PRODUCTION, "AT_ALLOWED_IPS": waiver})
    assert production.config["SETTINGS"].at_allowlist == ()


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("AT_ALLOWED_IPS", "203.0.113.0/24, 203.0.113.300", "not an address or CIDR range"),
        ("AT_ALLOWED_IPS", "any, 203.0.113.9", "stands alone"),
        ("AT_ALLOWED_IPS", "africastalking.com", "not an address or CIDR range"),
        ("MPESA_ALLOWED_IPS", "196.201.214.0/33", "not an address or CIDR range"),
        ("MPESA_ALLOWED_IPS", "any", "leave it empty"),
        ("AT_CALLBACK_TOKEN", "short", "AT_CALLBACK_TOKEN must be at least 8"),
        ("AT_CALLBACK_TOKEN", "has space in it", "AT_CALLBACK_TOKEN must be"),
    ],
)
def test_a_bad_allowlist_entry_or_token_fails_the_start(name: str, value: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        load_settings(environ={name: value})


def test_allowlists_take_addresses_and_ranges_of_both_families() -> None:
    settings = load_settings(
        environ={"AT_ALLOWED_IPS": "203.0.113.0/24, 2001:db8::1", "MPESA_ALLOWED_IPS": "10.0.0.1"}
    )
    assert settings.at_allowlist == ("203.0.113.0/24", "2001:db8::1")
    assert settings.MPESA_ALLOWED_IPS == ("10.0.0.1",)


# -- /ussd: the spoofing test ------------------------------------------------------------------


def test_a_forged_ussd_hop_from_outside_the_allowlist_is_403_and_changes_nothing(
    client: FlaskClient, member: Member, allowlist: None
) -> None:
    """Item 1: the gateway's form with the number of a member who never dialled, posted
    from elsewhere: refused before the menu runs, so no PIN, no session, nothing counted."""
    before = refused("africastalking", "/ussd", "address")
    forged = [hop(), hop(text="4826"), hop(text="4826*4826")]

    answers = [client.post("/ussd", data=f, environ_base={"REMOTE_ADDR": STRANGER}) for f in forged]

    assert [a.status_code for a in answers] == [403, 403, 403]
    assert all("CON" not in a.get_data(as_text=True) for a in answers)
    assert refused("africastalking", "/ussd", "address") == before + 3
    db.session.expire_all()
    assert db.session.get(Member, member.id).pin_hash is None
    assert redis_client().keys("ussd:*") == []

    # The provider itself still gets the menu, as SPEC says: 200 text/plain CON.
    real = client.post("/ussd", data=hop(), environ_base={"REMOTE_ADDR": PROVIDER})
    assert real.status_code == 200 and real.mimetype == "text/plain"
    assert real.get_data(as_text=True).startswith("CON ")


def test_ussd_events_from_outside_are_refused_and_not_stored(
    client: FlaskClient, allowlist: None
) -> None:
    event = {"sessionId": "ATUid_e1", "phoneNumber": "+254711223344", "status": "Success"}
    forged = client.post("/ussd/events", data=event, environ_base={"REMOTE_ADDR": STRANGER})
    assert forged.status_code == 403 and count(UssdEvent) == 0

    real = client.post("/ussd/events", data=event, environ_base={"REMOTE_ADDR": PROVIDER})
    assert real.status_code == 200 and count(UssdEvent) == 1


def test_behind_our_proxy_the_forwarded_address_is_the_one_checked(
    app: Flask, _urls: dict[str, str], member: Member
) -> None:
    proxied = make_app(_urls, TRUSTED_PROXIES=1, AT_ALLOWED_IPS="203.0.113.0/24")
    try:
        client = proxied.test_client()
        through = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": PROVIDER}
        assert client.post("/ussd", data=hop(), environ_base=through).status_code == 200
        # A client's own X-Forwarded-For comes before our proxy's hop: not believed.
        forged = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": f"{PROVIDER}, {STRANGER}"}
        assert client.post("/ussd", data=hop(session="x2"), environ_base=forged).status_code == 403
    finally:
        with proxied.app_context():
            db.session.remove()
            db.engine.dispose()
        proxied.extensions["redis"].close()


# -- the URL token ----------------------------------------------------------------------------


def test_with_at_callback_token_every_at_route_wants_it(
    client: FlaskClient, member: Member, at_token: None
) -> None:
    before = refused("africastalking", "/ussd", "token")
    without = client.post("/ussd", data=hop())
    wrong = client.post("/ussd", data=hop(), query_string={"token": AT_TOKEN[:-1] + "x"})
    assert (without.status_code, wrong.status_code) == (403, 403)
    assert refused("africastalking", "/ussd", "token") == before + 2
    assert redis_client().keys("ussd:*") == []

    right = client.post("/ussd", data=hop(), query_string={"token": AT_TOKEN})
    assert right.status_code == 200 and right.get_data(as_text=True).startswith("CON ")

    stop = {"from": "+254711223344", "to": "22384", "text": "STOP", "id": "ATXid_t1"}
    assert client.post("/sms/inbound", data=stop).status_code == 403
    assert client.post("/sms/opt-out", data={"phoneNumber": "+254711223344"}).status_code == 403
    assert count(SmsInbound) == count(SmsSuppression) == 0
    ok = client.post("/sms/inbound", data=stop, query_string={"token": AT_TOKEN})
    assert ok.status_code == 200 and count(SmsInbound) == 1


# -- forged SMS webhooks (item 3) -----------------------------------------------------------------


def test_forged_sms_webhooks_from_outside_change_nothing(
    client: FlaskClient, member: Member, allowlist: None
) -> None:
    """Item 3: a forged STOP or opt-out would stop a member's reminders, a forged BAL
    would make the SACCO text anyone: refused, no row, nothing queued."""
    outside = {"REMOTE_ADDR": STRANGER}
    sms_before = count(SmsMessage)  # the deposit's receipt, if any
    texts = [
        {"from": "+254711223344", "to": "22384", "text": text, "id": f"ATXid_f{i}"}
        for i, text in enumerate(("STOP", "BAL", "STMT"))
    ]
    answers = [client.post("/sms/inbound", data=t, environ_base=outside) for t in texts]
    answers.append(
        client.post(
            "/sms/opt-out",
            data={"senderId": "SACCO", "phoneNumber": "+254711223344"},
            environ_base=outside,
        )
    )
    answers.append(
        client.post(
            "/sms/delivery-reports",
            data={"id": "ATXid_any", "status": "Failed", "phoneNumber": "+254711223344"},
            environ_base=outside,
        )
    )

    assert [a.status_code for a in answers] == [403] * 5
    assert count(SmsSuppression) == 0
    assert count(SmsInbound) == 0
    assert count(SmsMessage) == sms_before
    assert refused("africastalking", "/sms/opt-out", "address") >= 1

    # From the provider the same opt-out does what it says.
    real = client.post(
        "/sms/opt-out",
        data={"senderId": "SACCO", "phoneNumber": "+254711223344"},
        environ_base={"REMOTE_ADDR": PROVIDER},
    )
    assert real.status_code == 200 and count(SmsSuppression) == 1


# -- M-PESA shares the check ------------------------------------------------------------------


def test_mpesa_callbacks_use_the_same_allowlist_check_and_metric(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    changed = dataclasses.replace(app.config["SETTINGS"], MPESA_ALLOWED_IPS=("196.201.214.0/24",))
    monkeypatch.setitem(app.config, "SETTINGS", changed)
    route = "/payments/<token>/c2b/confirmation"
    before = refused("mpesa", route, "address")

    answer = client.post(
        f"/payments/{TOKEN}/c2b/confirmation",
        json=c2b_body("RKTFORGED1"),
        environ_base={"REMOTE_ADDR": STRANGER},
    )

    assert answer.status_code == 403
    assert refused("mpesa", route, "address") == before + 1
    assert db.session.scalar(select(MpesaCallback.status)) == "refused"


# -- a database connection cut mid-callback (item 21) ------------------------------------------


@pytest.fixture
def locker(app: Flask) -> Iterator[object]:
    """A second connection, as an operator's psql would be: it takes table locks so the
    app's backend waits at a known step, then terminates that backend."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip(
            "terminates a PostgreSQL backend (pg_terminate_backend); SQLite has none: "
            "its variant (a locked database file) is the last test of this module"
        )
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    conn = engine.connect()
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()
        engine.dispose()


def _terminate_waiting(conn) -> int:  # noqa: ANN001
    wait_until_blocked(1)
    engine = create_engine(conn.engine.url)
    try:
        with engine.connect() as killer:
            killed = killer.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            ).scalar_one()
            killer.commit()
    finally:
        engine.dispose()
    return int(killed)


def test_a_validation_whose_backend_is_terminated_after_the_store_is_accepted_not_500(
    app: Flask, client: FlaskClient, locker, member: Member
) -> None:  # noqa: ANN001
    """The raw body is committed, then the lookup's backend is terminated (as a database
    restart or pg_terminate_backend does): Safaricom gets its accepted answer, the body is
    kept once, and nothing goes to the spool (it is already safe)."""
    body = c2b_body("RKTKILLED1", account=member.member_no)
    db.session.commit()  # the test's own read of members must not hold the lock up
    locker.execute(text("SET lock_timeout = '20s'"))
    locker.execute(text("LOCK TABLE members IN ACCESS EXCLUSIVE MODE"))
    posting = Worker(app, lambda: client.post(f"/payments/{TOKEN}/c2b/validation", json=body))
    posting.start()

    assert _terminate_waiting(locker) == 1
    locker.rollback()
    answer = posting.outcome()

    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.json == {"ResultCode": "0", "ResultDesc": "Accepted"}
    assert redis_client().llen(SPOOL_KEY) == 0
    rows = db.session.scalars(select(MpesaCallback).where(MpesaCallback.kind == "c2b_validation"))
    assert [row.reference for row in rows] == ["RKTKILLED1"]


def test_a_confirmation_whose_backend_is_terminated_before_the_store_is_spooled_and_posted_once(
    app: Flask, client: FlaskClient, locker, member: Member
) -> None:  # noqa: ANN001
    """The backend dies while writing the raw row: the body goes to Redis, Safaricom gets
    "Success", and the sweep writes and posts it once, however often it runs."""
    body = c2b_body("RKTKILLED2", amount="800", account=member.member_no)
    db.session.commit()
    locker.execute(text("SET lock_timeout = '20s'"))
    locker.execute(text("LOCK TABLE mpesa_callbacks IN ACCESS EXCLUSIVE MODE"))
    posting = Worker(app, lambda: client.post(f"/payments/{TOKEN}/c2b/confirmation", json=body))
    posting.start()

    assert _terminate_waiting(locker) == 1
    locker.rollback()
    answer = posting.outcome()

    assert answer.status_code == 200
    assert answer.json == {"ResultCode": 0, "ResultDesc": "Success"}
    assert redis_client().llen(SPOOL_KEY) == 1 and count(MpesaCallback) == 0

    payments_reconcile()
    payments_reconcile()
    work_until(lambda: count(Payment) == 1, "the spooled confirmation to post")
    assert redis_client().llen(SPOOL_KEY) == 0
    assert count(MpesaCallback) == 1 and count(Payment) == 1


def test_a_callback_whose_backend_is_terminated_after_the_raw_row_is_kept_once_and_posted_once(
    app: Flask,
    client: FlaskClient,
    locker,  # noqa: ANN001
    member: Member,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The raw row commits, then the backend is terminated while the row's reference is
    written (a trigger of the test's holds that UPDATE so the kill lands there): the body
    is already safe, so nothing is spooled (a spooled copy would be a second row); the
    answer is Safaricom's usual one and the sweep posts the payment once."""
    body = c2b_body("RKTKILLED3", amount="700", account=member.member_no)
    db.session.commit()
    locker.execute(
        text(
            "CREATE FUNCTION test_stall() RETURNS trigger AS "
            "$$ BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$ LANGUAGE plpgsql"
        )
    )
    locker.execute(
        text(
            "CREATE TRIGGER test_stall BEFORE UPDATE ON mpesa_callbacks "
            "FOR EACH ROW EXECUTE FUNCTION test_stall()"
        )
    )
    locker.commit()
    try:
        posting = Worker(app, lambda: client.post(f"/payments/{TOKEN}/c2b/confirmation", json=body))
        posting.start()
        stalled = text(
            "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
            "AND datname = current_database()"
        )
        deadline = time.monotonic() + 10
        while not (pids := locker.execute(stalled).scalars().all()):
            assert time.monotonic() < deadline, "the UPDATE never reached the trigger"
            time.sleep(0.05)
        locker.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pids[0]})
        answer = posting.outcome()
    finally:
        locker.rollback()
        locker.execute(text("DROP TRIGGER IF EXISTS test_stall ON mpesa_callbacks"))
        locker.execute(text("DROP FUNCTION IF EXISTS test_stall()"))
        locker.commit()

    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.json == {"ResultCode": 0, "ResultDesc": "Success"}
    assert redis_client().llen(SPOOL_KEY) == 0
    [row] = db.session.scalars(select(MpesaCallback)).all()
    assert row.status == "received" and "RKTKILLED3" in row.raw_body
    # The operator's log names the row the sweep will take up.
    assert f"callback {row.id} c2b_confirmation stored, not yet parsed" in caplog.text

    # The sweep takes up a received row whose job never came (after a minute).
    db.session.execute(
        text("UPDATE mpesa_callbacks SET received_at = received_at - interval '2 minutes'")
    )
    db.session.commit()
    payments_reconcile()
    work_until(lambda: count(Payment) == 1, "the kept confirmation to post")
    payments_reconcile()
    work_until(lambda: True, "a second sweep")
    assert count(MpesaCallback) == 1 and count(Payment) == 1


def test_on_sqlite_a_locked_database_spools_the_callback_and_posts_it_once(
    app: Flask, client: FlaskClient, member: Member
) -> None:
    """SQLite has no backend to terminate; its operational error is "database is
    locked": another writer holds the file past the busy timeout (15 s)."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("the SQLite variant; on PostgreSQL a real backend is terminated above")
    body = c2b_body("RKTLOCKED1", amount="800", account=member.member_no)
    db.session.commit()
    holder = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        with holder.connect() as conn:
            conn.begin()  # BEGIN IMMEDIATE (app.extensions): the write lock, held
            answer = client.post(f"/payments/{TOKEN}/c2b/confirmation", json=body)
            conn.rollback()
    finally:
        holder.dispose()
    assert answer.status_code == 200
    assert answer.json == {"ResultCode": 0, "ResultDesc": "Success"}
    assert redis_client().llen(SPOOL_KEY) == 1 and count(MpesaCallback) == 0

    payments_reconcile()
    payments_reconcile()
    work_until(lambda: count(Payment) == 1, "the spooled confirmation to post")
    assert redis_client().llen(SPOOL_KEY) == 0
    assert count(MpesaCallback) == 1 and count(Payment) == 1
