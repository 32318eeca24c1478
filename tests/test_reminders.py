"""Reminder jobs on fixed dates: what is sent, to whom, once, and never in quiet hours.

Loans are made through the real services; Africa's Talking is faked at the HTTP boundary
with `responses`, so the outbox's own send path (sms_deliver) runs unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs

import pytest
import responses
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import select

from app.extensions import db
from app.models import (
    Installment,
    Loan,
    LoanProduct,
    Member,
    PromiseToPay,
    SmsMessage,
    SmsSuppression,
)
from app.money import shillings_up
from app.selectors.loans import loan_debt
from app.services.loans import loan_repay, loan_reverse_penalty
from app.services.sms import quiet_hours_release, sms_deliver
from app.sms_templates import kes
from tests.loan_factories import make_borrower, make_loan, make_product, make_staff
from workers.reminders import due_reminders_job
from workers.runner import EXIT_OK, JobStats
from workers.schedule import JOBS, run_job

DISBURSED = date(2026, 1, 5)
FIRST_DUE = date(2026, 2, 5)  # monthly from the disbursement date
SECOND_DUE = date(2026, 3, 5)
GRACE = 3  # V1's grace_days
EAT = timedelta(hours=3)


@pytest.fixture
def at(app: Flask) -> Iterator[responses.RequestsMock]:
    """Africa's Talking at the HTTP boundary: every send is accepted unless a test says."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add(responses.POST, messaging_url(app), json=accepted(), status=201)
        yield rsps


def messaging_url(app: Flask) -> str:
    return f"{app.config['SETTINGS'].at_base_url}/version1/messaging"


def accepted(code: int = 101, status: str = "Success") -> dict[str, object]:
    return {
        "SMSMessageData": {
            "Message": "Sent to 1/1 Total Cost: KES 0.8000",
            "Recipients": [
                {
                    "statusCode": code,
                    "number": "+254700000001",
                    "status": status,
                    "cost": "KES 0.8000",
                    "messageId": f"ATXid_{code}_{datetime.now(UTC).timestamp()}",
                }
            ],
        }
    }


@pytest.fixture
def product(app: Flask) -> LoanProduct:
    return make_product()


def new_loan(
    product: LoanProduct,
    *,
    member: Member | None = None,
    language: str = "en",
) -> Loan:
    if member is None:
        member = make_borrower(savings=10000)
        member.language = language
        db.session.commit()
    return make_loan(product=product, amount=10000, member=member, on=DISBURSED)


# What the loan services queue themselves when a test makes a loan or repays one: the
# receipt of the borrower's savings, the approval, the disbursement, each repayment.
# Transactional receipts, not reminders: `outbox()` leaves them out, `receipts()` has them.
RECEIPTS = ("deposit_received", "loan_approved", "loan_disbursed", "repayment_received")


def outbox() -> list[SmsMessage]:
    """Every message in the outbox except the loan services' own receipts (RECEIPTS)."""
    db.session.expire_all()
    return list(
        db.session.scalars(
            select(SmsMessage).where(SmsMessage.template.not_in(RECEIPTS)).order_by(SmsMessage.id)
        )
    )


def receipts() -> list[SmsMessage]:
    db.session.expire_all()
    return list(
        db.session.scalars(
            select(SmsMessage).where(SmsMessage.template.in_(RECEIPTS)).order_by(SmsMessage.id)
        )
    )


def run(name: str, as_of: date, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    """Run a job through the runner (lock, log line) and return its JSON log line."""
    capsys.readouterr()
    assert run_job(name, as_of) == EXIT_OK
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    return json.loads(lines[-1])


def nine(day: date) -> datetime:
    """09:00 in Nairobi on `day`: when the scheduler runs the reminders."""
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=6)


def at_nine(name: str, as_of: date) -> JobStats:
    """Run a job's function at a fixed 09:00, so what it queues never depends on the
    wall clock (a test run at night would otherwise hold reminders for quiet hours)."""
    stats = JobStats()
    JOBS[name](as_of=as_of, stats=stats, now=nine(as_of))
    return stats


def first_installment(loan_id: int) -> Installment:
    return db.session.scalars(
        select(Installment).where(Installment.loan_id == loan_id).order_by(Installment.number)
    ).first()


# --- due in 3 days, due today -------------------------------------------------------------


