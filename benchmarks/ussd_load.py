"""How many USSD hops a second `sacco up`'s web server answers with many phones dialling at
once, how long each kind of hop takes, and whether a balance hop slows down as the members
table grows from 1,000 to 1,000,000.

    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench \\
    REDIS_URL=redis://127.0.0.1:6379/14 \\
        .venv/bin/python benchmarks/ussd_load.py --wipe [--members 1000 --sessions 50 --duration 20]
    ... benchmarks/ussd_load.py --wipe --scale        # then 100,000 and 1,000,000 members
    .venv/bin/python benchmarks/ussd_load.py --members 500 --duration 10

Without DATABASE_URL it uses a new SQLite file in a temporary folder, and without REDIS_URL
an embedded Redis there, as the tests do. SQLite numbers are not the target: every hop
takes SQLite's single write lock (BEGIN IMMEDIATE), so they show that lock, not the app.
With DATABASE_URL the database is emptied first (its public schema dropped) and with
REDIS_URL that Redis db is flushed (at the start, between runs and at the end), so either
asks for --wipe: point them at a database and a db number of their own. The schema comes
from the migrations.

Setup, with SQLAlchemy Core bulk inserts (the point is the hops, not the writes):
`--members` active members, phones 2547XXXXXXXX, language "en", all with the same PIN
4826 (one werkzeug hash made with PIN_HASH_METHOD, reused: hashing a million PINs would
take hours and every PIN check still costs what it costs in production), each with one
savings account carrying a cached balance. No journal lines (the balance screen reads only
the cached balances; the statement screen therefore shows "No transactions yet.", the
cheapest statement there is) and no loans (so the repay flow is not driven: it needs a
loan, and its last step would queue an M-PESA prompt; balance hops are those of members
without a loan: the loans query finds none, so no debt or installment reads follow).

The load: the app under gunicorn exactly as `sacco up` runs it (gunicorn.conf.py's sync workers),
and `--sessions` phones, each a thread with its own keep-alive HTTP session, dialling
one session after another for `--duration` seconds as Africa's Talking would post them
(text = every input so far joined by "*"). Each session is a member taken round-robin
over the whole set (so no phone goes over the server's 10 starts a minute; if the rate
would, the phones wait, and the wait is printed) doing the balance flow (dial, PIN, 1),
the statement flow (dial, PIN, 4) or the loan-application flow (dial, PIN, 2 for the
offers with their limits, 1 for the demo's instant loan, 500, then 2 to cancel on the
summary with fee and installment: confirming would lend on every run). The balance and
statement flows stop on a CON screen, as a member who reads it and hangs up does. Should
a member be offered "your last session was cut off" after the PIN, the phone answers 2
(start over): that extra hop is "menu/other". Every hop is timed and checked (200, CON or
END, the screen expected).

Without `--think` this is a closed loop at full speed: the server is saturated and a hop's
latency is mostly its wait for a free server thread (about phones / hops per second).
`--think MS` waits 0 to 2x MS before each hop (a member reading and typing: real sessions
spend seconds there), which shows latency at a sustainable rate instead.

With --scale it then measures the balance flow alone at low concurrency (`--scale-sessions`
phones, `--scale-duration` s) at `--members`, grows the table to 100,000 and 1,000,000
members (SQLite stops at 100,000 unless --big) and measures again, printing the plans of
the member-by-phone lookup and of the balance query at each size.

With --first-hop it then measures the first hop alone, wrk-style (Debian's `wrk`,
`apt-get install wrk`): `--first-hop-connections` connections (50) posting new sessions
as fast as they are answered for `--first-hop-duration` s, each from another member
(the table is grown to `--first-hop-members` first, so no phone goes over the start limit),
every reply checked to be the PIN screen. In the same run, and first, the same wrk load on
a bare Flask app doing one Redis GET and SET under the same gunicorn command
(benchmarks/bare_ussd.py): the floor, so the app's figure reads as a fraction of what
this machine can do at that moment. `--no-closed` skips the closed loop.

    ... benchmarks/ussd_load.py --wipe --first-hop [--no-closed]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from flask import Flask  # noqa: E402
from sqlalchemy import func, insert, select, text  # noqa: E402
from sqlalchemy.exc import DBAPIError  # noqa: E402
from werkzeug.security import generate_password_hash  # noqa: E402

from app.cli.runtime import GUNICORN_CONF, web_command  # noqa: E402
from app.extensions import db, redis_client  # noqa: E402
from app.models import Account, LoanProduct, Member  # noqa: E402
from app.services.members import PIN_HASH_METHOD, member_number  # noqa: E402
from app.services.savings import account_product, products_ensure  # noqa: E402
from app.web.ussd import STARTS_PER_MINUTE  # noqa: E402
from benchmarks.bench_app import bench_app, bench_schema_fresh  # noqa: E402
from ussd_menus.text import t  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PIN = "4826"
BATCH = 50_000
SCALE_SIZES = (100_000, 1_000_000)
SQLITE_CAP = 100_000
KINDS = ("dial", "pin", "balance", "statement", "apply", "menu/other")
# One start fewer than the server allows, over a window a second longer than its key's
# TTL: the client's clock and the server's are not the same clock.
ALLOWANCE = STARTS_PER_MINUTE - 1
WINDOW_S = 61.0
IDLE_CLOSE_S = 1.5  # under gunicorn's default keep-alive of 2 s
TARGET = "target: p99 under 50 ms at 50 concurrent sessions"


# -- setup -------------------------------------------------------------------------------


def add_members(first: int, last: int, pin_hash: str) -> None:
    """Members `first`..`last` (ids given, so phone and account follow from the id), each
    with a savings account, in batches of BATCH rows."""
    joined = datetime.now(UTC) - timedelta(days=365)
    # Each savings account is its member's Deposits product's, as migration 0020 made every
    # existing one: the balance screen lists a member's accounts by product.
    deposits = products_ensure() and account_product("DEP").id
    db.session.commit()
    for start in range(first, last + 1, BATCH):
        ids = range(start, min(start + BATCH, last + 1))
        db.session.execute(
            insert(Member.__table__),
            [
                dict(
                    id=n,
                    member_no=member_number(n),
                    name=f"Member {n}",
                    phone=phone_of(n),
                    status="active",
                    language="en",
                    pin_hash=pin_hash,
                    failed_pin_count=0,
                    created_at=joined,
                )
                for n in ids
            ],
        )
        db.session.execute(
            insert(Account.__table__),
            [
                dict(
                    id=n,
                    code=f"SAV-{member_number(n)}",
                    kind="savings",
                    name=f"Savings {member_number(n)}",
                    member_id=n,
                    product_id=deposits,
                    status="open",
                    # Credit-normal: stored negative, read back positive by member_balances.
                    balance=-Decimal(1_000 + n % 50_000),
                    created_at=joined,
                )
                for n in ids
            ],
        )
        db.session.commit()
    if db.engine.dialect.name == "postgresql":
        # Ids were given explicitly: move the sequences past them. Then the state a table
        # reaches some time after a load: autovacuum has set the rows' hint bits and the
        # planner's statistics, and the load's dirty pages are on disk. Without this, the
        # first read of each new row and the checkpoint of the load are measured too.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("members", "accounts"):
                conn.execute(
                    text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))")  # noqa: S608 - fixed names
                )
            conn.execute(text("VACUUM (ANALYZE) members, accounts"))
            try:
                conn.execute(text("CHECKPOINT"))
            except DBAPIError:  # not a superuser (nor pg_checkpoint): measure without it
                print("  (CHECKPOINT refused: the load's writes may still be in flight)")
    else:
        db.session.execute(text("ANALYZE"))
        db.session.commit()
    db.session.remove()


def add_instant_product() -> None:
    """The demo's instant loan, so the apply flow has a product to offer with a limit."""
    from app.cli.demo import PRODUCTS

    spec = next(p for p in PRODUCTS if p["code"] == "INSTANT")
    db.session.add(LoanProduct(**spec))
    db.session.commit()


