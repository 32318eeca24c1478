"""Money reaching a loan: a repayment allocated penalty -> fees -> interest -> principal,
a recovery on a written-off loan, and anything beyond the debt to savings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from sqlalchemy import select

from app.extensions import db
from app.models import Account, Loan, Member, StaffUser
from app.money import ZERO
from app.selectors.guarantees import member_deposits
from app.selectors.loans import LIVE_STATUSES, current_installments, loan_debt
from app.selectors.members import member_balances
from app.services.ledger import (
    Line,
    credit,
    debit,
    gl_account,
    journal_post,
    member_account,
    money_in_account,
)
from app.services.loans._common import (
    COMPONENTS,
    LoanError,
    _actor_name,
    _amount,
    _get_loan,
    _lock_member,
    _transition,
    loan_account,
)
from app.services.notifications import notify_deposit_received, notify_repayment_received

log = logging.getLogger(__name__)


@dataclass
class RepaymentResult:
    """Where the money went: what the caller does not know already (not the loan or the
    amount it passed)."""

    allocated: dict[str, Decimal] = field(default_factory=dict)
    to_savings: Decimal = ZERO
    recovered: Decimal = ZERO  # on a written-off loan
    balance_left: Decimal = ZERO
    closed: bool = False
    entry_id: int | None = None


def _hold_free_savings(loan_id: int, value: Decimal) -> None:
    """Under the member's lock: `value` of their savings is not held by their guarantees."""
    member_id = db.session.scalar(select(Loan.member_id).where(Loan.id == loan_id))
    if member_id is None:
        raise LoanError(f"no loan {loan_id}")
    _lock_member(member_id)
    held = member_deposits(member_id)
    free = held.free_of_guarantees
    # More than the savings hold at all is refused as before (the debt or the balance);
    # this refusal is for money that is there but pledged.
    if free < value <= held.deposits:
        raise LoanError(
            f"only KES {free:,.2f} of the savings is free: the rest secures loans the member "
            "guarantees"
        )


def _own_savings(member: Member, account_id: int | None) -> Account:
    account = db.session.get(Account, account_id) if account_id is not None else None
    if account is None or account.member_id != member.id or account.kind != "member_savings":
        raise LoanError(f"account {account_id} is not a savings account of {member.member_no}")
    return account


