"""The reminder jobs as close-of-business batches (issue 18): chunks of members, one bulk
outbox INSERT per chunk. Whatever the chunk size, the outbox gets the same rows; a rerun
queues nothing; opt-outs and quiet hours hold per row; one message that cannot be
rendered is one failure, never the chunk's other members lost."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete, select

from app.extensions import db, queue
from app.models import (
    Agreement,
    Loan,
    LoanProduct,
    Member,
    PromiseToPay,
    SmsMessage,
    SmsSuppression,
)
from app.selectors.loans import loan_debt
from app.services.agreements import agreement_approve, agreement_draft, agreement_submit
from app.services.loans import loan_repay
from tests.loan_factories import make_borrower, make_loan, make_product, make_staff, run_job
from workers.reminders import Reminder, queue_reminders
from workers.runner import JobStats
from workers.schedule import BATCHES, JOBS

DISBURSED = date(2026, 1, 5)
FIRST_DUE = date(2026, 2, 5)  # monthly from the disbursement date


def _chunk_size(app: Flask, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    changed = dataclasses.replace(app.config["SETTINGS"], COB_CHUNK_SIZE=size)
    monkeypatch.setitem(app.config, "SETTINGS", changed)


def nine(day: date) -> datetime:
    """09:00 in Nairobi: when the scheduler runs the reminders (never quiet hours)."""
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=6)


def at(name: str, as_of: date, now: datetime) -> JobStats:
    stats = JobStats()
    JOBS[name](as_of=as_of, stats=stats, now=now)
    return stats


def reminders() -> list[dict[str, Any]]:
    """Every reminder row as what it says and to whom, without its id (which depends on
    the order rows were written in, not on what was written)."""
    db.session.expire_all()
    rows = db.session.scalars(
        select(SmsMessage).where(SmsMessage.kind == "reminder").order_by(SmsMessage.id)
    )
    return sorted(
        (
            {
                "key": m.idempotency_key,
                "member_id": m.member_id,
                "phone": m.phone,
                "template": m.template,
                "language": m.language,
                "body": m.body,
                "status": m.status,
                "context": m.context,
                "not_before": m.not_before,
            }
            for m in rows
        ),
        key=lambda row: row["key"],
    )


@pytest.fixture
def product(app: Flask) -> LoanProduct:
    return make_product()


@pytest.fixture
def members(product: LoanProduct) -> list[Member]:
    """Five borrowers due on FIRST_DUE, the second with two loans, the fourth in Kiswahili."""
    found = []
    for n in range(5):
        member = make_borrower(savings=10000)
        member.language = "sw" if n == 3 else "en"
        db.session.commit()
        make_loan(product=product, amount=10000, member=member, on=DISBURSED)
        if n == 1:
            make_loan(product=product, amount=5000, member=member, on=DISBURSED)
        found.append(member)
    return found


def test_every_reminder_job_is_a_batch_a_cob_worker_can_run(app: Flask) -> None:
    for name in (
        "due-reminders",
        "overdue-reminders",
        "promise-reminders",
        "agreement-reminders",
        "agreement-scan",
    ):
        assert BATCHES[name].name == name


def test_chunks_of_two_members_queue_exactly_what_one_chunk_does_and_a_rerun_nothing(
    app: Flask, monkeypatch: pytest.MonkeyPatch, members: list[Member]
) -> None:
    _chunk_size(app, monkeypatch, 2)
    small = at("due-reminders", FIRST_DUE, nine(FIRST_DUE))
    in_chunks = reminders()

    assert (small.records_scanned, small.notifications_sent, small.notifications_failed) == (
        5,
        5,
        0,
    )
    assert small.errors == []
    assert [row["member_id"] for row in in_chunks] == sorted(m.id for m in members)
    assert all(row["status"] == "queued" and row["not_before"] is None for row in in_chunks)
    two_loans = next(row for row in in_chunks if row["member_id"] == members[1].id)
    assert " +1:" in two_loans["body"]  # both loans in one message, though chunks are small
    # Each queued row has its send job, queued after its chunk's commit.
    ids = db.session.scalars(select(SmsMessage.id).where(SmsMessage.kind == "reminder")).all()
    assert {f"sms-{i}" for i in ids} <= set(queue("sms").job_ids)

    rerun = at("due-reminders", FIRST_DUE, nine(FIRST_DUE))
    assert (rerun.notifications_sent, rerun.notifications_failed) == (0, 0)
    assert reminders() == in_chunks

    # The same day again from an empty outbox, in one chunk: the same rows.
    db.session.execute(delete(SmsMessage).where(SmsMessage.kind == "reminder"))
    db.session.commit()
    _chunk_size(app, monkeypatch, 500)
    whole = at("due-reminders", FIRST_DUE, nine(FIRST_DUE))
    assert whole.notifications_sent == 5
    assert reminders() == in_chunks


def test_an_opted_out_member_in_a_chunk_gets_a_suppressed_row_and_the_others_wait_for_seven(
    app: Flask, monkeypatch: pytest.MonkeyPatch, members: list[Member]
) -> None:
    _chunk_size(app, monkeypatch, 2)
    opted_out = members[2]
    db.session.add(SmsSuppression(phone=opted_out.phone, active=True, source="keyword"))
    # An opt-out taken back (START) does not suppress.
    db.session.add(SmsSuppression(phone=members[0].phone, active=False, source="keyword"))
    db.session.commit()
    late_evening = datetime(2026, 2, 4, 18, 30, tzinfo=UTC)  # 21:30 in Nairobi
    seven = datetime(2026, 2, 5, 4, 0, tzinfo=UTC)

    stats = at("due-reminders", FIRST_DUE, late_evening)

    rows = {row["member_id"]: row for row in reminders()}
    assert rows[opted_out.id]["status"] == "suppressed"
    assert rows[opted_out.id]["not_before"] is None
    others = [row for member_id, row in rows.items() if member_id != opted_out.id]
    assert [(row["status"], row["not_before"]) for row in others] == [("queued", seven)] * 4
    assert (stats.notifications_sent, stats.notifications_failed) == (4, 0)
    suppressed_id = db.session.scalar(
        select(SmsMessage.id).where(SmsMessage.status == "suppressed")
    )
    assert f"sms-{suppressed_id}" not in queue("sms").job_ids


def test_a_message_that_cannot_be_rendered_is_one_failure_and_the_chunk_is_still_queued(
    app: Flask, monkeypatch: pytest.MonkeyPatch, members: list[Member]
) -> None:
    _chunk_size(app, monkeypatch, 2)

    def reminder(member: Member, template: str) -> Reminder:
        return Reminder(
            member_id=member.id,
            kind="due_today",
            template=template,
            loan_no="L000001",
            amount=Decimal("100"),
            params={"due_date": FIRST_DUE},
            context={},
        )

    found = [reminder(m, "reminder_due_today") for m in members[:3]]
    found[1] = reminder(members[1], "no_such_template")  # with members[0] in one chunk
    stats = JobStats()

    queue_reminders(found, as_of=FIRST_DUE, stats=stats, now=nine(FIRST_DUE))

    assert [row["member_id"] for row in reminders()] == [members[0].id, members[2].id]
    assert (stats.notifications_sent, stats.notifications_failed) == (2, 1)
    assert stats.errors == [
        f"member {members[1].id} due_today: unknown SMS template 'no_such_template'"
    ]


def test_promises_are_settled_and_told_chunk_by_chunk(
    app: Flask, monkeypatch: pytest.MonkeyPatch, members: list[Member]
) -> None:
    _chunk_size(app, monkeypatch, 2)
    made = datetime(2026, 2, 10, 7, 0, tzinfo=UTC)
    promises = []
    for n, member in enumerate(members):
        loan_id = db.session.scalar(
            select(Loan.id).where(Loan.member_id == member.id).order_by(Loan.id)
        )
        # Even members promised for yesterday (unpaid: broken), odd ones for tomorrow.
        on = date(2026, 2, 18) if n % 2 == 0 else date(2026, 2, 20)
        row = PromiseToPay(
            member_id=member.id,
            loan_id=loan_id,
            amount=Decimal("500"),
            promised_date=on,
            created_at=made,
        )
        db.session.add(row)
        promises.append(row)
    db.session.commit()
    ids = [p.id for p in promises]

    first = at("promise-reminders", date(2026, 2, 19), nine(date(2026, 2, 19)))
    again = at("promise-reminders", date(2026, 2, 19), nine(date(2026, 2, 19)))

    assert (first.records_scanned, first.records_updated, first.notifications_sent) == (5, 3, 5)
    assert (again.records_scanned, again.records_updated, again.notifications_sent) == (2, 0, 0)
    db.session.expire_all()
    assert [db.session.get(PromiseToPay, i).status for i in ids] == [
        "broken",
        "open",
        "broken",
        "open",
        "broken",
    ]
    templates = {row["member_id"]: row["template"] for row in reminders()}
    assert templates == {
        m.id: "promise_broken" if n % 2 == 0 else "promise_due_tomorrow"
        for n, m in enumerate(members)
    }


def test_agreements_are_scanned_and_reminded_in_chunks(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:

    _chunk_size(app, monkeypatch, 2)
    product = make_product("V1", default_threshold_days=30)
    loan_ids = [make_loan(product=product, on=date(2026, 1, 1)).id for _ in range(3)]
    run_job("loan-arrears", date(2026, 4, 1))
    officer, manager = make_staff("loan_officer"), make_staff("branch_manager")
    agreement_ids = []
    for loan_id in loan_ids:
        agreement = agreement_draft(
            loan_id=loan_id,
            staff=officer,
            settlement_amount="8000",
            discount=loan_debt(loan_id=loan_id).total - Decimal("8000"),
            schedule=[(date(2026, 5, 1), "4000"), (date(2026, 6, 1), "4000")],
            as_of=date(2026, 4, 2),
        )
        agreement_submit(agreement_id=agreement.id, staff=officer)
        agreement_approve(agreement_id=agreement.id, staff=manager, as_of=date(2026, 4, 2))
        agreement_ids.append(agreement.id)

    due = at("agreement-reminders", date(2026, 4, 30), nine(date(2026, 4, 30)))
    assert (due.records_scanned, due.notifications_sent, due.notifications_failed) == (3, 3, 0)
    assert [row["template"] for row in reminders()] == ["reminder_agreement_due"] * 3
    assert (
        at("agreement-reminders", date(2026, 4, 30), nine(date(2026, 4, 30))).notifications_sent
        == 0
    )

    activated = JobStats()
    JOBS["agreement-scan"](as_of=date(2026, 5, 1), stats=activated)
    # The second borrower pays the first installment; the others never pay.
    loan_repay(
        loan_id=loan_ids[1], amount="4000", reference="QKCOB00001", value_date=date(2026, 5, 2)
    )
    defaulted = JobStats()
    JOBS["agreement-scan"](as_of=date(2026, 6, 10), stats=defaulted)
    again = JobStats()
    JOBS["agreement-scan"](as_of=date(2026, 6, 10), stats=again)

    assert (activated.records_scanned, activated.records_updated) == (3, 3)
    assert (defaulted.records_scanned, defaulted.records_updated) == (3, 2)
    assert (again.records_scanned, again.records_updated) == (1, 0)
    db.session.expire_all()
    assert [
        (a.status, a.closed_on) for a in (db.session.get(Agreement, i) for i in agreement_ids)
    ] == [("defaulted", date(2026, 6, 4)), ("active", None), ("defaulted", date(2026, 6, 4))]
