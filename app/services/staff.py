"""Staff logins for the console."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from app.errors import SaccoError
from app.extensions import db
from app.models import StaffUser
from app.models.member import STAFF_ROLES
from app.services.audit import audit_record

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD = 10


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


def staff_authenticate(*, email: str, password: str) -> StaffUser | None:
    user = db.session.scalar(
        select(StaffUser).where(StaffUser.email == (email or "").strip().lower())
    )
    if (
        user is None
        or not user.active
        or not check_password_hash(user.password_hash, password or "")
    ):
        return None
    return user