def phone_of(member: int) -> str:
    return f"2547{member:08d}"


def explain(member: int) -> dict[str, list[str]]:
    """The plans of the two lookups whose cost could follow the table size: the first hop's
    member-by-phone (ussd_menus.screens.start) and the balance screen's member_balances."""
    queries = {
        "member by phone": select(Member).where(Member.phone == phone_of(member)),
        "balance": select(Account.kind, func.sum(Account.balance))
        .where(Account.member_id == member)
        .group_by(Account.kind),
    }
    prefix = "EXPLAIN " if db.engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
    plans = {}
    for name, query in queries.items():
        sql = str(query.compile(db.engine, compile_kwargs={"literal_binds": True}))
        plans[name] = [str(row[-1]) for row in db.session.execute(text(prefix + sql))]
    db.session.remove()
    return plans


# -- the server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gunicorn(
    app: Flask, tmp: Path, target: str = "wsgi:app"
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The web process as `sacco up` starts it (or the same command serving `target`);
    returns it, its base URL and its log."""
    port = free_port()
    env = dict(
        os.environ,
        DATABASE_URL=app.config["SETTINGS"].DATABASE_URL,
        REDIS_URL=app.config["REDIS_URL"],
        # Its own folder: no dev server's SQLite file, embedded Redis or metrics files.
        INSTANCE_PATH=str(tmp),
        APP_ENV="development",
        LOG_LEVEL="WARNING",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp / f"gunicorn-{target.split(':')[0]}.log"
    command = [*web_command("127.0.0.1", port)[:-1], target]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited {proc.returncode}:\n{_tail(log_path)}")
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc, base, log_path
        except requests.RequestException:
            pass  # not listening yet
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"gunicorn not healthy after 60 s:\n{_tail(log_path)}")


def web_shape() -> str:
    """The web server's processes as gunicorn.conf.py sets them on this machine."""
    conf = runpy.run_path(str(GUNICORN_CONF))
    return f"{conf['workers']} {conf['worker_class']} workers"


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # gunicorn's graceful stop
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def workers_cpu_s(master: int) -> float | None:
    """CPU seconds used so far by gunicorn's workers (Linux /proc; None elsewhere): on a
    small machine the load generator, the web workers and the database share the cores,
    and this says how much went to the web."""
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        total = 0
        for pid in [str(master), *children]:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / _TICK
    except (OSError, ValueError, IndexError):
        return None


