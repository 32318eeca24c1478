"""Standing orders on *384*96# (issue 20, "USSD"), through `POST /ussd` as Africa's Talking
sends it: menu 9, item 5 lists the member's active orders; a new one is paid from their
savings into deposits, shares or a loan of theirs, or is a payday order (a monthly M-PESA
prompt into deposits, shares or savings), set with the PIN; one listed is cancelled after a
confirmation. The nightly `standing-orders` job moves the money. Every reply is checked by
tests.helpers.Phone (CON/END, <= 182 GSM-7 characters); the last test renders every new
screen with worst-case data and its longest error, in both languages. The books reconcile
after each test (the autouse fixture)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from itertools import product as product_of

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.clock import business_today
from app.extensions import db, redis_client
from app.models import (
    Account,
    AuditLog,
    Member,
    MpesaRequest,
    StandingOrder,
    StandingOrderRun,
)
from app.services.savings import products_ensure
from app.services.savings.standing_orders import (
    MAX_ACTIVE_ORDERS,
    standing_order_cancel,
    standing_order_create,
)
from app.sms_templates import GSM7_BASIC
from app.ussd.engine import MAX_SCREEN, Hop, Session, SessionStore, UssdRequest
from tests.loan_factories import make_loan, make_product
from tests.test_ussd_savings import PIN, Ref, _code, _member, _save, _signed_in
from ussd_menus.screens import SCREENS, SO_LISTED, _so_line, _so_listed
from ussd_menus.text import t
from workers.schedule import run_job

D = Decimal


@pytest.fixture
def member(app: Flask) -> Ref:
    products_ensure()
    made = _member("0711223344", "Wanjiku Achieng", 10000)
    return Ref(made.id, made.member_no)


SET_ON = date(2026, 1, 1)


def _set_earlier(member_id: int) -> None:
    """The member's orders as if set on SET_ON: the job runs only for days that have come,
    and an order first falls due on its day after it was set (tested in
    tests/test_standing_orders.py), so the test runs them on fixed days of 2026."""
    for order in db.session.scalars(
        select(StandingOrder).where(StandingOrder.member_id == member_id)
    ):
        order.starts_on = SET_ON
    db.session.commit()


def _orders(member_id: int) -> list[StandingOrder]:
    orders = list(
        db.session.scalars(
            select(StandingOrder)
            .where(StandingOrder.member_id == member_id)
            .order_by(StandingOrder.id)
        )
    )
    db.session.commit()  # SQLite: the test's read would hold the lock the next hop needs
    return orders


def _balance(code: str) -> Decimal:
    account = db.session.scalar(select(Account).where(Account.code == code))
    db.session.commit()
    return account.display_balance if account is not None else D("0.00")


def test_menu_9_offers_standing_orders_and_lists_none_yet(client: FlaskClient, member: Ref) -> None:
    phone = _signed_in(client)
    assert phone.press("9").endswith("4. My dividends\n5. Standing orders\n0 Back 00 Home")
    assert phone.press("5") == "CON You have no standing orders.\n1. New order\n0 Back 00 Home"
    assert phone.press("2").startswith("CON Choose a number from the list.\nYou have no")


def test_an_order_from_savings_to_deposits_is_set_with_the_pin_and_the_job_moves_the_money(
    client: FlaskClient, member: Ref
) -> None:
    _save(member.id, "ORD", 5000, "RKTORD0101")
    phone = _signed_in(client)
    phone.press("9")
    phone.press("5")
    assert phone.press("1") == (
        "CON Pay each month from:\n1. My savings\n2. M-PESA prompt on my payday\n0 Back 00 Home"
    )
    assert phone.press("1") == "CON Pay into:\n1. Deposits\n2. Shares\n0 Back 00 Home"
    assert phone.press("1") == ("CON Amount each month (KES 1 to KES 250,000):\n0 Back 00 Home")
    assert phone.press("1500").startswith("CON Day of the month to pay (1 to 28):")
    pin = phone.press("5")
    assert pin == (
        "CON Each month on day 5: KES 1,500.00 from your savings to deposits.\n"
        "Enter PIN to confirm\n2. Cancel"
    )
    assert "Wrong PIN. Tries left: 2." in phone.press("1111")
    done = phone.press(PIN)
    assert done == (
        "END Standing order set: KES 1,500.00 to deposits on day 5 each month. "
        "We will SMS you each time."
    )
    (order,) = _orders(member.id)
    assert (order.source, order.target, order.amount, order.day_of_month) == (
        "savings",
        "deposits",
        D("1500.00"),
        5,
    )
    assert (order.channel, order.created_by, order.partial, order.status) == (
        "ussd",
        f"member:{member.member_no}",
        True,
        "active",
    )
    assert order.starts_on == business_today()

    _set_earlier(member.id)
    due = date(2026, 3, 5)
    assert run_job("standing-orders", due) == 0
    assert run_job("standing-orders", due) == 0  # a rerun moves nothing twice
    assert _balance(_code(member, "ORD")) == D("3500.00")
    assert _balance(_code(member, "SAV")) == D("11500.00")
    run = db.session.scalar(select(StandingOrderRun))
    assert (run.due_on, run.status, run.moved) == (due, "done", D("1500.00"))

    again = _signed_in(client)
    again.press("9")
    assert again.press("5") == (
        "CON KES 1,500 to deposits, day 5\n1. New 2. Cancel one\n0 Back 00 Home"
    )


def test_an_order_from_savings_may_pay_a_loan_of_the_members(
    client: FlaskClient, member: Ref
) -> None:
    loan = make_loan(
        product=make_product("V1"),
        amount=5000,
        on=date(2026, 1, 1),
        member=db.session.get(Member, member.id),
    )
    loan_id, loan_no = loan.id, loan.loan_no
    db.session.commit()
    phone = _signed_in(client)
    for entry in ("9", "5", "1", "1"):
        screen = phone.press(entry)
    assert screen == f"CON Pay into:\n1. Deposits\n2. Shares\n3. Loan {loan_no}\n0 Back 00 Home"
    phone.press("3")
    phone.press("800")
    assert f"KES 800.00 from your savings to {loan_no}." in phone.press("28")
    assert phone.press(PIN).startswith(f"END Standing order set: KES 800.00 to {loan_no} on day 28")
    (order,) = _orders(member.id)
    assert (order.target, order.loan_id, order.day_of_month) == ("loan", loan_id, 28)


def test_a_payday_order_prompts_the_phone_to_pay_into_shares(
    client: FlaskClient, member: Ref, mocked: responses.RequestsMock, base: str
) -> None:
    phone = _signed_in(client)
    for entry in ("9", "5", "1"):
        phone.press(entry)
    assert phone.press("2") == ("CON Pay into:\n1. Deposits\n2. Shares\n3. Savings\n0 Back 00 Home")
    phone.press("2")
    phone.press("2000")
    pin = phone.press("25")
    assert pin == (
        "CON Each month on day 25: an M-PESA prompt for KES 2,000.00 to shares.\n"
        "Enter PIN to confirm\n2. Cancel"
    )
    assert phone.press(PIN) == (
        "END Payday order set: an M-PESA prompt for KES 2,000.00 to shares on day 25 each month."
    )
    (order,) = _orders(member.id)
    shares = db.session.scalar(select(Account.id).where(Account.code == _code(member, "SHR")))
    assert (order.source, order.target, order.source_account_id) == ("mpesa", "shares", shares)
    assert (order.channel, order.created_by) == ("ussd", f"member:{member.member_no}")

    # Its day next month: the job writes the prompt into the share account (sent after the
    # chunk commits; the money lands by the Save prompt's own callback, tested there).
    mocked.get(f"{base}/oauth/v1/generate", json={"access_token": "tok", "expires_in": "3599"})
    mocked.post(
        f"{base}/mpesa/stkpush/v1/processrequest",
        json={"ResponseCode": "0", "CheckoutRequestID": "ws_CO_PAYDAY01", "MerchantRequestID": "1"},
    )
    _set_earlier(member.id)
    assert run_job("standing-orders", date(2026, 3, 25)) == 0
    run = db.session.scalar(select(StandingOrderRun))
    request = db.session.get(MpesaRequest, run.request_id)
    assert run.status == "prompted"
    assert (request.purpose, request.account_id, request.amount) == ("deposit", shares, 2000)
    assert _balance(_code(member, "SHR")) == D("0.00")  # nothing moves until M-PESA pays

    listed = _signed_in(client)
    listed.press("9")
    assert listed.press("5").startswith("CON M-PESA 2,000 to shares, day 25\n1. New 2. Cancel")


def test_cancel_one_of_several_after_confirming_and_the_job_moves_nothing_more(
    client: FlaskClient, member: Ref
) -> None:
    _save(member.id, "ORD", 5000, "RKTORD0102")
    for target, amount in (("deposits", "1000"), ("shares", "700")):
        standing_order_create(
            member_id=member.id,
            target=target,
            amount=amount,
            day_of_month=3,
            actor="staff@x",
        )
    phone = _signed_in(client)
    phone.press("9")
    phone.press("5")
    which = phone.press("2")
    assert which == (
        "CON Cancel which?\n1. KES 1,000 to deposits, day 3\n"
        "2. KES 700 to shares, day 3\n0 Back 00 Home"
    )
    assert "Choose a number from the list.\nCancel which?" in phone.press("3")
    confirm = phone.press("2")
    assert confirm == "CON Cancel KES 700 to shares, day 3?\n1. Yes, cancel it\n2. No"
    assert "Choose a number" in phone.press("9")
    assert phone.press("1") == "END Standing order cancelled. It will pay nothing more."
    deposits, shares = _orders(member.id)
    assert (deposits.status, shares.status) == ("active", "cancelled")
    assert shares.cancelled_by == f"member:{member.member_no}"
    assert db.session.scalar(
        select(AuditLog.id).where(
            AuditLog.action == "standing_order.cancel", AuditLog.object_id == str(shares.id)
        )
    )
    db.session.commit()

    _set_earlier(member.id)
    assert run_job("standing-orders", date(2026, 3, 3)) == 0
    assert _balance(_code(member, "SAV")) == D("11000.00")
    assert _balance(_code(member, "SHR")) == D("0.00")
    assert _balance(_code(member, "ORD")) == D("4000.00")

    # One order left: Cancel goes straight to its confirmation; 2 keeps it.
    phone = _signed_in(client)
    phone.press("9")
    phone.press("5")
    assert phone.press("2").startswith("CON Cancel KES 1,000 to deposits, day 3?")
    assert phone.press("2") == "END Cancelled."
    assert [o.status for o in _orders(member.id)] == ["active", "cancelled"]


def test_another_members_order_cannot_be_cancelled_from_a_stale_list(
    client: FlaskClient, member: Ref
) -> None:
    """The list kept in the session names the order: cancelled meanwhile (at the desk),
    the confirmation ends in the service's words and nothing changes."""
    order = standing_order_create(
        member_id=member.id, target="deposits", amount="500", day_of_month=9, actor="staff@x"
    ).id
    phone = _signed_in(client)
    phone.press("9")
    phone.press("5")
    phone.press("2")
    standing_order_cancel(order_id=order, actor="staff@x")
    assert phone.press("1") == f"END Not cancelled: standing order {order} is cancelled already"
    assert _orders(member.id)[0].cancelled_by == "staff@x"


