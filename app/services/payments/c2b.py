"""C2B Paybill: members pay with an account number (the member number and a product's
suffix: "M000123" deposits, "M000123S" withdrawable savings, "M000123SH" share capital) or
a loan number (repayment) as the account. Validation may refuse an unknown account;
confirmation never refuses (the money has moved): what matches nobody goes to suspense for
staff to assign.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from app.clock import business_today
from app.extensions import db
from app.integrations.daraja import daraja_client
from app.models import Account, AccountProduct, Loan, Member, Payment, StaffUser
from app.models.types import utcnow
from app.money import is_whole_shillings
from app.phone import PhoneError, normalise_phone
from app.schemas.mpesa import kenyan_time
from app.selectors.loans import LIVE_STATUSES
from app.services.audit import audit_record
from app.services.loans import loan_repay
from app.services.locking import lock_row
from app.services.payments.common import (
    PaymentError,
    late_note,
    mpesa_value_date,
    payment_record,
    settings,
    suspense_post,
)
from app.services.permissions import permission_require
from app.services.savings.money_in import account_deposit
from app.services.savings.products import (
    DEFAULT_PRODUCTS,
    ProductError,
    account_number,
    account_product,
)
from app.services.webhooks import webhook_payment_received

# A member or loan number (leading zeros optional) and, for a member, a product's suffix.
_ACCOUNT = re.compile(r"^([ML])0*(\d{1,9})([A-Z]{0,3})$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
_MASK = re.compile(r"^(\d+)\*+(\d+)$")


def payments_register_urls() -> dict[str, Any]:
    """Register our Paybill validation and confirmation URLs with Daraja (DarajaError if
    refused). Safe to repeat: a registration only says where to call."""
    s = settings()
    return daraja_client().register_urls(
        confirmation_url=s.callback_url("c2b/confirmation"),
        validation_url=s.callback_url("c2b/validation"),
    )


@dataclass(frozen=True)
class AccountMatch:
    """What a typed account means: a member's account of `product`, or a member's loan.
    All None when it names nobody."""

    member: Member | None = None
    loan: Loan | None = None
    product: AccountProduct | None = None


def _product_by_suffix(suffix: str) -> AccountProduct | None:
    """The product whose Paybill suffix this is ("" deposits); a default product is
    created the first time its suffix is used (an empty database, a test)."""
    found = db.session.scalar(select(AccountProduct).where(AccountProduct.ref_suffix == suffix))
    if found is not None:
        return found
    for code, defaults in DEFAULT_PRODUCTS.items():
        if defaults["ref_suffix"] == suffix:
            return account_product(code)
    return None


def match_account(bill_ref: str) -> AccountMatch:
    """The one reading of an account typed on a phone (Paybill, suspense assignment):
    trimmed, upper-cased, spaces and dashes ignored, leading zeros optional (M123S =
    M000123S). "M000123" is the member's deposits, "M000123" and a product's suffix that
    product's account, "L000045" a loan; a member's own phone number works as their member
    number (deposits)."""
    ref = re.sub(r"[\s\-_./]", "", bill_ref or "").upper()
    found = _ACCOUNT.match(ref)
    if found:
        letter, digits, suffix = found.groups()
        number = f"{letter}{int(digits):06d}"
        if letter == "L":
            if suffix:
                return AccountMatch()
            loan = db.session.scalar(select(Loan).where(Loan.loan_no == number))
            return AccountMatch(loan.member, loan) if loan is not None else AccountMatch()
        member = db.session.scalar(select(Member).where(Member.member_no == number))
        product = _product_by_suffix(suffix) if member is not None else None
        if member is None or product is None:
            return AccountMatch()
        return AccountMatch(member, None, product)
    try:
        phone = normalise_phone(ref)
    except PhoneError:
        return AccountMatch()
    member = db.session.scalar(select(Member).where(Member.phone == phone))
    return AccountMatch(member, None, _product_by_suffix("")) if member else AccountMatch()


def _takes_money(match: AccountMatch) -> bool:
    """Whether a member's account can be paid into now: its product is open, or the member
    holds an account of it already (a closed product keeps serving its accounts)."""
    product, member = match.product, match.member
    if product is None or member is None:
        return False
    if product.kind == "fixed":
        return False  # each fixed deposit is opened from savings for its own term
    if product.active:
        return True
    held = db.session.scalar(
        select(Account.id).where(Account.member_id == member.id, Account.product_id == product.id)
    )
    return held is not None


def c2b_validate(data: dict[str, Any]) -> tuple[str, str]:
    """Validation's answer (ResultCode, why) for a payment about to be made."""
    amount: Decimal = data["amount"]
    if amount < 1 or not is_whole_shillings(amount):
        return "C2B00013", f"amount {amount} is not whole shillings"
    shortcode = data.get("shortcode")
    if shortcode and shortcode != settings().MPESA_SHORTCODE:
        return "C2B00015", f"shortcode {shortcode} is not ours"
    match = match_account(data["bill_ref"])
    known = match.loan is not None or _takes_money(match)
    if not known and settings().MPESA_C2B_VALIDATION:
        return "C2B00012", f"no member or loan {data['bill_ref']!r}"
    return "0", "accepted" if known else "accepted for suspense (validation off)"


