"""Reads over the scheduled jobs' run records."""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select

from app.extensions import db
from app.models import JobRun

# A partial run did its day: the records it could not handle are reported, and running the
# day again at every scheduler start would not mend them.
COMPLETED = ("success", "partial")


def jobs_last_completed_day() -> dict[str, date]:
    """For each job that ever completed a run, the latest business date it completed."""
    rows = db.session.execute(
        select(JobRun.job, func.max(JobRun.as_of))
        .where(JobRun.status.in_(COMPLETED))
        .group_by(JobRun.job)
    ).all()
    return {job: as_of for job, as_of in rows}