def test_refusals_keep_the_same_screen_and_set_nothing(client: FlaskClient, member: Ref) -> None:
    phone = _signed_in(client)
    for entry in ("9", "5", "1"):
        phone.press(entry)
    assert phone.press("3").startswith("CON Choose a number from the list.\nPay each month from:")
    phone.press("1")
    assert phone.press("4").startswith("CON Choose a number from the list.\nPay into:")
    phone.press("1")
    for bad in ("0.00", "000", "-5", "12.50", "250001", "lots"):  # "0" alone is Back
        assert phone.press(bad) == (
            "CON Enter whole shillings from KES 1 to KES 250,000.\n"
            "Amount each month (KES 1 to KES 250,000):\n0 Back 00 Home"
        )
    phone.press("1000")
    for bad in ("31", "000", "29", "5th", "005"):
        assert phone.press(bad).startswith(
            "CON Enter a day from 1 to 28.\nDay of the month to pay (1 to 28):"
        )
    phone.press("10")
    assert phone.press("12").startswith("CON Enter your PIN, or 2 to cancel.\nEach month on day 10")
    assert phone.press("1111").startswith("CON Wrong PIN. Tries left: 2.\nEach month on day 10")
    assert phone.press("2") == "END Cancelled."
    assert _orders(member.id) == []


