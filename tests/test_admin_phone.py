"""The console's phone page: a member's phone in one tab while the simulators are in use.
USSD hops go through the app's real /ussd, SMS through the Africa's Talking stand-in,
prompts and Paybill payments through the Daraja stand-in, all with nothing faked."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app import create_app
from app.extensions import db, redis_client
from app.models import MpesaRequest, Payment
from app.selectors.loans import loan_debt
from app.selectors.members import member_balances
from app.services.members import member_set_pin
from app.services.payments import payments_request_stk
from app.services.sms import sms_queue
from app.simulators.africastalking import inbox
from tests.factories import make_member
from tests.helpers import PRODUCTION, browse, login, make_app, post_form, staff, work_until
from tests.loan_factories import make_borrower, make_loan, make_product

PAGE = "/admin/phone/"


def signed_in(app: Flask, role: str = "loan_officer") -> FlaskClient:
    client = app.test_client()
    db.session.commit()
    login(client, staff(role))
    return client


def state(client: FlaskClient, phone: str) -> dict:
    db.session.commit()  # SQLite: the page's read must not wait on the test's transaction
    answer = browse(client, f"{PAGE}state", query_string={"phone": phone})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()


def act(client: FlaskClient, action: str, **data: object) -> dict:
    db.session.commit()
    answer = post_form(client, f"{PAGE}{action}", data)
    body = answer.get_json()
    assert answer.status_code == 200, body
    return body


@pytest.fixture
def sms_over_http(app: Flask, live_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """SMS go to the Africa's Talking stand-in on the live test server (no key set, so
    it is still the simulated provider)."""
    changed = dataclasses.replace(
        app.config["SETTINGS"], AT_API_BASE_URL=f"{live_url}/simulator/at"
    )
    monkeypatch.setitem(app.config, "SETTINGS", changed)
    return live_url


# -- where the page is --------------------------------------------------------------------


def test_staff_find_the_phone_page_in_the_menu_with_its_dial_pad(app: Flask) -> None:
    make_member(phone="0711223344", name="Wanjiku Kamau")
    client = signed_in(app, "auditor")

    home = browse(client, "/admin/").get_data(as_text=True)
    page = browse(client, PAGE)

    assert f'href="{PAGE}"' in home
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for element in ("phone-number", "dial", "screen", "ussd-input", "send", "cancel"):
        assert f'id="{element}"' in html, element
    assert "Dial *384*96#" in html
    assert '<option value="0711223344">Wanjiku Kamau' in html  # the members to dial
    assert "/admin/sacco-static/phone.js" in html and "csrf_token" in html


def test_an_anonymous_visitor_is_sent_to_the_login_page(client: FlaskClient) -> None:
    answer = browse(client, PAGE)
    assert answer.status_code == 302 and "/admin/login" in answer.headers["Location"]
    refused = browse(client, f"{PAGE}ussd", "POST", data={"phone": "0711223344"})
    assert refused.status_code == 302
    assert redis_client().get("ussd:starts:254711223344") is None


@pytest.fixture
def real_providers(app: Flask, _urls: dict[str, str]) -> Iterator[Flask]:
    """The same database, but an app with Africa's Talking and Daraja credentials."""
    other = make_app(
        _urls, AT_API_KEY="at-key", MPESA_CONSUMER_KEY="ck", MPESA_CONSUMER_SECRET="cs"
    )
    try:
        yield other
    finally:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
        other.extensions["redis"].close()


def test_the_page_is_absent_when_the_providers_are_real(app: Flask, real_providers: Flask) -> None:
    db.session.commit()
    client = real_providers.test_client()
    login(client, staff("branch_manager"))

    home = browse(client, "/admin/")
    assert home.status_code == 200 and "Signed in as" in home.get_data(as_text=True)
    assert PAGE not in home.get_data(as_text=True)
    assert browse(client, PAGE).status_code == 404
    assert browse(client, f"{PAGE}state?phone=0711223344").status_code == 404


def test_the_page_is_never_registered_in_production() -> None:
    production = create_app(PRODUCTION)
    assert "phone.index" not in production.view_functions
    assert production.test_client().get(PAGE).status_code == 404


# -- USSD -------------------------------------------------------------------------------------


