"""Savings and shares on *384*96# (issue 20, "USSD"), through `POST /ussd` as Africa's
Talking sends it: the balance lists each account; menu 9 saves by M-PESA prompt into
deposits or a savings account, withdraws to M-PESA (the fee shown, the PIN again), buys
shares from free deposits (PIN) or by prompt, and shows this year's and last year's posted
dividends. Every reply is checked by tests.helpers.Phone (CON/END, <= 182 GSM-7
characters); the last test renders every new screen with worst-case data and its longest
error, in both languages. The books reconcile after each test (the autouse fixture)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.cli.runtime import make_worker
from app.clock import business_today
from app.extensions import db, redis_client
from app.models import Account, DividendLine, DividendRun, Member, MpesaRequest
from app.services.guarantees import guarantee_accept, guarantee_request
from app.services.loans import loan_apply
from app.services.members import member_set_pin
from app.services.savings import account_product, products_ensure
from app.services.savings.money_in import account_deposit
from app.sms_templates import GSM7_BASIC
from app.ussd.engine import MAX_SCREEN, Hop, Session, SessionStore, UssdRequest
from tests.factories import make_member
from tests.helpers import Phone, stk_body
from tests.loan_factories import JOINED, balance, make_product, make_staff
from ussd_menus.screens import ACCOUNTS_LISTED, SCREENS
from ussd_menus.text import t

D = Decimal
PIN = "4826"
PHONE = "+254711223344"
SHOWN = "254711223344"  # the caller as screens show it
TOKEN = "dev-callback-token"  # noqa: S105 - the test settings' CALLBACK_TOKEN
CHECKOUT = "ws_CO_191220191020363925"


def _member(phone: str, name: str, deposits: int, language: str = "en") -> Member:
    member = make_member(phone=phone, savings=deposits, name=name, language=language)
    member.created_at = JOINED
    db.session.commit()
    member_set_pin(member_id=member.id, pin=PIN)
    return member


def _save(member_id: int, code: str, amount: int, receipt: str) -> None:
    """Money already in an account (a Paybill payment to it), through the one money-in
    service."""
    account_deposit(
        member_id=member_id,
        product=account_product(code),
        amount=amount,
        reference=receipt,
        value_date=date(2026, 1, 2),
    )
    db.session.commit()


@dataclass(frozen=True)
class Ref:
    """A member as the tests keep it: each request ends the session its row was in."""

    id: int
    member_no: str


@pytest.fixture
def member(app: Flask) -> Ref:
    products_ensure()
    made = _member("0711223344", "Wanjiku Achieng", 10000)
    return Ref(made.id, made.member_no)


@pytest.fixture
def daraja(mocked: responses.RequestsMock, base: str) -> responses.RequestsMock:
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


def _signed_in(client: FlaskClient, phone: str = PHONE) -> Phone:
    session = Phone(client, phone)
    assert "PIN" in session.dial()
    menu = session.press(PIN)
    if "1. Continue" in menu:
        menu = session.press("2")
    assert menu.startswith("CON 1. "), menu
    return session


def work() -> None:
    make_worker(("payments",)).work(burst=True)


def _code(member: Ref, prefix: str) -> str:
    return f"{prefix}-{member.member_no}"


def test_the_balance_lists_each_account_by_its_product(client: FlaskClient, member: Ref) -> None:
    _save(member.id, "ORD", 3200, "RKTORD0001")
    _save(member.id, "SHR", 1500, "RKTSHR0001")
    phone = _signed_in(client)
    assert phone.press("1") == (
        "CON Deposits KES 10,000.00\nOrdinary savings KES 3,200.00\n"
        "Share capital KES 1,500.00\nNo loans.\n0 Back 00 Home"
    )


def test_the_main_menu_offers_savings_and_shares(client: FlaskClient, member: Ref) -> None:
    phone = _signed_in(client)
    menu = phone.press("9")
    assert menu == (
        "CON 1. Save\n2. Withdraw to M-PESA\n3. Buy shares\n4. My dividends\n"
        "5. Standing orders\n0 Back 00 Home"
    )
    assert "Choose a number from the list.\n1. Save" in phone.press("7")  # same screen


def test_save_by_prompt_opens_a_savings_account_and_the_callback_credits_it(
    client: FlaskClient, member: Ref, daraja: responses.RequestsMock
) -> None:
    phone = _signed_in(client)
    phone.press("9")
    which = phone.press("1")
    assert which == (
        f"CON Save to which account?\n1. Deposits {member.member_no}\n"
        f"2. Ordinary savings {member.member_no}S\n0 Back 00 Home"
    )
    assert "Choose a number" in phone.press("3")
    amount = phone.press("2")
    assert amount.startswith(f"CON Amount to pay into Ordinary savings {member.member_no}S:")
    for bad in ("10.50", "-5", "250001", "lots"):
        assert "Enter whole shillings from KES 1 to KES 250,000." in phone.press(bad)
    confirm = phone.press("1200")
    assert confirm == (
        f"CON Pay KES 1,200.00 into Ordinary savings {member.member_no}S from M-PESA "
        f"{SHOWN}?\n1. Confirm\n2. Cancel"
    )
    sent = phone.press("1")
    assert sent.startswith("END You will get an M-PESA prompt for KES 1,200.00.")
    request = db.session.scalar(select(MpesaRequest))
    account = db.session.scalar(select(Account).where(Account.code == _code(member, "ORD")))
    assert (request.purpose, request.account_id, request.amount) == ("deposit", account.id, 1200)
    assert request.account_reference == f"{member.member_no}S"

    work()  # the prompt is sent; the member pays; the callback credits the account once
    for _ in range(2):
        client.post(
            f"/payments/{TOKEN}/stk/callback",
            data=json.dumps(
                stk_body(CHECKOUT, amount=1200, receipt="USSDSAVE01", phone=254711223344)
            ),
            content_type="application/json",
        )
        work()
    assert balance(_code(member, "ORD")) == D("1200.00")
    assert balance(_code(member, "SAV")) == D("10000.00")


def test_withdraw_shows_the_fee_asks_the_pin_and_sends_the_payout(
    client: FlaskClient, member: Ref
) -> None:
    _save(member.id, "ORD", 5000, "RKTORD0002")
    phone = _signed_in(client)
    phone.press("9")
    amount = phone.press("2")  # one withdrawable account: straight to the amount
    # 5,000 less the minimum balance 100 and the fee 30.
    assert amount == (
        f"CON Ordinary savings {member.member_no}S: balance KES 5,000.00. You can withdraw "
        "up to KES 4,870, fee KES 30.00. Amount:\n0 Back 00 Home"
    )
    assert "Enter whole shillings from KES 10 to KES 4,870." in phone.press("4871")
    assert "Enter whole shillings from KES 10 to KES 4,870." in phone.press("5")
    pin = phone.press("2000")
    assert pin == (
        f"CON Withdraw KES 2,000.00 to M-PESA {SHOWN}, fee KES 30.00.\n"
        "Enter PIN to confirm\n2. Cancel"
    )
    assert "Enter your PIN, or 2 to cancel." in phone.press("12")  # costs no try
    assert "Wrong PIN. Tries left: 2." in phone.press("1111")
    done = phone.press(PIN)
    assert done == "END KES 2,000.00 is on its way to your M-PESA. We will SMS you."
    payout = db.session.scalar(select(MpesaRequest))
    assert (payout.kind, payout.purpose, payout.amount) == ("b2c", "withdrawal", 2000)
    assert balance(_code(member, "ORD")) == D("2970.00")
    raw = b"".join(redis_client().get(k) or b"" for k in redis_client().keys("ussd:*"))
    assert PIN.encode() not in raw  # the PIN that confirmed is not kept in session state


def test_withdraw_without_a_withdrawable_account_says_so_on_the_same_screen(
    client: FlaskClient, member: Ref
) -> None:
    phone = _signed_in(client)
    phone.press("9")
    assert phone.press("2").startswith("CON You have no account you can withdraw from.\n1. Save")


def test_withdraw_when_nothing_is_available_ends_in_words(client: FlaskClient, member: Ref) -> None:
    _save(member.id, "ORD", 120, "RKTORD0003")
    phone = _signed_in(client)
    phone.press("9")
    ended = phone.press("2")
    assert ended == (
        f"END You cannot withdraw from {member.member_no}S now: balance KES 120.00, "
        "minimum KES 100.00, fee KES 30.00."
    )


def test_buy_shares_from_free_deposits_with_the_pin(client: FlaskClient, member: Ref) -> None:
    phone = _signed_in(client)
    phone.press("9")
    how = phone.press("3")
    assert how == (
        "CON Buy shares (now KES 0.00)\n1. From deposits (free KES 10,000)\n2. By M-PESA"
        "\n0 Back 00 Home"
    )
    assert phone.press("1").startswith("CON Amount of deposits to move to shares (up to KES")
    assert "Enter whole shillings from KES 1 to KES 10,000." in phone.press("10001")
    pin = phone.press("2500")
    assert pin.startswith("CON Buy shares of KES 2,500.00 from your deposits.\nEnter PIN")
    done = phone.press(PIN)
    assert done == "END You bought shares of KES 2,500.00. Share capital now KES 2,500.00."
    assert balance(_code(member, "SHR")) == D("2500.00")
    assert balance(_code(member, "SAV")) == D("7500.00")


def test_deposits_that_secure_loans_cannot_buy_shares(client: FlaskClient, member: Ref) -> None:
    """All of the member's deposits pledged as a guarantee: nothing free to move."""
    secured = make_product("V1", code="SEC", min_guarantors=1, guarantee_cover=D("100"))
    borrower = _member("0722000001", "John Kamau", 5000)
    loan = loan_apply(
        member_id=borrower.id, product_id=secured.id, amount=15000, as_of=business_today()
    )
    asked = guarantee_request(
        loan_id=loan.id, guarantor_id=member.id, amount=10000, actor="member:test"
    )
    guarantee_accept(guarantee_id=asked.id, guarantor_id=member.id, via="ussd")
    phone = _signed_in(client)
    phone.press("9")
    assert "free KES 0" in phone.press("3")
    assert phone.press("1").startswith(
        "CON Your deposits have nothing free: they secure loans.\nBuy shares"
    )


