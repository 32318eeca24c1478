"""Loan test data: products, staff, borrowers and disbursed loans, made through the real
services with fixed dates (a member's join date is set, never taken from the clock)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import func, select, update

from app.cli.demo import PRODUCTS
from app.extensions import db
from app.models import (
    Account,
    AuditLog,
    Installment,
    JournalEntry,
    Loan,
    LoanProduct,
    Member,
    StaffUser,
)
from app.selectors.loans import current_installments, loan_debt
from app.services.ledger import credit, debit, gl_account, journal_post
from app.services.loans import (
    loan_account,
    loan_apply,
    loan_approve,
    loan_disburse,
    loan_restructure,
)
from app.services.members import member_buy_shares
from app.services.staff import staff_add
from tests.factories import make_member
from workers import schedule
from workers.runner import EXIT_OK

_seq = itertools.count(1)

JOINED = datetime(2025, 1, 1, 9, 0, tzinfo=UTC)

# The contract's V1 loan: 10,000 at 12% a year over 12 months, declining balance, equal
# installments, no installment multiple, no fee, no penalty unless a test sets one.
V1 = dict(
    code="V1",
    name="Reference Loan",
    interest_method="declining",
    amortization="equal_installments",
    annual_rate=Decimal("12"),
    frequency="monthly",
    default_term=12,
    min_term=1,
    max_term=36,
    installment_multiple=None,
    min_amount=Decimal("1000"),
    max_amount=None,
    fee_type="none",
    fee_value=Decimal("0"),
    penalty_type="none",
    penalty_value=Decimal("0"),
    limit_multiple=Decimal("3"),
    min_share_capital=Decimal("0"),
    min_membership_days=0,
    auto_approve_limit=None,
    maker_checker_threshold=None,
)
BASES = {"V1": V1, **{spec["code"]: spec for spec in PRODUCTS}}


def make_product(base: str = "V1", **overrides: object) -> LoanProduct:
    """A product from V1 or the demo's INSTANT / DEV, with `overrides` on top."""
    product = LoanProduct(**{**BASES[base], **overrides})
    db.session.add(product)
    db.session.commit()
    return product


def make_staff(role: str = "branch_manager") -> StaffUser:
    n = next(_seq)
    return staff_add(
        email=f"{role.replace('_', '.')}{n}@sacco.test", role=role, password="test-password-1"
    )


def make_borrower(
    *,
    savings: Decimal | int | str = 0,
    shares: Decimal | int | str = 0,
    joined: datetime = JOINED,
) -> Member:
    """A member with `savings` in savings and `shares` in share capital, joined on `joined`."""
    shares = Decimal(str(shares))
    member = make_member(savings=Decimal(str(savings)) + shares)
    if shares > 0:
        member_buy_shares(
            member_id=member.id,
            amount=shares,
            reference=f"SHARES-{member.member_no}",
            value_date=date(2026, 1, 1),
        )
    member.created_at = joined
    db.session.commit()
    return member


def make_application(
    member: Member, on: date, *, product_id: int | None = None, amount: int = 5000
) -> Loan:
    """`member`'s application for `amount` (5,000) of a new V1 product unless given one,
    made on `on`: submitted, or approved where the product needs no approval."""
    return loan_apply(
        member_id=member.id,
        product_id=product_id or make_product("V1").id,
        amount=amount,
        as_of=on,
    )


def make_loan(
    *,
    product: LoanProduct,
    amount: Decimal | int | str = 10000,
    on: date,
    member: Member | None = None,
    term: int | None = None,
) -> Loan:
    """An active loan disbursed on `on` (applied, approved by a branch manager, paid out)."""
    if member is None:
        member = make_borrower(savings=Decimal(str(amount)))
    loan = loan_apply(
        member_id=member.id, product_id=product.id, amount=amount, term=term, as_of=on
    )
    if loan.status == "submitted":
        loan_approve(loan_id=loan.id, staff=make_staff("branch_manager"))
    return loan_disburse(loan_id=loan.id, reference=f"B2C{loan.id:05d}", value_date=on)