# -- the phones --------------------------------------------------------------------------


class Members:
    """Hands out members round-robin over the whole set, never letting one phone start more
    sessions a minute than the server allows (else its reply is "too many", not a hop)."""

    def __init__(self, count: int, seed: int) -> None:
        self.count = count
        # A fixed stride coprime with the count visits every member once per round, and
        # consecutive sessions land far apart in the table (no cache-friendly run of ids).
        stride = max(1, int(count * 0.618))
        while math.gcd(stride, count) != 1:
            stride += 1
        self.stride = stride
        self.position = random.Random(seed).randrange(count)
        self.recent: dict[int, deque[float]] = {}
        self.lock = threading.Lock()
        self.waited_s = 0.0
        self.stopped = 0  # phones that stopped early rather than wait past the deadline

    def next(self, deadline: float) -> int | None:
        """The next member to dial, or None if none may dial again before `deadline`."""
        with self.lock:
            self.position = (self.position + self.stride) % self.count
            member = self.position + 1
            starts = self.recent.setdefault(member, deque())
            now = time.perf_counter()
            while starts and now - starts[0] > WINDOW_S:
                starts.popleft()
            if len(starts) >= ALLOWANCE:
                # Too few members for this rate: every phone waits (the lock is held),
                # which is what the printed wait measures.
                pause = WINDOW_S - (now - starts[0])
                if now + pause >= deadline:
                    self.stopped += 1
                    return None
                time.sleep(pause)
                self.waited_s += pause
                starts.popleft()
                now = time.perf_counter()
            starts.append(now)
            return member


@dataclass
class PhoneResult:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    problems: Counter[str] = field(default_factory=Counter)
    sessions: int = 0
    completed: int = 0
    resumes: int = 0  # sessions offered "your last session was cut off"


