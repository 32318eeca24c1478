"""Rules added on review: the auto-approve boundary, fees that would eat the loan, the
restructure term, loans in flight counting against the limit, who may reject or withdraw,
and the SMS each loan action queues (in the same transaction as the change)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import LoanProduct, SmsMessage
from app.selectors.loans import current_installments, loan_eligibility
from app.services.ledger import ledger_check
from app.services.loans import (
    LoanError,
    loan_apply,
    loan_approve,
    loan_disburse,
    loan_reject,
    loan_repay,
    loan_restructure,
    loan_withdraw,
)
from app.services.permissions import PermissionDenied
from tests.loan_factories import (
    counts,
    make_borrower,
    make_loan,
    make_product,
    make_staff,
    reload,
    run_job,
)

pytestmark = pytest.mark.usefixtures("app")

DAY = date(2026, 3, 2)


def templates() -> list[str]:
    return list(db.session.scalars(select(SmsMessage.template).order_by(SmsMessage.id)))


def test_an_application_of_exactly_the_auto_approve_limit_goes_to_staff() -> None:
    product = make_product(auto_approve_limit=Decimal("5000"))
    member = make_borrower(savings=10000)
    under = loan_apply(member_id=member.id, product_id=product.id, amount=4999, as_of=DAY)
    assert under.status == "approved"
    other = make_borrower(savings=10000)
    at = loan_apply(member_id=other.id, product_id=product.id, amount=5000, as_of=DAY)
    assert at.status == "submitted"
    assert ledger_check() == []


def test_a_fee_that_would_take_the_whole_loan_is_refused_and_nothing_is_written() -> None:
    product = make_product(fee_type="fixed", fee_value=Decimal("1000"), min_amount=Decimal("500"))
    member = make_borrower(savings=10000)
    before = counts()
    with pytest.raises(LoanError, match=r"the fee of KES 1,000\.00 would take the whole loan"):
        loan_apply(member_id=member.id, product_id=product.id, amount=1000, as_of=DAY)
    assert counts() == before


def _loan_late(product: LoanProduct) -> int:
    loan_id = make_loan(product=product, on=date(2026, 1, 1)).id
    run_job("loan-arrears", date(2026, 3, 15))
    return loan_id


@pytest.mark.parametrize("term", [0, 13])
def test_restructure_term_must_fit_the_product(term: int) -> None:
    loan_id = _loan_late(make_product(max_term=12))
    manager = make_staff("branch_manager")
    before = counts()
    with pytest.raises(LoanError, match="^the new term must be 1 to 12 months$"):
        loan_restructure(
            loan_id=loan_id, staff=manager, term=term, start_date=date(2026, 3, 15), reason="job"
        )
    assert counts() == before
    assert reload(loan_id).status == "active"
    assert ledger_check() == []


@pytest.mark.parametrize("term", [1, 12])
def test_restructure_takes_either_end_of_the_products_terms(term: int) -> None:
    """One installment and the product's longest term are both terms it allows.
    (Mutation testing, issue 23.)"""
    loan_id = _loan_late(make_product(max_term=12))
    loan_restructure(
        loan_id=loan_id,
        staff=make_staff("branch_manager"),
        term=term,
        start_date=date(2026, 3, 15),
        reason="job loss",
    )
    loan = reload(loan_id)
    assert (loan.status, loan.term, len(current_installments(loan_id))) == (
        "restructured",
        term,
        term,
    )
    assert ledger_check() == []


def test_an_approved_loan_on_another_product_lowers_the_limit() -> None:
    first = make_product(code="P1", name="First", limit_multiple=Decimal("1"))
    second = make_product(code="P2", name="Second", limit_multiple=Decimal("1"))
    member = make_borrower(savings=10000)
    loan = loan_apply(member_id=member.id, product_id=first.id, amount=6000, as_of=DAY)
    loan_approve(loan_id=loan.id, staff=make_staff())
    eligibility = loan_eligibility(member=member, product=second, as_of=DAY)
    assert eligibility.limit == Decimal("4000.00")
    with pytest.raises(LoanError, match="the most you can borrow now is KES 4,000"):
        loan_apply(member_id=member.id, product_id=second.id, amount=5000, as_of=DAY)


@pytest.mark.parametrize("role", ["auditor", "compliance"])
def test_staff_without_an_approver_role_cannot_reject_or_withdraw(role: str) -> None:
    product = make_product()
    member = make_borrower(savings=10000)
    loan = loan_apply(member_id=member.id, product_id=product.id, amount=5000, as_of=DAY)
    staff = make_staff(role)
    before = counts()
    with pytest.raises(PermissionDenied, match=f"{role} staff cannot approve or reject loans"):
        loan_reject(loan_id=loan.id, staff=staff, reason="no")
    with pytest.raises(PermissionDenied, match=f"{role} staff cannot recommend or withdraw loans"):
        loan_withdraw(loan_id=loan.id, actor=staff)
    assert counts() == before
    assert reload(loan.id).status == "submitted"
    # The member withdrawing (a plain actor string, as USSD passes) is allowed.
    assert loan_withdraw(loan_id=loan.id, actor="member:" + member.member_no).status == "withdrawn"


def test_each_loan_action_queues_its_sms_with_the_change() -> None:
    product = make_product()
    member = make_borrower(savings=20000)
    assert templates() == ["deposit_received"]
    loan = loan_apply(member_id=member.id, product_id=product.id, amount=10000, as_of=DAY)
    assert templates() == ["deposit_received"]  # submitted: nothing to tell yet
    loan_approve(loan_id=loan.id, staff=make_staff())
    assert templates()[-1] == "loan_approved"
    loan_disburse(loan_id=loan.id, reference="B2CREF", value_date=DAY)
    assert templates()[-1] == "loan_disbursed"
    disbursed = db.session.scalar(select(SmsMessage).where(SmsMessage.template == "loan_disbursed"))
    # V1's first installment, due a month after the disbursement date.
    assert disbursed.body == (
        f"Loan {loan.loan_no} of KES 10,000.00 sent to your M-PESA, fee KES 0.00. Ref B2CREF."
        " First installment KES 888.49 due 02/04/2026."
    )
    result = loan_repay(loan_id=loan.id, amount=888, reference="RCPT1", value_date=date(2026, 4, 2))
    assert templates()[-1] == "repayment_received"
    body = db.session.scalar(
        select(SmsMessage.body).where(SmsMessage.template == "repayment_received")
    )
    assert "L" in body and f"{result.balance_left:,.2f}" in body

    other = loan_apply(
        member_id=make_borrower(savings=20000).id, product_id=product.id, amount=5000, as_of=DAY
    )
    loan_reject(loan_id=other.id, staff=make_staff(), reason="Incomplete guarantor form")
    rejected = db.session.scalar(select(SmsMessage).where(SmsMessage.template == "loan_rejected"))
    assert rejected.body == (
        f"Sorry, your loan application {other.loan_no} was not approved: Incomplete guarantor form."
    )
    assert ledger_check() == []


def test_a_long_rejection_reason_is_kept_whole_to_its_column_and_cut_for_the_sms() -> None:
    """Staff may write at length: the loan keeps the first 255 characters (its column),
    the member's SMS the first 120, and the decision is dated. (Mutation testing, issue 23.)"""
    loan = loan_apply(
        member_id=make_borrower(savings=20000).id,
        product_id=make_product().id,
        amount=5000,
        as_of=DAY,
    )
    reason = "".join(f"{i % 10}" for i in range(300))
    loan_reject(loan_id=loan.id, staff=make_staff(), reason=reason)
    loan = reload(loan.id)
    assert loan.decision_reason == reason[:255] and loan.decided_at is not None
    body = db.session.scalar(select(SmsMessage.body).where(SmsMessage.template == "loan_rejected"))
    assert body.endswith(f": {reason[:120]}.")


def test_a_refused_action_queues_no_sms() -> None:
    product = make_product()
    member = make_borrower(savings=20000)
    loan = loan_apply(member_id=member.id, product_id=product.id, amount=10000, as_of=DAY)
    before = templates()
    with pytest.raises(PermissionDenied):
        loan_approve(loan_id=loan.id, staff=make_staff("auditor"))
    db.session.rollback()
    assert templates() == before
