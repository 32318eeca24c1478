"""Close of business at scale (issue 18): the nightly chain on a book of N loans, with 1 and
with 2 worker processes, each job's time and loans per second, and the speed-up.

    .venv/bin/python benchmarks/cob.py --loans 10000
    .venv/bin/python benchmarks/cob.py --loans 100000 [--reuse-book] [--workers 1,2]

PostgreSQL only (the partitions, `CREATE DATABASE ... TEMPLATE`): the server is
--pg-url, else DATABASE_URL's server, else postgres@127.0.0.1:5432. Two databases of its
own are dropped and made there: the book (--book-db, default cob_book) and each run's copy
(--run-db). Redis is --redis-url (default db 15), emptied (FLUSHDB) before each run: point
both at nothing anyone else uses.

The book: the import benchmark's generator (benchmarks/loan_book_import.py: fixed seed,
INSTANT, DEV and a weekly product, four in five customers new, about 70% active, 20% in
arrears, 10% closed, disbursed up to ~3 years back) written to a CSV and brought in by the
import service on the path `sacco import loan-book` takes (loan_book_open, then
loan_book_import), all rows, as of 2026-03-31. Arrears are left to the chain
(`arrears_now=False`): the first night after a migration, the heaviest `loan-arrears`
there is (days late, buckets, default flags and every penalty owed for the late fifth),
the run issue 18 measured at 155 s for 10,000 loans. The book is built once and ANALYZEd;
--reuse-book keeps one with the right number of loans.

Each run: the run database (--run-db, default cob_run) made from the book as a template
(so every worker count starts from the same bytes), then for one as_of (default the
book's date) in order: loan-arrears, portfolio-snapshot, due-reminders,
overdue-reminders, promise-reminders, agreement-scan, ledger-check, each by
`workers.schedule.run_job(name, as_of, workers=W)`, as `sacco jobs run NAME --workers W`
does: the job starts W local `sacco worker -q cob --burst` processes itself (their
start-up is in the figure). `--workers 0,1,2` adds a run with no workers (the chunks in
the job's own process) for comparison; the speed-ups are over one worker. A job's
seconds are the wall clock around run_job; its counts are its JSON run line (checked to
be in job_runs). "book/s" is the book's loans over those seconds (what a SACCO of that
size waits for); "scanned/s" the job's own records over them. The 1-minute load average
at each job's end is printed beside it: the machine is shared, read the figures with it.

An imported book has no promises to pay and no repayment agreements (the import makes
neither), so promise-reminders and agreement-scan find nothing to do here: their rows
time the scan alone.

Exit status: 1 when any job's status is not success (each job's exit code is printed), 2
when it refuses to start.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis import Redis  # noqa: E402
from sqlalchemy import URL, Engine, create_engine, func, make_url, select, text  # noqa: E402

from app import create_app  # noqa: E402
from app.cli.demo import PRODUCTS  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import JobRun, Loan, LoanProduct  # noqa: E402
from app.services.loan_import import COLUMNS, loan_book_import, loan_book_open  # noqa: E402
from app.services.loans import loan_default_officer  # noqa: E402
from benchmarks.bench_app import bench_schema_fresh  # noqa: E402
from benchmarks.loan_book_import import AS_OF, WEEKLY, book_rows  # noqa: E402

CHAIN = (
    "loan-arrears",
    "portfolio-snapshot",
    "due-reminders",
    "overdue-reminders",
    "promise-reminders",
    "agreement-scan",
    "ledger-check",
)
DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class JobFigure:
    job: str
    exit_code: int
    status: str
    seconds: float
    scanned: int
    updated: int
    sent: int
    errors: int
    load: float


def app_for(url: URL, redis_url: str):  # noqa: ANN201 - a Flask app
    return create_app(
        {
            "APP_ENV": "development",
            "DATABASE_URL": url.render_as_string(hide_password=False),
            "REDIS_URL": redis_url,
            "DEMO_DATA": False,
            "LOG_LEVEL": "WARNING",
        }
    )


def admin_engine(server: URL) -> Engine:
    # CREATE/DROP DATABASE cannot run in a transaction, and not while connected to either.
    return create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")


def db_exists(admin: Engine, name: str) -> bool:
    with admin.connect() as conn:
        return bool(conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}))


def book_loans(server: URL, name: str) -> int | None:
    """The book's loan count; None when it has no loans table (a half-built book)."""
    engine = create_engine(server.set(database=name))
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(Loan.__table__)) or 0)
    except Exception:  # noqa: BLE001 - any failure means: build it again
        return None
    finally:
        engine.dispose()


