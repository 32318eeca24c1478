"""Money in to one of a member's accounts: a Paybill payment to "M000123S", an STK "Save"
prompt, suspense money staff place. One function for every channel, so an account of any
product is credited the same way (SPEC "Savings, shares and dividends").

Deposits keep their own service (member_deposit: its SMS states the deposits balance the
loan limit is built on); withdrawable savings and share capital are credited here from
the same source account. The idempotency key is the receipt's, whatever the account
("deposit:<receipt>", "shares:<receipt>" as member_buy_shares keys a purchase), so a
receipt is posted once.
"""

from __future__ import annotations

from datetime import date

from app.extensions import db
from app.models import AccountProduct, Member
from app.money import MoneyError, money_input
from app.services.ledger import credit, debit, journal_post, money_in_account
from app.services.members import member_deposit
from app.services.notifications import notify_account_deposit
from app.services.savings.products import ProductError, account_number, member_product_account


def account_deposit(
    *,
    member_id: int,
    product: AccountProduct,
    amount: object,
    reference: str,
    value_date: date,
    source: str = "mpesa",
    actor: str = "system",
) -> int:
    """Credit the member's account of `product` with money from `source` ("mpesa": the
    M-PESA clearing account; "suspense": money staff assign). Opens a savings account on
    first use; a closed product with no account is refused (ProductError, nothing written).
    Returns the journal entry id; the caller commits."""
    try:
        value = money_input(amount)
    except MoneyError as exc:
        raise ProductError(str(exc)) from None
    if product.kind == "deposits":
        return member_deposit(
            member_id=member_id,
            amount=value,
            reference=reference,
            value_date=value_date,
            actor=actor,
            source=source,
            commit=False,
        )
    member = db.session.get(Member, member_id)
    if member is None:
        raise ProductError(f"no member {member_id}")
    account = member_product_account(member, product)
    shares = product.kind == "shares"
    number = account_number(member.member_no or "", product)
    entry = journal_post(
        kind="share_purchase" if shares else "deposit",
        lines=[debit(money_in_account(source), value), credit(account, value)],
        value_date=value_date,
        description=f"{'Shares' if shares else 'Deposit'} {number} {reference}",
        idempotency_key=f"{'shares' if shares else 'deposit'}:{reference}",
        actor=actor,
        member_id=member.id,
    )
    notify_account_deposit(
        member=member,
        amount=value,
        account=number,
        balance=-account.balance,
        receipt=reference,
    )
    return entry.id