def restructure(
    loan_id: int,
    *,
    start: date,
    term: int = 12,
    reason: str = "Lost job; new employer from May",
    annual_rate: object | None = None,
) -> None:
    """A branch manager restructures a loan in arrears over `term` months from `start`."""
    loan_restructure(
        loan_id=loan_id,
        staff=make_staff("branch_manager"),
        term=term,
        start_date=start,
        reason=reason,
        annual_rate=annual_rate,
    )


def count(model: type) -> int:
    return db.session.scalar(select(func.count()).select_from(model)) or 0


def counts() -> dict[str, int]:
    """Rows that any loan action would write: to prove a refusal wrote nothing."""
    return {m.__name__: count(m) for m in (Loan, AuditLog, JournalEntry, Account)}


def balance(code: str) -> Decimal:
    """An account's balance as the books show it (savings and income read positive)."""
    account = db.session.scalar(select(Account).where(Account.code == code))
    return account.display_balance if account is not None else Decimal("0.00")


def receivables(loan: Loan) -> dict[str, Decimal]:
    return {
        "principal": balance(f"LNP-{loan.loan_no}"),
        "interest": balance(f"LNI-{loan.loan_no}"),
        "fees": balance(f"LNF-{loan.loan_no}"),
        "penalty": balance(f"LNX-{loan.loan_no}"),
    }


def schedule_owed(loan: Loan) -> dict[str, Decimal]:
    debt = loan_debt(loan_id=loan.id)
    return {
        "principal": debt.principal,
        "interest": debt.interest,
        "fees": debt.fees,
        "penalty": debt.penalty,
    }


def audit_rows(loan: Loan) -> list[AuditLog]:
    return list(
        db.session.scalars(
            select(AuditLog).where(AuditLog.object_id == loan.loan_no).order_by(AuditLog.id)
        )
    )


def run_job(name: str, as_of: date) -> None:
    """Run a daily job for a fixed day. The runner ends the session, so callers reload
    what they hold by id afterwards."""
    assert schedule.run_job(name, as_of) == EXIT_OK


def reload(loan_id: int) -> Loan:
    loan = db.session.get(Loan, loan_id)
    assert loan is not None
    return loan


def make_loan_in_default() -> int:
    """A V1 loan of 10,000 paid out on 1 January and never paid: in default by April
    (the arrears job run for 1 April says so); its id."""
    loan = make_loan(product=make_product("V1", default_threshold_days=30), on=date(2026, 1, 1))
    loan_id = loan.id
    run_job("loan-arrears", date(2026, 4, 1))
    assert reload(loan_id).in_default
    return loan_id


def _post_fee(loan: Loan, row: Installment, amount: Decimal, on: date) -> None:
    journal_post(
        kind="fee",
        lines=[
            debit(loan_account(loan, "fees"), amount),
            credit(gl_account("GL-INCOME-FEES"), amount),
        ],
        value_date=on,
        description=f"Fee {loan.loan_no} #{row.number}",
        member_id=loan.member_id,
        loan_id=loan.id,
    )


def charge_fee(loan: Loan, number: int, amount: Decimal, on: date) -> None:
    """Book a fee on one installment the way the arrears job books a penalty. No service
    charges fees after disbursement yet; this makes the fee step of the order visible."""
    row = current_installments(loan.id)[number - 1]
    _post_fee(loan, row, amount, on)
    row.fees_due += amount
    db.session.commit()


def fee_booked_behind_the_session(loan: Loan, row: Installment, amount: Decimal, on: date) -> None:
    """Another writer books a fee on `row`: posted, and the row updated around the session
    (a bulk UPDATE), so the copy the session holds still shows the fee before it."""
    _post_fee(loan, row, amount, on)
    db.session.execute(
        update(Installment)
        .where(Installment.id == row.id)
        .values(fees_due=Installment.fees_due + amount)
        .execution_options(synchronize_session=False)
    )
