"""Members: joining, deposits and share purchases."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from app.errors import SaccoError
from app.extensions import db
from app.models import Loan, Member, MpesaRequest, SmsMessage, StaffUser
from app.money import MoneyError, money_input
from app.phone import PhoneError, normalise_phone
from app.selectors.members import member_balances
from app.services.audit import audit_record
from app.services.ledger import (
    LedgerError,
    credit,
    debit,
    gl_account,
    journal_post,
    member_account,
    money_in_account,
)
from app.services.locking import lock_row
from app.services.notifications import (
    notify_deposit_received,
    notify_pin_locked,
    notify_statement,
)
from app.services.permissions import permission_require
from app.services.sms_inbound import statement_lines


class MemberError(SaccoError):
    """Input that cannot become a member or a member posting; nothing was written."""


def member_number(member_id: int) -> str:
    return f"M{member_id:06d}"


def member_add(
    *,
    name: str,
    phone: str,
    national_id: str | None = None,
    language: str = "en",
    actor: str = "system",
    external_ref: str | None = None,
    commit: bool = True,
) -> Member:
    """Register a member with a savings and a share-capital account."""
    name = " ".join((name or "").split())
    if not name or len(name) > 120:
        raise MemberError("name is required (at most 120 characters)")
    try:
        phone = normalise_phone(phone)
    except PhoneError as exc:
        raise MemberError(str(exc)) from exc
    national_id = (national_id or "").strip() or None
    if national_id is not None and not (national_id.isalnum() and len(national_id) <= 20):
        raise MemberError(f"national id must be letters and digits only: {national_id!r}")
    if language not in ("en", "sw"):
        raise MemberError("language must be en or sw")

    clash = db.session.scalar(
        select(Member).where(
            or_(Member.phone == phone, Member.national_id == national_id)
            if national_id
            else Member.phone == phone
        )
    )
    if clash is not None:
        field = "phone" if clash.phone == phone else "national id"
        raise MemberError(f"a member with this {field} exists already ({clash.member_no})")

    member = Member(
        name=name,
        phone=phone,
        national_id=national_id,
        language=language,
        external_ref=external_ref,
    )
    try:
        with db.session.begin_nested():
            db.session.add(member)
            db.session.flush()
    except IntegrityError as exc:  # lost a race with another insert of the same person
        raise MemberError("a member with this phone or national id exists already") from exc
    member.member_no = member_number(member.id)
    member_account(member, "savings")
    member_account(member, "share_capital")
    audit_record(
        actor=actor,
        action="member.add",
        object_type="member",
        object_id=member.member_no,
        after={"name": name, "phone": phone, "national_id": national_id},
    )
    if commit:
        db.session.commit()
    return member


def _positive(amount: object) -> Decimal:
    try:
        return money_input(amount)
    except MoneyError as exc:
        raise MemberError(str(exc)) from None


def member_deposit(
    *,
    member_id: int,
    amount: object,
    reference: str,
    value_date: date,
    actor: str = "system",
    source: str = "mpesa",
    commit: bool = True,
) -> int:
    """Money in through M-PESA to savings (`source` "suspense" when staff assign money
    that matched no one). Returns the journal entry id."""
    value = _positive(amount)
    member = db.session.get(Member, member_id)
    if member is None:
        raise MemberError(f"no member {member_id}")
    entry = journal_post(
        kind="deposit",
        lines=[
            debit(money_in_account(source), value),
            credit(member_account(member, "savings"), value),
        ],
        value_date=value_date,
        description=f"Deposit {member.member_no} {reference}",
        idempotency_key=f"deposit:{reference}",
        actor=actor,
        member_id=member.id,
    )
    notify_deposit_received(
        member=member,
        amount=value,
        savings_balance=member_balances(member_id=member.id).savings,
        receipt=reference,
    )
    if commit:
        db.session.commit()
    return entry.id


def member_buy_shares(
    *,
    member_id: int,
    amount: object,
    reference: str,
    value_date: date,
    from_savings: bool = True,
    actor: str = "system",
    commit: bool = True,
) -> int:
    """Buy share capital from savings (refused if savings are short) or fresh M-PESA money."""
    value = _positive(amount)
    member = db.session.get(Member, member_id)
    if member is None:
        raise MemberError(f"no member {member_id}")
    source = member_account(member, "savings") if from_savings else gl_account("GL-MPESA-CLEARING")
    try:
        entry = journal_post(
            kind="share_purchase",
            lines=[debit(source, value), credit(member_account(member, "share_capital"), value)],
            value_date=value_date,
            description=f"Shares {member.member_no} {reference}",
            idempotency_key=f"shares:{reference}",
            actor=actor,
            member_id=member.id,
        )
    except LedgerError:
        # Owning the transaction means undoing all of it (accounts opened on the way too);
        # a caller composing services (commit=False) owns the rollback instead.
        if commit:
            db.session.rollback()
        raise
    if commit:
        db.session.commit()
    return entry.id


# -- PINs ----------------------------------------------------------------------------------

PIN_TRIES = 3
PIN_LOCK_MINUTES = 30
# A 4-digit PIN has 10,000 values: no hash cost stops an offline guess (at werkzeug's
# default of 1,000,000 PBKDF2 rounds, ~400 ms here, all 10,000 take about an hour), so its
# real defence is the lockout (3 tries, then 30 minutes). The hash only keeps PINs out of
# plain sight, and the PIN hop must stay well inside 50 ms at 50 sessions on 2 cores:
# 10,000 rounds cost ~5 ms (measured: 50,000 ~26 ms, scrypt ~124 ms).
PIN_HASH_METHOD = "pbkdf2:sha256:10000"
_TRIVIAL = {
    "0123",
    "1234",
    "2345",
    "3456",
    "4567",
    "5678",
    "6789",
    "9876",
    "8765",
    "7654",
    "6543",
    "5432",
    "4321",
    "3210",
    "1212",
    "1122",
    "2580",
    "0852",
}


class PinLocked(MemberError):
    """Too many wrong PINs: USSD is locked until `until`."""

    def __init__(self, until: datetime) -> None:
        super().__init__(f"locked until {until.isoformat(timespec='minutes')}")
        self.until = until


def pin_problem(pin: str, member: Member) -> str | None:
    """Why a new PIN is refused (a key for the menus' text), or None."""
    if len(pin) != 4 or not pin.isdigit():
        return "pin_format"
    if len(set(pin)) == 1 or pin in _TRIVIAL:
        return "pin_trivial"
    return None


def member_set_pin(*, member_id: int, pin: str) -> Member:
    """Set a member's first PIN (USSD, first dial). Refused if one exists or it is weak."""
    member = lock_row(Member, member_id)
    if member is None:
        raise MemberError(f"no member {member_id}")
    if member.pin_hash:
        raise MemberError("a PIN is set already")
    problem = pin_problem(pin, member)
    if problem:
        raise MemberError(problem)
    member.pin_hash = generate_password_hash(pin, method=PIN_HASH_METHOD)
    member.failed_pin_count = 0
    audit_record(
        actor=f"member:{member.member_no}",
        action="member.set_pin",
        object_type="member",
        object_id=member.member_no,
    )  # never the PIN itself
    db.session.commit()
    return member


def member_check_pin(*, member_id: int, pin: str, now: datetime) -> bool:
    """True for the right PIN. Three wrong in a row (across sessions) lock USSD for 30
    minutes and text the member; PinLocked while locked (the PIN is not even checked)."""
    member = lock_row(Member, member_id)
    if member is None or not member.pin_hash:
        raise MemberError("no PIN set")
    if member.locked_until is not None and member.locked_until > now:
        db.session.rollback()
        raise PinLocked(member.locked_until)
    if check_password_hash(member.pin_hash, pin):
        member.failed_pin_count = 0
        member.locked_until = None
        db.session.commit()
        return True
    member.failed_pin_count += 1
    if member.failed_pin_count >= PIN_TRIES:
        until = now + timedelta(minutes=PIN_LOCK_MINUTES)
        member.locked_until = until
        member.failed_pin_count = 0
        notify_pin_locked(member=member, minutes=PIN_LOCK_MINUTES, locked_until=until)
        db.session.commit()
        raise PinLocked(until)
    db.session.commit()
    return False


def member_set_language(*, member_id: int, language: str) -> Member:
    """The member's choice (USSD menu 7): every screen and SMS follows it."""
    if language not in ("en", "sw"):
        raise MemberError("language must be en or sw")
    member = db.session.get(Member, member_id)
    if member is None:
        raise MemberError(f"no member {member_id}")
    member.language = language
    db.session.commit()
    return member


# -- staff on a member's page (the console) -------------------------------------------------
# Each checks the role (app/services/permissions.py) itself, so a console bug or a script
# cannot do what the staff member's role may not, and writes its audit row in the same
# transaction as the change.


def _clean_details(name: str, national_id: str | None, language: str) -> tuple[str, str | None]:
    """The rules member_add applies to these fields, for an edit."""
    name = " ".join((name or "").split())
    if not name or len(name) > 120:
        raise MemberError("name is required (at most 120 characters)")
    national_id = (national_id or "").strip() or None
    if national_id is not None and not (national_id.isalnum() and len(national_id) <= 20):
        raise MemberError(f"national id must be letters and digits only: {national_id!r}")
    if language not in ("en", "sw"):
        raise MemberError("language must be en or sw")
    return name, national_id


def member_update(
    *,
    member_id: int,
    staff: StaffUser,
    name: str,
    national_id: str | None,
    language: str,
) -> Member:
    """Staff correct a member's name, national id or language. The phone is not changed
    here: a new number goes through the verified phone change (app/services/phone_change),
    since the phone is where M-PESA prompts and loan money go."""
    permission_require(staff, "member.edit")
    name, national_id = _clean_details(name, national_id, language)
    member = lock_row(Member, member_id)
    if member is None:
        raise MemberError(f"no member {member_id}")
    if national_id is not None and national_id != member.national_id:
        clash = db.session.scalar(
            select(Member.member_no).where(
                Member.national_id == national_id, Member.id != member.id
            )
        )
        if clash is not None:
            db.session.rollback()
            raise MemberError(f"a member with this national id exists already ({clash})")
    before = {"name": member.name, "national_id": member.national_id, "language": member.language}
    after = {"name": name, "national_id": national_id, "language": language}
    changed = {k: v for k, v in after.items() if before[k] != v}
    if not changed:
        db.session.rollback()
        return member
    for key, value in changed.items():
        setattr(member, key, value)
    audit_record(
        actor=f"staff:{staff.email}",
        action="member.update",
        object_type="member",
        object_id=member.member_no,
        before={k: before[k] for k in changed},
        after=changed,
    )
    try:
        db.session.commit()
    except IntegrityError as exc:  # another edit took the national id meanwhile
        db.session.rollback()
        raise MemberError("a member with this national id exists already") from exc
    return member


def member_reset_pin_lock(*, member_id: int, staff: StaffUser) -> Member:
    """Lift the USSD lockout after wrong PINs (a member who called the office and proved
    who they are). The PIN itself stays; the count of wrong tries starts again."""
    permission_require(staff, "member.edit")
    member = lock_row(Member, member_id)
    if member is None:
        raise MemberError(f"no member {member_id}")
    if member.locked_until is None and not member.failed_pin_count:
        db.session.rollback()
        raise MemberError("the PIN is not locked and has no wrong tries; nothing to reset")
    before = {
        "locked_until": member.locked_until.isoformat() if member.locked_until else None,
        "failed_pin_count": member.failed_pin_count,
    }
    member.locked_until = None
    member.failed_pin_count = 0
    audit_record(
        actor=f"staff:{staff.email}",
        action="member.pin_unlock",
        object_type="member",
        object_id=member.member_no,
        before=before,
        after={"locked_until": None, "failed_pin_count": 0},
    )
    db.session.commit()
    return member


def member_send_statement(*, member_id: int, staff: StaffUser, request_id: str) -> SmsMessage:
    """Text the member the mini statement the SMS keyword STMT and USSD menu 4 send
    (the same lines, from sms_inbound.statement_lines).
    `request_id` comes from the page's form, so a double-click sends one SMS."""
    permission_require(staff, "member.message")
    member = db.session.get(Member, member_id)
    if member is None:
        raise MemberError(f"no member {member_id}")
    balances = member_balances(member_id=member.id)
    message = notify_statement(
        member=member,
        lines=statement_lines(member.id, member.language),
        savings=balances.savings,
        shares=balances.share_capital,
        loan_balance=balances.loan_total,
        request_id=f"console:{request_id[:60]}",
    )
    audit_record(
        actor=f"staff:{staff.email}",
        action="member.statement_sms",
        object_type="member",
        object_id=member.member_no,
        after={"sms_id": message.id, "phone": message.phone},
    )
    db.session.commit()
    return message


def member_request_payment(
    *, member_id: int, loan_id: int, amount: object, staff: StaffUser
) -> MpesaRequest:
    """Staff send an M-PESA prompt to the member's phone for one of their loans: the
    same service USSD menu 3 uses, with the audit row committed with the request."""
    # payments imports this module (c2b deposits), so the import waits for the call.
    from app.services.payments import payments_request_stk

    permission_require(staff, "payment.request")
    member = db.session.get(Member, member_id)
    loan = db.session.get(Loan, loan_id)
    if member is None or loan is None or loan.member_id != member.id:
        raise MemberError("that loan is not this member's")
    # payments_request_stk commits its request row; the audit row added first goes in the
    # same commit, and its refusals roll both back.
    audit_record(
        actor=f"staff:{staff.email}",
        action="payment.request",
        object_type="loan",
        object_id=loan.loan_no,
        after={"member": member.member_no, "amount": str(amount).strip()[:20]},
    )
    try:
        return payments_request_stk(
            loan_id=loan.id, amount=amount, channel="console", actor=f"staff:{staff.email}"
        )
    except SaccoError:
        db.session.rollback()
        raise
