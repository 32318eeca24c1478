"""Asking, answering and ending guarantees (SPEC "Guarantees").

An accepted guarantee holds the guarantor's deposits (`app.selectors.guarantees`). The
one rule that keeps a shilling from being pledged twice: whatever changes what a member's
deposits hold (accepting a guarantee, moving savings out, lending to them) takes that
member's row lock first and checks their free deposits under it.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import Guarantee, Loan, Member
from app.models.types import utcnow
from app.money import MoneyError, money_input
from app.phone import PhoneError, normalise_phone
from app.selectors.guarantees import member_deposits, product_needs_security
from app.selectors.loans import LIVE_STATUSES, PENDING_STATUSES
from app.services.audit import audit_record
from app.services.locking import lock_row
from app.services.notifications import notify_guarantee_answer, notify_guarantee_request
from app.services.webhooks import webhook_guarantee_requested

# Guarantors are asked while the application waits for a decision, not after.
ASKING_STATUSES = ("submitted", "recommended")
_MEMBER_NO = re.compile(r"^M?\d{1,9}$", re.IGNORECASE)


class GuaranteeError(SaccoError):
    """A guarantee action that must not happen; the message says why. Nothing was written."""


def mask_name(name: str) -> str:
    """ "John Kamau" -> "J*** K***": enough for an applicant to confirm the right person on
    a shared screen, not enough to learn a stranger's name from their number."""
    return " ".join(f"{part[0]}***" for part in name.split() if part) or "***"


def guarantor_find(identifier: str) -> Member | None:
    """An active member by member number (M000123 or 123) or phone (07..., 2547...)."""
    text = (identifier or "").strip()
    if not text:
        return None
    member: Member | None = None
    if _MEMBER_NO.match(text):
        digits = text.lstrip("Mm")
        member = db.session.scalar(select(Member).where(Member.member_no == f"M{int(digits):06d}"))
    if member is None:
        try:
            phone = normalise_phone(text)
        except PhoneError:
            return None
        member = db.session.scalar(select(Member).where(Member.phone == phone))
    return member if member is not None and member.status == "active" else None


def guarantee_request(
    *, loan_id: int, guarantor_id: int, amount: object, actor: str, today: date | None = None
) -> Guarantee:
    """Ask a member to guarantee part of a waiting application; they are texted at once.
    Commits."""
    try:
        value = money_input(amount)
    except MoneyError as exc:
        raise GuaranteeError(str(exc)) from None
    loan = lock_row(Loan, loan_id)
    if loan is None:
        raise GuaranteeError(f"no loan {loan_id}")
    if loan.status not in ASKING_STATUSES:
        raise GuaranteeError(
            f"loan {loan.loan_no} is {loan.status}: guarantors are asked "
            "while it waits for a decision"
        )
    if not product_needs_security(loan.product):
        raise GuaranteeError(f"{loan.product.name} loans need no guarantors")
    try:
        guarantee = guarantee_ask(
            loan, guarantor_id, value, actor, today or business_today(), action="guarantee.request"
        )
    except GuaranteeError:
        db.session.rollback()  # the loan's lock goes with it
        raise
    db.session.commit()
    return guarantee


