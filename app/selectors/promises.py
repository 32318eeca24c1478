"""Reads about promises to pay: how often members keep them, and who a page of promises
belongs to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import and_, case, func, select

from app.extensions import db
from app.models import Loan, Member, PromiseToPay


@dataclass(frozen=True)
class Fulfilment:
    kept: int
    broken: int
    open: int

    @property
    def rate(self) -> Decimal | None:
        """Kept as a percentage of the promises settled (kept + broken), to one place;
        None when none is settled yet. Open promises are not counted either way."""
        settled = self.kept + self.broken
        if settled == 0:
            return None
        return (Decimal(100) * self.kept / settled).quantize(Decimal("0.1"), ROUND_HALF_UP)


@dataclass(frozen=True)
class PromiseFulfilment:
    overall: Fulfilment
    this_month: Fulfilment  # promises falling due in the calendar month of `today`
    month_start: date


def promise_fulfilment(*, today: date) -> PromiseFulfilment:
    """Kept, broken and open promises, overall and for this month (by the promised date),
    counted by the database in one aggregate query."""
    month_start = today.replace(day=1)
    next_month = date(today.year + (today.month == 12), today.month % 12 + 1, 1)
    in_month = and_(
        PromiseToPay.promised_date >= month_start, PromiseToPay.promised_date < next_month
    )

    def count(status: str, *also: object) -> object:
        return func.coalesce(
            func.sum(case((and_(PromiseToPay.status == status, *also), 1), else_=0)), 0
        )

    row = db.session.execute(
        select(
            count("kept"),
            count("broken"),
            count("open"),
            count("kept", in_month),
            count("broken", in_month),
            count("open", in_month),
        )
    ).one()
    values = [int(v) for v in row]
    return PromiseFulfilment(
        overall=Fulfilment(*values[:3]),
        this_month=Fulfilment(*values[3:]),
        month_start=month_start,
    )


@dataclass(frozen=True)
class PromiseParties:
    members: dict[int, tuple[str, str]]  # id -> (member number, name)
    loans: dict[int, str]  # id -> loan number


def promise_parties(*, member_ids: Iterable[int], loan_ids: Iterable[int]) -> PromiseParties:
    """The members and loans of one page of promises, in two queries."""
    members, loans = set(member_ids), set(loan_ids)
    found_members = (
        db.session.execute(
            select(Member.id, Member.member_no, Member.name).where(Member.id.in_(members))
        ).all()
        if members
        else []
    )
    found_loans = (
        db.session.execute(select(Loan.id, Loan.loan_no).where(Loan.id.in_(loans))).all()
        if loans
        else []
    )
    return PromiseParties(
        members={r.id: (r.member_no or "", r.name) for r in found_members},
        loans={r.id: r.loan_no or f"#{r.id}" for r in found_loans},
    )