# What each screen must look like, from the menus' own English texts: a "too many" END, an
# apology or a wrong screen is an error even though it is a 200 starting CON or END.
PIN_SCREEN = "CON " + t("pin", "en")
MAIN_SCREEN = "CON " + t("main", "en").split("\n")[0]
RESUME_SCREEN = "CON " + t("resume", "en")
NAV = t("nav", "en")
BALANCE_SCREEN = "CON Deposits "  # the first account the screen lists: the Deposits product
EXPECT: dict[str, Callable[[str], bool]] = {
    "balance": lambda body: body.startswith(BALANCE_SCREEN) and NAV in body,
    "statement": lambda body: body.startswith("CON ") and NAV in body,
    "apply": lambda body: body.startswith("CON 1. Instant Loan up to KES"),
}
CHOICE = {"balance": "1", "statement": "4", "apply": "2"}
# The loan application, after "2": the product, an amount, then "2. Cancel" on the summary
# (confirming would lend and queue a payout on every run). Each step's screen is checked.
APPLY_STEPS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("1", lambda body: body.startswith("CON Amount to borrow")),
    ("500", lambda body: "You get KES" in body and "1. Confirm" in body),
    ("2", lambda body: body.startswith("END " + t("cancelled", "en"))),
)


class Phone:
    """One handset: its own keep-alive HTTP session, dialling sessions one after another."""

    def __init__(self, url: str, think_s: float, rng: random.Random, result: PhoneResult) -> None:
        self.url = url
        self.think_s = think_s
        self.rng = rng
        self.result = result
        self.http = requests.Session()
        self.last_reply = time.perf_counter()

    def post(self, form: dict[str, str], kind: str) -> str | None:
        """One hop, timed: the reply's body, or None after counting what went wrong."""
        if self.think_s:
            # The member reading and typing, spread over 0..2x so that phones started
            # together do not stay in step and hit the server all at once.
            time.sleep(self.rng.uniform(0, 2) * self.think_s)
        if time.perf_counter() - self.last_reply > IDLE_CLOSE_S:
            # gunicorn drops a connection idle for its keep-alive (2 s): reusing one races
            # that close and fails the POST, so start a fresh one.
            self.http.close()
        began = time.perf_counter()
        try:
            reply = self.http.post(self.url, data=form, timeout=30)
        except requests.RequestException as exc:
            self.result.problems[f"{kind}: {type(exc).__name__}"] += 1
            return None
        self.last_reply = time.perf_counter()
        self.result.latencies[kind].append((self.last_reply - began) * 1000)
        if reply.status_code != 200 or not reply.text.startswith(("CON ", "END ")):
            self.result.problems[f"{kind}: HTTP {reply.status_code} {reply.text[:60]!r}"] += 1
            return None
        return reply.text

    def session(self, form: dict[str, str], kind: str) -> bool:
        """Dial, PIN, then menu choice 1 (balance) or 4 (statement); True if every screen
        was the one expected. Africa's Talking sends the whole path, joined by "*"."""
        body = self.post({**form, "text": ""}, "dial")
        if body != PIN_SCREEN:
            return self._wrong(body, "dial")
        path = PIN
        body = self.post({**form, "text": path}, "pin")
        if body == RESUME_SCREEN:
            # This member's previous session stopped on a CON screen less than 5 minutes
            # ago, which the server cannot tell from a dropped one: "2. Start over", as a
            # member would.
            self.result.resumes += 1
            path += "*2"
            body = self.post({**form, "text": path}, "menu/other")
        if body is None or not body.startswith(MAIN_SCREEN):
            return self._wrong(body, "pin")
        path = f"{path}*{CHOICE[kind]}"
        body = self.post({**form, "text": path}, kind)
        if body is None or not EXPECT[kind](body):
            return self._wrong(body, kind)
        if kind == "apply":
            for entry, expected in APPLY_STEPS:
                path = f"{path}*{entry}"
                body = self.post({**form, "text": path}, kind)
                if body is None or not expected(body):
                    return self._wrong(body, kind)
        return True

    def _wrong(self, body: str | None, kind: str) -> bool:
        if body is not None:  # None: counted already
            self.result.problems[f"{kind}: unexpected {body[:60]!r}"] += 1
        return False


