"""A member's own accounts as staff read them on the member page: each product's account,
its number (what the member pays to and sees on USSD) and its balance."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import case, select

from app.extensions import db
from app.models import Account, AccountProduct, Member

# The member's money, credit-normal (the journal holds it negative): deposits, withdrawable
# savings, share capital. Loans have their own block on the page.
MONEY_KINDS = ("savings", "member_savings", "share_capital")
# Deposits first (the base of the loan limit), then savings, then shares.
_ORDER = {"savings": 0, "member_savings": 1, "share_capital": 2}


@dataclass(frozen=True)
class MemberAccount:
    account_id: int
    code: str  # the ledger code (SAV-M000123)
    product: str  # the product's name, or the ledger kind for an account with none
    number: str  # the account number: member number and the product's suffix
    balance: Decimal  # as the member reads it: positive
    status: str
    withdrawable: bool


def member_accounts(*, member_id: int) -> list[MemberAccount]:
    """Every deposits, savings and share account of the member, one query."""
    member_no = db.session.scalar(select(Member.member_no).where(Member.id == member_id)) or ""
    rows = db.session.execute(
        select(Account, AccountProduct)
        .outerjoin(AccountProduct, AccountProduct.id == Account.product_id)
        .where(Account.member_id == member_id, Account.kind.in_(MONEY_KINDS))
        .order_by(case(_ORDER, value=Account.kind), Account.id)
    ).all()
    return [
        MemberAccount(
            account_id=account.id,
            code=account.code,
            product=product.name if product is not None else account.kind.replace("_", " "),
            number=f"{member_no}{product.ref_suffix}" if product is not None else account.code,
            balance=-account.balance,
            status=account.status,
            withdrawable=bool(product is not None and product.withdrawable),
        )
        for account, product in rows
    ]
