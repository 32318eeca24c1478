"""Staff logins for the console.

Decisions where the issue is silent:

- Sessions end by version, not by a store: each staff user has a `session_version`, the
  console's session carries the one it was signed in under, and sign-out, a password
  change or reset, a role change and (de)activation bump it. Signing out therefore ends
  the staff member's sessions on every device, which is what someone who suspects a copied
  cookie wants; it survives a Redis restart, and needs nothing new.
- A sign-in does the same password-hashing work whether the email is known, unknown or
  deactivated (a dummy hash stands in), so the time it takes names no email.
- The lockout counters live in Redis. When Redis does not answer, sign-in is refused
  ("try again shortly") rather than let guesses through uncounted.
- Besides MAX_FAILURES per email, an address may fail MAX_ADDRESS_FAILURES times (any
  emails) within LOCKOUT before it is refused too: a guesser spreading guesses over many
  emails is stopped, while a whole office behind one address has room for its typos.
- Passwords must be MIN_PASSWORD characters and not guessable by zxcvbn's estimate
  (score MIN_SCORE or more, the email and name counted as guessable words); the demo and
  test passwords pass it, so nothing bypasses the rule.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import timedelta
from functools import lru_cache
from secrets import token_urlsafe

import redis
from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash
from zxcvbn import zxcvbn

from app.errors import SaccoError
from app.extensions import db, redis_client
from app.models import StaffUser
from app.models.member import STAFF_ROLES
from app.money import MoneyError, money_input
from app.services.audit import audit_record
from app.services.locking import lock_row
from app.services.permissions import permission_require

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD = 10
MAX_PASSWORD = 128
MIN_SCORE = 3  # zxcvbn: 3 is "safely unguessable" to an online attacker, 4 "very"
_ESTIMATED = 72  # zxcvbn refuses longer input; the first 72 characters decide
log = logging.getLogger(__name__)


class StaffError(SaccoError):
    pass


def password_problem(password: str, *, user_inputs: Sequence[str] = ()) -> str | None:
    """What is wrong with a staff password, in words to follow "The password ...", or
    None when it may be used. `user_inputs` are words a guesser would try first for this
    person (their email, its parts, their name)."""
    if len(password) < MIN_PASSWORD:
        return f"must be at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"must be at most {MAX_PASSWORD} characters"
    words = [w for text in user_inputs for w in re.split(r"[@.\s_-]+", text.lower()) if w]
    found = zxcvbn(password[:_ESTIMATED], user_inputs=[*user_inputs, *words, "sacco"])
    if found["score"] >= MIN_SCORE:
        return None
    feedback = found.get("feedback") or {}
    why = feedback.get("warning") or next(iter(feedback.get("suggestions") or ()), "")
    why = why or "it is made of common words, names, dates or patterns"
    return f"is too easy to guess: {why[0].lower()}{why[1:].rstrip('.')}"


def _strong(password: str, *, user: StaffUser | None, email: str = "", name: str = "") -> None:
    inputs = [email, name] if user is None else [user.email, user.name]
    problem = password_problem(password or "", user_inputs=[i for i in inputs if i])
    if problem is not None:
        raise StaffError(f"The password {problem}.")


def _end_sessions(user: StaffUser) -> None:
    """Every console session of `user` stops at its next request (see admin/auth.py)."""
    user.session_version = StaffUser.session_version + 1


def staff_add(
    *, email: str, role: str, password: str, name: str = "", actor: str = "system"
) -> StaffUser:
    email = (email or "").strip().lower()
    if not _EMAIL.match(email):
        raise StaffError(f"not an email address: {email!r}")
    if role not in STAFF_ROLES:
        raise StaffError(f"role must be one of {', '.join(STAFF_ROLES)}")
    _strong(password or "", user=None, email=email, name=name)
    if db.session.scalar(select(func.count()).where(StaffUser.email == email)):
        raise StaffError(f"staff user {email} exists already")
    user = StaffUser(
        email=email,
        role=role,
        name=name or email.split("@")[0],
        password_hash=generate_password_hash(password),
    )
    db.session.add(user)
    audit_record(
        actor=actor, action="staff.add", object_type="staff", object_id=email, after={"role": role}
    )
    db.session.commit()
    return user


MAX_FAILURES = 5  # wrong passwords for one email before it is locked
MAX_ADDRESS_FAILURES = 20  # wrong passwords from one address, whatever the emails
LOCKOUT = timedelta(minutes=15)  # how long the lock lasts, counted from the last failure
WRONG = "Wrong email or password."
UNAVAILABLE = "Sign-in is paused for a moment: the lockout check did not answer. Try again shortly."


def _failures_key(email: str) -> str:
    return f"sacco:staff:login-failures:{email}"


def _address_key(address: str) -> str:
    return f"sacco:staff:login-failures-from:{address}"


def _failures(email: str, address: str | None) -> tuple[int, int]:
    """Failures counted for the email and for the address; RedisError when Redis does not
    answer (the caller refuses the sign-in then)."""
    keys = [_failures_key(email), _address_key(address or "-")]
    by_email, by_address = redis_client().mget(keys)
    return int(by_email or 0), int(by_address or 0) if address else 0


def _count_failure(email: str, address: str | None) -> None:
    try:
        pipe = redis_client().pipeline()
        for key in (_failures_key(email), *([_address_key(address)] if address else [])):
            pipe.incr(key)
            pipe.expire(key, LOCKOUT)
        pipe.execute()
    except redis.RedisError:
        log.warning("a failed sign-in went uncounted: Redis did not answer")


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash made as real ones are (same method and cost), of a password nobody knows:
    checking against it takes the time a real check takes."""
    return generate_password_hash(token_urlsafe(24))


