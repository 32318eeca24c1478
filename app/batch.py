"""Close of business: the one shape of every nightly job that walks loans, members or
accounts (SPEC "Scheduled jobs").

A job gives a `Batch`: a scan that returns the ids to visit, and a chunk function that
does the work for a few hundred of them in the caller's transaction (lock the rows in id
order, read what they need in a few set queries, decide with the services' own rules,
write in bulk). This module does the rest:

- chunks commit one by one, so a long run holds no long transaction and what is done
  stays done;
- a chunk that fails is rolled back and retried one id at a time, so one bad row is one
  error in the run line, never a stopped run or a rolled-back neighbour;
- with workers (`--workers N` or COB_WORKERS), the ids are split into partitions, one
  RQ job each on the `cob` queue. Any `sacco worker` on any machine sharing the database
  and Redis takes them. A partition's progress is recorded in each chunk's own
  transaction, so a worker that dies mid-way leaves a partition that the next one resumes
  at its first chunk not committed, once its lease has run out, and a worker whose lease
  was taken over meanwhile has its chunk rolled back; a done partition is never redone.
  Only a chunk redone id by id (after a failure) records its progress after those
  commits: a death in between redoes that one chunk, which changes nothing, since every
  chunk's writes are keyed (a penalty per installment, a reminder per member and day) or
  recomputed.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from flask import current_app
from sqlalchemy import CursorResult, func, insert, select, update

from app.extensions import db, enqueue_many
from app.models import BatchPartition

log = logging.getLogger("sacco.batch")

PARTITION_JOB = "workers.cob.run_partition"
WORKER_LOG_LEVEL_ENV = "SACCO_WORKER_LOG_LEVEL"  # app.cli.runtime reads it (a leaf here)
# Partitions per worker: small enough that a worker that finishes early takes another,
# few enough that each is a few thousand rows.
PARTITIONS_PER_WORKER = 4
MAX_ATTEMPTS = 3
ERRORS_KEPT = 50  # per partition: the run line counts them all, the row keeps the first


COUNT_FIELDS = ("records_scanned", "records_updated", "notifications_sent", "notifications_failed")


@dataclass
class ChunkStats:
    """One chunk's counts, added to the run's only when the chunk commits."""

    records_scanned: int = 0
    records_updated: int = 0
    notifications_sent: int = 0
    notifications_failed: int = 0

    def __post_init__(self) -> None:
        self.errors: list[str] = []

    def error(self, what: str) -> None:
        self.errors.append(what)

    def add_to(self, stats: Any) -> None:
        for name in COUNT_FIELDS:
            setattr(stats, name, getattr(stats, name) + getattr(self, name))
        for problem in self.errors:
            stats.error(problem)


ChunkFn = Callable[[Sequence[int], date, ChunkStats], None]


@dataclass(frozen=True)
class Batch:
    """A job in the close-of-business shape.

    `scan(as_of)` returns the ids to visit (its transaction is ended before any chunk);
    `chunk(ids, as_of, stats)` does their work in the session's transaction without
    committing, and may be called again with one id of a chunk that failed. `noun` names
    an id in an error ("loan 42: ...")."""

    name: str
    scan: Callable[[date], Sequence[int]]
    chunk: ChunkFn
    noun: str = "loan"


def chunk_size() -> int:
    return max(1, int(current_app.config["SETTINGS"].COB_CHUNK_SIZE))


def _chunks(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


Record = Callable[[ChunkStats], None]


def _attempt(
    batch: Batch, ids: Sequence[int], as_of: date, stats: Any, record: Record | None = None
) -> Exception | None:
    """The chunk's work, committed and counted; or rolled back, counting nothing.

    `record` writes the chunk's progress in the chunk's own transaction, just before its
    commit: the work and the record land together or not at all. A lost lease
    (LeaseLost) rolls the work back and stops the partition here."""
    counts = ChunkStats()
    try:
        with _collector_paused():
            batch.chunk(ids, as_of, counts)
            if record is not None:
                record(counts)
            db.session.commit()
    except LeaseLost:
        db.session.rollback()
        raise
    except Exception as exc:  # noqa: BLE001 - the caller retries or reports it
        db.session.rollback()
        return exc
    counts.add_to(stats)
    return None


@contextmanager
def _collector_paused() -> Iterator[None]:
    """A chunk makes tens of thousands of short-lived objects (ORM states, Decimals,
    lines), and Python's cycle collector, run again and again as they pile up, was half
    of a chunk's CPU (0.50 s -> 0.28 s a chunk of 500 loans without it). Memory is freed
    by reference counting meanwhile; what cycles there are go at the next collection,
    once the chunk is over."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _work_chunk(
    batch: Batch, ids: Sequence[int], as_of: date, stats: Any, record: Record | None = None
) -> bool:
    """One chunk, committed; on failure each id again alone, so the others' work is kept
    and the bad one is one error in the run line. True when `record` went in with the
    whole chunk's commit; False when the chunk was redone id by id and its progress is
    still to record."""
    if _attempt(batch, ids, as_of, stats, record) is None:
        return record is not None
    log.warning("%s: a chunk of %d failed; retrying one by one", batch.name, len(ids))
    for one in ids:
        exc = _attempt(batch, [one], as_of, stats)
        if exc is not None:
            stats.error(f"{batch.noun} {one}: {type(exc).__name__}: {exc}")
    return False


