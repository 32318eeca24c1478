"""The Daraja client against Daraja's documented answers, faked at the HTTP boundary with
`responses`, and a real Redis for the token cache."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import requests
import responses
from flask import Flask

from app.extensions import redis_client
from app.integrations.daraja import (
    TOKEN_KEY,
    DarajaAuthError,
    DarajaBusy,
    DarajaClient,
    DarajaConfig,
    DarajaInvalidRequest,
    DarajaNoAnswer,
    DarajaStillProcessing,
    daraja_timestamp,
    stk_password,
)

BASE = "https://daraja.example.test"
TOKEN_URL = f"{BASE}/oauth/v1/generate"
STK_URL = f"{BASE}/mpesa/stkpush/v1/processrequest"
QUERY_URL = f"{BASE}/mpesa/stkpushquery/v1/query"
PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
# 13:56:27 UTC is 16:56:27 in Nairobi: the timestamp must be the latter.
NOW = datetime(2016, 2, 16, 13, 56, 27, tzinfo=UTC)
ACCEPTED = {
    "MerchantRequestID": "29115-34620561-1",
    "CheckoutRequestID": "ws_CO_191220191020363925",
    "ResponseCode": "0",
    "ResponseDescription": "Success. Request accepted for processing",
    "CustomerMessage": "Success. Request accepted for processing",
}


@pytest.fixture
def client(app: Flask) -> DarajaClient:
    config = DarajaConfig(
        base_url=BASE,
        consumer_key="ck",
        consumer_secret="cs",
        shortcode="174379",
        passkey=PASSKEY,
        tz=ZoneInfo("Africa/Nairobi"),
        b2c_shortcode="600996",
        initiator_name="testapi",
        security_credential="cred==",
    )
    return DarajaClient(config, redis_client())


def token_reply(token: str = "c9SQxWWhmdVRlyh0zh8gZDTkubVF") -> dict[str, str]:
    return {"access_token": token, "expires_in": "3599"}


def push(client: DarajaClient, **overrides: object) -> dict:
    args = dict(
        phone="0708920430",
        amount="500",
        account_reference="L000045",
        description="Loan repay",
        callback_url="https://sacco.example/payments/tok/stk/callback",
        now=NOW,
    )
    args.update(overrides)
    return client.stk_push(**args)  # type: ignore[arg-type]


def test_password_and_timestamp_are_in_kenyan_time() -> None:
    timestamp = daraja_timestamp(NOW, ZoneInfo("Africa/Nairobi"))
    assert timestamp == "20160216165627"
    decoded = base64.b64decode(stk_password("174379", PASSKEY, timestamp)).decode()
    assert decoded == f"174379{PASSKEY}20160216165627"


def test_an_stk_push_sends_the_documented_body_with_a_cached_token(
    client: DarajaClient, mocked: responses.RequestsMock
) -> None:
    mocked.get(TOKEN_URL, json=token_reply())
    mocked.post(STK_URL, json=ACCEPTED)

    assert push(client)["CheckoutRequestID"] == "ws_CO_191220191020363925"
    assert push(client, amount=700)["MerchantRequestID"] == "29115-34620561-1"

    token_calls = [c for c in mocked.calls if c.request.url.startswith(TOKEN_URL)]
    assert len(token_calls) == 1  # the second push used the cached token
    auth = token_calls[0].request.headers["Authorization"]
    assert auth == "Basic " + base64.b64encode(b"ck:cs").decode()
    body = json.loads(mocked.calls[1].request.body)
    assert body == {
        "BusinessShortCode": "174379",
        "Password": stk_password("174379", PASSKEY, "20160216165627"),
        "Timestamp": "20160216165627",
        "TransactionType": "CustomerPayBillOnline",
        "Amount": "500",
        "PartyA": "254708920430",
        "PartyB": "174379",
        "PhoneNumber": "254708920430",
        "CallBackURL": "https://sacco.example/payments/tok/stk/callback",
        "AccountReference": "L000045",
        "TransactionDesc": "Loan repay",
    }
    assert mocked.calls[1].request.headers["Authorization"] == "Bearer c9SQxWWhmdVRlyh0zh8gZDTkubVF"
    ttl = redis_client().ttl(TOKEN_KEY)
    assert 3500 < ttl < 3540  # less than the token's life


def test_an_invalid_token_is_refreshed_once_and_the_request_retried(
    client: DarajaClient, mocked: responses.RequestsMock
) -> None:
    redis_client().set(TOKEN_KEY, "stale")
    mocked.get(TOKEN_URL, json=token_reply("fresh"))
    mocked.post(
        STK_URL,
        status=404,
        json={"requestId": "1", "errorCode": "404.001.03", "errorMessage": "Invalid Access Token"},
    )
    mocked.post(STK_URL, json=ACCEPTED)

    assert push(client)["ResponseCode"] == "0"
    sent = [
        c.request.headers.get("Authorization") for c in mocked.calls if c.request.method == "POST"
    ]
    assert sent == ["Bearer stale", "Bearer fresh"]


def test_a_token_refused_twice_is_an_auth_error(
    client: DarajaClient, mocked: responses.RequestsMock
) -> None:
    mocked.get(TOKEN_URL, json=token_reply())
    invalid = {"requestId": "1", "errorCode": "404.001.03", "errorMessage": "Invalid Access Token"}
    mocked.post(STK_URL, status=404, json=invalid)
    mocked.post(STK_URL, status=404, json=invalid)
    with pytest.raises(DarajaAuthError):
        push(client)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            400,
            {"errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid Amount"},
            DarajaInvalidRequest,
        ),
        (500, {"errorCode": "500.003.02", "errorMessage": "Spike arrest violation"}, DarajaBusy),
        (500, {"errorCode": "500.001.1001", "errorMessage": "Wrong credentials"}, DarajaAuthError),
        (
            500,
            {"errorCode": "500.001.1001", "errorMessage": "Unable to lock subscriber"},
            DarajaBusy,
        ),
        (503, "<html>gateway</html>", DarajaBusy),
    ],
)
def test_daraja_errors_are_typed_by_their_code(
    client: DarajaClient, mocked: responses.RequestsMock, status: int, body: object, error: type
) -> None:
    mocked.get(TOKEN_URL, json=token_reply())
    if isinstance(body, dict):
        mocked.post(STK_URL, status=status, json={"requestId": "1", **body})
    else:
        mocked.post(STK_URL, status=status, body=str(body))
    with pytest.raises(error):
        push(client)


def test_a_query_while_the_member_is_on_the_prompt_is_still_processing(
    client: DarajaClient, mocked: responses.RequestsMock
) -> None:
    mocked.get(TOKEN_URL, json=token_reply())
    mocked.post(
        QUERY_URL,
        status=500,
        json={
            "requestId": "1",
            "errorCode": "500.001.1001",
            "errorMessage": "The transaction is being processed",
        },
    )
    with pytest.raises(DarajaStillProcessing):
        client.stk_query(checkout_request_id="ws_CO_1", now=NOW)


def test_no_answer_is_its_own_error_so_nobody_resends_blindly(
    client: DarajaClient, mocked: responses.RequestsMock
) -> None:
    mocked.get(TOKEN_URL, json=token_reply())
    mocked.post(STK_URL, body=requests.ReadTimeout("read timed out"))
    with pytest.raises(DarajaNoAnswer):
        push(client)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"amount": "500.50"}, "whole shillings"),
        ({"amount": "1e26"}, "more than the books can hold"),
        ({"phone": "0800123456"}, "not a Kenyan mobile number"),
        ({"account_reference": "M0001234567890"}, "AccountReference"),
        ({"description": "Loan repayment for May"}, "TransactionDesc"),
        ({"callback_url": "https://sacco.example/cb "}, "spaces"),
        ({"callback_url": "https://sacco.example/mpesa/cb"}, "refuses callback URLs"),
    ],
)
def test_what_daraja_would_refuse_is_refused_before_any_request(
    client: DarajaClient, mocked: responses.RequestsMock, overrides: dict, message: str
) -> None:
    with pytest.raises(DarajaInvalidRequest, match=message):
        push(client, **overrides)
    assert len(mocked.calls) == 0


def test_one_token_refresher_at_a_time(
    app: Flask, client: DarajaClient, mocked: responses.RequestsMock
) -> None:
    mocked.get(TOKEN_URL, json=token_reply("shared"))
    tokens: list[str] = []
    start = threading.Barrier(4, timeout=10)

    def fetch() -> None:
        with app.app_context():
            start.wait()
            tokens.append(client.token())

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert tokens == ["shared"] * 4
    assert len(mocked.calls) == 1


def test_a_b2c_payout_carries_our_conversation_id_and_daraja_s_spelling(
    client: DarajaClient, mocked: responses.RequestsMock
) -> None:
    mocked.get(TOKEN_URL, json=token_reply())
    mocked.post(
        f"{BASE}/mpesa/b2c/v3/paymentrequest",
        json={
            "ConversationID": "AG_20191219_00005797af5d7d75f652",
            "OriginatorConversationID": "feb5e3f2-fbbc-4745-844c-ee37b546f627",
            "ResponseCode": "0",
            "ResponseDescription": "Accept the service request successfully.",
        },
    )
    reply = client.b2c_payment(
        originator_conversation_id="feb5e3f2-fbbc-4745-844c-ee37b546f627",
        phone="+254728762287",
        amount="2437",
        remarks="Loan L000045",
        result_url="https://sacco.example/payments/tok/b2c/result",
        timeout_url="https://sacco.example/payments/tok/b2c/timeout",
    )
    assert reply["ConversationID"] == "AG_20191219_00005797af5d7d75f652"
    body = json.loads(mocked.calls[1].request.body)
    assert body["OriginatorConversationID"] == "feb5e3f2-fbbc-4745-844c-ee37b546f627"
    assert (body["PartyA"], body["PartyB"], body["Amount"]) == ("600996", "254728762287", "2437")
    assert body["Occassion"] == "Loan" and body["CommandID"] == "BusinessPayment"
    with pytest.raises(DarajaInvalidRequest, match="whole shillings"):
        client.b2c_payment(
            originator_conversation_id="x",
            phone="0728762287",
            amount="2437.50",
            remarks="Loan",
            result_url="https://sacco.example/r",
            timeout_url="https://sacco.example/t",
        )


def test_register_urls_and_status_query_send_the_documented_bodies(
    client: DarajaClient, mocked: responses.RequestsMock
) -> None:
    mocked.get(TOKEN_URL, json=token_reply())
    mocked.post(
        f"{BASE}/mpesa/c2b/v1/registerurl",
        json={"OriginatorCoversationID": "1", "ResponseCode": "0", "ResponseDescription": "ok"},
    )
    mocked.post(
        f"{BASE}/mpesa/transactionstatus/v1/query",
        json={"ConversationID": "AG_1", "ResponseCode": "0", "ResponseDescription": "ok"},
    )
    client.register_urls(
        confirmation_url="https://sacco.example/payments/tok/c2b/confirmation",
        validation_url="https://sacco.example/payments/tok/c2b/validation",
    )
    client.transaction_status(
        originator_conversation_id="feb5e3f2",
        result_url="https://sacco.example/payments/tok/status/result",
        timeout_url="https://sacco.example/payments/tok/status/timeout",
    )
    register = json.loads(mocked.calls[1].request.body)
    assert register["ResponseType"] == "Completed" and register["ShortCode"] == "174379"
    status = json.loads(mocked.calls[2].request.body)
    assert status["OriginalConversationID"] == "feb5e3f2"
    assert status["CommandID"] == "TransactionStatusQuery" and status["IdentifierType"] == "4"
    with pytest.raises(DarajaInvalidRequest, match="TransactionID"):
        client.transaction_status(
            result_url="https://a.example/r", timeout_url="https://a.example/t"
        )
