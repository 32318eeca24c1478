"""How long the trial balance and the balance sheet take over a year of a SACCO's journal
(issue 21: 1,000,000 journal lines on PostgreSQL, under 2 s each).

    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench \\
    REDIS_URL=redis://127.0.0.1:6379/9 \\
        .venv/bin/python benchmarks/statements.py --lines 1000000 --wipe [--reuse]

With DATABASE_URL the database is emptied first, so it asks for --wipe; --reuse keeps a
book already there (building is the slow part). Without DATABASE_URL: a fresh SQLite file
and embedded Redis in a temporary folder (use a small --lines there).

The book (fixed seed), written with COPY in one transaction, untimed: members with
deposits, share capital and ordinary savings accounts, each with a deposit in every month
of 2025, two share purchases, six savings deposits and three withdrawals to M-PESA, and
deposits interest at the year end; loans of the demo products paid out on days spread over
the year (principal, interest recognised in full, a fee), repaid monthly from the month
after, some stopping (arrears, monthly penalties); the M-PESA clearing swept to the bank
and the B2C float topped up from it every day. About three lines in four are members'
money, one in four loans. Each account's cached balance is the sum of its lines and each
loan's one schedule row matches its receivables, so `ledger_check` is clean (checked).

Then, timed on the wall clock: `trial_balance` and `balance_sheet` of the books package
(app/services/books/statements.py) when it is there, else their core, `chart_balances` +
`chart_rollup` (the balance sheet's as_of and year-to-date result); "cold" is the first
call on a new connection pool, "warm" the runs after it. Twice: every month read from its
journal lines (no monthly totals), then with January to November closed by a branch
manager and their totals built (`journal_totals_refresh`, what the nightly books-kpis job
does first), December still open; the figures must be the same both ways, debits equal
credits and assets equal liabilities and equity. Last, the nightly KPIs and the
dashboard's read of them.

Measured on this machine (2 cores, shared with other test runs, load 3 to 6),
PostgreSQL, 1,012,444 journal lines in 448,936 entries, as of 31 Dec 2025:
  from the lines:       trial balance 0.76-1.41 s, balance sheet 1.53-3.36 s (two runs)
  11 months' totals built in 4.1-7.8 s (once, at night)
  closed months' totals: trial balance 0.25-0.34 s, balance sheet 0.49-0.72 s
  the same figures both ways; kpis_refresh 1.5 s; the dashboard's kpis_board 24 ms.
"""

from __future__ import annotations

import argparse
import importlib
import random
import shutil
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import bindparam, delete, func, select, text  # noqa: E402

from app.cli.demo import PRODUCTS  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import (  # noqa: E402
    Account,
    Installment,
    JournalEntry,
    JournalLine,
    Loan,
    LoanProduct,
    Member,
    StaffUser,
)
from app.models.books import JournalMonthTotal  # noqa: E402
from app.models.types import utcnow  # noqa: E402
from app.money import ZERO  # noqa: E402
from app.services.books import (  # noqa: E402
    chart_balances,
    chart_ensure,
    chart_rollup,
    kpis_board,
    kpis_refresh,
    period_close,
)
from app.services.books.totals import journal_totals_refresh  # noqa: E402
from app.services.bulk import copy_dicts, copy_rows, on_postgres  # noqa: E402
from app.services.ledger import (  # noqa: E402
    accounts_get_or_create,
    books_closed_through,
    gl_account,
    ledger_check,
)
from app.services.loan_import import INSTALLMENT_COLUMNS
from app.services.staff import staff_add  # noqa: E402
from benchmarks.bench_app import bench_app, bench_schema_fresh  # noqa: E402

YEAR = 2025
AS_OF = date(YEAR, 12, 31)
CENT = Decimal("0.01")
# Lines a member and a loan make over the year (about): sizes the book for --lines.
MEMBER_LINES, LOAN_LINES = 45, 25
MEMBER_SHARE = Decimal("0.75")
MANAGER = "manager@bench.test"


def _money(rng: random.Random, low: int, high: int) -> Decimal:
    return Decimal(rng.randrange(low * 100, high * 100)) * CENT


def _day(rng: random.Random, month: int, first: int = 1) -> date:
    return date(YEAR, month, rng.randrange(first, 29))


