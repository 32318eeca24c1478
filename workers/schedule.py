"""When each job runs, and catching up the daily runs missed while nothing was running.

The RQ cron scheduler reads cron strings in UTC; Kenya is UTC+3 all year.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

from croniter import croniter
from redis import Redis
from rq.cron import CronScheduler

from app.batch import Batch
from app.extensions import enqueue
from app.selectors.jobs import jobs_last_completed_day
from app.services.books.kpis import kpis_job
from app.services.books.provisioning import PROVISION, loan_loss_provision_job
from app.services.guarantees.jobs import (
    GUARANTEE_EXPIRY,
    GUARANTOR_NOTICES,
    guarantee_expiry_job,
    guarantor_notices_job,
)
from app.services.savings.dividends import DIVIDEND_POST
from app.services.savings.fixed import FIXED_MATURITY, fixed_deposit_maturity_job
from app.services.savings.interest import SAVINGS_INTEREST, savings_interest_job
from app.services.savings.standing_orders import STANDING_ORDERS, standing_orders_job
from workers.jobs import (
    ARREARS,
    api_idempotency_expire_job,
    ledger_check_job,
    loan_arrears_job,
    portfolio_snapshot_job,
    reconcile_payments_job,
    sms_sweep_job,
    webhook_sweep_job,
)
from workers.recovery import (
    AGREEMENT_REMINDERS,
    AGREEMENT_SCAN,
    agreement_reminders_job,
    agreement_scan_job,
    data_quality_job,
    hearing_notices_job,
    hearing_rollup_job,
    milestones_overdue_job,
)
from workers.reminders import (
    DUE,
    OVERDUE,
    PROMISES,
    due_reminders_job,
    overdue_reminders_job,
    promise_reminders_job,
)
from workers.runner import JobFn, job_run

RUN_JOB = "workers.schedule.run_from_queue"

# Every job `sacco jobs run NAME` and the scheduler know, by name.
JOBS: dict[str, JobFn] = {
    "loan-arrears": loan_arrears_job,
    "portfolio-snapshot": portfolio_snapshot_job,
    "ledger-check": ledger_check_job,
    "sms-sweep": sms_sweep_job,
    "webhook-sweep": webhook_sweep_job,
    "api-idempotency-expire": api_idempotency_expire_job,
    "reconcile-payments": reconcile_payments_job,
    "due-reminders": due_reminders_job,
    "overdue-reminders": overdue_reminders_job,
    "promise-reminders": promise_reminders_job,
    "data-quality": data_quality_job,
    "agreement-scan": agreement_scan_job,
    "agreement-reminders": agreement_reminders_job,
    "hearing-rollup": hearing_rollup_job,
    "hearing-notices": hearing_notices_job,
    "milestones-overdue": milestones_overdue_job,
    "guarantee-expiry": guarantee_expiry_job,
    "guarantor-notices": guarantor_notices_job,
    "savings-interest": savings_interest_job,
    "standing-orders": standing_orders_job,
    "fixed-deposit-maturity": fixed_deposit_maturity_job,
    "loan-loss-provision": loan_loss_provision_job,
    "books-kpis": kpis_job,
}


# The close-of-business jobs' batches, by job name: what a `cob` worker runs a partition of.
BATCHES: dict[str, Batch] = {
    batch.name: batch
    for batch in (
        ARREARS,
        DUE,
        OVERDUE,
        PROMISES,
        AGREEMENT_SCAN,
        AGREEMENT_REMINDERS,
        GUARANTEE_EXPIRY,
        GUARANTOR_NOTICES,
        SAVINGS_INTEREST,
        STANDING_ORDERS,
        FIXED_MATURITY,
        PROVISION,
        # Not scheduled: `dividend_post` runs it when staff post an approved run.
        DIVIDEND_POST,
    )
}


def run_job(name: str, as_of: date | None = None, *, workers: int | None = None) -> int:
    """Run the job called `name` under the job contract; KeyError for an unknown name."""
    return job_run(name, JOBS[name], as_of, workers=workers)


def run_from_queue(name: str, as_of: str | None = None) -> int:
    """What the scheduler enqueues (`as_of` only when it catches up a missed day)."""
    return run_job(name, date.fromisoformat(as_of) if as_of else None)


class Scheduled(NamedTuple):
    name: str
    cron: str  # UTC
    queue: str
    daily: bool  # caught up at scheduler start when its last run was missed


# 01:30 EAT = 22:30 UTC the evening before.
SCHEDULE: list[Scheduled] = [
    Scheduled("loan-arrears", "5 21 * * *", "default", True),  # 00:05 EAT: penalties, aging
    Scheduled("portfolio-snapshot", "35 21 * * *", "default", True),  # 00:35, after arrears
    # Interest on savings: the night after a period's last day, before the ledger check.
    # Fixed deposits that matured: paid (or rolled over) before the night's savings interest.
    Scheduled("fixed-deposit-maturity", "5 22 * * *", "default", True),  # 01:05 EAT
    Scheduled("savings-interest", "10 22 * * *", "default", True),  # 01:10 EAT
    # Month-end provisioning: nightly, acting for a month end (the night of the 1st), after
    # loan-arrears and before the ledger check.
    Scheduled("loan-loss-provision", "20 22 * * *", "default", True),  # 01:20 EAT
    Scheduled("ledger-check", "30 22 * * *", "default", True),  # 01:30 EAT
    # The books once the night has posted (arrears, interest) and been checked: the totals
    # of months closed since (which the statements read), then the KPIs.
    Scheduled("books-kpis", "40 22 * * *", "default", True),  # 01:40 EAT
    Scheduled("sms-sweep", "*/5 * * * *", "sms", False),
    Scheduled("webhook-sweep", "*/5 * * * *", "default", False),
    Scheduled("api-idempotency-expire", "25 * * * *", "default", False),  # hourly
    Scheduled("reconcile-payments", "*/2 * * * *", "payments", False),
    # 09:00-09:10 EAT: well inside 07:00-20:00, so reminders are never held for quiet hours,
    # and after loan-arrears has brought days past due up to date.
    Scheduled("due-reminders", "0 6 * * *", "default", True),
    Scheduled("overdue-reminders", "5 6 * * *", "default", True),
    Scheduled("promise-reminders", "10 6 * * *", "default", True),
    Scheduled("data-quality", "0 3 * * 1", "default", False),  # Mondays 06:00 EAT, weekly
    # Collections and recovery, after loan-arrears (00:05) has brought arrears up to date.
    Scheduled("agreement-scan", "50 21 * * *", "default", True),  # 00:50 EAT
    Scheduled("hearing-rollup", "55 21 * * *", "default", True),  # 00:55 EAT
    Scheduled("milestones-overdue", "0 22 * * *", "default", True),  # 01:00 EAT
    Scheduled("hearing-notices", "30 4 * * *", "default", True),  # 07:30 EAT, staff in
    Scheduled("agreement-reminders", "15 6 * * *", "default", True),  # 09:15 EAT
    # Guarantees: after loan-arrears has set the default flags, and in the morning because
    # both text members (transactional SMS ignore quiet hours).
    Scheduled("guarantee-expiry", "20 6 * * *", "default", True),  # 09:20 EAT
    Scheduled("guarantor-notices", "25 6 * * *", "default", True),  # 09:25 EAT
    # Standing orders at 06:00 EAT: after the night's interest, early enough that a loan
    # installment paid by one is paid on its day, and each member texted what moved.
    Scheduled("standing-orders", "0 3 * * *", "default", True),
]


def build_scheduler(connection: Redis) -> CronScheduler:
    scheduler = CronScheduler(connection=connection, name="")
    for entry in SCHEDULE:
        scheduler.register(
            run_from_queue,
            entry.queue,
            args=(entry.name,),
            cron=entry.cron,
            job_timeout=3600,
            name=entry.name,
        )
    return scheduler


class MissedRun(NamedTuple):
    name: str
    due_at: datetime  # the scheduled instant that passed with no run (UTC)
    as_of: date  # its business date in Kenya


def missed_daily_runs(*, now: datetime, tz: ZoneInfo) -> list[MissedRun]:
    """Daily jobs whose last scheduled run has no completed run for its business date,
    in the order they were due. Only the latest missed day counts: each job catches up
    on its own backlog (penalties, reminders) when it runs for that day."""
    done = jobs_last_completed_day()
    missed = []
    for entry in SCHEDULE:
        if not entry.daily:
            continue
        due_at = croniter(entry.cron, now).get_prev(datetime)
        as_of = due_at.astimezone(tz).date()
        last = done.get(entry.name)
        if last is None or last < as_of:
            missed.append(MissedRun(entry.name, due_at, as_of))
    return sorted(missed, key=lambda run: run.due_at)


def catch_up(*, now: datetime, tz: ZoneInfo) -> list[MissedRun]:
    """Queue each missed daily run once, chained so they run in their scheduled order
    (arrears before the snapshot and the reminders that read its days past due)."""
    missed = missed_daily_runs(now=now, tz=tz)
    previous = None
    queues = {entry.name: entry.queue for entry in SCHEDULE}
    for run in missed:
        previous = enqueue(
            queues[run.name],
            RUN_JOB,
            run.name,
            run.as_of.isoformat(),
            # Two schedulers starting together queue the same id; the job lock and the
            # jobs' own idempotency make a second run a no-op anyway.
            job_id=f"catch-up-{run.name}-{run.as_of.isoformat()}",
            job_timeout=3600,
            depends_on=previous,
        )
    return missed
