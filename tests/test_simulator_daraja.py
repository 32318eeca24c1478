"""The Daraja (M-PESA) stand-in, driven over real HTTP by our own `DarajaClient`.

The test app is served on a free port (`live_url`); the client's MPESA_BASE_URL points at
its /simulator/daraja. Callbacks land on a second tiny WSGI server started here, which
records every JSON body and answers like our server would. Delivery delay is 0, and a
callback is awaited by polling with a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from app import create_app
from app.config import SIMULATED_MPESA
from app.extensions import redis_client
from app.integrations.daraja import (
    DarajaAuthError,
    DarajaClient,
    DarajaConfig,
    DarajaInvalidRequest,
    DarajaStillProcessing,
    daraja_timestamp,
    stk_password,
)
from app.models.types import utcnow
from app.simulators import daraja as sim
from tests.helpers import PRODUCTION

PHONE = "254708374149"
SIM = "/simulator/daraja"
SHORTCODE = "174379"
ACCEPT = {"ResultCode": 0, "ResultDesc": "Accepted"}
REJECT = {"ResultCode": "C2B00012", "ResultDesc": "Rejected"}
C2B_KEYS = {
    "TransactionType",
    "TransID",
    "TransTime",
    "TransAmount",
    "BusinessShortCode",
    "BillRefNumber",
    "InvoiceNumber",
    "OrgAccountBalance",
    "ThirdPartyTransID",
    "MSISDN",
    "FirstName",
    "MiddleName",
    "LastName",
}


class Capture:
    """A stand-in for our callback endpoints: keeps (path, body), answers ACCEPT, or the
    C2B rejection on any path containing "reject"."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.base = f"http://127.0.0.1:{self.server.server_port}"

    def _wsgi(self, environ: dict, start_response: Callable) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length)
        with self._lock:
            self.received.append((environ["PATH_INFO"], json.loads(raw or b"null")))
        answer = REJECT if "reject" in environ["PATH_INFO"] else ACCEPT
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(answer).encode()]

    def url(self, path: str) -> str:
        return self.base + path

    def at(self, path: str) -> list[Any]:
        with self._lock:
            return [body for where, body in self.received if where == path]

    def wait(self, path: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            bodies = self.at(path)
            if len(bodies) >= count:
                return bodies
            time.sleep(0.02)
        raise AssertionError(f"{count} callback(s) to {path} never came: {self.received}")


@pytest.fixture
def capture(app: Flask) -> Iterator[Capture]:
    server = Capture()
    thread = threading.Thread(target=server.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        # Nothing of this test may still be on its way when the next one starts.
        assert sim.wait_idle(10)
        server.server.shutdown()
        server.server.server_close()
        thread.join(timeout=5)


def client_for(app: Flask, live_url: str, **credentials: str) -> DarajaClient:
    settings = dataclasses.replace(
        app.config["SETTINGS"], MPESA_BASE_URL=f"{live_url}{SIM}", **credentials
    )
    return DarajaClient(DarajaConfig.from_settings(settings), redis_client())


@pytest.fixture
def daraja(
    app: Flask, live_url: str, client: FlaskClient, capture: Capture
) -> Iterator[DarajaClient]:
    assert client.post(f"{SIM}/settings", json={"delay": 0}).get_json()["delay"] == 0
    daraja = client_for(app, live_url)
    try:
        yield daraja
    finally:
        daraja.http.close()


def sim_state(client: FlaskClient) -> dict[str, Any]:
    return client.get(f"{SIM}/state").get_json()


def eventually(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def set_outcome(client: FlaskClient, phone: str = PHONE, **outcomes: str) -> dict[str, Any]:
    answer = client.post(f"{SIM}/phones/{phone}/outcome", json=outcomes)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def push(daraja: DarajaClient, capture: Capture, amount: object = 10) -> dict[str, Any]:
    return daraja.stk_push(
        phone="0708374149",
        amount=amount,
        account_reference="M000123",
        description="Loan repay",
        callback_url=capture.url("/stk"),
        now=utcnow(),
    )


def query(daraja: DarajaClient, checkout_id: str) -> dict[str, Any]:
    return daraja.stk_query(checkout_request_id=checkout_id, now=utcnow())


def items(callback: dict[str, Any]) -> dict[str, Any]:
    metadata = callback["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    return {item["Name"]: item.get("Value") for item in metadata}


def parameters(result: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        (p["Key"], p.get("Value", "<none>"))
        for p in result["Result"]["ResultParameters"]["ResultParameter"]
    ]


def stk_payload(app: Flask, capture: Capture, **changes: object) -> dict[str, Any]:
    stamp = daraja_timestamp(utcnow(), app.config["SETTINGS"].tz)
    payload: dict[str, Any] = {
        "BusinessShortCode": SHORTCODE,
        "Password": stk_password(SHORTCODE, SIMULATED_MPESA["passkey"], stamp),
        "Timestamp": stamp,
        "TransactionType": "CustomerPayBillOnline",
        "Amount": "10",
        "PartyA": PHONE,
        "PartyB": SHORTCODE,
        "PhoneNumber": PHONE,
        "CallBackURL": capture.url("/stk"),
        "AccountReference": "M000123",
        "TransactionDesc": "Loan repay",
    }
    payload.update(changes)
    return payload


def b2c(
    daraja: DarajaClient,
    capture: Capture,
    originator: str = "oc-1",
    amount: object = 1500,
    phone: str = PHONE,
) -> dict[str, Any]:
    return daraja.b2c_payment(
        originator_conversation_id=originator,
        phone=phone,
        amount=amount,
        remarks="Loan L000045",
        result_url=capture.url("/b2c/result"),
        timeout_url=capture.url("/b2c/timeout"),
    )


def status(daraja: DarajaClient, capture: Capture, **which: str) -> dict[str, Any]:
    return daraja.transaction_status(
        result_url=capture.url("/status/result"),
        timeout_url=capture.url("/status/timeout"),
        **which,
    )


# -- OAuth ------------------------------------------------------------------------------


def test_a_token_is_issued_for_the_right_credentials_and_kept_for_its_life(
    app: Flask, daraja: DarajaClient, live_url: str
) -> None:
    token = daraja.token()

    ttl = redis_client().ttl(f"simulator:daraja:token:{token}")
    assert 3500 < ttl <= 3599
    raw = requests.get(
        f"{live_url}{SIM}/oauth/v1/generate",
        params={"grant_type": "client_credentials"},
        auth=(SIMULATED_MPESA["consumer_key"], SIMULATED_MPESA["consumer_secret"]),
        timeout=5,
    )
    assert raw.status_code == 200
    assert raw.json()["expires_in"] == "3599"  # a string, as Daraja sends it
    assert re.fullmatch(r"[A-Za-z0-9]{28}", raw.json()["access_token"])


def test_wrong_credentials_or_grant_get_darajas_error_body(
    app: Flask, daraja: DarajaClient, live_url: str
) -> None:
    wrong = client_for(app, live_url, MPESA_CONSUMER_SECRET="not-the-secret")
    with pytest.raises(DarajaAuthError) as refused:  # not "our request is wrong"
        wrong.token()
    assert refused.value.code == "400.008.01"
    wrong.http.close()

    raw = requests.get(
        f"{live_url}{SIM}/oauth/v1/generate",
        params={"grant_type": "password"},
        auth=(SIMULATED_MPESA["consumer_key"], SIMULATED_MPESA["consumer_secret"]),
        timeout=5,
    )
    assert raw.status_code == 400
    assert set(raw.json()) == {"requestId", "errorCode", "errorMessage"}
    assert raw.json()["errorCode"] == "400.008.02"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "404.001.04"),
        ({"Authorization": "Basic abc"}, "404.001.04"),
        ({"Authorization": "Bearer not-a-token"}, "404.001.03"),
    ],
)
def test_a_post_without_a_valid_token_is_refused(
    app: Flask, daraja: DarajaClient, capture: Capture, live_url: str, headers: dict, code: str
) -> None:
    answer = requests.post(
        f"{live_url}{SIM}/mpesa/stkpush/v1/processrequest",
        json=stk_payload(app, capture),
        headers=headers,
        timeout=5,
    )

    assert answer.status_code == 404
    assert answer.json()["errorCode"] == code


def test_an_expired_token_is_refreshed_once_by_our_client(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient
) -> None:
    stale = daraja.token()
    redis_client().delete(f"simulator:daraja:token:{stale}")  # Safaricom forgot it

    reply = push(daraja, capture)

    assert reply["ResponseCode"] == "0"
    assert daraja.token() != stale
    codes = [r["answer"].get("errorCode") for r in sim_state(client)["requests"]]
    assert "404.001.03" in codes


# -- STK push ------------------------------------------------------------------------------


def test_a_valid_push_is_accepted_and_the_success_callback_follows(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient
) -> None:
    reply = push(daraja, capture, amount="10")

    assert set(reply) == {
        "MerchantRequestID",
        "CheckoutRequestID",
        "ResponseCode",
        "ResponseDescription",
        "CustomerMessage",
    }
    assert reply["ResponseCode"] == "0"
    assert re.fullmatch(r"ws_CO_\d{24}", reply["CheckoutRequestID"])
    [callback] = capture.wait("/stk")
    stk = callback["Body"]["stkCallback"]
    assert (stk["MerchantRequestID"], stk["CheckoutRequestID"]) == (
        reply["MerchantRequestID"],
        reply["CheckoutRequestID"],
    )
    assert stk["ResultCode"] == 0 and isinstance(stk["ResultCode"], int)
    assert stk["ResultDesc"] == "The service request is processed successfully."
    meta = items(callback)
    assert meta["Amount"] == 10
    assert re.fullmatch(r"[A-Z][A-Z0-9]{9}", meta["MpesaReceiptNumber"])
    assert meta["PhoneNumber"] == 254708374149
    # TransactionDate is a number in Kenyan time (UTC+3), not the server's UTC.
    assert isinstance(meta["TransactionDate"], int)
    paid_at = datetime.strptime(str(meta["TransactionDate"]), "%Y%m%d%H%M%S")
    kenya_now = utcnow().astimezone(app.config["SETTINGS"].tz).replace(tzinfo=None)
    assert abs(paid_at - kenya_now) < timedelta(minutes=30)

    assert query(daraja, reply["CheckoutRequestID"]) == {
        "ResponseCode": "0",
        "ResponseDescription": "The service request has been accepted successsfully",
        "MerchantRequestID": reply["MerchantRequestID"],
        "CheckoutRequestID": reply["CheckoutRequestID"],
        "ResultCode": "0",
        "ResultDesc": "The service request is processed successfully.",
    }
    sent = eventually(lambda: sim_state(client)["callbacks"], "the callback recorded")
    assert (sent[0]["kind"], sent[0]["status"], sent[0]["answer"]) == ("stk", 200, ACCEPT)


def test_an_amount_sent_as_a_number_is_accepted(
    app: Flask, daraja: DarajaClient, capture: Capture
) -> None:
    reply = daraja.post("/mpesa/stkpush/v1/processrequest", stk_payload(app, capture, Amount=25))

    assert reply["ResponseCode"] == "0"
    assert items(capture.wait("/stk")[0])["Amount"] == 25


@pytest.mark.parametrize(
    ("outcome", "code"),
    [("insufficient", 1), ("cancelled", 1032), ("wrong_pin", 2001), ("unreachable", 1037)],
)
def test_each_failure_outcome_calls_back_its_code_without_metadata(
    app: Flask,
    daraja: DarajaClient,
    capture: Capture,
    client: FlaskClient,
    outcome: str,
    code: int,
) -> None:
    set_outcome(client, stk=outcome)

    reply = push(daraja, capture)

    [callback] = capture.wait("/stk")
    stk = callback["Body"]["stkCallback"]
    assert stk["ResultCode"] == code
    assert "CallbackMetadata" not in stk
    assert query(daraja, reply["CheckoutRequestID"])["ResultCode"] == str(code)


def test_a_timed_out_prompt_never_calls_back_and_the_query_says_1037(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient
) -> None:
    set_outcome(client, stk="timeout")

    reply = push(daraja, capture)

    assert sim.wait_idle(10)
    assert capture.received == []
    answer = query(daraja, reply["CheckoutRequestID"])
    assert (answer["ResultCode"], answer["ResultDesc"]) == (
        "1037",
        "DS timeout user cannot be reached",
    )


def test_a_lost_callback_means_paid_and_only_the_query_tells(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient
) -> None:
    set_outcome(client, stk="lost")

    reply = push(daraja, capture)

    assert sim.wait_idle(10)
    assert capture.received == []
    assert query(daraja, reply["CheckoutRequestID"])["ResultCode"] == "0"
    [prompt] = sim_state(client)["prompts"]
    assert re.fullmatch(r"[A-Z][A-Z0-9]{9}", prompt["MpesaReceiptNumber"])


def test_the_query_while_the_member_decides_is_still_processing(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient, live_url: str
) -> None:
    set_outcome(client, stk="manual")
    reply = push(daraja, capture)

    with pytest.raises(DarajaStillProcessing) as pending:
        query(daraja, reply["CheckoutRequestID"])

    assert pending.value.code == "500.001.1001"
    assert str(pending.value) == "The transaction is being processed"
    assert [p["CheckoutRequestID"] for p in sim_state(client)["pending"]] == [
        reply["CheckoutRequestID"]
    ]
    assert capture.received == []


def test_with_a_delay_the_prompt_is_pending_until_the_callback_goes(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient
) -> None:
    client.post(f"{SIM}/settings", json={"delay": 2})
    reply = push(daraja, capture)

    with pytest.raises(DarajaStillProcessing):
        query(daraja, reply["CheckoutRequestID"])

    [callback] = capture.wait("/stk")
    assert callback["Body"]["stkCallback"]["ResultCode"] == 0
    assert query(daraja, reply["CheckoutRequestID"])["ResultCode"] == "0"


def test_an_unknown_checkout_id_is_an_invalid_request(
    app: Flask, daraja: DarajaClient, capture: Capture
) -> None:
    with pytest.raises(DarajaInvalidRequest) as refused:
        query(daraja, "ws_CO_000000000000000000000000")

    assert refused.value.code == "400.002.02"
    assert "CheckoutRequestID" in str(refused.value)


def test_a_manual_prompt_completed_by_api_calls_back_once(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient
) -> None:
    set_outcome(client, stk="manual")
    checkout_id = push(daraja, capture)["CheckoutRequestID"]

    done = client.post(f"{SIM}/stk/{checkout_id}/complete", json={"outcome": "cancelled"})

    assert done.status_code == 200
    assert done.get_json() == {
        "CheckoutRequestID": checkout_id,
        "outcome": "cancelled",
        "ResultCode": 1032,
    }
    [callback] = capture.wait("/stk")
    assert callback["Body"]["stkCallback"]["ResultCode"] == 1032
    assert query(daraja, checkout_id)["ResultCode"] == "1032"
    again = client.post(f"{SIM}/stk/{checkout_id}/complete", json={"outcome": "success"})
    assert again.status_code == 409
    assert sim_state(client)["pending"] == []
    assert client.post(f"{SIM}/stk/ws_CO_1/complete", json={}).status_code == 404
    bad = client.post(f"{SIM}/stk/{checkout_id}/complete", json={"outcome": "manual"})
    assert bad.status_code == 400
    assert sim.wait_idle(10)
    assert len(capture.at("/stk")) == 1


def _utc_stamp(app: Flask) -> dict[str, str]:
    # The classic mistake: the server's UTC clock, three hours behind Nairobi.
    stamp = utcnow().strftime("%Y%m%d%H%M%S")
    return {
        "Timestamp": stamp,
        "Password": stk_password(SHORTCODE, SIMULATED_MPESA["passkey"], stamp),
    }


def _old_stamp(app: Flask) -> dict[str, str]:
    stamp = daraja_timestamp(utcnow() - timedelta(hours=2), app.config["SETTINGS"].tz)
    return {
        "Timestamp": stamp,
        "Password": stk_password(SHORTCODE, SIMULATED_MPESA["passkey"], stamp),
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"BusinessShortCode": "600000"}, "BusinessShortCode"),
        (_old_stamp, "Timestamp"),
        (_utc_stamp, "Timestamp"),
        ({"Timestamp": "2024-01-01 10:00"}, "Timestamp"),
        ({"TransactionType": "PayBill"}, "TransactionType"),
        ({"Amount": "1.5"}, "Amount"),
        ({"Amount": 0}, "Amount"),
        ({"Amount": "ten"}, "Amount"),
        ({"PartyA": "0708374149"}, "PartyA"),
        ({"PhoneNumber": "+254708374149"}, "PhoneNumber"),
        ({"PhoneNumber": "254208374149"}, "PhoneNumber"),
        ({"PartyB": "600000"}, "PartyB"),
        ({"CallBackURL": "https://example.org/payments/x/stk/callback "}, "CallBackURL"),
        ({"CallBackURL": "example.org/callback"}, "CallBackURL"),
        ({"AccountReference": "M000123456789"}, "AccountReference"),
        ({"AccountReference": ""}, "AccountReference"),
        ({"TransactionDesc": "Loan repayment"}, "TransactionDesc"),
    ],
)
def test_a_push_refused_like_daraja_names_the_field(
    app: Flask,
    daraja: DarajaClient,
    capture: Capture,
    client: FlaskClient,
    changes: dict[str, object] | Callable[[Flask], dict[str, str]],
    field: str,
) -> None:
    extra = changes(app) if callable(changes) else changes
    payload = stk_payload(app, capture, **extra)

    with pytest.raises(DarajaInvalidRequest) as refused:
        daraja.post("/mpesa/stkpush/v1/processrequest", payload)

    assert refused.value.code == "400.002.02"
    assert str(refused.value) == f"Bad Request - Invalid {field}"
    assert sim_state(client)["prompts"] == []


