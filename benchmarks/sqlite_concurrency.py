"""How many requests 20 concurrent clients get done against the embedded default (SQLite
file + embedded Redis) under gunicorn as `sacco up` runs it, with and without a staff
member uploading a 20,000-loan book at the same time: the README's figure for when to
move to PostgreSQL.

    .venv/bin/python benchmarks/sqlite_concurrency.py [--clients 20 --requests 100]
    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench \\
    REDIS_URL=redis://127.0.0.1:6379/14 \\
        .venv/bin/python benchmarks/sqlite_concurrency.py --wipe     # the same on PostgreSQL

Each client is a thread with its own keep-alive HTTP session posting what Africa's
Talking posts all day, in turn: a USSD first hop (a new session of a phone of its own, so
no phone meets the start limit), a USSD end-of-session event, an inbound SMS (HELP, which
stores the message and queues the reply) and a health check. Every request has 30 s;
the run stops after `--deadline` seconds (180, as when the issue measured 239 of 2,000).
Nothing runs the queued SMS: the point is the web server and its database.

With `--upload` (the default) one more client signs in to the console and uploads a
20,000-loan CSV book while the others work (the preview parse and check, which on SQLite
used to hold the one write lock for its whole length), and its time is printed too.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from app.extensions import db, redis_client  # noqa: E402
from app.services.loan_import import COLUMNS  # noqa: E402
from app.services.staff import staff_add  # noqa: E402
from benchmarks.bench_app import bench_app, bench_schema_fresh  # noqa: E402
from benchmarks.ussd_load import start_gunicorn, stop, web_shape  # noqa: E402
from tests.loan_factories import make_product  # noqa: E402

STAFF_EMAIL = "bench.manager@sacco.test"
STAFF_PASSWORD = "Bench-upload-7-horse-battery"  # noqa: S105 - a throwaway benchmark user
TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
BOOK_ROWS = 20_000


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.latencies: list[float] = []

    def add(self, status: str, seconds: float) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.latencies.append(seconds)


def client(
    base: str, tag: str, number: int, requests_each: int, deadline: float, tally: Tally
) -> None:
    session = requests.Session()
    for i in range(requests_each):
        if time.monotonic() > deadline:
            return
        phone = f"+2547{number:02d}{i:06d}"
        kind = i % 4
        started = time.perf_counter()
        try:
            if kind == 0:
                reply = session.post(
                    f"{base}/ussd",
                    data={
                        "sessionId": f"{tag}-{number}-{i}",
                        "phoneNumber": phone,
                        "serviceCode": "*384*96#",
                        "text": "",
                        "networkCode": "63902",
                    },
                    timeout=30,
                )
            elif kind == 1:
                reply = session.post(
                    f"{base}/ussd/events",
                    data={
                        "sessionId": f"{tag}-{number}-{i}",
                        "phoneNumber": phone,
                        "status": "Success",
                    },
                    timeout=30,
                )
            elif kind == 2:
                reply = session.post(
                    f"{base}/sms/inbound",
                    data={
                        "from": phone,
                        "to": "22384",
                        "text": "HELP",
                        "id": f"{tag}-{number}-{i}",
                    },
                    timeout=30,
                )
            else:
                reply = session.get(f"{base}/healthz", timeout=30)
            status = str(reply.status_code)
        except requests.RequestException as exc:
            status = type(exc).__name__
        tally.add(status, time.perf_counter() - started)


def upload(base: str, book: bytes, result: dict[str, object]) -> None:
    session = requests.Session()
    token = TOKEN.search(session.get(f"{base}/admin/login", timeout=30).text)
    assert token, "no CSRF token on the login page"
    session.post(
        f"{base}/admin/login",
        data={"email": STAFF_EMAIL, "password": STAFF_PASSWORD, "csrf_token": token.group(1)},
        timeout=30,
    )
    page = session.get(f"{base}/admin/loan-book/", timeout=30).text
    token = TOKEN.search(page)
    assert token, "not signed in to the console"
    started = time.perf_counter()
    reply = session.post(
        f"{base}/admin/loan-book/upload",
        data={"csrf_token": token.group(1), "as_of": "2026-11-21"},
        files={"file": ("book.csv", book, "text/csv")},
        timeout=600,
    )
    result["seconds"] = time.perf_counter() - started
    result["landed"] = reply.url.split("?")[0].replace(base, "")
    words = " ".join(re.sub(r"<[^>]+>", " ", reply.text).split())
    found = re.search(r"(\d[\d,]*) rows: (\d[\d,]*) ready to import", words)
    result["summary"] = found.group(0) if found else reply.text[:200]


def the_book() -> bytes:
    lines = [",".join(COLUMNS)] + [
        f"BENCH-{n:05d},Bench Member {n},0799{n:06d},DEV,50000,12,36,2025-06-15,active"
        for n in range(BOOK_ROWS)
    ]
    return ("\n".join(lines) + "\n").encode()


def run(base: str, args: argparse.Namespace, with_upload: bool) -> None:
    tally = Tally()
    label_tag = "up" if with_upload else "alone"
    deadline = time.monotonic() + args.deadline
    threads = [
        threading.Thread(target=client, args=(base, label_tag, n, args.requests, deadline, tally))
        for n in range(args.clients)
    ]
    uploaded: dict[str, object] = {}
    if with_upload:
        threads.append(threading.Thread(target=upload, args=(base, the_book(), uploaded)))
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - began
    total = args.clients * args.requests
    ok = sum(n for status, n in tally.statuses.items() if status.startswith("2"))
    latencies = sorted(tally.latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    label = f"with a {BOOK_ROWS:,}-loan upload" if with_upload else "alone"
    print(
        f"{args.clients} clients {label}: {ok:,} of {total:,} requests done (2xx) in "
        f"{took:.1f} s, {ok / took:.0f}/s; median {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms; answers {dict(sorted(tally.statuses.items()))}"
    )
    if with_upload:
        print(
            f"  upload: {uploaded.get('summary')} in {float(uploaded.get('seconds', 0)):.1f} s "
            f"(landed on {uploaded.get('landed')})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=100, help="per client")
    parser.add_argument("--deadline", type=float, default=180, help="seconds")
    parser.add_argument("--no-upload", action="store_true", help="skip the run with an upload")
    parser.add_argument("--wipe", action="store_true", help="allow emptying DATABASE_URL/REDIS_URL")
    args = parser.parse_args()
    made = bench_app("sqlite-concurrency", wipe=args.wipe)
    if made is None:
        return 1
    app, tmp = made
    with app.app_context():
        bench_schema_fresh()
        dialect = db.engine.dialect.name
        redis_client().flushdb()
        make_product("DEV")
        staff_add(email=STAFF_EMAIL, role="branch_manager", password=STAFF_PASSWORD)
        db.session.commit()
        db.session.remove()
        print(f"database: {dialect}; redis: {app.config['REDIS_URL']}")
        proc, base, log_path = start_gunicorn(app, tmp)
        try:
            print(f"gunicorn: pid {proc.pid}, {base}, {web_shape()} (log {log_path})")
            run(base, args, with_upload=False)
            if not args.no_upload:
                run(base, args, with_upload=True)
        finally:
            stop(proc)
            redis_client().flushdb()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
