"""Collections and recovery scans; `workers.schedule.JOBS` names them. Each is idempotent
for its day (`--as-of-date` replays a day and changes nothing the second time)."""

from __future__ import annotations

from datetime import date

from app.services.data_quality import data_quality_check
from workers.runner import JobStats


def data_quality_job(*, as_of: date, stats: JobStats) -> None:
    """Weekly: agreements whose schedule does not add up, live loans without an officer,
    open cases without a hearing, members without a phone (listed in the console)."""
    found, written = data_quality_check(as_of=as_of)
    stats.records_scanned = found
    stats.records_updated = written