def test_dialling_from_the_page_reaches_a_members_pin_screen_then_the_menu(app: Flask) -> None:
    member = make_member(phone="0711223344", savings=2500, name="Wanjiku Achieng")
    member_set_pin(member_id=member.id, pin="4826")
    client = signed_in(app)

    first = act(client, "ussd", phone="0711223344", text="")
    assert first["screen"] == "SACCO: enter your PIN:\n9. Forgot PIN" and first["end"] is False
    assert first["session"].startswith("ATUid_")

    menu = act(client, "ussd", phone="0711223344", text="4826", session=first["session"])
    assert menu["screen"].startswith("1. Check Balance") and menu["end"] is False
    balance = act(client, "ussd", phone="0711223344", text="4826*1", session=first["session"])
    assert "Deposits KES 2,500.00" in balance["screen"]

    again = act(client, "ussd", phone="+254711223344", text="")
    assert again["session"] != first["session"]  # a new dial is a new session


def test_an_unknown_number_ends_and_a_bad_one_is_refused_in_words(app: Flask) -> None:
    client = signed_in(app)

    stranger = act(client, "ussd", phone="0799000000", text="")
    assert stranger["end"] is True and "join" in stranger["screen"]

    db.session.commit()
    bad = post_form(client, f"{PAGE}ussd", {"phone": "12345", "text": ""})
    assert bad.status_code == 400 and "not a Kenyan mobile number" in bad.get_json()["error"]


def test_a_hop_without_the_csrf_token_dials_nothing(app: Flask) -> None:
    member = make_member(phone="0711223344")
    member_set_pin(member_id=member.id, pin="4826")
    client = signed_in(app)
    db.session.commit()

    answer = browse(client, f"{PAGE}ussd", "POST", data={"phone": "0711223344", "text": ""})

    assert answer.status_code == 400 and "expired" in answer.get_json()["error"]
    assert redis_client().get("ussd:starts:254711223344") is None  # /ussd never saw it


# -- SMS ----------------------------------------------------------------------------------------


def test_the_inbox_lists_what_the_sacco_sent_that_phone_newest_first(
    app: Flask, sms_over_http: str
) -> None:
    phone = make_member(phone="0711223344", name="Wanjiku Achieng").phone
    for n, body in enumerate(("Karibu to the SACCO.", "Your PIN was changed.")):
        sms_queue(template="help", body=body, phone=phone, idempotency_key=f"k{n}")
        db.session.commit()
        work_until(lambda n=n: len(inbox("0711223344")) == n + 1, "the SMS to reach the phone")
    client = signed_in(app)

    shown = state(client, "0711223344")

    assert shown["phone"] == "+254711223344"
    assert shown["member"]["name"] == "Wanjiku Achieng"
    assert [m["text"] for m in shown["sms"]["messages"]] == [
        "Your PIN was changed.",
        "Karibu to the SACCO.",
    ]
    assert shown["sms"]["messages"][0]["status"] == "Submitted"
    assert state(client, "0722000000")["sms"]["messages"] == []  # another phone's inbox


# -- M-PESA -------------------------------------------------------------------------------------


def test_a_prompt_answered_on_the_page_posts_the_repayment_and_the_receipt_arrives(
    app: Flask, over_http: str, sms_over_http: str
) -> None:
    member = make_borrower(savings=10000)
    loan = make_loan(product=make_product("V1"), on=date(2026, 1, 1), member=member)
    loan_id, phone = loan.id, member.phone
    before = loan_debt(loan_id=loan_id).total
    client = signed_in(app)

    assert act(client, "answer-here", phone=phone, on="1") == {"answer_here": True}
    request_id = payments_request_stk(loan_id=loan_id, amount=500, channel="console").id
    db.session.commit()
    pending = work_until(
        lambda: state(client, phone)["mpesa"]["pending"], "the prompt to reach the phone"
    )
    [prompt] = pending
    assert prompt["amount"] == "KES 500" and prompt["reference"]
    assert state(client, phone)["mpesa"]["answer_here"] is True
    assert db.session.get(MpesaRequest, request_id).status != "succeeded"  # it waits

    assert act(client, "stk", checkout_id=prompt["id"], outcome="success") == {
        "done": "Accept (enter PIN)"
    }

    request = work_until(
        lambda: (r := db.session.get(MpesaRequest, request_id)).status == "succeeded" and r,
        "the accepted prompt to be posted",
    )
    assert before - loan_debt(loan_id=loan_id).total == Decimal("500")
    payment = db.session.scalar(select(Payment).where(Payment.request_id == request_id))
    assert payment.receipt == request.receipt and payment.amount == Decimal("500")
    shown = state(client, phone)
    assert shown["mpesa"]["pending"] == []
    [answered] = shown["mpesa"]["answered"]
    assert (answered["outcome"], answered["receipt"]) == ("success", request.receipt)
    work_until(
        lambda: any(request.receipt in m["text"] for m in state(client, phone)["sms"]["messages"]),
        "the receipt SMS in the phone's inbox",
    )
    # Answering the same prompt twice is refused in words.
    db.session.commit()
    twice = post_form(client, f"{PAGE}stk", {"checkout_id": prompt["id"], "outcome": "success"})
    assert twice.status_code == 409 and "already answered" in twice.get_json()["error"]