def book_build(server: URL, name: str, loans: int, redis_url: str) -> float:
    """Make database `name` with the schema, the three products and `loans` imported loans;
    the import's seconds."""
    admin = admin_engine(server)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    tmp = Path(tempfile.mkdtemp(prefix="cob-bench-"))
    try:
        path = tmp / "loan-book.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows(book_rows(loans))
        app = app_for(server.set(database=name), redis_url)
        with app.app_context():
            bench_schema_fresh()
            for spec in (PRODUCTS[0], PRODUCTS[1], WEEKLY):
                db.session.add(LoanProduct(**spec))
            db.session.commit()
            print(f"book: importing {loans:,} loans into {name} ...", flush=True)
            started = time.perf_counter()
            # What `sacco import loan-book FILE --max-rows N` does, arrears left to the chain.
            default = loan_default_officer()
            officer_id = default.id if default is not None else None
            db.session.rollback()
            book = loan_book_open(path=str(path), max_rows=loans)
            sum(1 for _ in book.rows())
            report = loan_book_import(
                rows=book, skip_bad=False, as_of=AS_OF, officer_id=officer_id, arrears_now=False
            )
            seconds = time.perf_counter() - started
            print(f"book: {report.summary} in {seconds:.1f} s", flush=True)
            if report.bad_rows or report.error or report.imported != loans:
                for problem in report.bad_rows[:5]:
                    print(f"book: {problem}")
                raise SystemExit(f"book: import failed: {report.error or 'bad rows'}")
            db.engine.dispose()
        # Statistics in the template, as a nightly book has them (autovacuum may lag).
        engine = create_engine(server.set(database=name), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("VACUUM ANALYZE"))
        engine.dispose()
        return seconds
    finally:
        admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


def run_copy(server: URL, book: str, run_db: str) -> float:
    admin = admin_engine(server)
    started = time.perf_counter()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{run_db}"'))
            conn.execute(text(f'CREATE DATABASE "{run_db}" TEMPLATE "{book}"'))
    finally:
        admin.dispose()
    return time.perf_counter() - started


def run_line(captured: str) -> dict[str, object]:
    """The job's JSON run line among what it printed."""
    for line in reversed(captured.splitlines()):
        if line.startswith("{") and '"run_id"' in line:
            return dict(json.loads(line))
    return {}


def chain_run(
    server: URL, run_db: str, redis_url: str, as_of: date, workers: int
) -> list[JobFigure]:
    from workers.schedule import run_job  # after sys.path is set; imports the jobs

    Redis.from_url(redis_url).flushdb()
    app = app_for(server.set(database=run_db), redis_url)
    figures = []
    with app.app_context():
        for job in CHAIN:
            out = io.StringIO()
            started = time.perf_counter()
            with contextlib.redirect_stdout(out):
                code = run_job(job, as_of, workers=workers)
            seconds = time.perf_counter() - started
            line = run_line(out.getvalue())
            print(out.getvalue().strip(), flush=True)
            recorded = db.session.scalar(
                select(JobRun).where(JobRun.run_id == str(line.get("run_id", "")))
            )
            db.session.rollback()
            status = str(line.get("status", "no run line"))
            if recorded is None:
                status = f"{status}, not in job_runs"
            figure = JobFigure(
                job=job,
                exit_code=code,
                status=status,
                seconds=seconds,
                scanned=int(str(line.get("records_scanned", 0))),
                updated=int(str(line.get("records_updated", 0))),
                sent=int(str(line.get("notifications_sent", 0))),
                errors=int(str(line.get("errors_count", 0))),
                load=os.getloadavg()[0],
            )
            figures.append(figure)
            mark = "" if status == "success" else "   <-- NOT SUCCESS"
            print(
                f"[{workers} worker(s)] {job}: exit {code} {status} in {seconds:.2f} s{mark}",
                flush=True,
            )
        db.engine.dispose()
    return figures