def batch_chunks(batch: Batch, ids: Sequence[int], *, as_of: date, stats: Any) -> None:
    """`batch`'s work for these ids in this process, a chunk a transaction (the import
    brings the loans it wrote in arrears up to date this way, without a scan)."""
    for chunk in _chunks(sorted(set(ids)), chunk_size()):
        _work_chunk(batch, chunk, as_of, stats)


def batch_run(batch: Batch, *, as_of: date, stats: Any, workers: int | None = None) -> None:
    """Run `batch` for `as_of`, counting into `stats` (a JobStats).

    `workers` None reads COB_WORKERS; 0 runs every chunk here; N > 0 partitions the ids
    over the `cob` queue (see the module's docstring) and waits for them."""
    ids = sorted(set(batch.scan(as_of)))
    db.session.commit()  # end the scan's transaction: no lock or snapshot held meanwhile
    stats.records_scanned += len(ids)
    asked = getattr(stats, "workers", None)  # `sacco jobs run --workers N`
    if workers is None:
        workers = asked if asked is not None else current_app.config["SETTINGS"].COB_WORKERS
    # One chunk's work is less than starting a worker costs (a second or more).
    if workers <= 0 or len(ids) <= chunk_size():
        batch_chunks(batch, ids, as_of=as_of, stats=stats)
        return
    run_id = getattr(stats, "run_id", "") or uuid.uuid4().hex[:12]
    partitions = partitions_create(batch.name, run_id, as_of, ids, workers)
    # Asked for by hand, the workers are started here; scheduled, they are the `cob` service.
    spawn = min(workers, len(partitions)) if asked else 0  # no idle process per partition
    coordinator = Coordinator(batch, run_id, partitions, spawn=spawn)
    coordinator.wait(stats)


def partitions_create(
    job: str, run_id: str, as_of: date, ids: Sequence[int], workers: int
) -> list[int]:
    """Split `ids` into partitions recorded for `run_id`, queued on `cob`; their row ids."""
    size = chunk_size()
    count = min(math.ceil(len(ids) / size), workers * PARTITIONS_PER_WORKER)
    per = math.ceil(len(ids) / max(count, 1))
    # Whole chunks per partition, so a chunk never straddles two partitions.
    per = math.ceil(per / size) * size
    rows = [
        dict(
            run_id=run_id,
            job=job,
            as_of=as_of,
            number=n,
            ids=list(ids[start : start + per]),
            status="pending",
            attempts=0,
            next_chunk=0,
            records_scanned=0,
            records_updated=0,
            notifications_sent=0,
            notifications_failed=0,
            errors=[],
        )
        for n, start in enumerate(range(0, len(ids), per))
    ]
    created = list(
        db.session.scalars(
            insert(BatchPartition).returning(BatchPartition.id, sort_by_parameter_order=True),
            rows,
        )
    )
    db.session.commit()
    partitions_enqueue(created)
    return created


