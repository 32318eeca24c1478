"""Payments, promises and guarantee answers through /api/v1, over HTTP: each route with
its scope, 401 without a token, 403 with the wrong scope; an STK prompt for a loan or into
an account through the same services as the console and USSD, its status once M-PESA
answers, the member's payments a page at a time; Idempotency-Key retries (one prompt, the
same answer) and two identical requests at the same instant on PostgreSQL (real threads,
two live HTTP requests). Daraja is faked at the HTTP boundary (`responses`); the send and
callback jobs run in a real RQ worker."""

from __future__ import annotations

import base64
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
import requests
import responses
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, func, select, text

from app.cli.runtime import make_worker
from app.clock import business_today
from app.extensions import db
from app.models import (
    ApiIdempotencyKey,
    AuditLog,
    Guarantee,
    JobRun,
    Loan,
    MpesaRequest,
    Payment,
    PromiseToPay,
    SmsMessage,
)
from app.models.types import utcnow
from app.services.api_clients import api_client_register
from app.services.guarantees import guarantee_request
from app.services.loans import loan_apply, loan_update_arrears
from app.services.payments import payments_request_stk
from tests.factories import make_member
from tests.helpers import stk_body, wait_until_blocked
from tests.loan_factories import make_borrower, make_loan, make_product, make_staff
from workers.schedule import run_job

TOKEN = "dev-callback-token"  # noqa: S105 - the test settings' CALLBACK_TOKEN
CHECKOUT = "ws_CO_051220261020363925"
API = "/api/v1"
_keys = itertools.count(1)


# -- helpers -----------------------------------------------------------------------------


def bearer(client: FlaskClient, *scopes: str) -> dict[str, str]:
    """A registered client's token carrying `scopes`, as an Authorization header."""
    reg = api_client_register(name="Member app", scopes=list(scopes), staff=make_staff("admin"))
    reply = client.post(
        f"{API}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(reg.client.client_id, reg.secret),
    )
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return {"Authorization": f"Bearer {reply.json['access_token']}"}


def key() -> str:
    return f"key-{next(_keys)}"


def post(
    client: FlaskClient, path: str, body: dict, headers: dict[str, str], idem: str | None = None
) -> Any:
    return client.post(
        f"{API}{path}", json=body, headers={**headers, "Idempotency-Key": idem or key()}
    )


def n(model: type, *where: object) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def prompts() -> int:
    """STK prompts (a paid-out loan has its payout's request too)."""
    return n(MpesaRequest, MpesaRequest.kind == "stk")


def work() -> None:
    make_worker(("payments", "sms", "default")).work(burst=True)
    db.session.remove()


@pytest.fixture
def daraja(mocked: responses.RequestsMock, base: str) -> responses.RequestsMock:
    """Daraja at the HTTP boundary: a token, and an STK push that is accepted."""
    mocked.get(f"{base}/oauth/v1/generate", json={"access_token": "tok", "expires_in": "3599"})
    mocked.post(
        f"{base}/mpesa/stkpush/v1/processrequest",
        json={
            "MerchantRequestID": "29115-34620561-1",
            "CheckoutRequestID": CHECKOUT,
            "ResponseCode": "0",
            "ResponseDescription": "Success. Request accepted for processing",
            "CustomerMessage": "Success. Request accepted for processing",
        },
    )
    return mocked


@dataclass(frozen=True)
class World:
    """Ids and numbers (they outlive the sessions the requests end)."""

    member_no: str
    member_id: int
    loan_id: int
    loan_no: str  # paid out in January, never repaid: in arrears today
    guarantor_no: str
    guarantor_id: int
    guarantee_id: int  # asked of the guarantor, waiting for an answer


@pytest.fixture
def world(app: Flask) -> World:
    member = make_borrower(savings=10000)
    member.phone = "254708374149"
    db.session.commit()
    loan = make_loan(product=make_product("V1"), on=date(2026, 1, 1), member=member)
    loan_update_arrears(loan_id=loan.id, as_of=business_today())
    secured = make_product(
        "V1", code="SEC", name="Development", min_guarantors=1, guarantee_cover=100
    )
    applicant = make_borrower(savings=10000)
    application = loan_apply(
        member_id=applicant.id, product_id=secured.id, amount=20000, as_of=business_today()
    )
    guarantor = make_member(savings=8000)
    guarantee = guarantee_request(
        loan_id=application.id, guarantor_id=guarantor.id, amount=5000, actor="member:test"
    )
    return World(
        member_no=member.member_no,
        member_id=member.id,
        loan_id=loan.id,
        loan_no=loan.loan_no,
        guarantor_no=guarantor.member_no,
        guarantor_id=guarantor.id,
        guarantee_id=guarantee.id,
    )


