"""How long the nightly ledger check takes on a book of N loans, before and after it went
set-based, and that both give the same answer.

    createdb -h 127.0.0.1 -U postgres bench_ledger
    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench_ledger \\
    REDIS_URL=redis://127.0.0.1:6379/13 \\
        .venv/bin/python benchmarks/ledger_check.py --loans 10000 --wipe [--reuse]

The book is `sacco import loan-book` of the import benchmark's generated rows (its
generator, fixed seed), at most --import-rows of them; on PostgreSQL a bigger --loans
(a multiple) repeats those loans in SQL with new numbers, for the same members: e.g.
--loans 100000 is ten copies of the 10,000-row book. With DATABASE_URL the database is
emptied first, so it asks for --wipe; --reuse keeps a book of the same size already
there (building is the slow part).
Without DATABASE_URL: a fresh SQLite file and embedded Redis in a temporary folder.

Each implementation runs on a clean book and again with a handful of problems planted in
one transaction that is rolled back afterwards (a tampered cache, a changed installment,
a loan marked closed while it owes, an overdrawn savings account), and the two results
must be equal both times.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import shutil
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select, text  # noqa: E402

from app.cli.demo import PRODUCTS  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import Account, Installment, JournalLine, Loan, LoanProduct  # noqa: E402
from app.money import ZERO, round_money  # noqa: E402
from app.services.ledger import (  # noqa: E402
    NO_OVERDRAFT,
    RECEIVABLE_KINDS,
    SETTLED_STATUSES,
    Mismatch,
    ledger_check,
)
from app.services.loan_import import COLUMNS  # noqa: E402
from benchmarks.bench_app import bench_app, bench_schema_fresh  # noqa: E402
from benchmarks.loan_book_import import AS_OF, WEEKLY, book_rows, counts  # noqa: E402

# --- FOR THE COMPARISON FIGURE ONLY: the per-account Python implementation as it was ----
# before issue 18 (app/services/ledger.py at commit 50c81cd), read-only (no fix), so the
# benchmark can time it on the same book and check that the new one agrees. Not used by
# the application.


def _old_ledger_check() -> list[Mismatch]:
    problems: list[Mismatch] = []
    unbalanced = db.session.execute(
        select(JournalLine.entry_id, func.sum(JournalLine.amount))
        .group_by(JournalLine.entry_id)
        .having(func.sum(JournalLine.amount) != 0)
    ).all()
    for entry_id, total in unbalanced:
        problems.append(Mismatch("entry", f"journal entry {entry_id} sums to {total}"))
    single = db.session.execute(
        select(JournalLine.entry_id).group_by(JournalLine.entry_id).having(func.count() < 2)
    ).scalars()
    for entry_id in single:
        problems.append(Mismatch("entry", f"journal entry {entry_id} has one line"))

    sums = dict(
        db.session.execute(
            select(JournalLine.account_id, func.sum(JournalLine.amount)).group_by(
                JournalLine.account_id
            )
        ).all()
    )
    for account in db.session.scalars(select(Account).order_by(Account.id)):
        rebuilt = round_money(sums.get(account.id) or ZERO)
        if account.balance != rebuilt:
            problems.append(
                Mismatch("balance", f"{account.code}: cached {account.balance}, journal {rebuilt}")
            )
    problems += _old_reconcile_loans(sums)
    for account in db.session.scalars(
        select(Account).where(Account.kind.in_(NO_OVERDRAFT)).order_by(Account.id)
    ):
        held = -round_money(sums.get(account.id) or ZERO)
        if held < 0:
            problems.append(Mismatch("account", f"{account.code} is overdrawn: {held}"))
    return problems


def _old_reconcile_loans(sums: dict[int, Decimal]) -> list[Mismatch]:
    owed: dict[tuple[int, str], Decimal] = {}
    columns = {
        c: func.sum(getattr(Installment, f"{c}_due") - getattr(Installment, f"{c}_paid"))
        for c in RECEIVABLE_KINDS.values()
    }
    for loan_id, *totals in db.session.execute(
        select(Installment.loan_id, *columns.values())
        .where(Installment.superseded.is_(False))
        .group_by(Installment.loan_id)
    ):
        for component, total in zip(columns, totals, strict=True):
            owed[(loan_id, component)] = round_money(total or ZERO)
    held: dict[tuple[int, str], Decimal] = {}
    for account_id, loan_id, kind in db.session.execute(
        select(Account.id, Account.loan_id, Account.kind).where(
            Account.kind.in_(RECEIVABLE_KINDS), Account.loan_id.is_not(None)
        )
    ):
        key = (loan_id, RECEIVABLE_KINDS[kind])
        held[key] = held.get(key, ZERO) + round_money(sums.get(account_id) or ZERO)
    loans = {
        loan_id: (status, loan_no)
        for loan_id, status, loan_no in db.session.execute(
            select(Loan.id, Loan.status, Loan.loan_no)
        )
    }
    problems = []
    for loan_id, component in sorted(set(owed) | set(held)):
        schedule, books = owed.get((loan_id, component), ZERO), held.get((loan_id, component), ZERO)
        status, number = loans.get(loan_id, (None, None))
        name = number or f"loan {loan_id}"
        if schedule != books:
            problems.append(
                Mismatch(
                    "loan",
                    f"{name} {component}: receivable {books}, schedule outstanding {schedule}",
                )
            )
        elif status in SETTLED_STATUSES and schedule != 0:
            problems.append(
                Mismatch("loan", f"{name} is {status} but still owes {component} {schedule}")
            )
    return problems


# --- the benchmark ------------------------------------------------------------------------


def build_book(app: object, tmp: Path, loans: int) -> bool:
    book = tmp / "loan-book.csv"
    with book.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(book_rows(loans))
    bench_schema_fresh()
    for spec in (PRODUCTS[0], PRODUCTS[1], WEEKLY):
        db.session.add(LoanProduct(**spec))
    db.session.commit()
    runner = app.test_cli_runner()  # type: ignore[attr-defined]
    started = time.perf_counter()
    result = runner.invoke(
        args=["import", "loan-book", str(book), "--as-of-date", AS_OF.isoformat()]
    )
    print(result.output.strip() or repr(result.exception))
    print(f"built the book by import in {time.perf_counter() - started:.1f} s")
    return result.exit_code == 0


def copy_book(copies: int) -> None:
    """PostgreSQL only: repeat the imported loans `copies - 1` more times, in SQL (the import
    is the slow part). Each copy gets new ids (an offset per table), its own loan numbers,
    account codes and idempotency keys, for the same members; the cached balances are then
    set from the journal, so the copied book is clean. The SQL is put together from this
    file's own table names and integers only (hence the S608 waivers): no outside input."""
    tops = {
        t: db.session.scalar(text(f"SELECT coalesce(max(id), 0) FROM {t}"))  # noqa: S608
        for t in ("loans", "installments", "accounts", "journal_entries", "journal_lines")
    }

    def columns(table: str) -> list[str]:
        return list(
            db.session.scalars(
                text(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = :t ORDER BY ordinal_position"
                ),
                {"t": table},
            )
        )

    def copy(table: str, k: int, changed: dict[str, str], where: str) -> None:
        names = columns(table)
        values = ", ".join(changed.get(n, n) for n in names)
        db.session.execute(
            text(
                f"INSERT INTO {table} ({', '.join(names)}) SELECT {values} FROM {table}"  # noqa: S608
                f" WHERE id <= {tops[table]} AND {where}"
            )
        )

    started = time.perf_counter()
    loans, rows, a, e, j = tops.values()  # the id offsets: one copy past the last
    for k in range(1, copies):
        copy(
            "loans",
            k,
            {"id": f"id + {k * loans}", "loan_no": f"loan_no || '-{k}'", "external_ref": "NULL"},
            "true",
        )
        copy(
            "installments",
            k,
            {"id": f"id + {k * rows}", "loan_id": f"loan_id + {k * loans}"},
            "true",
        )
        copy(
            "accounts",
            k,
            {"id": f"id + {k * a}", "code": f"code || '-{k}'", "loan_id": f"loan_id + {k * loans}"},
            "loan_id IS NOT NULL",
        )
        copy(
            "journal_entries",
            k,
            {
                "id": f"id + {k * e}",
                "loan_id": f"loan_id + {k * loans}",
                "idempotency_key": f"idempotency_key || '-{k}'",
            },
            "loan_id IS NOT NULL",
        )
        copy(
            "journal_lines",
            k,
            {
                "id": f"id + {k * j}",
                "entry_id": f"entry_id + {k * e}",
                "account_id": (
                    "CASE WHEN account_id IN (SELECT id FROM accounts WHERE loan_id IS NOT NULL)"  # noqa: S608
                    f" THEN account_id + {k * a} ELSE account_id END"
                ),
            },
            "entry_id IN (SELECT id FROM journal_entries WHERE loan_id IS NOT NULL)",
        )
    for table in tops:
        db.session.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"  # noqa: S608
            )
        )
    db.session.execute(
        text(
            "UPDATE accounts SET balance = s.total FROM (SELECT account_id, sum(amount) AS total"
            " FROM journal_lines GROUP BY account_id) s"
            " WHERE s.account_id = accounts.id AND accounts.balance <> s.total"
        )
    )
    db.session.commit()
    db.session.execute(text("ANALYZE"))
    db.session.commit()
    print(f"copied the book {copies - 1} more time(s) in {time.perf_counter() - started:.1f} s")


