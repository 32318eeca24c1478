"""Withdrawals paid at the branch in cash or by bank transfer: at once up to the approval
limit; above it held for a second person, who pays it or gives the money back."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import select

from app.extensions import db
from app.models import Account, AuditLog, BranchWithdrawal, JournalEntry, Member, StaffUser
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
from tests.helpers import PASSWORD, Worker, assert_not_held, row_locked, wait_until_blocked

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


def _withdraw(
    staff: StaffUser,
    member_id: int,
    account_id: int,
    amount: object,
    method: str = "cash",
    reference: str = "V-1",
) -> BranchWithdrawal:
    return branch_withdrawal_record(
        member_id=member_id,
        account_id=account_id,
        amount=amount,
        method=method,
        reference=reference,
        staff=staff,
        today=TODAY,
    )


def test_a_small_withdrawal_is_paid_at_once_from_the_cash_book(app: Flask) -> None:
    officer = _staff("officer@sacco.test", "loan_officer")
    member_id, account_id = _member_with_savings("20000")
    row = _withdraw(officer, member_id, account_id, "5000", "cash", "V-001")
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
    big = _withdraw(manager, member_id, account_id, "80000", "bank", "EFT 77")
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

    refused = _withdraw(officer, member_id, account_id, "60000", "cash", "V-9")
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


def _entry(key: str) -> JournalEntry:
    found = db.session.scalar(select(JournalEntry).where(JournalEntry.idempotency_key == key))
    assert found is not None, key
    return found


def _audit(action: str) -> AuditLog:
    found = db.session.scalar(select(AuditLog).where(AuditLog.action == action))
    assert found is not None, action
    return found


def test_each_withdrawal_and_decision_is_one_keyed_entry_and_an_audit_row_naming_the_staff(
    app: Flask,
) -> None:
    """The journal says what moved, for whom and by whom, keyed so a retry cannot pay twice;
    the audit says who did what to which member or withdrawal. (Mutation testing, issue 23.)"""
    officer = _staff("officer@sacco.test", "loan_officer")
    manager = _staff("manager@sacco.test", "branch_manager")
    member_id, account_id = _member_with_savings("200000")
    member = db.session.get(Member, member_id)
    code = db.session.get(Account, account_id).code
    voucher = "V-" + "7" * 70  # a long voucher number is kept to its first 60 characters

    paid = _withdraw(officer, member_id, account_id, "5000", "cash", f"  {voucher}  ")
    assert paid.reference == voucher[:60]
    assert (paid.decided_by_id, paid.decided_at is not None) == (officer.id, True)
    entry = _entry(f"branch-withdrawal:{paid.id}")
    assert (entry.kind, entry.description, entry.actor, entry.member_id) == (
        "branch_withdrawal",
        f"Withdrawal {code} by cash {voucher[:60]}",
        "officer@sacco.test",
        member_id,
    )
    audit = _audit("branch_withdrawal.record")
    assert (audit.actor, audit.object_type, audit.object_id, audit.after) == (
        "officer@sacco.test",
        "member",
        member.member_no,
        {"withdrawal": paid.id, "amount": "5000.00", "method": "cash", "status": "paid"},
    )

    held, refused = (
        _withdraw(officer, member_id, account_id, "60000", "bank", reference)
        for reference in ("EFT 1", "EFT 2")
    )
    assert (held.decided_by_id, held.decided_at) == (None, None)
    # A reason given with an approval is not a refusal's reason: none is kept.
    branch_withdrawal_decide(
        withdrawal_id=held.id, staff=manager, approve=True, today=TODAY, reason="checked"
    )
    branch_withdrawal_decide(
        withdrawal_id=refused.id, staff=manager, approve=False, today=TODAY, reason=" no ID "
    )
    db.session.expire_all()
    for row, kind, words, status, reason in (
        (held, "branch_withdrawal", "paid", "paid", None),
        (refused, "branch_withdrawal_return", "refused: back to savings", "rejected", "no ID"),
    ):
        row = db.session.get(BranchWithdrawal, row.id)
        assert (row.status, row.reason, row.decided_by_id) == (status, reason, manager.id)
        assert row.decided_at is not None
        entry = _entry(f"branch-withdrawal-decided:{row.id}")
        assert (entry.kind, entry.description, entry.actor, entry.member_id) == (
            kind,
            f"Withdrawal {row.id} {words}",
            "manager@sacco.test",
            member_id,
        )
    for row, action, after in (
        (held, "branch_withdrawal.approve", {"status": "paid", "reason": None}),
        (refused, "branch_withdrawal.reject", {"status": "rejected", "reason": "no ID"}),
    ):
        audit = _audit(action)
        assert (audit.actor, audit.object_type, audit.object_id) == (
            "manager@sacco.test",
            "branch_withdrawal",
            str(row.id),
        )
        assert (audit.before, audit.after) == ({"status": "pending"}, after)
    with pytest.raises(BranchWithdrawalError) as unknown:
        branch_withdrawal_decide(withdrawal_id=999999, staff=manager, approve=True, today=TODAY)
    assert str(unknown.value) == "no branch withdrawal 999999"


def test_the_edges_all_the_room_the_approval_limit_and_an_account_under_its_minimum(
    app: Flask,
) -> None:
    """All the room above the minimum may go; the approval limit itself is paid at once;
    an account already under its minimum can give nothing. (Mutation testing, issue 23.)"""
    officer = _staff("officer@sacco.test", "loan_officer")
    limit = Decimal(app.config["SETTINGS"].BRANCH_WITHDRAWAL_APPROVAL_LIMIT)
    member_id, account_id = _member_with_savings(str(limit + 100))

    # The limit itself is paid at once, and it is all the room there is.
    assert _withdraw(officer, member_id, account_id, str(limit)).status == "paid"
    assert _balance(account_id) == Decimal("100.00")  # the minimum stays
    journal_post(
        kind="fee",
        lines=[
            debit(db.session.get(Account, account_id), Decimal("40")),
            credit(gl_account("GL-INCOME-FEES"), Decimal("40")),
        ],
        value_date=TODAY,
    )
    db.session.commit()
    with pytest.raises(BranchWithdrawalError) as refused:
        _withdraw(officer, member_id, account_id, "1")
    assert str(refused.value) == (
        "at most KES 0.00 can be withdrawn: KES 100.00 stays in the account"
    )


@pytest.mark.parametrize(
    ("status", "refused"),
    [("active", False), ("dormant", False), ("suspended", True), ("exited", True)],
)
def test_only_an_active_or_dormant_member_may_withdraw_at_the_branch(
    app: Flask, status: str, refused: bool
) -> None:
    """A dormant member coming back to the branch is paid; a suspended or exited one is
    refused by number. (Mutation testing, issue 23.)"""
    officer = _staff("officer@sacco.test", "loan_officer")
    member_id, account_id = _member_with_savings("1000")
    db.session.get(Member, member_id).status = status
    db.session.commit()
    values = dict(
        account_id=account_id, amount="100", method="cash", reference="V-1", staff=officer
    )

    if refused:
        with pytest.raises(BranchWithdrawalError) as refusal:
            branch_withdrawal_record(member_id=member_id, today=TODAY, **values)  # type: ignore[arg-type]
        assert str(refusal.value) == f"no member {member_id} who may withdraw"
        assert _balance(account_id) == Decimal("1000.00")
    else:
        assert branch_withdrawal_record(member_id=member_id, today=TODAY, **values).status == "paid"  # type: ignore[arg-type]
    with pytest.raises(BranchWithdrawalError) as nobody:
        branch_withdrawal_record(member_id=999999, today=TODAY, **values)  # type: ignore[arg-type]
    assert str(nobody.value) == "no member 999999 who may withdraw"


def test_a_decision_waits_for_the_member_s_other_money_holding_none_of_it(
    app: Flask, pg: None
) -> None:
    """The member first, as every money path: a manager's decision made while the member's
    M-PESA withdrawal is being decided waits for it, holding nothing of the member's
    meanwhile, then pays. (Mutation testing, issue 23.)"""
    officer = _staff("officer@sacco.test", "loan_officer")
    manager = _staff("manager@sacco.test", "branch_manager")
    member_id, account_id = _member_with_savings("200000")
    held = _withdraw(officer, member_id, account_id, "60000", "bank", "EFT 1")
    held_id, manager_id = held.id, manager.id
    db.session.remove()

    def decide() -> str:
        staff = db.session.get(StaffUser, manager_id)
        assert staff is not None
        return branch_withdrawal_decide(
            withdrawal_id=held_id, staff=staff, approve=True, today=TODAY
        ).status

    with row_locked(app, "members", member_id):
        worker = Worker(app, decide)
        worker.start()
        wait_until_blocked()
        assert_not_held("branch_withdrawals", held_id)
    assert worker.outcome() == "paid"
    assert gl_account("GL-BANK").balance == Decimal("-60000.00")
