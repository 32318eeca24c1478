"""A member's mini statement: their latest movements on savings and loan accounts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import case, func, select

from app.extensions import db
from app.models import Account, JournalEntry, JournalLine
from app.selectors.members import LOAN_RECEIVABLE_KINDS

STATEMENT_KINDS = ("savings", *LOAN_RECEIVABLE_KINDS)


@dataclass(frozen=True)
class StatementLine:
    value_date: date
    account: str  # "savings" or "loan" (principal, interest, fees, penalties together)
    kind: str  # the journal entry's kind: deposit, repayment, disbursement, ...
    # How the balance the member sees moved: savings +500 is a deposit; loan +10,000 is
    # money lent (more owed), loan -1,000 a repayment.
    amount: Decimal
    entry_id: int


def member_statement(*, member_id: int, limit: int = 5) -> list[StatementLine]:
    """The newest `limit` movements, newest first: one line per journal entry and account
    group, so a repayment split over interest and principal reads as one loan line."""
    on_member = (Account.member_id == member_id) & Account.kind.in_(STATEMENT_KINDS)
    latest = (
        select(JournalEntry.id)
        .join(JournalLine, JournalLine.entry_id == JournalEntry.id)
        .join(Account, Account.id == JournalLine.account_id)
        .where(on_member)
        .group_by(JournalEntry.id, JournalEntry.value_date)
        .order_by(JournalEntry.value_date.desc(), JournalEntry.id.desc())
        .limit(limit)
        .subquery()
    )
    group = case((Account.kind == "savings", "savings"), else_="loan")
    rows = db.session.execute(
        select(
            JournalEntry.id,
            JournalEntry.value_date,
            JournalEntry.kind,
            group,
            func.sum(JournalLine.amount),
        )
        .join(JournalLine, JournalLine.entry_id == JournalEntry.id)
        .join(Account, Account.id == JournalLine.account_id)
        .where(on_member, JournalEntry.id.in_(select(latest.c.id)))
        .group_by(JournalEntry.id, JournalEntry.value_date, JournalEntry.kind, group)
        .order_by(JournalEntry.value_date.desc(), JournalEntry.id.desc(), group.desc())
    ).all()
    lines = [
        StatementLine(
            value_date=value_date,
            account=account,
            kind=kind,
            # Credit-normal savings read with the sign flipped (Account.display_balance).
            amount=-total if account == "savings" else total,
            entry_id=entry_id,
        )
        for entry_id, value_date, kind, account, total in rows
        if total  # a move between two of the member's loan accounts nets to nothing
    ]
    return lines[:limit]
