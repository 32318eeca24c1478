"""Disbursement and repayment with fixed dates: the schedule written from the payout
date, what the ledger holds, fees, and how a payment is shared out."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import Installment, JournalEntry, Loan, SmsMessage
from app.selectors.loans import current_installments
from app.services.ledger import (
    DuplicatePosting,
    ledger_check,
    member_account,
)
from app.services.loans import (
    LoanError,
    loan_apply,
    loan_disburse,
    loan_fee,
    loan_repay,
)
from app.services.savings import account_product, member_product_account
from tests.factories import make_member
from tests.loan_factories import (
    audit_rows,
    balance,
    charge_fee,
    count,
    counts,
    make_borrower,
    make_loan,
    make_product,
    make_staff,
    receivables,
    reload,
    run_job,
    schedule_owed,
)

D = Decimal
DISBURSED = date(2026, 1, 31)

# The contract's V1 table, disbursed on 31 January 2026: month-ends follow the calendar.
V1_SCHEDULE = [
    (date(2026, 2, 28), "788.49", "100.00"),
    (date(2026, 3, 31), "796.37", "92.12"),
    (date(2026, 4, 30), "804.34", "84.15"),
    (date(2026, 5, 31), "812.38", "76.11"),
    (date(2026, 6, 30), "820.51", "67.98"),
    (date(2026, 7, 31), "828.71", "59.78"),
    (date(2026, 8, 31), "837.00", "51.49"),
    (date(2026, 9, 30), "845.37", "43.12"),
    (date(2026, 10, 31), "853.82", "34.67"),
    (date(2026, 11, 30), "862.36", "26.13"),
    (date(2026, 12, 31), "870.98", "17.51"),
    (date(2027, 1, 31), "879.67", "8.80"),
]
V1_TOTAL = D("10661.86")


def v1_loan(**product: object) -> Loan:
    return make_loan(product=make_product(**product), on=DISBURSED)


def repayments() -> int:
    return db.session.scalar(
        select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == "repayment")
    )


def paid(row: Installment) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    return (row.penalty_paid, row.fees_paid, row.interest_paid, row.principal_paid)


def assert_books(loan: Loan) -> None:
    """The ledger is sound and the receivables are exactly what the schedule says is owed."""
    assert ledger_check() == []
    assert receivables(loan) == schedule_owed(loan)


# -- disbursement ----------------------------------------------------------------------


def test_disbursement_writes_the_schedule_from_the_payout_date(app):
    loan = v1_loan()

    rows = current_installments(loan.id)
    assert [(r.due_date, str(r.principal_due), str(r.interest_due)) for r in rows] == V1_SCHEDULE
    assert {(r.version, r.superseded, r.paid_on) for r in rows} == {(1, False, None)}
    assert loan.status == "active" and loan.disbursed_on == DISBURSED
    assert_books(loan)


def test_disbursement_ledger_without_a_fee(app):
    loan = v1_loan()

    assert receivables(loan) == {
        "principal": D("10000.00"),
        "interest": D("661.86"),
        "fees": D("0.00"),
        "penalty": D("0.00"),
    }
    assert balance("GL-B2C-UTILITY") == D("-10000.00")  # the float paid out
    assert balance("GL-INCOME-INTEREST") == D("661.86")
    assert balance("GL-INCOME-FEES") == D("0.00")
    entry = db.session.scalar(select(JournalEntry).where(JournalEntry.kind == "disbursement"))
    assert entry.value_date == DISBURSED
    assert entry.idempotency_key == f"disburse:{loan.loan_no}"
    assert_books(loan)


def test_disbursement_ledger_with_a_fee(app):
    # INSTANT: 2.5% fee (min 10, max 500), flat 90% a year for one month, whole shillings.
    product = make_product("INSTANT")
    member = make_borrower(savings=5000)
    loan = loan_apply(
        member_id=member.id, product_id=product.id, amount=1234, as_of=date(2026, 3, 2)
    )
    loan_disburse(loan_id=loan.id, reference="RCF1FEE001", value_date=date(2026, 3, 2))

    assert loan.fee_amount == D("30.85")  # 2.5% of 1,234
    (row,) = current_installments(loan.id)
    assert (row.due_date, row.principal_due, row.interest_due) == (
        date(2026, 4, 2),
        D("1234.00"),
        D("92.55"),  # 1,234 × 7.5% for the month
    )
    assert receivables(loan)["principal"] == D("1234.00")
    assert receivables(loan)["interest"] == D("92.55")
    assert balance("GL-INCOME-FEES") == D("30.85")
    assert balance("GL-B2C-UTILITY") == D("-1203.15")  # the member receives 1,234 − 30.85
    assert balance("GL-INCOME-INTEREST") == D("92.55")
    assert_books(loan)


@pytest.mark.parametrize(
    ("fee", "principal", "expected"),
    [
        ({}, "200", "10.00"),  # 2.5% is 5.00: the minimum of 10 applies
        ({}, "1000", "25.00"),
        ({}, "1234", "30.85"),
        ({}, "30000", "500.00"),  # 2.5% is 750.00: the maximum of 500 applies
        (
            {"fee_type": "fixed", "fee_value": D("150"), "fee_min": None, "fee_max": None},
            "5000",
            "150.00",
        ),
        ({"fee_type": "fixed", "fee_value": D("5"), "fee_min": D("10")}, "5000", "10.00"),
        ({"fee_type": "none"}, "5000", "0.00"),
    ],
)
def test_fee_percent_fixed_min_and_max(app, fee, principal, expected):
    product = make_product("INSTANT", **fee)

    assert loan_fee(product, D(principal)) == D(expected)

    member = make_borrower(savings=principal)
    loan = loan_apply(
        member_id=member.id, product_id=product.id, amount=principal, as_of=date(2026, 3, 2)
    )
    loan_disburse(loan_id=loan.id, reference=f"RCF{principal}", value_date=date(2026, 3, 2))
    assert loan.fee_amount == D(expected)
    assert balance("GL-INCOME-FEES") == D(expected)
    assert balance("GL-B2C-UTILITY") == -(D(principal) - D(expected))
    assert_books(loan)


# -- allocation ----------------------------------------------------------------------


def test_allocation_penalty_fees_interest_principal_oldest_first(app):
    loan = v1_loan(penalty_type="percent", penalty_value=D("5"))
    loan_id = loan.id
    run_job("loan-arrears", date(2026, 3, 4))  # row 1 four days late: 5% of 888.49
    loan = reload(loan_id)
    charge_fee(loan, 1, D("50.00"), date(2026, 3, 4))
    row1, row2 = current_installments(loan_id)[:2]
    assert (row1.penalty_due, row1.fees_due) == (D("44.42"), D("50.00"))

    first = loan_repay(
        loan_id=loan_id, amount="100", reference="RCA0000001", value_date=date(2026, 3, 5)
    )

    assert first.allocated == {"penalty": D("44.42"), "fees": D("50.00"), "interest": D("5.58")}
    assert paid(row1) == (D("44.42"), D("50.00"), D("5.58"), D("0.00"))
    assert row1.paid_on is None
    assert first.balance_left == V1_TOTAL + D("44.42") + D("50.00") - D("100")
    assert first.to_savings == 0 and not first.closed
    assert_books(loan)

    second = loan_repay(
        loan_id=loan_id, amount="900", reference="RCA0000002", value_date=date(2026, 3, 6)
    )

    # Row 1: the rest of its interest (94.42) and its principal (788.49); 17.09 is left
    # for row 2, which owes no penalty or fee, so it goes to row 2's interest.
    assert second.allocated == {"interest": D("111.51"), "principal": D("788.49")}
    assert paid(row1) == (D("44.42"), D("50.00"), D("100.00"), D("788.49"))
    assert row1.paid_on == date(2026, 3, 6)
    assert paid(row2) == (D("0.00"), D("0.00"), D("17.09"), D("0.00"))
    assert row2.paid_on is None
    assert second.balance_left == D("9756.28")
    assert receivables(loan) == {
        "principal": D("9211.51"),
        "interest": D("544.77"),  # 661.86 − 5.58 − 111.51
        "fees": D("0.00"),
        "penalty": D("0.00"),
    }
    assert balance("GL-MPESA-CLEARING") == D("11000.00")  # the 10,000 deposit, 100 and 900
    assert_books(loan)


def test_reference_installment_paid_exactly(app):
    loan = v1_loan()

    result = loan_repay(
        loan_id=loan.id, amount="888.49", reference="RCV1000001", value_date=date(2026, 2, 28)
    )

    row1 = current_installments(loan.id)[0]
    assert result.allocated == {"interest": D("100.00"), "principal": D("788.49")}
    assert (row1.outstanding, row1.paid_on) == (D("0.00"), date(2026, 2, 28))
    assert result.balance_left == V1_TOTAL - D("888.49")
    assert receivables(loan)["principal"] == D("9211.51")  # the contract's balance after #1
    entry = db.session.get(JournalEntry, result.entry_id)
    assert (entry.kind, entry.description, entry.member_id, entry.loan_id) == (
        "repayment",
        f"Repayment {loan.loan_no} RCV1000001",
        loan.member_id,
        loan.id,
    )
    assert_books(loan)


def test_prepayment_pays_future_installments_in_order(app):
    loan = v1_loan()
    loan_id = loan.id

    result = loan_repay(
        loan_id=loan_id, amount="2000", reference="RCP0000001", value_date=date(2026, 2, 10)
    )

    rows = current_installments(loan_id)
    assert [r.paid_on for r in rows[:3]] == [date(2026, 2, 10), date(2026, 2, 10), None]
    assert paid(rows[2]) == (D("0.00"), D("0.00"), D("84.15"), D("138.87"))  # 2000 − 2 × 888.49
    assert all(paid(r) == (0, 0, 0, 0) for r in rows[3:])
    assert result.allocated == {"interest": D("276.27"), "principal": D("1723.73")}
    assert result.balance_left == V1_TOTAL - D("2000")
    assert_books(loan)

    # Rows 1 and 2 fell due on 28 Feb and 31 Mar, already paid: the loan is not late.
    run_job("loan-arrears", date(2026, 4, 1))
    assert reload(loan_id).days_past_due == 0
    assert_books(reload(loan_id))


@pytest.mark.parametrize(
    ("amount", "allocated", "row2_paid"),
    [
        # Fifty cents: less than a shilling still reaches the loan, and is reported.
        ("0.50", {"interest": D("0.50")}, D("0.00")),
        # One installment and a shilling over: the shilling pays ahead, not into savings.
        ("889.49", {"interest": D("101.00"), "principal": D("788.49")}, D("1.00")),
    ],
)
def test_any_amount_left_after_an_installment_pays_the_next(app, amount, allocated, row2_paid):
    loan = v1_loan()
    savings = balance("SAV-" + loan.member.member_no)

    result = loan_repay(
        loan_id=loan.id, amount=amount, reference="RCPSMALL1", value_date=date(2026, 2, 10)
    )

    assert (result.allocated, result.to_savings) == (allocated, D("0.00"))
    assert current_installments(loan.id)[1].interest_paid == row2_paid
    assert balance("SAV-" + loan.member.member_no) == savings
    assert_books(loan)


def test_overpayment_closes_the_loan_and_the_rest_goes_to_savings(app):
    loan = v1_loan()
    savings = "SAV-" + loan.member.member_no
    assert balance(savings) == D("10000.00")

    result = loan_repay(
        loan_id=loan.id, amount="11000", reference="RCO0000001", value_date=date(2026, 2, 10)
    )

    assert result.to_savings == D("338.14")  # 11,000 − 10,661.86
    assert result.allocated == {"interest": D("661.86"), "principal": D("10000.00")}
    assert result.closed and result.balance_left == 0
    assert (loan.status, loan.closed_on) == ("closed", date(2026, 2, 10))
    assert all(r.paid_on == date(2026, 2, 10) for r in current_installments(loan.id))
    assert balance(savings) == D("10338.14")
    assert set(receivables(loan).values()) == {D("0.00")}
    close = audit_rows(loan)[-1]
    assert (close.action, close.actor, close.before, close.after) == (
        "loan.close",
        "system",
        {"status": "active"},
        {"status": "closed"},
    )
    assert_books(loan)


def test_exact_payoff_closes_with_nothing_to_savings(app):
    loan = v1_loan()

    result = loan_repay(
        loan_id=loan.id, amount=V1_TOTAL, reference="RCO0000002", value_date=date(2026, 5, 1)
    )

    assert result.closed and result.to_savings == 0 and result.balance_left == 0
    assert loan.status == "closed"
    assert_books(loan)


def test_a_shilling_over_the_debt_is_the_members_savings(app):
    """The smallest overpayment is kept like any other. (Mutation testing, issue 23.)"""
    loan = v1_loan()

    result = loan_repay(
        loan_id=loan.id, amount=V1_TOTAL + 1, reference="RCO0000003", value_date=date(2026, 5, 1)
    )

    assert (result.closed, result.to_savings) == (True, D("1.00"))
    assert balance("SAV-" + loan.member.member_no) == D("10001.00")
    assert_books(loan)


def test_a_repayment_staff_record_is_in_their_name(app):
    """The journal entry and the loan's closing are both the staff member's.
    (Mutation testing, issue 23.)"""
    staff = make_staff("branch_manager")
    loan = v1_loan()

    loan_repay(
        loan_id=loan.id,
        amount=V1_TOTAL,
        reference="RCO0000004",
        value_date=date(2026, 5, 1),
        actor=staff,
    )

    entry = db.session.scalar(select(JournalEntry).where(JournalEntry.kind == "repayment"))
    close = audit_rows(loan)[-1]
    assert (entry.actor, close.action, close.actor) == (
        f"staff:{staff.email}",
        "loan.close",
        f"staff:{staff.email}",
    )
    assert_books(loan)


def test_a_late_loan_paid_in_full_is_current_again(app):
    """Closing clears the arrears the nightly job recorded: reports and the officer's desk
    read them. (Mutation testing, issue 23.)"""
    loan_id = v1_loan().id
    run_job("loan-arrears", date(2026, 3, 10))
    late = reload(loan_id)
    assert (late.days_past_due, late.aging_bucket) != (0, "current")

    loan_repay(
        loan_id=loan_id, amount=V1_TOTAL, reference="RCO0000005", value_date=date(2026, 3, 10)
    )

    closed = reload(loan_id)
    assert (closed.status, closed.days_past_due, closed.aging_bucket) == ("closed", 0, "current")
    assert_books(closed)


def test_repayment_to_a_closed_loan_goes_entirely_to_savings(app):
    loan = v1_loan()
    savings = "SAV-" + loan.member.member_no
    loan_repay(
        loan_id=loan.id, amount=V1_TOTAL, reference="RCC0000001", value_date=date(2026, 5, 1)
    )
    audit_before = len(audit_rows(loan))

    result = loan_repay(
        loan_id=loan.id, amount="500", reference="RCC0000002", value_date=date(2026, 5, 2)
    )

    assert result.allocated == {}
    assert result.to_savings == D("500")
    assert result.balance_left == 0 and not result.closed
    assert loan.status == "closed"
    assert balance(savings) == D("10500.00")
    assert len(audit_rows(loan)) == audit_before  # no second close
    # The member's receipts: the loan's, then the deposit's with the savings it made.
    assert list(db.session.scalars(select(SmsMessage.body).order_by(SmsMessage.id)))[-2:] == [
        f"Payment of KES 10,661.86 received for loan {loan.loan_no}. Balance left KES 0.00. "
        "Ref RCC0000001.",
        "Deposit of KES 500.00 received. Savings balance KES 10,500.00. Ref RCC0000002.",
    ]
    assert_books(loan)


def test_same_reference_twice_posts_once(app):
    loan = v1_loan()
    loan_id = loan.id
    first = loan_repay(
        loan_id=loan_id, amount="500", reference="RCD0UBLE01", value_date=date(2026, 2, 28)
    )
    entries = repayments()

    with pytest.raises(DuplicatePosting) as raised:
        loan_repay(
            loan_id=loan_id, amount="500", reference="RCD0UBLE01", value_date=date(2026, 2, 28)
        )

    assert raised.value.entry_id == first.entry_id
    # Even before the caller rolls back, the schedule shows one payment, not two.
    row1 = current_installments(loan_id)[0]
    assert paid(row1) == (D("0.00"), D("0.00"), D("100.00"), D("400.00"))
    assert repayments() == entries == 1
    assert_books(loan)
    db.session.rollback()
    row1 = current_installments(loan_id)[0]
    assert paid(row1) == (D("0.00"), D("0.00"), D("100.00"), D("400.00"))
    assert balance("GL-MPESA-CLEARING") == D("10500.00")  # the deposit and one payment
    assert_books(reload(loan_id))


def test_repayment_from_savings(app):
    loan = v1_loan()
    savings = "SAV-" + loan.member.member_no

    result = loan_repay(
        loan_id=loan.id,
        amount="888.49",
        reference="SAVPAY0001",
        value_date=date(2026, 2, 28),
        source="savings",
    )

    assert result.allocated == {"interest": D("100.00"), "principal": D("788.49")}
    assert balance(savings) == D("9111.51")
    assert_books(loan)


@pytest.mark.parametrize("source", ["savings", "member_savings"])
def test_savings_cannot_pay_more_than_the_debt_and_nothing_is_written(app, source):
    """The member's deposits, or a standing order's savings account: paying more than is
    owed from them would only move money back, so it is refused."""
    loan = v1_loan()
    loan_id = loan.id
    account_id = None
    if source == "member_savings":
        account_id = member_product_account(loan.member, account_product("ORD")).id
    db.session.commit()
    before, sms_before = counts(), count(SmsMessage)

    # The message says what the loan does owe: 10,000.00 principal + 661.86 interest.
    with pytest.raises(LoanError, match=rf"^loan {loan.loan_no} owes only KES 10,661\.86$"):
        loan_repay(
            loan_id=loan_id,
            amount="11000",
            reference="SAVPAY0002",
            value_date=date(2026, 2, 28),
            source=source,
            source_account_id=account_id,
        )

    assert counts() == before
    assert count(SmsMessage) == sms_before  # no receipt for a payment that did not happen
    assert all(paid(r) == (0, 0, 0, 0) for r in current_installments(loan_id))
    assert_books(loan)


def test_a_standing_order_pays_only_from_the_members_own_withdrawable_savings(app):
    """`member_savings`: the account named must be an ordinary savings account, and the
    loan's own member's; anything else is refused by its number and nothing moves."""
    loan = v1_loan()
    loan_id, member_no = loan.id, loan.member.member_no
    theirs = member_product_account(make_member(), account_product("ORD")).id
    deposits = member_account(loan.member, "savings").id  # the member's, not withdrawable
    db.session.commit()
    before, sms_before = counts(), count(SmsMessage)

    for account_id in (None, theirs, deposits, 999_999):
        with pytest.raises(
            LoanError, match=rf"^account {account_id} is not a savings account of {member_no}$"
        ):
            loan_repay(
                loan_id=loan_id,
                amount="888.49",
                reference=f"SO-{account_id}",
                value_date=date(2026, 2, 28),
                source="member_savings",
                source_account_id=account_id,
            )
        db.session.rollback()

    assert counts() == before
    assert count(SmsMessage) == sms_before
    assert all(paid(r) == (0, 0, 0, 0) for r in current_installments(loan_id))
    assert_books(reload(loan_id))


def test_savings_cannot_pay_a_loan_that_does_not_exist(app):
    make_member(savings=1000)
    before = counts()
    with pytest.raises(LoanError, match=r"^no loan 999999$"):
        loan_repay(
            loan_id=999_999,
            amount="100",
            reference="SAVNOLOAN",
            value_date=date(2026, 2, 28),
            source="savings",
        )
    db.session.rollback()
    assert counts() == before


@pytest.mark.parametrize(
    ("amount", "message"),
    [("0", "more than zero"), ("-50", "more than zero"), ("10.005", "fractions of a cent")],
)
def test_repayment_amount_refused(app, amount, message):
    loan = v1_loan()
    before = counts()

    with pytest.raises(LoanError, match=message):
        loan_repay(
            loan_id=loan.id, amount=amount, reference="RCBAD00001", value_date=date(2026, 2, 28)
        )

    assert counts() == before
    assert_books(loan)