def test_a_wrong_password_is_darajas_wrong_credentials(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient, live_url: str
) -> None:
    stamp = daraja_timestamp(utcnow(), app.config["SETTINGS"].tz)
    payload = stk_payload(
        app, capture, Password=stk_password(SHORTCODE, "not-the-passkey", stamp), Timestamp=stamp
    )

    with pytest.raises(DarajaAuthError) as refused:
        daraja.post("/mpesa/stkpush/v1/processrequest", payload)

    # Daraja's overloaded code: only the message tells it from "being processed".
    assert (refused.value.code, str(refused.value)) == ("500.001.1001", "Wrong credentials")
    wrong = client_for(app, live_url, MPESA_PASSKEY=base64.b64encode(b"nope").decode())
    with pytest.raises(DarajaAuthError):
        push(wrong, capture)
    wrong.http.close()
    assert sim_state(client)["prompts"] == []


def test_a_body_that_is_not_json_is_a_bad_request(
    app: Flask, daraja: DarajaClient, live_url: str
) -> None:
    answer = requests.post(
        f"{live_url}{SIM}/mpesa/stkpush/v1/processrequest",
        data="BusinessShortCode=174379",
        headers={"Authorization": f"Bearer {daraja.token()}"},
        timeout=5,
    )

    assert answer.status_code == 400
    assert answer.json()["errorCode"] == "400.002.02"