# -- every route: its scope, 401 without a token, 403 with the wrong one -----------------

# (method, path, body, scope, allowed status); paths name the world's rows.
ROUTES: list[tuple[str, str, dict | None, str, int]] = [
    (
        "POST",
        "/payments/stk-push",
        {"account_no": "{member_no}", "amount": "500"},
        "payments:write",
        202,
    ),
    ("GET", "/payments/stk-push/{prompt_id}", None, "payments:read", 200),
    ("GET", "/members/{member_no}/payments", None, "payments:read", 200),
    (
        "POST",
        "/loans/{loan_no}/promises",
        {"amount": "1000", "promised_date": "{tomorrow}"},
        "promises:write",
        201,
    ),
    ("GET", "/members/{guarantor_no}/guarantee-requests", None, "guarantees:read", 200),
    (
        "POST",
        "/guarantee-requests/{guarantee_id}/answer",
        {"answer": "accept"},
        "guarantees:write",
        200,
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "scope", "allowed"), ROUTES)
def test_each_route_needs_a_token_with_its_scope(
    client: FlaskClient,
    world: World,
    method: str,
    path: str,
    body: dict | None,
    scope: str,
    allowed: int,
) -> None:
    prompt = payments_request_stk(loan_id=world.loan_id, amount=100, phone="254711000999")
    names = {
        **world.__dict__,
        "prompt_id": prompt.id,
        "tomorrow": (business_today() + timedelta(days=1)).isoformat(),
    }
    url = API + path.format(**names)
    payload = {k: v.format(**names) for k, v in body.items()} if body else None
    wrong = "members:read" if scope != "members:read" else "payments:read"

    def call(headers: dict[str, str]) -> Any:
        headers = {**headers, "Idempotency-Key": key()} if method == "POST" else headers
        return client.open(url, method=method, json=payload, headers=headers)

    nobody = call({})
    assert nobody.status_code == 401 and nobody.mimetype == "application/problem+json"
    assert nobody.json["code"] == "unauthorized"
    assert "Bearer" in nobody.headers["WWW-Authenticate"]
    refused = call(bearer(client, wrong))
    assert (refused.status_code, refused.json["code"]) == (403, "insufficient_scope")
    assert n(PromiseToPay) == 0 and prompts() == 1  # neither wrote a thing
    answered = call(bearer(client, scope))
    assert answered.status_code == allowed, answered.get_data(as_text=True)
    assert answered.mimetype == "application/json"


# -- an STK prompt for a loan, from request to receipt -----------------------------------


def test_a_prompt_for_a_loan_is_sent_paid_and_listed_with_its_receipt(
    client: FlaskClient,
    world: World,
    daraja: responses.RequestsMock,
) -> None:
    headers = bearer(client, "payments:write", "payments:read")
    reply = post(client, "/payments/stk-push", {"loan_no": world.loan_no, "amount": "500"}, headers)
    assert reply.status_code == 202, reply.get_data(as_text=True)
    prompt = reply.json
    assert reply.headers["Location"] == f"{API}/payments/stk-push/{prompt['id']}"
    assert (prompt["status"], prompt["purpose"], prompt["amount"]) == (
        "pending",
        "repayment",
        "500.00",
    )
    assert (prompt["loan_no"], prompt["account_no"], prompt["phone"]) == (
        world.loan_no,
        None,
        "254708374149",
    )
    row = db.session.get(MpesaRequest, prompt["id"])
    client_id = row.requested_by.removeprefix("api:")
    assert (row.channel, row.kind, row.loan_id) == ("api", "stk", world.loan_id)
    assert client_id.startswith("sacco_")
    # The worker sends it; M-PESA's callback settles it.
    work()
    status = client.get(f"{API}/payments/stk-push/{prompt['id']}", headers=headers).json
    assert (status["status"], status["mpesa_status"], status["receipt"]) == (
        "pending",
        "sent",
        None,
    )
    callback = client.post(
        f"/payments/{TOKEN}/stk/callback", json=stk_body(CHECKOUT, amount=500, receipt="TLA1B2C3D4")
    )
    assert callback.status_code == 200
    work()
    status = client.get(f"{API}/payments/stk-push/{prompt['id']}", headers=headers).json
    assert (status["status"], status["receipt"], status["result_code"]) == (
        "paid",
        "TLA1B2C3D4",
        "0",
    )
    assert status["completed_at"] is not None
    page = client.get(f"{API}/members/{world.member_no}/payments", headers=headers).json
    assert page["next_cursor"] is None
    [paid] = [p for p in page["items"] if p["channel"] == "stk"]
    assert (paid["receipt"], paid["amount"], paid["loan_no"], paid["prompt_id"]) == (
        "TLA1B2C3D4",
        "500.00",
        world.loan_no,
        prompt["id"],
    )
    # Every call is audited with the client.
    calls = n(AuditLog, AuditLog.actor == f"api:{client_id}", AuditLog.action == "api.call")
    assert calls == 4


