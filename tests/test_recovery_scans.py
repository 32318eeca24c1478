"""The collections and recovery scans under the job contract: each does its work once for a
day, and `--as-of-date` replays a day without doing it twice."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from flask import Flask
from sqlalchemy import func, select

from app.extensions import db
from app.models import Agreement, AuditLog, Hearing, LegalCase, Loan, SmsMessage
from app.selectors.loans import loan_debt
from app.services.agreements import agreement_approve, agreement_draft, agreement_submit
from tests.loan_factories import make_loan, make_product, make_staff, reload
from workers.schedule import run_job

TODAY = date(2026, 4, 2)


def _approved_agreement() -> tuple[int, int]:
    loan = make_loan(product=make_product("V1", default_threshold_days=30), on=date(2026, 1, 1))
    loan_id = loan.id
    run_job("loan-arrears", date(2026, 4, 1))
    officer, manager = make_staff("loan_officer"), make_staff("branch_manager")
    owed = loan_debt(loan_id=loan_id).total
    agreement = agreement_draft(
        loan_id=loan_id,
        staff=officer,
        settlement_amount="8000",
        discount=owed - Decimal("8000"),
        schedule=[(date(2026, 5, 1), "4000"), (date(2026, 6, 1), "4000")],
        as_of=TODAY,
    )
    agreement_submit(agreement_id=agreement.id, staff=officer)
    agreement_approve(agreement_id=agreement.id, staff=manager, as_of=TODAY)
    return agreement.id, loan_id


def _reminders() -> list[tuple[str, str]]:
    db.session.expire_all()
    rows = db.session.execute(
        select(SmsMessage.template, SmsMessage.body)
        .where(SmsMessage.template == "reminder_agreement_due")
        .order_by(SmsMessage.id)
    )
    return [(template, body) for template, body in rows]


def test_an_installment_due_tomorrow_is_reminded_once_and_a_replay_sends_none(
    app: Flask,
) -> None:
    agreement_id, loan_id = _approved_agreement()
    loan_no = reload(loan_id).loan_no

    assert run_job("agreement-reminders", date(2026, 4, 29)) == 0
    assert _reminders() == []  # nothing due on the 30th
    assert run_job("agreement-reminders", date(2026, 4, 30)) == 0
    assert run_job("agreement-reminders", date(2026, 4, 30)) == 0  # the same day again
    reminders = _reminders()
    assert len(reminders) == 1
    assert f"4,000.00 of your settlement on loan {loan_no} is due tomorrow" in reminders[0][1]

    # The first date makes it active; the second installment is reminded the day before.
    assert run_job("agreement-scan", date(2026, 5, 1)) == 0
    assert db.session.get(Agreement, agreement_id).status == "active"
    assert run_job("agreement-reminders", date(2026, 5, 31)) == 0
    assert len(_reminders()) == 2


def test_a_hearing_in_the_next_7_days_is_noticed_once(app: Flask) -> None:
    manager = make_staff("branch_manager")
    loan_id = make_loan(product=make_product("V1"), on=date(2026, 1, 1)).id
    case = LegalCase(
        loan_id=loan_id,
        court="Milimani Commercial Court",
        case_number="E77/2026",
        filing_date=date(2026, 3, 1),
        status="hearing",
        filed_by_id=manager.id,
    )
    case.hearings = [
        Hearing(held_on=date(2026, 4, 9)),  # 7 days after the run: noticed
        Hearing(held_on=date(2026, 4, 10)),  # 8 days: not yet
    ]
    db.session.add(case)
    db.session.commit()

    def notices() -> list[dict]:
        db.session.expire_all()
        return list(
            db.session.scalars(select(AuditLog.after).where(AuditLog.action == "hearing.notice"))
        )

    assert run_job("hearing-notices", date(2026, 4, 2)) == 0
    assert run_job("hearing-notices", date(2026, 4, 2)) == 0
    assert [n["hearing_on"] for n in notices()] == ["2026-04-09"]
    assert run_job("hearing-notices", date(2026, 4, 3)) == 0  # the next day: the 10th
    assert [n["hearing_on"] for n in notices()] == ["2026-04-09", "2026-04-10"]

    assert run_job("hearing-rollup", date(2026, 4, 2)) == 0
    db.session.expire_all()
    assert db.session.get(Loan, loan_id).next_hearing_on == date(2026, 4, 9)


def test_every_recovery_scan_runs_on_an_empty_book(app: Flask) -> None:
    for name in (
        "agreement-scan",
        "agreement-reminders",
        "hearing-rollup",
        "hearing-notices",
        "milestones-overdue",
        "data-quality",
    ):
        assert run_job(name, TODAY) == 0, name
    runs = db.session.scalar(select(func.count()).select_from(AuditLog))
    assert runs == 0  # nothing to do, nothing recorded
