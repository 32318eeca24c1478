"""The daily jobs, each registered by name. Later parts add theirs here."""

from __future__ import annotations

from datetime import date

from app.services.ledger import ledger_check
from workers.runner import JobStats, scheduled_job


@scheduled_job("ledger-check")
def ledger_check_job(*, as_of: date, stats: JobStats) -> None:
    """Nightly proof that every cached balance equals its journal."""
    problems = ledger_check()
    stats.records_scanned = 1
    for problem in problems:
        stats.error(problem.detail)