def test_a_failed_prompt_reads_failed_with_mpesas_reason(
    client: FlaskClient, world: World, daraja: responses.RequestsMock
) -> None:
    headers = bearer(client, "payments:write", "payments:read")
    reply = post(client, "/payments/stk-push", {"loan_no": world.loan_no, "amount": "700"}, headers)
    work()
    client.post(f"/payments/{TOKEN}/stk/callback", json=stk_body(CHECKOUT, 1032))
    work()
    status = client.get(f"{API}/payments/stk-push/{reply.json['id']}", headers=headers).json
    assert (status["status"], status["result_code"], status["receipt"]) == ("failed", "1032", None)
    assert "cancelled" in status["result_desc"].lower()


def test_a_prompt_into_an_account_is_a_deposit_credited_once(
    client: FlaskClient, world: World, daraja: responses.RequestsMock
) -> None:
    headers = bearer(client, "payments:write", "payments:read")
    account_no = f"{world.member_no}SH"
    reply = post(
        client, "/payments/stk-push", {"account_no": account_no, "amount": "1500"}, headers
    )
    assert reply.status_code == 202, reply.get_data(as_text=True)
    assert (reply.json["purpose"], reply.json["account_no"], reply.json["loan_no"]) == (
        "deposit",
        account_no,
        None,
    )
    work()
    client.post(f"/payments/{TOKEN}/stk/callback", json=stk_body(CHECKOUT, amount=1500))
    work()
    status = client.get(f"{API}/payments/stk-push/{reply.json['id']}", headers=headers).json
    assert (status["status"], status["receipt"]) == ("paid", "NLJ7RT61SV")
    member = client.get(f"{API}/members/{world.member_no}", headers=bearer(client, "members:read"))
    assert member.json["share_capital"] == "1500.00"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"loan_no": "{loan_no}", "amount": "500.50"}, 422, "payment_refused"),
        ({"loan_no": "{loan_no}", "amount": "250001"}, 422, "payment_refused"),
        ({"loan_no": "{loan_no}", "amount": "0"}, 422, "payment_refused"),
        ({"loan_no": "L999999", "amount": "500"}, 422, "unknown_target"),
        ({"account_no": "M999999S", "amount": "500"}, 422, "unknown_target"),
        ({"account_no": "{member_no}F", "amount": "500"}, 422, "payment_refused"),
        (
            {"loan_no": "{loan_no}", "amount": "500", "phone": "0800 000 000"},
            422,
            "payment_refused",
        ),
        ({"loan_no": "{loan_no}", "account_no": "{member_no}", "amount": "5"}, 422, "invalid"),
        ({"amount": "500"}, 422, "invalid"),
        ({"loan_no": "{loan_no}", "amount": 500}, 422, "invalid"),
        ({"loan_no": "{loan_no}", "amount": "1e3"}, 422, "invalid"),
        ({"loan_no": "{loan_no}", "amount": "500", "extra": 1}, 422, "invalid"),
    ],
)
def test_a_prompt_that_cannot_be_sent_is_refused_with_a_code_and_nothing_written(
    client: FlaskClient, world: World, body: dict, status: int, code: str
) -> None:
    headers = bearer(client, "payments:write")
    payload = {k: v.format(**world.__dict__) if isinstance(v, str) else v for k, v in body.items()}
    reply = post(client, "/payments/stk-push", payload, headers)
    assert (reply.status_code, reply.json["code"]) == (status, code), reply.json
    assert reply.json["detail"]
    assert prompts() == 0


