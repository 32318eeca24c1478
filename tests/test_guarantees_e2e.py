"""Guarantees end to end through the real surfaces (issue 19): a member applies on
*384*96# and names two guarantors there; one accepts on USSD with the PIN, the other
replies YES by SMS; a branch manager approves and the payout goes out by B2C through the
Daraja simulator and a real worker; STK repayments release the pledges in proportion and
paying off releases them all. Then a loan defaults, its guarantors are told, recovery is
proposed and decided, and their deposits pay it. The books reconcile after each test (the
autouse fixture), holds and recoveries included."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal

from flask.testing import FlaskClient
from sqlalchemy import select

from app.clock import business_today
from app.extensions import db
from app.models import Guarantee, Loan, Member, MpesaRequest
from app.selectors.guarantees import guarantees_held, member_deposits
from app.selectors.loans import loan_debt
from app.services.guarantees import (
    guarantee_accept,
    guarantee_recovery_decide,
    guarantee_recovery_propose,
    guarantee_request,
)
from app.services.loans import loan_apply, loan_approve, loan_disburse
from app.services.members import member_set_pin
from app.services.payments import payments_request_stk
from tests.factories import make_member
from tests.helpers import Phone, sms_bodies, sms_in, work_until
from tests.loan_factories import JOINED, make_product, make_staff, receivables, run_job

D = Decimal
PIN = "4826"


def _member(phone: str, name: str, savings: int) -> Member:
    member = make_member(phone=phone, savings=savings, name=name)
    member.created_at = JOINED
    db.session.commit()
    member_set_pin(member_id=member.id, pin=PIN)
    return member


def _menu(client: FlaskClient, phone: str) -> Phone:
    session = Phone(client, phone)
    assert "PIN" in session.dial()
    menu = session.press(PIN)
    assert menu.startswith("CON 1. "), menu
    return session


def _statuses(loan_id: int) -> dict[int, str]:
    rows = db.session.execute(
        select(Guarantee.guarantor_id, Guarantee.status).where(Guarantee.loan_id == loan_id)
    ).all()
    return dict(rows)


def _stk(loan_id: int, amount: int) -> None:
    request_id = payments_request_stk(loan_id=loan_id, amount=amount, channel="console").id
    work_until(
        lambda: db.session.get(MpesaRequest, request_id).status == "succeeded",
        "the STK repayment to be posted",
    )


def test_a_loan_guaranteed_by_ussd_and_sms_is_paid_out_repaid_and_releases_its_pledges(
    client: FlaskClient, over_http: str
) -> None:
    make_product("V1", code="SEC", name="Development", min_guarantors=2, guarantee_cover=D(100))
    applicant = _member("0711223344", "Wanjiku Achieng", 10000)
    john = _member("0722000001", "John Kamau", 20000)
    mary = _member("0722000002", "Mary Njeri", 20000)

    # The application and both guarantors, on the applicant's phone.
    phone = _menu(client, applicant.phone)
    assert "Development up to KES 30,000.00" in phone.press("2")
    phone.press("1")
    phone.press("25000")
    assert "Confirm" in phone.press("12")
    assert "needs 2 guarantors for KES 15,000" in phone.press("1")
    phone.press(john.member_no)
    phone.press("1")
    phone.press("8000")
    phone.press("1")  # add another
    phone.press(mary.member_no)
    phone.press("1")
    assert "KES 15,000 asked, KES 15,000 needed" in phone.press("7000")
    assert phone.press("2").startswith("END ")
    loan = db.session.scalar(select(Loan).where(Loan.member_id == applicant.id))
    loan_id, loan_no = loan.id, loan.loan_no

    # John accepts on USSD: Guarantees, the request, his PIN.
    john_phone = _menu(client, john.phone)
    john_phone.press("8")
    john_phone.press("1")
    assert john_phone.press(PIN).startswith(f"END You now guarantee KES 8,000 of loan {loan_no}")
    # Mary replies to the request's SMS.
    reply = sms_in(client, mary.phone, f"YES {loan_no}")
    assert "7,000" in reply.body
    assert _statuses(loan_id) == {john.id: "accepted", mary.id: "accepted"}
    assert len(sms_bodies("guarantee_accepted", phone=applicant.phone)) == 2

    john_id, mary_id = john.id, mary.id  # work_until ends the session: ids, not objects
    loan_approve(loan_id=loan_id, staff=make_staff("branch_manager"))
    loan = work_until(
        lambda: (row := db.session.get(Loan, loan_id)).status == "active" and row,
        "the B2C payout to disburse the loan",
    )
    assert receivables(loan)["principal"] == D("25000")
    assert {h.exposure for h in guarantees_held(john_id)} == {D("8000.00")}

    _stk(loan_id, 10000)
    owed = receivables(db.session.get(Loan, loan_id))["principal"]
    assert D(0) < owed < D(25000)
    [held] = guarantees_held(john_id)
    assert held.exposure == (D(8000) * owed / D(25000)).quantize(D("0.01"))
    assert member_deposits(mary_id).free == D(20000) - guarantees_held(mary_id)[0].exposure

    _stk(loan_id, math.ceil(loan_debt(loan_id=loan_id).total))  # the rest goes to savings
    db.session.expire_all()
    assert db.session.get(Loan, loan_id).status == "closed"
    assert _statuses(loan_id) == {john_id: "released", mary_id: "released"}
    assert member_deposits(john_id).free == D(20000)
    assert member_deposits(mary_id).free == D(20000)


def test_a_defaulted_guaranteed_loan_is_recovered_from_its_guarantors_after_a_decision(
    client: FlaskClient,
) -> None:
    """The second run: a loan paid out four months ago (so made through the services with
    those dates, the jobs refusing a date after today) is never repaid."""
    product = make_product(
        "V1", code="SEC", name="Development", min_guarantors=1, guarantee_cover=D(100)
    )
    applicant = _member("0711223344", "Wanjiku Achieng", 10000)
    john = _member("0722000001", "John Kamau", 20000)
    then = business_today() - timedelta(days=120)
    loan = loan_apply(member_id=applicant.id, product_id=product.id, amount=20000, as_of=then)
    asked = guarantee_request(
        loan_id=loan.id, guarantor_id=john.id, amount=10000, actor="member:test", today=then
    )
    guarantee_accept(guarantee_id=asked.id, guarantor_id=john.id, via="ussd", today=then)
    loan_approve(loan_id=loan.id, staff=make_staff("branch_manager"), as_of=then)
    loan_disburse(loan_id=loan.id, reference="B2CGUAR01", value_date=then)
    loan_id, loan_no, john_id, john_phone = loan.id, loan.loan_no, john.id, john.phone

    # Past the default threshold the loan is in default, and John is told his exposure.
    today = business_today()
    run_job("loan-arrears", today)
    db.session.expire_all()
    assert db.session.get(Loan, loan_id).in_default
    run_job("guarantor-notices", today)
    [notice] = sms_bodies("guarantor_default", phone=john_phone)
    assert loan_no in notice
    exposure = guarantees_held(john_id)[0].exposure
    assert D(0) < exposure <= D(10000)

    manager, compliance = make_staff("branch_manager"), make_staff("compliance")
    proposal = guarantee_recovery_propose(
        loan_id=loan_id, staff=manager, reason="in default, borrower unreachable"
    )
    owed = receivables(db.session.get(Loan, loan_id))["principal"]
    decided = guarantee_recovery_decide(
        recovery_id=proposal.id,
        staff=compliance,
        decision="approve",
        decision_date=today,
        minute_ref="BOARD/2026/14",
    )
    assert decided.recovered_total == exposure
    assert _statuses(loan_id) == {john_id: "recovered"}
    assert member_deposits(john_id).deposits == D(20000) - exposure
    assert receivables(db.session.get(Loan, loan_id))["principal"] == owed - exposure
    assert len(sms_bodies("guarantee_recovered", phone=john_phone)) == 1
