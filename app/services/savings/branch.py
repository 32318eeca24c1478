"""Withdrawals paid at the branch, in cash or by bank transfer (SPEC "Savings": staff-
recorded withdrawals with maker-checker above a limit).

The same account rules as a withdrawal to M-PESA (the account is the member's, its product
withdrawable and open; the product's minimum balance stays), under the member's lock. Up to
BRANCH_WITHDRAWAL_APPROVAL_LIMIT the money is paid at once; above it the request waits for
a branch manager who did not enter it, and its money is held meanwhile (moved to
GL-WITHDRAWALS-PENDING), so nothing else can spend it; a rejection puts it back.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from flask import current_app

from app.errors import SaccoError
from app.extensions import db
from app.models import Account, BranchWithdrawal, Member, StaffUser
from app.models.types import utcnow
from app.money import MoneyError, money_input
from app.services.audit import audit_record
from app.services.ledger import credit, debit, gl_account, journal_post
from app.services.locking import lock_row
from app.services.permissions import permission_require
from app.services.savings.withdrawals import WithdrawalError, withdrawable_account

CASH_BOOKS = {"bank": "GL-BANK", "cash": "GL-CASH"}


class BranchWithdrawalError(SaccoError):
    """A branch withdrawal that cannot be recorded or decided; nothing was written."""


def approval_limit() -> Decimal:
    return Decimal(current_app.config["SETTINGS"].BRANCH_WITHDRAWAL_APPROVAL_LIMIT)


def branch_withdrawal_record(
    *,
    member_id: int,
    account_id: int,
    amount: object,
    method: str,
    reference: str,
    staff: StaffUser,
    today: date,
) -> BranchWithdrawal:
    """Pay (or, above the limit, hold for approval) a withdrawal at the branch."""
    permission_require(staff, "branch_withdrawal.record")
    try:
        value = money_input(amount)
    except MoneyError as exc:
        raise BranchWithdrawalError(str(exc)) from None
    if method not in CASH_BOOKS:
        raise BranchWithdrawalError("paid in cash or by bank transfer")
    if not reference.strip():
        raise BranchWithdrawalError("the voucher or bank reference is needed")
    member = lock_row(Member, member_id)
    if member is None or member.status not in ("active", "dormant"):
        db.session.rollback()
        raise BranchWithdrawalError(f"no member {member_id} who may withdraw")
    try:
        account, product = withdrawable_account(member, account_id)
    except WithdrawalError as exc:
        db.session.rollback()
        raise BranchWithdrawalError(str(exc)) from None
    room = account.display_balance - product.min_balance
    if value > room:
        db.session.rollback()
        raise BranchWithdrawalError(
            f"at most KES {max(room, Decimal(0)):,.2f} can be withdrawn: "
            f"KES {product.min_balance:,.2f} stays in the account"
        )
    needs_approval = value > approval_limit()
    row = BranchWithdrawal(
        member_id=member.id,
        account_id=account.id,
        amount=value,
        method=method,
        reference=reference.strip()[:60],
        status="pending" if needs_approval else "paid",
        requested_by_id=staff.id,
    )
    db.session.add(row)
    db.session.flush()
    # Above the limit the money is held, not paid: out of the account (nothing else can
    # spend it) into the pending account, until a second person decides.
    to = gl_account("GL-WITHDRAWALS-PENDING" if needs_approval else CASH_BOOKS[method])
    journal_post(
        kind="branch_withdrawal",
        lines=[debit(account, value), credit(to, value)],
        value_date=today,
        description=f"Withdrawal {account.code} by {method} {row.reference}",
        idempotency_key=f"branch-withdrawal:{row.id}",
        actor=staff.email,
        member_id=member.id,
    )
    if not needs_approval:
        row.decided_by_id = staff.id
        row.decided_at = utcnow()
    audit_record(
        actor=staff.email,
        action="branch_withdrawal.record",
        object_type="member",
        object_id=member.member_no,
        after={"withdrawal": row.id, "amount": str(value), "method": method, "status": row.status},
    )
    db.session.commit()
    return row


def branch_withdrawal_decide(
    *, withdrawal_id: int, staff: StaffUser, approve: bool, today: date, reason: str | None = None
) -> BranchWithdrawal:
    """A branch manager pays (approve) or refuses (with a reason; the money goes back) a
    held withdrawal someone else entered."""
    permission_require(staff, "branch_withdrawal.approve")
    found = db.session.get(BranchWithdrawal, withdrawal_id)
    if found is None:
        raise BranchWithdrawalError(f"no branch withdrawal {withdrawal_id}")
    lock_row(Member, found.member_id)
    row = lock_row(BranchWithdrawal, withdrawal_id)
    assert row is not None
    if row.status != "pending":
        db.session.rollback()
        raise BranchWithdrawalError(f"withdrawal {withdrawal_id} is {row.status} already")
    if row.requested_by_id == staff.id:
        db.session.rollback()
        raise BranchWithdrawalError("the withdrawal needs a second person: you entered it")
    if not approve and not (reason or "").strip():
        db.session.rollback()
        raise BranchWithdrawalError("say why the withdrawal is refused")
    pending = gl_account("GL-WITHDRAWALS-PENDING")
    if approve:
        lines = [debit(pending, row.amount), credit(gl_account(CASH_BOOKS[row.method]), row.amount)]
    else:
        account = db.session.get(Account, row.account_id)
        assert account is not None
        lines = [debit(pending, row.amount), credit(account, row.amount)]
    journal_post(
        kind="branch_withdrawal" if approve else "branch_withdrawal_return",
        lines=lines,
        value_date=today,
        description=f"Withdrawal {row.id} {'paid' if approve else 'refused: back to savings'}",
        idempotency_key=f"branch-withdrawal-decided:{row.id}",
        actor=staff.email,
        member_id=row.member_id,
    )
    row.status = "paid" if approve else "rejected"
    row.reason = reason.strip() if reason and not approve else None
    row.decided_by_id = staff.id
    row.decided_at = utcnow()
    audit_record(
        actor=staff.email,
        action="branch_withdrawal.approve" if approve else "branch_withdrawal.reject",
        object_type="branch_withdrawal",
        object_id=row.id,
        before={"status": "pending"},
        after={"status": row.status, "reason": row.reason},
    )
    db.session.commit()
    return row
