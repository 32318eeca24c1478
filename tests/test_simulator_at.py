"""The Africa's Talking stand-in, driven by the real SDK gateway over real HTTP.

The test app is served by a werkzeug server on a free port; a second app, built with
AT_API_BASE_URL pointing at it, sends through `SmsGateway` exactly as `make run` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.extensions import db
from app.models import SmsInbound, SmsMessage
from app.services.sms import sms_deliver, sms_queue
from tests.factories import make_member
from tests.helpers import PRODUCTION, make_app

NOW = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
PHONE = "+254700000001"
SEND = "/simulator/at/version1/messaging"
HEADERS = {"apiKey": "any-key", "Accept": "application/json"}


@pytest.fixture
def sender(app: Flask, _urls: dict[str, str], live_url: str) -> Iterator[Flask]:
    """An app whose SMS go to the simulator over HTTP, with a sender id."""
    other = make_app(_urls, AT_API_BASE_URL=f"{live_url}/simulator/at", AT_SENDER_ID="SACCO")
    try:
        yield other
    finally:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
        other.extensions["redis"].close()


def send(sender: Flask, *, key: str, body: str, phone: str = "254700000001") -> SmsMessage:
    """Queue one message and run its send job in the sending app; return the fresh row."""
    with sender.app_context():
        message = sms_queue(template="help", body=body, phone=phone, idempotency_key=key, now=NOW)
        db.session.commit()
        sms_deliver(message_id=message.id, now=NOW)
        db.session.expunge_all()
        fresh = db.session.get(SmsMessage, message.id)
        assert fresh is not None
        db.session.expunge(fresh)
        return fresh


def inbox(client: FlaskClient, phone: str = "0700000001") -> list[dict]:
    response = client.get(f"/simulator/at/inbox/{phone}")
    assert response.status_code == 200
    return response.get_json()["messages"]


def test_the_sdk_sends_to_the_simulator_and_the_phone_gets_it(
    app: Flask, client: FlaskClient, sender: Flask
) -> None:
    message = send(sender, key="k1", body="Savings KES 1,000.00.")

    assert message.status == "sent"
    assert message.status_code == 101
    assert (message.provider_message_id or "").startswith("ATXid_")
    assert message.cost == "KES 0.8000"
    [received] = inbox(client)
    assert received["message"] == "Savings KES 1,000.00."
    assert received["messageId"] == message.provider_message_id
    assert (received["from"], received["to"], received["status"]) == ("SACCO", PHONE, "Submitted")
    # The same inbox whatever form the number is asked for in.
    assert inbox(client, "254700000001") == inbox(client, "+254700000001") == [received]


def test_a_chosen_status_code_is_used_once(app: Flask, client: FlaskClient, sender: Flask) -> None:
    for code in (500, 405):
        answer = client.post(
            "/simulator/at/next-status", json={"phone": "0700000001", "statusCode": code}
        )
        assert answer.status_code == 200
    assert answer.get_json() == {"phone": PHONE, "queued": [500, 405]}

    first = send(sender, key="k1", body="one")
    second = send(sender, key="k2", body="two")
    third = send(sender, key="k3", body="three")

    assert (first.status, first.status_code, first.provider_status) == (
        "retrying",
        500,
        "InternalServerError",
    )
    assert (second.status, second.status_code) == ("retrying", 405)
    assert (third.status, third.status_code) == ("sent", 101)
    assert [m["message"] for m in inbox(client)] == ["three"]


@pytest.mark.parametrize(
    ("code", "status"), [(403, "InvalidPhoneNumber"), (406, "UserInBlacklist")]
)
def test_a_final_status_fails_the_message_and_nothing_arrives(
    app: Flask, client: FlaskClient, sender: Flask, code: int, status: str
) -> None:
    client.post("/simulator/at/next-status", data={"phone": PHONE, "statusCode": str(code)})

    message = send(sender, key="k1", body="never")

    assert (message.status, message.status_code, message.provider_status) == (
        "failed",
        code,
        status,
    )
    assert message.attempts == 1
    assert inbox(client) == []


def test_the_reply_is_the_providers_exact_json(app: Flask, client: FlaskClient) -> None:
    response = client.post(
        SEND,
        headers=HEADERS,
        data={
            "username": "sandbox",
            "to": f"{PHONE},+254700000002",
            "message": "Hi",
            "bulkSMSMode": "1",
        },
    )

    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/json"
    body = response.get_json()
    assert body["SMSMessageData"]["Message"] == "Sent to 2/2 Total Cost: KES 1.6000"
    recipients = body["SMSMessageData"]["Recipients"]
    assert [sorted(r) for r in recipients] == [
        ["cost", "messageId", "number", "status", "statusCode"]
    ] * 2
    assert [(r["statusCode"], r["number"], r["status"], r["cost"]) for r in recipients] == [
        (101, PHONE, "Success", "KES 0.8000"),
        (101, "+254700000002", "Success", "KES 0.8000"),
    ]
    assert recipients[0]["messageId"] != recipients[1]["messageId"]
    assert all(len(r["messageId"]) > len("ATXid_") for r in recipients)


@pytest.mark.parametrize(
    ("headers", "form", "status", "says"),
    [
        ({"Accept": "application/json"}, {}, 401, "authentication"),
        ({**HEADERS, "apiKey": ""}, {}, 401, "authentication"),
        (HEADERS, {"username": ""}, 400, "username"),
        (HEADERS, {"to": ""}, 400, "'to'"),
        (HEADERS, {"message": ""}, 400, "message"),
        (HEADERS, {"message": "   "}, 400, "message"),
        (HEADERS, {"bulkSMSMode": ""}, 400, "bulkSMSMode"),
        (HEADERS, {"bulkSMSMode": "0"}, 400, "bulkSMSMode"),
        ({"apiKey": "k"}, {}, 406, "application/json"),
    ],
)
def test_bad_requests_fail_here_first(
    app: Flask,
    client: FlaskClient,
    headers: dict[str, str],
    form: dict[str, str],
    status: int,
    says: str,
) -> None:
    data = {"username": "sandbox", "to": PHONE, "message": "Hi", "bulkSMSMode": "1", **form}

    response = client.post(SEND, headers=headers, data=data)

    assert response.status_code == status
    assert says in response.get_data(as_text=True)
    assert inbox(client) == []


def test_a_number_without_plus_is_refused_per_recipient(app: Flask, client: FlaskClient) -> None:
    data = {"username": "sandbox", "to": "254700000001", "message": "Hi", "bulkSMSMode": "1"}

    body = client.post(SEND, headers=HEADERS, data=data).get_json()

    assert body["SMSMessageData"]["Recipients"] == [
        {
            "statusCode": 403,
            "number": "254700000001",
            "status": "InvalidPhoneNumber",
            "cost": "0",
            "messageId": "None",
        }
    ]
    assert body["SMSMessageData"]["Message"] == "Sent to 0/1 Total Cost: 0"


def test_a_bad_sender_id_refuses_the_whole_request(app: Flask, client: FlaskClient) -> None:
    data = {
        "username": "sandbox",
        "to": PHONE,
        "message": "Hi",
        "bulkSMSMode": "1",
        "from": "A-SENDER-ID-TOO-LONG",
    }

    body = client.post(SEND, headers=HEADERS, data=data).get_json()

    assert body == {"SMSMessageData": {"Message": "InvalidSenderId", "Recipients": []}}


def test_next_status_refuses_unknown_codes(app: Flask, client: FlaskClient) -> None:
    for payload in ({"phone": PHONE, "statusCode": 999}, {"phone": "", "statusCode": 500}, {}):
        assert client.post("/simulator/at/next-status", json=payload).status_code == 400


def test_the_phone_page_shows_inboxes_escaped(
    app: Flask, client: FlaskClient, sender: Flask
) -> None:
    send(sender, key="k1", body="Balance <b>KES 5.00</b>")

    page = client.get("/simulator/at/")

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert PHONE in html
    assert "Balance &lt;b&gt;KES 5.00&lt;/b&gt;" in html
    assert "deliver" in html


def test_the_deliver_button_sends_our_delivery_report(
    app: Flask, client: FlaskClient, sender: Flask
) -> None:
    message = send(sender, key="k1", body="hello")

    answer = client.post(
        "/simulator/at/deliver",
        data={"messageId": message.provider_message_id, "status": "Success"},
        headers={"Accept": "application/json"},
    )

    assert answer.get_json()["callbackStatus"] == 200
    db.session.expire_all()
    row = db.session.get(SmsMessage, message.id)
    assert (row.status, row.provider_status) == ("delivered", "Success")
    assert inbox(client)[0]["status"] == "Success"
    assert client.post("/simulator/at/deliver", data={"messageId": "ATXid_nope"}).status_code == 404


def test_texting_the_sacco_from_the_simulator_gets_a_reply_in_the_inbox(
    app: Flask, client: FlaskClient, sender: Flask
) -> None:
    member = make_member(phone="0700000001", savings=250)

    answer = client.post(
        "/simulator/at/inbound",
        data={"phone": "0700000001", "text": "salio"},
        headers={"Accept": "application/json"},
    )

    assert answer.get_json()["callbackStatus"] == 200
    inbound = db.session.query(SmsInbound).one()
    assert (inbound.member_id, inbound.keyword, inbound.to) == (member.id, "BAL", "22384")
    # The savings deposit queued its receipt; the text queued exactly one reply.
    templates = [m.template for m in db.session.query(SmsMessage).order_by(SmsMessage.id)]
    assert templates == ["deposit_received", "balance"]
    reply_id = db.session.query(SmsMessage).filter_by(template="balance").one().id
    db.session.rollback()  # end this read: SQLite lets one connection hold the write lock
    with sender.app_context():
        assert sms_deliver(message_id=reply_id, now=NOW) == "sent"
    [received] = inbox(client)
    assert received["message"] == "Akiba KES 250.00. Hisa KES 0.00. Salio la mkopo KES 0.00."


def test_the_form_the_sdk_sends_reaches_the_simulator_unchanged(
    app: Flask, client: FlaskClient, sender: Flask
) -> None:
    # What the stand-in accepts is what the SDK sends: one recipient, bulk mode, sender id.
    send(sender, key="k1", body="a & b = c")

    [received] = inbox(client)
    assert (received["message"], received["to"]) == ("a & b = c", PHONE)


def test_the_simulator_exists_only_outside_production(app: Flask) -> None:
    assert "simulator_at" in app.blueprints

    production = create_app(PRODUCTION)

    assert "simulator_at" not in production.blueprints
    assert production.test_client().get("/simulator/at/").status_code == 404


def test_with_a_callback_token_the_simulator_still_reaches_the_sms_routes(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stand-in posts our callbacks as the provider would, token in the URL."""
    import dataclasses

    changed = dataclasses.replace(app.config["SETTINGS"], AT_CALLBACK_TOKEN="at-secret-4f2b9c")
    monkeypatch.setitem(app.config, "SETTINGS", changed)
    make_member(phone="0700000001")

    answer = client.post(
        "/simulator/at/inbound",
        data={"phone": "0700000001", "text": "HELP"},
        headers={"Accept": "application/json"},
    )

    assert answer.get_json()["callbackStatus"] == 200
    assert db.session.query(SmsInbound).count() == 1
    assert client.post("/sms/inbound", data={"from": PHONE, "text": "x"}).status_code == 403


def test_with_an_africas_talking_key_the_simulator_is_not_registered(
    app: Flask, _urls: dict[str, str]
) -> None:
    """Real SMS credentials: the stand-in's pages and inboxes are 404, outside production
    too; the Daraja stand-in stays while M-PESA is simulated."""
    real = make_app(_urls, AT_API_KEY="at-key")
    try:
        client = real.test_client()
        assert "simulator_at" not in real.blueprints
        assert client.get("/simulator/at/").status_code == 404
        assert client.get(f"/simulator/at/inbox/{PHONE}").status_code == 404
        assert client.get("/simulator/daraja/").status_code == 200
        assert "/simulator/at/" not in client.get("/").get_data(as_text=True)
    finally:
        with real.app_context():
            db.session.remove()
            db.engine.dispose()
        real.extensions["redis"].close()
