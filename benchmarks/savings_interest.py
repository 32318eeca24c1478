"""How long the nightly `savings-interest` job takes to post a month's interest on N
withdrawable savings accounts, each with a month of movements (issue 20).

    createdb -h 127.0.0.1 -U postgres bench_interest
    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench_interest \\
    REDIS_URL=redis://127.0.0.1:6379/13 \\
        .venv/bin/python benchmarks/savings_interest.py --accounts 10000 --wipe

With DATABASE_URL the database is emptied first, so it asks for --wipe; without, a fresh
SQLite file and embedded Redis in a temporary folder.

The book (fixed seed): N members, each with an ordinary savings account (ORD, 3% a year,
monthly) opened by a deposit in February 2026 and moved on 2 to 6 days of March (deposits,
and withdrawals that never overdraw), written in bulk through the ledger's
journal_post_many; February's interest posted by a first, untimed run. Then
`savings-interest` for 1 April 2026 (March's interest, an ordinary night) by
`workers.schedule.run_job`, as `sacco jobs run savings-interest --workers W` does
(--workers 0: the chunks in this process), timed on the wall clock; then a rerun (nothing
due: the scan's cost alone), `ledger_check`, and a sample of accounts checked to the cent
against a plain day-by-day calculation.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select  # noqa: E402

from app.extensions import db  # noqa: E402
from app.models import Account, InterestPosting, JobRun, Member  # noqa: E402
from app.models.types import utcnow  # noqa: E402
from app.money import ZERO, round_money  # noqa: E402
from app.services.bulk import copy_dicts  # noqa: E402
from app.services.ledger import (  # noqa: E402
    Draft,
    accounts_get_or_create,
    credit,
    debit,
    gl_account,
    journal_post_many,
    ledger_check,
)
from app.services.savings import account_product  # noqa: E402
from benchmarks.bench_app import bench_app, bench_schema_fresh  # noqa: E402
from workers.schedule import run_job  # noqa: E402

MONTH_START, MONTH_END = date(2026, 3, 1), date(2026, 3, 31)
AS_OF = date(2026, 4, 1)
BATCH = 5000


def _book(count: int, seed: int) -> dict[int, list[tuple[date, Decimal]]]:
    """Members, their ORD accounts and a month of movements; each account's movements."""
    rng = random.Random(seed)
    now = utcnow()
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
            for n in range(1, count + 1)
        ],
    )
    product = account_product("ORD")
    members = dict(db.session.execute(select(Member.member_no, Member.id)).all())
    accounts = accounts_get_or_create(
        [
            dict(
                code=f"ORD-{no}",
                kind="member_savings",
                name=f"Ordinary savings {no}",
                member_id=mid,
            )
            for no, mid in members.items()
        ]
    )
    db.session.execute(
        Account.__table__.update().where(Account.code.like("ORD-%")).values(product_id=product.id)
    )
    clearing, payout = gl_account("GL-MPESA-CLEARING"), gl_account("GL-B2C-UTILITY")
    moves: dict[int, list[tuple[date, Decimal]]] = {}
    drafts: list[Draft] = []
    for account in sorted(accounts.values(), key=lambda a: a.id):
        balance = Decimal(rng.randrange(500, 200_000))
        opened = date(2026, 2, rng.randrange(1, 29))
        mine = [(opened, balance)]
        for day in sorted(rng.sample(range(1, 32), rng.randrange(2, 7))):
            on = MONTH_START + timedelta(days=day - 1)
            if rng.random() < 0.3 and balance > 100:
                amount = -Decimal(rng.randrange(1, int(balance)))
            else:
                amount = Decimal(rng.randrange(50, 50_000)) + Decimal(rng.randrange(100)) / 100
            balance += amount
            mine.append((on, amount))
        moves[account.id] = mine
        for n, (on, amount) in enumerate(mine):
            lines = (
                [debit(clearing, amount), credit(account, amount)]
                if amount > 0
                else [debit(account, -amount), credit(payout, -amount)]
            )
            drafts.append(
                Draft(
                    kind="deposit" if amount > 0 else "withdrawal",
                    lines=lines,
                    value_date=on,
                    idempotency_key=f"bench:{account.id}:{n}",
                )
            )
    for start in range(0, len(drafts), BATCH):
        journal_post_many(drafts[start : start + BATCH])
    db.session.commit()
    return moves


def _plain(moves: list[tuple[date, Decimal]]) -> Decimal:
    total, day = ZERO, MONTH_START
    while day <= MONTH_END:
        closing = sum((amount for on, amount in moves if on <= day), ZERO)
        total += max(closing, ZERO) * 3 / 100 / 365
        day += timedelta(days=1)
    return round_money(total)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--wipe", action="store_true")
    args = parser.parse_args()
    made = bench_app("interest", wipe=args.wipe)
    if made is None:
        return 2
    app, tmp = made
    try:
        with app.app_context():
            bench_schema_fresh()
            started = time.perf_counter()
            moves = _book(args.accounts, args.seed)
            lines = sum(len(m) for m in moves.values())
            print(
                f"book: {args.accounts:,} accounts, {lines:,} movements "
                f"({time.perf_counter() - started:.1f} s to write) on {db.engine.dialect.name}"
            )
            db.session.commit()

            # February's interest first (the accounts opened in February), untimed: the
            # timed run is an ordinary night's, one month for every account.
            run_job("savings-interest", MONTH_START, workers=args.workers)
            february = dict(
                db.session.execute(
                    select(InterestPosting.account_id, InterestPosting.net).where(
                        InterestPosting.period_end == MONTH_START - timedelta(days=1)
                    )
                ).all()
            )
            for account_id, net in february.items():
                if net > 0:
                    moves[account_id].append((MONTH_START - timedelta(days=1), net))

            started = time.perf_counter()
            code = run_job("savings-interest", AS_OF, workers=args.workers)
            seconds = time.perf_counter() - started
            run = db.session.scalars(select(JobRun).order_by(JobRun.id.desc())).first()
            posted = db.session.scalar(
                select(func.count()).where(InterestPosting.period_end == MONTH_END)
            )
            print(
                f"savings-interest {AS_OF}: exit {code}, {seconds:.2f} s, "
                f"{args.accounts / seconds:,.0f} accounts/s, {posted:,} postings "
                f"(scanned {run.records_scanned if run else '?'}, "
                f"credited {run.records_updated if run else '?'})"
            )

            started = time.perf_counter()
            again = run_job("savings-interest", AS_OF, workers=args.workers)
            print(f"rerun: exit {again}, {time.perf_counter() - started:.2f} s (nothing due)")

            started = time.perf_counter()
            problems = ledger_check()
            db.session.rollback()
            print(f"ledger_check: {len(problems)} problems, {time.perf_counter() - started:.2f} s")

            sample = random.Random(args.seed).sample(sorted(moves), min(200, len(moves)))
            got = dict(
                db.session.execute(
                    select(InterestPosting.account_id, InterestPosting.gross).where(
                        InterestPosting.account_id.in_(sample),
                        InterestPosting.period_end == MONTH_END,
                    )
                ).all()
            )
            wrong = [a for a in sample if got.get(a) != _plain(moves[a])]
            print(
                f"checked against the plain calculation: {len(sample)} accounts, {len(wrong)} wrong"
            )
            ok = code == 0 and again == 0 and not problems and not wrong and posted == len(moves)
            return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
