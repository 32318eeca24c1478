"""A guarantor answers a guarantee request by SMS: YES L000123 or NO L000123 (NDIO /
HAPANA in Kiswahili), through the same services as the USSD menu. A pledge holds their
deposits at once; a refusal says why in their language and changes nothing; a provider's
retry of the same text is answered once."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.clock import business_today
from app.extensions import db
from app.models import Guarantee, Loan, LoanProduct, Member, SmsInbound, SmsMessage
from app.selectors.guarantees import member_deposits
from app.services.guarantees import guarantee_request
from app.services.loans import loan_apply
from tests.factories import make_member
from tests.helpers import sms_bodies, sms_in, sms_last_reply
from tests.loan_factories import make_borrower, make_product

D = Decimal


def _application(amount: int = 25000) -> Loan:
    """An application for a product that needs two guarantors covering everything above
    the borrower's own 10,000 of deposits."""
    product = db.session.scalar(select(LoanProduct).where(LoanProduct.code == "SEC"))
    if product is None:
        product = make_product(
            "V1", code="SEC", name="Development", min_guarantors=2, guarantee_cover=D("100")
        )
    borrower = make_borrower(savings=10000)
    return loan_apply(
        member_id=borrower.id, product_id=product.id, amount=amount, as_of=business_today()
    )


def _ask(loan: Loan, guarantor: Member, amount: int, *, days_ago: int = 0) -> int:
    asked = guarantee_request(
        loan_id=loan.id,
        guarantor_id=guarantor.id,
        amount=amount,
        actor="member:test",
        today=business_today() - timedelta(days=days_ago),
    )
    return asked.id


def _status(guarantee_id: int) -> tuple[str, str | None]:
    db.session.expire_all()
    guarantee = db.session.get(Guarantee, guarantee_id)
    assert guarantee is not None
    return guarantee.status, guarantee.answered_via


def _texts(member: Member | int, template: str) -> list[str]:
    member_id = member if isinstance(member, int) else member.id
    return sms_bodies(template, member_id=member_id)


def _phone(member: Member) -> str:
    return "+" + member.phone


def test_yes_by_sms_pledges_the_deposits_and_a_retry_is_answered_once(
    app: Flask, client: FlaskClient
) -> None:
    loan = _application()
    loan_no, applicant_id = loan.loan_no, loan.member_id
    guarantor = make_borrower(savings=20000)
    asked = _ask(loan, guarantor, 10000)
    assert member_deposits(guarantor.id).free == D("20000")

    reply = sms_in(client, _phone(guarantor), f"yes {loan_no}", sms_id="yes-1")
    sms_in(client, _phone(guarantor), f"yes {loan_no}", sms_id="yes-1")  # the provider retries

    assert _status(asked) == ("accepted", "sms")
    assert member_deposits(guarantor.id).free == D("10000")
    assert reply.template == "guarantor_accepted"
    assert reply.body == (
        f"You now guarantee KES 10,000.00 of loan {loan_no} for {loan.member.name}. It is held "
        "from your deposits. Free deposits now KES 10,000.00."
    )
    assert reply.idempotency_key == "reply:yes-1"
    assert len(_texts(guarantor, "guarantor_accepted")) == 1
    assert db.session.scalar(select(func.count()).select_from(SmsInbound)) == 1
    # The applicant hears of it, once, as after a USSD answer.
    assert len(_texts(applicant_id, "guarantee_accepted")) == 1


def test_ndio_answers_in_kiswahili_and_the_loan_number_may_be_short(
    app: Flask, client: FlaskClient
) -> None:
    loan = _application()
    guarantor = make_borrower(savings=20000)  # saved language: English
    asked = _ask(loan, guarantor, 5000)

    reply = sms_in(client, _phone(guarantor), f"Ndio, L{loan.id}.")

    assert _status(asked) == ("accepted", "sms")
    assert reply.language == "sw"
    assert reply.body.startswith(f"Sasa unadhamini KES 5,000.00 ya mkopo {loan.loan_no} wa ")
    assert reply.body.endswith("Akiba huru sasa ni KES 15,000.00.")


@pytest.mark.parametrize(
    ("word", "language", "words"),
    [
        ("NO", "en", "You declined to guarantee loan {loan_no} for {name}. They have been told."),
        ("hapana", "en", "Umekataa kudhamini mkopo {loan_no} wa {name}. Ameshaarifiwa."),
        ("no", "sw", "Umekataa kudhamini mkopo {loan_no} wa {name}. Ameshaarifiwa."),
    ],
)
def test_no_declines_and_the_applicant_is_told(
    app: Flask, client: FlaskClient, word: str, language: str, words: str
) -> None:
    loan = _application()
    loan_no, applicant_id, name = loan.loan_no, loan.member_id, loan.member.name
    guarantor = make_member(savings=20000, language=language)
    asked = _ask(loan, guarantor, 10000)

    reply = sms_in(client, _phone(guarantor), f"{word} {loan_no}")

    assert _status(asked) == ("declined", "sms")
    assert reply.template == "guarantor_declined"
    assert reply.body == words.format(loan_no=loan_no, name=name)
    assert member_deposits(guarantor.id).free == D("20000")
    assert len(_texts(applicant_id, "guarantee_declined")) == 1