def test_due_in_3_days_and_today_each_send_one_reminder_whatever_the_reruns(
    product: LoanProduct, capsys: pytest.CaptureFixture[str]
) -> None:
    loan = new_loan(product)
    member_id, member_no, loan_no = loan.member_id, loan.member.member_no, loan.loan_no
    installment = first_installment(loan.id)
    installment_id, amount = installment.id, installment.total_due
    # Making the loan queued its own receipts (transactional, not reminders), nothing else.
    setup = [(m.template, m.kind) for m in receipts()]
    assert setup == [
        ("deposit_received", "transactional"),
        ("loan_approved", "transactional"),
        ("loan_disbursed", "transactional"),
    ]
    assert outbox() == []

    line = run("due-reminders", FIRST_DUE - timedelta(days=3), capsys)
    assert (line["job"], line["status"], line["notifications_sent"]) == (
        "due-reminders",
        "success",
        1,
    )
    assert (line["records_scanned"], line["notifications_failed"]) == (1, 0)
    again = run("due-reminders", FIRST_DUE - timedelta(days=3), capsys)
    assert (again["status"], again["notifications_sent"]) == ("success", 0)

    [message] = outbox()
    assert message.idempotency_key == f"reminder:due_3d:{member_id}:2026-02-02"
    assert (message.kind, message.template, message.language) == (
        "reminder",
        "reminder_due_3d",
        "en",
    )
    assert message.context == {"installment_id": installment_id}
    assert kes(amount) in message.body and loan_no in message.body
    assert "05/02/2026" in message.body
    assert "Paybill 174379" in message.body and f"Account {member_no}" in message.body

    run("due-reminders", FIRST_DUE, capsys)
    run("due-reminders", FIRST_DUE, capsys)
    messages = outbox()
    assert [m.template for m in messages] == ["reminder_due_3d", "reminder_due_today"]
    assert messages[1].idempotency_key == f"reminder:due_today:{member_id}:2026-02-05"

    # A day with nothing due sends nothing.
    assert run("due-reminders", FIRST_DUE + timedelta(days=1), capsys)["notifications_sent"] == 0
    assert len(outbox()) == 2
    assert [(m.template, m.kind) for m in receipts()] == setup  # the jobs queue no receipts


def test_a_kiswahili_member_is_reminded_in_kiswahili(
    product: LoanProduct, capsys: pytest.CaptureFixture[str]
) -> None:
    new_loan(product, language="sw")

    run("due-reminders", FIRST_DUE, capsys)

    [message] = outbox()
    assert message.language == "sw"
    assert "inadaiwa leo 05/02/2026" in message.body
    assert "Lipa kupitia Paybill 174379" in message.body


def test_two_loans_due_the_same_day_make_one_reminder(
    product: LoanProduct, capsys: pytest.CaptureFixture[str]
) -> None:
    first = new_loan(product)
    member = first.member
    second = new_loan(product, member=member)
    total = first_installment(first.id).total_due + first_installment(second.id).total_due
    first_no = first.loan_no

    line = run("due-reminders", FIRST_DUE, capsys)

    [message] = outbox()
    # A close-of-business batch counts what it visits: here one member, with two loans.
    assert line["records_scanned"] == 1 and line["notifications_sent"] == 1
    assert f"{first_no} +1" in message.body
    assert kes(total) in message.body


def test_a_paid_installment_or_closed_loan_is_not_scanned(
    product: LoanProduct, capsys: pytest.CaptureFixture[str]
) -> None:
    loan = new_loan(product)
    loan_repay(
        loan_id=loan.id,
        amount=first_installment(loan.id).total_due,
        reference="UPAID00001",
        value_date=FIRST_DUE - timedelta(days=5),
    )

    line = run("due-reminders", FIRST_DUE, capsys)

    assert line["records_scanned"] == 0
    assert outbox() == []


def test_the_cli_runs_the_job_with_a_fixed_date(
    product: LoanProduct, runner: FlaskCliRunner
) -> None:
    new_loan(product)

    result = runner.invoke(args=["jobs", "run", "due-reminders", "--as-of-date", "2026-02-05"])

    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.splitlines()[-1])
    assert (line["job"], line["notifications_sent"]) == ("due-reminders", 1)


