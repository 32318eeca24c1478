"""Append-only audit log of staff and system actions on money and loan state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, Text, event
from sqlalchemy.orm import Mapped, Session, mapped_column

from app.extensions import Model
from app.models.types import UTCDateTime, utcnow


class AuditLog(Model):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    # "staff:<email>" (an email is up to 254 characters) or "system"
    actor: Mapped[str] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(60), index=True)
    object_type: Mapped[str] = mapped_column(String(30))
    object_id: Mapped[str] = mapped_column(String(255), index=True)  # an email, a path
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    note: Mapped[str | None] = mapped_column(Text)  # a reason or a note, whole


class AppendOnlyError(RuntimeError):
    pass


@event.listens_for(Session, "before_flush")
def _audit_is_append_only(session: Session, flush_context: object, instances: object) -> None:
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, AuditLog):
            raise AppendOnlyError("the audit log is append-only")