# -- C2B -------------------------------------------------------------------------------------


def register(daraja: DarajaClient, capture: Capture, validation: str = "/c2b/validation") -> dict:
    return daraja.register_urls(
        confirmation_url=capture.url("/c2b/confirmation"), validation_url=capture.url(validation)
    )


def pay(client: FlaskClient, **changes: object) -> dict[str, Any]:
    answer = client.post(
        f"{SIM}/c2b/pay",
        json={"phone": "0708374149", "amount": 250, "account": " m000123 ", **changes},
    )
    assert answer.status_code == 202, answer.get_json()
    return answer.get_json()


def test_register_then_pay_validates_then_confirms(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient
) -> None:
    registered = register(daraja, capture)
    assert set(registered) == {"OriginatorCoversationID", "ResponseCode", "ResponseDescription"}
    assert (registered["ResponseCode"], registered["ResponseDescription"]) == ("0", "Success")

    paid = pay(client)

    [validation] = capture.wait("/c2b/validation")
    [confirmation] = capture.wait("/c2b/confirmation")
    assert validation == confirmation
    assert [path for path, _ in capture.received] == ["/c2b/validation", "/c2b/confirmation"]
    assert set(confirmation) == C2B_KEYS
    assert confirmation["TransID"] == paid["TransID"]
    assert re.fullmatch(r"[A-Z][A-Z0-9]{9}", confirmation["TransID"])
    assert confirmation["TransactionType"] == "Pay Bill"
    assert confirmation["TransAmount"] == "250"
    assert confirmation["BusinessShortCode"] == SHORTCODE
    assert confirmation["BillRefNumber"] == " m000123 "  # as the member typed it
    assert confirmation["MSISDN"] == hashlib.sha256(b"254708374149").hexdigest()
    assert (confirmation["FirstName"], confirmation["LastName"]) == ("John", "Doe")
    # TransTime is Kenyan time: the same minute as "now" in Nairobi, give or take.
    when = datetime.strptime(confirmation["TransTime"], "%Y%m%d%H%M%S")
    kenya_now = utcnow().astimezone(app.config["SETTINGS"].tz).replace(tzinfo=None)
    assert abs(when - kenya_now) < timedelta(minutes=30)
    payment = eventually(
        lambda: [p for p in sim_state(client)["c2b"] if p["confirmation"]], "confirmation kept"
    )[0]
    assert payment["status"] == "completed"
    assert payment["validation"] == {"status": 200, "answer": ACCEPT}
    page = client.get(f"{SIM}/").get_data(as_text=True)
    assert paid["TransID"] in page
    assert '"BillRefNumber": " m000123 "' in page  # the body sent, shown as JSON


