"""Small factories: the least data a test needs, made through the real services."""

from __future__ import annotations

import itertools
from datetime import date
from decimal import Decimal

from app.models import Member
from app.services.members import member_add, member_deposit

_seq = itertools.count(1)


def make_member(
    *, savings: Decimal | int | str = 0, language: str = "en", **kwargs: object
) -> Member:
    n = next(_seq)
    member = member_add(
        name=str(kwargs.pop("name", f"Member {n}")),
        phone=str(kwargs.pop("phone", f"07{n:08d}")),
        national_id=kwargs.pop("national_id", f"{30000000 + n}"),  # type: ignore[arg-type]
        language=language,
    )
    if Decimal(str(savings)) > 0:
        member_deposit(
            member_id=member.id,
            amount=savings,
            reference=f"FACTORY-{n}",
            value_date=date(2026, 1, 1),
        )
    return member
