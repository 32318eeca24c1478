"""Members (the people who dial in) and staff (the people who log in to /admin)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from flask_login import UserMixin
from sqlalchemy import Boolean, CheckConstraint, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.types import Money, UTCDateTime, utcnow

MEMBER_STATUSES = ("active", "dormant", "suspended", "exited")
LANGUAGES = ("en", "sw")
STAFF_ROLES = ("admin", "loan_officer", "branch_manager", "compliance", "auditor")


class Member(Model):
    __tablename__ = "members"
    __table_args__ = (
        CheckConstraint("status IN ('active','dormant','suspended','exited')", name="status"),
        CheckConstraint("language IN ('en','sw')", name="language"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Assigned from the id right after insert ("M" + 6 digits); unique so it can be an account ref.
    member_no: Mapped[str | None] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    phone: Mapped[str] = mapped_column(String(12), unique=True)  # 2547XXXXXXXX / 2541XXXXXXXX
    national_id: Mapped[str | None] = mapped_column(String(20), unique=True)
    # Indexed for the dashboard's member counts (an index-only scan, not the table).
    status: Mapped[str] = mapped_column(String(12), default="active", index=True)
    language: Mapped[str] = mapped_column(String(2), default="en")
    pin_hash: Mapped[str | None] = mapped_column(String(255))
    failed_pin_count: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The one-time code staff give at registration (or again from the member page) for a
    # first PIN without the ID number: only its HMAC is kept, cleared when a PIN is set.
    activation_code_hash: Mapped[str | None] = mapped_column(String(64))
    activation_code_expires: Mapped[datetime | None] = mapped_column(UTCDateTime())
    external_ref: Mapped[str | None] = mapped_column(
        String(40), unique=True
    )  # id in an imported book
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"<Member {self.member_no} {self.phone}>"

    def __str__(self) -> str:
        return f"{self.member_no} {self.name}"


class StaffUser(UserMixin, Model):
    __tablename__ = "staff_users"
    __table_args__ = (
        CheckConstraint(
            "role IN ('admin','loan_officer','branch_manager','compliance','auditor')", name="role"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120), default="")
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # The largest promise or settlement this officer may accept alone; above it a
    # supervisor approves. None: no limit of their own (the role's rules apply).
    accept_limit: Mapped[Decimal | None] = mapped_column(Money())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Every console session carries the version it was signed in under; bumping it (sign-
    # out, password change or reset, role change, deactivation) ends every session at once,
    # a copied cookie included, with no session store to lose.
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Set by an admin's password reset: the console shows only the change-password page
    # until the staff member has chosen their own.
    must_change_password: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )

    @property
    def is_active(self) -> bool:  # Flask-Login asks this
        return self.active

    def __repr__(self) -> str:
        return f"<StaffUser {self.email} {self.role}>"