def test_a_masked_msisdn_and_the_phones_name_are_sent_when_chosen(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient
) -> None:
    register(daraja, capture)
    set_outcome(client, name="Jane Wanjiku Kamau")

    paid = pay(client, msisdn="masked")

    assert paid["MSISDN"] == "25470****149"
    [confirmation] = capture.wait("/c2b/confirmation")
    assert confirmation["MSISDN"] == "25470****149"
    assert (confirmation["FirstName"], confirmation["MiddleName"], confirmation["LastName"]) == (
        "Jane",
        "Wanjiku",
        "Kamau",
    )


def test_a_rejected_validation_means_no_confirmation(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient
) -> None:
    register(daraja, capture, validation="/c2b/reject")

    paid = pay(client, account="NOSUCH")

    [validation] = capture.wait("/c2b/reject")
    assert validation["BillRefNumber"] == "NOSUCH"
    assert sim.wait_idle(10)
    assert capture.at("/c2b/confirmation") == []
    [payment] = sim_state(client)["c2b"]
    assert (payment["TransID"], payment["status"]) == (paid["TransID"], "rejected")
    assert payment["validation"]["answer"] == REJECT


def test_paying_before_any_registration_is_refused(
    app: Flask, daraja: DarajaClient, client: FlaskClient
) -> None:
    answer = client.post(f"{SIM}/c2b/pay", json={"phone": PHONE, "amount": 5, "account": "M1"})

    assert answer.status_code == 409
    assert "registerurl" in answer.get_json()["error"]


