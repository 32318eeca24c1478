"""How long the console's landing page (/admin/, the dashboard) takes to render on a book
of 100,000 loans: the target is under 1 s.

    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench \\
    REDIS_URL=redis://127.0.0.1:6379/14 \\
        .venv/bin/python benchmarks/dashboard.py --wipe
    .venv/bin/python benchmarks/dashboard.py --loans 10000

Without DATABASE_URL it uses a new SQLite file in a temporary folder; without REDIS_URL
an embedded Redis there, as the tests do. With DATABASE_URL the database is emptied
first (its public schema dropped), so it asks for --wipe: point it at a database of its
own. The schema comes from the migrations.

The book is written in bulk (COPY on PostgreSQL, executemany on SQLite), not through the
services: the point is the reads. With a fixed seed: one member per loan plus 10 % with
no loan; loans in every state (about 70 % live, the rest closed, waiting for a decision,
rejected, written off...), live ones spread over the aging buckets, paid out over the
last year (some today, some this month); each member's savings and share capital
accounts and each paid-out loan's principal and interest accounts with balances; a
disbursement entry per paid-out loan and `--repayments-per-day` repayment entries (with
their M-PESA payment, some from STK prompts staff sent) for each of the last 90 days;
suspense payments; `--sms-per-day` SMS over 90 days in every status; a dozen staff.
Installments are not written: the dashboard never reads them.

It then signs in a branch manager with the test client and renders /admin/ `--renders`
times after one untimed warm-up, printing p50 / p95 / max, and the time of each
selector on its own so a slow figure shows which query to look at.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Table, func, insert, select, text  # noqa: E402

from app.clock import business_today  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import (  # noqa: E402
    Account,
    JournalEntry,
    JournalLine,
    Loan,
    LoanProduct,
    Member,
    MpesaRequest,
    Payment,
    SmsMessage,
    StaffUser,
)
from app.selectors import dashboard as sel  # noqa: E402
from app.services.staff import staff_add  # noqa: E402
from benchmarks.bench_app import bench_app, bench_schema_fresh  # noqa: E402
from tests.helpers import PASSWORD, login  # noqa: E402

CHUNK = 10_000
DAYS = 90  # of repayments and SMS history
BUCKET_DPD = [(0.75, 0, 0), (0.12, 1, 30), (0.05, 31, 60), (0.03, 61, 90), (0.05, 91, 400)]
STATES = [  # status, share of the book
    ("active", 0.66),
    ("restructured", 0.04),
    ("closed", 0.15),
    ("submitted", 0.03),
    ("recommended", 0.02),
    ("approved", 0.02),
    ("disbursing", 0.01),
    ("rejected", 0.04),
    ("withdrawn", 0.01),
    ("written_off", 0.02),
]
DISBURSED = {"active", "restructured", "closed", "written_off"}
DECIDED = DISBURSED | {"approved", "disbursing", "rejected"}


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Loader:
    """Bulk rows into a table: COPY on PostgreSQL (a few seconds for a million rows),
    Core executemany elsewhere."""

    def __init__(self) -> None:
        self.postgres = db.engine.dialect.name == "postgresql"
        self.rows = 0

    def __call__(self, table: Table, rows: Iterable[dict[str, Any]]) -> None:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= CHUNK:
                self._write(table, batch)
                batch = []
        if batch:
            self._write(table, batch)

    def _write(self, table: Table, batch: Sequence[dict[str, Any]]) -> None:
        self.rows += len(batch)
        if not self.postgres:
            db.session.execute(insert(table), list(batch))
            db.session.commit()
            return
        columns = list(batch[0])
        raw = db.engine.raw_connection()
        try:
            with raw.cursor() as cursor:  # type: ignore[attr-defined]
                names = ", ".join(columns)
                with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
                    for row in batch:
                        copy.write_row([row[c] for c in columns])
            raw.commit()
        finally:
            raw.close()


def pick(rng: random.Random, weighted: Sequence[tuple[Any, float]]) -> Any:
    x, acc = rng.random(), 0.0
    for value, share in weighted:
        acc += share
        if x < acc:
            return value
    return weighted[-1][0]


def build_book(args: argparse.Namespace, today: date, tz: Any) -> dict[str, int]:
    rng = random.Random(args.seed)
    load = Loader()
    product = LoanProduct(
        code="BENCH", name="Bench Loan", annual_rate=Decimal("12"), default_term=12, max_term=24
    )
    db.session.add(product)
    db.session.commit()
    product_id = product.id
    roles = ["loan_officer"] * 6 + ["branch_manager"] * 3 + ["compliance", "auditor", "admin"]
    staff = [
        staff_add(email=f"staff{k}@bench.test", role=role, password=PASSWORD)
        for k, role in enumerate(roles)
    ]
    officers = [s for s in staff if s.role == "loan_officer"]
    managers = [s for s in staff if s.role == "branch_manager"]
    officer_ids, manager_ids = [s.id for s in officers], [s.id for s in managers]
    officer_emails = [s.email for s in officers]
    db.session.commit()
    joined = datetime(2024, 1, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    n_loans = args.loans
    n_members = n_loans + n_loans // 10

    load(
        Member.__table__,
        (
            dict(
                id=m,
                member_no=f"M{m:06d}",
                name=f"Member {m}",
                phone=f"2547{m:08d}",
                national_id=f"{20000000 + m}",
                status="active" if m % 50 else "dormant",
                language="sw" if m % 3 == 0 else "en",
                failed_pin_count=0,
                created_at=joined,
            )
            for m in range(1, n_members + 1)
        ),
    )

    # Loans first (in memory: what the accounts and entries below need to know).
    loans: list[dict[str, Any]] = []
    for n in range(1, n_loans + 1):
        status = pick(rng, STATES)
        principal = Decimal(rng.choice((5000, 10000, 15000, 20000, 50000, 100000)))
        paid_out = status in DISBURSED
        # Paid out evenly over the last year: a few hundred a day.
        age = rng.randrange(0, 365)
        disbursed_on = today - timedelta(days=age) if paid_out else None
        dpd, bucket = 0, "current"
        if status in ("active", "restructured"):
            low, high = pick(rng, [((lo, hi), share) for share, lo, hi in BUCKET_DPD])
            dpd = rng.randint(low, high) if high else 0
            bucket = (
                "current"
                if dpd <= 0
                else "1-30"
                if dpd <= 30
                else "31-60"
                if dpd <= 60
                else "61-90"
                if dpd <= 90
                else "90+"
            )
        applied = now - timedelta(days=(age + 2) if paid_out else rng.randrange(0, 60))
        decided = applied + timedelta(hours=rng.randrange(1, 48)) if status in DECIDED else None
        approved = status in DECIDED and status != "rejected"
        remaining = (
            (principal * Decimal(rng.randrange(5, 101)) / 100).quantize(Decimal("0.01"))
            if status in ("active", "restructured")
            else Decimal("0")
        )
        loans.append(
            dict(
                id=n,
                loan_no=f"L{n:06d}",
                member_id=n,
                product_id=product_id,
                status=status,
                channel="ussd" if n % 4 else "console",
                principal=principal,
                annual_rate=Decimal("12"),
                term=12,
                frequency="monthly",
                interest_method="declining",
                amortization="equal_installments",
                fee_amount=Decimal("0"),
                applied_at=applied,
                decided_at=decided,
                disbursed_on=disbursed_on,
                closed_on=today - timedelta(days=rng.randrange(0, max(age, 1)))
                if status == "closed"
                else None,
                recommended_by_id=rng.choice(officer_ids)
                if status != "submitted" and n % 3 == 0
                else None,
                approved_by_id=rng.choice(manager_ids) if approved and n % 5 else None,
                days_past_due=dpd,
                aging_bucket=bucket,
                in_default=dpd > 30,
                written_off_amount=principal if status == "written_off" else Decimal("0"),
                recovered_amount=Decimal("0"),
                _remaining=remaining,
            )
        )
    load(Loan.__table__, ({k: v for k, v in row.items() if k[0] != "_"} for row in loans))

    accounts: list[dict[str, Any]] = []
    account_id = 0

    def account(code: str, kind: str, balance: Decimal, member_id: int, loan_id: int | None):
        nonlocal account_id
        account_id += 1
        accounts.append(
            dict(
                id=account_id,
                code=code,
                kind=kind,
                name=code,
                member_id=member_id,
                loan_id=loan_id,
                status="open",
                balance=balance,
                created_at=joined,
            )
        )
        return account_id

    for m in range(1, n_members + 1):
        account(f"SAV-M{m:06d}", "savings", -Decimal(rng.randrange(0, 200_000)), m, None)
        account(f"SHR-M{m:06d}", "share_capital", -Decimal(rng.choice((0, 1000, 5000))), m, None)
    gl_clearing = account("GL-MPESA-CLEARING", "mpesa_clearing", Decimal("0"), None, None)  # type: ignore[arg-type]
    principal_account: dict[int, int] = {}
    for row in loans:
        if row["disbursed_on"] is None:
            continue
        principal_account[row["id"]] = account(
            f"LNP-{row['loan_no']}", "loan_principal", row["_remaining"], row["id"], row["id"]
        )
        account(
            f"LNI-{row['loan_no']}",
            "loan_interest",
            (row["_remaining"] / 10).quantize(Decimal("0.01")),
            row["id"],
            row["id"],
        )
    load(Account.__table__, accounts)

    # Disbursement entries (debit principal, credit B2C utility: two lines here) and
    # repayments over the last DAYS days, each with its payment and some with the STK
    # prompt a staff member sent.
    entries: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    payments: list[dict[str, Any]] = []
    requests_: list[dict[str, Any]] = []
    entry_id = line_id = 0

    def entry(kind: str, value_date: date, loan: dict[str, Any], amount: Decimal, key: str) -> int:
        nonlocal entry_id, line_id
        entry_id += 1
        posted = datetime.combine(value_date, datetime.min.time(), tzinfo=tz) + timedelta(
            hours=rng.randrange(7, 20)
        )
        entries.append(
            dict(
                id=entry_id,
                kind=kind,
                description=f"{kind} {loan['loan_no']}",
                idempotency_key=key,
                value_date=value_date,
                posted_at=posted,
                actor="system",
                member_id=loan["member_id"],
                loan_id=loan["id"],
            )
        )
        target = principal_account[loan["id"]]
        sign = 1 if kind == "disbursement" else -1
        for account_ref, value in ((target, sign * amount), (gl_clearing, -sign * amount)):
            line_id += 1
            lines.append(dict(id=line_id, entry_id=entry_id, account_id=account_ref, amount=value))
        return entry_id

    for row in loans:
        if row["disbursed_on"] is not None:
            entry("disbursement", row["disbursed_on"], row, row["principal"], f"d:{row['id']}")
    live = [row for row in loans if row["status"] in ("active", "restructured")]
    payment_id = request_id = 0
    for back in range(DAYS):
        day = today - timedelta(days=back)
        for k in range(args.repayments_per_day):
            loan = rng.choice(live)
            amount = Decimal(rng.randrange(200, 5000))
            key = f"R{back:03d}{k:05d}"
            eid = entry("repayment", day, loan, amount, f"repay:{key}")
            moment = datetime.combine(day, datetime.min.time(), tzinfo=tz) + timedelta(
                minutes=rng.randrange(6 * 60, 21 * 60)
            )
            ref = None
            if k % 3 == 0:  # an STK prompt; one in six sent by staff from the console
                request_id += 1
                ref = request_id
                by_staff = k % 6 == 0
                requests_.append(
                    dict(
                        id=request_id,
                        kind="stk",
                        status="succeeded",
                        checkout_request_id=f"ws_CO_{key}",
                        member_id=loan["member_id"],
                        loan_id=loan["id"],
                        phone=f"2547{loan['member_id']:08d}",
                        amount=amount,
                        account_reference=loan["loan_no"],
                        purpose="repayment",
                        channel="console" if by_staff else "ussd",
                        requested_by=f"staff:{rng.choice(officer_emails)}"
                        if by_staff
                        else f"member:M{loan['member_id']:06d}",
                        receipt=key,
                        attempts=1,
                        created_at=moment,
                        updated_at=moment,
                        completed_at=moment,
                    )
                )
            payment_id += 1
            payments.append(
                dict(
                    id=payment_id,
                    receipt=key,
                    channel="stk" if ref else "c2b",
                    direction="in",
                    amount=amount,
                    phone=f"2547{loan['member_id']:08d}",
                    bill_ref=loan["loan_no"],
                    member_id=loan["member_id"],
                    loan_id=loan["id"],
                    request_id=ref,
                    status="posted",
                    journal_entry_id=eid,
                    transacted_at=moment,
                    created_at=moment,
                )
            )
    for k in range(args.suspense):
        payment_id += 1
        payments.append(
            dict(
                id=payment_id,
                receipt=f"SUSP{k:06d}",
                channel="c2b",
                direction="in",
                amount=Decimal(rng.randrange(100, 3000)),
                phone="25470****149",
                bill_ref="UNKNOWN",
                member_id=None,
                loan_id=None,
                request_id=None,
                status="suspense" if k % 4 else "assigned",
                journal_entry_id=None,
                transacted_at=now,
                created_at=now,
            )
        )
    load(JournalEntry.__table__, entries)
    load(JournalLine.__table__, lines)
    load(MpesaRequest.__table__, requests_)
    load(Payment.__table__, payments)

    statuses = [("delivered", 0.85), ("failed", 0.05), ("sent", 0.04), ("queued", 0.06)]

    def sms_rows() -> Iterable[dict[str, Any]]:
        k = 0
        for back in range(DAYS):
            day_start = now - timedelta(days=back)
            for _ in range(args.sms_per_day):
                k += 1
                yield dict(
                    id=k,
                    member_id=rng.randrange(1, n_members + 1),
                    phone=f"2547{k % n_members:08d}",
                    template="repayment_received",
                    language="en",
                    body="We received your payment. Thank you.",
                    kind="transactional",
                    idempotency_key=f"bench:{k}",
                    status=pick(rng, statuses),
                    attempts=1,
                    created_at=day_start - timedelta(minutes=rng.randrange(0, 24 * 60)),
                )

    load(SmsMessage.__table__, sms_rows())

    if load.postgres:
        # Ids were given explicitly: move the sequences past them; then refresh the
        # planner's statistics as autovacuum would after a bulk load.
        with db.engine.begin() as conn:
            for table in (
                "members",
                "loans",
                "accounts",
                "journal_entries",
                "journal_lines",
                "mpesa_requests",
                "payments",
                "sms_messages",
            ):
                conn.execute(
                    text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))")  # noqa: S608 - fixed names
                )
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        db.session.execute(text("ANALYZE"))
        db.session.commit()
    return {
        "members": n_members,
        "loans": n_loans,
        "accounts": len(accounts),
        "journal entries": len(entries),
        "journal lines": len(lines),
        "payments": len(payments),
        "STK requests": len(requests_),
        "SMS": load.rows
        - n_members
        - n_loans
        - len(accounts)
        - len(entries)
        - len(lines)
        - len(requests_)
        - len(payments),
    }


def timed(fn: Callable[[], Any], times: int = 5) -> float:
    """Best of `times`, in ms (what the query costs once its pages are cached)."""
    best = float("inf")
    for _ in range(times):
        began = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - began) * 1000)
        db.session.rollback()
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loans", type=int, default=100_000)
    parser.add_argument("--repayments-per-day", type=int, default=1_000)
    parser.add_argument("--sms-per-day", type=int, default=3_000)
    parser.add_argument("--suspense", type=int, default=400)
    parser.add_argument("--renders", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--wipe", action="store_true", help="allow emptying DATABASE_URL")
    args = parser.parse_args()
    made = bench_app("dashboard", wipe=args.wipe)
    if made is None:
        return 1
    app, tmp = made
    app.config["TESTING"] = True
    with app.app_context():
        bench_schema_fresh()
        dialect = db.engine.dialect.name
        tz = app.config["SETTINGS"].tz
        today = business_today()
        print(f"database: {dialect}; business day {today}")
        began = time.perf_counter()
        sizes = build_book(args, today, tz)
        print(
            f"book built in {time.perf_counter() - began:.1f} s: "
            + ", ".join(f"{n:,} {what}" for what, n in sizes.items())
        )
        live = db.session.scalar(
            select(func.count())
            .select_from(Loan)
            .where(Loan.status.in_(("active", "restructured")))
        )
        print(f"live loans: {live:,}")

        month_start = today.replace(day=1)
        since = datetime.combine(month_start, datetime.min.time(), tzinfo=tz).astimezone(UTC)
        pieces: dict[str, Callable[[], Any]] = {
            "members_count": sel.members_count,
            "deposits_held": sel.deposits_held,
            "portfolio_by_bucket": sel.portfolio_by_bucket,
            "disbursed_since": lambda: sel.disbursed_since(start=month_start, today=today),
            "repayments_by_day": lambda: sel.repayments_by_day(
                start=min(month_start, today - timedelta(days=29)), today=today
            ),
            "loans_awaiting_decision": sel.loans_awaiting_decision,
            "suspense_waiting": sel.suspense_waiting,
            "sms_outcomes": lambda: sel.sms_outcomes(since=now_minus(tz, today, 29)),
            "officer_figures": lambda: sel.officer_figures(since=since),
        }
        print("each selector alone (best of 5):")
        for name, fn in pieces.items():
            print(f"  {name:<24} {timed(fn):8.1f} ms")

        email = db.session.scalar(
            select(StaffUser.email).where(StaffUser.role == "branch_manager").limit(1)
        )
        db.session.remove()
        client = app.test_client()
        assert login(client, email).status_code == 302  # type: ignore[arg-type]

        def render() -> int:
            with app.app_context():
                page = client.get("/admin/")
                assert page.status_code == 200, page.status_code
                return len(page.get_data())

        size = render()  # untimed: template compiling, first connection
        times: list[float] = []
        for _ in range(args.renders):
            began = time.perf_counter()
            render()
            times.append((time.perf_counter() - began) * 1000)
    verdict = "under" if percentile(times, 95) < 1000 else "OVER"
    print(
        f"\nGET /admin/ (dashboard) on {dialect}, {args.loans:,} loans, {args.renders} renders "
        f"(page {size:,} bytes):\n"
        f"  p50 {percentile(times, 50):.0f} ms  p95 {percentile(times, 95):.0f} ms  "
        f"max {max(times):.0f} ms  ({verdict} the 1 s target at p95)"
    )
    return 0 if verdict == "under" else 1


def now_minus(tz: Any, today: date, days: int) -> datetime:
    return datetime.combine(
        today - timedelta(days=days), datetime.min.time(), tzinfo=tz
    ).astimezone(UTC)


if __name__ == "__main__":
    raise SystemExit(main())
