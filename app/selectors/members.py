"""What a member has: balances read from the ledger's cached balances."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select

from app.extensions import db
from app.models import (
    Account,
    AuditLog,
    Installment,
    Loan,
    Payment,
    PromiseToPay,
    SmsMessage,
    UssdEvent,
)
from app.money import ZERO

LOAN_RECEIVABLE_KINDS = ("loan_principal", "loan_interest", "loan_fees", "loan_penalty")
# Loans that take a repayment, as payments_request_stk accepts them: live ones
# (selectors.loans.LIVE_STATUSES, which imports this module) and written-off ones.
PAYABLE_STATUSES = ("active", "restructured", "written_off")

_Row = TypeVar("_Row")


@dataclass(frozen=True)
class MemberBalances:
    savings: Decimal  # deposits (ledger kind "savings"): non-withdrawable, the loan base
    share_capital: Decimal
    loan_principal: Decimal
    loan_total: Decimal  # everything owed: principal, interest, fees, penalties
    # Withdrawable savings, every such account together (ledger kind "member_savings").
    member_savings: Decimal = ZERO


def member_balances(*, member_id: int) -> MemberBalances:
    rows = db.session.execute(
        select(Account.kind, func.sum(Account.balance))
        .where(Account.member_id == member_id)
        .group_by(Account.kind)
    ).all()
    by_kind = {kind: total or ZERO for kind, total in rows}
    return MemberBalances(
        savings=-by_kind.get("savings", ZERO),
        share_capital=-by_kind.get("share_capital", ZERO),
        loan_principal=by_kind.get("loan_principal", ZERO),
        loan_total=sum((by_kind.get(k, ZERO) for k in LOAN_RECEIVABLE_KINDS), ZERO),
        member_savings=-by_kind.get("member_savings", ZERO),
    )


# -- the member page -----------------------------------------------------------------------
# Each block of the page reads the newest `limit` rows and says whether there are more, so
# a member with years of history opens as fast as a new one; the page links to the full,
# paginated list for the rest.

PAGE_BLOCK = 20


@dataclass(frozen=True)
class Capped(Generic[_Row]):
    rows: list[_Row]
    more: bool  # rows beyond `limit` exist: the page shows a link to the full list


def _capped(stmt: Select[Any], limit: int) -> Capped[Any]:
    rows = list(db.session.scalars(stmt.limit(limit + 1)))
    return Capped(rows=rows[:limit], more=len(rows) > limit)


@dataclass(frozen=True)
class MemberLoan:
    loan: Loan
    installments: list[Installment]  # the live schedule
    owed: Decimal  # everything still owed on the schedule
    arrears: Decimal  # what fell due before `as_of` and is unpaid
    overdue_installments: int


def member_loans(*, member_id: int, as_of: date, limit: int = PAGE_BLOCK) -> Capped[MemberLoan]:
    """The member's newest loans with their live schedules and what is in arrears on
    `as_of`. Schedules come in one query for all the loans shown, not one per loan."""
    found = _capped(select(Loan).where(Loan.member_id == member_id).order_by(Loan.id.desc()), limit)
    ids = [loan.id for loan in found.rows]
    schedules: dict[int, list[Installment]] = {loan_id: [] for loan_id in ids}
    if ids:
        for row in db.session.scalars(
            select(Installment)
            .where(Installment.loan_id.in_(ids), Installment.superseded.is_(False))
            .order_by(Installment.loan_id, Installment.number)
        ):
            schedules[row.loan_id].append(row)
    loans = []
    for loan in found.rows:
        rows = schedules[loan.id]
        late = [r for r in rows if r.due_date < as_of and r.outstanding > 0]
        loans.append(
            MemberLoan(
                loan=loan,
                installments=rows,
                owed=sum((r.outstanding for r in rows), ZERO) if loan.disbursed_on else ZERO,
                arrears=sum((r.outstanding for r in late), ZERO),
                overdue_installments=len(late),
            )
        )
    return Capped(rows=loans, more=found.more)


def member_open_loans(*, member_id: int) -> list[Loan]:
    """Loans that take a repayment (what the "request payment" button offers). A member
    holds a handful at most; the cap only guards the page."""
    return list(
        db.session.scalars(
            select(Loan)
            .where(Loan.member_id == member_id, Loan.status.in_(PAYABLE_STATUSES))
            .order_by(Loan.id)
            .limit(PAGE_BLOCK)
        )
    )


def member_payments(*, member_id: int, limit: int = PAGE_BLOCK) -> Capped[Payment]:
    return _capped(
        select(Payment).where(Payment.member_id == member_id).order_by(Payment.id.desc()), limit
    )


def member_sms(*, member_id: int, limit: int = PAGE_BLOCK) -> Capped[SmsMessage]:
    return _capped(
        select(SmsMessage).where(SmsMessage.member_id == member_id).order_by(SmsMessage.id.desc()),
        limit,
    )


def member_promises(*, member_id: int, limit: int = PAGE_BLOCK) -> Capped[PromiseToPay]:
    return _capped(
        select(PromiseToPay)
        .where(PromiseToPay.member_id == member_id)
        .order_by(PromiseToPay.id.desc()),
        limit,
    )


def member_ussd_sessions(*, phone: str, limit: int = PAGE_BLOCK) -> Capped[UssdEvent]:
    """USSD sessions from the member's phone. Africa's Talking sends the number as
    +2547...; the stored member phone is 2547..., so both forms are matched."""
    return _capped(
        select(UssdEvent)
        .where(UssdEvent.phone.in_((phone, f"+{phone}")))
        .order_by(UssdEvent.id.desc()),
        limit,
    )


def member_audit(
    *, member_no: str, loan_nos: Sequence[str], limit: int = PAGE_BLOCK
) -> Capped[AuditLog]:
    """Audit rows about the member or the loans shown on their page (the log names a
    member by number and a loan by loan number; object_id is indexed)."""
    return _capped(
        select(AuditLog)
        .where(AuditLog.object_id.in_([member_no, *loan_nos]))
        .order_by(AuditLog.id.desc()),
        limit,
    )