# --- overdue ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("late", "template"),
    [
        (GRACE + 1, "reminder_overdue_1d"),
        (GRACE + 7, "reminder_overdue_7d"),
        (GRACE + 30, "reminder_overdue_30d"),
    ],
)
def test_overdue_stages_count_from_the_end_of_grace(
    product: LoanProduct, capsys: pytest.CaptureFixture[str], late: int, template: str
) -> None:
    loan = new_loan(product)
    as_of = FIRST_DUE + timedelta(days=late)
    owed = first_installment(loan.id).total_due
    if as_of >= SECOND_DUE:  # the 30-day stage: the second installment is due too
        owed += loan.installments[1].total_due

    line = run("overdue-reminders", as_of, capsys)
    run("overdue-reminders", as_of, capsys)

    [message] = outbox()
    assert line["notifications_sent"] == 1
    assert message.template == template
    assert message.idempotency_key.startswith(f"reminder:{template[9:]}:")
    assert f"{late} day" in message.body
    assert kes(owed) in message.body
    if template == "reminder_overdue_30d":
        assert "in default" in message.body and "guarantors" in message.body


@pytest.mark.parametrize("late", [1, GRACE, GRACE + 2, GRACE + 8, GRACE + 29])
def test_no_overdue_reminder_between_stages(
    product: LoanProduct, capsys: pytest.CaptureFixture[str], late: int
) -> None:
    new_loan(product)

    line = run("overdue-reminders", FIRST_DUE + timedelta(days=late), capsys)

    assert line["notifications_sent"] == 0
    assert outbox() == []


def test_a_later_installment_does_not_restart_the_stages(
    product: LoanProduct, capsys: pytest.CaptureFixture[str]
) -> None:
    # The second installment is GRACE + 1 days late, but the loan has been late since the
    # first: its stage follows the oldest unpaid installment, so no new "1 day" message.
    new_loan(product)

    run("overdue-reminders", SECOND_DUE + timedelta(days=GRACE + 1), capsys)

    assert outbox() == []


# --- paid since the scan, opt-out, quiet hours, retries ------------------------------------


def test_a_member_who_paid_since_the_scan_is_not_reminded(
    product: LoanProduct, at: responses.RequestsMock, capsys: pytest.CaptureFixture[str]
) -> None:
    loan_id = new_loan(product).id
    at_nine("due-reminders", FIRST_DUE)
    [message] = outbox()
    loan_repay(
        loan_id=loan_id,
        amount=first_installment(loan_id).total_due,
        reference="UPAID00002",
        value_date=FIRST_DUE,
    )

    assert sms_deliver(message_id=message.id, now=nine(FIRST_DUE)) == "cancelled"

    assert len(at.calls) == 0
    assert outbox()[0].status == "cancelled"


def test_an_unpaid_reminder_is_sent_to_the_provider(
    product: LoanProduct, at: responses.RequestsMock, capsys: pytest.CaptureFixture[str]
) -> None:
    phone = new_loan(product).member.phone
    at_nine("due-reminders", FIRST_DUE)
    [message] = outbox()
    day = nine(FIRST_DUE)

    assert sms_deliver(message_id=message.id, now=day) == "sent"

    [call] = at.calls
    form = parse_qs(call.request.body)
    assert form["to"] == [f"+{phone}"]
    assert form["message"] == [message.body]
    sent = outbox()[0]
    assert (sent.status, sent.attempts, sent.cost_amount) == ("sent", 1, Decimal("0.8000"))


def test_an_opted_out_member_gets_no_reminder(
    product: LoanProduct, at: responses.RequestsMock, capsys: pytest.CaptureFixture[str]
) -> None:
    loan = new_loan(product)
    db.session.add(SmsSuppression(phone=loan.member.phone, active=True, source="keyword"))
    db.session.commit()

    line = run("due-reminders", FIRST_DUE, capsys)

    [message] = outbox()
    assert message.status == "suppressed"
    assert (line["notifications_sent"], line["notifications_failed"]) == (0, 0)
    assert sms_deliver(message_id=message.id) == "nothing to do"
    assert len(at.calls) == 0


def test_a_member_who_opts_out_after_the_scan_gets_nothing(
    product: LoanProduct, at: responses.RequestsMock, capsys: pytest.CaptureFixture[str]
) -> None:
    phone = new_loan(product).member.phone
    at_nine("due-reminders", FIRST_DUE)
    db.session.add(SmsSuppression(phone=phone, active=True, source="opt-out"))
    db.session.commit()

    assert sms_deliver(message_id=outbox()[0].id, now=nine(FIRST_DUE)) == "suppressed"
    assert len(at.calls) == 0