@pytest.mark.parametrize(
    "changes",
    [{"phone": "12345"}, {"amount": "2.50"}, {"amount": 0}, {"account": " "}, {"msisdn": "x"}],
)
def test_a_bad_paybill_form_is_refused(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient, changes: dict
) -> None:
    register(daraja, capture)
    body = {"phone": PHONE, "amount": 5, "account": "M1", **changes}

    assert client.post(f"{SIM}/c2b/pay", json=body).status_code == 400
    assert sim_state(client)["c2b"] == []


@pytest.mark.parametrize("word", ["mpesa", "M-PESA", "Safaricom", "cmd", "SQL", "query"])
def test_registering_a_url_with_a_forbidden_word_is_refused(
    app: Flask, daraja: DarajaClient, capture: Capture, word: str
) -> None:
    payload = {
        "ShortCode": SHORTCODE,
        "ResponseType": "Completed",
        "ConfirmationURL": capture.url(f"/{word}/confirmation"),
        "ValidationURL": capture.url("/c2b/validation"),
    }

    with pytest.raises(DarajaInvalidRequest) as refused:
        daraja.post("/mpesa/c2b/v1/registerurl", payload)

    assert refused.value.code == "400.002.02"
    assert str(refused.value) == "Bad Request - Invalid ConfirmationURL"
    assert redis_client().get(f"simulator:daraja:c2b:urls:{SHORTCODE}") is None


def test_the_v2_registration_path_is_served_too(
    app: Flask, daraja: DarajaClient, capture: Capture
) -> None:
    payload = {
        "ShortCode": SHORTCODE,
        "ResponseType": "Cancelled",
        "ConfirmationURL": capture.url("/c2b/confirmation"),
        "ValidationURL": capture.url("/c2b/validation"),
    }

    assert daraja.post("/mpesa/c2b/v2/registerurl", payload)["ResponseCode"] == "0"

    kept = json.loads(redis_client().get(f"simulator:daraja:c2b:urls:{SHORTCODE}"))
    assert (kept["ResponseType"], kept["ConfirmationURL"]) == (
        "Cancelled",
        capture.url("/c2b/confirmation"),
    )


# -- B2C -------------------------------------------------------------------------------------


def test_a_b2c_payment_is_acknowledged_then_its_result_posted(
    app: Flask, daraja: DarajaClient, capture: Capture
) -> None:
    ack = b2c(daraja, capture)

    assert set(ack) == {
        "ConversationID",
        "OriginatorConversationID",
        "ResponseCode",
        "ResponseDescription",
    }
    assert ack["OriginatorConversationID"] == "oc-1"
    assert ack["ResponseCode"] == "0"
    assert re.fullmatch(r"AG_\d{8}_[0-9a-f]{20}", ack["ConversationID"])
    [result] = capture.wait("/b2c/result")
    body = result["Result"]
    assert (body["ResultType"], body["ResultCode"]) == (0, 0)
    assert (body["OriginatorConversationID"], body["ConversationID"]) == (
        "oc-1",
        ack["ConversationID"],
    )
    params = dict(parameters(result))
    assert [key for key, _ in parameters(result)] == [
        "TransactionAmount",
        "TransactionReceipt",
        "B2CRecipientIsRegisteredCustomer",
        "B2CChargesPaidAccountAvailableFunds",
        "ReceiverPartyPublicName",
        "TransactionCompletedDateTime",
        "B2CUtilityAccountAvailableFunds",
        "B2CWorkingAccountAvailableFunds",
    ]
    assert params["TransactionAmount"] == 1500
    assert params["TransactionReceipt"] == body["TransactionID"]
    assert re.fullmatch(r"[A-Z][A-Z0-9]{9}", params["TransactionReceipt"])
    assert params["ReceiverPartyPublicName"] == "254708374149 - John Doe"
    completed = datetime.strptime(params["TransactionCompletedDateTime"], "%d.%m.%Y %H:%M:%S")
    kenya_now = utcnow().astimezone(app.config["SETTINGS"].tz).replace(tzinfo=None)
    assert abs(completed - kenya_now) < timedelta(minutes=30)
    assert params["B2CUtilityAccountAvailableFunds"] == sim.START_BALANCE_CENTS / 100 - 1500
    assert body["ReferenceData"]["ReferenceItem"] == {
        "Key": "QueueTimeoutURL",
        "Value": capture.url("/b2c/timeout"),
    }
    assert capture.at("/b2c/timeout") == []


