"""Members: joining, deposits and share purchases."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from flask import current_app
from redis.client import Pipeline
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from app.errors import SaccoError
from app.extensions import db, redis_client
from app.models import Loan, Member, MpesaRequest, SmsMessage, StaffUser
from app.models.types import utcnow
from app.money import MoneyError, money_input
from app.phone import PhoneError, normalise_phone
from app.selectors.guarantees import member_deposits
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
    notify_pin_changed,
    notify_pin_locked,
    notify_pin_reset_code,
    notify_statement,
)
from app.services.permissions import permission_require
from app.services.savings.products import (
    REGISTRATION_PRODUCTS,
    account_product,
    member_product_account,
)
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
    for code in REGISTRATION_PRODUCTS.values():
        member_product_account(member, account_product(code))
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
    """Buy share capital from savings (refused if savings are short) or fresh M-PESA money.

    From savings, under the member's lock: only free deposits move (what the member's own
    loans and their guarantees of others' loans hold stays), so a transfer racing a
    guarantee's acceptance cannot take the shilling it pledges."""
    value = _positive(amount)
    member = lock_row(Member, member_id) if from_savings else db.session.get(Member, member_id)
    if member is None:
        raise MemberError(f"no member {member_id}")
    if from_savings:
        held = member_deposits(member.id)
        # More than the whole balance is the ledger's refusal ("insufficient balance");
        # this one is for money that is there but held.
        free = held.free
        if free < value <= held.deposits:
            if commit:
                db.session.rollback()
            raise MemberError(
                f"only KES {free:,.2f} of the savings is free: the rest secures loans"
            )
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


# -- PINs and the second factor ------------------------------------------------------------
# A caller id is never enough to act as a member: the first PIN (and a PIN staff reset)
# needs the member's ID number or an activation code the SACCO gave them; a forgotten PIN
# is replaced from USSD with the ID number plus a code sent by SMS to the registered phone.
# Every wrong answer (PIN, ID number, activation code, SMS code) counts on the one counter
# (failed_pin_count) and trips the one lock (PIN_TRIES, then PIN_LOCK_MINUTES and an SMS):
# _count_wrong is that rule. A right ID number or code does not clear the counter; only a
# right PIN or a PIN saved does, so guessing cannot be spread over "right" answers.

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
# Activation codes: 8 digits (a feature phone types digits only; 10^8 keeps a guesser at
# 3 tries per lock far from luck over the code's life), valid 30 days (a member registered
# at a branch may not dial that week; after a month staff issue another).
ACTIVATION_DIGITS = 8
ACTIVATION_DAYS = 30
# Forgotten PIN: a 6-digit code by SMS, for this USSD session only, within 10 minutes;
# at most 3 codes an hour per member, so knowing someone's ID number cannot flood them.
RESET_DIGITS = 6
RESET_MINUTES = 10
RESET_CODES_PER_HOUR = 3
RESET_PREFIX = "ussd:pin-reset:"
RESET_SENT_PREFIX = "ussd:pin-reset-sent:"


class PinLocked(MemberError):
    """Too many wrong PINs: USSD is locked until `until`."""

    def __init__(self, until: datetime) -> None:
        super().__init__(f"locked until {until.isoformat(timespec='minutes')}")
        self.until = until


class ActivationCodeExpired(MemberError):
    """The answer was the member's activation code, past its expiry (counted as wrong)."""

    def __init__(self) -> None:
        super().__init__("the activation code has expired; staff can issue a new one")


class PinResetError(MemberError):
    """A forgotten-PIN reset refused; `code` names why (the menus pick words by it)."""

    _WHY = {
        "no_id": "no national ID number on file: a new PIN needs an activation code from staff",
        "too_many": "too many reset codes asked for in the last hour",
        "no_pending": "no reset code for this session (expired, used or never sent)",
    }

    def __init__(self, code: str) -> None:
        super().__init__(self._WHY[code])
        self.code = code


@dataclass(frozen=True)
class ActivationCode:
    """A code as issued: the only time it exists in clear (shown once, never stored)."""

    code: str
    expires_at: datetime


