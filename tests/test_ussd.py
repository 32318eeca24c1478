"""*384*96# through `POST /ussd` with the gateway's real form fields, against real Redis
and the database: every hop is an HTTP request, as Africa's Talking sends it."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from app.extensions import db, queue, redis_client
from app.models import Loan, LoanProduct, Member, MpesaRequest, SmsMessage
from app.models.types import utcnow
from app.money import shillings_up
from app.selectors.loans import loan_debt
from app.services.members import member_set_pin
from app.sms_templates import GSM7_BASIC, kes
from tests.factories import make_member
from tests.helpers import Phone, make_app, work_until
from tests.loan_factories import JOINED, make_loan, make_product

PHONE = "+254711223344"


@pytest.fixture
def member(app: Flask) -> Member:
    m = make_member(phone="0711223344", savings=2500, name="Wanjiku Achieng")
    m.created_at = JOINED  # a member for long enough to borrow
    db.session.commit()
    return m


def with_pin(member: Member, pin: str = "4826") -> Member:
    member_set_pin(member_id=member.id, pin=pin)
    return member


def test_an_unknown_number_gets_a_polite_end_with_how_to_join(client: FlaskClient) -> None:
    reply = Phone(client, "+254799000000").dial()
    assert reply.startswith("END ") and "join" in reply


def test_first_dial_creates_a_pin_entered_twice_and_refuses_weak_ones(
    client: FlaskClient, member: Member
) -> None:
    phone = Phone(client)
    assert "ID number" in phone.dial() and "Wanjiku" in phone.dial()  # the second factor
    assert "Create a 4-digit PIN" in phone.press(member.national_id)
    assert "too easy" in phone.press("1234")
    assert "too easy" in phone.press("7777")
    assert "4 digits" in phone.press("12a4")
    assert "again" in phone.press("4826")
    assert "did not match" in phone.press("4827")
    assert "again" in phone.press("4826")
    assert phone.press("4826").startswith("CON 1. Check Balance")
    db.session.expire_all()
    stored = db.session.get(Member, member.id).pin_hash
    assert stored and "4826" not in stored
    raw = b"".join(redis_client().get(k) or b"" for k in redis_client().keys("ussd:session:*"))
    assert b"4826" not in raw  # never in session state


def test_balance_is_two_hops_after_the_pin(client: FlaskClient, member: Member) -> None:
    with_pin(member)
    loan = make_loan(product=make_product("V1"), amount=5000, on=date(2026, 11, 1), member=member)
    phone = Phone(client)
    assert phone.dial() == "CON SACCO: enter your PIN:\n9. Forgot PIN"
    phone.press("4826")  # hop 1: the PIN
    screen = phone.press("1")  # hop 2: the balance
    assert "Deposits KES 2,500.00" in screen
    assert f"{loan.loan_no}: KES" in screen and ", KES" in screen  # due, or overdue since


def test_three_wrong_pins_across_sessions_lock_for_30_minutes_and_text_the_member(
    client: FlaskClient, member: Member
) -> None:
    with_pin(member)
    first = Phone(client)
    first.dial()
    assert "Tries left: 2" in first.press("1111")
    second = Phone(client)
    second.dial()
    assert "Tries left: 1" in second.press("2222")
    locked = second.press("3333")
    assert locked.startswith("END ") and "locked until" in locked
    sms = db.session.scalars(select(SmsMessage).where(SmsMessage.template == "pin_locked")).all()
    assert len(sms) == 1
    third = Phone(client)
    assert "locked until" in third.dial()  # even the right PIN waits
    db.session.expire_all()
    assert db.session.get(Member, member.id).locked_until > utcnow() + timedelta(minutes=29)


def test_back_home_and_invalid_entries(client: FlaskClient, member: Member) -> None:
    with_pin(member)
    phone = Phone(client)
    phone.dial()
    main = phone.press("4826")
    assert "Choose a number" in phone.press("11")
    assert "Please enter a choice" in phone.press("")  # an empty part: same screen
    balance = phone.press("1")
    assert "Deposits" in balance
    assert phone.press("0") == main  # back
    phone.press("4")
    assert phone.press("00") == main  # home


def test_a_replayed_hop_gets_the_same_reply_and_does_nothing_twice(
    client: FlaskClient, member: Member
) -> None:
    with_pin(member)
    loan = make_loan(product=make_product("V1"), amount=5000, on=date(2026, 11, 1), member=member)
    phone = Phone(client)
    phone.dial()
    phone.press("4826")
    phone.press("3")
    phone.press("500")
    sent = phone.press("1")
    assert sent.startswith("END ") and "M-PESA prompt" in sent
    assert phone.send("*".join(phone.inputs)) == sent  # the gateway resends it
    requests = db.session.scalars(select(MpesaRequest).where(MpesaRequest.kind == "stk")).all()
    assert [(r.loan_id, r.amount, r.channel) for r in requests] == [(loan.id, 500, "ussd")]
    assert queue("payments").count >= 1


def test_a_gateway_that_sends_only_the_newest_input_works(
    client: FlaskClient, member: Member
) -> None:
    with_pin(member)
    phone = Phone(client)
    phone.dial()
    phone.send("4826")
    assert "Deposits" in phone.send("1")  # Airtel style: just the latest entry


def test_repay_suggests_the_amount_due_and_refuses_cents(
    client: FlaskClient, member: Member
) -> None:
    with_pin(member)
    make_loan(product=make_product("V1"), amount=5000, on=date(2026, 1, 1), member=member)
    phone = Phone(client)
    phone.dial()
    phone.press("4826")
    amount_screen = phone.press("3")
    assert "Amount to pay" in amount_screen and "due now KES" in amount_screen
    assert "whole shillings" in phone.press("10.50")
    assert "Confirm" in phone.press("700")
    assert "Cancelled" in phone.press("2")


def test_statement_on_screen_and_by_sms(client: FlaskClient, member: Member) -> None:
    with_pin(member)
    phone = Phone(client)
    phone.dial()
    phone.press("4826")
    screen = phone.press("4")
    assert "Savings +2,500.00" in screen
    assert "by SMS" in phone.press("1")
    assert db.session.scalars(select(SmsMessage).where(SmsMessage.template == "statement")).all()


def test_kiswahili_for_every_screen_after_choosing_it(client: FlaskClient, member: Member) -> None:
    with_pin(member)
    phone = Phone(client)
    phone.dial()
    phone.press("4826")
    phone.press("7")
    main = phone.press("2")
    assert main.startswith("CON 1. Salio")
    assert "Akiba" in phone.press("1")
    again = Phone(client)
    assert "weka PIN yako" in again.dial()
    db.session.expire_all()
    assert db.session.get(Member, member.id).language == "sw"


def test_a_failure_inside_ends_the_session_with_an_apology(
    client: FlaskClient, member: Member, app: Flask
) -> None:
    with_pin(member)
    phone = Phone(client)
    phone.dial()
    redis_client().connection_pool.disconnect()
    broken = app.extensions["redis"]
    app.extensions["redis"] = type(broken).from_url("redis://127.0.0.1:1/0")
    try:
        reply = phone.press("4826")
    finally:
        app.extensions["redis"] = broken
    assert reply.startswith("END ") and "not available" in reply


def test_a_malformed_hop_still_gets_an_end(client: FlaskClient) -> None:
    reply = client.post("/ussd", data={"text": "1"})
    assert reply.status_code == 200 and reply.get_data(as_text=True).startswith("END ")


def test_session_starts_are_rate_limited_per_phone(client: FlaskClient, member: Member) -> None:
    with_pin(member)
    replies = [Phone(client).dial() for _ in range(11)]
    assert all(r.startswith("CON ") for r in replies[:10])
    assert "Too many attempts" in replies[10]


@pytest.mark.parametrize("language", ["en", "sw"])
def test_worst_case_screens_fit_182_gsm7_characters(client: FlaskClient, language: str) -> None:
    member = make_member(
        phone="0711223344",
        savings=Decimal("9999999"),
        name="Bartholomew-Nyambura Wanjiku",
        language=language,
    )
    member.created_at = JOINED
    db.session.commit()
    with_pin(member)
    product = make_product("V1", max_amount=None, limit_multiple=Decimal("10"))
    for _ in range(3):
        make_loan(product=product, amount=1_000_000, on=date(2026, 1, 1), member=member)
    phone = Phone(client)
    phone.dial()
    screens = [phone.press("4826"), phone.press("1"), phone.press("0"), phone.press("3")]
    screens += [phone.press("1"), phone.press("1234567"), phone.press("00"), phone.press("4")]
    for screen in screens:
        assert len(screen) - 4 <= 182, (len(screen), screen)
    assert re.search(r"1,\d{3},\d{3}", screens[1])


def test_events_are_stored(client: FlaskClient) -> None:
    reply = client.post(
        "/ussd/events",
        data={
            "sessionId": "ATUid_1",
            "phoneNumber": PHONE,
            "status": "Failed",
            "hopsCount": "3",
            "input": "1*4826",
            "lastAppResponse": "CON SACCO",
            "durationInMillis": "9000",
        },
    )
    assert reply.status_code == 200
    from app.models import UssdEvent

    row = db.session.scalar(select(UssdEvent))
    assert (row.session_id, row.status, row.hops, row.last_response) == (
        "ATUid_1",
        "Failed",
        3,
        "CON SACCO",
    )
    assert not hasattr(row, "input")  # what was typed (a PIN among it) is not kept


def test_end_to_end_a_member_repays_by_menu_3_and_menu_1_shows_exactly_500_less(
    client: FlaskClient, member: Member, over_http: str
) -> None:
    """Through the real worker, the Daraja simulator and our callback route."""
    with_pin(member)
    loan_id = make_loan(
        product=make_product("V1"), amount=5000, on=date(2026, 11, 1), member=member
    ).id
    before = loan_debt(loan_id=loan_id).total
    db.session.commit()

    phone = Phone(client)
    phone.dial()
    phone.press("4826")
    first_balance = phone.press("1")
    assert f": KES {shillings_up(before):,.0f}, KES" in first_balance  # whole shillings, up
    phone.press("0")
    phone.press("3")  # one loan: straight to the amount (hop 2 after the PIN)
    phone.press("500")
    assert "M-PESA prompt" in phone.press("1")  # hop 4 after the PIN: repayment asked

    work_until(
        lambda: (
            db.session.scalar(select(MpesaRequest.status).where(MpesaRequest.kind == "stk"))
            == "succeeded"
        ),
        "the STK callback to post the repayment",
    )
    assert before - loan_debt(loan_id=loan_id).total == Decimal("500")
    again = Phone(client)
    again.dial()
    again.press("4826")
    assert f": KES {shillings_up(before - 500):,.0f}, " in again.press("1")
    receipts = db.session.scalars(
        select(SmsMessage.body).where(SmsMessage.template == "repayment_received")
    ).all()
    assert len(receipts) == 1 and kes(Decimal("500")) in receipts[0]


ENTRIES = st.one_of(
    st.sampled_from(["1", "3", "4", "7", "0", "00", "98", "2", "4826", "1111", "", "500"]),
    st.text(alphabet="0123456789*#", max_size=12),
    st.text(alphabet="0123456789", min_size=100, max_size=400),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(entries=st.lists(ENTRIES, min_size=1, max_size=8), whole=st.booleans())
def test_random_texts_at_random_states_always_get_con_or_end_that_fits(
    client: FlaskClient, member: Member, entries: list[str], whole: bool
) -> None:
    if member.pin_hash is None:
        with_pin(member)
    member.locked_until = None  # random wrong PINs lock; each example starts unlocked
    member.failed_pin_count = 0
    db.session.commit()
    redis_client().delete(f"ussd:starts:{member.phone}")
    phone = Phone(client)  # asserts 200, text/plain, CON/END, <= 182, GSM-7 on every hop
    phone.dial()
    for entry in entries:
        if whole:
            phone.press(entry)  # Africa's Talking: the whole path each hop
        else:
            phone.send(entry)  # a gateway that sends only the newest input


def instant_product() -> int:
    return make_product("INSTANT").id


def test_apply_for_an_instant_loan_in_five_hops_is_approved_and_paid_out_by_b2c(
    client: FlaskClient, member: Member
) -> None:
    with_pin(member)
    instant_product()
    phone = Phone(client)
    phone.dial()
    phone.press("4826")
    offers = phone.press("2")  # hop 1 after the PIN
    assert "1. Instant Loan up to KES 2,500.00" in offers or "up to KES 2,500.00" in offers
    assert "KES 100 to KES 2,500" in phone.press("1")  # hop 2: the product
    assert "whole shillings from KES 100 to KES 2,500" in phone.press("3000")
    summary = phone.press("1000")  # hop 3: the amount (one-term product: no term screen)
    assert "fee KES 25.00" in summary and "You get KES 975.00" in summary
    done = phone.press("1")  # hop 4: confirm
    assert done.startswith("END ") and "approved" in done and "KES 975.00" in done
    loan = db.session.scalar(select(Loan).where(Loan.member_id == member.id))
    assert (loan.status, loan.channel, loan.principal) == ("approved", "ussd", 1000)
    payout = db.session.scalar(select(MpesaRequest).where(MpesaRequest.kind == "b2c"))
    assert payout.amount == 975 and payout.status == "pending"


def test_a_loan_above_auto_approval_goes_to_review_with_a_term(
    client: FlaskClient, member: Member
) -> None:
    with_pin(member)
    make_product("V1")  # 1,000 to the limit, 1-36 months, no auto-approval
    phone = Phone(client)
    phone.dial()
    phone.press("4826")
    phone.press("2")
    phone.press("1")
    assert "how many months" in phone.press("2000")
    assert "Choose a number" in phone.press("99")
    summary = phone.press("6")
    assert "6 installments of KES" in summary
    done = phone.press("1")
    assert "under review" in done
    assert db.session.scalar(select(Loan.status).where(Loan.member_id == member.id)) == "submitted"


def test_a_member_who_cannot_borrow_is_told_why(client: FlaskClient) -> None:
    member = make_member(phone="0711223344", savings=0)
    with_pin(member)
    make_product("V1", min_membership_days=90)
    phone = Phone(client)
    phone.dial()
    phone.press("4826")
    reply = phone.press("2")
    assert reply.startswith("END ") and "cannot borrow" in reply


def test_end_to_end_apply_by_ussd_payout_by_b2c_then_repay_by_menu_3(
    client: FlaskClient, member: Member, over_http: str
) -> None:
    with_pin(member)
    member_id = member.id
    instant_product()
    db.session.commit()
    phone = Phone(client)
    phone.dial()
    phone.press("4826")
    for entry in ("2", "1", "1000"):
        phone.press(entry)
    assert "approved" in phone.press("1")
    loan_id = work_until(
        lambda: db.session.scalar(
            select(Loan.id).where(Loan.member_id == member_id, Loan.status == "active")
        ),
        "the B2C payout to disburse the loan",
    )
    assert db.session.scalars(
        select(SmsMessage.body).where(SmsMessage.template == "loan_disbursed")
    ).all()
    before = loan_debt(loan_id=loan_id).total
    repay = Phone(client)
    repay.dial()
    repay.press("4826")
    assert f": KES {shillings_up(before):,.0f}, pay" in repay.press("1")
    repay.press("0")
    repay.press("3")
    repay.press("500")
    repay.press("1")
    work_until(
        lambda: (
            db.session.scalar(select(MpesaRequest.status).where(MpesaRequest.kind == "stk"))
            == "succeeded"
        ),
        "the STK repayment to post",
    )
    again = Phone(client)
    again.dial()
    again.press("4826")
    assert f": KES {shillings_up(before - 500):,.0f}, pay" in again.press("1")
    assert db.session.scalars(
        select(SmsMessage.body).where(SmsMessage.template == "repayment_received")
    ).all()


def late_loan(member: Member, product: LoanProduct) -> int:
    from app.clock import business_today
    from app.services.loans import loan_update_arrears

    loan_id = make_loan(product=product, amount=5000, on=date(2026, 6, 1), member=member).id
    loan_update_arrears(loan_id=loan_id, as_of=business_today())
    return loan_id


def test_promise_to_pay_only_for_a_late_member_with_a_date_within_14_days(
    client: FlaskClient, member: Member
) -> None:
    from app.clock import business_today
    from app.models import PromiseToPay

    with_pin(member)
    product = make_product("V1")
    make_loan(product=product, amount=2000, on=date(2026, 11, 20), member=member)
    phone = Phone(client)
    phone.dial()
    main = phone.press("4826")
    assert "6. Promise" not in main and "Choose a number" in phone.press("6")

    loan_id = late_loan(member, product)
    late = Phone(client)
    late.dial()
    assert "6. Promise to Pay" in late.press("4826")
    today = business_today()
    assert "DDMM" in late.press("6")  # one late loan: straight to the date
    assert "from tomorrow" in late.press(today.strftime("%d%m"))  # today is too soon
    too_far = today + timedelta(days=15)
    assert "from tomorrow" in late.press(too_far.strftime("%d%m"))
    assert "amount you will pay" in late.press((today + timedelta(days=5)).strftime("%d%m"))
    assert "Promise to pay KES 1,500" in late.press("1500")  # confirmed before it is saved
    done = late.press("1")
    assert done.startswith("END ") and "recorded" in done
    promise = db.session.scalar(select(PromiseToPay))
    assert (promise.loan_id, promise.amount, promise.channel) == (loan_id, 1500, "ussd")
    assert promise.promised_date == today + timedelta(days=5)
    assert db.session.scalars(
        select(SmsMessage).where(SmsMessage.template == "promise_recorded")
    ).all()
    again = Phone(client)
    again.dial()
    again.press("4826")
    again.press("6")
    again.press((today + timedelta(days=3)).strftime("%d%m"))
    assert "open already" in again.press("100")


def test_a_dropped_session_offers_continue_or_start_over_within_5_minutes(
    client: FlaskClient, member: Member
) -> None:
    with_pin(member)
    make_loan(product=make_product("V1"), amount=5000, on=date(2026, 11, 1), member=member)
    dropped = Phone(client)
    dropped.dial()
    dropped.press("4826")
    dropped.press("3")
    assert "Confirm" in dropped.press("700")  # ...and the network drops the session here

    back = Phone(client)
    back.dial()
    assert "1. Continue" in back.press("4826")
    resumed = back.press("1")
    assert "Pay KES 700.00" in resumed and "Confirm" in resumed
    assert "M-PESA prompt" in back.press("1")

    fresh = Phone(client)  # that session ended: nothing to continue now
    fresh.dial()
    assert fresh.press("4826").startswith("CON 1. Check Balance")


def test_start_over_goes_to_the_main_menu(client: FlaskClient, member: Member) -> None:
    with_pin(member)
    make_loan(product=make_product("V1"), amount=5000, on=date(2026, 11, 1), member=member)
    first = Phone(client)
    first.dial()
    first.press("4826")
    first.press("3")  # cut off at the amount
    second = Phone(client)
    second.dial()
    assert "1. Continue" in second.press("4826")
    assert second.press("2").startswith("CON 1. Check Balance")


def test_98_shows_more_loans_on_the_balance(client: FlaskClient, member: Member) -> None:
    with_pin(member)
    product = make_product("V1", limit_multiple=Decimal("20"))
    numbers = [
        make_loan(product=product, amount=1000, on=date(2026, 11, 1), member=member).loan_no
        for _ in range(3)
    ]
    phone = Phone(client)
    phone.dial()
    phone.press("4826")
    first = phone.press("1")
    assert numbers[0] in first and numbers[1] in first and numbers[2] not in first
    assert "98 More" in first
    second = phone.press("98")
    assert numbers[2] in second and "98 More" not in second and "Deposits" not in second
    assert phone.press("0").startswith("CON 1. Check Balance")


def test_with_the_database_down_the_member_gets_an_apology_not_a_5xx(
    _urls: dict[str, str], tmp_path: Path
) -> None:
    down = make_app(
        {"REDIS_URL": _urls["REDIS_URL"]},
        DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none"
        if _urls["DATABASE_URL"].startswith("postgresql")
        else f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'sacco.db'}",
    )
    try:
        reply = down.test_client().post(
            "/ussd",
            data={
                "sessionId": "ATUid_down",
                "serviceCode": "*384*96#",
                "phoneNumber": PHONE,
                "networkCode": "63902",
                "text": "",
            },
        )
        assert reply.status_code == 200
        assert reply.get_data(as_text=True).startswith("END Sorry, the service is not available")
    finally:
        with down.app_context():
            db.session.remove()
            db.engine.dispose()
        down.extensions["redis"].close()


GOALS = {
    # goal: (entries after the PIN, what the last screen shows, the most hops allowed)
    "balance": (["1"], "Deposits", 2),
    "loan application": (["2", "1", "1000", "1"], "approved", 5),
    "repayment": (["3", "500", "1"], "M-PESA prompt", 4),
}


@pytest.mark.parametrize("goal", sorted(GOALS))
def test_hops_to_each_goal_after_the_pin(client: FlaskClient, member: Member, goal: str) -> None:
    entries, shows, most = GOALS[goal]
    with_pin(member)
    make_product("INSTANT")
    if goal == "repayment":
        make_loan(product=make_product("V1"), amount=1000, on=date(2026, 11, 1), member=member)
    phone = Phone(client)
    phone.dial()
    phone.press("4826")
    screen = ""
    for entry in entries:
        screen = phone.press(entry)
    assert shows in screen
    assert len(entries) <= most  # README lists these counts


@pytest.mark.parametrize("language", ["en", "sw"])
def test_every_screen_renders_within_182_gsm7_characters_with_worst_case_data(
    app: Flask, language: str
) -> None:
    """Each screen of the map, rendered directly with the longest realistic data: a long
    name, 7-digit balances, several loans (one late), the longest product names."""
    from app.clock import business_today
    from app.services.loans import loan_update_arrears
    from app.ussd.engine import Hop, Session, SessionStore, UssdRequest
    from ussd_menus.screens import SCREENS

    member = make_member(
        phone="0711223344",
        savings=Decimal("9999999"),
        name="Bartholomew-Nyambura Wanjiku-Achieng",
        language=language,
    )
    member.created_at = JOINED
    db.session.commit()
    long_name = "Development Loan For Members Plus"
    product = make_product(
        "DEV",
        name=long_name,
        min_membership_days=0,
        min_share_capital=Decimal("0"),
        limit_multiple=Decimal("10"),
        maker_checker_threshold=None,
    )
    make_product("INSTANT", name=long_name + " Instant")
    loans = [
        make_loan(product=product, amount=1_999_999, on=date(2026, 3, 1), member=member, term=36)
        for _ in range(3)
    ]
    loan_update_arrears(loan_id=loans[0].id, as_of=business_today())
    # Menu 8 and the guarantor screens (issue 19): a long-named applicant asks this member
    # to guarantee 1,999,999 of a secured loan.
    from app.services.guarantees import guarantee_request
    from app.services.loans import loan_apply

    secured = make_product("V1", code="SEC", min_guarantors=2, guarantee_cover=Decimal("100"))
    applicant = make_member(savings=Decimal("700000"), name=member.name)
    applicant.created_at = JOINED
    db.session.commit()
    asked = guarantee_request(
        loan_id=loan_apply(
            member_id=applicant.id, product_id=secured.id, amount=1_999_999, as_of=business_today()
        ).id,
        guarantor_id=member.id,
        amount=1_999_999,
        actor="member:test",
    )
    data = {
        "loan_id": loans[0].id,
        "product_id": product.id,
        "offers": [[product.id, long_name[:18], "9999999"]] * 3,  # OFFERS_SHOWN
        "limit": "9999999",
        "amount": "1999999",
        "term": 36,
        "promise_date": (business_today() + timedelta(days=14)).isoformat(),
        "page": 0,
        "new_phone": "254711223399",
        "guarantor_id": applicant.id,
        "guarantee_id": asked.id,
    }
    store = SessionStore(redis_client(), "secret")
    request = UssdRequest("ATUid_render", "254711223344", "*384*96#", "", "63902")
    for name, screen in SCREENS.items():
        session = Session(
            screen=name, data=dict(data), member_id=member.id, language=language, authed=True
        )
        body = screen.render(Hop(request, session, "", store))
        assert len(body) <= 182, (name, len(body), body)
        assert set(body) <= GSM7_BASIC, (name, set(body) - GSM7_BASIC)


def test_hanging_up_after_reading_the_balance_offers_no_resume(
    client: FlaskClient, member: Member
) -> None:
    with_pin(member)
    first = Phone(client)
    first.dial()
    first.press("4826")
    assert "Deposits" in first.press("1")  # read, then hang up: a normal ending
    second = Phone(client)
    second.dial()
    assert second.press("4826").startswith("CON 1. Check Balance")


def test_every_new_session_counts_toward_the_start_limit_whatever_its_first_text(
    client: FlaskClient, member: Member
) -> None:
    """Item 2: a script that opens each session with `9` instead of an empty text was
    never counted; now every session id not seen before for the phone is a start."""
    with_pin(member)
    replies = [Phone(client).send("9") for _ in range(14)]
    assert not any("Too many attempts" in r for r in replies[:10])
    assert all(r.startswith("END ") and "Too many attempts" in r for r in replies[10:])


def test_a_resent_hop_of_a_known_session_is_not_a_new_start(
    client: FlaskClient, member: Member
) -> None:
    with_pin(member)
    phone = Phone(client)
    # Gateways resend the first hop; one session stays one start however often it comes.
    assert all(phone.dial().startswith("CON ") for _ in range(12))
    assert phone.press("4826").startswith("CON 1. Check Balance")
    others = [Phone(client).dial() for _ in range(10)]
    assert all(r.startswith("CON ") for r in others[:9]) and "Too many" in others[9]


def test_a_phones_start_counter_lives_for_the_minute_it_counts(
    client: FlaskClient, member: Member
) -> None:
    """The counter is made with its minute's expiry and counting keeps that expiry: a
    counter without one would refuse the phone for good after ten starts."""
    with_pin(member)
    key = f"ussd:starts:{member.phone}"
    Phone(client).dial()
    first_ttl = redis_client().ttl(key)
    assert 0 < first_ttl <= 60
    assert Phone(client).dial().startswith("CON ")
    assert int(redis_client().get(key)) == 2
    assert 0 < redis_client().ttl(key) <= first_ttl


def test_a_ussd_hop_is_not_the_api_rate_limiters(client: FlaskClient, member: Member) -> None:
    with_pin(member)
    reply = client.post(
        "/ussd",
        data={"sessionId": "ATUid_rl", "phoneNumber": "+254711223344", "text": ""},
    )
    assert reply.status_code == 200 and reply.text.startswith("CON ")
    assert not [h for h in reply.headers.keys() if h.lower().startswith("x-ratelimit")]
    assert not redis_client().keys("sacco:api*")


def test_too_many_attempts_is_in_the_members_language(client: FlaskClient) -> None:
    member = make_member(phone="0711223344", language="sw")
    with_pin(member)
    replies = [Phone(client).dial() for _ in range(11)]
    assert replies[10] == "END Majaribio mengi. Tafadhali jaribu tena baada ya dakika moja."


def test_the_apology_is_in_the_members_language(client: FlaskClient, app: Flask) -> None:
    member = make_member(phone="0711223344", language="sw")
    with_pin(member)
    phone = Phone(client)
    phone.dial()
    redis_client().connection_pool.disconnect()
    broken = app.extensions["redis"]
    app.extensions["redis"] = type(broken).from_url("redis://127.0.0.1:1/0")
    try:
        reply = phone.press("4826")
        stranger = Phone(client, "+254799000000").dial()
    finally:
        app.extensions["redis"] = broken
    assert reply == "END Samahani, huduma haipatikani sasa. Jaribu tena baadaye."
    assert stranger.startswith("END Sorry, the service is not available")  # no member: English
