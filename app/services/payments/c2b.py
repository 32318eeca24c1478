"""C2B Paybill: members pay with their member number (savings) or a loan number (repayment)
as the account. Validation may refuse an unknown account; confirmation never refuses (the
money has moved): what matches nobody goes to suspense for staff to assign.
"""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from app.clock import business_date
from app.extensions import db
from app.integrations.daraja import daraja_client
from app.models import Loan, Member, Payment, StaffUser
from app.models.types import utcnow
from app.money import is_whole_shillings
from app.phone import PhoneError, normalise_phone
from app.schemas.mpesa import kenyan_time
from app.selectors.loans import LIVE_STATUSES
from app.services.audit import audit_record
from app.services.loans import loan_repay
from app.services.locking import lock_row
from app.services.members import member_deposit
from app.services.payments.common import (
    PaymentError,
    payment_record,
    settings,
    suspense_post,
)
from app.services.permissions import permission_require

_ACCOUNT = re.compile(r"^([ML])0*(\d{1,9})$")
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


def match_account(bill_ref: str) -> tuple[Member | None, Loan | None]:
    """The member (and loan) an account typed on the phone means: trimmed, upper-cased,
    spaces and dashes ignored, leading zeros optional (M123 = M000123); a member's own
    phone number works as their member number."""
    ref = re.sub(r"[\s\-_./]", "", bill_ref or "").upper()
    found = _ACCOUNT.match(ref)
    if found:
        number = f"{found.group(1)}{int(found.group(2)):06d}"
        if found.group(1) == "L":
            loan = db.session.scalar(select(Loan).where(Loan.loan_no == number))
            return (loan.member, loan) if loan is not None else (None, None)
        member = db.session.scalar(select(Member).where(Member.member_no == number))
        return member, None
    try:
        phone = normalise_phone(ref)
    except PhoneError:
        return None, None
    return db.session.scalar(select(Member).where(Member.phone == phone)), None


def c2b_validate(data: dict[str, Any]) -> tuple[str, str]:
    """Validation's answer (ResultCode, why) for a payment about to be made."""
    amount: Decimal = data["amount"]
    if amount < 1 or not is_whole_shillings(amount):
        return "C2B00013", f"amount {amount} is not whole shillings"
    shortcode = data.get("shortcode")
    if shortcode and shortcode != settings().MPESA_SHORTCODE:
        return "C2B00015", f"shortcode {shortcode} is not ours"
    member, _loan = match_account(data["bill_ref"])
    if member is None and settings().MPESA_C2B_VALIDATION:
        return "C2B00012", f"no member or loan {data['bill_ref']!r}"
    return "0", "accepted" if member else "accepted for suspense (validation off)"


def suggest_member(msisdn: str) -> Member | None:
    """The member whose phone a hashed (SHA-256) or masked MSISDN matches, when only one
    does: a suggestion for staff, never a posting."""
    value = (msisdn or "").strip().lower()
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
    value_date = business_date(paid_at)
    member, loan = match_account(data["bill_ref"])
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
    elif member is not None:
        payment.loan_id = None
        payment.journal_entry_id = member_deposit(
            member_id=member.id,
            amount=amount,
            reference=receipt,
            value_date=value_date,
            commit=False,
        )
    else:
        suggested = suggest_member(data["msisdn"])
        suspense_post(
            payment,
            suggested_member_id=suggested.id if suggested else None,
            description=f"Unmatched Paybill {receipt} account {data['bill_ref']!r}",
            value_date=value_date,
        )
        return "suspense"
    return "processed"


def payments_assign_suspense(
    *, payment_id: int, staff: StaffUser, account: str, note: str | None = None
) -> Payment:
    """Staff place a suspense payment: `account` is a member number (to savings) or a loan
    number (a repayment). Audited; a payment is assigned once."""
    permission_require(staff, "suspense.assign")
    payment = lock_row(Payment, payment_id)
    if payment is None:
        raise PaymentError(f"no payment {payment_id}")
    if payment.status != "suspense":
        db.session.rollback()
        raise PaymentError(f"payment {payment.receipt} is {payment.status}, not in suspense")
    member, loan = match_account(account)
    if member is None:
        db.session.rollback()
        raise PaymentError(f"no member or loan {account!r}")
    value_date = business_date(utcnow())
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
        entry_id = result.entry_id
    else:
        entry_id = member_deposit(
            member_id=member.id,
            amount=payment.amount,
            reference=f"assign:{reference}",
            value_date=value_date,
            source="suspense",
            actor=f"staff:{staff.email}",
            commit=False,
        )
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
            "loan": loan.loan_no if loan else None,
            "amount": payment.amount,
        },
        note=note,
    )
    db.session.commit()
    return payment