class Journal:
    """Entries and lines kept in memory, ids given here, written by COPY at the end."""

    def __init__(self, first_entry: int, first_line: int) -> None:
        self.entries: list[tuple[Any, ...]] = []
        self.lines: list[tuple[int, int, int, Decimal]] = []
        self.next_entry, self.next_line = first_entry, first_line
        self.balances: dict[int, Decimal] = defaultdict(lambda: ZERO)
        self.clearing_in: dict[date, Decimal] = defaultdict(lambda: ZERO)
        self.b2c_out: dict[date, Decimal] = defaultdict(lambda: ZERO)
        self.now = utcnow()

    def post(
        self,
        kind: str,
        day: date,
        lines: list[tuple[int, Decimal]],
        *,
        member_id: int | None = None,
        loan_id: int | None = None,
    ) -> None:
        assert sum(amount for _, amount in lines) == 0, lines
        entry = self.next_entry
        self.next_entry += 1
        self.entries.append(
            (entry, kind, kind, None, day, self.now, "system", member_id, loan_id, None)
        )
        for account, amount in lines:
            if amount == 0:
                continue
            self.lines.append((self.next_line, entry, account, amount))
            self.next_line += 1
            self.balances[account] += amount


def build(lines_wanted: int, seed: int) -> None:
    """The book: members, loans and a year of their money (see the module's note)."""
    rng = random.Random(seed)
    now = utcnow()
    members_n = int(lines_wanted * MEMBER_SHARE / MEMBER_LINES)
    loans_n = int(lines_wanted * (1 - MEMBER_SHARE) / LOAN_LINES)
    for spec in PRODUCTS:
        db.session.add(LoanProduct(**spec))
    db.session.flush()
    chart_ensure()
    products = list(db.session.scalars(select(LoanProduct).order_by(LoanProduct.id)))
    copy_dicts(
        Member.__table__,
        [
            dict(
                member_no=f"M{n:06d}",
                name=f"Member {n}",
                phone=f"2547{n:08d}",
                national_id=f"{40000000 + n}",
                status="active",
                language="en",
                failed_pin_count=0,
                created_at=now,
            )
            for n in range(1, members_n + 1)
        ],
    )
    members = dict(db.session.execute(select(Member.member_no, Member.id)).all())
    specs = []
    for no, mid in members.items():
        for prefix, kind in (
            ("SAV", "savings"),
            ("SHR", "share_capital"),
            ("OSV", "member_savings"),
        ):
            specs.append(dict(code=f"{prefix}-{no}", kind=kind, name=f"{kind} {no}", member_id=mid))
    ids: dict[str, int] = {}
    for start in range(0, len(specs), 20_000):
        found = accounts_get_or_create(specs[start : start + 20_000])
        ids.update((code, account.id) for code, account in found.items())
    gl = {
        code: gl_account(code).id
        for code in (
            "GL-MPESA-CLEARING",
            "GL-B2C-UTILITY",
            "GL-BANK",
            "GL-OPENING",
            "GL-INCOME-INTEREST",
            "GL-INCOME-FEES",
            "GL-INCOME-PENALTY",
            "GL-INTEREST-EXPENSE",
        )
    }
    first_entry = (db.session.scalar(select(func.max(JournalEntry.id))) or 0) + 1
    first_line = (db.session.scalar(select(func.max(JournalLine.id))) or 0) + 1
    j = Journal(first_entry, first_line)
    clearing, b2c, bank = gl["GL-MPESA-CLEARING"], gl["GL-B2C-UTILITY"], gl["GL-BANK"]
    j.post(
        "opening",
        date(YEAR, 1, 1),
        [(bank, Decimal(50_000_000)), (gl["GL-OPENING"], Decimal(-50_000_000))],
    )

    def money_in(kind: str, day: date, account: int, amount: Decimal, mid: int) -> None:
        j.post(kind, day, [(clearing, amount), (account, -amount)], member_id=mid)
        j.clearing_in[day] += amount

    deposits_by_member: dict[int, Decimal] = {}
    for no, mid in members.items():
        sav, shr, osv = ids[f"SAV-{no}"], ids[f"SHR-{no}"], ids[f"OSV-{no}"]
        weighted = ZERO
        for month in range(1, 13):
            amount = _money(rng, 200, 20_000)
            money_in("deposit", _day(rng, month), sav, amount, mid)
            weighted += amount * (13 - month)
        deposits_by_member[sav] = weighted
        for month in rng.sample(range(1, 13), 2):
            money_in(
                "share_purchase", _day(rng, month), shr, Decimal(rng.randrange(1, 50) * 100), mid
            )
        for month in range(1, 13, 2):
            day = _day(rng, month, 1)
            amount = _money(rng, 500, 10_000)
            money_in("savings_deposit", day, osv, amount, mid)
            if month % 4 == 1:
                # Half of it back out to M-PESA a few days later (never an overdraft).
                out = (amount / 2).quantize(CENT)
                later = day + timedelta(days=rng.randrange(1, 20))
                j.post("withdrawal", later, [(osv, out), (b2c, -out)], member_id=mid)
                j.b2c_out[later] += out
    # Deposits interest at the year end, 6% a year on each month's balance (roughly), in
    # entries of 1,000 members: an expense and a liability.
    accounts = list(deposits_by_member.items())
    for start in range(0, len(accounts), 1000):
        block = [
            (account, -(weighted * Decimal("0.06") / 12).quantize(CENT))
            for account, weighted in accounts[start : start + 1000]
        ]
        total = -sum((amount for _, amount in block), ZERO)
        j.post("savings_interest", AS_OF, [(gl["GL-INTEREST-EXPENSE"], total), *block])

    # Loans: one schedule row each, kept equal to the receivables.
    loan_rows, loan_accounts = [], []
    member_ids = list(members.values())
    plans = []
    for n in range(1, loans_n + 1):
        product = products[n % len(products)]
        principal = Decimal(rng.randrange(50, 2000) * 100)
        month = rng.randrange(1, 13)
        disbursed = _day(rng, month)
        interest = (principal * Decimal("0.12")).quantize(CENT)
        fee = (principal * Decimal("0.01")).quantize(CENT)
        # One loan in six stops paying after a few installments.
        stops = rng.randrange(0, 6) if rng.random() < 1 / 6 else None
        plans.append((n, product, principal, disbursed, interest, fee, stops))
        loan_no = f"L{n:07d}"
        loan_rows.append(
            dict(
                loan_no=loan_no,
                member_id=member_ids[n % len(member_ids)],
                product_id=product.id,
                status="active",
                channel="ussd",
                principal=principal,
                annual_rate=Decimal("12"),
                term=12,
                frequency="monthly",
                interest_method="flat",
                amortization="equal_installments",
                fee_amount=fee,
                applied_at=now,
                decided_at=now,
                disbursed_on=disbursed,
                days_past_due=0,
                aging_bucket="current",
            )
        )
    copy_dicts(Loan.__table__, loan_rows)
    loan_ids = dict(db.session.execute(select(Loan.loan_no, Loan.id)).all())
    for n, *_ in plans:
        no, lid = f"L{n:07d}", loan_ids[f"L{n:07d}"]
        for prefix, kind in (
            ("LNP", "loan_principal"),
            ("LNI", "loan_interest"),
            ("LNF", "loan_fees"),
            ("LNX", "loan_penalty"),
        ):
            loan_accounts.append(
                dict(code=f"{prefix}-{no}", kind=kind, name=f"{kind} {no}", loan_id=lid)
            )
    for start in range(0, len(loan_accounts), 20_000):
        found = accounts_get_or_create(loan_accounts[start : start + 20_000])
        ids.update((code, account.id) for code, account in found.items())
    installments, arrears = [], []
    for n, _product, principal, disbursed, interest, fee, stops in plans:
        no = f"L{n:07d}"
        lid, mid = loan_ids[no], member_ids[n % len(member_ids)]
        lnp, lni, lnf, lnx = (ids[f"{p}-{no}"] for p in ("LNP", "LNI", "LNF", "LNX"))
        j.post(
            "disbursement",
            disbursed,
            [
                (lnp, principal),
                (b2c, -principal),
                (lni, interest),
                (gl["GL-INCOME-INTEREST"], -interest),
                (lnf, fee),
                (gl["GL-INCOME-FEES"], -fee),
            ],
            member_id=mid,
            loan_id=lid,
        )
        j.b2c_out[disbursed] += principal
        paid_p = paid_i = paid_f = penalties = ZERO
        part_p, part_i = (principal / 12).quantize(CENT), (interest / 12).quantize(CENT)
        due = disbursed
        late_since = None
        for k in range(1, 13):
            month = disbursed.month + k
            if month > 12:
                break
            due = date(YEAR, month, min(disbursed.day, 28))
            if stops is not None and k > stops:
                late_since = late_since or due
                penalty = (part_p * Decimal("0.05")).quantize(CENT)
                j.post(
                    "penalty",
                    due,
                    [(lnx, penalty), (gl["GL-INCOME-PENALTY"], -penalty)],
                    loan_id=lid,
                )
                penalties += penalty
                continue
            f = fee if k == 1 else ZERO
            amount = part_p + part_i + f
            j.post(
                "repayment",
                due,
                [(clearing, amount), (lnp, -part_p), (lni, -part_i), (lnf, -f)],
                member_id=mid,
                loan_id=lid,
            )
            j.clearing_in[due] += amount
            paid_p, paid_i, paid_f = paid_p + part_p, paid_i + part_i, paid_f + f
        installments.append(
            (
                lid,
                1,
                False,
                1,
                date(YEAR + 1, 12, 28),
                principal,
                interest,
                fee,
                penalties,
                paid_p,
                paid_i,
                paid_f,
                ZERO,
                None,
                None,
                0,
            )
        )
        if late_since is not None:
            arrears.append((lid, (AS_OF - late_since).days))
    # Every day the clearing account is swept to the bank, and the bank tops the B2C float
    # up by what went out: two entries a day.
    for day in sorted(set(j.clearing_in) | set(j.b2c_out)):
        if j.clearing_in[day]:
            j.post("sweep", day, [(bank, j.clearing_in[day]), (clearing, -j.clearing_in[day])])
        if j.b2c_out[day]:
            j.post("float_topup", day, [(b2c, j.b2c_out[day]), (bank, -j.b2c_out[day])])
    copy_rows(Installment.__table__, INSTALLMENT_COLUMNS, installments, rounded=True)
    copy_rows(
        JournalEntry.__table__,
        [
            "id",
            "kind",
            "description",
            "idempotency_key",
            "value_date",
            "posted_at",
            "actor",
            "member_id",
            "loan_id",
            "corrects_entry_id",
        ],
        j.entries,
    )
    copy_rows(
        JournalLine.__table__, ["id", "entry_id", "account_id", "amount"], j.lines, rounded=True
    )
    if on_postgres():
        for table in ("journal_entries", "journal_lines"):
            db.session.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                    f"(SELECT max(id) FROM {table}))"
                )
            )
    db.session.execute(
        Account.__table__.update()
        .where(Account.id == bindparam("aid"))
        .values(balance=bindparam("bal")),
        [{"aid": a, "bal": b} for a, b in j.balances.items()],
    )
    for lid, days in arrears:
        bucket = (
            "1-30" if days <= 30 else "31-60" if days <= 60 else "61-90" if days <= 90 else "90+"
        )
        db.session.execute(
            Loan.__table__.update()
            .where(Loan.id == lid)
            .values(days_past_due=days, aging_bucket=bucket)
        )
    db.session.commit()
    if on_postgres():
        db.session.execute(text("ANALYZE"))
        db.session.commit()


