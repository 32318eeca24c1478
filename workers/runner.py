"""The run contract every scheduled job shares (SPEC "Scheduled jobs").

A leaf: it imports no job. `workers.schedule` lists the jobs and runs them through here.

A job is a plain function `fn(*, as_of: date, stats: JobStats) -> None`. `job_run` gives it
a lock (a second scheduler skips, which is not an error), counts what it did, turns the
outcome into an exit code (0 success or skipped, 2 partial, 1 fatal) and writes one JSON
log line per run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from app.clock import business_today
from app.extensions import db, redis_client
from app.models import JobRun
from app.services.ledger import books_closed_through

log = logging.getLogger("sacco.jobs")

EXIT_OK, EXIT_FATAL, EXIT_PARTIAL = 0, 1, 2
LOCK_TTL_SECONDS = 30 * 60


@dataclass
class JobStats:
    records_scanned: int = 0
    records_updated: int = 0
    notifications_sent: int = 0
    notifications_failed: int = 0
    errors: list[str] = field(default_factory=list)
    # The run, for close-of-business jobs (`app.batch`): its id names its partitions, and
    # `workers` is `sacco jobs run --workers N` (None: the COB_WORKERS setting).
    run_id: str = ""
    workers: int | None = None

    def error(self, what: str) -> None:
        self.errors.append(what)


JobFn = Callable[..., None]


def _refusal(as_of: date, today: date) -> str | None:
    """Why a run for `as_of` must not start, or None."""
    if as_of > today:
        # A day that has not come: penalties charged for it would be owed for real.
        return f"as_of {as_of} is after today's business date {today}"
    try:
        closed = books_closed_through()
    except Exception as exc:  # noqa: BLE001 - no books, no run
        # The error's type only: its text can carry the database's address.
        return f"books: {type(exc).__name__}"
    finally:
        db.session.rollback()
    if closed is not None and as_of <= closed:
        # A replay into a closed month would post inside it: the books there are final.
        return f"as_of {as_of} is in a closed period: the books are closed through {closed}"
    return None


def job_run(name: str, fn: JobFn, as_of: date | None = None, *, workers: int | None = None) -> int:
    """Run job `fn` as `name` for `as_of` (default: today in Kenya); return its exit code.
    `workers`: how many local workers a close-of-business job spreads over (by hand)."""
    today = business_today()
    as_of = as_of or today
    run_id = uuid.uuid4().hex[:12]
    stats = JobStats(run_id=run_id, workers=workers)
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    lock_key = f"sacco:lock:job:{name}"
    redis = redis_client()
    status = "success"
    got_lock = False
    if (refused := _refusal(as_of, today)) is not None:
        status = "fatal"
        stats.error(refused)
    else:
        try:
            got_lock = bool(redis.set(lock_key, run_id, nx=True, ex=LOCK_TTL_SECONDS))
        except Exception as exc:  # noqa: BLE001 - no lock, no run
            status = "fatal"
            stats.error(f"lock: {type(exc).__name__}")
    if status == "fatal" and not got_lock:
        # Nothing ran: the line counts the error, the log says which (the operator's why).
        log.error("job %s did not run: %s", name, stats.errors[-1])
    if got_lock:
        try:
            fn(as_of=as_of, stats=stats)
            status = "partial" if stats.errors else "success"
        except Exception as exc:  # noqa: BLE001 - reported in the run line and exit code
            db.session.rollback()
            status = "fatal"
            stats.error(f"{type(exc).__name__}: {exc}")
            log.exception("job %s failed", name)
        finally:
            db.session.remove()
            # Release only our own lock: a run that outlived its TTL must not free another's.
            if redis.get(lock_key) == run_id.encode():
                redis.delete(lock_key)
    elif status != "fatal":
        status = "skipped"
    line = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": {"fatal": "error", "partial": "warning"}.get(status, "info"),
        "job": name,
        "run_id": run_id,
        "as_of_date": as_of.isoformat(),
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000),
        "records_scanned": stats.records_scanned,
        "records_updated": stats.records_updated,
        "notifications_sent": stats.notifications_sent,
        "notifications_failed": stats.notifications_failed,
        "errors_count": len(stats.errors),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    print(json.dumps(line), file=sys.stdout, flush=True)
    _record(line, started_at)
    return {"success": EXIT_OK, "skipped": EXIT_OK, "partial": EXIT_PARTIAL}.get(status, EXIT_FATAL)


def _record(line: dict[str, object], started_at: datetime) -> None:
    """Keep the run in `job_runs` (the scheduler's catch-up reads it). The JSON line is
    already out, so a database that is down costs only the record, never the run."""
    try:
        db.session.add(
            JobRun(
                run_id=line["run_id"],
                job=line["job"],
                as_of=date.fromisoformat(str(line["as_of_date"])),
                status=line["status"],
                started_at=started_at,
                finished_at=datetime.now(UTC),
                records_scanned=line["records_scanned"],
                records_updated=line["records_updated"],
                errors_count=line["errors_count"],
            )
        )
        db.session.commit()
    except Exception as exc:  # noqa: BLE001 - see above
        db.session.rollback()
        log.warning("job %s: run not recorded: %s", line["job"], type(exc).__name__)
    finally:
        db.session.remove()