def test_a_second_prompt_for_the_loan_with_a_new_key_is_refused_while_one_is_on_its_way(
    client: FlaskClient, world: World
) -> None:
    headers = bearer(client, "payments:write")
    first = post(client, "/payments/stk-push", {"loan_no": world.loan_no, "amount": "500"}, headers)
    second = post(
        client, "/payments/stk-push", {"loan_no": world.loan_no, "amount": "600"}, headers
    )
    assert first.status_code == 202
    assert (second.status_code, second.json["code"]) == (422, "payment_refused")
    assert "already on its way" in second.json["detail"]
    assert prompts() == 1


def test_an_unknown_prompt_or_a_payout_is_not_found(client: FlaskClient, world: World) -> None:
    headers = bearer(client, "payments:read")
    payout = MpesaRequest(kind="b2c", status="pending", phone="254708374149", amount=100)
    db.session.add(payout)
    db.session.commit()
    for prompt_id in (payout.id, 999999, 10**30):
        reply = client.get(f"{API}/payments/stk-push/{prompt_id}", headers=headers)
        assert (reply.status_code, reply.json["code"]) == (404, "prompt_not_found")
    missing = client.get(f"{API}/members/M999999/payments", headers=headers)
    assert (missing.status_code, missing.json["code"]) == (404, "member_not_found")


def test_a_members_payments_come_a_page_at_a_time_newest_first(
    client: FlaskClient, world: World
) -> None:
    for n_ in range(3):
        db.session.add(
            Payment(
                receipt=f"TPG{n_}000000",
                channel="c2b",
                direction="in",
                amount=100 + n_,
                member_id=world.member_id,
                bill_ref=world.member_no,
            )
        )
    db.session.commit()
    headers = bearer(client, "payments:read")
    url = f"{API}/members/{world.member_no}/payments"
    first = client.get(url, query_string={"limit": 2}, headers=headers).json
    assert [p["amount"] for p in first["items"]] == ["102.00", "101.00"]
    assert first["items"][0]["loan_no"] is None
    rest = client.get(
        url, query_string={"limit": 2, "cursor": first["next_cursor"]}, headers=headers
    ).json
    assert [p["receipt"] for p in rest["items"]] == ["TPG0000000"] and rest["next_cursor"] is None
    huge = base64.urlsafe_b64encode(str(10**30).encode()).decode()
    for cursor in ("!!", huge):  # not ours; a number past any id never reaches the database
        bad = client.get(url, query_string={"cursor": cursor}, headers=headers)
        assert (bad.status_code, bad.json["code"]) == (400, "bad_cursor")


# -- Idempotency-Key ---------------------------------------------------------------------


def test_a_retry_with_the_same_key_gets_the_same_answer_and_one_prompt(
    client: FlaskClient, world: World
) -> None:
    headers = bearer(client, "payments:write")
    body = {"loan_no": world.loan_no, "amount": "500"}
    first = post(client, "/payments/stk-push", body, headers, idem="retry-1")
    again = post(client, "/payments/stk-push", body, headers, idem="retry-1")
    assert first.status_code == again.status_code == 202
    assert again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Location"] == first.headers["Location"]
    assert prompts() == 1
    # The same key with another body is refused, and writes nothing.
    other = post(client, "/payments/stk-push", {**body, "amount": "501"}, headers, idem="retry-1")
    assert (other.status_code, other.json["code"]) == (422, "idempotency_key_reused")
    assert prompts() == 1


def test_a_refusal_is_an_answer_a_retry_gets_again(client: FlaskClient, world: World) -> None:
    headers = bearer(client, "payments:write")
    body = {"loan_no": world.loan_no, "amount": "500.50"}
    first = post(client, "/payments/stk-push", body, headers, idem="refused-1")
    again = post(client, "/payments/stk-push", body, headers, idem="refused-1")
    assert first.status_code == again.status_code == 422
    assert again.get_data() == first.get_data() and again.headers["Idempotent-Replayed"] == "true"


def test_a_post_without_a_key_is_refused_and_writes_nothing(
    client: FlaskClient, world: World
) -> None:
    headers = bearer(client, "payments:write")
    for sent in ({}, {"Idempotency-Key": "  "}, {"Idempotency-Key": "k" * 256}):
        reply = client.post(
            f"{API}/payments/stk-push",
            json={"loan_no": world.loan_no, "amount": "500"},
            headers={**headers, **sent},
        )
        assert (reply.status_code, reply.json["code"]) == (400, "idempotency_key_required")
    assert prompts() == 0 and n(ApiIdempotencyKey) == 0


