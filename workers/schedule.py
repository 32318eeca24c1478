"""When each job runs. The RQ cron scheduler reads cron strings in UTC; Kenya is UTC+3."""

from __future__ import annotations

from redis import Redis
from rq.cron import CronScheduler

from workers.runner import run_from_queue

# (job name, cron in UTC, queue). 01:30 EAT = 22:30 UTC the evening before.
SCHEDULE: list[tuple[str, str, str]] = [
    ("loan-arrears", "5 21 * * *", "default"),  # 00:05 EAT: the day's penalties and aging
    ("portfolio-snapshot", "35 21 * * *", "default"),  # 00:35 EAT, after arrears
    ("ledger-check", "30 22 * * *", "default"),  # 01:30 EAT
    ("sms-sweep", "*/5 * * * *", "sms"),
    # 09:00-09:10 EAT: well inside 07:00-20:00, so reminders are never held for quiet hours,
    # and after loan-arrears has brought days past due up to date.
    ("due-reminders", "0 6 * * *", "default"),
    ("overdue-reminders", "5 6 * * *", "default"),
    ("promise-reminders", "10 6 * * *", "default"),
]


def build_scheduler(connection: Redis) -> CronScheduler:
    scheduler = CronScheduler(connection=connection, name="")
    for name, cron, queue_name in SCHEDULE:
        scheduler.register(
            run_from_queue,
            queue_name,
            args=(name,),
            cron=cron,
            job_timeout=3600,
            name=name,
        )
    return scheduler
