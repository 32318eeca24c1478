"""Reads of dividend runs: the preview's summary for the console, a member's own figures
for USSD ("My dividends")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select

from app.extensions import db
from app.models import DividendLine, DividendRun

TOP = 20  # the largest lines the preview shows


def dividend_summary(run_id: int, top: int = TOP) -> tuple[DividendRun, list[DividendLine]]:
    """The run (with its totals) and its `top` lines of largest net, largest first (ties
    by member, so the list is stable). LookupError for an unknown run."""
    run = db.session.get(DividendRun, run_id)
    if run is None:
        raise LookupError(f"no dividend run {run_id}")
    lines = list(
        db.session.scalars(
            select(DividendLine)
            .where(DividendLine.run_id == run_id)
            .order_by(DividendLine.net.desc(), DividendLine.member_id)
            .limit(top)
        )
    )
    return run, lines


def dividend_runs(limit: int = 20) -> list[DividendRun]:
    """The latest runs, newest year first (the console's list)."""
    return list(
        db.session.scalars(
            select(DividendRun)
            .order_by(DividendRun.year.desc(), DividendRun.id.desc())
            .limit(limit)
        )
    )


@dataclass(frozen=True)
class MemberDividend:
    """A member's line in one year's run, with the year and the run's status: the fields
    of DividendLine a member is shown, and whether it is paid."""

    year: int
    status: str  # the run's: draft, approved, posting, posted
    dividend: Decimal
    interest: Decimal
    tax: Decimal
    net: Decimal
    paid_at: datetime | None

    @property
    def paid(self) -> bool:
        return self.paid_at is not None


def member_dividends(member_id: int, years: list[int]) -> list[MemberDividend]:
    """The member's figures in the live (not cancelled) run of each of `years` that has
    one, newest year first. Drafts are included: callers showing members only what is
    decided filter on `status` (USSD shows approved and paid runs)."""
    rows = db.session.execute(
        select(DividendRun.year, DividendRun.status, DividendLine)
        .join(DividendLine, DividendLine.run_id == DividendRun.id)
        .where(
            DividendLine.member_id == member_id,
            DividendRun.year.in_(list(years)),
            DividendRun.status != "cancelled",
        )
        .order_by(DividendRun.year.desc())
    ).all()
    return [
        MemberDividend(
            year=year,
            status=status,
            dividend=line.dividend,
            interest=line.interest,
            tax=line.tax,
            net=line.net,
            paid_at=line.paid_at,
        )
        for year, status, line in rows
    ]