def test_a_run_in_quiet_hours_holds_reminders_until_seven(
    app: Flask, product: LoanProduct, at: responses.RequestsMock
) -> None:
    new_loan(product)
    late_evening = datetime(2026, 2, 4, 18, 30, tzinfo=UTC)  # 21:30 in Nairobi
    seven = datetime(2026, 2, 5, 4, 0, tzinfo=UTC)  # 07:00 in Nairobi the next morning

    stats = JobStats()
    due_reminders_job(as_of=FIRST_DUE, stats=stats, now=late_evening)

    [message] = outbox()
    assert stats.notifications_sent == 1
    assert message.not_before == seven
    assert sms_deliver(message_id=message.id, now=late_evening) == "not yet"
    assert sms_deliver(message_id=message.id, now=seven - timedelta(seconds=1)) == "not yet"
    assert len(at.calls) == 0
    assert sms_deliver(message_id=message.id, now=seven) == "sent"
    assert len(at.calls) == 1


@pytest.mark.parametrize(
    ("utc", "release"),
    [
        (datetime(2026, 2, 4, 16, 59, tzinfo=UTC), None),  # 19:59 EAT
        (datetime(2026, 2, 4, 17, 0, tzinfo=UTC), datetime(2026, 2, 5, 4, 0, tzinfo=UTC)),
        (datetime(2026, 2, 4, 20, 59, tzinfo=UTC), datetime(2026, 2, 5, 4, 0, tzinfo=UTC)),
        (datetime(2026, 2, 4, 21, 0, tzinfo=UTC), datetime(2026, 2, 5, 4, 0, tzinfo=UTC)),
        (datetime(2026, 2, 5, 3, 59, tzinfo=UTC), datetime(2026, 2, 5, 4, 0, tzinfo=UTC)),
        (datetime(2026, 2, 5, 4, 0, tzinfo=UTC), None),  # 07:00 EAT
    ],
)
def test_quiet_hours_are_kenyan_time(app: Flask, utc: datetime, release: datetime | None) -> None:
    assert quiet_hours_release(utc) == release


def test_the_scheduled_times_are_outside_quiet_hours(app: Flask) -> None:
    from workers.schedule import SCHEDULE

    for entry in SCHEDULE:
        if entry.name.endswith("-reminders"):
            minute, hour = (int(part) for part in entry.cron.split()[:2])
            local = datetime(2026, 2, 5, hour, minute, tzinfo=UTC)
            assert quiet_hours_release(local) is None, entry.name
            assert 8 <= (local + EAT).hour < 12, entry.name


def test_a_provider_error_is_retried_later_and_then_sent(
    app: Flask, product: LoanProduct, capsys: pytest.CaptureFixture[str]
) -> None:
    new_loan(product)
    at_nine("due-reminders", FIRST_DUE)
    [message] = outbox()
    day = nine(FIRST_DUE)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, messaging_url(app), json=accepted(500, "InternalServerError"))
        assert sms_deliver(message_id=message.id, now=day) == "retrying"
        held = outbox()[0]
        assert held.not_before == day + timedelta(seconds=60)
        assert sms_deliver(message_id=message.id, now=day + timedelta(seconds=30)) == "not yet"
        assert len(rsps.calls) == 1

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, messaging_url(app), json=accepted())
        assert sms_deliver(message_id=message.id, now=day + timedelta(seconds=61)) == "sent"
    assert outbox()[0].attempts == 2


def test_a_bad_number_fails_for_good(
    app: Flask, product: LoanProduct, capsys: pytest.CaptureFixture[str]
) -> None:
    new_loan(product)
    at_nine("due-reminders", FIRST_DUE)

    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, messaging_url(app), json=accepted(403, "InvalidPhoneNumber"))
        assert sms_deliver(message_id=outbox()[0].id, now=nine(FIRST_DUE)) == "failed"
        assert sms_deliver(message_id=outbox()[0].id, now=nine(FIRST_DUE)) == "nothing to do"
        assert len(rsps.calls) == 1


# --- promises to pay ----------------------------------------------------------------------


