"""Collections: who follows a loan up (portfolio assignment), what they did about it (a
call, a visit or an SMS and how it went), the promises staff record after a call, and the
daily targets a branch manager sets.

There is one branch: "my branch" is every loan, and a branch manager assigns any of them.
Nothing here moves money; payments arrive through the loan services.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from sqlalchemy import select

from app.errors import SaccoError
from app.extensions import db
from app.models import Loan, PromiseToPay, StaffUser
from app.models.recovery import CONTACT_KINDS, CONTACT_OUTCOMES, CollectionTarget, ContactLog
from app.money import MoneyError, money_input
from app.selectors.collections import loan_arrears
from app.services.audit import audit_record
from app.services.locking import lock_row
from app.services.permissions import PermissionDenied, permission_require, permitted
from app.services.promises import promise_record

# Who may follow loans up: the roles that record collection calls.
OFFICER_ROLES = ("loan_officer", "branch_manager")
NOTE_MAX = 500
MAX_TARGET_ACCOUNTS = 1000


class CollectionError(SaccoError):
    """A collection action that must not happen; the message says why. Nothing was written."""


def _actor(staff: StaffUser) -> str:
    return f"staff:{staff.email}"


def _loan(loan_id: int) -> Loan:
    loan = lock_row(Loan, loan_id)
    if loan is None:
        db.session.rollback()
        raise CollectionError(f"no loan {loan_id}")
    return loan


def _officer(officer_id: int) -> StaffUser:
    officer = db.session.get(StaffUser, officer_id)
    if officer is None or not officer.active or officer.role not in OFFICER_ROLES:
        db.session.rollback()
        raise CollectionError("choose an active loan officer or branch manager")
    return officer


def accept_limit_check(*, staff: StaffUser, amount: Decimal) -> None:
    """An officer accepts a promise (or a settlement) up to their own limit; above it a
    supervisor (whoever may approve agreements: a branch manager) records it."""
    limit = staff.accept_limit
    if limit is None or amount <= limit or permitted(staff, "agreement.approve"):
        return
    who = "a branch manager must record it"
    raise PermissionDenied(f"KES {amount:,.2f} is above your limit of KES {limit:,.2f}: {who}")


# --- portfolio assignment ------------------------------------------------------------------


def portfolio_assign(*, loan_id: int, officer_id: int, staff: StaffUser) -> Loan:
    """Give a loan to another officer (a branch manager's call), audited with who had it."""
    permission_require(staff, "portfolio.assign")
    loan = _loan(loan_id)
    officer = _officer(officer_id)
    if loan.officer_id == officer.id:
        db.session.rollback()
        raise CollectionError(f"{loan.loan_no} is already {officer.email}'s")
    before = db.session.get(StaffUser, loan.officer_id) if loan.officer_id else None
    loan.officer_id = officer.id
    audit_record(
        actor=_actor(staff),
        action="portfolio.assign",
        object_type="loan",
        object_id=loan.loan_no,
        before={"officer": before.email if before else None},
        after={"officer": officer.email},
    )
    db.session.commit()
    return loan


# --- promises recorded by staff ------------------------------------------------------------


def _staff_promise(
    *, loan: Loan, staff: StaffUser, amount: object, promised_date: date | None, as_of: date
) -> PromiseToPay:
    """A promise taken by staff, in the caller's transaction (the caller commits)."""
    if promised_date is None:
        db.session.rollback()
        raise CollectionError("a promise needs the date the member will pay by")
    try:
        value = money_input(amount, "the promised amount")
    except MoneyError as exc:
        db.session.rollback()
        raise CollectionError(str(exc)) from None
    try:
        accept_limit_check(staff=staff, amount=value)
    except PermissionDenied:
        db.session.rollback()
        raise
    promise = promise_record(
        member_id=loan.member_id,
        loan_id=loan.id,
        amount=value,
        promised_date=promised_date,
        as_of=as_of,
        channel="staff",
        recorded_by_id=staff.id,
        commit=False,
    )
    audit_record(
        actor=_actor(staff),
        action="promise.record",
        object_type="loan",
        object_id=loan.loan_no,
        after={"promise_id": promise.id, "amount": value, "date": promised_date},
    )
    return promise


def collection_record(
    *,
    loan_id: int,
    staff: StaffUser,
    kind: str,
    outcome: str,
    note: str | None = None,
    amount: object = None,
    promised_date: date | None = None,
    as_of: date,
) -> ContactLog:
    """Log a call, visit or SMS about a loan and how it went. "promised" records the
    member's promise (amount, date) with it, as one unit: both or neither."""
    permission_require(staff, "collection.record")
    if kind not in CONTACT_KINDS:
        raise CollectionError(f"the contact is one of {', '.join(CONTACT_KINDS)}")
    if outcome not in CONTACT_OUTCOMES:
        raise CollectionError(
            f"the outcome is one of {', '.join(o.replace('_', ' ') for o in CONTACT_OUTCOMES)}"
        )
    note = (note or "").strip() or None
    if note is not None and len(note) > NOTE_MAX:
        raise CollectionError(f"the note is longer than {NOTE_MAX} characters")
    has_amount = amount not in (None, "")
    if outcome != "promised" and (has_amount or promised_date is not None):
        raise CollectionError("an amount and a date go with the outcome 'promised' only")
    loan = _loan(loan_id)
    if loan.officer_id != staff.id and not permitted(staff, "portfolio.assign"):
        # A loan officer works their own book; the desk refuses the page too, but the rule
        # is the service's, whoever calls it.
        db.session.rollback()
        raise PermissionDenied(
            f"{staff.role.replace('_', ' ')} staff cannot work loans outside their own book"
        )
    promise = None
    if outcome == "promised":
        if not has_amount:
            db.session.rollback()
            raise CollectionError("a promise needs the amount the member will pay")
        promise = _staff_promise(
            loan=loan, staff=staff, amount=amount, promised_date=promised_date, as_of=as_of
        )
    log = ContactLog(
        loan_id=loan.id,
        staff_id=staff.id,
        kind=kind,
        outcome=outcome,
        note=note,
        promise_id=promise.id if promise is not None else None,
    )
    db.session.add(log)
    db.session.flush()
    audit_record(
        actor=_actor(staff),
        action="collection.record",
        object_type="loan",
        object_id=loan.loan_no,
        after={
            "contact_id": log.id,
            "kind": kind,
            "outcome": outcome,
            "promise_id": log.promise_id,
        },
        note=note,
    )
    db.session.commit()
    return log


@dataclass
class BulkPromises:
    recorded: list[PromiseToPay] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (loan number, why)


def promise_bulk_record(
    *, loan_ids: Iterable[int], staff: StaffUser, promised_date: date, as_of: date
) -> BulkPromises:
    """Promises for many loans at once (ticked on the arrears list), one date, each for
    the amount that loan is in arrears. Each loan on its own: one refusal (an open
    promise already, above the officer's limit) stops only it."""
    permission_require(staff, "collection.record")
    result = BulkPromises()
    for loan_id in dict.fromkeys(loan_ids):
        loan_no = db.session.scalar(select(Loan.loan_no).where(Loan.id == loan_id))
        label = loan_no or f"loan #{loan_id}"
        try:
            loan = _loan(loan_id)
            owed = loan_arrears(loan_id=loan.id, as_of=as_of)
            if owed <= 0:
                raise CollectionError("nothing is in arrears")
            promise = _staff_promise(
                loan=loan, staff=staff, amount=owed, promised_date=promised_date, as_of=as_of
            )
            db.session.commit()
        except SaccoError as exc:
            db.session.rollback()
            result.refused.append((label, str(exc)))
        else:
            result.recorded.append(promise)
    return result


# --- daily targets -------------------------------------------------------------------------


def collection_target_set(
    *,
    officer_id: int,
    day: date,
    amount: object,
    accounts: int,
    staff: StaffUser,
    as_of: date,
) -> CollectionTarget:
    """A branch manager's target for one officer and one day (today or later): the amount
    to collect and the accounts to contact. Setting it again replaces it, audited."""
    permission_require(staff, "portfolio.assign")
    if day < as_of:
        raise CollectionError("a target is for today or a day ahead")
    try:
        value = money_input(amount, "the amount to collect")
    except MoneyError as exc:
        raise CollectionError(str(exc)) from None
    if not 0 <= accounts <= MAX_TARGET_ACCOUNTS:
        raise CollectionError(f"the accounts to contact are 0 to {MAX_TARGET_ACCOUNTS}")
    officer = _officer(officer_id)
    target = db.session.scalar(
        select(CollectionTarget).where(
            CollectionTarget.staff_id == officer.id, CollectionTarget.day == day
        )
    )
    before = None
    if target is None:
        target = CollectionTarget(staff_id=officer.id, day=day)
        db.session.add(target)
    else:
        before = {"amount": target.amount, "accounts": target.accounts}
    target.amount, target.accounts, target.set_by_id = value, accounts, staff.id
    audit_record(
        actor=_actor(staff),
        action="collection.target",
        object_type="staff",
        object_id=officer.email,
        before=before,
        after={"day": day, "amount": value, "accounts": accounts},
    )
    db.session.commit()
    return target