def test_a_repeated_originator_conversation_id_is_never_paid_twice(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient
) -> None:
    first = b2c(daraja, capture)
    capture.wait("/b2c/result")

    second = b2c(daraja, capture)

    assert second["OriginatorConversationID"] == "oc-1"
    assert second["ConversationID"] != first["ConversationID"]
    paid, duplicate = capture.wait("/b2c/result", count=2)
    assert paid["Result"]["ResultCode"] == 0
    assert duplicate["Result"]["ResultCode"] == 15
    assert "ResultParameters" not in duplicate["Result"]
    assert duplicate["Result"]["ConversationID"] == second["ConversationID"]
    [payment] = sim_state(client)["b2c"]
    assert (payment["status"], payment["ConversationID"]) == ("paid", first["ConversationID"])
    balance = int(redis_client().get("simulator:daraja:b2c:balance"))
    assert balance == sim.START_BALANCE_CENTS - 1500 * 100
    page = client.get(f"{SIM}/")
    assert page.status_code == 200
    assert payment["receipt"] in page.get_data(as_text=True)


@pytest.mark.parametrize(
    ("outcome", "amount", "code"),
    [("insufficient", 1500, 1), ("unregistered", 1500, 2040), ("success", 5, 2)],
)
def test_a_failed_b2c_result_has_no_parameters_and_pays_nothing(
    app: Flask,
    daraja: DarajaClient,
    capture: Capture,
    client: FlaskClient,
    outcome: str,
    amount: int,
    code: int,
) -> None:
    set_outcome(client, b2c=outcome)

    b2c(daraja, capture, amount=amount)

    [result] = capture.wait("/b2c/result")
    assert result["Result"]["ResultCode"] == code
    assert "ResultParameters" not in result["Result"]
    # What a failure carries as TransactionID is not a receipt.
    assert result["Result"]["TransactionID"].endswith("0000000")
    [payment] = sim_state(client)["b2c"]
    assert (payment["status"], payment["receipt"]) == ("failed", None)


def test_a_b2c_timeout_calls_the_queue_timeout_url_and_pays_nothing(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient
) -> None:
    set_outcome(client, b2c="timeout")

    ack = b2c(daraja, capture)

    [timeout] = capture.wait("/b2c/timeout")
    assert timeout["Result"]["ResultType"] == 1
    assert timeout["Result"]["OriginatorConversationID"] == "oc-1"
    assert timeout["Result"]["ConversationID"] == ack["ConversationID"]
    assert "ResultParameters" not in timeout["Result"]
    assert sim.wait_idle(10)
    assert capture.at("/b2c/result") == []
    [payment] = sim_state(client)["b2c"]
    assert payment["status"] == "not_sent"


def test_a_wrong_initiator_is_acknowledged_then_refused_with_2001(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient, live_url: str
) -> None:
    wrong = client_for(app, live_url, MPESA_SECURITY_CREDENTIAL="bm90LXRoZS1jcmVkZW50aWFs")

    ack = b2c(wrong, capture)
    wrong.http.close()

    assert ack["ResponseCode"] == "0"
    [result] = capture.wait("/b2c/result")
    assert (result["Result"]["ResultCode"], result["Result"]["ResultDesc"]) == (
        2001,
        "The initiator information is invalid.",
    )
    assert "ResultParameters" not in result["Result"]
    assert sim_state(client)["b2c"][0]["status"] == "failed"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"CommandID": "Payout"}, "CommandID"),
        ({"Amount": "10.50"}, "Amount"),
        ({"PartyA": "600000"}, "PartyA"),
        ({"PartyB": "0708374149"}, "PartyB"),
        ({"ResultURL": "not a url"}, "ResultURL"),
        ({"QueueTimeOutURL": ""}, "QueueTimeOutURL"),
        ({"OriginatorConversationID": ""}, "OriginatorConversationID"),
    ],
)
def test_a_b2c_request_refused_like_daraja_names_the_field(
    app: Flask,
    daraja: DarajaClient,
    capture: Capture,
    client: FlaskClient,
    changes: dict,
    field: str,
) -> None:
    payload = {
        "OriginatorConversationID": "oc-1",
        "InitiatorName": SIMULATED_MPESA["initiator_name"],
        "SecurityCredential": SIMULATED_MPESA["security_credential"],
        "CommandID": "BusinessPayment",
        "Amount": "100",
        "PartyA": "600996",
        "PartyB": PHONE,
        "Remarks": "Loan",
        "QueueTimeOutURL": capture.url("/b2c/timeout"),
        "ResultURL": capture.url("/b2c/result"),
        "Occassion": "Loan",
        **changes,
    }

    with pytest.raises(DarajaInvalidRequest) as refused:
        daraja.post("/mpesa/b2c/v3/paymentrequest", payload)

    assert str(refused.value) == f"Bad Request - Invalid {field}"
    assert sim_state(client)["b2c"] == []


