"""The cron schedule names only jobs that exist, and what it enqueues runs them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from croniter import croniter
from flask import Flask
from rq.utils import import_attribute
from sqlalchemy import select

from app.cli.runtime import make_worker
from app.extensions import db, queue, redis_client, release_db_session
from app.models import JobRun
from tests.loan_factories import make_loan, make_product, reload
from workers.schedule import (
    JOBS,
    RUN_JOB,
    SCHEDULE,
    build_scheduler,
    catch_up,
    missed_daily_runs,
    run_from_queue,
    run_job,
)


def test_every_scheduled_job_exists_and_every_daily_job_is_scheduled() -> None:
    names = [entry.name for entry in SCHEDULE]
    assert len(names) == len(set(names))
    assert set(names) == set(JOBS)
    for entry in SCHEDULE:
        assert croniter.is_valid(entry.cron), entry.cron
        assert entry.queue in ("payments", "sms", "default")
        # A job marked daily fires once a day: a fixed minute and hour, every day of the
        # week (a weekly job is not caught up day by day).
        minute, hour, _day, _month, weekday = entry.cron.split()
        assert entry.daily == (minute.isdigit() and hour.isdigit() and weekday == "*"), entry


def test_the_scheduler_enqueues_the_runner_with_the_job_name(app: Flask) -> None:
    scheduler = build_scheduler(redis_client())
    jobs = {job.name: job for job in scheduler.get_jobs()}
    assert set(jobs) == {entry.name for entry in SCHEDULE}
    cron_job = jobs["ledger-check"]
    cron_job.enqueue(redis_client())
    (queued,) = queue("default").get_jobs()
    assert queued.func is run_from_queue
    assert queued.args == ("ledger-check",)
    # Run it as the worker would: it takes the lock, checks the ledger, exits 0.
    assert queued.perform() == 0


# 08:00 in Nairobi on 21 Nov 2026: the 00:05 arrears run of that day has passed, today's
# 09:00 reminders have not, so yesterday's are the last ones due.
NOW = datetime(2026, 11, 21, 5, 0, tzinfo=UTC)
NAIROBI = ZoneInfo("Africa/Nairobi")


def test_on_a_fresh_database_every_daily_job_is_missed_once_in_the_order_it_was_due(
    app: Flask,
) -> None:
    missed = missed_daily_runs(now=NOW, tz=NAIROBI)
    assert [(run.name, run.as_of) for run in missed] == [
        ("due-reminders", date(2026, 11, 20)),
        ("overdue-reminders", date(2026, 11, 20)),
        ("promise-reminders", date(2026, 11, 20)),
        ("agreement-reminders", date(2026, 11, 20)),
        ("guarantee-expiry", date(2026, 11, 20)),
        ("guarantor-notices", date(2026, 11, 20)),
        ("loan-arrears", date(2026, 11, 21)),
        ("portfolio-snapshot", date(2026, 11, 21)),
        ("agreement-scan", date(2026, 11, 21)),
        ("hearing-rollup", date(2026, 11, 21)),
        ("milestones-overdue", date(2026, 11, 21)),
        ("fixed-deposit-maturity", date(2026, 11, 21)),
        ("savings-interest", date(2026, 11, 21)),
        ("loan-loss-provision", date(2026, 11, 21)),
        ("ledger-check", date(2026, 11, 21)),
        ("books-kpis", date(2026, 11, 21)),
        ("standing-orders", date(2026, 11, 21)),
        ("hearing-notices", date(2026, 11, 21)),
    ]
    assert missed[6].due_at == datetime(2026, 11, 20, 21, 5, tzinfo=UTC)


def test_a_day_already_run_is_not_missed_but_a_skipped_or_failed_one_is(app: Flask) -> None:
    assert run_job("ledger-check", date(2026, 11, 21)) == 0
    assert run_job("loan-arrears", date(2026, 11, 20)) == 0  # the day before: still missed
    # Another run holds the lock: this one is skipped, and skipping is not doing the day.
    redis_client().set("sacco:lock:job:portfolio-snapshot", "someone-else")
    assert run_job("portfolio-snapshot", date(2026, 11, 21)) == 0
    missed = {run.name for run in missed_daily_runs(now=NOW, tz=NAIROBI)}
    assert "ledger-check" not in missed
    assert {"loan-arrears", "portfolio-snapshot"} <= missed
    statuses = dict(db.session.execute(select(JobRun.job, JobRun.status)).all())
    assert statuses["portfolio-snapshot"] == "skipped"


def test_catching_up_runs_each_missed_day_once_and_brings_a_late_loan_up_to_date(
    app: Flask,
) -> None:
    product = make_product("V1")
    loan = make_loan(product=product, on=date(2026, 9, 1))  # first installment due 1 Oct
    loan_id = loan.id
    db.session.commit()

    missed = catch_up(now=NOW, tz=NAIROBI)
    assert len(missed) == 18
    make_worker(("default",)).work(burst=True)

    runs = db.session.execute(
        select(JobRun.job, JobRun.as_of, JobRun.status).order_by(JobRun.id)
    ).all()
    assert [(r.job, r.as_of) for r in runs] == [(run.name, run.as_of) for run in missed]
    assert {r.status for r in runs} == {"success"}
    late = reload(loan_id)
    assert (late.days_past_due, late.aging_bucket) == (51, "31-60")
    # Started again the same morning, the scheduler finds nothing left to catch up.
    assert catch_up(now=NOW, tz=NAIROBI) == []


def test_the_dotted_paths_we_enqueue_resolve_to_the_jobs() -> None:
    from app.services.sms import SEND_JOB
    from workers.sms import send_sms

    assert import_attribute(RUN_JOB) is run_from_queue
    assert import_attribute(SEND_JOB) is send_sms
    assert import_attribute("app.extensions.release_db_session") is release_db_session
