"""Changing a member's phone number, proved by a one-time code sent to the new number.

The member asks from the old phone (ID number and PIN checked by the caller); a 6-digit
code goes by SMS to the new number; the change completes when the code comes back from
the new phone within OTP_MINUTES. Knowing the PIN and the ID number and holding the new
phone is the proof. A member with no ID number on file changes the number at a branch
(the caller id and a PIN alone would be all there is to move the account).

Decisions:
- The pending change lives in Redis, not a table: it is short-lived (TTL OTP_MINUTES) and
  Redis is already the store USSD sessions depend on. Key by the NEW number, because that
  is all we know when the new phone dials in: `ussd:phone-change:<msisdn>` ->
  {"member_id", "otp_hash", "tries"}. A newer request for the same number replaces it.
- The code exists in clear only in the SMS body (the outbox row is the record of what was
  sent). Redis holds an HMAC-SHA256 under SECRET_KEY, bound to the member and the number,
  so a copy of Redis alone cannot be checked offline against the 10^6 codes. The code
  never reaches a log, an exception message, session state or the audit log.
- A code is single-use: the right one deletes the pending change atomically (WATCH/MULTI)
  before the database change, so two hops racing with the same code cannot both use it;
  OTP_TRIES wrong codes delete it too.
- Completing re-checks under the member's row lock that the number is still free; the
  unique constraint on members.phone settles a race the check cannot see.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from flask import current_app
from redis.client import Pipeline
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.errors import SaccoError
from app.extensions import db, redis_client
from app.models import Member
from app.phone import PhoneError, normalise_phone
from app.services.audit import audit_record
from app.services.locking import lock_row
from app.services.notifications import notify_phone_change_otp, notify_phone_changed

OTP_MINUTES = 10
OTP_TRIES = 3
OTP_DIGITS = 6
PENDING_PREFIX = "ussd:phone-change:"

_MESSAGES = {
    "phone_bad": "not a Kenyan mobile number",
    "phone_same": "that is the member's number already",
    "phone_taken": "another member has this phone number",
    "inactive": "the member is not active",
    "no_id": "no national ID number on file: the number is changed at a branch",
    "no_member": "no such member",
    "no_pending": "no pending change to this number (expired or cancelled)",
    "otp_wrong": "wrong code",
    "otp_cancelled": "too many wrong codes: the change is cancelled",
}


class PhoneChangeError(SaccoError):
    """Refused; nothing changed. `code` names the reason (the menus pick their words by
    it), the message says it in English for staff and logs."""

    def __init__(self, code: str) -> None:
        super().__init__(_MESSAGES[code])
        self.code = code


class OtpWrong(PhoneChangeError):
    """A wrong code; `left` more tries before the pending change is cancelled."""

    def __init__(self, left: int) -> None:
        super().__init__("otp_wrong")
        self.left = left


class OtpCancelled(PhoneChangeError):
    """The last allowed wrong code: the pending change is gone."""

    def __init__(self) -> None:
        super().__init__("otp_cancelled")


@dataclass(frozen=True)
class PendingPhoneChange:
    member_id: int
    new_phone: str
    tries: int


def _key(phone: str) -> str:
    return f"{PENDING_PREFIX}{phone}"


def _otp_hash(member_id: int, phone: str, otp: str) -> str:
    # Bound to member and number: a hash copied to another key or member proves nothing.
    secret = current_app.config["SECRET_KEY"].encode()
    message = f"phone-change:{member_id}:{phone}:{otp}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _parse(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict) or not {"member_id", "otp_hash", "tries"} <= record.keys():
        return None
    return record


def _normalise(phone: str) -> str:
    try:
        return normalise_phone(phone)
    except PhoneError:
        raise PhoneChangeError("phone_bad") from None


def phone_change_validate(*, member_id: int, new_phone: str) -> str:
    """The new number in stored form, or PhoneChangeError: not a Kenyan mobile, the
    member's own number, or another member's. (Checked again when the change completes.)"""
    phone = _normalise(new_phone)
    owner = db.session.scalar(select(Member.id).where(Member.phone == phone))
    if owner == member_id:
        raise PhoneChangeError("phone_same")
    if owner is not None:
        raise PhoneChangeError("phone_taken")
    return phone


def phone_change_request(*, member_id: int, new_phone: str) -> str:
    """Start a change: a fresh code by SMS to the new number, its hash kept for
    OTP_MINUTES. The caller has checked the member's ID number and PIN. Returns the number
    in stored form; commits (the SMS is sent after the commit)."""
    phone = phone_change_validate(member_id=member_id, new_phone=new_phone)
    member = db.session.get(Member, member_id)
    if member is None:
        raise PhoneChangeError("no_member")
    if member.status != "active":
        raise PhoneChangeError("inactive")
    if not member.national_id:
        raise PhoneChangeError("no_id")
    otp = f"{secrets.randbelow(10**OTP_DIGITS):0{OTP_DIGITS}d}"
    record = {"member_id": member_id, "otp_hash": _otp_hash(member_id, phone, otp), "tries": 0}
    redis = redis_client()
    # Redis first: if the commit then fails, the key is removed and no SMS goes; the
    # other order could text a code that nothing would accept.
    redis.set(_key(phone), json.dumps(record), ex=OTP_MINUTES * 60)
    try:
        # A fresh id per code: a key reused across requests would hand back the earlier
        # SMS (with the earlier code) while Redis holds the hash of the new one.
        notify_phone_change_otp(
            member=member,
            otp=otp,
            minutes=OTP_MINUTES,
            request_id=f"phone-change:{secrets.token_hex(8)}",
            phone=phone,
        )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        redis.delete(_key(phone))
        raise
    return phone


def phone_change_pending(*, new_phone: str) -> PendingPhoneChange | None:
    """The change waiting for a code from `new_phone`, or None (none, expired, cancelled)."""
    record = _parse(redis_client().get(_key(new_phone)))
    if record is None:
        return None
    return PendingPhoneChange(
        member_id=int(record["member_id"]), new_phone=new_phone, tries=int(record["tries"])
    )


def phone_change_confirm(*, member_id: int, new_phone: str, otp: str, request_id: str) -> Member:
    """The code came back from the new phone: complete the change (member_change_phone).

    OtpWrong (with the tries left) for a wrong code, OtpCancelled for the last one allowed
    (the pending change is deleted), PhoneChangeError("no_pending") when there is no change
    for this member to this number."""
    key = _key(new_phone)
    expected = _otp_hash(member_id, new_phone, otp)

    def attempt(pipe: Pipeline) -> tuple[str, int]:
        # Read, decide and write under WATCH: two hops at once cannot both use the code
        # or both spend the same try.
        record = _parse(pipe.get(key))
        ttl_ms = int(pipe.pttl(key))
        pipe.multi()
        if record is None or int(record["member_id"]) != member_id or ttl_ms <= 0:
            return "none", 0
        if hmac.compare_digest(str(record["otp_hash"]), expected):
            pipe.delete(key)
            return "ok", 0
        tries = int(record["tries"]) + 1
        if tries >= OTP_TRIES:
            pipe.delete(key)
            return "cancelled", 0
        # Same expiry as before: a wrong try must not buy more time.
        pipe.set(key, json.dumps({**record, "tries": tries}), px=ttl_ms)
        return "wrong", OTP_TRIES - tries

    # value_from_callable hands back attempt's own answer; redis-py types the callable as
    # returning None and the result as the pipeline's list.
    outcome, left = cast(
        tuple[str, int],
        redis_client().transaction(
            cast(Callable[[Pipeline], None], attempt), key, value_from_callable=True
        ),
    )
    if outcome == "none":
        raise PhoneChangeError("no_pending")
    if outcome == "cancelled":
        raise OtpCancelled()
    if outcome == "wrong":
        raise OtpWrong(left)
    return member_change_phone(member_id=member_id, new_phone=new_phone, request_id=request_id)


def member_change_phone(
    *, member_id: int, new_phone: str, request_id: str, actor: str | None = None
) -> Member:
    """Give the member `new_phone`: under the member's row lock, re-check that no one else
    has it, update, audit (old and new number), text both numbers, commit, and clear any
    pending change to it. PhoneChangeError when refused (nothing written)."""
    phone = _normalise(new_phone)
    member = lock_row(Member, member_id)  # re-read under the lock
    try:
        if member is None:
            raise PhoneChangeError("no_member")
        if member.status != "active":
            raise PhoneChangeError("inactive")
        if member.phone == phone:
            raise PhoneChangeError("phone_same")
        clash = db.session.scalar(
            select(Member.id).where(Member.phone == phone, Member.id != member.id)
        )
        if clash is not None:
            raise PhoneChangeError("phone_taken")
        old_phone = member.phone
        member.phone = phone
        try:
            db.session.flush()
        except IntegrityError:
            # Another member got the number after our check (their insert committed
            # while we held only our member's lock): the unique constraint decides.
            raise PhoneChangeError("phone_taken") from None
    except PhoneChangeError:
        db.session.rollback()  # releases the lock; nothing was written
        raise
    audit_record(
        actor=actor or f"member:{member.member_no}",
        action="member.change_phone",
        object_type="member",
        object_id=member.member_no,
        before={"phone": old_phone},
        after={"phone": phone},
        note="proved by a one-time code sent to the new number",
    )
    notify_phone_changed(member=member, request_id=request_id, old_phone=old_phone)
    db.session.commit()
    redis_client().delete(_key(phone))
    return member
