"""Staff logins for the console."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import redis
from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

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
log = logging.getLogger(__name__)


class StaffError(SaccoError):
    pass


def staff_add(
    *, email: str, role: str, password: str, name: str = "", actor: str = "system"
) -> StaffUser:
    email = (email or "").strip().lower()
    if not _EMAIL.match(email):
        raise StaffError(f"not an email address: {email!r}")
    if role not in STAFF_ROLES:
        raise StaffError(f"role must be one of {', '.join(STAFF_ROLES)}")
    if len(password or "") < MIN_PASSWORD:
        raise StaffError(f"password must be at least {MIN_PASSWORD} characters")
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
LOCKOUT = timedelta(minutes=15)  # how long the lock lasts, counted from the last failure
WRONG = "Wrong email or password."


def _failures_key(email: str) -> str:
    return f"sacco:staff:login-failures:{email}"


def _failures(email: str) -> int:
    try:
        return int(redis_client().get(_failures_key(email)) or 0)
    except redis.RedisError:
        log.warning("login lockout unavailable: Redis did not answer")
        return 0


def _count_failure(email: str) -> int:
    try:
        pipe = redis_client().pipeline()
        pipe.incr(_failures_key(email))
        pipe.expire(_failures_key(email), LOCKOUT)
        return int(pipe.execute()[0])
    except redis.RedisError:
        return 0


def staff_authenticate(*, email: str, password: str, address: str | None = None) -> StaffUser:
    """The staff member whose email and password these are, or StaffError with what to
    show. Every attempt is audited (address, outcome; never the password). After
    MAX_FAILURES wrong passwords the email is locked for LOCKOUT, even to the right one,
    so a guesser gains nothing by going on."""
    email = (email or "").strip().lower()[:254]
    user = db.session.scalar(select(StaffUser).where(StaffUser.email == email))
    outcome = "ok"
    if _failures(email) >= MAX_FAILURES:
        outcome = "locked"
    elif user is None or not check_password_hash(user.password_hash, password or ""):
        outcome = "wrong password" if user is not None else "unknown email"
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
    if outcome == "locked":
        minutes = int(LOCKOUT.total_seconds() // 60)
        raise StaffError(f"Too many failed sign-ins. Try again in {minutes} minutes.")
    if outcome != "ok":
        if outcome in ("wrong password", "unknown email"):
            _count_failure(email)
        raise StaffError(WRONG)
    try:
        redis_client().delete(_failures_key(email))
    except redis.RedisError:
        pass
    assert user is not None  # noqa: S101 - outcome "ok" means a user was found
    return user


def staff_logout(*, user: StaffUser, address: str | None = None) -> None:
    audit_record(
        actor=f"staff:{user.email}",
        action="staff.logout",
        object_type="staff",
        object_id=user.email,
        after={"address": address},
    )
    db.session.commit()


def staff_change_password(*, user: StaffUser, current: str, new: str, repeat: str) -> None:
    """A staff member changes their own password: the current one proves it is them."""
    if not check_password_hash(user.password_hash, current or ""):
        raise StaffError("The current password is wrong.")
    if len(new or "") < MIN_PASSWORD:
        raise StaffError(f"The new password must be at least {MIN_PASSWORD} characters.")
    if new != repeat:
        raise StaffError("The two new passwords differ.")
    if new == current:
        raise StaffError("The new password is the same as the current one.")
    user.password_hash = generate_password_hash(new)
    audit_record(
        actor=f"staff:{user.email}",
        action="staff.password_change",
        object_type="staff",
        object_id=user.email,
    )
    db.session.commit()


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
    sign-in lockout); the audit row says it happened, never what the password is."""
    user = _managed(staff=staff, user_id=user_id)
    if len(password or "") < MIN_PASSWORD:
        db.session.rollback()
        raise StaffError(f"The new password must be at least {MIN_PASSWORD} characters.")
    user.password_hash = generate_password_hash(password)
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