def phone(
    k: int,
    url: str,
    members: Members,
    label: str,
    balance_share: float,
    deadline_box: list[float],
    think_s: float,
    start: threading.Barrier,
    result: PhoneResult,
) -> None:
    rng = random.Random(f"{label}-{k}")
    handset = Phone(url, think_s, rng, result)
    try:
        start.wait()
        deadline = deadline_box[0]
        while time.perf_counter() < deadline:
            member = members.next(deadline)
            if member is None:
                break
            # balance_share of sessions read the balance; the rest split between the
            # statement and a loan application.
            draw = rng.random()
            if draw < balance_share:
                kind = "balance"
            else:
                kind = "statement" if draw < balance_share + (1 - balance_share) / 2 else "apply"
            form = {
                "sessionId": f"ATUid_{label}_{k}_{result.sessions}",
                "serviceCode": "*384*96#",
                "phoneNumber": "+" + phone_of(member),
                "networkCode": "63902",
            }
            result.sessions += 1
            if handset.session(form, kind):
                result.completed += 1
    except Exception as exc:
        result.problems[f"phone {k} stopped: {exc!r}"] += 1  # a bug here, not a hop error
        raise
    finally:
        handset.http.close()


@dataclass
class Run:
    label: str
    phones: int
    wall_s: float
    latencies: dict[str, list[float]]
    problems: Counter[str]
    sessions: int
    completed: int
    resumes: int
    waited_s: float
    stopped: int
    client_cpu_s: float
    server_cpu_s: float | None

    @property
    def hops(self) -> int:
        return sum(len(v) for v in self.latencies.values())


WARM_UP_ROUNDS = 3  # x 8 phones x each flow: every gunicorn thread opens its connection


