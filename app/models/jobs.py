"""One row per scheduled-job run: what the run line says, kept where the books are.

The scheduler reads it at start-up to catch up a daily run that was missed while nothing
was running, so it lives in the database beside the data the jobs change (a flushed Redis
would otherwise make every job look missed, or a lost one look done).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.types import UTCDateTime

JOB_RUN_STATUSES = ("success", "partial", "skipped", "fatal")


class JobRun(Model):
    __tablename__ = "job_runs"
    __table_args__ = (Index("ix_job_runs_job_finished_at", "job", "finished_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32), unique=True)
    job: Mapped[str] = mapped_column(String(40))
    as_of: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(8))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime())
    records_scanned: Mapped[int] = mapped_column(Integer, default=0)
    records_updated: Mapped[int] = mapped_column(Integer, default=0)
    errors_count: Mapped[int] = mapped_column(Integer, default=0)
