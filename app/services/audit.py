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
    return {str(k): _plain_value(v) for k, v in values.items()}


def _plain_value(value: Any) -> Any:
    """JSON's own kinds as they are (a nested mapping or list stays one, not its repr);
    anything else, an amount or a date, as its text."""
    if isinstance(value, (int, bool, type(None))):
        return value
    if isinstance(value, dict):
        return _plain(value)
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    return str(value)