def report(results: dict[int, list[JobFigure]], loans: int) -> None:
    for workers, figures in results.items():
        print(f"\n{loans:,} loans, {workers} worker process(es)")
        print(
            f"{'job':<20}{'exit':>5}{'seconds':>9}{'scanned':>9}{'updated':>9}{'sent':>8}"
            f"{'errors':>7}{'book/s':>9}{'scanned/s':>10}{'load1':>7}"
        )
        for f in figures:
            print(
                f"{f.job:<20}{f.exit_code:>5}{f.seconds:>9.2f}{f.scanned:>9,}{f.updated:>9,}"
                f"{f.sent:>8,}{f.errors:>7}{loans / f.seconds:>9,.0f}"
                f"{f.scanned / f.seconds:>10,.0f}{f.load:>7.2f}"
            )
        total = sum(f.seconds for f in figures)
        print(f"{'chain':<20}{'':>5}{total:>9.2f}{'':>33}{loans / total:>9,.0f}")
    counts = sorted(results)
    if len(counts) < 2:
        return
    # Over one worker when it ran (0 is the job's own process, no workers, for comparison).
    base = 1 if 1 in counts else counts[0]
    for other in (count for count in counts if count != base):
        print(f"\nspeed-up, {other} workers over {base} (seconds {base} / seconds {other})")
        for one, many in zip(results[base], results[other], strict=True):
            print(f"{one.job:<20}{one.seconds / many.seconds:>7.2f}x")
        chain_one = sum(f.seconds for f in results[base])
        chain_many = sum(f.seconds for f in results[other])
        print(f"{'chain':<20}{chain_one / chain_many:>7.2f}x")


def server_url(given: str | None) -> URL | None:
    raw = given or os.environ.get("DATABASE_URL") or DEFAULT_SERVER
    url = make_url(raw)
    if url.get_backend_name() != "postgresql":
        print(f"cob.py runs on PostgreSQL only (partitions, database templates), not {raw!r}")
        return None
    return url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loans", type=int, default=100_000)
    parser.add_argument("--book-db", default="cob_book")
    parser.add_argument("--run-db", default="cob_run", help="each run's copy of the book")
    parser.add_argument("--reuse-book", action="store_true")
    parser.add_argument(
        "--workers", default="1,2", help="worker counts, comma-separated (0: in the job's process)"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--pg-url", default=None, help="the PostgreSQL server (any database)")
    parser.add_argument("--as-of", type=date.fromisoformat, default=AS_OF)
    args = parser.parse_args()
    server = server_url(args.pg_url)
    if server is None:
        return 2
    for name in (args.book_db, args.run_db):
        if name in ("postgres", "test") or name.startswith("template"):
            print(f"{name!r} is not a database this may drop")
            return 2
    if args.book_db == args.run_db:
        print("--book-db and --run-db must differ")
        return 2
    counts = [int(part) for part in args.workers.split(",") if part.strip()]
    # The workers a job starts are `python -m app` from here, with this environment.
    os.chdir(REPO)
    os.environ.update(APP_ENV="development", LOG_LEVEL="WARNING", DEMO_DATA="false")

    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    admin = admin_engine(server)
    exists = db_exists(admin, args.book_db)
    admin.dispose()
    have = book_loans(server, args.book_db) if exists else None
    if args.reuse_book and have == args.loans:
        print(f"book: reusing {args.book_db} ({have:,} loans)")
    else:
        book_build(server, args.book_db, args.loans, args.redis_url)

    results: dict[int, list[JobFigure]] = {}
    for workers in counts:
        seconds = run_copy(server, args.book_db, args.run_db)
        print(
            f"\n== {workers} worker(s): {args.run_db} copied from {args.book_db} in {seconds:.1f} s"
        )
        results[workers] = chain_run(server, args.run_db, args.redis_url, args.as_of, workers)
    report(results, args.loans)
    print(f"\nload after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    failed = [(w, f) for w, figs in results.items() for f in figs if f.status != "success"]
    for workers, f in failed:
        print(f"FAILED: {f.job} with {workers} worker(s): exit {f.exit_code}, {f.status}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
