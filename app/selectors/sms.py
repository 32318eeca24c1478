"""Reads for the console's SMS pages: who a number or a message belongs to, and whether a
failed message was sent again. Each takes one page's worth of keys (bounded by the page)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from app.extensions import db
from app.models import Member, SmsMessage


@dataclass(frozen=True)
class MemberLabel:
    id: int
    member_no: str
    name: str


def _members(where: Any) -> list[Any]:
    return list(
        db.session.execute(
            select(Member.id, Member.member_no, Member.name, Member.phone).where(where)
        ).all()
    )


def member_labels(*, member_ids: Iterable[int]) -> dict[int, MemberLabel]:
    """Member number and name by member id (one query for a page of rows)."""
    ids = {i for i in member_ids if i is not None}
    if not ids:
        return {}
    return {
        row.id: MemberLabel(row.id, row.member_no or "", row.name)
        for row in _members(Member.id.in_(ids))
    }


def member_labels_by_phone(*, phones: Iterable[str]) -> dict[str, MemberLabel]:
    """The member holding each number now (an opt-out is kept by number, not member)."""
    wanted = {p for p in phones if p}
    if not wanted:
        return {}
    return {
        row.phone: MemberLabel(row.id, row.member_no or "", row.name)
        for row in _members(Member.phone.in_(wanted))
    }


def resend_key(message_id: int) -> str:
    """The outbox key of the one resend a failed message may have."""
    return f"resend:{message_id}"


def sms_resent_as(*, message_id: int) -> SmsMessage | None:
    """The message that sent this one again, if staff resent it."""
    return db.session.scalar(
        select(SmsMessage).where(SmsMessage.idempotency_key == resend_key(message_id))
    )
