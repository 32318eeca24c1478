"""A member promises to pay by SMS: PROMISE amount date [loan] (AHADI in Kiswahili), the
same promise as USSD menu 6 and the officer desk record; a refusal says why, in the
member's language, and records nothing."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.clock import business_today
from app.extensions import db
from app.models import Loan, Member, PromiseToPay
from tests.helpers import sms_in, sms_last_reply
from tests.loan_factories import make_loan, make_product
from workers.schedule import run_job


def late_member(loans: int = 1, language: str = "en") -> tuple[str, list[str]]:
    """A member whose loans were paid out five months ago and never repaid."""
    today = business_today()
    first = make_loan(product=make_product("V1"), on=today - timedelta(days=150))
    member = db.session.get(Member, first.member_id)
    member.language = language
    loan_nos = [first.loan_no]
    for n in range(1, loans):
        other = make_loan(
            product=make_product("V1", code=f"V1-{n}"),
            on=today - timedelta(days=150),
            member=member,
        )
        loan_nos.append(other.loan_no)
    phone = "+" + member.phone
    db.session.commit()
    assert run_job("loan-arrears", today) == 0
    return phone, loan_nos


def promises() -> list[tuple[Decimal, str, str]]:
    db.session.expire_all()
    return [
        (p.amount, p.promised_date.isoformat(), p.channel)
        for p in db.session.scalars(select(PromiseToPay).order_by(PromiseToPay.id))
    ]


def test_a_texted_promise_is_recorded_and_confirmed_once(app: Flask, client: FlaskClient) -> None:
    phone, _ = late_member()
    day = business_today() + timedelta(days=5)

    sms_in(client, phone, f"promise 2,000 {day:%d/%m}", sms_id="same")
    sms_in(client, phone, f"promise 2,000 {day:%d/%m}", sms_id="same")  # the provider retries

    assert promises() == [(Decimal("2000.00"), day.isoformat(), "sms")]
    reply = sms_last_reply()
    assert reply.template == "promise_recorded"
    assert "2,000" in reply.body


def test_ahadi_in_kiswahili_with_a_year(app: Flask, client: FlaskClient) -> None:
    phone, _ = late_member(language="sw")
    day = business_today() + timedelta(days=2)

    sms_in(client, phone, f"AHADI 1500 {day:%d/%m/%Y}")

    assert promises() == [(Decimal("1500.00"), day.isoformat(), "sms")]


@pytest.mark.parametrize(
    ("text", "language", "words"),
    [
        ("PROMISE tomorrow", "en", "send PROMISE amount date, e.g. PROMISE 2000 28/11"),
        ("AHADI 2000 31/02", "sw", "tuma AHADI kiasi tarehe"),
        ("PROMISE 2000 +30", "en", "the date must be within 14 days"),
        ("AHADI 2000 +30", "sw", "tarehe iwe ndani ya siku 14"),
        ("PROMISE 0 +3", "en", "Promise not recorded:"),
    ],
)
def test_a_promise_that_cannot_be_recorded_says_why_and_records_nothing(
    app: Flask, client: FlaskClient, text: str, language: str, words: str
) -> None:
    phone, _ = late_member(language=language)
    for days in ("+30", "+3"):
        text = text.replace(days, f"{business_today() + timedelta(days=int(days)):%d/%m}")

    sms_in(client, phone, text)

    assert promises() == []
    reply = sms_last_reply()
    assert reply.template == "promise_refused"
    assert words in reply.body


@pytest.mark.parametrize(("days", "recorded"), [(0, False), (1, True), (14, True), (15, False)])
def test_a_promise_date_is_from_tomorrow_to_14_days_ahead(
    app: Flask, client: FlaskClient, days: int, recorded: bool
) -> None:
    phone, _ = late_member()
    day = business_today() + timedelta(days=days)

    sms_in(client, phone, f"PROMISE 1000 {day:%d/%m/%Y}")

    reply = sms_last_reply()
    if recorded:
        assert promises() == [(Decimal("1000.00"), day.isoformat(), "sms")]
        assert reply.template == "promise_recorded"
    else:
        assert promises() == []
        assert reply.template == "promise_refused"
        assert "the date must be within 14 days" in reply.body


def test_several_late_loans_need_the_loan_number(app: Flask, client: FlaskClient) -> None:
    phone, loan_nos = late_member(loans=2)
    day = f"{business_today() + timedelta(days=4):%d/%m}"

    sms_in(client, phone, f"PROMISE 2000 {day}")
    assert promises() == []
    assert "add the loan number" in sms_last_reply().body

    sms_in(client, phone, f"PROMISE 2000 {day} l{int(loan_nos[1][1:])}")
    assert promises() == [
        (Decimal("2000.00"), (business_today() + timedelta(days=4)).isoformat(), "sms")
    ]
    db.session.expire_all()
    promise = db.session.scalars(select(PromiseToPay)).one()
    assert db.session.scalar(select(Loan.loan_no).where(Loan.id == promise.loan_id)) == loan_nos[1]


def test_a_member_with_nothing_late_is_told_so(app: Flask, client: FlaskClient) -> None:
    from tests.factories import make_member

    make_member(phone="0722000111")
    db.session.commit()

    sms_in(client, "+254722000111", "PROMISE 2000 28/11")

    assert promises() == []
    assert "you have no loan in arrears" in sms_last_reply().body
