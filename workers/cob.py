"""The RQ job that does one partition of a close-of-business run (`app.batch`)."""

from __future__ import annotations

from sqlalchemy import select

from app.batch import partition_work
from app.extensions import db
from app.models import BatchPartition


def run_partition(partition_id: int) -> bool:
    """Do partition `partition_id` if it is still to do; False when it was not ours."""
    from workers.schedule import BATCHES  # the job list imports this module's neighbours

    job = db.session.scalar(select(BatchPartition.job).where(BatchPartition.id == partition_id))
    db.session.commit()
    if job is None:
        return False  # a run cleaned away since it was queued
    return partition_work(BATCHES[job], partition_id)
