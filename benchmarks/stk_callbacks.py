"""How many M-PESA STK callbacks a second the service takes in and posts exactly once, and
how long Safaricom waits for each acknowledgement.

    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench \\
    REDIS_URL=redis://127.0.0.1:6379/14 \\
        .venv/bin/python benchmarks/stk_callbacks.py --wipe
    .venv/bin/python benchmarks/stk_callbacks.py --loans 100

Without DATABASE_URL it uses a new SQLite file in a temporary folder; without REDIS_URL an
embedded Redis there, as the tests do. With DATABASE_URL the database is emptied first
(its public schema dropped) and with REDIS_URL that Redis db is flushed, at the start and
the end, so either asks for --wipe: point them at a database and a db number of their own.
The schema comes from the migrations.

Setup, through the real services so the postings are real: `--loans` members, each with
one loan applied for, approved and paid out by staff (channel "manual", which cancels the
pending B2C payout approval writes), then one STK request per loan written directly as
Daraja would have left it: status "sent" with its own CheckoutRequestID.

1. Acknowledge: every success callback (contracts/daraja.md) plus a duplicate of each
   (same CheckoutRequestID and receipt), shuffled, POSTed over real HTTP to the app on a
   threaded werkzeug server from `--clients` threads. Each POST is timed: what Safaricom
   waits for is the raw body stored and a job queued, nothing more.
2. Process: `--workers` processes of `sacco worker --burst -q payments` drain the queue;
   timed from the first job started to the last one ended (RQ's own timestamps), and from
   process start to exit.

Then it checks exactly once (one payment and one repayment entry per receipt, every
request succeeded, every duplicate kept as such, no failed job) and `ledger_check()`;
the exit status is 1 if anything is off.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from flask import Flask  # noqa: E402
from rq.job import Job  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from app.clock import business_today  # noqa: E402
from app.extensions import db, queue, redis_client  # noqa: E402
from app.models import (  # noqa: E402
    JournalEntry,
    MpesaCallback,
    MpesaRequest,
    Payment,
)
from app.services.ledger import ledger_check  # noqa: E402
from app.services.loans import loan_apply, loan_approve, loan_disburse  # noqa: E402
from benchmarks.bench_app import bench_app, bench_schema_fresh  # noqa: E402
from tests.loan_factories import make_borrower, make_product, make_staff  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PRINCIPAL = Decimal("10000")
ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}


@dataclass(frozen=True)
class Sent:
    """An STK request as Daraja left it: what its callback must carry."""

    checkout_request_id: str
    receipt: str
    amount: Decimal
    phone: str


def build_requests(n: int, amount: Decimal) -> list[Sent]:
    """N disbursed loans, one "sent" STK request on each."""
    product = make_product()
    staff = make_staff("branch_manager")  # approves: the checker
    # Disbursed a week ago so the repayment (value date today) comes after it.
    disbursed_on = business_today() - timedelta(days=7)
    sent: list[Sent] = []
    now = datetime.now(UTC)
    for i in range(1, n + 1):
        member = make_borrower(savings=PRINCIPAL)
        loan = loan_apply(
            member_id=member.id, product_id=product.id, amount=PRINCIPAL, as_of=disbursed_on
        )
        if loan.status == "submitted":
            loan_approve(loan_id=loan.id, staff=staff, as_of=disbursed_on)
        loan = loan_disburse(
            loan_id=loan.id,
            reference=f"BANK{loan.id:06d}",
            value_date=disbursed_on,
            channel="manual",
            actor=staff,
        )
        request = MpesaRequest(
            kind="stk",
            status="sent",
            purpose="repayment",
            member_id=member.id,
            loan_id=loan.id,
            phone=member.phone,
            amount=amount,
            account_reference=loan.loan_no,
            channel="ussd",
            requested_by=f"member:{member.member_no}",
            checkout_request_id=f"ws_CO_bench_{i:07d}",
            merchant_request_id=f"bench-{i}-1",
            attempts=1,
            sent_at=now,
        )
        db.session.add(request)
        db.session.commit()
        sent.append(Sent(request.checkout_request_id, f"SBK{i:07d}", amount, member.phone))
    return sent


def callback_body(sent: Sent, transaction_date: int) -> bytes:
    """A success callback as the contract shows it: numbers as numbers."""
    return json.dumps(
        {
            "Body": {
                "stkCallback": {
                    "MerchantRequestID": f"bench-{sent.checkout_request_id}",
                    "CheckoutRequestID": sent.checkout_request_id,
                    "ResultCode": 0,
                    "ResultDesc": "The service request is processed successfully.",
                    "CallbackMetadata": {
                        "Item": [
                            {"Name": "Amount", "Value": float(sent.amount)},
                            {"Name": "MpesaReceiptNumber", "Value": sent.receipt},
                            {"Name": "TransactionDate", "Value": transaction_date},
                            {"Name": "PhoneNumber", "Value": int(sent.phone)},
                        ]
                    },
                }
            }
        }
    ).encode()


@dataclass
class Acks:
    wall_s: float
    latencies_ms: list[float]
    problems: list[str]


def post_all(url: str, bodies: list[bytes], clients: int) -> Acks:
    """POST every body from `clients` threads, each with its own keep-alive session."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    problems: list[list[str]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        with requests.Session() as session:
            start.wait()
            for body in bodies[k::clients]:
                began = time.perf_counter()
                try:
                    reply = session.post(
                        url, data=body, headers={"Content-Type": "application/json"}, timeout=60
                    )
                except requests.RequestException as exc:
                    problems[k].append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies[k].append((time.perf_counter() - began) * 1000)
                if reply.status_code != 200 or reply.json() != ACCEPTED:
                    problems[k].append(f"HTTP {reply.status_code}: {reply.text[:200]}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()  # sessions made: the clock covers the POSTs only
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    return Acks(
        wall, [x for part in latencies for x in part], [p for part in problems for p in part]
    )


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 1,000 is the 990th value)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Processing:
    wall_s: float  # processes started to last job ended (start-up included, exit not)
    busy_s: float  # first job started to last job ended
    exit_codes: list[int]
    unfinished: int


