"""One row per partition of a close-of-business run (`app.batch`).

The database, not Redis, says which partitions are done: the partition's progress is
recorded as each chunk commits, so a worker killed mid-way leaves a partition that the next
worker resumes at the first chunk not recorded (a chunk redone changes nothing: its writes
are keyed), and a done partition is never redone.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Date, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.types import UTCDateTime

PARTITION_STATUSES = ("pending", "running", "done", "failed")


class BatchPartition(Model):
    __tablename__ = "batch_partitions"
    __table_args__ = (
        UniqueConstraint("run_id", "number"),
        Index("ix_batch_partitions_status_lease", "status", "lease_until"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32))  # the job run's (job_runs.run_id)
    job: Mapped[str] = mapped_column(String(40))
    as_of: Mapped[date] = mapped_column(Date)
    number: Mapped[int] = mapped_column(Integer)
    ids: Mapped[list[int]] = mapped_column(JSON)  # what the scan gave this partition, sorted
    status: Mapped[str] = mapped_column(String(8), default="pending")
    # Who holds it (host:pid:token) and until when; a lease that ran out is taken over.
    worker: Mapped[str | None] = mapped_column(String(80))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_chunk: Mapped[int] = mapped_column(Integer, default=0)  # chunks committed so far
    records_scanned: Mapped[int] = mapped_column(Integer, default=0)
    records_updated: Mapped[int] = mapped_column(Integer, default=0)
    notifications_sent: Mapped[int] = mapped_column(Integer, default=0)
    notifications_failed: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[str]] = mapped_column(JSON, default=list)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
