"""Members as the console's phone page offers them: a short list to dial, and who owns a
number typed there."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from app.extensions import db
from app.models import Member


@dataclass(frozen=True)
class MemberToDial:
    phone: str  # 07XXXXXXXX, as a person types it
    name: str
    member_no: str | None


def _to_dial(member: Member) -> MemberToDial:
    return MemberToDial(phone="0" + member.phone[3:], name=member.name, member_no=member.member_no)


def members_to_dial(*, limit: int = 20) -> list[MemberToDial]:
    """The first active members by number: enough to pick one for a demo, never all."""
    rows = db.session.scalars(
        select(Member).where(Member.status == "active").order_by(Member.id).limit(limit)
    )
    return [_to_dial(m) for m in rows]


def member_to_dial(*, phone: str) -> MemberToDial | None:
    """The member whose phone this is (`phone` normalised, 2547XXXXXXXX), if any."""
    member = db.session.scalar(select(Member).where(Member.phone == phone))
    return _to_dial(member) if member is not None else None
