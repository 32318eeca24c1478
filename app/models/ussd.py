"""USSD end-of-session notifications, kept to see where members give up."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.types import UTCDateTime, utcnow


class UssdEvent(Model):
    """One `POST /ussd/events`. The member's typed input is not kept: it holds the PIN."""

    __tablename__ = "ussd_events"
    # The member page lists a phone's newest sessions.
    __table_args__ = (Index("ix_ussd_events_phone_id", "phone", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[str] = mapped_column(String(100), index=True)
    phone: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str | None] = mapped_column(String(40), index=True)
    hops: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    last_response: Mapped[str | None] = mapped_column(Text)  # the screen they stopped at
    error: Mapped[str | None] = mapped_column(String(255))
    cost: Mapped[str | None] = mapped_column(String(20))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