def pin_problem(pin: str, member: Member) -> str | None:
    """Why a new PIN is refused (a key for the menus' text), or None."""
    if len(pin) != 4 or not pin.isdigit():
        return "pin_format"
    if len(set(pin)) == 1 or pin in _TRIVIAL:
        return "pin_trivial"
    return None


def national_id_normalise(value: str) -> str:
    """An ID number as compared: no spaces, upper case ("a 123 4" and "A1234" are one)."""
    return "".join(value.split()).upper()


def _secret_hmac(message: str) -> str:
    secret = current_app.config["SECRET_KEY"].encode()
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def _activation_hash(member_id: int, code: str) -> str:
    # Bound to the member: a hash copied onto another member's row proves nothing, and a
    # copy of the database alone cannot be checked against the 10^8 codes.
    return _secret_hmac(f"activation:{member_id}:{code}")


def _reset_hash(member_id: int, session_id: str, code: str) -> str:
    return _secret_hmac(f"pin-reset:{member_id}:{session_id}:{code}")


def _id_matches(member: Member, answer: str) -> bool:
    """Constant time in the answer's content: the comparison itself names no digit."""
    expected = national_id_normalise(member.national_id or "")
    given = national_id_normalise(answer)
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _refuse_if_locked(member: Member, now: datetime) -> None:
    if member.locked_until is not None and member.locked_until > now:
        until = member.locked_until
        db.session.rollback()
        raise PinLocked(until)


def _count_wrong(member: Member, now: datetime) -> None:
    """One wrong answer of any kind, under the member's row lock: the PIN_TRIES-th in a
    row locks USSD for PIN_LOCK_MINUTES and texts the member (PinLocked). Commits."""
    member.failed_pin_count += 1
    if member.failed_pin_count >= PIN_TRIES:
        until = now + timedelta(minutes=PIN_LOCK_MINUTES)
        member.locked_until = until
        member.failed_pin_count = 0
        notify_pin_locked(member=member, minutes=PIN_LOCK_MINUTES, locked_until=until)
        db.session.commit()
        redis_client().delete(f"{RESET_PREFIX}{member.id}")  # a lock ends any reset
        raise PinLocked(until)
    db.session.commit()


def _locked_member(member_id: int, now: datetime) -> Member:
    member = lock_row(Member, member_id)
    if member is None:
        raise MemberError(f"no member {member_id}")
    _refuse_if_locked(member, now)
    return member


def member_set_pin(*, member_id: int, pin: str, reset_session: str | None = None) -> Member:
    """Save a member's PIN. A first PIN (none yet: a new member, or after a staff reset) is
    set once the caller has had the second factor answered (member_check_second_factor);
    replacing a PIN needs `reset_session`, a USSD session whose SMS reset code was right
    (member_pin_reset_confirm), and spends it. Refused if weak. Either way the activation
    code is spent and the wrong-try count starts again."""
    member = lock_row(Member, member_id)
    if member is None:
        raise MemberError(f"no member {member_id}")
    problem = pin_problem(pin, member)
    if problem:
        db.session.rollback()
        raise MemberError(problem)
    replacing = bool(member.pin_hash)
    if replacing and (reset_session is None or not _take_reset_proof(member.id, reset_session)):
        db.session.rollback()
        raise MemberError("a PIN is set already")
    member.pin_hash = generate_password_hash(pin, method=PIN_HASH_METHOD)
    member.failed_pin_count = 0
    member.locked_until = None
    member.activation_code_hash = None
    member.activation_code_expires = None
    audit_record(
        actor=f"member:{member.member_no}",
        action="member.pin_reset" if replacing else "member.set_pin",
        object_type="member",
        object_id=member.member_no,
        note="forgotten PIN: ID number and a code by SMS to the registered phone"
        if replacing
        else None,
    )  # never the PIN itself
    if replacing:
        notify_pin_changed(member=member, request_id=f"ussd:{reset_session}")
    db.session.commit()
    return member