def drain(app: Flask, workers: int, tmp: Path, job_ids: list[str]) -> Processing:
    """Run `sacco worker --burst` processes on the payments queue until it is empty."""
    settings = app.config["SETTINGS"]
    env = dict(
        os.environ,
        APP_ENV="test",
        DEMO_DATA="0",
        LOG_LEVEL="WARNING",
        DATABASE_URL=settings.DATABASE_URL,
        REDIS_URL=app.config["REDIS_URL"],
        # Its own folder: no dev server's SQLite file, embedded Redis or metrics files.
        INSTANCE_PATH=str(tmp),
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    logs = [open(tmp / f"worker-{k}.log", "wb") for k in range(workers)]  # noqa: SIM115
    # Wall clock, not perf_counter: it is compared with RQ's job timestamps.
    began = datetime.now(UTC)
    procs = [
        subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
            [sys.executable, "-m", "app", "worker", "--burst", "-q", "payments"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for log in logs
    ]
    codes = [proc.wait() for proc in procs]
    for log in logs:
        log.close()
    # The jobs' own start and end times, not the processes' exit: a burst worker takes
    # a second or so to stop its scheduler and pub/sub threads after the last job.
    jobs = Job.fetch_many(job_ids, connection=redis_client())
    started = [_aware(j.started_at) for j in jobs if j is not None and j.started_at]
    ended = [_aware(j.ended_at) for j in jobs if j is not None and j.ended_at]
    unfinished = sum(1 for j in jobs if j is None or j.get_status() != "finished")
    if not started or not ended:
        return Processing(float("nan"), float("nan"), codes, unfinished)
    last = max(ended)
    return Processing(
        (last - began).total_seconds(), (last - min(started)).total_seconds(), codes, unfinished
    )


def _aware(moment: datetime) -> datetime:
    """RQ keeps UTC times; whether they carry the zone depends on its version."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def count(statement: object) -> int:
    return int(db.session.scalar(statement) or 0)  # type: ignore[call-overload]


def verify(n: int, amount: Decimal, processing: Processing, tmp: Path) -> list[str]:
    """Exactly once, checked from the database; returns what is wrong."""
    db.session.remove()  # the workers wrote everything: read it fresh
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            failures.append(what)

    payments = count(select(func.count()).select_from(Payment).where(Payment.channel == "stk"))
    receipts = count(
        select(func.count(func.distinct(Payment.receipt))).where(Payment.channel == "stk")
    )
    posted = db.session.scalar(select(func.sum(Payment.amount)).where(Payment.channel == "stk"))
    repayments = count(
        select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == "repayment")
    )
    requests_ = Counter(
        dict(
            db.session.execute(
                select(MpesaRequest.status, func.count())
                .where(MpesaRequest.kind == "stk")
                .group_by(MpesaRequest.status)
            ).all()
        )
    )
    callbacks = Counter(
        dict(
            db.session.execute(
                select(MpesaCallback.status, func.count()).group_by(MpesaCallback.status)
            ).all()
        )
    )
    problems = ledger_check()
    db.session.rollback()
    check(
        all(code == 0 for code in processing.exit_codes),
        f"workers exited {processing.exit_codes} (logs in {tmp})",
    )
    check(processing.unfinished == 0, f"jobs not finished: {processing.unfinished}")
    check(
        payments == n and receipts == n, f"stk payments {payments} ({receipts} receipts), want {n}"
    )
    check(posted == amount * n, f"posted KES {posted}, want {amount * n}")
    check(repayments == n, f"repayment journal entries {repayments}, want {n}")
    check(requests_ == Counter(succeeded=n), f"stk requests by status {dict(requests_)}")
    check(
        callbacks == Counter(processed=n, duplicate=n),
        f"callbacks by status {dict(callbacks)}, want {n} processed and {n} duplicate",
    )
    check(not problems, f"ledger_check: {len(problems)} problems")
    for problem in problems[:10]:
        print(f"      {problem}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loans", type=int, default=500)
    parser.add_argument("--amount", type=int, default=500, help="KES per STK request")
    parser.add_argument("--clients", type=int, default=8, help="threads posting callbacks")
    parser.add_argument("--workers", type=int, default=2, help="RQ worker processes")
    parser.add_argument("--seed", type=int, default=1, help="order of the callbacks")
    parser.add_argument("--wipe", action="store_true", help="allow emptying DATABASE_URL/REDIS_URL")
    args = parser.parse_args()
    made = bench_app("stk", wipe=args.wipe)
    if made is None:
        return 1
    app, tmp = made
    n, amount = args.loans, Decimal(args.amount)
    # One access-log line per POST would cost more than some of the requests.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with app.app_context():
        bench_schema_fresh()
        redis_client().flushdb()
        dialect = db.engine.dialect.name
        print(f"database: {dialect}; redis: {app.config['REDIS_URL']}")

        began = time.perf_counter()
        sent = build_requests(n, amount)
        # Approval queued payout jobs and the notices SMS jobs: not what is measured.
        redis_client().flushdb()
        setup_s = time.perf_counter() - began
        print(f"setup: {n} disbursed loans, {n} STK requests sent ({setup_s:.1f} s)")

        when = int(datetime.now(app.config["SETTINGS"].tz).strftime("%Y%m%d%H%M%S"))
        bodies = [callback_body(s, when) for s in sent] * 2
        # Shuffled: a duplicate may reach a worker before, with or after its original.
        random.Random(args.seed).shuffle(bodies)
        db.session.remove()

        server = make_server("127.0.0.1", 0, app, threaded=True)
        serving = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        serving.start()
        token = app.config["SETTINGS"].CALLBACK_TOKEN
        url = f"http://127.0.0.1:{server.server_port}/payments/{token}/stk/callback"
        try:
            acks = post_all(url, bodies, args.clients)
        finally:
            server.shutdown()
        stored = count(select(func.count()).select_from(MpesaCallback))
        queued = queue("payments").count
        callback_ids = db.session.scalars(select(MpesaCallback.id)).all()
        db.session.remove()
        print(
            f"phase 1: {len(acks.latencies_ms)} acknowledged, {len(acks.problems)} bad answers, "
            f"{stored} callbacks stored, {queued} jobs queued"
        )
        for problem in acks.problems[:5]:
            print(f"  {problem}")

        processing = drain(app, args.workers, tmp, [f"callback-{i}" for i in callback_ids])
        print(f"phase 2: {args.workers} workers done, queue left {queue('payments').count}")

        print("checks:")
        failures = verify(n, amount, processing, tmp)
        if acks.problems or len(acks.latencies_ms) != len(bodies):
            failures.append("acknowledgements")
        if stored != len(bodies) or queued != len(bodies):
            failures.append("stored/queued")
        redis_client().flushdb()

    lat = acks.latencies_ms or [float("nan")]  # every POST failed: still print the rest
    total = len(bodies)
    print(
        f"\nSTK callbacks on {dialect}, "
        f"{n} loans, {args.clients} clients, {args.workers} workers:\n"
        f"  acks: {len(lat)} in {acks.wall_s:.1f} s = {len(lat) / acks.wall_s:.0f}/s; "
        f"ack p50 {percentile(lat, 50):.0f} ms p95 {percentile(lat, 95):.0f} ms "
        f"p99 {percentile(lat, 99):.0f} ms max {max(lat):.0f} ms\n"
        f"  processing: {total} callbacks ({n} posted, {n} duplicates) in "
        f"{processing.busy_s:.1f} s = {total / processing.busy_s:.0f}/s with {args.workers} "
        f"workers (from process start: {processing.wall_s:.1f} s = "
        f"{total / processing.wall_s:.0f}/s)\n"
        f"  exactly once: {'held' if not failures else 'FAILED: ' + '; '.join(failures)}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
