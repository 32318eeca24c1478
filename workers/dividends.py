"""RQ jobs for the dividend run: they take ids and call the service."""

from __future__ import annotations

from datetime import date

from app.services.savings.dividends import dividend_post


def dividend_run_post(run_id: int, value_date: str) -> str:
    """Pay an approved run, queued by the console's post button (a request has no time for
    every member's line); the run's own status and note say how it went."""
    run = dividend_post(run_id=run_id, value_date=date.fromisoformat(value_date))
    return f"dividend run {run.id}: {run.status}"
