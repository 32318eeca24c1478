"""Reads about promises to pay: how often members keep them, and who a page of promises
belongs to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select

from app.extensions import db
from app.models import Loan, Member, PromiseToPay


@dataclass(frozen=True)
class Fulfilment:
    kept: int
    broken: int
    open: int
    partly: int = 0  # some of the amount arrived by the date, not all: not kept

    @property
    def settled(self) -> int:
        return self.kept + self.partly + self.broken

    @property
    def rate(self) -> Decimal | None:
        """Kept as a percentage of the promises settled (kept + partly + broken), to one
        place; None when none is settled yet. Open promises are not counted either way."""
        if self.settled == 0:
            return None
        return (Decimal(100) * self.kept / self.settled).quantize(Decimal("0.1"), ROUND_HALF_UP)


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

    def count(status: str, *also: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(
            func.sum(case((and_(PromiseToPay.status == status, *also), 1), else_=0)), 0
        )

    row = db.session.execute(
        select(
            count("kept"),
            count("broken"),
            count("open"),
            count("partly"),
            count("kept", in_month),
            count("broken", in_month),
            count("open", in_month),
            count("partly", in_month),
        )
    ).one()
    values = [int(v) for v in row]
    return PromiseFulfilment(
        overall=Fulfilment(*values[:4]),
        this_month=Fulfilment(*values[4:]),
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


# --- keeping rates by member, officer and month (issue 12) --------------------------------

_STATUSES = ("kept", "broken", "open", "partly")  # Fulfilment's field order


def _status_counts(*also: Any) -> list[Any]:
    return [
        func.coalesce(func.sum(case((and_(PromiseToPay.status == status, *also), 1), else_=0)), 0)
        for status in _STATUSES
    ]


def _fulfilment(values: Iterable[Any]) -> Fulfilment:
    return Fulfilment(*(int(v or 0) for v in values))


def month_bounds(day: date) -> tuple[date, date]:
    """The first day of `day`'s month and the first day of the next."""
    start = day.replace(day=1)
    return start, date(start.year + (start.month == 12), start.month % 12 + 1, 1)


def member_promise_keeping(*, member_id: int) -> Fulfilment:
    """How one member keeps their promises, all time (the member page)."""
    row = db.session.execute(
        select(*_status_counts()).where(PromiseToPay.member_id == member_id)
    ).one()
    return _fulfilment(row)


def officer_promise_keeping(*, start: date, end: date) -> dict[int | None, Fulfilment]:
    """Per loan officer (the loan's officer now, None for loans without one): promises
    falling due from `start` up to `end` (exclusive), one grouped query."""
    rows = db.session.execute(
        select(Loan.officer_id, *_status_counts())
        .join(Loan, Loan.id == PromiseToPay.loan_id)
        .where(PromiseToPay.promised_date >= start, PromiseToPay.promised_date < end)
        .group_by(Loan.officer_id)
    ).all()
    return {row[0]: _fulfilment(row[1:]) for row in rows}


def monthly_promise_keeping(
    *, today: date, months: int = 6, officer_id: int | None = None
) -> list[tuple[date, Fulfilment]]:
    """The last `months` calendar months by promised date, newest first, in one query;
    for one officer's loans when `officer_id` is given."""
    starts = [month_bounds(today)[0]]
    for _ in range(months - 1):
        starts.append(month_bounds(starts[-1] - timedelta(days=1))[0])
    columns = []
    for start in starts:
        end = month_bounds(start)[1]
        columns += _status_counts(
            PromiseToPay.promised_date >= start, PromiseToPay.promised_date < end
        )
    query = select(*columns).where(PromiseToPay.promised_date >= starts[-1])
    if officer_id is not None:
        query = query.join(Loan, Loan.id == PromiseToPay.loan_id).where(
            Loan.officer_id == officer_id
        )
    row = list(db.session.execute(query).one())
    width = len(_STATUSES)
    return [
        (start, _fulfilment(row[n * width : (n + 1) * width])) for n, start in enumerate(starts)
    ]