def _statements() -> dict[str, Callable[[], Any]]:
    """The functions timed: the statements when H1's module is there, else their core."""
    try:
        module = importlib.import_module("app.services.books.statements")
    except Exception as exc:  # noqa: BLE001 - a statements module mid-edit: time the core
        print(f"(app.services.books.statements not importable: {exc}; timing the core)")
        module = None
    if module is not None and hasattr(module, "trial_balance"):
        return {
            "trial_balance": lambda: module.trial_balance(as_of=AS_OF),
            "balance_sheet": lambda: module.balance_sheet(as_of=AS_OF),
        }

    def trial() -> tuple[dict[int, Decimal], dict[int, Decimal]]:
        leaves = chart_balances(as_of=AS_OF)
        return leaves, chart_rollup(leaves)

    def sheet() -> tuple[dict[int, Decimal], dict[int, Decimal], dict[int, Decimal]]:
        leaves = chart_balances(as_of=AS_OF)
        year = chart_balances(as_of=AS_OF, since=date(YEAR - 1, 12, 31))
        return leaves, chart_rollup(leaves), chart_rollup(year)

    return {
        "chart_balances+rollup (trial balance core)": trial,
        "balance sheet core (2 calls)": sheet,
    }


def _check(name: str, result: Any) -> str:
    totals = getattr(result, "totals", None)
    if totals is None:
        total = sum(result[0].values(), ZERO)  # the leaves: every line once
        return f"sum of every line {total} (must be 0)" + ("" if total == 0 else "  MISMATCH")
    if "debits" in totals:
        ok = totals["debits"] == totals["credits"]
        return f"debits {totals['debits']:,} credits {totals['credits']:,}" + (
            "" if ok else "  MISMATCH"
        )
    ok = totals["assets"] == totals["liabilities"] + totals["equity"]
    return (
        f"assets {totals['assets']:,} = liabilities {totals['liabilities']:,} + equity "
        f"{totals['equity']:,}" + ("" if ok else "  MISMATCH")
    )


