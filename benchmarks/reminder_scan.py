"""How long the due-reminder scan takes on a book of 100,000 live loans, and that its cost
follows the installments due that day, not the size of the book.

    .venv/bin/python benchmarks/reminder_scan.py
    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench_reminders \\
        .venv/bin/python benchmarks/reminder_scan.py --wipe

Without DATABASE_URL it uses a new SQLite file in a temporary folder. With DATABASE_URL
the database is emptied first (its public schema dropped), so it asks for --wipe: point
it at a database of its own. Redis is REDIS_URL or an embedded server in the temporary
folder, as the tests do (use a spare db number: the run fills the `sms` queue).

The book is written with SQLAlchemy Core bulk inserts, not through the services (the
point is the scan, not the writes): one member per loan, monthly installments, and
exactly `--due` installments falling due on day T, `--due-small` on day T2, none
three days after either and none on any other day the job looks at. It then runs:

- the scan alone (`due_reminders_scan`: the query and the Reminder objects),
- the batch's scan (`due_reminders_members`: the member ids the chunks are cut from),
- the whole job (`due-reminders`, a close-of-business batch: member scan, then per chunk
  of COB_CHUNK_SIZE members the query, grouping, one bulk INSERT into the outbox, send
  jobs on the RQ queue after each chunk's commit; 10,000 rows in all),
- the same job again (a rerun: everything already queued),
- the scan and the job for T2 with `--due-small` installments due.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, insert, select, text  # noqa: E402

from app import create_app  # noqa: E402
from app.extensions import db, embedded_redis_url, queue  # noqa: E402
from app.models import Installment, Loan, LoanProduct, Member, SmsMessage  # noqa: E402
from benchmarks.bench_app import bench_schema_fresh  # noqa: E402
from workers.reminders import (  # noqa: E402
    due_dates,
    due_reminders_job,
    due_reminders_members,
    due_reminders_scan,
    installments_query,
)
from workers.runner import JobStats  # noqa: E402

T = date(2026, 6, 15)  # 10,000 due
T2 = date(2026, 8, 20)  # 1,000 due
BOOK_START = date(2026, 1, 1)
CHUNK = 10_000


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _insert(table: Any, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), CHUNK):
        db.session.execute(insert(table), rows[start : start + CHUNK])
    db.session.commit()


def build_book(*, loans: int, due: int, due_small: int, per_loan: int) -> int:
    """Write the book; returns the number of installments."""
    db.session.add(
        LoanProduct(
            code="BENCH",
            name="Bench Loan",
            annual_rate=Decimal("12"),
            default_term=per_loan,
            max_term=per_loan,
            grace_days=3,
        )
    )
    db.session.commit()
    product_id = db.session.scalar(select(LoanProduct.id))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    _insert(
        Member.__table__,
        [
            dict(
                id=n,
                member_no=f"M{n:06d}",
                name=f"Member {n}",
                phone=f"2547{n:08d}",
                language="sw" if n % 3 == 0 else "en",
                status="active",
                failed_pin_count=0,
                created_at=now,
            )
            for n in range(1, loans + 1)
        ],
    )
    _insert(
        Loan.__table__,
        [
            dict(
                id=n,
                loan_no=f"L{n:06d}",
                member_id=n,
                product_id=product_id,
                status="active",
                channel="ussd",
                principal=Decimal("12000"),
                annual_rate=Decimal("12"),
                term=per_loan,
                frequency="monthly",
                interest_method="declining",
                amortization="equal_installments",
                fee_amount=Decimal("0"),
                applied_at=now,
                disbursed_on=BOOK_START,
                days_past_due=0,
                aging_bucket="current",
                in_default=False,
            )
            for n in range(1, loans + 1)
        ],
    )
    # Days the scans look at: no installment may land there except the chosen ones.
    reserved = {T, T + timedelta(days=3), T2, T2 + timedelta(days=3)}
    total = 0
    rows: list[dict[str, Any]] = []
    for n in range(1, loans + 1):
        if n <= due:
            anchor = T  # the 3rd installment falls on T
        elif n <= due + due_small:
            anchor = T2
        else:
            anchor = BOOK_START + timedelta(days=30 * 3 + n % 240)
        dates = [anchor + timedelta(days=30 * (k - 3)) for k in range(1, per_loan + 1)]
        if n > due + due_small:
            while reserved & set(dates):
                dates = [d + timedelta(days=5) for d in dates]
        for k, due_date in enumerate(dates, start=1):
            rows.append(
                dict(
                    loan_id=n,
                    version=1,
                    superseded=False,
                    number=k,
                    due_date=due_date,
                    principal_due=Decimal("1000.00"),
                    interest_due=Decimal("66.67"),
                    fees_due=Decimal("0"),
                    penalty_due=Decimal("0"),
                    principal_paid=Decimal("0"),
                    interest_paid=Decimal("0"),
                    fees_paid=Decimal("0"),
                    penalty_paid=Decimal("0"),
                )
            )
        if len(rows) >= CHUNK * 5:
            total += len(rows)
            _insert(Installment.__table__, rows)
            rows = []
    total += len(rows)
    _insert(Installment.__table__, rows)
    if db.engine.dialect.name == "postgresql":
        # Row ids were given explicitly: move the sequences past them, then refresh the
        # planner's statistics as autovacuum would after a bulk load.
        with db.engine.begin() as conn:
            for table in ("members", "loans"):
                conn.execute(
                    text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))")  # noqa: S608 - fixed names
                )
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    else:
        db.session.execute(text("ANALYZE"))
        db.session.commit()
    return total


def explain_scan(as_of: date) -> list[str]:
    """How the database runs the scan's own query (to show the due_date index is used)."""
    query = installments_query(Installment.due_date.in_(list(due_dates(as_of))))
    sql = str(query.compile(db.engine, compile_kwargs={"literal_binds": True}))
    prefix = "EXPLAIN " if db.engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
    rows = db.session.execute(text(prefix + sql)).all()
    db.session.rollback()
    return [str(row[-1]) for row in rows]