def test_a_prompt_cancelled_on_the_page_posts_nothing(app: Flask, over_http: str) -> None:
    member = make_borrower(savings=10000)
    loan = make_loan(product=make_product("V1"), on=date(2026, 1, 1), member=member)
    loan_id, phone = loan.id, member.phone
    before = loan_debt(loan_id=loan_id).total
    client = signed_in(app)
    act(client, "answer-here", phone=phone, on="1")
    request_id = payments_request_stk(loan_id=loan_id, amount=500, channel="console").id
    db.session.commit()
    [prompt] = work_until(lambda: state(client, phone)["mpesa"]["pending"], "the prompt")

    act(client, "stk", checkout_id=prompt["id"], outcome="cancelled")

    work_until(lambda: db.session.get(MpesaRequest, request_id).status == "failed", "the cancel")
    assert loan_debt(loan_id=loan_id).total == before
    assert db.session.scalar(select(Payment).where(Payment.request_id == request_id)) is None
    assert act(client, "answer-here", phone=phone, on="0") == {"answer_here": False}
    assert state(client, phone)["mpesa"]["answer_here"] is False


def test_a_paybill_payment_from_the_page_is_validated_then_reaches_savings(
    app: Flask,
    over_http: str,
    runner,  # noqa: ANN001
) -> None:
    member = make_borrower()
    member_id, member_no, phone = member.id, member.member_no, member.phone
    client = signed_in(app)
    db.session.commit()
    registered = runner.invoke(args=["mpesa", "register-urls"])
    assert registered.exit_code == 0, registered.output

    trans_id = act(client, "paybill", phone=phone, amount="750", account=member_no.lower())[
        "trans_id"
    ]

    work_until(
        lambda: db.session.scalar(select(Payment).where(Payment.receipt == trans_id)),
        "the Paybill confirmation to be posted",
    )
    assert member_balances(member_id=member_id).savings == Decimal("750.00")
    [shown] = state(client, phone)["mpesa"]["paybill"]
    assert (shown["id"], shown["amount"], shown["status"]) == (trans_id, "KES 750", "completed")


def test_a_paybill_payment_before_registration_or_without_an_amount_is_refused_in_words(
    app: Flask,
) -> None:
    member = make_member(phone="0711223344")
    client = signed_in(app)
    db.session.commit()

    early = post_form(
        client, f"{PAGE}paybill", {"phone": "0711223344", "amount": "100", "account": "x"}
    )
    assert early.status_code == 409 and "register-urls" in early.get_json()["error"]
    empty = post_form(
        client, f"{PAGE}paybill", {"phone": "0711223344", "amount": "", "account": "x"}
    )
    assert empty.status_code == 400 and "whole shillings" in empty.get_json()["error"]
    gone = post_form(client, f"{PAGE}stk", {"checkout_id": "ws_CO_1", "outcome": "success"})
    assert gone.status_code == 404 and "no longer" in gone.get_json()["error"]
    assert state(client, member.phone)["mpesa"]["paybill"] == []


# -- the end of a USSD session ------------------------------------------------------------------


