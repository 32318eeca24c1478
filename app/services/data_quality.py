"""The weekly data-quality check: records that collections and recovery cannot work with.

Each rule is one query; what it finds is kept per run (`data_quality_findings`, unique per
run date, rule and object), so running a week twice finds and writes nothing new, and the
console lists what the latest run found.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from sqlalchemy import func, insert, or_, select
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import (
    Agreement,
    AgreementInstallment,
    DataQualityFinding,
    Hearing,
    LegalCase,
    Loan,
    Member,
)
from app.money import money_text
from app.selectors.loans import LIVE_STATUSES
from app.services.recovery import OPEN_CASE


def _schedule_not_adding_up() -> list[tuple[int, str]]:
    scheduled = (
        select(
            AgreementInstallment.agreement_id.label("agreement_id"),
            func.sum(AgreementInstallment.amount).label("total"),
        )
        .group_by(AgreementInstallment.agreement_id)
        .subquery()
    )
    total = func.coalesce(scheduled.c.total, 0)
    rows = db.session.execute(
        select(Agreement.id, total, Agreement.settlement_amount)
        .outerjoin(scheduled, scheduled.c.agreement_id == Agreement.id)
        .where(Agreement.status != "deleted", total != Agreement.settlement_amount)
    )
    return [
        (id_, f"schedule adds up to {money_text(t)}, the settlement is {money_text(s)}")
        for id_, t, s in rows
    ]


def _live_loans_without_officer() -> list[tuple[int, str]]:
    rows = db.session.execute(
        select(Loan.id, Loan.loan_no).where(
            Loan.status.in_(LIVE_STATUSES), Loan.officer_id.is_(None)
        )
    )
    return [(id_, f"loan {no} has no officer to follow it up") for id_, no in rows]


def _open_cases_without_hearing() -> list[tuple[int, str]]:
    rows = db.session.execute(
        select(LegalCase.id, LegalCase.court, LegalCase.case_number)
        .outerjoin(Hearing, Hearing.case_id == LegalCase.id)
        .where(LegalCase.status.in_(OPEN_CASE), Hearing.id.is_(None))
    )
    return [(id_, f"case {number} at {court} has no hearing date") for id_, court, number in rows]


def _members_without_phone() -> list[tuple[int, str]]:
    rows = db.session.execute(
        select(Member.id, Member.member_no).where(
            Member.status == "active", or_(Member.phone.is_(None), Member.phone == "")
        )
    )
    return [(id_, f"member {no} has no phone to reach") for id_, no in rows]


# rule -> (object type, what breaks it: (object id, detail in words))
RULES: dict[str, tuple[str, Callable[[], list[tuple[int, str]]]]] = {
    "agreement_schedule_total": ("agreement", _schedule_not_adding_up),
    "loan_without_officer": ("loan", _live_loans_without_officer),
    "case_without_hearing": ("case", _open_cases_without_hearing),
    "member_without_phone": ("member", _members_without_phone),
}


def data_quality_check(*, as_of: date) -> tuple[int, int]:
    """Run every rule for the week of `as_of`; return (found, newly recorded)."""
    found = written = 0
    for rule, (object_type, query) in RULES.items():
        for object_id, detail in query():
            found += 1
            row = {
                "run_date": as_of,
                "rule": rule,
                "object_type": object_type,
                "object_id": str(object_id),
                "detail": str(detail)[:255],
            }
            try:
                with db.session.begin_nested():
                    db.session.execute(insert(DataQualityFinding).values(**row))
                written += 1
            except IntegrityError:
                pass  # found already by this run date: a replay writes nothing twice
    db.session.commit()
    return found, written