def test_five_orders_is_the_most_the_list_shows_three_and_cancel_pages_them(
    client: FlaskClient, member: Ref
) -> None:
    for day in range(1, 6):
        standing_order_create(
            member_id=member.id, target="deposits", amount="100", day_of_month=day, actor="x"
        )
    phone = _signed_in(client)
    phone.press("9")
    menu = phone.press("5")
    assert menu == (
        "CON KES 100 to deposits, day 1\nKES 100 to deposits, day 2\nKES 100 to deposits, day 3"
        "\n1. New 2. Cancel one\n0 Back 00 Home"
    )
    assert phone.press("1").startswith("CON 5 orders at most: cancel one.\nKES 100 to deposits")
    # Cancel pages them, two at a time, numbered through: the fifth is reachable.
    assert phone.press("2") == (
        "CON Cancel which?\n1. KES 100 to deposits, day 1\n2. KES 100 to deposits, day 2\n"
        "98 More\n0 Back 00 Home"
    )
    assert phone.press("3").startswith("CON Choose a number from the list.\nCancel which?")
    assert "3. KES 100 to deposits, day 3\n4. KES 100" in phone.press("98")
    last = phone.press("98")
    assert last == "CON Cancel which?\n5. KES 100 to deposits, day 5\n0 Back 00 Home"
    assert "Choose a number" in phone.press("98")
    assert phone.press("5") == "CON Cancel KES 100 to deposits, day 5?\n1. Yes, cancel it\n2. No"
    assert phone.press("1").startswith("END Standing order cancelled.")
    assert [o.day_of_month for o in _orders(member.id) if o.status == "active"] == [1, 2, 3, 4]