def test_an_ended_or_cancelled_session_reaches_ussd_events_and_the_member_page(
    app: Flask,
) -> None:
    """The page tells /ussd/events when the menu says END and when Cancel is pressed, as
    Africa's Talking does, so the member's page lists the sessions."""
    from app.models import UssdEvent
    from app.selectors.members import member_ussd_sessions

    member = make_member(phone="0711223344", savings=2500)
    member_set_pin(member_id=member.id, pin="4826")
    client = signed_in(app)

    first = act(client, "ussd", phone="0711223344", text="")
    act(client, "ussd", phone="0711223344", text="4826", session=first["session"])
    cancelled = act(
        client,
        "ussd-end",
        phone="0711223344",
        session=first["session"],
        status="Incomplete",
        hops="2",
        duration_ms="5400",
        last="CON 1. Check Balance",
    )
    assert cancelled == {"ended": first["session"], "status": "Incomplete"}

    stranger = act(client, "ussd", phone="0711223344", text="4826", session="ATUid_console_x")
    ended = act(
        client,
        "ussd-end",
        phone="0711223344",
        session="ATUid_console_x",
        status="Success",
        hops="1",
        duration_ms="nonsense",
        last="END " + stranger["screen"],
    )
    assert ended["status"] == "Success"

    db.session.rollback()
    events = db.session.query(UssdEvent).order_by(UssdEvent.id).all()
    assert [(e.session_id, e.status, e.hops) for e in events] == [
        (first["session"], "Incomplete", 2),
        ("ATUid_console_x", "Success", 1),
    ]
    assert events[0].duration_ms == 5400 and events[1].duration_ms is None
    assert events[0].phone and events[0].phone.endswith("711223344")
    assert "4826" not in str([(e.last_response, e.error) for e in events])
    assert len(member_ussd_sessions(phone=member.phone).rows) == 2


def test_a_session_end_needs_the_token_and_a_session(app: Flask) -> None:
    from app.models import UssdEvent

    client = signed_in(app)
    db.session.commit()
    no_token = browse(
        client, f"{PAGE}ussd-end", "POST", data={"phone": "0711223344", "session": "ATUid_1"}
    )
    assert no_token.status_code == 400 and "expired" in no_token.get_json()["error"]
    no_session = post_form(client, f"{PAGE}ussd-end", {"phone": "0711223344"})
    assert no_session.status_code == 400 and "No session" in no_session.get_json()["error"]
    db.session.rollback()
    assert db.session.query(UssdEvent).count() == 0


def test_the_page_script_reports_end_and_cancel(app: Flask) -> None:
    """The page's script is what a browser runs: it posts the end on END and on Cancel."""
    from pathlib import Path

    script = (Path(__file__).resolve().parent.parent / "admin/static/phone.js").read_text()
    client = signed_in(app)
    html = browse(client, PAGE).get_data(as_text=True)
    assert f'data-ussd-end-url="{PAGE}ussd-end"' in html
    assert 'ended(answer.session, "Success"' in script
    cancel = script.split('cancel.addEventListener("click"')[1].split("});")[0]
    assert 'ended(session, "Incomplete"' in cancel


def test_with_real_mpesa_the_page_keeps_sms_and_refuses_mpesa_in_words(
    app: Flask, _urls: dict[str, str]
) -> None:
    """SMS simulated, M-PESA real: the page shows the inbox, links to no stand-in that is
    not there, and its M-PESA controls answer 404 in words rather than fail."""
    only_sms = make_app(_urls, MPESA_CONSUMER_KEY="ck", MPESA_CONSUMER_SECRET="cs")
    try:
        db.session.commit()
        client = only_sms.test_client()
        login(client, staff("branch_manager"))
        page = browse(client, PAGE)
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert "M-PESA goes to Safaricom itself" in html and "/simulator/daraja" not in html
        for action, data in (
            ("paybill", {"phone": "0711223344", "amount": "10", "account": "M1"}),
            ("stk", {"checkout_id": "ws_CO_1", "outcome": "success"}),
            ("answer-here", {"phone": "0711223344", "on": "1"}),
        ):
            answer = post_form(client, f"{PAGE}{action}", data)
            assert answer.status_code == 404, (action, answer.get_data(as_text=True))
            assert "Safaricom itself" in answer.get_json()["error"]
    finally:
        with only_sms.app_context():
            db.session.remove()
            db.engine.dispose()
        only_sms.extensions["redis"].close()
