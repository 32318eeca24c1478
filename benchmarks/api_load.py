"""A member's balance looked up through the integration API against the same lookup
through USSD, in the same run on the same gunicorn (issue 22's benchmark).

    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench \\
    REDIS_URL=redis://127.0.0.1:6379/9 \\
        .venv/bin/python benchmarks/api_load.py --wipe [--members 10000 --clients 50 --duration 15]

Without DATABASE_URL it uses a new SQLite file and an embedded Redis in a temporary
folder (numbers that show SQLite's one write lock, not the app); with them the database's
public schema is dropped and the Redis db flushed, hence --wipe.

Setup as benchmarks/ussd_load.py does it (its add_members: `--members` members with one
savings account each, cached balances, one PIN), plus one API client with members:read,
registered through the service as an admin would.

The server: the app under gunicorn exactly as `sacco up` starts it (gunicorn.conf.py,
ussd_load's start_gunicorn). The API's per-client rate limit is raised
(API_RATE_LIMIT, default here 1000000/minute) so that it counts every call in Redis, as in
production, but never answers 429: the point is the lookup's cost, limiter included.

Then, one after the other on the same server, each with `--clients` concurrent clients in
a closed loop (each its own keep-alive HTTP session) for `--duration` seconds after an
untimed warm-up:
  - API: GET /api/v1/members/<member no> with a bearer token (one token for the client,
    got once from POST /api/v1/oauth/token), members round-robin over the whole set, every
    reply checked (200, that member, balances present). Each call verifies the JWT, reads
    the client and the revocations, counts the rate limit in Redis, reads the member's
    balances and writes one audit row.
  - USSD: ussd_load's balance flow (dial, PIN, 1) as Africa's Talking posts it. A balance
    through USSD is three hops, the PIN hop running the full PIN hash check; its figures
    are per hop and per balance (a session of three hops).
Printed: requests (or hops, and balances) per second, p50 and p99 latency in ms, errors,
and the web workers' CPU seconds.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from werkzeug.security import generate_password_hash  # noqa: E402

from app.extensions import db, redis_client  # noqa: E402
from app.models import Member  # noqa: E402
from app.services.api_clients import api_client_register  # noqa: E402
from app.services.members import PIN_HASH_METHOD, member_number  # noqa: E402
from app.services.staff import staff_add  # noqa: E402
from benchmarks.bench_app import bench_app, bench_schema_fresh  # noqa: E402
from benchmarks.ussd_load import (  # noqa: E402
    PIN,
    add_members,
    drive,
    percentile,
    start_gunicorn,
    stop,
    web_shape,
    workers_cpu_s,
)

WARM_UP_CALLS = 200  # untimed: every server thread opens its connection, compiles its queries


@dataclass
class ClientResult:
    latencies: list[float] = field(default_factory=list)
    problems: Counter[str] = field(default_factory=Counter)


def api_client(
    k: int,
    base: str,
    token: str,
    members: int,
    seed: int,
    deadline_box: list[float],
    start: threading.Barrier,
    result: ClientResult,
) -> None:
    """One integrating system's connection: balance lookups one after another."""
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    # Each client walks the members from its own place, a stride apart (no cache-friendly
    # run of ids), so concurrent clients ask for different members.
    rng = random.Random(f"api-{seed}-{k}")
    position = rng.randrange(members)
    stride = max(1, int(members * 0.618))
    try:
        start.wait()
        deadline = deadline_box[0]
        while time.perf_counter() < deadline:
            position = (position + stride) % members
            member_no = member_number(position + 1)
            began = time.perf_counter()
            try:
                reply = http.get(f"{base}/api/v1/members/{member_no}", timeout=30)
            except requests.RequestException as exc:
                result.problems[type(exc).__name__] += 1
                continue
            result.latencies.append((time.perf_counter() - began) * 1000)
            if reply.status_code != 200:
                result.problems[f"HTTP {reply.status_code} {reply.text[:80]!r}"] += 1
                continue
            body = reply.json()
            if body.get("member_no") != member_no or "savings" not in body:
                result.problems[f"unexpected {reply.text[:80]!r}"] += 1
    finally:
        http.close()


@dataclass
class ApiRun:
    wall_s: float
    latencies: list[float]
    problems: Counter[str]
    server_cpu_s: float | None