def _refusal(client: FlaskClient, guarantor: Member, text: str) -> str:
    reply = sms_in(client, _phone(guarantor), text)
    assert reply.template == "guarantor_refused"
    return reply.body


def test_a_reply_that_cannot_be_recorded_says_why_and_changes_nothing(
    app: Flask, client: FlaskClient
) -> None:
    loan = _application()
    loan_no = loan.loan_no
    guarantor = make_borrower(savings=5000)
    short = _ask(loan, guarantor, 8000)
    late_loan = _application()
    late = _ask(late_loan, guarantor, 1000, days_ago=8)  # 7 days to answer: gone yesterday

    assert _refusal(client, guarantor, "YES") == (
        "Your answer was not recorded: reply YES or NO with the loan number from our SMS, "
        "e.g. YES L000123."
    )
    assert _refusal(client, guarantor, "YES L999999") == (
        "Your answer was not recorded: no guarantee request for loan L999999 is waiting for "
        "your answer."
    )
    assert _refusal(client, guarantor, f"YES {loan_no}") == (
        "Your answer was not recorded: your free deposits are KES 5,000.00, less than the "
        "KES 8,000.00 asked."
    )
    assert _refusal(client, guarantor, f"NO {late_loan.loan_no}") == (
        f"Your answer was not recorded: the request to guarantee loan {late_loan.loan_no} "
        "has expired."
    )
    assert _refusal(client, guarantor, f"HAPANA {late_loan.loan_no}") == (
        f"Jibu lako halikurekodiwa: muda wa ombi la kudhamini mkopo {late_loan.loan_no} umekwisha."
    )
    assert _refusal(client, guarantor, f"NDIO {loan_no}") == (
        "Jibu lako halikurekodiwa: akiba yako huru ni KES 5,000.00, chini ya KES 8,000.00 "
        "ulizoombwa."
    )

    assert _status(short) == ("requested", None)
    assert _status(late) == ("requested", None)
    assert member_deposits(guarantor.id).free == D("5000")
    assert _texts(loan.member_id, "guarantee_accepted") == []
    assert _texts(loan.member_id, "guarantee_declined") == []


def test_an_answered_request_cannot_be_answered_again(app: Flask, client: FlaskClient) -> None:
    loan = _application()
    guarantor = make_borrower(savings=20000)
    asked = _ask(loan, guarantor, 10000)
    sms_in(client, _phone(guarantor), f"YES {loan.loan_no}")

    body = _refusal(client, guarantor, f"NO {loan.loan_no}")

    assert body == (
        f"Your answer was not recorded: you have already answered the request for loan "
        f"{loan.loan_no}."
    )
    assert _status(asked) == ("accepted", "sms")
    assert member_deposits(guarantor.id).free == D("10000")


def test_someone_elses_request_is_not_theirs_to_answer(app: Flask, client: FlaskClient) -> None:
    loan = _application()
    asked_of = make_borrower(savings=20000)
    other = make_borrower(savings=20000)
    asked = _ask(loan, asked_of, 10000)

    body = _refusal(client, other, f"YES {loan.loan_no}")

    assert "no guarantee request for loan" in body
    assert _status(asked) == ("requested", None)
    assert member_deposits(other.id).free == D("20000")


def test_a_yes_from_a_number_that_is_no_member_pledges_nothing(
    app: Flask, client: FlaskClient
) -> None:
    loan = _application()
    guarantor = make_borrower(savings=20000)
    asked = _ask(loan, guarantor, 10000)

    client.post(
        "/sms/inbound",
        data={"from": "+254799000111", "to": "22384", "text": f"YES {loan.loan_no}", "id": "x1"},
    )

    reply = db.session.scalars(
        select(SmsMessage).where(SmsMessage.idempotency_key == "reply:x1")
    ).one()
    assert reply.template == "not_member"
    assert _status(asked) == ("requested", None)


def test_help_lists_the_guarantee_answers(app: Flask, client: FlaskClient) -> None:
    member = make_borrower()
    assert "YES/NO loan - answer a guarantee request" in sms_in(client, _phone(member), "HELP").body
    assert "NDIO/HAPANA mkopo" in sms_in(client, _phone(member), "MSAADA").body
    assert sms_last_reply().language == "sw"