def guarantee_ask(
    loan: Loan,
    guarantor_id: int,
    value: Decimal,
    actor: str,
    day: date,
    *,
    action: str,
    replaces: Guarantee | None = None,
) -> Guarantee:
    """The request itself, for a first guarantor or one taking another's place (the loan
    locked by the caller): the guarantor's checks, the row (one live per guarantor and
    loan, by its index), the audit and the SMS; in the caller's transaction."""
    guarantor = db.session.get(Member, guarantor_id)
    if guarantor is None or guarantor.status != "active":
        raise GuaranteeError("the guarantor must be an active member")
    if guarantor.id == loan.member_id:
        raise GuaranteeError("a member cannot guarantee their own loan")
    if value > loan.principal:
        raise GuaranteeError(
            f"a guarantee cannot be more than the loan (KES {loan.principal:,.0f})"
        )
    guarantee = Guarantee(
        loan_id=loan.id,
        guarantor_id=guarantor.id,
        amount=value,
        status="requested",
        requested_by=actor,
        expires_on=day + timedelta(days=loan.product.guarantee_days),
        replaces_id=replaces.id if replaces is not None else None,
    )
    # Worded before the flush: after a failed one the session reads nothing more.
    taken = f"{mask_name(guarantor.name)} has already been asked for loan {loan.loan_no}"
    db.session.add(guarantee)
    try:
        with db.session.begin_nested():
            db.session.flush()
    except IntegrityError:
        raise GuaranteeError(taken) from None
    after: dict[str, object] = {
        "guarantee": guarantee.id,
        "guarantor": guarantor.member_no,
        "amount": value,
    }
    if replaces is not None:
        after["replaces"] = replaces.id
    audit_record(
        actor=actor, action=action, object_type="loan", object_id=loan.loan_no, after=after
    )
    notify_guarantee_request(
        guarantor=guarantor,
        applicant=loan.member.name,
        amount=value,
        loan_no=loan.loan_no or "",
        until=guarantee.expires_on,
        ussd=current_app.config["SETTINGS"].USSD_SERVICE_CODE,
        guarantee_id=guarantee.id,
    )
    webhook_guarantee_requested(guarantee, loan)
    return guarantee


def _answering(guarantee_id: int, guarantor_id: int, day: date) -> tuple[Member, Guarantee]:
    """The guarantor's lock first (what their deposits hold changes), then the request."""
    guarantor = lock_row(Member, guarantor_id)
    if guarantor is None:
        raise GuaranteeError("no such member")
    return guarantor, _answerable(guarantee_id, guarantor_id, day)


def _answerable(guarantee_id: int, guarantor_id: int, today: date) -> Guarantee:
    """The request, locked, after the guarantor's own lock: still waiting, theirs, in time."""
    guarantee = lock_row(Guarantee, guarantee_id)
    if guarantee is None or guarantee.guarantor_id != guarantor_id:
        raise GuaranteeError("no such guarantee request for you")
    if guarantee.status != "requested":
        raise GuaranteeError(f"this request was {guarantee.status} already")
    if guarantee.expires_on < today:
        raise GuaranteeError("this request has expired")
    loan = lock_row(Loan, guarantee.loan_id)
    assert loan is not None  # a guarantee's loan is never deleted
    if loan.status not in PENDING_STATUSES:
        raise GuaranteeError(f"loan {loan.loan_no} is {loan.status}: nothing to guarantee")
    return guarantee


def guarantee_accept(
    *, guarantee_id: int, guarantor_id: int, via: str, today: date | None = None
) -> Guarantee:
    """The guarantor pledges: their deposits are held from now on. Under the guarantor's
    lock, so two loans (or a transfer out of savings) can never take the same shilling;
    refused in words when their free deposits are short. Commits."""
    day = today or business_today()
    if _replacing(guarantee_id):
        from app.services.guarantees.recovery import guarantee_substitute_accept  # a cycle

        return guarantee_substitute_accept(
            guarantee_id=guarantee_id, guarantor_id=guarantor_id, via=via, today=day
        )
    guarantor, guarantee = _answering(guarantee_id, guarantor_id, day)
    free = member_deposits(guarantor_id).free
    if guarantee.amount > free:
        db.session.rollback()
        raise GuaranteeError(
            f"your free deposits are KES {free:,.0f}, less than the KES "
            f"{guarantee.amount:,.0f} asked"
        )
    guarantee.status = "accepted"
    guarantee.answered_at = utcnow()
    guarantee.answered_via = via
    _answered(guarantee, guarantor, "accepted")
    db.session.commit()
    return guarantee