def loan_repay(
    *,
    loan_id: int,
    amount: object,
    reference: str,
    value_date: date,
    source: str = "mpesa",
    actor: StaffUser | str | None = None,
    commit: bool = True,
    source_account_id: int | None = None,
) -> RepaymentResult:
    """Apply a payment: penalty -> fees -> interest -> principal, oldest installment first.

    Future installments are paid in order when money remains (prepayment); anything beyond
    the whole debt goes to savings. On a written-off loan the money is a recovery (income,
    up to what was written off); a closed loan takes nothing, so it goes to savings: money
    is never lost. `reference` (the M-PESA receipt) makes the posting idempotent.
    """
    value = _amount(amount)
    if source == "savings":
        # Savings are the member's deposits: only what no guarantee of theirs holds may
        # pay (their own loan's share is freed by the payment itself). Member first, then
        # loan, as every path that takes both.
        _hold_free_savings(loan_id, value)
    loan = _get_loan(loan_id)
    member = db.session.get(Member, loan.member_id)
    assert member is not None  # a loan's member is a foreign key
    # mpesa: fresh money through M-PESA; suspense: M-PESA money staff assign; savings:
    # the member's deposits; member_savings: their withdrawable savings account
    # `source_account_id` (a standing order; the caller holds the member's lock).
    if source == "savings":
        source_account = member_account(member, "savings")
    elif source == "member_savings":
        source_account = _own_savings(member, source_account_id)
    else:
        source_account = money_in_account(source)
    result = RepaymentResult()
    # A savepoint: a refused or duplicate posting leaves the schedule as it was, so a
    # caller that carries on (or commits) after DuplicatePosting pays nothing twice.
    with db.session.begin_nested():
        remaining = value
        lines: list[Line] = [debit(source_account, value)]
        if loan.status in LIVE_STATUSES:
            paid = {c: ZERO for c in COMPONENTS}
            # `fresh` as in loan_restructure: _get_loan's lock re-read the rows already.
            for row in current_installments(loan.id, fresh=True):  # pragma: no mutate
                for component in COMPONENTS:
                    owed = getattr(row, f"{component}_due") - getattr(row, f"{component}_paid")
                    take = min(owed, remaining)
                    if take > 0:
                        setattr(row, f"{component}_paid", getattr(row, f"{component}_paid") + take)
                        paid[component] += take
                        remaining -= take
                if row.outstanding == 0 and row.paid_on is None:
                    row.paid_on = value_date
                if remaining == 0:
                    break
            for component in COMPONENTS:
                if paid[component] > 0:
                    lines.append(credit(loan_account(loan, component), paid[component]))
            result.allocated = {c: v for c, v in paid.items() if v > 0}
        elif loan.status == "written_off":
            # A recovery: it reduces the written-off debt as income, never the member's
            # savings, which they could withdraw again.
            recovered = min(remaining, loan.written_off_amount - loan.recovered_amount)
            if recovered > 0:
                lines.append(credit(gl_account("GL-INCOME-RECOVERY"), recovered))
                loan.recovered_amount += recovered
                result.recovered = recovered
                remaining -= recovered
        if remaining > 0:
            if source in ("savings", "member_savings"):
                # Paying from savings more than is owed would just move money back.
                owed = value - remaining
                raise LoanError(f"loan {loan.loan_no} owes only KES {owed:,.2f}")
            lines.append(credit(member_account(member, "savings"), remaining))
            result.to_savings = remaining
        entry = journal_post(
            kind="repayment",
            lines=lines,
            value_date=value_date,
            description=f"Repayment {loan.loan_no} {reference}",
            idempotency_key=f"repay:{reference}",
            actor=_actor_name(actor),
            member_id=loan.member_id,
            loan_id=loan.id,
        )
    result.entry_id = entry.id
    debt = loan_debt(loan_id=loan.id)
    result.balance_left = debt.total
    if loan.status == "written_off":
        result.balance_left = loan.written_off_amount - loan.recovered_amount
    if loan.status in LIVE_STATUSES and debt.total == 0:
        _transition(loan, "close", actor, f"paid in full by {reference}")
        loan.closed_on = value_date
        loan.days_past_due = 0
        loan.aging_bucket = "current"
        result.closed = True
    # A compromise agreement in force counts what reached the loan against its schedule,
    # and its completion settles the loan. In its own savepoint, and never raising: the
    # member has paid, and a fault in the agreement's bookkeeping must not undo that
    # (it is logged; staff see the agreement short of the payment).
    reached_loan = sum(result.allocated.values(), ZERO) + result.recovered
    if reached_loan > 0:
        from app.services.agreements import agreement_allocate  # it imports this module

        try:
            with db.session.begin_nested():
                allocation = agreement_allocate(
                    loan_id=loan.id, amount=reached_loan, value_date=value_date, actor=actor
                )
        # Not mutated: only a fault inside agreement_allocate reaches the log line, and a
        # test could make one only by patching our own service.
        except Exception:  # noqa: BLE001 - see above  # pragma: no mutate block
            log.exception("agreement allocation failed for %s %s", loan.loan_no, reference)
        else:
            if allocation is not None and allocation.completed and loan.status == "closed":
                result.closed, result.balance_left = True, ZERO
    if result.allocated or result.recovered:
        notify_repayment_received(
            member=member,
            amount=value,
            loan_no=loan.loan_no or "",
            balance_left=result.balance_left,
            receipt=reference,
        )
    elif result.to_savings:
        notify_deposit_received(
            member=member,
            amount=value,
            savings_balance=member_balances(member_id=member.id).savings,
            receipt=reference,
        )
    if commit:
        db.session.commit()
    return result
