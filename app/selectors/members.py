"""What a member has: balances read from the ledger's cached balances."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select

from app.extensions import db
from app.models import Account
from app.money import ZERO

LOAN_RECEIVABLE_KINDS = ("loan_principal", "loan_interest", "loan_fees", "loan_penalty")


@dataclass(frozen=True)
class MemberBalances:
    savings: Decimal
    share_capital: Decimal
    loan_principal: Decimal
    loan_total: Decimal  # everything owed: principal, interest, fees, penalties


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
    )