def test_the_v1_b2c_path_makes_up_the_originator_id_when_none_is_sent(
    app: Flask, daraja: DarajaClient, capture: Capture
) -> None:
    payload = {
        "InitiatorName": SIMULATED_MPESA["initiator_name"],
        "SecurityCredential": SIMULATED_MPESA["security_credential"],
        "CommandID": "SalaryPayment",
        "Amount": 100,
        "PartyA": "600996",
        "PartyB": PHONE,
        "Remarks": "Loan",
        "QueueTimeOutURL": capture.url("/b2c/timeout"),
        "ResultURL": capture.url("/b2c/result"),
    }

    ack = daraja.post("/mpesa/b2c/v1/paymentrequest", payload)

    assert ack["OriginatorConversationID"]
    [result] = capture.wait("/b2c/result")
    assert result["Result"]["OriginatorConversationID"] == ack["OriginatorConversationID"]
    assert dict(parameters(result))["TransactionAmount"] == 100


def test_a_lost_b2c_result_means_paid_and_only_transaction_status_tells(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient
) -> None:
    set_outcome(client, b2c="lost")
    b2c(daraja, capture)
    assert sim.wait_idle(10)
    assert capture.received == []

    status(daraja, capture, originator_conversation_id="oc-1")

    [result] = capture.wait("/status/result")
    assert ("TransactionStatus", "Completed") in parameters(result)
    assert ("OriginatorConversationID", "oc-1") in parameters(result)


# -- Transaction status -----------------------------------------------------------------------


def test_the_status_of_a_paid_b2c_is_completed_with_its_receipt(
    app: Flask, daraja: DarajaClient, capture: Capture
) -> None:
    paid = b2c(daraja, capture)
    [result] = capture.wait("/b2c/result")
    receipt = result["Result"]["TransactionID"]

    ack = status(daraja, capture, transaction_id=receipt)

    assert ack["ResponseCode"] == "0"
    [answer] = capture.wait("/status/result")
    body = answer["Result"]
    assert body["ResultCode"] == 0
    # The envelope names the status query; the parameters name the original payment.
    assert (body["OriginatorConversationID"], body["ConversationID"]) == (
        ack["OriginatorConversationID"],
        ack["ConversationID"],
    )
    params = parameters(answer)
    found = dict(params)
    assert found["ReceiptNo"] == receipt
    assert found["TransactionStatus"] == "Completed"
    assert found["Amount"] == 1500
    assert found["OriginatorConversationID"] == "oc-1"
    assert found["ConversationID"] == paid["ConversationID"]
    assert found["CreditPartyName"] == "254708374149 - John Doe"
    assert isinstance(found["InitiatedTime"], int) and isinstance(found["FinalisedTime"], int)
    # The field-seen oddities: a repeated key, an item without Value, a list of references.
    debit_names = [value for key, value in params if key == "DebitPartyName"]
    assert debit_names == ["600996 - SACCO", "254708374149 - John Doe"]
    assert ("TransactionReason", "<none>") in params
    assert body["ReferenceData"]["ReferenceItem"] == [
        {"Key": "Occasion", "Value": "Reconciliation"},
        {"Key": "QueueTimeoutURL", "Value": capture.url("/status/timeout")},
    ]

    status(daraja, capture, originator_conversation_id="oc-1")
    _, by_originator = capture.wait("/status/result", count=2)
    assert dict(parameters(by_originator))["ReceiptNo"] == receipt


def test_the_status_of_a_timed_out_b2c_is_not_found(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient
) -> None:
    set_outcome(client, b2c="timeout")
    ack = b2c(daraja, capture)
    capture.wait("/b2c/timeout")

    status(daraja, capture, originator_conversation_id="oc-1")
    status(daraja, capture, originator_conversation_id=ack["ConversationID"])
    status(daraja, capture, transaction_id="NOSUCH0000")

    answers = capture.wait("/status/result", count=3)
    for answer in answers:
        assert (answer["Result"]["ResultCode"], answer["Result"]["ResultDesc"]) == (
            "R000001",
            "The transaction does not exist.",
        )
        assert "ResultParameters" not in answer["Result"]


def test_the_status_success_code_can_come_as_eight_zeros(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient
) -> None:
    changed = client.post(f"{SIM}/settings", json={"status_result_code": "00000000"})
    assert changed.get_json()["status_result_code"] == "00000000"
    b2c(daraja, capture)
    receipt = capture.wait("/b2c/result")[0]["Result"]["TransactionID"]

    status(daraja, capture, transaction_id=receipt)

    [answer] = capture.wait("/status/result")
    assert answer["Result"]["ResultCode"] == "00000000"
    assert dict(parameters(answer))["ReceiptNo"] == receipt


def test_the_status_of_an_stk_payment_is_found_by_its_receipt(
    app: Flask, daraja: DarajaClient, capture: Capture
) -> None:
    reply = push(daraja, capture, amount=40)
    receipt = items(capture.wait("/stk")[0])["MpesaReceiptNumber"]

    status(daraja, capture, transaction_id=receipt)

    found = dict(parameters(capture.wait("/status/result")[0]))
    assert (found["ReceiptNo"], found["Amount"]) == (receipt, 40)
    assert found["ConversationID"] == reply["CheckoutRequestID"]


