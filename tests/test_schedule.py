"""The cron schedule names only jobs that exist, and what it enqueues runs them."""

from __future__ import annotations

from croniter import croniter
from flask import Flask

from app.extensions import queue, redis_client
from workers.runner import registered_jobs, run_from_queue
from workers.schedule import SCHEDULE, build_scheduler


def test_every_scheduled_job_exists_and_every_daily_job_is_scheduled() -> None:
    names = [name for name, _, _ in SCHEDULE]
    assert len(names) == len(set(names))
    assert set(names) == set(registered_jobs())
    for _, cron, queue_name in SCHEDULE:
        assert croniter.is_valid(cron), cron
        assert queue_name in ("payments", "sms", "default")


def test_the_scheduler_enqueues_the_runner_with_the_job_name(app: Flask) -> None:
    scheduler = build_scheduler(redis_client())
    jobs = {job.name: job for job in scheduler.get_jobs()}
    assert set(jobs) == {name for name, _, _ in SCHEDULE}
    cron_job = jobs["ledger-check"]
    cron_job.enqueue(redis_client())
    (queued,) = queue("default").get_jobs()
    assert queued.func is run_from_queue
    assert queued.args == ("ledger-check",)
    # Run it as the worker would: it takes the lock, checks the ledger, exits 0.
    assert queued.perform() == 0