def promise(loan: Loan, amount: Decimal, on: date, made: date) -> PromiseToPay:
    row = PromiseToPay(
        member_id=loan.member_id,
        loan_id=loan.id,
        amount=amount,
        promised_date=on,
        created_at=datetime.combine(made, datetime.min.time(), tzinfo=UTC) + timedelta(hours=7),
    )
    db.session.add(row)
    db.session.commit()
    return row


def test_a_promise_due_tomorrow_gets_one_reminder(
    product: LoanProduct, capsys: pytest.CaptureFixture[str]
) -> None:
    loan = new_loan(product)
    made = promise(loan, Decimal("500"), on=date(2026, 2, 20), made=date(2026, 2, 10)).id

    line = run("promise-reminders", date(2026, 2, 19), capsys)
    run("promise-reminders", date(2026, 2, 19), capsys)

    [message] = outbox()
    assert line["notifications_sent"] == 1
    assert message.template == "promise_due_tomorrow"
    assert message.context == {"promise_id": made, "promise_status": "open"}
    assert "KES 500.00" in message.body and "20/02/2026" in message.body


def test_a_promise_not_paid_is_broken_and_the_member_told_once(
    product: LoanProduct, at: responses.RequestsMock, capsys: pytest.CaptureFixture[str]
) -> None:
    loan = new_loan(product, language="sw")
    made = promise(loan, Decimal("800"), on=date(2026, 2, 20), made=date(2026, 2, 10)).id
    loan_repay(loan_id=loan.id, amount=300, reference="UPART00001", value_date=date(2026, 2, 15))

    first = at_nine("promise-reminders", date(2026, 2, 21))
    rerun = run("promise-reminders", date(2026, 2, 21), capsys)

    assert (first.records_updated, first.notifications_sent) == (1, 1)
    assert (rerun["records_updated"], rerun["notifications_sent"]) == (0, 0)
    # 300 of the 800 arrived: partly kept, which is not kept, so the member is told.
    settled = db.session.get(PromiseToPay, made)
    assert (settled.status, settled.paid_amount) == ("partly", Decimal("300.00"))
    [message] = outbox()
    assert message.template == "promise_broken" and message.language == "sw"
    assert "haikutimizwa" in message.body
    # Still broken when it goes out, so it is sent.
    assert sms_deliver(message_id=message.id, now=nine(date(2026, 2, 21))) == "sent"


def test_a_promise_with_a_single_shilling_paid_by_its_date_is_partly_kept(
    product: LoanProduct, capsys: pytest.CaptureFixture[str]
) -> None:
    loan = new_loan(product)
    made = promise(loan, Decimal("500"), on=date(2026, 2, 20), made=date(2026, 2, 10)).id
    loan_repay(loan_id=loan.id, amount=1, reference="UONE000001", value_date=date(2026, 2, 15))

    run("promise-reminders", date(2026, 2, 21), capsys)

    settled = db.session.get(PromiseToPay, made)
    assert (settled.status, settled.paid_amount) == ("partly", Decimal("1.00"))


def test_a_promise_part_paid_before_its_date_stays_open_with_nothing_settled_as_paid(
    product: LoanProduct, capsys: pytest.CaptureFixture[str]
) -> None:
    loan = new_loan(product)
    made = promise(loan, Decimal("800"), on=date(2026, 2, 20), made=date(2026, 2, 10)).id
    loan_repay(loan_id=loan.id, amount=300, reference="UPART00002", value_date=date(2026, 2, 12))

    run("promise-reminders", date(2026, 2, 19), capsys)  # the day before: a reminder only

    db.session.expire_all()
    still = db.session.get(PromiseToPay, made)
    assert (still.status, still.paid_amount) == ("open", None)
    [message] = outbox()
    assert message.template == "promise_due_tomorrow"

    run("promise-reminders", date(2026, 2, 21), capsys)  # its date passed: settled now

    db.session.expire_all()
    settled = db.session.get(PromiseToPay, made)
    assert (settled.status, settled.paid_amount) == ("partly", Decimal("300.00"))


