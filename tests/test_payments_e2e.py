"""End to end over real HTTP: the service, a real RQ worker, the Daraja simulator and our
callback routes, with nothing faked. The test app is served on a free port; M-PESA calls
go to its /simulator/daraja and the simulator calls back its /payments/<token>/ routes.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import requests
from sqlalchemy import select

from app.extensions import db
from app.models import Loan, MpesaRequest, Payment
from app.selectors.loans import loan_debt
from app.selectors.members import member_balances
from app.services.loans import loan_approve
from app.services.payments import payments_request_stk
from tests.helpers import sms_bodies, work_until
from tests.loan_factories import (
    make_application,
    make_borrower,
    make_loan,
    make_product,
    make_staff,
)


def test_an_stk_repayment_of_500_reduces_the_loan_by_exactly_500(over_http: str) -> None:
    member = make_borrower(savings=10000)
    loan = make_loan(product=make_product("V1"), on=date(2026, 1, 1), member=member)
    loan_id = loan.id
    before = loan_debt(loan_id=loan_id).total

    request_id = payments_request_stk(loan_id=loan_id, amount=500, channel="console").id
    request = work_until(
        lambda: (r := db.session.get(MpesaRequest, request_id)).status == "succeeded" and r,
        "the STK callback to be posted",
    )

    assert before - loan_debt(loan_id=loan_id).total == Decimal("500")
    payment = db.session.scalar(select(Payment).where(Payment.request_id == request_id))
    assert payment.receipt == request.receipt and payment.amount == Decimal("500")
    receipts = sms_bodies("repayment_received")
    assert len(receipts) == 1 and request.receipt in receipts[0]
    # (the autouse fixture then proves the ledger and every schedule reconcile)


def test_a_paybill_deposit_reaches_savings(over_http: str, runner) -> None:  # noqa: ANN001
    member = make_borrower()
    member_id, member_no, phone = member.id, member.member_no, member.phone
    db.session.commit()  # SQLite: free the write lock before the server is called back
    registered = runner.invoke(args=["mpesa", "register-urls"])
    assert registered.exit_code == 0, registered.output
    paid = requests.post(
        f"{over_http}/simulator/daraja/c2b/pay",
        json={"phone": phone, "amount": "750", "account": member_no.lower()},
        timeout=10,
    )
    assert paid.status_code == 202, paid.text
    trans_id = paid.json()["TransID"]

    work_until(
        lambda: db.session.scalar(select(Payment).where(Payment.receipt == trans_id)),
        "the Paybill confirmation to be posted",
    )
    assert member_balances(member_id=member_id).savings == Decimal("750.00")
    assert any(trans_id in body for body in sms_bodies("deposit_received"))


def test_an_approval_ends_in_a_b2c_payout_and_a_disbursed_loan(over_http: str) -> None:
    member = make_borrower(savings=10000)
    loan = make_application(member, date(2026, 11, 20))
    loan_id = loan.id
    loan_approve(loan_id=loan_id, staff=make_staff("branch_manager"))

    loan = work_until(
        lambda: (row := db.session.get(Loan, loan_id)).status == "active" and row,
        "the payout result to disburse the loan",
    )
    payout = db.session.scalar(select(MpesaRequest).where(MpesaRequest.loan_id == loan_id))
    assert payout.status == "succeeded" and payout.receipt
    assert loan_debt(loan_id=loan_id).principal == Decimal("5000")
    assert any(payout.receipt in body for body in sms_bodies("loan_disbursed"))


def test_a_cancelled_prompt_tells_the_member_and_posts_nothing(over_http: str) -> None:
    member = make_borrower(savings=10000)
    loan = make_loan(product=make_product("V1"), on=date(2026, 1, 1), member=member)
    loan_id, phone = loan.id, member.phone
    requests.post(
        f"{over_http}/simulator/daraja/phones/{phone}/outcome",
        json={"stk": "cancelled"},
        timeout=10,
    )
    before = loan_debt(loan_id=loan_id).total
    request_id = payments_request_stk(loan_id=loan_id, amount=500).id
    work_until(
        lambda: db.session.get(MpesaRequest, request_id).status == "failed",
        "the cancel callback",
    )
    assert loan_debt(loan_id=loan_id).total == before
    assert any("cancelled" in body for body in sms_bodies("payment_failed"))
