"""Withdrawals paid at the branch in cash or by bank transfer: at once up to the approval
limit; above it held for a second person, who pays it or gives the money back."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import select

from app.extensions import db
from app.models import Account, AuditLog, BranchWithdrawal, Member, StaffUser
from app.services.ledger import credit, debit, gl_account, journal_post
from app.services.permissions import PermissionDenied
from app.services.savings import account_product, member_product_account
from app.services.savings.branch import (
    BranchWithdrawalError,
    branch_withdrawal_decide,
    branch_withdrawal_record,
)
from app.services.staff import staff_add
from tests.factories import make_member
from tests.helpers import PASSWORD

TODAY = date(2026, 6, 1)


def _staff(email: str, role: str) -> StaffUser:
    staff_add(email=email, role=role, password=PASSWORD)
    found = db.session.scalar(select(StaffUser).where(StaffUser.email == email))
    assert found is not None
    return found


def _member_with_savings(amount: str) -> tuple[int, int]:
    member = make_member()
    account = member_product_account(member, account_product("ORD"))
    journal_post(
        kind="deposit",
        lines=[
            debit(gl_account("GL-MPESA-CLEARING"), Decimal(amount)),
            credit(account, Decimal(amount)),
        ],
        value_date=TODAY,
        idempotency_key=f"deposit:B-{member.id}",
        member_id=member.id,
    )
    db.session.commit()
    return member.id, account.id


def _balance(account_id: int) -> Decimal:
    account = db.session.get(Account, account_id, populate_existing=True)
    return account.display_balance


def test_a_small_withdrawal_is_paid_at_once_from_the_cash_book(app: Flask) -> None:
    officer = _staff("officer@sacco.test", "loan_officer")
    member_id, account_id = _member_with_savings("20000")
    row = branch_withdrawal_record(
        member_id=member_id,
        account_id=account_id,
        amount="5000",
        method="cash",
        reference="V-001",
        staff=officer,
        today=TODAY,
    )
    assert row.status == "paid"
    assert _balance(account_id) == Decimal("15000.00")
    assert gl_account("GL-CASH").balance == Decimal("-5000.00")  # cash left the till


def test_above_the_limit_the_money_is_held_until_a_second_person_pays_or_refuses_it(
    app: Flask,
) -> None:
    officer = _staff("officer@sacco.test", "loan_officer")
    manager = _staff("manager@sacco.test", "branch_manager")
    other_manager = _staff("manager2@sacco.test", "branch_manager")
    member_id, account_id = _member_with_savings("200000")
    big = branch_withdrawal_record(
        member_id=member_id,
        account_id=account_id,
        amount="80000",
        method="bank",
        reference="EFT 77",
        staff=manager,
        today=TODAY,
    )
    assert big.status == "pending"
    assert _balance(account_id) == Decimal("120000.00")  # held: nothing else can spend it
    assert -gl_account("GL-WITHDRAWALS-PENDING").balance == Decimal("80000.00")
    with pytest.raises(BranchWithdrawalError, match="needs a second person: you entered it"):
        branch_withdrawal_decide(withdrawal_id=big.id, staff=manager, approve=True, today=TODAY)
    with pytest.raises(PermissionDenied):
        branch_withdrawal_decide(withdrawal_id=big.id, staff=officer, approve=True, today=TODAY)
    branch_withdrawal_decide(withdrawal_id=big.id, staff=other_manager, approve=True, today=TODAY)
    assert gl_account("GL-BANK").balance == Decimal("-80000.00")
    assert gl_account("GL-WITHDRAWALS-PENDING").balance == Decimal("0.00")

    refused = branch_withdrawal_record(
        member_id=member_id,
        account_id=account_id,
        amount="60000",
        method="cash",
        reference="V-9",
        staff=officer,
        today=TODAY,
    )
    with pytest.raises(BranchWithdrawalError, match="say why"):
        branch_withdrawal_decide(
            withdrawal_id=refused.id, staff=manager, approve=False, today=TODAY
        )
    branch_withdrawal_decide(
        withdrawal_id=refused.id,
        staff=manager,
        approve=False,
        today=TODAY,
        reason="signature does not match",
    )
    assert _balance(account_id) == Decimal("120000.00")  # the money is back
    assert db.session.get(BranchWithdrawal, refused.id).status == "rejected"
    with pytest.raises(BranchWithdrawalError, match="rejected already"):
        branch_withdrawal_decide(
            withdrawal_id=refused.id, staff=other_manager, approve=True, today=TODAY
        )
    actions = list(
        db.session.scalars(
            select(AuditLog.action).where(AuditLog.action.like("branch_withdrawal.%"))
        )
    )
    assert actions.count("branch_withdrawal.record") == 2
    assert {"branch_withdrawal.approve", "branch_withdrawal.reject"} <= set(actions)


def test_bad_withdrawals_are_refused_in_words_and_nothing_moves(app: Flask) -> None:
    officer = _staff("officer@sacco.test", "loan_officer")
    member_id, account_id = _member_with_savings("1000")
    deposits = member_product_account(db.session.get(Member, member_id), account_product("DEP"))
    cases = [
        (dict(account_id=account_id, amount="950"), "at most KES 900.00 can be withdrawn"),
        (dict(account_id=account_id, amount="0"), "more than zero"),
        (dict(account_id=account_id, amount="100", method="cheque"), "cash or by bank"),
        (dict(account_id=account_id, amount="100", reference=" "), "reference is needed"),
        (dict(account_id=deposits.id, amount="100"), "cannot be withdrawn; only savings can"),
    ]
    for kwargs, words in cases:
        values = {"method": "cash", "reference": "V-1", **kwargs}
        with pytest.raises(BranchWithdrawalError, match=words):
            branch_withdrawal_record(member_id=member_id, staff=officer, today=TODAY, **values)  # type: ignore[arg-type]
    assert db.session.scalar(select(BranchWithdrawal.id)) is None
    assert _balance(account_id) == Decimal("1000.00")