def drive_api(
    base: str, master: int, token: str, *, members: int, clients: int, duration_s: float, seed: int
) -> ApiRun:
    warm = requests.Session()
    warm.headers["Authorization"] = f"Bearer {token}"
    for n in range(WARM_UP_CALLS):
        warm.get(f"{base}/api/v1/members/{member_number(n % members + 1)}", timeout=30)
    warm.close()
    results = [ClientResult() for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    deadline_box = [0.0]
    threads = [
        threading.Thread(
            target=api_client,
            args=(k, base, token, members, seed, deadline_box, start, results[k]),
        )
        for k in range(clients)
    ]
    for thread in threads:
        thread.start()
    cpu_before = workers_cpu_s(master)
    began = time.perf_counter()
    deadline_box[0] = began + duration_s
    start.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    cpu_after = workers_cpu_s(master)
    latencies = [v for r in results for v in r.latencies]
    problems: Counter[str] = Counter()
    for r in results:
        problems.update(r.problems)
    return ApiRun(
        wall_s=wall,
        latencies=latencies,
        problems=problems,
        server_cpu_s=None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
    )


def line(label: str, count: int, wall_s: float, latencies: list[float], unit: str) -> str:
    return (
        f"  {label:<22} {count:>7,} {unit} in {wall_s:5.1f} s = {count / wall_s:7.0f} {unit}/s"
        f"   p50 {percentile(latencies, 50):6.1f} ms   p99 {percentile(latencies, 99):6.1f} ms"
    )


def cpu_text(seconds: float | None, count: int, unit: str) -> str:
    if seconds is None:
        return ""
    return f"   web CPU {seconds:.1f} s ({seconds * 1000 / max(count, 1):.2f} ms/{unit})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients / phones")
    parser.add_argument("--duration", type=float, default=15, help="seconds of load, each")
    parser.add_argument("--rate-limit", default="1000000/minute", help="the API's, per client")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--wipe", action="store_true", help="allow emptying DATABASE_URL/REDIS_URL")
    args = parser.parse_args()
    # The server reads its settings from the environment (start_gunicorn passes it on).
    os.environ["API_RATE_LIMIT"] = args.rate_limit
    made = bench_app("api", wipe=args.wipe)
    if made is None:
        return 1
    app, tmp = made
    with app.app_context():
        bench_schema_fresh()
        dialect = db.engine.dialect.name
        redis_client().flushdb()
        print(f"database: {dialect}; redis: {app.config['REDIS_URL']}")
        if dialect != "postgresql":
            print("  (SQLite: every request queues for one write lock; not target numbers)")
        began = time.perf_counter()
        add_members(1, args.members, generate_password_hash(PIN, method=PIN_HASH_METHOD))
        admin = staff_add(email="bench.admin@sacco.test", role="admin", password="bench-pass-1")  # noqa: S106
        registered = api_client_register(
            name="Benchmark", scopes=["members:read"], staff=admin, allowed_ips=[]
        )
        client_id, secret = registered.client.client_id, registered.secret
        count = db.session.scalar(select(func.count()).select_from(Member))
        db.session.remove()
        print(f"setup: {count:,} members, one API client ({time.perf_counter() - began:.1f} s)")

        proc, base, log_path = start_gunicorn(app, tmp)
        failed = False
        try:
            print(f"gunicorn: pid {proc.pid}, {base}, {web_shape()} (log {log_path})")
            reply = requests.post(
                f"{base}/api/v1/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(client_id, secret),
                timeout=30,
            )
            reply.raise_for_status()
            token = reply.json()["access_token"]
            print(
                f"load: {args.clients} concurrent clients, closed loop, {args.duration:g} s each"
                f" (API rate limit {args.rate_limit} per client)"
            )

            api = drive_api(
                base,
                proc.pid,
                token,
                members=args.members,
                clients=args.clients,
                duration_s=args.duration,
                seed=args.seed,
            )
            ussd = drive(
                base,
                proc.pid,
                members=args.members,
                phones=args.clients,
                duration_s=args.duration,
                balance_share=1.0,
                think_s=0.0,
                label="api-bench",
                seed=args.seed,
            )
        finally:
            stop(proc)
        db.session.remove()

    calls = len(api.latencies)
    hops = ussd.hops
    balances = len(ussd.latencies["balance"])
    print("\nresults")
    print(
        line("API GET /members/<no>", calls, api.wall_s, api.latencies, "req")
        + cpu_text(api.server_cpu_s, calls, "req")
    )
    print(
        line(
            "USSD hops (all)",
            hops,
            ussd.wall_s,
            [v for vs in ussd.latencies.values() for v in vs],
            "hop",
        )
        + cpu_text(ussd.server_cpu_s, hops, "hop")
    )
    for kind in ("dial", "pin", "balance"):
        print(
            line(
                f"  USSD {kind} hop",
                len(ussd.latencies[kind]),
                ussd.wall_s,
                ussd.latencies[kind],
                "hop",
            )
        )
    # A USSD balance is a session of those three hops, one after another: its time is
    # about the sum of theirs (the sums of the hops' p50s and p99s are printed).
    p50 = sum(percentile(ussd.latencies[k], 50) for k in ("dial", "pin", "balance"))
    p99 = sum(percentile(ussd.latencies[k], 99) for k in ("dial", "pin", "balance"))
    print(
        f"  {'USSD balances':<22} {balances:>7,} bal in {ussd.wall_s:5.1f} s = "
        f"{balances / ussd.wall_s:7.0f} bal/s   3 hops: p50 {p50:6.1f} ms   p99 {p99:6.1f} ms"
        " (sums)"
    )
    if calls and balances:
        ratio = (calls / api.wall_s) / (balances / ussd.wall_s)
        print(f"\n  the API answers {ratio:.1f}x as many balance lookups a second as USSD")
    for label, problems in (("API", api.problems), ("USSD", ussd.problems)):
        if problems:
            failed = True
            print(f"  {label} errors: {sum(problems.values())}")
            for what, n in problems.most_common(8):
                print(f"    {n:>6} {what}")
    if ussd.waited_s:
        print(f"  (USSD phones waited {ussd.waited_s:.1f} s for the per-phone start limit)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