def guarantee_decline(
    *, guarantee_id: int, guarantor_id: int, via: str, today: date | None = None
) -> Guarantee:
    """The guarantor says no; the applicant is told. Commits."""
    day = today or business_today()
    if _replacing(guarantee_id):
        from app.services.guarantees.recovery import guarantee_substitute_decline  # a cycle

        return guarantee_substitute_decline(
            guarantee_id=guarantee_id, guarantor_id=guarantor_id, via=via, today=day
        )
    guarantor, guarantee = _answering(guarantee_id, guarantor_id, day)
    guarantee.status = "declined"
    guarantee.answered_at = guarantee.ended_at = utcnow()
    guarantee.answered_via = via
    _answered(guarantee, guarantor, "declined")
    db.session.commit()
    return guarantee


def _replacing(guarantee_id: int) -> bool:
    """A request to take another guarantor's place (on a loan already paid out, perhaps):
    answered by the substitution's own rules, whichever surface the answer comes from."""
    replaces = db.session.scalar(select(Guarantee.replaces_id).where(Guarantee.id == guarantee_id))
    return replaces is not None


def _answered(guarantee: Guarantee, guarantor: Member, answer: str) -> None:
    loan = guarantee.loan
    audit_record(
        actor=f"member:{guarantor.member_no}",
        action={"accepted": "guarantee.accept", "declined": "guarantee.decline"}[answer],
        object_type="loan",
        object_id=loan.loan_no,
        after={
            "guarantee": guarantee.id,
            "status": guarantee.status,
            "amount": guarantee.amount,
            "via": guarantee.answered_via,
        },
    )
    notify_guarantee_answer(
        applicant=loan.member,
        guarantor=mask_name(guarantor.name),
        amount=guarantee.amount,
        loan_no=loan.loan_no or "",
        answer=answer,
        key=str(guarantee.id),
    )


def guarantees_waiting(guarantor_id: int, *, today: date | None = None) -> list[Guarantee]:
    """Requests a member can still answer, oldest first."""
    day = today or business_today()
    return list(
        db.session.scalars(
            select(Guarantee)
            .join(Loan, Loan.id == Guarantee.loan_id)
            .where(
                Guarantee.guarantor_id == guarantor_id,
                Guarantee.status == "requested",
                Guarantee.expires_on >= day,
                # A replacement may be asked while the loan runs; a first guarantor only
                # before it is paid out.
                Loan.status.in_(PENDING_STATUSES)
                | (Guarantee.replaces_id.is_not(None) & Loan.status.in_(LIVE_STATUSES)),
            )
            .order_by(Guarantee.id)
        )
    )


# What ending a loan does to its guarantees: the holds go (the loan no longer needs them),
# the requests not yet answered are withdrawn.
ENDING = {"closed", "written_off", "rejected", "withdrawn"}


def guarantees_end(loan: Loan, actor: str) -> int:
    """Release the loan's guarantees as it ends (closed, written off, rejected, withdrawn),
    in the caller's transaction; how many changed. `_transition` calls it."""
    changed = 0
    now = utcnow()
    for guarantee in db.session.scalars(
        select(Guarantee)
        .where(Guarantee.loan_id == loan.id, Guarantee.status.in_(("requested", "accepted")))
        .with_for_update()
        # Re-read under the lock; one session cannot show it (the races on PostgreSQL do).
        .execution_options(populate_existing=True)  # pragma: no mutate
    ):
        before = guarantee.status
        guarantee.status = "released" if before == "accepted" else "cancelled"
        guarantee.ended_at = now
        audit_record(
            actor=actor,
            action=f"guarantee.{'release' if before == 'accepted' else 'cancel'}",
            object_type="loan",
            object_id=loan.loan_no,
            before={"guarantee": guarantee.id, "status": before},
            after={"status": guarantee.status, "loan_status": loan.status},
        )
        changed += 1
    return changed
