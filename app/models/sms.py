"""The SMS outbox: a message is a row before it is ever sent."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Boolean, ForeignKey, Integer, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import UTCDateTime, utcnow


class SmsMessage(db.Model):
    __tablename__ = "sms_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    phone: Mapped[str] = mapped_column(String(16), index=True)
    template: Mapped[str] = mapped_column(String(40))
    language: Mapped[str] = mapped_column(String(2), default="en")
    body: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(14), default="transactional")  # or reminder
    idempotency_key: Mapped[str] = mapped_column(String(120), unique=True)
    # queued -> sending -> sent -> delivered | failed; retrying between tries
    status: Mapped[str] = mapped_column(String(12), default="queued", index=True)
    provider_message_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    provider_status: Mapped[str | None] = mapped_column(String(24))
    status_code: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[str | None] = mapped_column(String(24))
    cost_amount: Mapped[Decimal | None] = mapped_column(Numeric(10, 4))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(255))
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SmsSuppression(db.Model):
    """Numbers that asked for no reminders or promotions (opt-out / STOP)."""

    __tablename__ = "sms_suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(16), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[str] = mapped_column(String(12))  # opt-out|keyword
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
