"""Issue 17's money paths through the real surfaces: a promise's ceiling on USSD, SMS and
the officer desk (one rule); M-PESA's limits on the repay screen and the real range in
the wrong-amount words; an overdue loan's balance in whole shillings; and the newcomer
items (Kiswahili product names, demo loan dates, no "-0.00", plurals)."""

from __future__ import annotations

import html
from datetime import date, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.clock import business_today
from app.extensions import db
from app.models import (
    Loan,
    LoanProduct,
    Member,
    MpesaRequest,
    PromiseToPay,
    StaffUser,
)
from app.money import money_text, round_money, shillings_up
from app.selectors.collections import loan_arrears
from app.selectors.loans import loan_debt
from app.services.loans import loan_update_arrears
from app.services.members import member_set_pin
from tests.factories import make_member
from tests.helpers import Phone, sms_in, staff
from tests.helpers import browse as _browse
from tests.helpers import login as _login
from tests.helpers import post_form as _post_form
from tests.loan_factories import JOINED, make_borrower, make_loan, make_product

PIN = "4826"


# SQLite: the test's own read transaction would hold the lock a request needs to write.
def browse(client: FlaskClient, path: str, **kwargs: object):  # noqa: ANN201
    db.session.commit()
    return _browse(client, path, **kwargs)


def login(client: FlaskClient, email: str):  # noqa: ANN201
    db.session.commit()
    return _login(client, email)


def post_form(client: FlaskClient, path: str, data: dict[str, object]):  # noqa: ANN201
    db.session.commit()
    return _post_form(client, path, data)


def member_with_pin(language: str = "en", phone: str = "0711223344") -> Member:
    """A member who set a PIN already (the first dial's setup is another test's)."""
    member = make_member(phone=phone, savings=2500, name="Wanjiku Achieng", language=language)
    member.created_at = JOINED
    db.session.commit()
    member_set_pin(member_id=member.id, pin=PIN)
    return member


def late(member: Member, amount: int = 5000) -> Loan:
    """A loan paid out in June and never repaid: in arrears today."""
    loan = make_loan(product=make_product("V1"), amount=amount, on=date(2026, 6, 1), member=member)
    loan_update_arrears(loan_id=loan.id, as_of=business_today())
    return db.session.get(Loan, loan.id)


def signed_in_phone(client: FlaskClient, member: Member) -> Phone:
    phone = Phone(client, "+" + member.phone)
    phone.dial()
    phone.press(PIN)
    return phone


def ceiling(loan: Loan) -> str:
    db.session.expire_all()
    return f"{shillings_up(loan_debt(loan_id=loan.id).total):,.0f}"


def promises() -> list[tuple[Decimal, str]]:
    db.session.expire_all()
    return [(p.amount, p.channel) for p in db.session.scalars(select(PromiseToPay))]


# -- item 4: a promise has a ceiling, the same on every channel ------------------------------


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("en", "At most KES {most}: that is all the loan owes."),
        ("sw", "Si zaidi ya KES {most}: ndilo deni lote la mkopo."),
    ],
)
def test_ussd_refuses_a_promise_above_what_the_loan_owes_and_confirms_before_saving(
    client: FlaskClient, language: str, words: str
) -> None:
    member = member_with_pin(language)
    loan = late(member)
    most = ceiling(loan)
    phone = signed_in_phone(client, member)
    phone.press("6")
    amount_screen = phone.press((business_today() + timedelta(days=5)).strftime("%d%m"))
    assert f"KES {most}" in amount_screen  # the ceiling is on the screen

    refused = phone.press("99999999")
    assert refused.startswith("CON ") and words.format(most=most) in refused  # same screen
    assert promises() == []

    confirm = phone.press(most.replace(",", ""))
    assert confirm.startswith("CON ") and f"KES {most}" in confirm and loan.loan_no in confirm
    assert promises() == []  # nothing saved before the member confirms
    done = phone.press("1")
    assert done.startswith("END ")
    assert promises() == [(Decimal(most.replace(",", "")), "ussd")]


def test_ussd_a_promise_cancelled_at_the_confirm_screen_records_nothing(
    client: FlaskClient,
) -> None:
    member = member_with_pin()
    late(member)
    phone = signed_in_phone(client, member)
    phone.press("6")
    phone.press((business_today() + timedelta(days=2)).strftime("%d%m"))
    phone.press("700")
    assert "Cancelled" in phone.press("2")
    assert promises() == []