def measure(as_of: date, label: str) -> None:
    nine = datetime.combine(as_of, datetime.min.time(), tzinfo=UTC) + timedelta(hours=6)
    db.session.remove()
    cold_s, found = _timed(lambda: due_reminders_scan(as_of=as_of))
    db.session.remove()
    scan_s, found = _timed(lambda: due_reminders_scan(as_of=as_of))
    db.session.remove()
    members_s, members = _timed(lambda: due_reminders_members(as_of))
    db.session.remove()
    stats = JobStats()
    job_s, _ = _timed(lambda: due_reminders_job(as_of=as_of, stats=stats, now=nine))
    db.session.remove()
    rerun = JobStats()
    rerun_s, _ = _timed(lambda: due_reminders_job(as_of=as_of, stats=rerun, now=nine))
    db.session.remove()
    print(
        f"{label}: {len(found):,} installments due\n"
        f"  scan, first run          {cold_s * 1000:9.0f} ms\n"
        f"  scan (query + reminders) {scan_s * 1000:9.0f} ms\n"
        f"  batch scan (member ids)  {members_s * 1000:9.0f} ms  ({len(members):,} members)\n"
        f"  whole job                {job_s * 1000:9.0f} ms  "
        f"(notifications_sent={stats.notifications_sent:,}, "
        f"failed={stats.notifications_failed})\n"
        f"  rerun (all queued)       {rerun_s * 1000:9.0f} ms  "
        f"(notifications_sent={rerun.notifications_sent})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loans", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--due-small", type=int, default=1_000)
    parser.add_argument("--installments-per-loan", type=int, default=12)
    parser.add_argument("--wipe", action="store_true", help="allow emptying DATABASE_URL")
    args = parser.parse_args()
    if os.environ.get("DATABASE_URL") and not args.wipe:
        print("DATABASE_URL is set: this empties that database; add --wipe to go on")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="reminder-bench-"))
    redis_url = os.environ.get("REDIS_URL") or embedded_redis_url(str(tmp / "redis"))
    app = create_app(
        {
            "APP_ENV": "test",
            "DEMO_DATA": False,
            "SECRET_KEY": "bench",
            "DATABASE_URL": os.environ.get("DATABASE_URL") or f"sqlite:///{tmp / 'bench.db'}",
            "REDIS_URL": redis_url,
            "LOG_LEVEL": "WARNING",
        }
    )
    with app.app_context():
        bench_schema_fresh()
        queue("sms").empty()
        print(f"database: {db.engine.dialect.name}")
        build_s, installments = _timed(
            lambda: build_book(
                loans=args.loans,
                due=args.due,
                due_small=args.due_small,
                per_loan=args.installments_per_loan,
            )
        )
        loans = db.session.scalar(select(func.count()).select_from(Loan))
        print(
            f"book: {loans:,} live loans, {installments:,} installments (built in {build_s:.1f} s)"
        )
        for day in (T, T2):
            print(f"plan of the scan query as of {day}:")
            for line in explain_scan(day):
                print(f"  {line}")
        measure(T, f"as of {T}")
        measure(T2, f"as of {T2}")
        sent = db.session.scalar(select(func.count()).select_from(SmsMessage))
        print(f"outbox rows: {sent:,}; send jobs on the sms queue: {queue('sms').count:,}")
        queue("sms").empty()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
