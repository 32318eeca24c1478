"""The audit trail: who did what to money or loan state, with before and after."""

from __future__ import annotations

from typing import Any

from app.extensions import db
from app.models import AuditLog


def audit_record(
    *,
    actor: str,
    action: str,
    object_type: str,
    object_id: object,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    note: str | None = None,
) -> AuditLog:
    """Add an audit row to the caller's transaction (it commits with the change it records)."""
    row = AuditLog(
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        before=_plain(before),
        after=_plain(after),
        note=note,
    )
    db.session.add(row)
    return row


def _plain(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {k: (v if isinstance(v, (int, bool, type(None))) else str(v)) for k, v in values.items()}