@pytest.mark.parametrize(
    ("keyword", "language", "words"),
    [
        ("PROMISE", "en", "owes KES {most} in all: promise at most KES {most}"),
        ("AHADI", "sw", "unadaiwa KES {most} kwa jumla: ahidi si zaidi ya KES {most}"),
    ],
)
def test_sms_refuses_a_promise_above_what_the_loan_owes_in_the_members_language(
    client: FlaskClient, keyword: str, language: str, words: str
) -> None:
    member = member_with_pin(language)
    loan = late(member)
    most = ceiling(loan)
    day = f"{business_today() + timedelta(days=3):%d/%m}"

    reply = sms_in(client, "+" + member.phone, f"{keyword} 5000000 {day}")
    assert reply.template == "promise_refused" and words.format(most=most) in reply.body
    assert promises() == []

    reply = sms_in(client, "+" + member.phone, f"{keyword} {most} {day}")
    assert reply.template == "promise_recorded"
    assert promises() == [(Decimal(most.replace(",", "")), "sms")]


def test_the_desk_refuses_a_promise_above_what_the_loan_owes(app: Flask) -> None:
    officer = staff("loan_officer")
    officer_id = db.session.scalar(select(StaffUser.id).where(StaffUser.email == officer))
    loan = late(make_borrower(savings=5000))
    loan.officer_id = officer_id
    db.session.commit()
    most = ceiling(loan)
    client = app.test_client()
    login(client, officer)
    form = {
        "kind": "call",
        "outcome": "promised",
        "amount": "5000000",
        "promise_date": (business_today() + timedelta(days=2)).isoformat(),
    }
    post_form(client, f"/admin/desk/contact/{loan.id}", form)
    page = html.unescape(browse(client, "/admin/desk/").get_data(as_text=True))
    assert f"owes KES {most} in all: promise at most KES {most}" in page
    assert promises() == []

    post_form(client, f"/admin/desk/contact/{loan.id}", {**form, "amount": most})
    assert promises() == [(Decimal(most.replace(",", "")), "staff")]


# -- item 5: M-PESA's limits on the amount screen; the real range in the words --------------


def test_repay_refuses_more_than_mpesa_carries_on_the_amount_screen(client: FlaskClient) -> None:
    member = member_with_pin()
    make_loan(product=make_product("V1"), amount=5000, on=date(2026, 11, 1), member=member)
    phone = signed_in_phone(client, member)
    phone.press("3")
    refused = phone.press("300000")
    assert refused.startswith("CON ") and "Confirm" not in refused
    assert "Enter whole shillings from KES 1 to KES 250,000." in refused
    assert "e.g. 500" not in refused
    assert "Confirm" in phone.press("250000")  # the ceiling itself is fine
    stk = select(func.count()).select_from(MpesaRequest).where(MpesaRequest.kind == "stk")
    assert db.session.scalar(stk) == 0


def test_the_development_loans_wrong_amount_names_its_own_minimum(client: FlaskClient) -> None:
    member = member_with_pin(language="sw")
    member_id = member.id
    from app.services.members import member_buy_shares, member_deposit

    member_deposit(member_id=member_id, amount="20000", reference="D1", value_date=date(2026, 1, 1))
    member_buy_shares(
        member_id=member_id, amount="1000", reference="S1", value_date=date(2026, 1, 1)
    )
    make_product("DEV")
    phone = signed_in_phone(client, member)
    phone.press("2")
    amount_screen = phone.press("1")
    assert "KES 5,000 hadi" in amount_screen
    for wrong in ("500", "abc"):
        refused = phone.press(wrong)
        assert "Weka shilingi kamili kuanzia KES 5,000 hadi" in refused, refused


# -- item 8: an overdue loan says so, in whole shillings -------------------------------------


@pytest.mark.parametrize(
    ("language", "word"), [("en", "overdue since"), ("sw", "imechelewa tangu")]
)
def test_the_balance_of_a_late_loan_says_overdue_in_whole_shillings(
    client: FlaskClient, language: str, word: str
) -> None:
    member = member_with_pin(language)
    loan = late(member, amount=5333)
    arrears = loan_arrears(loan_id=loan.id, as_of=business_today())
    first_due = min(r.due_date for r in loan.installments if r.outstanding > 0)
    screen = signed_in_phone(client, member).press("1")
    expected = f"KES {shillings_up(arrears):,.0f} {word} {first_due:%d/%m}"
    assert expected in screen, screen
    assert " pay " not in screen and " lipa " not in screen
    loan_line = next(line for line in screen.split("\n") if loan.loan_no in line)
    assert "." not in loan_line  # no cents a member could not pay by M-PESA


# -- newcomer items ---------------------------------------------------------------------------


