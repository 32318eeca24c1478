"""The SMS outbox: a message is a row before it is ever sent."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.types import Money, UTCDateTime, utcnow


class SmsMessage(Model):
    __tablename__ = "sms_messages"
    # The last 30 days' outcomes (the dashboard's delivery rate) from the index alone.
    __table_args__ = (Index("ix_sms_messages_created_at_status", "created_at", "status"),)

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
    # What a reminder is about (e.g. {"installment_id": 5}), checked again at send time
    # so a member who paid since the scan is not reminded.
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SmsSuppression(Model):
    """Numbers that asked for no reminders or promotions (opt-out / STOP)."""

    __tablename__ = "sms_suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(16), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[str] = mapped_column(String(12))  # opt-out|keyword
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class SmsInbound(Model):
    """An SMS a member sent us, kept once per provider id (the provider retries)."""

    __tablename__ = "sms_inbound"

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(64), unique=True)
    phone: Mapped[str] = mapped_column(String(16), index=True)
    to: Mapped[str | None] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text, default="")
    link_id: Mapped[str | None] = mapped_column(String(64))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    keyword: Mapped[str | None] = mapped_column(String(12))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PromiseToPay(Model):
    """A member's promise to pay an overdue loan by a date (made on USSD or to staff)."""

    __tablename__ = "promises_to_pay"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money())
    promised_date: Mapped[date] = mapped_column(Date, index=True)
    # open -> kept | partly (some of it paid by the date) | broken
    status: Mapped[str] = mapped_column(String(8), default="open", index=True)
    paid_amount: Mapped[Decimal | None] = mapped_column(Money())  # what arrived by the date
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    channel: Mapped[str] = mapped_column(String(8), default="ussd")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