def test_buy_shares_by_prompt_pays_into_the_share_account(client: FlaskClient, member: Ref) -> None:
    phone = _signed_in(client)
    phone.press("9")
    phone.press("3")
    amount = phone.press("2")
    assert amount.startswith(f"CON Amount to pay into Share capital {member.member_no}SH:")
    phone.press("3000")
    assert phone.press("1").startswith("END You will get an M-PESA prompt for KES 3,000.00.")
    shares = db.session.scalar(select(Account).where(Account.code == _code(member, "SHR")))
    request = db.session.scalar(select(MpesaRequest))
    assert (request.purpose, request.account_id) == ("deposit", shares.id)


def _run(year: int, status: str, member: Ref, net: str) -> None:
    staff = make_staff("branch_manager")
    run = DividendRun(
        year=year,
        share_rate=D("10"),
        deposit_rate=D("5"),
        method="simple",
        payout="savings",
        dividend_tax_rate=D("5"),
        interest_tax_rate=D("5"),
        status=status,
        declared_by_id=staff.id,
    )
    db.session.add(run)
    db.session.flush()
    db.session.add(
        DividendLine(
            run_id=run.id,
            member_id=member.id,
            share_basis=D("10000"),
            deposit_basis=D("20000"),
            dividend=D("1000.00"),
            interest=D("1000.00"),
            tax=D("100.00"),
            net=D(net),
        )
    )
    db.session.commit()