def member_check_pin(*, member_id: int, pin: str, now: datetime) -> bool:
    """True for the right PIN. Three wrong in a row (across sessions, counted with wrong ID
    numbers and codes) lock USSD for 30 minutes and text the member; PinLocked while
    locked (the PIN is not even checked)."""
    member = lock_row(Member, member_id)
    if member is None or not member.pin_hash:
        raise MemberError("no PIN set")
    _refuse_if_locked(member, now)
    if check_password_hash(member.pin_hash, pin):
        member.failed_pin_count = 0
        member.locked_until = None
        db.session.commit()
        return True
    _count_wrong(member, now)
    return False


def member_check_second_factor(
    *, member_id: int, answer: str, now: datetime, codes: bool = True
) -> bool:
    """True when `answer` is the member's ID number (spaces and case aside) or, with
    `codes`, their activation code while it is live. A wrong answer counts toward the PIN
    lock (PinLocked on the last); an expired code is counted too, then
    ActivationCodeExpired so the member is told what to do. Nothing is spent here: the
    code is spent when the PIN it opened is saved."""
    member = _locked_member(member_id, now)
    if _id_matches(member, answer):
        db.session.commit()
        return True
    expired = False
    if codes and member.activation_code_hash:
        given = _activation_hash(member.id, "".join(answer.split()))
        if hmac.compare_digest(member.activation_code_hash, given):
            live = member.activation_code_expires
            if live is not None and live > now:
                db.session.commit()
                return True
            expired = True
    _count_wrong(member, now)
    if expired:
        raise ActivationCodeExpired()
    return False


def member_issue_activation_code(
    *,
    member_id: int,
    staff: StaffUser | None = None,
    actor: str = "system",
    commit: bool = True,
) -> ActivationCode:
    """A new one-time code for the member's first PIN (any earlier code stops working),
    valid ACTIVATION_DAYS. Returned in clear once, for staff to hand over: only its HMAC
    is stored, and the audit row records that a code was issued and until when, never
    the code. `staff` (the member page) needs the same permission as a PIN reset."""
    if staff is not None:
        permission_require(staff, "member.edit")
        actor = f"staff:{staff.email}"
    member = lock_row(Member, member_id)
    if member is None:
        raise MemberError(f"no member {member_id}")
    if member.status == "exited":
        db.session.rollback()
        raise MemberError("the member has exited; no activation code")
    code = f"{secrets.randbelow(10**ACTIVATION_DIGITS):0{ACTIVATION_DIGITS}d}"
    expires = utcnow() + timedelta(days=ACTIVATION_DAYS)
    member.activation_code_hash = _activation_hash(member.id, code)
    member.activation_code_expires = expires
    audit_record(
        actor=actor,
        action="member.activation_code",
        object_type="member",
        object_id=member.member_no,
        after={"expires": expires.isoformat(timespec="minutes")},
    )
    if commit:
        db.session.commit()
    return ActivationCode(code=code, expires_at=expires)


def _reset_key(member_id: int) -> str:
    return f"{RESET_PREFIX}{member_id}"


def member_pin_reset_start(
    *, member_id: int, national_id: str, session_id: str, now: datetime
) -> bool:
    """Forgotten PIN, step 1: the ID number. Right: a RESET_DIGITS code goes by SMS to the
    registered phone, its HMAC kept in Redis for this session for RESET_MINUTES (a newer
    one replaces it). Wrong: counted toward the lock; False. PinResetError("no_id") for
    a member with no ID number on file, ("too_many") past RESET_CODES_PER_HOUR."""
    member = _locked_member(member_id, now)
    if not member.national_id:
        db.session.rollback()
        raise PinResetError("no_id")
    if not _id_matches(member, national_id):
        _count_wrong(member, now)
        return False
    redis = redis_client()
    sent_key = f"{RESET_SENT_PREFIX}{member.id}"
    sent = int(redis.incr(sent_key))
    if sent == 1:
        redis.expire(sent_key, 3600)
    if sent > RESET_CODES_PER_HOUR:
        db.session.rollback()
        raise PinResetError("too_many")
    code = f"{secrets.randbelow(10**RESET_DIGITS):0{RESET_DIGITS}d}"
    record = {"session": session_id, "hash": _reset_hash(member.id, session_id, code)}
    # Redis first, as for a phone change: a failed commit then removes the key and no SMS
    # goes; the other order could text a code that nothing would accept.
    redis.set(_reset_key(member.id), json.dumps(record), ex=RESET_MINUTES * 60)
    try:
        notify_pin_reset_code(
            member=member,
            otp=code,
            minutes=RESET_MINUTES,
            request_id=secrets.token_hex(8),  # a fresh key per code, never the code
        )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        redis.delete(_reset_key(member.id))
        raise
    return True


