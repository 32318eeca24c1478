"""Account products and the member accounts that belong to them (SPEC "Savings, shares
and dividends").

Every member has deposits (the base of their loan limit, refunded only on exit) and share
capital from registration; other accounts (withdrawable savings) open when first used.
An account's number is the member number and the product's suffix ("M000123S"): what the
member types as the Paybill account, and what USSD and statements show.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.errors import SaccoError
from app.extensions import db
from app.models import Account, AccountProduct, Member
from app.services.audit import audit_record
from app.services.ledger import MEMBER_ACCOUNTS, account_get_or_create

# The products every SACCO starts with. Deposits and shares keep the ledger codes members
# have had since the first release (SAV-M000123, SHR-M000123); a withdrawable savings
# account is ORD-M000123, paid by Paybill to account M000123S.
DEFAULT_PRODUCTS: dict[str, dict[str, Any]] = {
    "DEP": {
        "name": "Deposits",
        "name_sw": "Akiba",
        "kind": "deposits",
        "ref_suffix": "",
        "withdrawable": False,
    },
    "SHR": {
        "name": "Share capital",
        "name_sw": "Hisa",
        "kind": "shares",
        "ref_suffix": "SH",
        "withdrawable": False,
    },
    "ORD": {
        "name": "Ordinary savings",
        "name_sw": "Akiba ya kawaida",
        "kind": "savings",
        "ref_suffix": "S",
        "withdrawable": True,
        "interest_rate": Decimal("3"),
        "interest_period": "monthly",
        "min_balance": Decimal("100"),
        "daily_withdrawal_limit": Decimal("70000"),
        "withdrawal_fee": Decimal("30"),
    },
    # One account per deposit (FIX-M000123-1, -2, ...), opened from savings, never paid
    # into by Paybill; its interest is paid at maturity (app/services/savings/fixed.py).
    "FIX": {
        "name": "Fixed deposit",
        "name_sw": "Amana ya muda maalum",
        "kind": "fixed",
        "ref_suffix": "F",
        "withdrawable": False,
        "interest_rate": Decimal("8"),
        "term_months": 12,
        "break_penalty": Decimal("50"),
    },
    "TGT": {
        "name": "Target savings",
        "name_sw": "Akiba ya lengo",
        "kind": "target",
        "ref_suffix": "T",
        "withdrawable": False,
        "interest_rate": Decimal("4"),
        "interest_period": "monthly",
    },
}
# The product of the accounts a member gets at registration, by ledger kind.
REGISTRATION_PRODUCTS = {"savings": "DEP", "share_capital": "SHR"}


class ProductError(SaccoError):
    """A product or account request that cannot be done; nothing was written."""


def account_product(code: str) -> AccountProduct:
    """The product with this code; a default one is created the first time it is asked for
    (an empty database, a test), safely when two callers race."""
    found = db.session.scalar(select(AccountProduct).where(AccountProduct.code == code))
    if found is not None:
        return found
    if code not in DEFAULT_PRODUCTS:
        raise ProductError(f"no account product {code!r}")
    product = AccountProduct(code=code, **DEFAULT_PRODUCTS[code])
    try:
        with db.session.begin_nested():
            db.session.add(product)
    except IntegrityError:
        found = db.session.scalar(select(AccountProduct).where(AccountProduct.code == code))
        if found is None:
            raise
        return found
    return product


def products_ensure() -> list[AccountProduct]:
    """The default products, created where missing (demo data, `sacco` setup)."""
    return [account_product(code) for code in DEFAULT_PRODUCTS]


def account_code(product: AccountProduct, member_no: str) -> str:
    """The ledger code of a member's account of this product."""
    for kind, code in REGISTRATION_PRODUCTS.items():
        if code == product.code:
            return f"{MEMBER_ACCOUNTS[kind][0]}-{member_no}"
    return f"{product.code}-{member_no}"


def account_number(member_no: str, product: AccountProduct) -> str:
    """What the member sees and pays to: member number and the product's suffix."""
    return f"{member_no}{product.ref_suffix}"


def member_product_account(member: Member, product: AccountProduct) -> Account:
    """The member's account of this product, opened on first use."""
    if not product.active:
        found = db.session.scalar(
            select(Account).where(Account.code == account_code(product, member.member_no or ""))
        )
        if found is None:
            raise ProductError(f"{product.name} is closed to new accounts")
        return found
    account = account_get_or_create(
        code=account_code(product, member.member_no or ""),
        kind=product.ledger_kind,
        name=f"{product.name} {member.member_no}",
        member_id=member.id,
    )
    if account.product_id is None:
        account.product_id = product.id
    return account


@dataclass(frozen=True)
class AccountRef:
    """A Paybill account reference read as a member's account."""

    member: Member
    product: AccountProduct


def account_by_number(reference: str) -> AccountRef | None:
    """The member and product an account number names ("M000123S"), or None: read by the
    one parser of typed accounts, payments.c2b.match_account (a loan number is None)."""
    # payments imports this module (through members), so the import waits for the call.
    from app.services.payments.c2b import match_account

    match = match_account(reference)
    if match.member is None or match.product is None or match.loan is not None:
        return None
    return AccountRef(member=match.member, product=match.product)


PRODUCT_FIELDS = (
    "name",
    "name_sw",
    "interest_rate",
    "interest_period",
    "min_balance",
    "daily_withdrawal_limit",
    "withdrawal_fee",
    "term_months",
    "break_penalty",
    "active",
)


def product_update(*, product_id: int, actor: str, **values: Any) -> AccountProduct:
    """Staff change what a product allows (audited). Kind, code and suffix never change:
    accounts and Paybill references depend on them."""
    product = db.session.get(AccountProduct, product_id)
    if product is None:
        raise ProductError(f"no account product {product_id}")
    unknown = set(values) - set(PRODUCT_FIELDS)
    if unknown:
        raise ProductError(f"cannot change {', '.join(sorted(unknown))}")
    before = {name: str(getattr(product, name)) for name in values}
    for name, value in values.items():
        setattr(product, name, value)
    audit_record(
        actor=actor,
        action="account_product.update",
        object_type="account_product",
        object_id=product.code,
        before=before,
        after={name: str(value) for name, value in values.items()},
    )
    db.session.commit()
    return product
