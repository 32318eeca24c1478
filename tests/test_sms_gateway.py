"""The outbox sends through the real africastalking SDK; Africa's Talking is faked at the
HTTP boundary with `responses`. Clocks are fixed: every call takes `now=`."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs

import pytest
import requests
import responses
from flask import Flask
from sqlalchemy import update

from app.extensions import db, queue
from app.models import SmsMessage
from app.services.locking import claim_for_sending
from app.services.sms import SENDABLE, sms_deliver, sms_queue
from tests.factories import make_member
from tests.helpers import at_reply
from workers.sms import send_sms

NOW = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)  # 12:30 in Nairobi, outside quiet hours
DEFAULT_URL = "https://api.africastalking.com/version1/messaging"


def queue_message(*, key: str = "receipt:1", body: str = "Deposit of KES 500.00 received.") -> int:
    member = make_member(phone="0700000001")
    message = sms_queue(
        template="deposit_received",
        body=body,
        phone=member.phone,
        idempotency_key=key,
        member=member,
        now=NOW,
    )
    db.session.commit()
    return message.id


def row(message_id: int) -> SmsMessage:
    db.session.expire_all()
    message = db.session.get(SmsMessage, message_id)
    assert message is not None
    return message


def test_a_queued_message_is_a_row_first_then_an_rq_job(app: Flask, at_credentials: None) -> None:
    message_id = queue_message()

    assert row(message_id).status == "queued"
    job = queue("sms").fetch_job(f"sms-{message_id}")
    assert job is not None
    assert job.args == (message_id,)


def test_the_sdk_sends_the_exact_form_and_headers(
    app: Flask, at_credentials: None, mocked: responses.RequestsMock
) -> None:
    mocked.post(DEFAULT_URL, json=at_reply(), status=201)
    message_id = queue_message(body="Savings KES 1,000.00. Asante & karibu")

    assert sms_deliver(message_id=message_id, now=NOW) == "sent"

    assert len(mocked.calls) == 1
    sent = mocked.calls[0].request
    assert sent.headers["apiKey"] == "test-api-key"
    assert sent.headers["Accept"] == "application/json"
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(sent.body, keep_blank_values=True) == {
        "username": ["sacco"],
        "to": ["+254700000001"],
        "message": ["Savings KES 1,000.00. Asante & karibu"],
        "bulkSMSMode": ["1"],
        "from": ["SACCO"],
    }


def test_no_sender_id_means_no_from_field(
    app: Flask,
    at_credentials: None,
    mocked: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(
        app.config, "SETTINGS", dataclasses.replace(app.config["SETTINGS"], AT_SENDER_ID=None)
    )
    mocked.post(DEFAULT_URL, json=at_reply(), status=201)

    sms_deliver(message_id=queue_message(), now=NOW)

    assert "from" not in parse_qs(mocked.calls[0].request.body)


def test_at_api_base_url_replaces_the_provider_host(
    app: Flask,
    at_credentials: None,
    mocked: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(
        app.config,
        "SETTINGS",
        dataclasses.replace(app.config["SETTINGS"], AT_API_BASE_URL="https://at.example.test/"),
    )
    mocked.post("https://at.example.test/version1/messaging", json=at_reply(), status=201)

    assert sms_deliver(message_id=queue_message(), now=NOW) == "sent"
    assert len(mocked.calls) == 1


def test_accepted_stores_message_id_cost_and_time(
    app: Flask, at_credentials: None, mocked: responses.RequestsMock
) -> None:
    mocked.post(DEFAULT_URL, json=at_reply(101, message_id="ATXid_feed01"), status=201)
    message_id = queue_message()

    sms_deliver(message_id=message_id, now=NOW)

    message = row(message_id)
    assert message.status == "sent"
    assert message.status_code == 101
    assert message.provider_message_id == "ATXid_feed01"
    assert message.cost == "KES 0.8000"
    assert message.cost_amount == Decimal("0.8000")
    assert message.attempts == 1
    assert message.sent_at == NOW
    assert message.last_error is None


@pytest.mark.parametrize(
    ("code", "status"),
    [(402, "InvalidSenderId"), (405, "InsufficientBalance"), (500, "InternalServerError")],
)
def test_retryable_codes_back_off_then_fail_on_the_third_try(
    app: Flask, at_credentials: None, mocked: responses.RequestsMock, code: int, status: str
) -> None:
    mocked.post(DEFAULT_URL, json=at_reply(code, status), status=201)
    message_id = queue_message()

    assert sms_deliver(message_id=message_id, now=NOW) == "retrying"
    first = row(message_id)
    assert (first.attempts, first.status_code, first.provider_status) == (1, code, status)
    assert first.not_before == NOW + timedelta(seconds=60)

    # Before the backoff has passed the job only reschedules itself: no HTTP call.
    assert sms_deliver(message_id=message_id, now=NOW + timedelta(seconds=59)) == "not yet"
    assert len(mocked.calls) == 1

    second_at = NOW + timedelta(seconds=60)
    assert sms_deliver(message_id=message_id, now=second_at) == "retrying"
    assert row(message_id).attempts == 2
    assert row(message_id).not_before == second_at + timedelta(seconds=300)

    third_at = second_at + timedelta(seconds=300)
    assert sms_deliver(message_id=message_id, now=third_at) == "failed"
    final = row(message_id)
    assert (final.status, final.attempts) == ("failed", 3)
    assert str(code) in (final.last_error or "")
    assert len(mocked.calls) == 3

    # A failed message is never sent again, whatever runs its job.
    assert sms_deliver(message_id=message_id, now=third_at + timedelta(hours=1)) == (
        "nothing to do"
    )
    assert len(mocked.calls) == 3


def test_a_retry_that_then_succeeds_is_sent(
    app: Flask, at_credentials: None, mocked: responses.RequestsMock
) -> None:
    mocked.post(DEFAULT_URL, json=at_reply(500, "InternalServerError"), status=201)
    mocked.post(DEFAULT_URL, json=at_reply(101, message_id="ATXid_second"), status=201)
    message_id = queue_message()

    sms_deliver(message_id=message_id, now=NOW)
    assert sms_deliver(message_id=message_id, now=NOW + timedelta(minutes=1)) == "sent"

    message = row(message_id)
    assert (message.attempts, message.provider_message_id) == (2, "ATXid_second")


@pytest.mark.parametrize(
    ("code", "status"),
    [(403, "InvalidPhoneNumber"), (404, "UnsupportedNumberType"), (406, "UserInBlacklist")],
)
def test_final_codes_fail_at_once(
    app: Flask, at_credentials: None, mocked: responses.RequestsMock, code: int, status: str
) -> None:
    mocked.post(DEFAULT_URL, json=at_reply(code, status), status=201)
    message_id = queue_message()

    assert sms_deliver(message_id=message_id, now=NOW) == "failed"

    message = row(message_id)
    assert (message.status, message.attempts, message.status_code) == ("failed", 1, code)
    assert message.provider_message_id is None
    assert sms_deliver(message_id=message_id, now=NOW + timedelta(hours=1)) == "nothing to do"
    assert len(mocked.calls) == 1


@pytest.mark.parametrize(
    "error",
    [requests.ConnectionError("connection refused"), requests.ReadTimeout("read timed out")],
)
def test_network_errors_are_retried(
    app: Flask, at_credentials: None, mocked: responses.RequestsMock, error: Exception
) -> None:
    mocked.post(DEFAULT_URL, body=error)
    message_id = queue_message()

    assert sms_deliver(message_id=message_id, now=NOW) == "retrying"

    message = row(message_id)
    assert message.attempts == 1
    assert (message.last_error or "").startswith("network:")


def test_an_http_error_from_the_gateway_is_retried(
    app: Flask, at_credentials: None, mocked: responses.RequestsMock
) -> None:
    mocked.post(DEFAULT_URL, body="The supplied authentication is invalid", status=401)
    message_id = queue_message()

    assert sms_deliver(message_id=message_id, now=NOW) == "retrying"
    assert "authentication" in (row(message_id).last_error or "")


def test_running_the_send_job_twice_sends_once(
    app: Flask, at_credentials: None, mocked: responses.RequestsMock
) -> None:
    mocked.post(DEFAULT_URL, json=at_reply(), status=201)
    message_id = queue_message()

    assert send_sms(message_id) == "sent"
    assert send_sms(message_id) == "nothing to do"

    assert len(mocked.calls) == 1
    assert row(message_id).attempts == 1


def test_a_row_another_worker_claimed_after_this_one_read_it_is_not_claimed_again(
    app: Flask,
) -> None:
    """The claim is the conditional UPDATE, not the status read before it: the other
    worker's claim commits between this worker's read and its claim."""
    message_id = queue_message()
    message = row(message_id)
    assert message.status in SENDABLE
    db.session.commit()  # SQLite: the read's transaction would hold the other's write
    with db.engine.begin() as other_worker:
        other_worker.execute(
            update(SmsMessage)
            .where(SmsMessage.id == message_id)
            .values(status="sending", attempts=SmsMessage.attempts + 1)
        )

    assert claim_for_sending(message, SENDABLE) is False
    assert (row(message_id).status, row(message_id).attempts) == ("sending", 1)
    # The other worker's try failed and left it for a retry: the next claim takes it.
    db.session.commit()
    with db.engine.begin() as other_worker:
        other_worker.execute(
            update(SmsMessage).where(SmsMessage.id == message_id).values(status="retrying")
        )
    assert claim_for_sending(message, SENDABLE) is True
    assert (message.status, message.attempts) == ("sending", 2)  # refreshed from the row


def test_queueing_twice_with_one_key_is_one_message(
    app: Flask, at_credentials: None, mocked: responses.RequestsMock
) -> None:
    mocked.post(DEFAULT_URL, json=at_reply(), status=201)
    first = queue_message(key="receipt:XYZ")
    member = db.session.get(SmsMessage, first).member_id
    again = sms_queue(
        template="deposit_received",
        body="Deposit of KES 500.00 received.",
        phone="254700000001",
        idempotency_key="receipt:XYZ",
        now=NOW,
    )
    db.session.commit()

    assert again.id == first
    assert db.session.query(SmsMessage).count() == 1
    assert member is not None
    send_sms(first)
    send_sms(again.id)
    assert len(mocked.calls) == 1


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/json; charset=utf-8", "text/html"]
)
def test_a_json_body_with_another_content_type_is_still_read(
    app: Flask, at_credentials: None, mocked: responses.RequestsMock, content_type: str
) -> None:
    # The SDK parses JSON only for exactly application/json; otherwise it hands back text.
    import json

    mocked.post(
        DEFAULT_URL,
        body=json.dumps(at_reply(message_id="ATXid_text")),
        status=201,
        content_type=content_type,
    )
    message_id = queue_message()

    assert sms_deliver(message_id=message_id, now=NOW) == "sent"
    assert row(message_id).provider_message_id == "ATXid_text"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("<html>Bad gateway</html>", "text/html"), ("{not json", "application/json")],
)
def test_an_unreadable_reply_is_retried_not_lost(
    app: Flask, at_credentials: None, mocked: responses.RequestsMock, body: str, content_type: str
) -> None:
    mocked.post(DEFAULT_URL, body=body, status=200, content_type=content_type)
    message_id = queue_message()

    assert sms_deliver(message_id=message_id, now=NOW) == "retrying"
    assert "unreadable" in (row(message_id).last_error or "")


def test_a_reply_with_no_recipients_is_retried(
    app: Flask, at_credentials: None, mocked: responses.RequestsMock
) -> None:
    mocked.post(
        DEFAULT_URL,
        json={"SMSMessageData": {"Message": "InvalidSenderId", "Recipients": []}},
        status=201,
    )
    message_id = queue_message()

    assert sms_deliver(message_id=message_id, now=NOW) == "retrying"
    assert "InvalidSenderId" in (row(message_id).last_error or "")


def test_a_number_we_cannot_send_to_fails_without_a_request(
    app: Flask, at_credentials: None, mocked: responses.RequestsMock
) -> None:
    message = sms_queue(
        template="help", body="SMS keywords", phone="12345", idempotency_key="reply:x", now=NOW
    )
    db.session.commit()

    assert sms_deliver(message_id=message.id, now=NOW) == "failed"
    assert len(mocked.calls) == 0
