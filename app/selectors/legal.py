"""Reads for the recovery pages: the loans in recovery, and one loan's cases, hearings,
recovery steps and write-off requests (app/services/recovery.py changes them)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, or_, select
from sqlalchemy.orm import selectinload

from app.extensions import db
from app.models import LegalCase, Loan, RecoveryMilestone, StaffUser, WriteOffRequest
from app.selectors.loans import LIVE_STATUSES


def recovery_loans(*, page: int, per_page: int) -> tuple[list[Loan], int]:
    """Loans in default, written off, or with any legal or recovery action: the next
    hearing first, then the longest late."""
    acted = or_(
        Loan.id.in_(select(LegalCase.loan_id)),
        Loan.id.in_(select(RecoveryMilestone.loan_id)),
        Loan.id.in_(select(WriteOffRequest.loan_id)),
    )
    where = or_(
        Loan.status == "written_off",
        Loan.status.in_(LIVE_STATUSES) & Loan.in_default.is_(True),
        acted,
    )
    total = db.session.scalar(select(func.count()).select_from(Loan).where(where)) or 0
    loans = db.session.scalars(
        select(Loan)
        .where(where)
        .order_by(
            Loan.next_hearing_on.is_(None),
            Loan.next_hearing_on,
            Loan.days_past_due.desc(),
            Loan.id,
        )
        .limit(per_page)
        .offset((max(page, 1) - 1) * per_page)
    )
    return list(loans), total


@dataclass(frozen=True)
class LoanRecovery:
    loan: Loan
    cases: list[LegalCase]
    milestones: list[RecoveryMilestone]
    requests: list[WriteOffRequest]
    staff: dict[int, str]  # staff id -> email, for who filed, started, recommended, decided

    def overdue(self, milestone: RecoveryMilestone, today: date) -> bool:
        return milestone.done_on is None and milestone.due_date < today


def loan_recovery(*, loan_id: int) -> LoanRecovery | None:
    loan = db.session.get(Loan, loan_id)
    if loan is None:
        return None
    cases = list(
        db.session.scalars(
            select(LegalCase)
            .where(LegalCase.loan_id == loan_id)
            .options(selectinload(LegalCase.hearings))
            .order_by(LegalCase.filing_date.desc(), LegalCase.id.desc())
        )
    )
    milestones = list(
        db.session.scalars(
            select(RecoveryMilestone)
            .where(RecoveryMilestone.loan_id == loan_id)
            .order_by(RecoveryMilestone.done_on.is_not(None), RecoveryMilestone.due_date)
        )
    )
    requests = list(
        db.session.scalars(
            select(WriteOffRequest)
            .where(WriteOffRequest.loan_id == loan_id)
            .order_by(WriteOffRequest.id.desc())
        )
    )
    ids = {c.filed_by_id for c in cases} | {m.started_by_id for m in milestones}
    for r in requests:
        ids.add(r.recommended_by_id)
        if r.decided_by_id is not None:
            ids.add(r.decided_by_id)
    rows: Iterable[tuple[int, str]] = (
        db.session.execute(select(StaffUser.id, StaffUser.email).where(StaffUser.id.in_(ids)))
        if ids
        else []
    )
    staff = {staff_id: email for staff_id, email in rows}
    return LoanRecovery(loan, cases, milestones, requests, staff)