def partitions_enqueue(partition_ids: Sequence[int]) -> None:
    """One RQ job per partition (a job id per attempt: RQ keeps a finished job's id)."""
    stamp = uuid.uuid4().hex[:6]
    enqueue_many(
        "cob",
        PARTITION_JOB,
        [((pid,), f"cob-{pid}-{stamp}") for pid in partition_ids],
        timeout=6 * 3600,
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _lease() -> timedelta:
    return timedelta(seconds=max(1, int(current_app.config["SETTINGS"].COB_LEASE_SECONDS)))


def worker_name() -> str:
    """Who holds a partition: host and pid (what an operator looks for), and a token so a
    restarted process with the same pid is not mistaken for the one that died."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def partition_claim(partition_id: int, worker: str) -> bool:
    """Take the partition if it is pending, or running under a lease that has run out.
    One conditional UPDATE: two workers racing for it cannot both win."""
    now = _now()
    claimed = cast(
        CursorResult[Any],
        db.session.execute(
            update(BatchPartition)
            .where(
                BatchPartition.id == partition_id,
                (BatchPartition.status == "pending")
                | ((BatchPartition.status == "running") & (BatchPartition.lease_until < now)),
            )
            .values(
                status="running",
                worker=worker,
                lease_until=now + _lease(),
                attempts=BatchPartition.attempts + 1,
                started_at=func.coalesce(BatchPartition.started_at, now),
            )
            .execution_options(synchronize_session=False)
        ),
    )
    db.session.commit()
    return claimed.rowcount == 1


class LeaseLost(RuntimeError):
    """Another worker took the partition over (ours ran out): stop without committing."""


def _progress(partition_id: int, worker: str, counts: ChunkStats, **values: Any) -> None:
    """Record a chunk's progress in the chunk's own transaction, only while we hold it."""
    done = cast(
        CursorResult[Any],
        db.session.execute(
            update(BatchPartition)
            .where(BatchPartition.id == partition_id, BatchPartition.worker == worker)
            .values(
                lease_until=_now() + _lease(),
                **{
                    name: getattr(BatchPartition, name) + getattr(counts, name)
                    for name in COUNT_FIELDS
                },
                **values,
            )
            .execution_options(synchronize_session=False)
        ),
    )
    if done.rowcount != 1:
        raise LeaseLost(f"partition {partition_id} was taken over")


def partition_work(batch: Batch, partition_id: int, worker: str | None = None) -> bool:
    """Do a claimed-or-claimable partition from its first chunk not committed; False when
    it was not ours to do (done, held by a live worker, or taken over while we worked)."""
    worker = worker or worker_name()
    if not partition_claim(partition_id, worker):
        return False
    part = db.session.get(BatchPartition, partition_id, populate_existing=True)
    assert part is not None  # we have just claimed it
    ids, as_of, start = list(part.ids), part.as_of, part.next_chunk
    errors = list(part.errors or [])
    db.session.commit()
    try:
        for number, chunk in enumerate(_chunks(ids, chunk_size())):
            if number < start:
                continue
            counts = ChunkStats(records_scanned=len(chunk))

            def record(
                done: ChunkStats,
                number: int = number,
                scanned: int = len(chunk),
                before: list[str] = errors,
            ) -> None:
                whole = ChunkStats(records_scanned=scanned)
                done.add_to(whole)
                kept = (before + whole.errors)[:ERRORS_KEPT]
                _progress(partition_id, worker, whole, next_chunk=number + 1, errors=kept)

            if not _work_chunk(batch, chunk, as_of, counts, record):
                # Redone id by id, each id its own commit: the progress goes in after them. A
                # crash in between redoes this chunk, which every chunk function allows (its
                # writes are keyed or recomputed).
                kept = (errors + counts.errors)[:ERRORS_KEPT]
                _progress(partition_id, worker, counts, next_chunk=number + 1, errors=kept)
                db.session.commit()
            errors = (errors + counts.errors)[:ERRORS_KEPT]
    except LeaseLost:
        # Our lease ran out and another worker holds the partition now: what this chunk
        # did is rolled back with its record, and that worker goes on from there.
        db.session.rollback()
        log.warning("partition %s was taken over by another worker; stopping", partition_id)
        return False
    finished = cast(
        CursorResult[Any],
        db.session.execute(
            update(BatchPartition)
            .where(BatchPartition.id == partition_id, BatchPartition.worker == worker)
            .values(status="done", finished_at=_now(), lease_until=None)
            .execution_options(synchronize_session=False)
        ),
    )
    db.session.commit()
    return finished.rowcount == 1


@dataclass
class RunState:
    total: int
    done: int
    failed: int
    records: int
    pending: list[int]
    expired: dict[int, int]  # running with its lease run out -> attempts so far


def run_state(run_id: str) -> RunState:
    now = _now()
    rows = db.session.execute(
        select(
            BatchPartition.id,
            BatchPartition.status,
            BatchPartition.lease_until,
            BatchPartition.attempts,
            BatchPartition.records_scanned,
        ).where(BatchPartition.run_id == run_id)
    ).all()
    db.session.commit()
    return RunState(
        total=len(rows),
        done=sum(r.status == "done" for r in rows),
        failed=sum(r.status == "failed" for r in rows),
        records=sum(r.records_scanned for r in rows),
        pending=[r.id for r in rows if r.status == "pending"],
        expired={
            r.id: r.attempts
            for r in rows
            if r.status == "running" and r.lease_until is not None and r.lease_until < now
        },
    )


class Coordinator:
    """Waits for a run's partitions, takes over those whose worker died, and says how far
    it has got. With `spawn` it starts that many local `sacco worker -q cob --burst`
    processes (and a new one when they are all gone with work left); without, it does
    partitions itself between checks, so a run never waits on workers that do not exist.
    """

    def __init__(self, batch: Batch, run_id: str, partitions: list[int], *, spawn: int) -> None:
        self.batch, self.run_id, self.partitions, self.spawn = batch, run_id, partitions, spawn
        self.procs: list[subprocess.Popen[bytes]] = []
        self.requeued: set[tuple[int, int]] = set()

    def _start_workers(self, count: int) -> None:
        app = current_app
        env = dict(
            os.environ,
            REDIS_URL=app.config["REDIS_URL"],
            DATABASE_URL=app.config["SETTINGS"].DATABASE_URL,
            INSTANCE_PATH=app.instance_path,
        )
        # RQ's line per partition would bury the progress line; warnings still show.
        env.setdefault(WORKER_LOG_LEVEL_ENV, "WARNING")
        for _ in range(count):
            self.procs.append(
                subprocess.Popen(  # noqa: S603 - our own CLI, no shell
                    [sys.executable, "-m", "app", "worker", "-q", "cob", "--burst"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                )
            )

    def wait(self, stats: Any) -> None:
        started = time.perf_counter()
        if self.spawn:
            self._start_workers(self.spawn)
        last_seen = (-1, -1)
        state = run_state(self.run_id)
        try:
            while state.done + state.failed < state.total:
                self._take_over(state)
                if self.spawn:
                    alive = [p for p in self.procs if p.poll() is None]
                    if not alive and (state.pending or state.expired):
                        self._start_workers(1)
                    time.sleep(0.2)
                elif state.pending or state.expired:
                    partition_work(self.batch, [*state.pending, *state.expired][0])
                else:
                    time.sleep(0.2)
                state = run_state(self.run_id)
                # A line when a chunk or a partition is done, not at every check.
                if (state.done, state.records) != last_seen:
                    print(self._progress_line(state, started), file=sys.stderr, flush=True)
                    last_seen = (state.done, state.records)
        finally:
            self._stop_workers()
        self._collect(stats)

    def _stop_workers(self) -> None:
        """Burst workers leave by themselves once the queue is empty; a stop asked of one
        in the middle of leaving only costs a traceback, so they get a moment first."""
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def _take_over(self, state: RunState) -> None:
        """A partition whose lease ran out: queued again (once per attempt), or failed
        when it has had its attempts (a row that kills its worker must not loop)."""
        exhausted = [pid for pid, tries in state.expired.items() if tries >= MAX_ATTEMPTS]
        if exhausted:
            db.session.execute(
                update(BatchPartition)
                .where(BatchPartition.id.in_(exhausted), BatchPartition.status == "running")
                .values(status="failed", finished_at=_now())
                .execution_options(synchronize_session=False)
            )
            db.session.commit()
        again = [
            pid
            for pid, tries in state.expired.items()
            if tries < MAX_ATTEMPTS and (pid, tries) not in self.requeued
        ]
        if again:
            log.warning("%s: partitions %s lost their worker; queued again", self.run_id, again)
            self.requeued.update((pid, state.expired[pid]) for pid in again)
            partitions_enqueue(again)

    def _progress_line(self, state: RunState, started: float) -> str:
        seconds = max(time.perf_counter() - started, 0.001)
        return (
            f"{self.batch.name}: {state.done}/{state.total} partitions, "
            f"{state.records:,} {self.batch.noun}s, {state.records / seconds:,.0f}/s"
        )

    def _collect(self, stats: Any) -> None:
        rows = db.session.scalars(
            select(BatchPartition)
            .where(BatchPartition.run_id == self.run_id)
            .order_by(BatchPartition.number)
        ).all()
        for part in rows:
            # records_scanned was counted by the scan; the partitions' are the chunks' own.
            for name in COUNT_FIELDS[1:]:
                setattr(stats, name, getattr(stats, name) + getattr(part, name))
            for problem in part.errors or []:
                stats.error(problem)
            if part.status == "failed":
                stats.error(
                    f"partition {part.number} of {len(rows)} failed after {part.attempts} "
                    f"attempts ({len(part.ids)} {self.batch.noun}s not finished)"
                )
        db.session.commit()