def test_my_dividends_shows_posted_runs_of_this_year_and_last(
    client: FlaskClient, member: Ref
) -> None:
    year = business_today().year
    phone = _signed_in(client)
    phone.press("9")
    assert phone.press("4") == (
        f"CON No dividends posted for {year - 1} or {year} yet.\n0 Back 00 Home"
    )
    _run(year - 1, "posted", member, "1900.00")
    _run(year, "approved", member, "1800.00")  # not posted: its figures may still change
    _run(year - 2, "posted", member, "1700.00")  # older than last year
    again = _signed_in(client)
    again.press("9")
    assert again.press("4") == (
        f"CON Dividends, KES:\n{year - 1} gross 2,000.00 tax 100.00 net 1,900.00\n0 Back 00 Home"
    )


def test_kiswahili_through_save_and_shares(client: FlaskClient, app: Flask) -> None:
    products_ensure()
    made = _member("0711223344", "Wanjiku Achieng", 10000, language="sw")
    member = Ref(made.id, made.member_no)
    phone = _signed_in(client)
    assert "Akiba KES 10,000.00\nHisa KES 0.00" in phone.press("1")
    phone.press("00")
    assert phone.press("9").startswith("CON 1. Weka akiba\n2. Toa kwenda M-PESA")
    assert f"2. Akiba ya kawaida {member.member_no}S" in phone.press("1")
    assert "Kiasi cha kuweka kwenye Akiba ya kawaida" in phone.press("2")
    phone.press("00")
    phone.press("9")
    assert "Nunua hisa (sasa KES 0.00)" in phone.press("3")
    phone.press("1")
    phone.press("1000")
    assert phone.press(PIN) == "END Umenunua hisa za KES 1,000.00. Hisa zako sasa ni KES 1,000.00."


GOALS = {
    # goal: (entries after the PIN, what the last screen shows, the most hops: README)
    "save": (["9", "1", "2", "500", "1"], "M-PESA prompt", 5),
    "withdraw": (["9", "2", "500", PIN], "on its way", 4),
    "buy shares from deposits": (["9", "3", "1", "500", PIN], "You bought shares", 5),
    "buy shares by prompt": (["9", "3", "2", "500", "1"], "M-PESA prompt", 5),
    "my dividends": (["9", "4"], "No dividends", 2),
}


