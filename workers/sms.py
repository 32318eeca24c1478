"""RQ jobs for the SMS outbox: they take ids and call the service."""

from __future__ import annotations

from app.services.sms import sms_deliver


def send_sms(message_id: int) -> str:
    """Send one outbox message (safe to run twice: the service claims the row first)."""
    return sms_deliver(message_id=message_id)
