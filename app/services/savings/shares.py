"""Share capital moving between members (SPEC "The cooperative's own money": shares are
never withdrawable and never lent against, but transferable with approval).

A transfer is entered by staff from the members' signed form and approved by a branch
manager who did not enter it; only then does it post, once (the entry's key is the
transfer's id), under both members' locks taken in id order.
"""

from __future__ import annotations

from decimal import Decimal

from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import Member, ShareTransfer, StaffUser
from app.models.types import utcnow
from app.money import MoneyError, money_input
from app.services.audit import audit_record
from app.services.ledger import credit, debit, journal_post, member_account
from app.services.locking import lock_row
from app.services.permissions import permission_require


class ShareTransferError(SaccoError):
    """A transfer that cannot be entered or decided; nothing was written."""


def _active(member_id: int, role: str) -> Member:
    member = db.session.get(Member, member_id)
    if member is None:
        raise ShareTransferError(f"the {role}, member {member_id}, does not exist")
    _refuse_inactive(member, role)
    return member


def _refuse_inactive(member: Member, role: str) -> None:
    """A member who has left, or is leaving, takes no part in a transfer; nothing written."""
    if member.status != "active":
        why = f"the {role}, {member.member_no}, is {member.status}"
        db.session.rollback()
        raise ShareTransferError(why)


def share_transfer_request(
    *,
    from_member_id: int,
    to_member_id: int,
    amount: object,
    staff: StaffUser,
    form_ref: str | None = None,
) -> ShareTransfer:
    """Enter a transfer for approval: the seller must hold the shares now (checked again
    when it is approved)."""
    permission_require(staff, "share_transfer.request")
    try:
        value = money_input(amount)
    except MoneyError as exc:
        raise ShareTransferError(str(exc)) from None
    if from_member_id == to_member_id:
        raise ShareTransferError("a member cannot transfer shares to themselves")
    seller = _active(from_member_id, "seller")
    buyer = _active(to_member_id, "buyer")
    held = member_account(seller, "share_capital").display_balance
    if value > held:
        db.session.rollback()
        raise ShareTransferError(f"{seller.member_no} holds only KES {held:,.2f} of shares")
    transfer = ShareTransfer(
        from_member_id=seller.id,
        to_member_id=buyer.id,
        amount=value,
        form_ref=(form_ref or "").strip()[:60] or None,
        requested_by_id=staff.id,
    )
    db.session.add(transfer)
    db.session.flush()
    audit_record(
        actor=staff.email,
        action="share_transfer.request",
        object_type="share_transfer",
        object_id=transfer.id,
        after={"from": seller.member_no, "to": buyer.member_no, "amount": str(value)},
    )
    db.session.commit()
    return transfer


def share_transfer_decide(
    *, transfer_id: int, staff: StaffUser, approve: bool, reason: str | None = None
) -> ShareTransfer:
    """A branch manager approves (the shares move) or rejects (with a reason) a transfer
    someone else entered."""
    permission_require(staff, "share_transfer.approve")
    transfer = lock_row(ShareTransfer, transfer_id)
    if transfer is None:
        raise ShareTransferError(f"no share transfer {transfer_id}")
    if transfer.status != "requested":
        db.session.rollback()
        raise ShareTransferError(f"transfer {transfer_id} is {transfer.status} already")
    if transfer.requested_by_id == staff.id:
        db.session.rollback()
        raise ShareTransferError("the transfer needs a second person: you entered it")
    before = {"status": "requested"}
    if not approve:
        if not (reason or "").strip():
            db.session.rollback()
            raise ShareTransferError("say why the transfer is rejected")
        transfer.status = "rejected"
        transfer.reason = (reason or "").strip()
    else:
        # Both members, in id order (as every path that takes two members): the seller's
        # shares are read again under the lock, so a transfer approved twice at once, or
        # beside the seller's exit, cannot move shares that are gone.
        first, second = sorted((transfer.from_member_id, transfer.to_member_id))
        members = {first: lock_row(Member, first), second: lock_row(Member, second)}
        seller, buyer = members[transfer.from_member_id], members[transfer.to_member_id]
        assert seller is not None and buyer is not None  # foreign keys
        _refuse_inactive(seller, "seller")
        _refuse_inactive(buyer, "buyer")
        source = member_account(seller, "share_capital")
        held: Decimal = source.display_balance
        if transfer.amount > held:
            db.session.rollback()
            raise ShareTransferError(f"{seller.member_no} now holds only KES {held:,.2f} of shares")
        entry = journal_post(
            kind="share_transfer",
            lines=[
                debit(source, transfer.amount),
                credit(member_account(buyer, "share_capital"), transfer.amount),
            ],
            value_date=business_today(),
            description=f"Shares {seller.member_no} to {buyer.member_no}",
            idempotency_key=f"share-transfer:{transfer.id}",
            actor=staff.email,
            member_id=seller.id,
        )
        transfer.status = "approved"
        transfer.entry_id = entry.id
    transfer.decided_by_id = staff.id
    transfer.decided_at = utcnow()
    audit_record(
        actor=staff.email,
        action="share_transfer.approve" if approve else "share_transfer.reject",
        object_type="share_transfer",
        object_id=transfer.id,
        before=before,
        after={"status": transfer.status, "reason": transfer.reason},
    )
    db.session.commit()
    return transfer
