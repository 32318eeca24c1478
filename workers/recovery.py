"""Collections and recovery scans; `workers.schedule.JOBS` names them. Each is idempotent
for its day (`--as-of-date` replays a day and changes nothing the second time)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta

from sqlalchemy import Select, select

from app.batch import Batch, ChunkStats, batch_run
from app.extensions import db
from app.models import Agreement, AgreementInstallment, Hearing, LegalCase, Loan
from app.services.agreements import agreements_check_default, agreements_in_force_ids
from app.services.audit import audit_record
from app.services.data_quality import data_quality_check
from app.services.recovery import OPEN_CASE, legal_rollup, milestones_overdue
from workers.reminders import Reminder, queue_reminders_chunk, run_reminders
from workers.runner import JobStats

HEARING_NOTICE_DAYS = 7


def data_quality_job(*, as_of: date, stats: JobStats) -> None:
    """Weekly: agreements whose schedule does not add up, live loans without an officer,
    open cases without a hearing, members without a phone (listed in the console)."""
    found, written = data_quality_check(as_of=as_of)
    stats.records_scanned = found
    stats.records_updated = written


def agreement_scan_ids(as_of: date) -> list[int]:
    return agreements_in_force_ids(as_of)


def agreement_scan_chunk(agreement_ids: Sequence[int], as_of: date, stats: ChunkStats) -> None:
    scan = agreements_check_default(agreement_ids, as_of=as_of)
    stats.records_updated += len(scan.activated) + len(scan.defaulted)


AGREEMENT_SCAN = Batch("agreement-scan", agreement_scan_ids, agreement_scan_chunk, "agreement")


def agreement_scan_job(*, as_of: date, stats: JobStats) -> None:
    """Approved agreements whose first date has come become active; an active one unpaid
    past its threshold (after grace) becomes defaulted, dated from the schedule.
    records_scanned counts the agreements looked at, records_updated the changes."""
    batch_run(AGREEMENT_SCAN, as_of=as_of, stats=stats)


def _agreements_due(
    as_of: date, *conditions: object
) -> Select[tuple[AgreementInstallment, int, int, str | None]]:
    tomorrow = as_of + timedelta(days=1)
    return (
        select(AgreementInstallment, Agreement.id, Loan.member_id, Loan.loan_no)
        .join(Agreement, AgreementInstallment.agreement_id == Agreement.id)
        .join(Loan, Agreement.loan_id == Loan.id)
        .where(
            # An approved agreement turns active on its first date: remind before it too.
            Agreement.status.in_(("approved", "active")),
            AgreementInstallment.due_date == tomorrow,
            AgreementInstallment.paid < AgreementInstallment.amount,
            *conditions,
        )
        .order_by(Loan.member_id, AgreementInstallment.id)
    )


def agreement_reminders_members(as_of: date) -> list[int]:
    """Members with an agreement installment due tomorrow and not paid in full."""
    return list(
        db.session.scalars(
            _agreements_due(as_of)
            .with_only_columns(Loan.member_id)
            .distinct()
            .order_by(None)
            .order_by(Loan.member_id)
        )
    )


def _agreement_reminders_chunk(
    member_ids: Sequence[int], as_of: date, stats: ChunkStats, now: datetime | None = None
) -> None:
    rows = db.session.execute(_agreements_due(as_of, Loan.member_id.in_(list(member_ids)))).all()
    reminders = [
        Reminder(
            member_id=member_id,
            kind="agreement_due",
            template="reminder_agreement_due",
            loan_no=loan_no or "",
            amount=row.amount - row.paid,
            params={"date": row.due_date},
            context={"agreement_id": agreement_id},
        )
        for row, agreement_id, member_id, loan_no in rows
    ]
    queue_reminders_chunk(reminders, as_of=as_of, stats=stats, now=now)


AGREEMENT_REMINDERS = Batch(
    "agreement-reminders", agreement_reminders_members, _agreement_reminders_chunk, "member"
)


def agreement_reminders_job(*, as_of: date, stats: JobStats, now: datetime | None = None) -> None:
    """An agreement installment due tomorrow and not paid in full: the member is reminded
    (one SMS per member and day; the outbox's idempotency key makes a rerun send none).
    records_scanned counts the members reminded about."""
    run_reminders(AGREEMENT_REMINDERS, as_of=as_of, stats=stats, now=now)


def hearing_notices_job(*, as_of: date, stats: JobStats) -> None:
    """Hearings of open cases in the next 7 days: staff are told once per hearing (an
    audit row "hearing.notice", which the recovery pages and the legal report show)."""
    until = as_of + timedelta(days=HEARING_NOTICE_DAYS)
    rows = db.session.execute(
        select(Hearing, LegalCase)
        .join(LegalCase, Hearing.case_id == LegalCase.id)
        .where(
            LegalCase.status.in_(OPEN_CASE),
            Hearing.held_on >= as_of,
            Hearing.held_on <= until,
            Hearing.notified_on.is_(None),
        )
        .order_by(Hearing.held_on, Hearing.id)
    ).all()
    stats.records_scanned = len(rows)
    for hearing, case in rows:
        hearing.notified_on = as_of
        audit_record(
            actor="system",
            action="hearing.notice",
            object_type="legal_case",
            object_id=case.id,
            after={
                "court": case.court,
                "case_number": case.case_number,
                "loan_id": case.loan_id,
                "hearing_on": hearing.held_on,
            },
        )
        stats.notifications_sent += 1
    db.session.commit()


def hearing_rollup_job(*, as_of: date, stats: JobStats) -> None:
    """Each loan's next hearing date, rolled up from its open cases."""
    stats.records_updated = legal_rollup(as_of=as_of)


def milestones_overdue_job(*, as_of: date, stats: JobStats) -> None:
    """Recovery steps past their due date and not done: flagged once, audited."""
    flagged = milestones_overdue(as_of=as_of)
    stats.records_updated = len(flagged)