def test_a_product_named_in_kiswahili_in_the_console_shows_to_kiswahili_members(
    app: Flask, client: FlaskClient
) -> None:
    product = make_product("INSTANT")
    admin = app.test_client()
    login(admin, staff("admin"))
    page = browse(admin, f"/admin/loanproduct/edit/?id={product.id}").get_data(as_text=True)
    assert 'name="name_sw"' in page
    form = {
        c.key: getattr(product, c.key)
        for c in LoanProduct.__table__.columns
        if c.key not in ("id", "created_at")
    }
    form = {k: ("y" if v is True else str(v)) for k, v in form.items() if v is not None}
    form["name_sw"] = "Mkopo wa Haraka"
    reply = post_form(admin, f"/admin/loanproduct/edit/?id={product.id}", form)
    assert reply.status_code == 302
    db.session.expire_all()
    assert db.session.get(LoanProduct, product.id).name_sw == "Mkopo wa Haraka"

    swahili = member_with_pin("sw")
    assert "Mkopo wa Haraka" in signed_in_phone(client, swahili).press("2")
    english = member_with_pin("en", phone="0722000333")
    offers = signed_in_phone(client, english).press("2")
    assert "Instant Loan" in offers and "Haraka" not in offers


def test_demo_loans_are_applied_and_decided_before_they_were_paid_out(runner) -> None:  # noqa: ANN001
    result = runner.invoke(args=["demo-data"])
    assert result.exit_code == 0, result.output
    tz = runner.app.config["SETTINGS"].tz
    paid_out = list(db.session.scalars(select(Loan).where(Loan.disbursed_on.is_not(None))))
    assert paid_out
    for loan in paid_out:
        assert loan.applied_at.astimezone(tz).date() <= loan.disbursed_on, loan.loan_no
        assert loan.decided_at.astimezone(tz).date() <= loan.disbursed_on, loan.loan_no
        assert loan.applied_at <= loan.decided_at


def test_no_amount_is_ever_shown_as_negative_zero(app: Flask) -> None:
    negative_zero = Decimal("-1") * Decimal("0.00")
    assert str(negative_zero) == "-0.00"  # what Decimal does, and statements had
    assert f"{round_money(negative_zero):,.2f}" == "0.00"
    assert round_money(Decimal("-0.001")) == Decimal("0.00")
    assert f"{round_money(Decimal('-0.001')):.2f}" == "0.00"
    assert money_text(negative_zero) == "0.00"

    member = make_member(savings=500)  # no shares: share capital opens at zero
    client = app.test_client()
    login(client, staff("branch_manager"))
    today = business_today()
    for fmt in ("csv", "pdf"):
        reply = browse(
            client,
            f"/admin/member/statement/{member.id}",
            query_string={
                "start": (today - timedelta(days=30)).isoformat(),
                "end": today.isoformat(),
                "format": fmt,
            },
        )
        assert reply.status_code == 200, reply.status_code
        body = reply.get_data().decode("latin-1")
        assert "Opening balance" in body and "-0.00" not in body


def test_one_installment_is_not_1_installments(client: FlaskClient) -> None:
    member = member_with_pin()
    make_product("INSTANT")  # one month: one installment
    phone = signed_in_phone(client, member)
    phone.press("2")
    phone.press("1")
    summary = phone.press("1000")
    assert "1 installment of" in summary and "1 installments" not in summary


def test_the_console_says_1_loan_not_1_loans(app: Flask) -> None:
    make_loan(product=make_product("V1"), on=business_today())  # paid out today
    client = app.test_client()
    login(client, staff("branch_manager"))
    page = html.unescape(browse(client, "/admin/").get_data(as_text=True))
    assert "1 loan" in page and "1 loans" not in page


def test_a_refused_promise_fits_the_screen_with_seven_digit_amounts(client: FlaskClient) -> None:
    member = make_member(phone="0711223344", savings=Decimal("9999999"), language="sw")
    member.created_at = JOINED
    db.session.commit()
    member_set_pin(member_id=member.id, pin=PIN)
    product = make_product(
        "DEV",
        min_membership_days=0,
        min_share_capital=Decimal("0"),
        limit_multiple=Decimal("10"),
        maker_checker_threshold=None,
    )
    loan = make_loan(product=product, amount=1_999_999, on=date(2026, 3, 1), member=member, term=36)
    loan_update_arrears(loan_id=loan.id, as_of=business_today())
    phone = signed_in_phone(client, member)
    phone.press("6")
    phone.press((business_today() + timedelta(days=14)).strftime("%d%m"))
    refused = phone.press("99999999")
    # Whole: the refusal, the amount screen with its ceiling, and the navigation line.
    assert "Si zaidi ya KES 2," in refused and refused.endswith("0 Rudi 00 Mwanzo"), refused