def staff_authenticate(*, email: str, password: str, address: str | None = None) -> StaffUser:
    """The staff member whose email and password these are, or StaffError with what to
    show. Every attempt is audited (address, outcome; never the password). After
    MAX_FAILURES wrong passwords the email is locked for LOCKOUT, even to the right one,
    so a guesser gains nothing by going on; MAX_ADDRESS_FAILURES from one address lock the
    address the same way. Known, unknown and deactivated emails cost one hash check each."""
    email = (email or "").strip().lower()[:254]
    dummy = _dummy_hash()  # made on every process's first sign-in, whoever signs in
    user = db.session.scalar(select(StaffUser).where(StaffUser.email == email))
    outcome = "ok"
    try:
        by_email, by_address = _failures(email, address)
    except redis.RedisError:
        log.warning("login lockout unavailable: Redis did not answer; sign-in refused")
        outcome = "lockout unavailable"
    else:
        if by_email >= MAX_FAILURES:
            outcome = "locked"
        elif by_address >= MAX_ADDRESS_FAILURES:
            outcome = "address locked"
        else:
            stored = user.password_hash if user is not None else dummy
            right = check_password_hash(stored, password or "")
            if user is None:
                outcome = "unknown email"
            elif not right:
                outcome = "wrong password"
            elif not user.active:
                outcome = "inactive"
    audit_record(
        actor=f"staff:{email}" if user is not None else "anonymous",
        action="staff.login" if outcome == "ok" else "staff.login_failed",
        object_type="staff",
        object_id=email,
        after={"address": address, "outcome": outcome},
    )
    db.session.commit()
    minutes = int(LOCKOUT.total_seconds() // 60)
    if outcome == "lockout unavailable":
        raise StaffError(UNAVAILABLE)
    if outcome == "locked":
        raise StaffError(f"Too many failed sign-ins. Try again in {minutes} minutes.")
    if outcome == "address locked":
        raise StaffError(
            f"Too many failed sign-ins from this address. Try again in {minutes} minutes."
        )
    if outcome != "ok":
        if outcome in ("wrong password", "unknown email"):
            _count_failure(email, address)
        raise StaffError(WRONG)
    try:
        redis_client().delete(_failures_key(email))
    except redis.RedisError:
        pass
    assert user is not None  # noqa: S101 - outcome "ok" means a user was found
    return user


def staff_logout(*, user: StaffUser, address: str | None = None) -> None:
    """Sign out: every session of this staff member ends, on every device, a copied
    cookie included."""
    _end_sessions(user)
    audit_record(
        actor=f"staff:{user.email}",
        action="staff.logout",
        object_type="staff",
        object_id=user.email,
        after={"address": address},
    )
    db.session.commit()


def staff_change_password(*, user: StaffUser, current: str, new: str, repeat: str) -> int:
    """A staff member changes their own password: the current one proves it is them.
    Every other session of theirs ends; the new session version is returned for the
    session that made the change to carry on under."""
    if not check_password_hash(user.password_hash, current or ""):
        raise StaffError("The current password is wrong.")
    problem = password_problem(new or "", user_inputs=[user.email, user.name])
    if problem is not None:
        raise StaffError(f"The new password {problem}.")
    if new != repeat:
        raise StaffError("The two new passwords differ.")
    if new == current:
        raise StaffError("The new password is the same as the current one.")
    user.password_hash = generate_password_hash(new)
    user.must_change_password = False
    _end_sessions(user)
    audit_record(
        actor=f"staff:{user.email}",
        action="staff.password_change",
        object_type="staff",
        object_id=user.email,
    )
    db.session.commit()
    return user.session_version


def _managed(*, staff: StaffUser, user_id: int) -> StaffUser:
    """The staff user to change, locked, once the acting staff member may manage staff."""
    permission_require(staff, "staff.manage")
    user = lock_row(StaffUser, user_id)
    if user is None:
        raise StaffError("No such staff user.")
    return user


def _other_active_admins(user: StaffUser) -> int:
    """Active admins besides `user`, their rows locked: two admins taking each other's
    admin rights at once would otherwise both see the other still there."""
    return len(
        db.session.scalars(
            select(StaffUser.id)
            .where(StaffUser.role == "admin", StaffUser.active.is_(True), StaffUser.id != user.id)
            .with_for_update()
        ).all()
    )


def _keeps_an_admin(user: StaffUser, *, what: str) -> None:
    if user.role == "admin" and user.active and _other_active_admins(user) == 0:
        db.session.rollback()
        raise StaffError(
            f"{user.email} is the last active admin: {what} would leave no one to manage "
            "staff users. Add another admin first."
        )


def staff_set_active(*, user_id: int, active: bool, staff: StaffUser) -> StaffUser:
    """Deactivate (no more sign-ins) or reactivate a staff user. An admin cannot
    deactivate themself, nor the last active admin."""
    user = _managed(staff=staff, user_id=user_id)
    if user.active == active:
        db.session.rollback()
        raise StaffError(f"{user.email} is {'active' if active else 'deactivated'} already.")
    if not active:
        if user.id == staff.id:
            db.session.rollback()
            raise StaffError("You cannot deactivate yourself; another admin can.")
        _keeps_an_admin(user, what="deactivating them")
    user.active = active
    _end_sessions(user)
    audit_record(
        actor=f"staff:{staff.email}",
        action="staff.reactivate" if active else "staff.deactivate",
        object_type="staff",
        object_id=user.email,
        before={"active": not active},
        after={"active": active},
    )
    db.session.commit()
    return user


def staff_set_role(*, user_id: int, role: str, staff: StaffUser) -> StaffUser:
    """Give a staff user another role; the last active admin keeps theirs."""
    user = _managed(staff=staff, user_id=user_id)
    if role not in STAFF_ROLES:
        db.session.rollback()
        raise StaffError(f"The role must be one of {', '.join(STAFF_ROLES)}.")
    if user.role == role:
        db.session.rollback()
        raise StaffError(f"{user.email} is {role.replace('_', ' ')} already.")
    if role != "admin":
        _keeps_an_admin(user, what="taking their admin role")
    before = user.role
    user.role = role
    _end_sessions(user)  # a session signed in under the old role does not carry it on
    audit_record(
        actor=f"staff:{staff.email}",
        action="staff.role_change",
        object_type="staff",
        object_id=user.email,
        before={"role": before},
        after={"role": role},
    )
    db.session.commit()
    return user


def staff_set_accept_limit(*, user_id: int, limit: object, staff: StaffUser) -> StaffUser:
    """The largest promise or settlement this staff member may accept alone; above it a
    branch manager does. A blank limit removes it (the role's rules alone apply)."""
    user = _managed(staff=staff, user_id=user_id)
    text = str(limit or "").strip().replace(",", "")
    try:
        value = money_input(text, "the limit") if text else None
    except MoneyError as exc:
        db.session.rollback()
        raise StaffError(f"{exc}.") from exc
    before = user.accept_limit
    user.accept_limit = value
    audit_record(
        actor=f"staff:{staff.email}",
        action="staff.accept_limit",
        object_type="staff",
        object_id=user.email,
        before={"accept_limit": before},
        after={"accept_limit": value},
    )
    db.session.commit()
    return user


def staff_reset_password(*, user_id: int, password: str, staff: StaffUser) -> StaffUser:
    """An admin sets a new password for a staff user who lost theirs (and clears their
    sign-in lockout); the audit row says it happened, never what the password is. The
    user's sessions end, and they must choose their own password at the next sign-in:
    the admin who typed this one knows it."""
    user = _managed(staff=staff, user_id=user_id)
    problem = password_problem(password or "", user_inputs=[user.email, user.name])
    if problem is not None:
        db.session.rollback()
        raise StaffError(f"The new password {problem}.")
    user.password_hash = generate_password_hash(password)
    user.must_change_password = True
    _end_sessions(user)
    audit_record(
        actor=f"staff:{staff.email}",
        action="staff.password_reset",
        object_type="staff",
        object_id=user.email,
    )
    db.session.commit()
    try:
        redis_client().delete(_failures_key(user.email))
    except redis.RedisError:
        log.warning("could not clear the sign-in lockout of a reset staff user")
    return user