def test_kiswahili_through_a_new_order_and_the_list(client: FlaskClient, app: Flask) -> None:
    products_ensure()
    made = _member("0711223344", "Wanjiku Achieng", 10000, language="sw")
    phone = _signed_in(client)
    assert phone.press("9").endswith("5. Maagizo ya kudumu\n0 Rudi 00 Mwanzo")
    assert phone.press("5").startswith("CON Huna maagizo ya kudumu.\n1. Agizo jipya")
    assert "2. Ombi la M-PESA siku ya mshahara" in phone.press("1")
    assert "3. Akiba ya kawaida" in phone.press("2")
    phone.press("3")
    phone.press("1000")
    assert "Weka tarehe kuanzia 1 hadi 28." in phone.press("31")
    assert phone.press("15").startswith(
        "CON Kila mwezi tarehe 15: ombi la M-PESA la KES 1,000.00 kwenda akiba ya kawaida."
    )
    assert phone.press(PIN).startswith("END Agizo limewekwa: ombi la M-PESA")
    (order,) = _orders(made.id)
    assert (order.source, order.target) == ("mpesa", "savings")
    again = _signed_in(client)
    again.press("9")
    assert again.press("5").startswith("CON M-PESA 1,000 akiba kawaida, siku 15\n1. Jipya")


GOALS = {
    # goal: (entries after the PIN, what the last screen shows, the most hops: README)
    "new order from savings": (["9", "5", "1", "1", "1", "500", "5", PIN], "order set", 8),
    "new payday order": (["9", "5", "1", "2", "3", "500", "25", PIN], "Payday order set", 8),
    "cancel an order": (["9", "5", "2", "1"], "cancelled", 4),
}


@pytest.mark.parametrize("goal", sorted(GOALS))
def test_hops_to_each_standing_order_goal_after_the_pin(
    client: FlaskClient, member: Ref, goal: str
) -> None:
    entries, shows, most = GOALS[goal]
    if goal == "cancel an order":
        standing_order_create(
            member_id=member.id, target="shares", amount="100", day_of_month=1, actor="x"
        )
    phone = _signed_in(client)
    screen = ""
    for entry in entries:
        screen = phone.press(entry)
    assert shows in screen
    assert len(entries) <= most


# -- every new screen within 182 GSM-7 characters -----------------------------------------

# Each new screen with the errors it can show above itself.
ERRORS = {
    "sav_menu": ["choose", "wd_none"],
    "so_menu": ["choose", "so_full"],
    "so_source": ["choose"],
    "so_target": ["choose"],
    "so_amount": ["amount_bad"],
    "so_day": ["so_day_bad"],
    "so_pin": ["pin_or_2_cancel", "pin_wrong"],
    "so_cancel": ["choose"],
    "so_cancel_confirm": ["choose"],
}
WORST = {"low": "KES 1", "high": "KES 250,000", "left": 2, "most": 5}