def test_keys_are_per_client(client: FlaskClient, world: World) -> None:
    """Another client's same key is its own: no replay of someone else's answer."""
    body = {"loan_no": world.loan_no, "amount": "500"}
    mine = post(client, "/payments/stk-push", body, bearer(client, "payments:write"), idem="k1")
    theirs = post(client, "/payments/stk-push", body, bearer(client, "payments:write"), idem="k1")
    assert mine.status_code == 202
    assert "Idempotent-Replayed" not in theirs.headers
    assert (theirs.status_code, theirs.json["code"]) == (422, "payment_refused")


def test_the_hourly_job_deletes_keys_past_their_keeping_and_keeps_the_rest(
    client: FlaskClient, world: World
) -> None:
    headers = bearer(client, "payments:write")
    body = {"loan_no": world.loan_no, "amount": "500"}
    for idem in ("answered-old", "dead-pending", "fresh-pending", "answered-new"):
        post(client, "/payments/stk-push", body, headers, idem=idem)
    hours = client.application.config["SETTINGS"].API_IDEMPOTENCY_HOURS
    now = utcnow()
    rows = {k.key: k for k in db.session.scalars(select(ApiIdempotencyKey))}
    rows["answered-old"].created_at = now - timedelta(hours=hours, minutes=1)
    rows["dead-pending"].status = "pending"
    rows["dead-pending"].created_at = now - timedelta(minutes=6)
    rows["fresh-pending"].status = "pending"
    rows["fresh-pending"].created_at = now - timedelta(minutes=4)
    rows["answered-new"].created_at = now - timedelta(hours=hours, minutes=-1)
    db.session.commit()

    run_job("api-idempotency-expire")
    db.session.remove()

    left = set(db.session.scalars(select(ApiIdempotencyKey.key)))
    assert left == {"fresh-pending", "answered-new"}
    run = db.session.scalars(select(JobRun).where(JobRun.job == "api-idempotency-expire"))
    assert [r.records_updated for r in run] == [2]
    # A deleted key is new again: the retry makes a request of its own.
    again = post(client, "/payments/stk-push", body, headers, idem="answered-old")
    assert "Idempotent-Replayed" not in again.headers


# -- two identical requests at the same instant (PostgreSQL, real threads) ---------------


def _blocked_by(pid: int) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"
                ),
                {"pid": pid},
            ).scalar_one()
        )


