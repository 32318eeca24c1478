"""Signed webhooks, end to end: a client subscribes through the API, a Paybill payment
confirmed through the real callback path becomes a payment.received delivery, the RQ job
posts it to the receiver (faked at HTTP with `responses`) and the test checks the
signature with its own HMAC; a receiver answering 500 is retried until it takes it;
deliveries failing after every retry disable the subscription and the dashboard tells an
admin; an admin re-sends from the console; the subscription API's 401/403 and checks.
Loans' events come from the real loan services and the nightly arrears job."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.cli.runtime import make_worker
from app.extensions import db
from app.models import AuditLog, Member, WebhookDelivery, WebhookSubscription
from app.services.api_clients import Registered, api_client_register
from app.services.guarantees import guarantee_request
from app.services.loans import loan_apply, loan_repay, loans_update_arrears
from app.services.sms import sms_deliver, sms_queue
from app.services.webhooks import webhook_emit
from tests.factories import make_member
from tests.helpers import browse, c2b_body, login, post_form, staff
from tests.loan_factories import make_borrower, make_loan, make_product, make_staff, run_job

TOKEN = "dev-callback-token"  # noqa: S105 - the test settings' CALLBACK_TOKEN
RECEIVER = "https://erp.example.co.ke/sacco/events"
NOW = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)  # 12:30 in Nairobi, outside quiet hours


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
def settings(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Retries with no wait (RQ requeues at once, so a burst worker runs them all), and a
    subscription disabled after 2 deliveries failed in a row."""

    def change(**values: object) -> None:
        monkeypatch.setitem(
            app.config, "SETTINGS", dataclasses.replace(app.config["SETTINGS"], **values)
        )

    change(WEBHOOK_RETRY_SECONDS="0,0,0", WEBHOOK_DISABLE_AFTER=2)
    yield change


@pytest.fixture
def receiver() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def call(client: FlaskClient, path: str, method: str = "GET", **kwargs: Any):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's read transaction would hold the write lock
    return browse(client, path, method, **kwargs)


def register(scopes: list[str]) -> Registered:
    return api_client_register(name="Acme ERP", scopes=scopes, staff=make_staff("admin"))


def token_for(client: FlaskClient, reg: Registered) -> dict[str, str]:
    reply = call(
        client,
        "/api/v1/oauth/token",
        "POST",
        data={"grant_type": "client_credentials"},
        auth=(reg.client.client_id, reg.secret),
    )
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return {"Authorization": f"Bearer {reply.get_json()['access_token']}"}


def subscribe(
    client: FlaskClient,
    headers: dict[str, str],
    events: list[str],
    url: str = RECEIVER,
    key: str = "sub-1",
):  # noqa: ANN201
    return call(
        client,
        "/api/v1/webhooks",
        "POST",
        json={"url": url, "events": events},
        headers={**headers, "Idempotency-Key": key},
    )


def subscribed(client: FlaskClient, events: list[str], scopes: list[str]) -> dict[str, Any]:
    reg = register(["webhooks:manage", *scopes])
    reply = subscribe(client, token_for(client, reg), events)
    assert reply.status_code == 201, reply.get_data(as_text=True)
    return dict(reply.get_json())


def work() -> None:
    make_worker(("payments", "default")).work(burst=True)
    db.session.remove()


def paybill(client: FlaskClient, receipt: str, account: str, amount: str = "1000") -> None:
    reply = client.post(
        f"/payments/{TOKEN}/c2b/confirmation",
        data=json.dumps(c2b_body(receipt, amount=amount, account=account)),
        content_type="application/json",
    )
    assert reply.status_code == 200 and reply.json["ResultCode"] == 0
    work()