def warm_up(url: str, picker: Members, label: str, seed: int) -> None:
    """Untimed sessions first, so the timed run does not measure each server thread's first
    database connection and first compile of each query (a production server is warm)."""

    def one(k: int) -> None:
        rng = random.Random(f"warm-{seed}-{k}")
        handset = Phone(url, 0.0, rng, PhoneResult())
        try:
            for kind in CHOICE:
                member = picker.next(time.perf_counter() + 60)
                if member is None:
                    return
                form = {
                    "sessionId": f"ATUid_warm_{label}_{k}_{kind}",
                    "serviceCode": "*384*96#",
                    "phoneNumber": "+" + phone_of(member),
                    "networkCode": "63902",
                }
                handset.session(form, kind)
        finally:
            handset.http.close()

    for round_ in range(WARM_UP_ROUNDS):
        threads = [threading.Thread(target=one, args=(round_ * 8 + k,)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def drive(
    base: str,
    master: int,
    *,
    members: int,
    phones: int,
    duration_s: float,
    balance_share: float,
    think_s: float,
    label: str,
    seed: int,
) -> Run:
    """`phones` threads dialling for `duration_s`; a session under way at the end finishes."""
    redis_client().flushdb()  # no start counts or sessions left from an earlier run
    picker = Members(members, seed)
    warm_up(f"{base}/ussd", picker, label, seed)
    results = [PhoneResult() for _ in range(phones)]
    start = threading.Barrier(phones + 1)
    deadline_box = [0.0]  # set once every phone is ready, before the barrier opens
    threads = [
        threading.Thread(
            target=phone,
            args=(
                k,
                f"{base}/ussd",
                picker,
                label,
                balance_share,
                deadline_box,
                think_s,
                start,
                results[k],
            ),
        )
        for k in range(phones)
    ]
    for thread in threads:
        thread.start()
    server_before = workers_cpu_s(master)
    client_before = time.process_time()
    began = time.perf_counter()
    deadline_box[0] = began + duration_s
    start.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    server_after = workers_cpu_s(master)
    latencies: dict[str, list[float]] = {k: [] for k in KINDS}
    problems: Counter[str] = Counter()
    for r in results:
        for kind, values in r.latencies.items():
            latencies[kind].extend(values)
        problems.update(r.problems)
    return Run(
        label=label,
        phones=phones,
        wall_s=wall,
        latencies=latencies,
        problems=problems,
        sessions=sum(r.sessions for r in results),
        completed=sum(r.completed for r in results),
        resumes=sum(r.resumes for r in results),
        waited_s=picker.waited_s,
        stopped=picker.stopped,
        client_cpu_s=time.process_time() - client_before,
        server_cpu_s=(
            None if server_before is None or server_after is None else server_after - server_before
        ),
    )


# -- figures -----------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 1,000 is the 990th value)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def report(run: Run) -> None:
    errors = sum(run.problems.values())
    print(
        f"  sessions: {run.sessions:,} started, {run.completed:,} completed, {errors} errors\n"
        f"  hops: {run.hops:,} in {run.wall_s:.1f} s = {run.hops / run.wall_s:.0f} hops/s"
    )
    every = [v for values in run.latencies.values() for v in values]
    print(f"  all hops: p50 {percentile(every, 50):.1f} ms, p99 {percentile(every, 99):.1f} ms")
    print(f"  {'kind':<11}{'count':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for kind in KINDS:
        values = run.latencies[kind]
        if values:
            print(
                f"  {kind:<11}{len(values):>8,}{percentile(values, 50):>9.1f}"
                f"{percentile(values, 99):>9.1f}{max(values):>9.1f}"
            )
    server = (
        "n/a"
        if run.server_cpu_s is None
        else f"{run.server_cpu_s:.1f} s = {run.server_cpu_s / run.wall_s:.2f} cores"
    )
    if run.server_cpu_s is not None and run.hops:
        server += f" = {run.server_cpu_s * 1000 / run.hops:.2f} ms a hop"
    print(
        f"  CPU: gunicorn {server}; this load generator {run.client_cpu_s:.1f} s = "
        f"{run.client_cpu_s / run.wall_s:.2f} cores (of {os.cpu_count()})"
    )
    if run.resumes:
        print(
            f"  {run.resumes:,} sessions offered 'last session was cut off' after the PIN "
            f"(answered 2: the menu/other hops)"
        )
    if run.waited_s or run.stopped:
        print(
            f"  per-phone limit ({STARTS_PER_MINUTE} starts a minute): phones waited "
            f"{run.waited_s:.1f} s, {run.stopped} stopped early; more --members avoids it"
        )
    for problem, count in run.problems.most_common(8):
        print(f"  error x{count}: {problem}")


# -- the first hop, wrk-style -----------------------------------------------------------

# Each request a new session from the next member (threads interleaved), so every one is a
# first hop; each reply is checked to be the PIN screen (a "too many" END is not a hop).
WRK_SCRIPT = """
local members, label = %(members)d, "%(label)s"
local counter, threads = 0, {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  bad, n, step = 0, tid, %(threads)d
end
function request()
  n = n + step
  local member = n %% members + 1
  local body = string.format(
    "sessionId=ATUid_%%s_%%d&serviceCode=%%%%2A384%%%%2A96%%%%23&phoneNumber=%%%%2B2547%%08d"
    .. "&networkCode=63902&text=", label, n, member)
  return wrk.format("POST", "/ussd",
    {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end
function response(status, headers, body)
  if status ~= 200 or string.sub(body, 1, %(expect_len)d) ~= "%(expect)s" then bad = bad + 1 end
end
function done(summary, latency, requests)
  local wrong = 0
  for _, thread in ipairs(threads) do wrong = wrong + thread:get("bad") end
  io.write(string.format("RESULT requests=%%d seconds=%%.3f p50_us=%%d p99_us=%%d max_us=%%d "
    .. "errors=%%d wrong=%%d\\n", summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99), latency.max,
    summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout + summary.errors.status, wrong))
end
"""
WRK_THREADS = 2
FIRST_HOP_EXPECT = "CON SACCO: enter your PIN:"


@dataclass
class WrkRun:
    label: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    wrong: int
    server_cpu_s: float | None  # the gunicorn workers' CPU over the timed run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def wrk_first_hops(
    base: str,
    master: int,
    tmp: Path,
    *,
    label: str,
    members: int,
    connections: int,
    seconds: float,
) -> WrkRun:
    """`connections` keep-alive connections posting first hops for `seconds`; a short
    untimed run first, so every server thread has its connections and compiled queries."""
    script = tmp / f"first-hop-{label}.lua"
    for phase, duration in (("warm", 2.0), (label, seconds)):
        script.write_text(
            WRK_SCRIPT
            % {
                "members": members,
                "label": phase,
                "threads": WRK_THREADS,
                "expect": FIRST_HOP_EXPECT,
                "expect_len": len(FIRST_HOP_EXPECT),
            }
        )
        redis_client().flushdb()  # no start counts left: every phone starts afresh
        cpu_before = workers_cpu_s(master)
        out = subprocess.run(
            [
                "wrk",
                f"-t{WRK_THREADS}",
                f"-c{connections}",
                f"-d{duration:g}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                f"{base}/ussd",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        cpu_after = workers_cpu_s(master)
    found = re.search(
        r"RESULT requests=(\d+) seconds=([\d.]+) p50_us=(\d+) p99_us=(\d+) max_us=(\d+) "
        r"errors=(\d+) wrong=(\d+)",
        out,
    )
    if found is None:
        raise RuntimeError(f"wrk said:\n{out}")
    n, secs, p50, p99, most, errors, wrong = found.groups()
    return WrkRun(
        label,
        int(n),
        float(secs),
        int(p50) / 1000,
        int(p99) / 1000,
        int(most) / 1000,
        int(errors),
        int(wrong),
        None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
    )


def first_hop(app: Flask, tmp: Path, base: str, master: int, args: argparse.Namespace) -> bool:
    """The bare Flask + Redis floor, then the app, under the same wrk load; returns True if
    any reply was wrong."""
    print(
        f"\nfirst hop, wrk-style: {args.first_hop_connections} connections, "
        f"{args.first_hop_duration:g} s each, {WRK_THREADS} wrk threads, "
        f"{args.first_hop_members:,} members"
    )
    bare, bare_base, _log = start_gunicorn(app, tmp, "benchmarks.bare_ussd:app")
    try:
        floor = wrk_first_hops(
            bare_base,
            bare.pid,
            tmp,
            label="bare",
            members=args.first_hop_members,
            connections=args.first_hop_connections,
            seconds=args.first_hop_duration,
        )
    finally:
        stop(bare)
    ours = wrk_first_hops(
        base,
        master,
        tmp,
        label="app",
        members=args.first_hop_members,
        connections=args.first_hop_connections,
        seconds=args.first_hop_duration,
    )
    # CPU ms per request: what a request costs the web workers, which on a shared machine
    # says more than the rate (the rate is whatever CPU the others left us).
    print(
        f"  {'server':<28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'CPU ms/req':>12}{'wrong':>7}"
    )
    for name, run in (("bare Flask + Redis GET/SET", floor), ("app: USSD first hop", ours)):
        cpu = "n/a" if run.server_cpu_s is None else f"{run.server_cpu_s * 1000 / run.requests:.2f}"
        print(
            f"  {name:<28}{run.rate:>9.0f}{run.p50_ms:>9.1f}{run.p99_ms:>9.1f}"
            f"{run.max_ms:>9.1f}{cpu:>12}{run.errors + run.wrong:>7}"
        )
    print(f"  app / bare: {ours.rate / floor.rate:.2f}x the requests a second; {TARGET}")
    return bool(ours.errors or ours.wrong)


def print_plans(plans: dict[str, list[str]]) -> None:
    for name, lines in plans.items():
        print(f"  plan, {name}:")
        for line in lines:
            print(f"    {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000)
    parser.add_argument("--sessions", type=int, default=50, help="concurrent phones")
    parser.add_argument("--duration", type=float, default=20, help="seconds of load")
    parser.add_argument(
        "--balance-share", type=float, default=0.4, help="rest: statement and apply, halved"
    )
    parser.add_argument("--think", type=float, default=0, help="mean ms before each hop")
    parser.add_argument("--scale", action="store_true", help="then grow to 100k and 1M members")
    parser.add_argument("--scale-sessions", type=int, default=4)
    parser.add_argument("--scale-duration", type=float, default=10)
    parser.add_argument("--big", action="store_true", help="on SQLite too, go to 1M members")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--wipe", action="store_true", help="allow emptying DATABASE_URL/REDIS_URL")
    parser.add_argument("--first-hop", action="store_true", help="then the wrk first-hop run")
    parser.add_argument("--first-hop-connections", type=int, default=50)
    parser.add_argument("--first-hop-duration", type=float, default=10)
    parser.add_argument("--first-hop-members", type=int, default=100_000)
    parser.add_argument(
        "--closed", action=argparse.BooleanOptionalAction, default=True, help="the closed loop"
    )
    args = parser.parse_args()
    made = bench_app("ussd", wipe=args.wipe)
    if made is None:
        return 1
    app, tmp = made
    with app.app_context():
        bench_schema_fresh()
        dialect = db.engine.dialect.name
        redis_client().flushdb()
        print(f"database: {dialect}; redis: {app.config['REDIS_URL']}")
        if dialect != "postgresql":
            print("  (SQLite: every hop queues for one write lock; these are not target numbers)")

        # One hash for everyone: the PIN hop still runs the full check_password_hash.
        pin_hash = generate_password_hash(PIN, method=PIN_HASH_METHOD)
        began = time.perf_counter()
        add_members(1, args.members, pin_hash)
        add_instant_product()
        count = db.session.scalar(select(func.count()).select_from(Member))
        db.session.remove()
        setup_s = time.perf_counter() - began
        print(f"setup: {count:,} members with savings accounts ({setup_s:.1f} s)")

        if args.first_hop and shutil.which("wrk") is None:
            print("--first-hop needs wrk (apt-get install -y wrk)")
            return 1
        proc, base, log_path = start_gunicorn(app, tmp)
        failed = False
        try:
            print(f"gunicorn: pid {proc.pid}, {base}, {web_shape()} (log {log_path})")
            if args.closed:
                failed |= closed_loop(base, proc.pid, args)
            if args.scale:
                failed |= scale(base, proc.pid, args, pin_hash)
            if args.first_hop:
                # (--scale has grown the table past it already)
                grown = args.members if args.scale else max(args.members, args.first_hop_members)
                if grown > args.members:
                    began = time.perf_counter()
                    add_members(args.members + 1, grown, pin_hash)
                    print(
                        f"\ngrew members to {grown:,} for the first hop "
                        f"({time.perf_counter() - began:.1f} s)"
                    )
                failed |= first_hop(app, tmp, base, proc.pid, args)
        finally:
            stop(proc)
            redis_client().flushdb()
    return 1 if failed else 0


def closed_loop(base: str, master: int, args: argparse.Namespace) -> bool:
    """Phones dialling whole sessions for --duration s; True if any hop failed."""
    run = drive(
        base,
        master,
        members=args.members,
        phones=args.sessions,
        duration_s=args.duration,
        balance_share=args.balance_share,
        think_s=args.think / 1000,
        label="load",
        seed=args.seed,
    )
    print(
        f"\nUSSD load on {db.engine.dialect.name}: {args.members:,} members, "
        f"{args.sessions} phones, {args.duration:g} s, think {args.think:g} ms"
    )
    report(run)
    print(f"  {TARGET}")
    return bool(run.problems)


def scale(base: str, master: int, args: argparse.Namespace, pin_hash: str) -> bool:
    """The balance flow alone at each table size; returns True if any hop failed."""
    dialect = db.engine.dialect.name
    cap = None if dialect == "postgresql" or args.big else SQLITE_CAP
    sizes = [args.members] + [
        s for s in SCALE_SIZES if s > args.members and (cap is None or s <= cap)
    ]
    rows: list[tuple[int, Run]] = []
    current = args.members
    print(
        f"\nscaling: balance flow only, {args.scale_sessions} phones x "
        f"{args.scale_duration:g} s at each size"
    )
    for size in sizes:
        if size > current:
            began = time.perf_counter()
            add_members(current + 1, size, pin_hash)
            print(
                f"  grew members {current:,} -> {size:,} "
                f"({time.perf_counter() - began:.1f} s, batches of {BATCH:,})"
            )
            current = size
        print(f"members {size:,}:")
        print_plans(explain(random.Random(size).randint(1, size)))
        run = drive(
            base,
            master,
            members=size,
            phones=args.scale_sessions,
            duration_s=args.scale_duration,
            balance_share=1.0,
            think_s=0,
            label=f"scale{size}",
            seed=args.seed,
        )
        report(run)
        rows.append((size, run))
    print(f"\nbalance flow vs members ({dialect}, {args.scale_sessions} phones), ms:")
    print(f"  {'members':>10}  {'dial p50/p99':>14}  {'pin p50/p99':>14}  {'balance p50/p99':>16}")
    for size, run in rows:
        cells = [
            f"{percentile(run.latencies[k], 50):.1f}/{percentile(run.latencies[k], 99):.1f}"
            for k in ("dial", "pin", "balance")
        ]
        print(f"  {size:>10,}  {cells[0]:>14}  {cells[1]:>14}  {cells[2]:>16}")
    return any(run.problems for _, run in rows)


if __name__ == "__main__":
    raise SystemExit(main())