@pytest.mark.parametrize("goal", sorted(GOALS))
def test_hops_to_each_savings_goal_after_the_pin(
    client: FlaskClient, member: Ref, goal: str
) -> None:
    entries, shows, most = GOALS[goal]
    _save(member.id, "ORD", 5000, "RKTORD0004")
    phone = _signed_in(client)
    screen = ""
    for entry in entries:
        screen = phone.press(entry)
    assert shows in screen
    assert len(entries) <= most


# -- every new screen within 182 GSM-7 characters -----------------------------------------

LONG = "Bartholomew-Nyambura Wanjiku-Achieng Omondi"
# Each new screen with the errors it can show above itself.
ERRORS = {
    "sav_menu": ["choose", "wd_none"],
    "save_account": ["choose"],
    "save_amount": ["amount_bad"],
    "save_confirm": ["choose"],
    "wd_account": ["choose"],
    "wd_amount": ["amount_bad"],
    "wd_pin": ["pin_or_2_cancel", "pin_wrong"],
    "shares_how": ["choose", "shares_no_free"],
    "shares_amount": ["amount_bad"],
    "shares_pin": ["pin_or_2_cancel", "pin_wrong"],
    "dividends": ["choose"],
    "balance": ["choose"],
    "main": ["choose"],
}
ENDS = {
    "repay_refused": {"why": "x" * 140},
    "repay_sent": {"amount": "KES 250,000.00"},
    "wd_refused": {"why": "x" * 150},
    "wd_sent": {"amount": "KES 250,000.00"},
    "wd_nothing": {
        "number": "M9999999SH",
        "why": "balance KES 9,999,999.00, kiwango cha chini KES 9,999,999.00, ada KES 9,999.00.",
    },
    "shares_done": {"amount": "KES 9,999,999.00", "shares": "KES 99,999,999.00"},
    "shares_refused": {"why": "x" * 120},
}
WORST = {
    "low": "KES 10",
    "high": "KES 9,999,999",
    "left": 2,
}


@pytest.mark.parametrize("language", ["en", "sw"])
def test_every_savings_screen_fits_182_gsm7_characters_with_worst_case_data(
    app: Flask, language: str
) -> None:
    """Rendered directly, as the map's own worst-case test does: the longest product names
    a product may have, 7-digit balances, the most accounts a list shows, several live
    loans under the balance, two years of dividends; each with its longest error."""
    products_ensure()
    for code in ("DEP", "SHR", "ORD"):
        product = account_product(code)
        product.name = product.name_sw = "Y" * 60  # the column's width; lines cut it to 18
    db.session.commit()
    made = _member("0711223344", LONG, 9_999_999, language)
    member = Ref(made.id, made.member_no)
    _save(member.id, "ORD", 9_999_999, "RKTBIG0001")
    _save(member.id, "SHR", 9_999_999, "RKTBIG0002")
    product = make_product("V1", max_amount=None, limit_multiple=D("10"))
    from tests.loan_factories import make_loan

    for _ in range(3):
        make_loan(product=product, amount=1_999_999, on=date(2026, 1, 1), member=made)
    year = business_today().year
    for y in (year, year - 1):
        _run(y, "posted", member, "9999999.99")
    for line in db.session.scalars(select(DividendLine)):
        line.dividend = line.interest = D("4999999.99")
        line.tax = D("1999999.99")
    db.session.commit()
    accounts = db.session.scalars(
        select(Account).where(Account.member_id == member.id).order_by(Account.id)
    ).all()
    ordinary = next(a for a in accounts if a.kind == "member_savings")
    # A member number of 10 million members and the longest default suffix.
    choices = [[ordinary.product_id, ordinary.id, "Y" * 18, "M9999999SH"]] * ACCOUNTS_LISTED
    data = {
        "choices": choices,
        "account": [ordinary.product_id, ordinary.id, "Y" * 18, f"{member.member_no}S"],
        "amount": "250000",
        "fee": "9999.00",
        "page": 0,
    }
    store = SessionStore(redis_client(), "secret")
    request = UssdRequest("ATUid_render", "+254711223344", "*384*96#", "", "63902")
    for name, errors in ERRORS.items():
        screen = SCREENS[name]
        session = Session(
            screen=name, data=dict(data), member_id=member.id, language=language, authed=True
        )
        body = screen.render(Hop(request, session, "", store))
        for error in ["", *(t(e, language, **WORST) for e in errors)]:
            shown = f"{error}\n{body}" if error else body
            assert len(shown) <= MAX_SCREEN, (name, error, len(shown), shown)
            assert set(shown) <= GSM7_BASIC, (name, set(shown) - GSM7_BASIC)
    for key, params in ENDS.items():
        text = t(key, language, **params)
        assert len(text) <= MAX_SCREEN and set(text) <= GSM7_BASIC, (key, len(text), text)