@pytest.mark.parametrize("language", ["en", "sw"])
def test_every_standing_order_screen_fits_182_gsm7_characters_with_worst_case_data(
    app: Flask, language: str
) -> None:
    """Rendered directly: the longest lines a list can hold (7-digit orders set at the
    desk, a payday order into savings, loans with long numbers), the most loans the target
    screen offers, each screen with its longest error; then the ends."""
    products_ensure()
    made = _member("0711223344", "Bartholomew-Nyambura Wanjiku-Achieng Omondi", 9_999_999, language)
    member = Ref(made.id, made.member_no)
    product = make_product("V1", max_amount=None, limit_multiple=D("10"))
    loans = [
        make_loan(
            product=product,
            amount=1_999_999,
            on=date(2026, 1, 1),
            member=db.session.get(Member, member.id),
        )
        for _ in range(4)
    ]
    for i, loan in enumerate(loans):
        loan.loan_no = f"L99999999{i}"  # a billion loans on: the numbers grow
    db.session.commit()
    # Every kind of order with its largest amount (a payday prompt asks at most one M-PESA
    # payment; 7 digits set at the desk), and five orders of whichever makes the longest
    # line: the standing-orders screen lists three of them, the cancel screen pages them.
    kinds = [("mpesa", target, None, "250000") for target in ("deposits", "shares", "savings")]
    kinds += [("savings", target, None, "9999999.99") for target in ("deposits", "shares")]
    kinds.append(("savings", "loan", loans[0].id, "9999999.99"))

    def line(kind: tuple[str, str, int | None, str]) -> str:
        source, target, _loan, amount = kind
        return _so_line(source, target, loans[0].loan_no, D(amount), 28, language)

    source, target, loan_id, amount = max(kinds, key=lambda kind: len(line(kind)))
    for _ in range(MAX_ACTIVE_ORDERS):
        standing_order_create(
            member_id=member.id,
            source=source,
            target=target,
            loan_id=loan_id,
            amount=amount,
            day_of_month=28,
            actor="x",
        )
    store = SessionStore(redis_client(), "secret")
    request = UssdRequest("ATUid_render", "+254711223344", "*384*96#", "", "63902")
    probe = Session(screen="so_menu", member_id=member.id, language=language, authed=True)
    every = _so_listed(Hop(request, probe, "", store))
    assert len(every) == MAX_ACTIVE_ORDERS
    assert {text for _id, text in every} == {max((line(k) for k in kinds), key=len)}
    # The cancel screen: three orders at once, or five two a page with "98 More".
    pages = [(every[:SO_LISTED], 0), *((every, page) for page in range(3))]
    for (listed, page), source in product_of(pages, ("savings", "mpesa")):
        data = {
            "so_source": source,
            "so_target": ["loan", loans[0].id, loans[0].loan_no]
            if source == "savings"
            else ["savings", None, t("so_to_savings", language)],
            "so_amount": "250000",
            "so_day": 28,
            "so_listed": listed,
            "so_page": page,
            "so_order": listed[0],
        }
        for name, errors in ERRORS.items():
            session = Session(
                screen=name, data=dict(data), member_id=member.id, language=language, authed=True
            )
            body = SCREENS[name].render(Hop(request, session, "", store))
            for error in ["", *(t(e, language, **WORST) for e in errors)]:
                shown = f"{error}\n{body}" if error else body
                assert len(shown) <= MAX_SCREEN, (name, error, len(shown), shown)
                assert set(shown) <= GSM7_BASIC, (name, set(shown) - GSM7_BASIC)
    ends = {
        "so_done": {"amount": "KES 250,000.00", "what": "L999999999", "day": 28},
        "so_done_mpesa": {"amount": "KES 250,000.00", "what": "akiba ya kawaida", "day": 28},
        "so_refused": {"why": "x" * 120},
        "so_cancelled": {},
        "so_cancel_refused": {"why": "x" * 120},
    }
    for key, params in ends.items():
        text = t(key, language, **params)
        assert len(text) <= MAX_SCREEN and set(text) <= GSM7_BASIC, (key, len(text), text)