def plant_problems() -> None:
    """A few mismatches of each kind, in the open transaction (the caller rolls back)."""
    live = select(Loan.id).where(Loan.status == "active").order_by(Loan.id).limit(3)
    tampered, changed, closed = db.session.scalars(live).all()
    db.session.execute(
        text("UPDATE accounts SET balance = balance + 1 WHERE loan_id = :l"), {"l": tampered}
    )
    db.session.execute(
        text(
            "UPDATE installments SET interest_paid = interest_paid + 1"
            " WHERE loan_id = :l AND number = 1"
        ),
        {"l": changed},
    )
    db.session.execute(text("UPDATE loans SET status = 'closed' WHERE id = :l"), {"l": closed})
    savings = db.session.scalar(
        select(Account.id).where(Account.kind == "savings").order_by(Account.id).limit(1)
    )
    db.session.execute(
        text(
            "INSERT INTO journal_lines (entry_id, account_id, amount)"
            " SELECT min(entry_id), :a, 100000 FROM journal_lines"
        ),
        {"a": savings},
    )


def timed(check: Callable[[], list[Mismatch]]) -> tuple[float, list[Mismatch]]:
    db.session.expire_all()
    started = time.perf_counter()
    problems = check()
    return time.perf_counter() - started, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loans", type=int, default=10_000)
    parser.add_argument("--wipe", action="store_true", help="allow emptying DATABASE_URL")
    parser.add_argument("--reuse", action="store_true", help="keep a book of --loans loans")
    parser.add_argument(
        "--import-rows",
        type=int,
        default=10_000,
        help="import at most this many loans; a bigger --loans repeats them in SQL",
    )
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    made = bench_app("ledger-check", wipe=args.wipe)
    if made is None:
        return 2
    app, tmp = made
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    ok = True
    with app.app_context():
        engine = db.engine.dialect.name
        have = None
        if args.reuse and engine == "postgresql":
            have = db.session.scalar(text("SELECT to_regclass('loans') IS NOT NULL")) and (
                db.session.scalar(select(func.count()).select_from(Loan))
            )
            db.session.rollback()
        if have != args.loans:
            imported = min(args.loans, args.import_rows)
            copies, rest = divmod(args.loans, imported)
            if rest or (copies > 1 and engine != "postgresql"):
                print("--loans above --import-rows: PostgreSQL, and a multiple of it")
                return 2
            # --reuse also takes the imported book alone and only repeats it.
            if have != imported and not build_book(app, tmp, imported):
                print("import failed")
                return 1
            if copies > 1:
                copy_book(copies)
        book = counts()
        db.session.rollback()
        print(f"{engine}: " + ", ".join(f"{name} {n}" for name, n in book.items()))
        for label, plant in (("clean book", False), ("with planted problems", True)):
            if plant:
                plant_problems()
            old = min((timed(_old_ledger_check) for _ in range(args.repeat)), key=lambda r: r[0])
            new = min((timed(ledger_check) for _ in range(args.repeat)), key=lambda r: r[0])
            db.session.rollback()
            same = old[1] == new[1]
            ok = ok and same and (bool(new[1]) == plant)
            print(
                f"{label}: old (per-account Python) {old[0]:.2f} s, new (set-based SQL)"
                f" {new[0]:.2f} s, {old[0] / new[0]:.1f}x; {len(new[1])} problem(s);"
                f" results {'equal' if same else 'DIFFER'}"
            )
            for problem in new[1]:
                print(f"    {problem.what}: {problem.detail}")
        db.engine.dispose()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
