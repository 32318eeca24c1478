"""A promise to pay as a member and the SACCO see it (app/services/promises.py): its
ceiling is what that one loan still owes on its live schedule; a promise confirmed on
USSD is saved for good and texted with the loan's number; a promise that lands while the
member is on the confirm screen is refused in the member's language; an amount that is
not one is refused saying why."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.clock import business_today
from app.extensions import db
from app.models import Loan, Member, PromiseToPay, SmsMessage
from app.money import shillings_up
from app.selectors.loans import loan_debt
from app.services.loans import loan_repay, loan_restructure, loan_update_arrears
from app.services.members import member_set_pin
from app.services.promises import PromiseError, promise_problem_words, promise_record
from tests.factories import make_member
from tests.helpers import Phone, sms_in
from tests.loan_factories import JOINED, make_borrower, make_loan, make_product, make_staff

PIN = "4826"


def member_with_pin(language: str = "en") -> Member:
    member = make_member(phone="0711223344", savings=10000, language=language)
    member.created_at = JOINED
    db.session.commit()
    member_set_pin(member_id=member.id, pin=PIN)
    return member


def late(member: Member, *amounts: int) -> list[Loan]:
    """Loans paid out in June and never repaid: in arrears today."""
    loans = [
        make_loan(
            product=make_product("V1", code=f"V1-{n}"),
            amount=amount,
            on=date(2026, 6, 1),
            member=member,
        )
        for n, amount in enumerate(amounts or (5000,))
    ]
    for loan in loans:
        loan_update_arrears(loan_id=loan.id, as_of=business_today())
    return [db.session.get(Loan, loan.id) for loan in loans]


def ceiling(loan: Loan) -> Decimal:
    """What the loan owes in all (loan_debt), up to the whole shilling."""
    db.session.expire_all()
    return shillings_up(loan_debt(loan_id=loan.id).total)


def text_in(client: FlaskClient, member: Member, text: str) -> SmsMessage:
    """Text the SACCO as `member` (what the test wrote committed first) and return the reply."""
    db.session.commit()
    return sms_in(client, "+" + member.phone, text)


def promised() -> list[tuple[int, Decimal]]:
    db.session.expire_all()
    return [(p.loan_id, p.amount) for p in db.session.scalars(select(PromiseToPay))]


def in_days(days: int) -> str:
    return f"{business_today() + timedelta(days=days):%d/%m}"


def test_the_ceiling_is_what_that_loan_owes_not_the_members_other_loans(
    client: FlaskClient,
) -> None:
    member = member_with_pin()
    first, other = late(member, 5000, 20000)
    most = ceiling(first)
    assert most < ceiling(other)
    number = int(first.loan_no[1:])

    reply = text_in(client, member, f"PROMISE {most + 1} {in_days(3)} L{number}")
    assert reply.template == "promise_refused"
    assert f"loan {first.loan_no} owes KES {most:,.0f} in all" in reply.body
    assert promised() == []

    reply = text_in(client, member, f"PROMISE {most} {in_days(3)} L{number}")
    assert reply.template == "promise_recorded"
    assert f"on loan {first.loan_no} " in reply.body  # the confirmation names the loan
    assert promised() == [(first.id, most)]


def test_partial_payments_lower_the_ceiling_to_what_is_left(client: FlaskClient) -> None:
    member = member_with_pin()
    [loan] = late(member)
    before = ceiling(loan)
    loan_repay(
        loan_id=loan.id, amount="1234.50", reference="UPART00001", value_date=business_today()
    )
    loan_update_arrears(loan_id=loan.id, as_of=business_today())
    most = ceiling(loan)
    assert before - Decimal("1235") <= most < before  # the cents pay towards the next shilling

    reply = text_in(client, member, f"PROMISE {most + 1} {in_days(2)}")
    assert reply.template == "promise_refused"
    assert f"owes KES {most:,.0f} in all: promise at most KES {most:,.0f}" in reply.body


def test_a_restructured_loan_is_held_to_its_new_schedule_not_the_one_it_replaced(
    client: FlaskClient,
) -> None:
    member = member_with_pin()
    [loan] = late(member)
    loan_restructure(
        loan_id=loan.id,
        staff=make_staff("branch_manager"),
        term=3,
        start_date=date(2026, 8, 1),  # its new installments fell due since: late again
        reason="Lost job; paid again from August",
    )
    loan_update_arrears(loan_id=loan.id, as_of=business_today())
    loan = db.session.get(Loan, loan.id)
    assert loan.status == "restructured" and loan.days_past_due > 0
    most = ceiling(loan)

    reply = text_in(client, member, f"PROMISE {most + 1} {in_days(4)}")
    assert reply.template == "promise_refused"
    assert f"promise at most KES {most:,.0f}" in reply.body
    reply = text_in(client, member, f"PROMISE {most} {in_days(4)}")
    assert reply.template == "promise_recorded"


def test_a_promise_confirmed_on_ussd_stays_recorded_after_the_request(
    client: FlaskClient,
) -> None:
    member = member_with_pin()
    [loan] = late(member)
    phone = Phone(client, "+" + member.phone)
    phone.dial()
    phone.press(PIN)
    phone.press("6")
    phone.press((business_today() + timedelta(days=5)).strftime("%d%m"))
    phone.press("700")
    assert phone.press("1").startswith("END ")

    db.session.rollback()  # anything the request left uncommitted is gone, as at its end
    assert promised() == [(loan.id, Decimal("700.00"))]
    text = db.session.scalars(
        select(SmsMessage).where(SmsMessage.template == "promise_recorded")
    ).one()
    assert f"on loan {loan.loan_no} " in text.body


def test_a_promise_made_elsewhere_while_on_the_confirm_screen_is_refused_in_kiswahili(
    client: FlaskClient,
) -> None:
    member = member_with_pin("sw")
    [loan] = late(member)
    phone = Phone(client, "+" + member.phone)
    phone.dial()
    phone.press(PIN)
    phone.press("6")
    phone.press((business_today() + timedelta(days=5)).strftime("%d%m"))
    assert phone.press("700").startswith("CON ")  # the confirm screen
    texted = text_in(client, member, f"AHADI 500 {in_days(3)}")  # the same loan, by SMS
    assert texted.template == "promise_recorded"

    refused = phone.press("1")

    assert refused == f"END Haijarekodiwa: ahadi ya {in_days(3)} bado iko wazi"
    assert promised() == [(loan.id, Decimal("500.00"))]


@pytest.mark.parametrize(
    ("amount", "why"),
    [("0", "amount must be more than zero"), ("lots", "amount is not a number")],
)
def test_a_promise_of_no_real_amount_is_refused_saying_why(
    app: Flask, amount: str, why: str
) -> None:
    member = member_with_pin()
    [loan] = late(member)

    with pytest.raises(PromiseError, match=why):
        promise_record(
            member_id=member.id,
            loan_id=loan.id,
            amount=amount,
            promised_date=business_today() + timedelta(days=2),
            as_of=business_today(),
            channel="staff",
        )
    assert promised() == []


def test_a_text_naming_another_members_loan_is_refused_as_no_such_loan(
    client: FlaskClient,
) -> None:
    member = member_with_pin("sw")
    late(member)
    theirs = make_loan(product=make_product("V1", code="V1-THEIRS"), on=date(2026, 6, 1))
    loan_update_arrears(loan_id=theirs.id, as_of=business_today())  # late too

    reply = text_in(client, member, f"AHADI 500 {in_days(3)} L{int(theirs.loan_no[1:])}")

    assert reply.template == "promise_refused"
    assert "mkopo huo haupo" in reply.body
    assert promised() == []


def test_a_promise_in_one_members_name_for_another_members_loan_is_refused(app: Flask) -> None:
    [loan] = late(make_borrower(savings=10000))
    stranger = make_borrower()

    with pytest.raises(PromiseError, match="no such loan") as refused:
        promise_record(
            member_id=stranger.id,
            loan_id=loan.id,
            amount="500",
            promised_date=business_today() + timedelta(days=2),
            as_of=business_today(),
            channel="staff",
        )
    assert refused.value.problem == ("no_loan", {})
    assert promised() == []


@pytest.mark.parametrize("days_late", [0, 1])
def test_a_loan_may_be_promised_on_from_its_first_day_late(app: Flask, days_late: int) -> None:
    member = member_with_pin()
    loan = make_loan(product=make_product("V1"), amount=5000, on=date(2026, 6, 1), member=member)
    as_of = date(2026, 7, 1) + timedelta(days=days_late)  # the first installment: 1 July
    loan_update_arrears(loan_id=loan.id, as_of=as_of)

    def record() -> PromiseToPay:
        return promise_record(
            member_id=member.id,
            loan_id=loan.id,
            amount="500",
            promised_date=as_of + timedelta(days=3),
            as_of=as_of,
            channel="staff",
        )

    if days_late == 0:  # due today, not late yet: nothing to promise
        with pytest.raises(PromiseError, match=f"^loan {loan.loan_no} is not in arrears$") as no:
            record()
        assert promise_problem_words(no.value.problem, "sw") == f"mkopo {loan.loan_no} haujachelewa"
        assert promised() == []
    else:
        record()
        assert promised() == [(loan.id, Decimal("500.00"))]


def test_a_settled_promise_leaves_the_loan_free_for_a_new_one(app: Flask) -> None:
    member = member_with_pin()
    [loan] = late(member)
    today = business_today()

    def record(days: int) -> PromiseToPay:
        return promise_record(
            member_id=member.id,
            loan_id=loan.id,
            amount="500",
            promised_date=today + timedelta(days=days),
            as_of=today,
            channel="staff",
        )

    first = record(2)
    first.status = "broken"  # as the reminder job settles one whose date passed unpaid
    db.session.commit()

    record(5)

    with pytest.raises(PromiseError, match=f"a promise for {in_days(5)} is open already"):
        record(7)
    assert sorted(p.status for p in db.session.scalars(select(PromiseToPay))) == [
        "broken",
        "open",
    ]
