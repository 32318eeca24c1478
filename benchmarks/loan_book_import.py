"""How long `sacco import loan-book` takes for a book of N loans, and that re-import is free.

    .venv/bin/python benchmarks/loan_book_import.py [--rows 10000]
    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench \\
        .venv/bin/python benchmarks/loan_book_import.py --wipe

Without DATABASE_URL it uses a new SQLite file in a temporary folder. With DATABASE_URL
the database is emptied first (its public schema dropped), so it asks for --wipe: point
it at a database of its own, never at one tests or people are using. Redis is REDIS_URL
or an embedded server in the temporary folder, as the tests do.

The book is generated with a fixed seed: about four rows in five are new customers, the
rest a second loan of an earlier one; statuses are mostly active, some in arrears, some
closed; products are the demo's INSTANT and DEV plus a weekly one. The timing covers the
whole command: reading the CSV, checking every row, writing.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, make_url, select  # noqa: E402

from app import create_app  # noqa: E402
from app.cli.demo import PRODUCTS  # noqa: E402
from app.extensions import db, embedded_redis_url  # noqa: E402
from app.models import (  # noqa: E402
    Account,
    AuditLog,
    Installment,
    JournalEntry,
    JournalLine,
    Loan,
    LoanProduct,
    Member,
)
from app.services.ledger import ledger_check  # noqa: E402
from app.services.loan_import import COLUMNS  # noqa: E402
from benchmarks.bench_app import bench_schema_fresh  # noqa: E402

AS_OF = date(2026, 3, 31)
WEEKLY = dict(
    PRODUCTS[1],
    code="BIASHARA",
    name="Biashara Weekly",
    frequency="weekly",
    default_term=26,
    min_term=4,
    max_term=52,
    annual_rate=Decimal("18"),
    min_rate=Decimal("12"),
    max_rate=Decimal("24"),
)


def book_rows(count: int, seed: int = 2026) -> list[list[str]]:
    """`count` valid rows; dates are chosen so each row's status fits its schedule."""
    rng = random.Random(seed)
    rows: list[list[str]] = []
    customers: list[tuple[str, str, str]] = []
    for n in range(count):
        if customers and rng.random() < 0.2:
            customer = rng.choice(customers)
        else:
            number = len(customers) + 1
            customer = (f"CB{number:07d}", f"Member {number}", f"07{number:08d}")
            customers.append(customer)
        kind = rng.choice(("INSTANT", "DEV", "DEV", "DEV", "BIASHARA"))
        status = rng.choices(("active", "arrears", "closed"), weights=(70, 20, 10))[0]
        if kind == "INSTANT":
            term, rate, period = 1, "90", 30
            principal = rng.randrange(500, 50_000)
        elif kind == "DEV":
            term, rate, period = rng.randrange(3, 37), "12", 30
            principal = rng.randrange(5_000, 500_000)
        else:
            term, rate, period = rng.randrange(4, 53), str(rng.choice((12, 15, 18, 24))), 7
        if kind == "BIASHARA":
            principal = rng.randrange(1_000, 100_000)
        # active: the last installment still ahead; arrears: the first already behind.
        if status == "active":
            days = rng.randrange(0, max(1, (term - 1) * period))
        elif status == "arrears":
            days = rng.randrange(period + 2, period * (term + 3))
        else:
            days = rng.randrange(0, 900)
        disbursed = AS_OF - timedelta(days=days)
        cents = rng.choice(("", ".50", ".25")) if n % 7 == 0 else ""
        when = disbursed.isoformat() if n % 3 else disbursed.strftime("%d/%m/%Y")
        rows.append(
            [customer[0], customer[1], customer[2], kind, f"{principal}{cents}", rate, str(term)]
            + [when, status]
        )
    return rows


def counts() -> dict[str, int]:
    tables = {
        "members": Member,
        "loans": Loan,
        "installments": Installment,
        "accounts": Account,
        "journal_entries": JournalEntry,
        "journal_lines": JournalLine,
        "audit_log": AuditLog,
    }
    return {
        name: db.session.scalar(select(func.count()).select_from(model))
        for name, model in tables.items()
    }


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="loan-book-bench-"))
    # Registered before the embedded Redis starts, so it runs after that server has stopped.
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return bench(tmp)


def bench(tmp: Path) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--wipe", action="store_true", help="allow emptying DATABASE_URL")
    args = parser.parse_args()

    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{tmp / 'bench.db'}"
    if os.environ.get("DATABASE_URL") and not args.wipe:
        print("DATABASE_URL is set: this empties that database; add --wipe to go on")
        return 2
    if make_url(database_url).database == "test":
        print("refusing to empty the database the test suites share; use e.g. .../bench")
        return 2
    redis_url = os.environ.get("REDIS_URL") or embedded_redis_url(str(tmp / "redis"))
    app = create_app(
        {
            "APP_ENV": "development",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "DEMO_DATA": False,
            "LOG_LEVEL": "WARNING",
        }
    )
    book = tmp / "loan-book.csv"
    with book.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(book_rows(args.rows))

    with app.app_context():
        bench_schema_fresh()
        for spec in (PRODUCTS[0], PRODUCTS[1], WEEKLY):
            db.session.add(LoanProduct(**spec))
        db.session.commit()
        engine = db.engine.dialect.name

    runner = app.test_cli_runner()
    command = ["import", "loan-book", str(book), "--as-of-date", AS_OF.isoformat()]
    print(f"{engine}: importing {args.rows} rows from {book}")
    started, cpu = time.perf_counter(), time.process_time()
    first = runner.invoke(args=command)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(first.output.strip())
    if first.exit_code != 0:
        print(f"import failed with exit code {first.exit_code}")
        return 1
    # CPU seconds of this process (not the database's): the machine is shared, and wall
    # time under a loaded CPU says more about the neighbours than about the import.
    print(
        f"first import: {seconds:.1f} s, {args.rows / seconds:.0f} rows/s "
        f"({cpu:.1f} s of CPU in this process)"
    )

    with app.app_context():
        before = counts()
    started = time.perf_counter()
    second = runner.invoke(args=command)
    seconds = time.perf_counter() - started
    print(second.output.strip())
    with app.app_context():
        after = counts()
        problems = ledger_check()
    print(f"re-import: {seconds:.1f} s, {args.rows / seconds:.0f} rows/s")
    print("rows: " + ", ".join(f"{name} {n}" for name, n in after.items()))
    created = {name: after[name] - before[name] for name in after if after[name] != before[name]}
    print(f"re-import created: {created or 'nothing'}")
    print(f"ledger check: {'ok' if not problems else problems[:5]}")
    with app.app_context():
        db.engine.dispose()
    return 0 if second.exit_code == 0 and not created and not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