def member_pin_reset_confirm(*, member_id: int, session_id: str, code: str, now: datetime) -> bool:
    """Forgotten PIN, step 2: the code from the SMS, in the session it was sent for. Right:
    the reset is marked proved (member_set_pin with this session then replaces the PIN);
    True. Wrong: counted toward the lock (the lock also ends the reset); False.
    PinResetError("no_pending") when no live code waits for this session."""
    member = _locked_member(member_id, now)
    key = _reset_key(member.id)
    expected = _reset_hash(member.id, session_id, "".join(code.split()))

    outcome: list[str] = []

    def attempt(pipe: Pipeline) -> None:
        # Read, decide and write under WATCH: two hops at once cannot both use the code.
        # (Run again from the top if the key changed meanwhile: the outcome is refilled.)
        outcome.clear()
        record = _json(pipe.get(key))
        ttl_ms = int(pipe.pttl(key))
        pipe.multi()
        if record is None or ttl_ms <= 0 or record.get("session") != session_id:
            outcome.append("none")
        elif record.get("proved"):
            outcome.append("none")
        elif not hmac.compare_digest(str(record.get("hash")), expected):
            outcome.append("wrong")
        else:
            # Same expiry: the proof lasts only as long as the code would have.
            pipe.set(key, json.dumps({"session": session_id, "proved": True}), px=ttl_ms)
            outcome.append("ok")

    redis_client().transaction(attempt, key)
    if outcome == ["none"]:
        db.session.rollback()
        raise PinResetError("no_pending")
    if outcome == ["wrong"]:
        _count_wrong(member, now)
        return False
    db.session.commit()
    return True


def _take_reset_proof(member_id: int, session_id: str) -> bool:
    """Spend a proved reset of this session (one PIN per proof)."""
    key = _reset_key(member_id)

    taken: list[bool] = []

    def attempt(pipe: Pipeline) -> None:
        taken.clear()
        record = _json(pipe.get(key))
        pipe.multi()
        proved = record is not None and record.get("session") == session_id
        if proved and record is not None and record.get("proved"):
            pipe.delete(key)
            taken.append(True)

    redis_client().transaction(attempt, key)
    return taken == [True]


def _json(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


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


def member_reset_pin(*, member_id: int, staff: StaffUser) -> Member:
    """Staff reset a member's PIN (a member who called or came in and proved who they
    are): the PIN, the lock and the wrong tries are cleared, and on the next dial the
    member sets a new PIN after their ID number or an activation code (the first-dial
    road), never from the caller id alone. Audited, without any secret."""
    permission_require(staff, "member.edit")
    member = lock_row(Member, member_id)
    if member is None:
        raise MemberError(f"no member {member_id}")
    if not member.pin_hash and member.locked_until is None and not member.failed_pin_count:
        db.session.rollback()
        raise MemberError("the member has no PIN yet and is not locked; nothing to reset")
    before = {
        "pin_set": bool(member.pin_hash),
        "locked_until": member.locked_until.isoformat() if member.locked_until else None,
        "failed_pin_count": member.failed_pin_count,
    }
    member.pin_hash = None
    member.locked_until = None
    member.failed_pin_count = 0
    audit_record(
        actor=f"staff:{staff.email}",
        action="member.pin_reset",
        object_type="member",
        object_id=member.member_no,
        before=before,
        after={"pin_set": False, "locked_until": None, "failed_pin_count": 0},
        note="the member sets a new PIN with their ID number or an activation code",
    )
    db.session.commit()
    redis_client().delete(_reset_key(member.id))  # a reset under way proves nothing now
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