def deliveries() -> list[WebhookDelivery]:
    return list(db.session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def subscription(subscription_id: int) -> WebhookSubscription:
    found = db.session.get(WebhookSubscription, subscription_id)
    assert found is not None
    return found


def verify(secret: str, headers: Any, body: bytes) -> bool:
    """The receiver's check, written here from the documented scheme (never our signing
    function): HMAC-SHA256 of "<timestamp>.<body>" with the secret, hex, after "v1="."""
    timestamp = headers["X-Sacco-Timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    scheme, _, given = headers["X-Sacco-Signature"].partition("=")
    return scheme == "v1" and hmac.compare_digest(expected.hexdigest(), given)


def member_no() -> str:
    member = make_member()
    db.session.commit()
    return str(member.member_no)


# -- a payment announced, signed ----------------------------------------------------------


def test_a_paybill_payment_is_delivered_once_signed_with_the_subscription_secret(
    client: FlaskClient, settings: Any, receiver: responses.RequestsMock
) -> None:
    sub = subscribed(client, ["payment.received"], ["payments:read"])
    assert sub["secret"].startswith("whsec_") and sub["events"] == ["payment.received"]
    receiver.add(responses.POST, RECEIVER, json={"ok": True}, status=200)
    number = member_no()

    paybill(client, "RKTWEBHK01", number)

    [sent] = receiver.calls
    request = sent.request
    body = request.body if isinstance(request.body, bytes) else str(request.body).encode()
    assert verify(sub["secret"], request.headers, body)
    assert not verify(sub["secret"], request.headers, body.replace(b"1000.00", b"9000.00"))
    assert not verify("whsec_another", request.headers, body)
    assert request.headers["X-Sacco-Event"] == "payment.received"
    event = json.loads(body)
    assert event["event"] == "payment.received" and event["id"] == "payment.received:RKTWEBHK01"
    assert event["data"]["receipt"] == "RKTWEBHK01"
    assert event["data"]["amount"] == "1000.00"  # money as a string, two decimals
    assert event["data"]["member_no"] == number and event["data"]["status"] == "posted"
    assert "phone" not in event["data"] and "254" not in body.decode()  # no phone number

    [delivery] = deliveries()
    assert request.headers["X-Sacco-Delivery"] == str(delivery.id)
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("sent", 1, 200)
    assert delivery.response_body == '{"ok": true}' and delivery.sent_at is not None

    # The same confirmation again (M-PESA repeats itself): the payment is in once, and so
    # is its event.
    paybill(client, "RKTWEBHK01", number)
    assert len(deliveries()) == 1 and len(receiver.calls) == 1


def test_money_to_suspense_is_announced_as_such(
    client: FlaskClient, settings: Any, receiver: responses.RequestsMock
) -> None:
    subscribed(client, ["payment.received"], ["payments:read"])
    receiver.add(responses.POST, RECEIVER, status=204)
    paybill(client, "RKTWEBHK02", "NOBODY-123")
    [delivery] = deliveries()
    data = json.loads(delivery.body)["data"]
    assert data["status"] == "suspense" and data["member_no"] is None
    assert data["account_reference"] == "NOBODY-123"
    assert delivery.status == "sent"


def test_a_failing_receiver_is_retried_until_it_takes_the_delivery(
    client: FlaskClient, settings: Any, receiver: responses.RequestsMock
) -> None:
    sub = subscribed(client, ["payment.received"], ["payments:read"])
    receiver.add(responses.POST, RECEIVER, body="down", status=500)
    receiver.add(responses.POST, RECEIVER, body="still down", status=503)
    receiver.add(responses.POST, RECEIVER, body="thanks", status=200)

    paybill(client, "RKTWEBHK03", member_no())

    assert [c.response.status_code for c in receiver.calls] == [500, 503, 200]  # type: ignore[union-attr]
    # Each attempt signed anew, each signature good.
    for attempt in receiver.calls:
        raw = attempt.request.body
        assert verify(
            sub["secret"], attempt.request.headers, raw if isinstance(raw, bytes) else b""
        )
    [delivery] = deliveries()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("sent", 3, 200)
    assert delivery.last_error is None and delivery.response_body == "thanks"
    assert subscription(sub["id"]).failures == 0 and subscription(sub["id"]).active


def test_deliveries_failing_after_every_retry_disable_the_subscription_and_admins_see_it(
    app: Flask, client: FlaskClient, settings: Any, receiver: responses.RequestsMock
) -> None:
    settings(WEBHOOK_RETRY_SECONDS="0")  # one retry: two attempts a delivery
    sub = subscribed(client, ["payment.received"], ["payments:read"])
    receiver.add(responses.POST, RECEIVER, body="broken", status=500)
    number = member_no()

    paybill(client, "RKTWEBHK04", number)
    first = deliveries()[0]
    assert (first.status, first.attempts, first.response_status) == ("failed", 2, 500)
    assert first.last_error == "the receiver answered HTTP 500"
    assert subscription(sub["id"]).active and subscription(sub["id"]).failures == 1

    paybill(client, "RKTWEBHK05", number)
    off = subscription(sub["id"])
    assert not off.active and off.failures == 2 and off.disabled_at is not None
    assert off.disabled_reason == "2 deliveries in a row failed after every retry"
    assert db.session.scalar(
        select(func.count()).select_from(AuditLog).where(AuditLog.action == "webhook.disable")
    )
    assert len(receiver.calls) == 4

    # Off: a new payment writes no delivery and nothing is posted.
    paybill(client, "RKTWEBHK06", number)
    assert len(deliveries()) == 2 and len(receiver.calls) == 4

    admin = app.test_client()
    db.session.commit()
    login(admin, staff("admin"))
    page = call(admin, "/admin/").get_data(as_text=True)
    assert 'id="webhooks-disabled"' in page and RECEIVER in page
    assert "2 deliveries in a row failed after every retry" in page
    officer = app.test_client()
    login(officer, staff("loan_officer"))
    assert 'id="webhooks-disabled"' not in call(officer, "/admin/").get_data(as_text=True)


def test_an_admin_resends_a_delivery_from_the_console(
    app: Flask, client: FlaskClient, settings: Any, receiver: responses.RequestsMock
) -> None:
    settings(WEBHOOK_RETRY_SECONDS="0", WEBHOOK_DISABLE_AFTER=1)
    sub = subscribed(client, ["payment.received"], ["payments:read"])
    failing = receiver.add(responses.POST, RECEIVER, body="broken", status=500)
    paybill(client, "RKTWEBHK07", member_no())
    [delivery] = deliveries()
    assert delivery.status == "failed" and not subscription(sub["id"]).active
    path = f"/admin/webhooks/deliveries/{delivery.id}"

    admin = app.test_client()
    db.session.commit()
    login(admin, staff("admin"))
    page = call(admin, "/admin/webhooks/").get_data(as_text=True)
    assert f'id="delivery-{delivery.id}"' in page and "RKTWEBHK07" in page
    assert f'id="enable-{sub["id"]}"' in page
    assert 'id="resend-form"' in call(admin, path).get_data(as_text=True)

    # Its subscription is off: the re-send is refused in words until it is enabled.
    db.session.commit()
    refused = post_form(admin, f"{path}/resend")
    assert refused.status_code == 302
    assert "enable it first" in call(admin, path).get_data(as_text=True)
    officer = app.test_client()
    login(officer, staff("loan_officer"))
    db.session.commit()
    assert (
        post_form(officer, f"/admin/webhooks/subscriptions/{sub['id']}/enable").status_code == 403
    )
    assert post_form(officer, f"{path}/resend").status_code == 403

    receiver.remove(failing)
    receiver.add(responses.POST, RECEIVER, body="fixed", status=200)
    db.session.commit()
    post_form(admin, f"/admin/webhooks/subscriptions/{sub['id']}/enable")
    assert subscription(sub["id"]).active and subscription(sub["id"]).failures == 0
    db.session.commit()
    post_form(admin, f"{path}/resend")
    work()
    again = db.session.get(WebhookDelivery, delivery.id)
    assert again is not None
    assert (again.status, again.attempts, again.response_status) == ("sent", 3, 200)
    assert len(deliveries()) == 1  # the same delivery, its event id and body unchanged
    last = receiver.calls[-1].request
    raw = last.body if isinstance(last.body, bytes) else b""
    assert verify(sub["secret"], last.headers, raw) and raw.decode() == again.body
    actions = set(db.session.scalars(select(AuditLog.action)))
    assert {"webhook.resend", "webhook.enable"} <= actions


# -- the subscription API --------------------------------------------------------------


def test_the_subscription_api_needs_a_token_with_webhooks_manage(client: FlaskClient) -> None:
    assert call(client, "/api/v1/webhooks").status_code == 401
    body = {"url": RECEIVER, "events": ["payment.received"]}
    no_token = call(client, "/api/v1/webhooks", "POST", json=body)
    assert no_token.status_code == 401
    assert no_token.get_json()["code"] == "unauthorized"
    reader = token_for(client, register(["payments:read"]))
    refused = subscribe(client, reader, ["payment.received"])
    assert refused.status_code == 403 and refused.get_json()["code"] == "insufficient_scope"
    assert call(client, "/api/v1/webhooks", headers=reader).status_code == 403
    assert call(client, "/api/v1/webhooks/1", "DELETE", headers=reader).status_code == 403
    assert db.session.scalar(select(func.count()).select_from(WebhookSubscription)) == 0


def test_each_event_needs_the_scope_that_reads_what_it_carries(client: FlaskClient) -> None:
    headers = token_for(client, register(["webhooks:manage", "loans:read"]))
    refused = subscribe(client, headers, ["loan.approved", "payment.received"])
    assert refused.status_code == 403
    assert refused.get_json()["code"] == "insufficient_scope"
    assert "payments:read" in refused.get_json()["detail"]
    assert subscribe(client, headers, ["loan.approved"], key="sub-2").status_code == 201


def test_subscriptions_are_checked_listed_replayed_and_deleted(
    client: FlaskClient, settings: Any, receiver: responses.RequestsMock
) -> None:
    headers = token_for(client, register(["webhooks:manage", "payments:read"]))
    for url, events, code in [
        ("http://erp.example.co.ke/hook", ["payment.received"], "invalid_webhook"),
        ("https://169.254.169.254/latest", ["payment.received"], "invalid_webhook"),
        ("https://user:pw@erp.example.co.ke/x", ["payment.received"], "invalid_webhook"),
        (RECEIVER, ["payment.sent"], "invalid"),
        (RECEIVER, [], "invalid"),
    ]:
        reply = subscribe(client, headers, events, url=url, key=f"bad-{url}-{events}")
        assert reply.status_code in (400, 422), (url, events, reply.get_data(as_text=True))
        assert reply.get_json()["code"] == code, reply.get_json()
    assert subscribe(client, headers, ["payment.received"], url="http://x").status_code == 422
    assert db.session.scalar(select(func.count()).select_from(WebhookSubscription)) == 0

    # http to this machine is for testing a receiver locally.
    local = subscribe(client, headers, ["payment.received"], url="http://127.0.0.1:9/x", key="l")
    assert local.status_code == 201
    missing_key = call(
        client,
        "/api/v1/webhooks",
        "POST",
        json={"url": RECEIVER, "events": ["payment.received"]},
        headers=headers,
    )
    assert missing_key.status_code == 400
    created = subscribe(client, headers, ["payment.received"], key="sub-main")
    replayed = subscribe(client, headers, ["payment.received"], key="sub-main")
    assert created.status_code == replayed.status_code == 201
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.get_json() == created.get_json()
    sub_id = created.get_json()["id"]
    assert db.session.scalar(select(func.count()).select_from(WebhookSubscription)) == 2

    listed = call(client, "/api/v1/webhooks", headers=headers).get_json()
    assert [s["id"] for s in listed["items"]] == [sub_id, local.get_json()["id"]]
    assert all("secret" not in s for s in listed["items"])  # shown once, at creation
    one = call(client, f"/api/v1/webhooks/{sub_id}", headers=headers)
    assert one.status_code == 200 and "secret" not in one.get_json()

    # Another client's subscription is as if it did not exist.
    other = token_for(client, register(["webhooks:manage"]))
    assert call(client, f"/api/v1/webhooks/{sub_id}", headers=other).status_code == 404
    assert call(client, f"/api/v1/webhooks/{sub_id}", "DELETE", headers=other).status_code == 404
    huge = "/api/v1/webhooks/99999999999999999999"
    assert call(client, huge, headers=headers).status_code == 404
    assert call(client, huge, "DELETE", headers=headers).status_code == 404

    assert call(client, f"/api/v1/webhooks/{sub_id}", "DELETE", headers=headers).status_code == 204
    assert call(client, f"/api/v1/webhooks/{sub_id}", headers=headers).status_code == 404
    listed = call(client, "/api/v1/webhooks", headers=headers).get_json()
    assert [s["id"] for s in listed["items"]] == [local.get_json()["id"]]
    assert (
        call(
            client, f"/api/v1/webhooks/{local.get_json()['id']}", "DELETE", headers=headers
        ).status_code
        == 204
    )

    # Deleted: a payment announces itself to nobody.
    paybill(client, "RKTWEBHK08", member_no())
    assert deliveries() == [] and len(receiver.calls) == 0


# -- loans' events ---------------------------------------------------------------------


def test_loans_announce_approval_payout_and_falling_overdue_once(
    client: FlaskClient, settings: Any, receiver: responses.RequestsMock
) -> None:
    subscribed(client, ["loan.approved", "loan.disbursed", "loan.overdue"], ["loans:read"])
    receiver.add(responses.POST, RECEIVER, status=200)
    loan = make_loan(product=make_product("V1"), on=date(2026, 1, 1))
    loan_no = loan.loan_no
    owner = db.session.scalar(select(Member.member_no).where(Member.id == loan.member_id))
    run_job("loan-arrears", date(2026, 2, 3))  # the first installment (1 Feb) is 2 days late
    run_job("loan-arrears", date(2026, 2, 4))  # still late: not announced again
    work()

    sent = {d.event: json.loads(d.body) for d in deliveries()}
    assert sorted(sent) == ["loan.approved", "loan.disbursed", "loan.overdue"]
    assert len(deliveries()) == 3 and all(d.status == "sent" for d in deliveries())
    assert sent["loan.approved"]["data"]["loan_no"] == loan_no
    assert sent["loan.approved"]["data"]["member_no"] == owner
    assert sent["loan.disbursed"]["data"]["principal"] == "10000.00"
    assert sent["loan.disbursed"]["data"]["disbursed_on"] == "2026-01-01"
    overdue = sent["loan.overdue"]["data"]
    assert overdue["loan_no"] == loan_no and overdue["days_past_due"] == 2
    assert overdue["overdue_since"] == "2026-02-01"
    assert sent["loan.overdue"]["id"] == f"loan.overdue:{loan_no}:2026-02-01"


def test_a_loan_paid_up_before_its_chunk_locks_it_is_not_announced_overdue(
    client: FlaskClient, settings: Any, receiver: responses.RequestsMock
) -> None:
    """The night's scan listed the loan, then a payment brought it up to date before its
    chunk took the lock: the chunk finds nothing late, changes nothing, announces nothing."""
    subscribed(client, ["loan.overdue"], ["loans:read"])
    receiver.add(responses.POST, RECEIVER, status=200)
    loan = make_loan(product=make_product("V1"), on=date(2026, 1, 1))
    loan_repay(
        loan_id=loan.id, amount="888.49", reference="RCUPTO0001", value_date=date(2026, 2, 2)
    )

    assert loans_update_arrears([loan.id], as_of=date(2026, 2, 3)) == 0
    db.session.commit()
    work()

    assert deliveries() == [] and len(receiver.calls) == 0


def test_nothing_is_queued_for_a_transaction_that_rolls_back(
    client: FlaskClient, settings: Any, receiver: responses.RequestsMock
) -> None:
    subscribed(client, ["loan.approved"], ["loans:read"])
    receiver.add(responses.POST, RECEIVER, status=200)
    assert webhook_emit("loan.approved", {"loan_no": "L000999"}, key="L000999") == 1
    assert len(deliveries()) == 1  # in this transaction
    db.session.rollback()  # abandoned, as a failing request's is
    work()
    assert deliveries() == [] and len(receiver.calls) == 0

    webhook_emit("loan.approved", {"loan_no": "L000999"}, key="L000999")
    db.session.commit()
    work()
    assert [d.status for d in deliveries()] == ["sent"] and len(receiver.calls) == 1


# -- SMS and guarantees' events ----------------------------------------------------------


def test_a_delivery_report_and_a_guarantee_request_are_announced(
    app: Flask, client: FlaskClient, settings: Any, receiver: responses.RequestsMock
) -> None:
    subscribed(
        client,
        ["sms.delivered", "guarantee.requested"],
        ["members:read", "guarantees:read"],
    )
    receiver.add(responses.POST, RECEIVER, status=200)
    # The SMS provider (our Africa's Talking stand-in's address), faked at HTTP too.
    at_url = f"{app.config['SETTINGS'].at_base_url}/version1/messaging"
    accepted = {
        "SMSMessageData": {
            "Message": "Sent to 1/1 Total Cost: KES 0.8000",
            "Recipients": [
                {
                    "statusCode": 101,
                    "number": "+254700000777",
                    "status": "Success",
                    "cost": "KES 0.8000",
                    "messageId": "ATXid_webhook",
                }
            ],
        }
    }
    receiver.add(responses.POST, at_url, json=accepted, status=201)
    member = make_member(phone="0700000777")
    message = sms_queue(
        template="deposit_received",
        body="Deposit of KES 500.00 received. Code 123456",
        phone=member.phone,
        idempotency_key="receipt:webhook-dlr",
        member=member,
        now=NOW,
    )
    db.session.commit()
    assert sms_deliver(message_id=message.id, now=NOW) == "sent"
    form = {"id": "ATXid_webhook", "status": "Success", "phoneNumber": "+254700000777"}
    assert client.post("/sms/delivery-reports", data=form).status_code == 200
    assert client.post("/sms/delivery-reports", data=form).status_code == 200  # again

    product = make_product("V1", code="SEC", name="Development", min_guarantors=1)
    borrower = make_borrower(savings=10000)
    loan = loan_apply(
        member_id=borrower.id, product_id=product.id, amount=20000, as_of=date(2026, 3, 2)
    )
    guarantor = make_member(savings=50000)
    db.session.commit()
    guarantee = guarantee_request(
        loan_id=loan.id,
        guarantor_id=guarantor.id,
        amount=10000,
        actor="member:test",
        today=date(2026, 3, 2),
    )
    ids = {
        "sms": message.id,
        "member": member.member_no,
        "guarantee": guarantee.id,
        "loan": loan.loan_no,
        "guarantor": guarantor.member_no,
    }
    work()

    sent = {d.event: json.loads(d.body) for d in deliveries()}
    assert sorted(sent) == ["guarantee.requested", "sms.delivered"]
    assert len(deliveries()) == 2 and all(d.status == "sent" for d in deliveries())
    sms = sent["sms.delivered"]["data"]
    assert sms["sms_id"] == ids["sms"] and sms["template"] == "deposit_received"
    assert sms["member_no"] == ids["member"]
    assert "123456" not in json.dumps(sent)  # an SMS body (a code, maybe) never leaves
    asked = sent["guarantee.requested"]["data"]
    assert asked["guarantee_id"] == ids["guarantee"] and asked["loan_no"] == ids["loan"]
    assert asked["guarantor_member_no"] == ids["guarantor"]
    assert asked["amount"] == "10000.00"


def test_a_delivery_whose_send_job_was_lost_is_queued_again_by_the_sweep(
    client: FlaskClient, settings: Any, receiver: responses.RequestsMock
) -> None:
    """Redis lost the send job (down at the commit that wrote the delivery): the row stays
    pending, and the five-minute sweep queues it again once it is five minutes old."""
    from datetime import timedelta

    from app.extensions import queue

    subscribed(client, ["payment.received"], ["payments:read"])
    receiver.add(responses.POST, RECEIVER, status=200)
    webhook_emit("payment.received", {"receipt": "RKTLOST001"}, key="RKTLOST001")
    db.session.commit()
    queue("default").empty()  # the send job never reached Redis
    [delivery] = deliveries()
    delivery_id = delivery.id

    run_job("webhook-sweep", date.today())  # too young to be lost: left alone
    work()
    assert db.session.get(WebhookDelivery, delivery_id).status == "pending"
    assert len(receiver.calls) == 0

    delivery = db.session.get(WebhookDelivery, delivery_id)
    delivery.created_at = delivery.created_at - timedelta(minutes=6)
    db.session.commit()
    run_job("webhook-sweep", date.today())
    work()
    sent = db.session.get(WebhookDelivery, delivery_id)
    assert (sent.status, sent.attempts) == ("sent", 1)
    assert len(receiver.calls) == 1