def suggest_member(msisdn: str) -> Member | None:
    """The member whose phone a hashed (SHA-256) or masked MSISDN matches, when only one
    does: a suggestion for staff, never a posting."""
    value = (msisdn or "").strip().lower()  # pragma: no mutate: any filler is no phone either
    if not value:
        return None
    phones = db.session.execute(select(Member.id, Member.phone)).all()
    if _HASH.match(value):
        hits = [mid for mid, phone in phones if hashlib.sha256(phone.encode()).hexdigest() == value]
    elif masked := _MASK.match(value):
        head, tail = masked.groups()
        hits = [
            mid
            for mid, phone in phones
            if phone.startswith(head) and phone.endswith(tail) and len(phone) == len(value)
        ]
    else:
        try:
            plain = normalise_phone(value)
        except PhoneError:
            return None
        hits = [mid for mid, phone in phones if phone == plain]
    return db.session.get(Member, hits[0]) if len(hits) == 1 else None


def c2b_confirm(data: dict[str, Any], callback_id: int | None) -> str:
    """Post a confirmed Paybill payment once (TransID is the receipt). The caller commits."""
    receipt = data["trans_id"]
    paid_at = kenyan_time(data.get("trans_time"), settings().tz, ("%Y%m%d%H%M%S",))
    value_date = mpesa_value_date(paid_at)
    match = match_account(data["bill_ref"])
    member, loan = match.member, match.loan
    if loan is not None:
        # A loan that takes no payment (not yet disbursed): the money is the member's, to
        # deposits, as it always was.
        match = AccountMatch(member, loan, _product_by_suffix(""))
    payment = payment_record(
        callback_id=callback_id,
        receipt=receipt,
        channel="c2b",
        direction="in",
        amount=data["amount"],
        phone=data["msisdn"][:80] or None,
        bill_ref=data["bill_ref"][:40] or None,
        payer_name=data["payer_name"] or None,
        member_id=member.id if member else None,
        loan_id=loan.id if loan else None,
        transacted_at=paid_at,
    )
    if payment is None:
        return "duplicate"  # this receipt is in already, through this or another channel
    amount: Decimal = data["amount"]
    if loan is not None and loan.status in (*LIVE_STATUSES, "written_off", "closed"):
        result = loan_repay(
            loan_id=loan.id, amount=amount, reference=receipt, value_date=value_date, commit=False
        )
        payment.journal_entry_id = result.entry_id
    elif member is not None and match.product is not None and _takes_money(match):
        payment.loan_id = None
        payment.journal_entry_id = account_deposit(
            member_id=member.id,
            product=match.product,
            amount=amount,
            reference=receipt,
            value_date=value_date,
        )
    else:
        # A member's number with a suffix no open product has: that member is the guess.
        suggested = member or suggest_member(data["msisdn"])
        suspense_post(
            payment,
            suggested_member_id=suggested.id if suggested else None,
            description=f"Unmatched Paybill {receipt} account {data['bill_ref']!r}",
            value_date=value_date,
        )
        late_note(payment.journal_entry_id, paid_at)
        webhook_payment_received(payment)
        return "suspense"
    late_note(payment.journal_entry_id, paid_at)
    webhook_payment_received(payment)
    return "processed"


def payments_assign_suspense(
    *, payment_id: int, staff: StaffUser, account: str, note: str | None = None
) -> Payment:
    """Staff place a suspense payment: `account` is an account number as a member pays to
    it (M000123 deposits, M000123S savings, M000123SH shares) or a loan number (a
    repayment). Audited; a payment is assigned once."""
    permission_require(staff, "suspense.assign")
    payment = lock_row(Payment, payment_id)
    if payment is None:
        raise PaymentError(f"no payment {payment_id}")
    if payment.status != "suspense":
        db.session.rollback()
        raise PaymentError(f"payment {payment.receipt} is {payment.status}, not in suspense")
    match = match_account(account)
    member, loan = match.member, match.loan
    if member is None or (loan is None and not _takes_money(match)):
        db.session.rollback()
        raise PaymentError(f"no member or loan {account!r}")
    value_date = business_today()
    reference = f"{payment.receipt}"
    if loan is not None:
        result = loan_repay(
            loan_id=loan.id,
            amount=payment.amount,
            reference=f"assign:{reference}",
            value_date=value_date,
            source="suspense",
            actor=staff,
            commit=False,
        )
        entry_id, paid_to = result.entry_id, None
    else:
        assert match.product is not None  # _takes_money above
        paid_to = account_number(member.member_no or "", match.product)
        try:
            entry_id = account_deposit(
                member_id=member.id,
                product=match.product,
                amount=payment.amount,
                reference=f"assign:{reference}",
                value_date=value_date,
                source="suspense",
                actor=f"staff:{staff.email}",
            )
        except ProductError as exc:
            db.session.rollback()
            # A guard: _takes_money above admits only accounts that take money.
            raise PaymentError(str(exc)) from None  # pragma: no mutate: unreachable today
    before = {"status": payment.status, "member": None, "loan": None}
    payment.status = "assigned"
    payment.member_id = member.id
    payment.loan_id = loan.id if loan else None
    payment.assigned_by = f"staff:{staff.email}"
    payment.assigned_at = utcnow()
    payment.journal_entry_id = entry_id
    audit_record(
        actor=f"staff:{staff.email}",
        action="payment.assign",
        object_type="payment",
        object_id=payment.receipt,
        before=before,
        after={
            "status": "assigned",
            "member": member.member_no,
            "account": paid_to,
            "loan": loan.loan_no if loan else None,
            "amount": payment.amount,
        },
        note=note,
    )
    db.session.commit()
    return payment