def _until(done: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


@dataclass
class Held:
    """A lock the test holds on a connection of its own until `release`."""

    conn: Connection
    pid: int

    def release(self) -> None:
        self.conn.rollback()


@pytest.fixture
def holder(app: Flask) -> Iterator[Callable[..., Held]]:
    held: list[Held] = []

    def hold(sql: str, **params: object) -> Held:
        conn = db.engine.connect()
        pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        conn.execute(text(sql), params)  # in the transaction the first statement began
        held.append(Held(conn, pid))
        return held[-1]

    yield hold
    for lock in held:
        lock.conn.close()


def _fire(url: str, body: dict, headers: dict[str, str]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        out.append(requests.post(url, json=body, headers=headers, timeout=30))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_two_identical_prompts_at_the_same_instant_make_one_and_both_get_its_answer(
    client: FlaskClient,
    world: World,
    pg: None,
    live_url: str,
    holder: Callable[..., Held],
) -> None:
    """Both requests are in flight together: the key table is locked until both wait on
    it, then let go at once. One claims the key and runs; the loan's row lock (held by
    the test) keeps it running while the other finds the key taken and waits for its
    answer; then both answer with the one prompt."""
    headers = {**bearer(client, "payments:write"), "Idempotency-Key": "same-instant"}
    db.session.commit()
    keys_lock = holder("LOCK TABLE api_idempotency_keys IN EXCLUSIVE MODE")
    loan_lock = holder("SELECT id FROM loans WHERE id = :id FOR UPDATE", id=world.loan_id)
    url = f"{live_url}{API}/payments/stk-push"
    body = {"loan_no": world.loan_no, "amount": "500"}
    threads = [_fire(url, body, headers) for _ in range(2)]
    _until(lambda: _blocked_by(keys_lock.pid) == 2, "both requests wait on the key table")
    keys_lock.release()
    _until(
        lambda: _blocked_by(loan_lock.pid) == 1, "the one that claimed the key waits on the loan"
    )
    loan_lock.release()
    replies = []
    for thread, out in threads:
        thread.join(30)
        assert not thread.is_alive()
        replies.append(out[0])
    assert [r.status_code for r in replies] == [202, 202], [r.text for r in replies]
    assert replies[0].content == replies[1].content
    assert sorted(r.headers.get("Idempotent-Replayed", "") for r in replies) == ["", "true"]
    assert prompts() == 1


def test_two_prompts_for_one_loan_at_the_same_instant_with_different_keys_make_one(
    client: FlaskClient,
    world: World,
    pg: None,
    live_url: str,
    holder: Callable[..., Held],
) -> None:
    """Different keys are different operations: the payments service's own lock on the
    loan lets one prompt through and refuses the other in words."""
    token = bearer(client, "payments:write")
    db.session.commit()
    loan_lock = holder("SELECT id FROM loans WHERE id = :id FOR UPDATE", id=world.loan_id)
    url = f"{live_url}{API}/payments/stk-push"
    body = {"loan_no": world.loan_no, "amount": "500"}
    threads = [_fire(url, body, {**token, "Idempotency-Key": f"k{i}"}) for i in range(2)]
    # The second waits behind the first in the row's queue: two sessions wait on a lock.
    wait_until_blocked(2)
    loan_lock.release()
    replies = []
    for thread, out in threads:
        thread.join(30)
        replies.append(out[0])
    assert sorted(r.status_code for r in replies) == [202, 422]
    refused = next(r for r in replies if r.status_code == 422).json()
    assert refused["code"] == "payment_refused"
    assert prompts() == 1


# -- promises ----------------------------------------------------------------------------


def test_a_promise_is_recorded_and_texted_and_a_retry_records_it_once(
    client: FlaskClient, world: World
) -> None:
    headers = bearer(client, "promises:write")
    when = (business_today() + timedelta(days=3)).isoformat()
    body = {"amount": "2500", "promised_date": when}
    first = post(client, f"/loans/{world.loan_no.lower()}/promises", body, headers, idem="p1")
    again = post(client, f"/loans/{world.loan_no}/promises", body, headers, idem="p1")
    assert first.status_code == 201, first.json
    assert (first.json["amount"], first.json["promised_date"], first.json["status"]) == (
        "2500.00",
        when,
        "open",
    )
    assert (first.json["loan_no"], first.json["channel"]) == (world.loan_no, "api")
    # The path differs in case only, so the request differs: a new key's business.
    assert (again.status_code, again.json["code"]) == (422, "idempotency_key_reused")
    retry = post(client, f"/loans/{world.loan_no.lower()}/promises", body, headers, idem="p1")
    assert retry.get_data() == first.get_data()
    assert n(PromiseToPay) == 1
    texted = n(SmsMessage, SmsMessage.template == "promise_recorded")
    assert texted == 1


@pytest.mark.parametrize(
    ("days", "amount", "code"),
    [
        (0, "1000", "promise_date"),
        (15, "1000", "promise_date"),
        (3, "99999999", "promise_too_much"),
        (3, "0", "promise_refused"),
    ],
)
def test_a_promise_the_rules_refuse_is_a_422_with_the_services_code(
    client: FlaskClient, world: World, days: int, amount: str, code: str
) -> None:
    headers = bearer(client, "promises:write")
    when = (business_today() + timedelta(days=days)).isoformat()
    reply = post(
        client,
        f"/loans/{world.loan_no}/promises",
        {"amount": amount, "promised_date": when},
        headers,
    )
    assert (reply.status_code, reply.json["code"]) == (422, code), reply.json
    assert n(PromiseToPay) == 0


def test_a_second_open_promise_or_a_loan_not_late_is_refused(
    client: FlaskClient, world: World
) -> None:
    headers = bearer(client, "promises:write")
    body = {"amount": "1000", "promised_date": (business_today() + timedelta(days=2)).isoformat()}
    assert post(client, f"/loans/{world.loan_no}/promises", body, headers).status_code == 201
    second = post(client, f"/loans/{world.loan_no}/promises", body, headers)
    assert (second.status_code, second.json["code"]) == (422, "promise_open")
    current = make_loan(product=make_product("V1", code="V1-NEW"), on=business_today())
    not_late = post(client, f"/loans/{current.loan_no}/promises", body, headers)
    assert (not_late.status_code, not_late.json["code"]) == (422, "promise_not_in_arrears")
    missing = post(client, "/loans/L999999/promises", body, headers)
    assert (missing.status_code, missing.json["code"]) == (404, "loan_not_found")
    assert n(PromiseToPay) == 1


# -- guarantee requests and answers ------------------------------------------------------


def test_a_guarantor_sees_the_request_and_accepts_it_once(
    client: FlaskClient, world: World
) -> None:
    reader = bearer(client, "guarantees:read")
    writer = bearer(client, "guarantees:write")
    listed = client.get(f"{API}/members/{world.guarantor_no}/guarantee-requests", headers=reader)
    [asked] = listed.json["items"]
    assert (asked["id"], asked["amount"], asked["status"], asked["answerable"]) == (
        world.guarantee_id,
        "5000.00",
        "requested",
        True,
    )
    assert asked["guarantor_no"] == world.guarantor_no and asked["replaces_another"] is False
    url = f"/guarantee-requests/{world.guarantee_id}/answer"
    body = {"answer": "accept", "amount": "5000", "member_no": world.guarantor_no}
    first = post(client, url, body, writer, idem="g1")
    again = post(client, url, body, writer, idem="g1")
    assert first.status_code == 200, first.json
    assert (first.json["status"], first.json["answered_via"]) == ("accepted", "api")
    assert again.get_data() == first.get_data() and again.headers["Idempotent-Replayed"] == "true"
    # A new key is a new answer: refused, it was answered already.
    late = post(client, url, {"answer": "decline"}, writer)
    assert (late.status_code, late.json["code"]) == (422, "guarantee_refused")
    assert "accepted already" in late.json["detail"]
    db.session.rollback()
    assert db.session.get(Guarantee, world.guarantee_id).status == "accepted"
    listed = client.get(f"{API}/members/{world.guarantor_no}/guarantee-requests", headers=reader)
    assert listed.json["items"][0]["answerable"] is False
    # The applicant is told, as for an SMS answer.
    told = SmsMessage.template.in_(("guarantee_request", "guarantee_accepted"))
    assert n(SmsMessage, told) == 2


def test_a_decline_is_recorded(client: FlaskClient, world: World) -> None:
    reply = post(
        client,
        f"/guarantee-requests/{world.guarantee_id}/answer",
        {"answer": "decline"},
        bearer(client, "guarantees:write"),
    )
    assert (reply.status_code, reply.json["status"]) == (200, "declined")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"answer": "accept", "amount": "4000"}, 422, "amount_mismatch"),
        ({"answer": "accept", "member_no": "M999999"}, 422, "not_the_guarantor"),
        ({"answer": "maybe"}, 422, "invalid"),
        ({}, 422, "invalid"),
    ],
)
def test_an_answer_that_does_not_fit_the_request_changes_nothing(
    client: FlaskClient, world: World, body: dict, status: int, code: str
) -> None:
    url = f"/guarantee-requests/{world.guarantee_id}/answer"
    reply = post(client, url, body, bearer(client, "guarantees:write"))
    assert (reply.status_code, reply.json["code"]) == (status, code)
    db.session.rollback()
    assert db.session.get(Guarantee, world.guarantee_id).status == "requested"


def test_an_accept_beyond_the_free_deposits_is_refused_in_words(
    client: FlaskClient, world: World
) -> None:
    poor = make_member(savings=100)
    application = db.session.scalar(select(Loan).where(Loan.status == "submitted"))
    asked = guarantee_request(
        loan_id=application.id, guarantor_id=poor.id, amount=3000, actor="member:test"
    )
    reply = post(
        client,
        f"/guarantee-requests/{asked.id}/answer",
        {"answer": "accept"},
        bearer(client, "guarantees:write"),
    )
    assert (reply.status_code, reply.json["code"]) == (422, "guarantee_refused")
    assert "free deposits" in reply.json["detail"]
    writer = bearer(client, "guarantees:write")
    for guarantee_id in (999999, 10**30):
        missing = post(
            client, f"/guarantee-requests/{guarantee_id}/answer", {"answer": "accept"}, writer
        )
        assert (missing.status_code, missing.json["code"]) == (404, "guarantee_not_found")