def timed(runs: int) -> dict[str, Any]:
    """Each statement's figures (to compare), its times printed."""
    figures: dict[str, Any] = {}
    for name, fn in _statements().items():
        db.session.remove()
        db.engine.dispose()  # a new pool: the first call pays for its connection and plans
        started = time.perf_counter()
        result = fn()
        cold = time.perf_counter() - started
        db.session.rollback()
        warm = []
        for _ in range(runs):
            started = time.perf_counter()
            fn()
            warm.append(time.perf_counter() - started)
            db.session.rollback()
        print(
            f"  {name:43s} cold {cold:6.3f} s   warm best {min(warm):6.3f} s  median "
            f"{statistics.median(warm):6.3f} s  ({runs} runs)   {_check(name, result)}"
        )
        figures[name] = getattr(result, "totals", None) or result[0]
    return figures


def close_months(through: int) -> None:
    """Close January to `through` of the year as a branch manager would (December would
    also post the year-end close; it stays open here, as in early January)."""
    manager = db.session.scalar(select(StaffUser).where(StaffUser.email == MANAGER))
    if manager is None:
        password = "a long bench password 2026"  # noqa: S105 - a throwaway database
        manager = staff_add(email=MANAGER, role="branch_manager", password=password)
    closed = books_closed_through()
    db.session.commit()
    for month in range(1, through + 1):
        if closed is None or date(YEAR, month, 1) > closed:
            period_close(month=date(YEAR, month, 1), actor=manager)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--wipe", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="keep a book already there")
    args = parser.parse_args()
    made = bench_app("statements", wipe=args.wipe)
    if made is None:
        return 2
    app, tmp = made
    try:
        with app.app_context():
            have = 0
            if args.reuse:
                try:
                    have = db.session.scalar(select(func.count()).select_from(JournalLine)) or 0
                except Exception:  # noqa: BLE001 - no schema yet: build it
                    db.session.rollback()
            if have:
                print(f"reusing the book there: {have:,} journal lines")
            else:
                bench_schema_fresh()
                started = time.perf_counter()
                build(args.lines, args.seed)
                have = db.session.scalar(select(func.count()).select_from(JournalLine)) or 0
                entries = db.session.scalar(select(func.count()).select_from(JournalEntry))
                print(
                    f"built {have:,} journal lines in {entries:,} entries "
                    f"({time.perf_counter() - started:.1f} s, untimed)"
                )
                started = time.perf_counter()
                problems = ledger_check()
                took = time.perf_counter() - started
                print(f"ledger_check: {len(problems)} problems ({took:.1f} s)")
                for problem in problems[:10]:
                    print("   ", problem)
                db.session.commit()
            print(f"database: {db.engine.dialect.name}, as of {AS_OF}")
            # Every month from its lines: no monthly totals (any built earlier dropped).
            db.session.execute(delete(JournalMonthTotal))
            db.session.commit()
            print("every month read from its journal lines:")
            from_lines = timed(args.runs)
            close_months(11)
            started = time.perf_counter()
            summed = journal_totals_refresh()
            took = time.perf_counter() - started
            print(
                f"January to November closed; their totals built in {took:.1f} s "
                f"({len(summed)} months, the nightly books-kpis job's first part)"
            )
            print("closed months from their totals, December from its lines:")
            same = timed(args.runs) == from_lines
            print(f"the same figures both ways: {'yes' if same else 'NO: MISMATCH'}")
            started = time.perf_counter()
            values = kpis_refresh(AS_OF)
            took = time.perf_counter() - started
            print(f"kpis_refresh (the nightly KPIs): {took:.2f} s")
            for kpi, value in values.items():
                print(f"    {kpi:16s} {value}")
            db.session.remove()
            db.engine.dispose()
            started = time.perf_counter()
            board = kpis_board()
            took = time.perf_counter() - started
            print(
                f"kpis_board (the dashboard's read, cold): {took * 1000:.1f} ms, {board.latest_on}"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