def test_a_status_query_with_a_wrong_initiator_gets_2001(
    app: Flask, daraja: DarajaClient, capture: Capture, live_url: str
) -> None:
    wrong = client_for(app, live_url, MPESA_INITIATOR_NAME="someone")

    status(wrong, capture, transaction_id="NOSUCH0000")
    wrong.http.close()

    [answer] = capture.wait("/status/result")
    assert answer["Result"]["ResultCode"] == 2001


# -- controls and the page ---------------------------------------------------------------------


def test_outcomes_are_checked_sticky_and_reset_by_default(app: Flask, client: FlaskClient) -> None:
    assert set_outcome(client, "0708374149", stk="cancelled", b2c="timeout") == {
        "phone": PHONE,
        "stk": "cancelled",
        "b2c": "timeout",
    }
    assert set_outcome(client, name=" Jane   Doe ")["name"] == "Jane Doe"
    assert set_outcome(client, stk="default", name="") == {
        "phone": PHONE,
        "b2c": "timeout",
        "name": "Jane Doe",
    }
    assert set_outcome(client, name="default") == {"phone": PHONE, "b2c": "timeout"}
    assert client.post(f"{SIM}/phones/{PHONE}/outcome", json={"stk": "maybe"}).status_code == 400
    assert client.post(f"{SIM}/phones/123/outcome", json={"stk": "success"}).status_code == 400
    assert client.post(f"{SIM}/settings", json={"delay": -1}).status_code == 400
    assert sim_state(client)["phones"] == {PHONE: {"b2c": "timeout"}}


def test_the_page_shows_a_pending_prompt_and_its_accept_button_pays(
    app: Flask, daraja: DarajaClient, capture: Capture, client: FlaskClient
) -> None:
    form = client.post(f"{SIM}/outcome", data={"phone": "0708374149", "stk": "manual"})
    assert form.status_code == 303
    checkout_id = push(daraja, capture)["CheckoutRequestID"]

    page = client.get(f"{SIM}/")

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert checkout_id in html
    assert "/simulator/at/" in html
    action = f"{SIM}/stk/{checkout_id}/complete"
    assert f'action="{action}"' in html
    assert 'value="success">Accept' in html
    answer = client.post(action, data={"outcome": "success"})
    assert answer.status_code == 303
    [callback] = capture.wait("/stk")
    assert callback["Body"]["stkCallback"]["ResultCode"] == 0
    after = client.get(f"{SIM}/").get_data(as_text=True)
    waiting = after.split("waiting for the member")[1].split("Outcomes per phone")[0]
    assert checkout_id not in waiting
    assert "No prompt is waiting" in waiting


def test_the_home_page_links_the_simulator(app: Flask, client: FlaskClient) -> None:
    assert 'href="/simulator/daraja/"' in client.get("/").get_data(as_text=True)


def test_the_simulator_exists_only_outside_production(app: Flask) -> None:
    assert "simulator_daraja" in app.blueprints

    production = create_app(PRODUCTION)

    assert "simulator_daraja" not in production.blueprints
    assert production.test_client().get(f"{SIM}/").status_code == 404


def test_with_real_daraja_credentials_the_simulator_is_not_registered(
    app: Flask, _urls: dict[str, str]
) -> None:
    """Outside production too: real credentials mean real Safaricom, and the stand-in's
    state (callback token, STK passwords) must not answer. The AT stand-in stays while
    SMS are still simulated, and the home page links only what is there."""
    from tests.helpers import make_app

    real = make_app(_urls, MPESA_CONSUMER_KEY="ck", MPESA_CONSUMER_SECRET="cs")
    try:
        client = real.test_client()
        assert client.get(f"{SIM}/state").status_code == 404
        assert client.get(f"{SIM}/").status_code == 404
        assert client.get("/simulator/at/").status_code == 200
        home = client.get("/").get_data(as_text=True)
        assert 'href="/simulator/at/"' in home and SIM not in home
    finally:
        from app.extensions import db

        with real.app_context():
            db.session.remove()
            db.engine.dispose()
        real.extensions["redis"].close()


def test_a_paybill_payment_that_skips_validation_lands_in_suspense(
    over_http: str,
    runner,  # noqa: ANN001
) -> None:
    """The page's "skip validation" box: an account that matches no one is confirmed
    all the same (as for a shortcode without external validation) and goes to suspense,
    where staff can try assigning it."""
    from sqlalchemy import select

    from app.extensions import db
    from app.models import MpesaCallback, Payment
    from tests.helpers import work_until

    registered = runner.invoke(args=["mpesa", "register-urls"])
    assert registered.exit_code == 0, registered.output
    paid = requests.post(
        f"{over_http}{SIM}/c2b/pay",
        json={"phone": PHONE, "amount": "640", "account": "NOBODY-42", "skip_validation": True},
        timeout=10,
    )
    assert paid.status_code == 202, paid.text
    trans_id = paid.json()["TransID"]

    payment = work_until(
        lambda: db.session.scalar(select(Payment).where(Payment.receipt == trans_id)),
        "the unmatched confirmation to be posted",
    )
    assert payment.status == "suspense"
    kinds = db.session.scalars(select(MpesaCallback.kind)).all()
    assert kinds == ["c2b_confirmation"]  # validation was never asked
    state = requests.get(f"{over_http}{SIM}/state", timeout=10).json()
    [c2b] = [p for p in state["c2b"] if p["TransID"] == trans_id]
    assert c2b["validation"] == "skipped" and c2b["status"] == "completed"
    page = requests.get(f"{over_http}{SIM}/", timeout=10).text
    assert 'name="skip_validation"' in page