def test_a_promise_paid_in_full_is_kept_and_not_reminded(
    product: LoanProduct, capsys: pytest.CaptureFixture[str]
) -> None:
    loan = new_loan(product)
    due_tomorrow = promise(loan, Decimal("800"), on=date(2026, 2, 20), made=date(2026, 2, 10)).id
    passed = promise(loan, Decimal("100"), on=date(2026, 2, 18), made=date(2026, 2, 10)).id
    # Paid before the promise was made: does not count towards it.
    loan_repay(loan_id=loan.id, amount=5000, reference="UEARLY0001", value_date=date(2026, 2, 9))
    loan_repay(loan_id=loan.id, amount=800, reference="UKEPT00001", value_date=date(2026, 2, 12))

    line = run("promise-reminders", date(2026, 2, 19), capsys)

    assert line["records_updated"] == 2 and line["notifications_sent"] == 0
    assert db.session.get(PromiseToPay, due_tomorrow).status == "kept"
    assert db.session.get(PromiseToPay, passed).status == "kept"
    assert outbox() == []


def test_a_payment_on_the_day_a_promise_is_made_counts_and_the_day_before_does_not(
    product: LoanProduct, capsys: pytest.CaptureFixture[str]
) -> None:
    loan = new_loan(product)
    loan_repay(loan_id=loan.id, amount=200, reference="UBEFORE001", value_date=date(2026, 2, 9))
    made = promise(loan, Decimal("500"), on=date(2026, 2, 20), made=date(2026, 2, 10)).id
    loan_repay(loan_id=loan.id, amount=300, reference="USAMEDAY01", value_date=date(2026, 2, 10))

    run("promise-reminders", date(2026, 2, 21), capsys)

    settled = db.session.get(PromiseToPay, made)
    assert (settled.status, settled.paid_amount) == ("partly", Decimal("300.00"))


def test_a_payment_made_only_before_the_promise_leaves_it_broken(
    product: LoanProduct, capsys: pytest.CaptureFixture[str]
) -> None:
    loan = new_loan(product)
    loan_repay(loan_id=loan.id, amount=800, reference="UEARLY0002", value_date=date(2026, 2, 9))
    made = promise(loan, Decimal("500"), on=date(2026, 2, 20), made=date(2026, 2, 10)).id

    run("promise-reminders", date(2026, 2, 21), capsys)

    settled = db.session.get(PromiseToPay, made)
    assert (settled.status, settled.paid_amount) == ("broken", Decimal("0.00"))


def test_a_penalty_waived_after_a_promise_is_not_money_paid_towards_it(
    app: Flask, capsys: pytest.CaptureFixture[str]
) -> None:
    fined = make_product(code="V1-FINE", penalty_type="fixed", penalty_value=Decimal("50"))
    loan_id = new_loan(fined).id
    run_job("loan-arrears", date(2026, 2, 9))  # installment 1 past its grace: 50 charged
    loan = db.session.get(Loan, loan_id)
    made = promise(loan, Decimal("500"), on=date(2026, 2, 20), made=date(2026, 2, 10)).id
    # The penalty was charged in error: taking it back lowers the debt, it pays nothing.
    loan_reverse_penalty(
        loan_id=loan.id,
        installment_number=1,
        staff=make_staff("branch_manager"),
        reason="charged in error",
        value_date=date(2026, 2, 11),
    )
    loan_repay(loan_id=loan.id, amount=100, reference="UAFTER0001", value_date=date(2026, 2, 12))

    run("promise-reminders", date(2026, 2, 21), capsys)

    settled = db.session.get(PromiseToPay, made)
    assert (settled.status, settled.paid_amount) == ("partly", Decimal("100.00"))


def test_what_a_clearing_payment_sends_on_to_savings_is_not_counted_as_paid_to_the_promise(
    product: LoanProduct, capsys: pytest.CaptureFixture[str]
) -> None:
    loan = new_loan(product)
    debt = loan_debt(loan_id=loan.id).total
    whole = shillings_up(debt)
    assert debt < whole  # a promise may be for the debt up to the whole shilling
    made = promise(loan, whole, on=date(2026, 2, 20), made=date(2026, 2, 10)).id
    loan_repay(loan_id=loan.id, amount=whole, reference="UCLEAR0001", value_date=date(2026, 2, 12))
    assert db.session.get(Loan, loan.id).status == "closed"  # the cents over went to savings

    run("promise-reminders", date(2026, 2, 21), capsys)

    settled = db.session.get(PromiseToPay, made)
    assert (settled.status, settled.paid_amount) == ("kept", debt)
