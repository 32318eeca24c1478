"""M-PESA: requests we send, callbacks we receive (raw first), and payments we post."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import Money, UTCDateTime, utcnow


class MpesaRequest(db.Model):
    """An STK push, B2C payment or status query, stored before it is sent."""

    __tablename__ = "mpesa_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), index=True)  # stk|b2c|status
    # pending -> accepted -> succeeded|failed; unknown when a send timed out (reconcile).
    status: Mapped[str] = mapped_column(String(10), default="pending", index=True)
    originator_conversation_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    conversation_id: Mapped[str | None] = mapped_column(String(64), index=True)
    merchant_request_id: Mapped[str | None] = mapped_column(String(64))
    checkout_request_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    loan_id: Mapped[int | None] = mapped_column(ForeignKey("loans.id"), index=True)
    phone: Mapped[str] = mapped_column(String(12))
    amount: Mapped[Decimal] = mapped_column(Money())
    account_reference: Mapped[str | None] = mapped_column(String(12))
    purpose: Mapped[str] = mapped_column(String(20), default="repayment")
    result_code: Mapped[str | None] = mapped_column(String(16))
    result_desc: Mapped[str | None] = mapped_column(String(255))
    receipt: Mapped[str | None] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class MpesaCallback(db.Model):
    """Every callback body exactly as received, written before any processing."""

    __tablename__ = "mpesa_callbacks"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    raw_body: Mapped[str] = mapped_column(Text)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    reference: Mapped[str | None] = mapped_column(String(64), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # received -> processed | duplicate | unmatched | failed
    status: Mapped[str] = mapped_column(String(12), default="received", index=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)


class Payment(db.Model):
    """Money that moved through M-PESA. One row per receipt, whatever the channel."""

    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(primary_key=True)
    receipt: Mapped[str] = mapped_column(String(20), unique=True)
    channel: Mapped[str] = mapped_column(String(4))  # stk|c2b|b2c
    direction: Mapped[str] = mapped_column(String(3))  # in|out
    amount: Mapped[Decimal] = mapped_column(Money())
    phone: Mapped[str | None] = mapped_column(String(80))  # may be masked or hashed (C2B)
    bill_ref: Mapped[str | None] = mapped_column(String(40))
    payer_name: Mapped[str | None] = mapped_column(String(120))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    loan_id: Mapped[int | None] = mapped_column(ForeignKey("loans.id"), index=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("mpesa_requests.id"))
    status: Mapped[str] = mapped_column(String(10), default="posted")  # posted|suspense|assigned
    journal_entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    transacted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
