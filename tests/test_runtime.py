"""`sacco up` as a newcomer runs it: a real server, worker and scheduler in child processes,
on the suite's database and Redis, with SMS going to the Africa's Talking simulator."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
from flask import Flask
from sqlalchemy import select

from app.extensions import db
from app.models import UssdEvent
from tests.factories import make_member

ROOT = Path(__file__).resolve().parent.parent
PHONE = "+254712000001"


@dataclass
class RunningSacco:
    process: subprocess.Popen[str]
    base: str
    lines: list[str] = field(default_factory=list)

    def wait_for(self, predicate: Callable[[], object], what: str, timeout: float = 60) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        output = "".join(self.lines[-60:])
        raise AssertionError(f"timed out waiting for {what}; sacco up said:\n{output}")

    def said(self, pattern: str) -> list[re.Match[str]]:
        return [m for line in list(self.lines) if (m := re.search(pattern, line))]

    def pid_of(self, child: str) -> list[int]:
        return [int(m.group(1)) for m in self.said(rf"^started {child} \(pid (\d+)\)")]

    def get(self, path: str) -> requests.Response:
        # Generous: on a loaded 2-core CI box a healthy answer can take seconds.
        return requests.get(self.base + path, timeout=20)

    def healthy(self) -> bool:
        """A probe's answer while the server starts: not listening yet, or listening with
        no worker ready to answer (gunicorn binds before it forks), is "not yet"."""
        try:
            return self.get("/healthz").status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    def text_the_sacco(self, text: str) -> None:
        answer = requests.post(
            self.base + "/simulator/at/inbound",
            data={"phone": PHONE, "text": text},
            headers={"Accept": "application/json"},
            timeout=10,
        )
        assert answer.status_code == 200 and answer.json()["callbackStatus"] == 200

    def inbox(self) -> list[dict]:
        return self.get(f"/simulator/at/inbox/{PHONE}").json()["messages"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _sacco_up(app: Flask, tmp_path: Path) -> Iterator[RunningSacco]:
    # The test's own session must hold no transaction: on SQLite it would hold the lock.
    db.session.commit()
    db.session.remove()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AT_", "MPESA_"))}
    env.update(
        APP_ENV="development",
        DATABASE_URL=app.config["SETTINGS"].DATABASE_URL,
        REDIS_URL=app.config["REDIS_URL"],
        DEMO_DATA="0",
        INSTANCE_PATH=str(tmp_path),
        PYTHONUNBUFFERED="1",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "up", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    running = RunningSacco(process, f"http://127.0.0.1:{port}")

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        running.wait_for(running.healthy, "/healthz to answer 200")
        yield running
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            for child in ("web", "worker", "scheduler"):
                for pid in running.pid_of(child):
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            process.wait()
        reader.join(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


def _member() -> str:
    member_no = make_member(name="Jane Wanjiru", phone="0712000001", savings=1500).member_no
    db.session.commit()
    db.session.remove()
    return member_no


def _balance_replies(running: RunningSacco) -> list[str]:
    """The BAL replies on the member's phone (the deposit receipt arrives there too)."""
    return [m["message"] for m in running.inbox() if m["message"].startswith("Savings ")]


def test_a_member_texts_bal_and_the_reply_reaches_the_phone_through_the_worker(
    app: Flask, tmp_path: Path
) -> None:
    member_no = _member()
    with _sacco_up(app, tmp_path) as running:
        assert running.get("/").status_code == 200
        running.text_the_sacco("BAL")
        (reply,) = running.wait_for(
            lambda: _balance_replies(running), "the BAL reply in the simulator's inbox"
        )
        assert "1,500.00" in reply, reply
        assert running.get("/healthz").status_code == 200
        # The scheduler caught up the daily runs it found missed. It is its own process and
        # may still be importing the app when the worker has already answered the BAL.
        running.wait_for(
            lambda: running.said(r"catching up loan-arrears for \d{4}-\d{2}-\d{2}"),
            "the scheduler to catch up the missed loan-arrears run",
        )

        # M-PESA offline: `sacco up` registered our Paybill URLs with the Daraja simulator,
        # so a payment made there reaches the member's savings and phone through the worker.
        running.wait_for(
            lambda: running.get("/simulator/daraja/state").json().get("c2b_urls"),
            "the Paybill URLs registered with the simulator",
        )
        paid = requests.post(
            running.base + "/simulator/daraja/c2b/pay",
            json={"phone": PHONE, "amount": "250", "account": member_no},
            timeout=10,
        )
        assert paid.status_code == 202, paid.text
        trans_id = paid.json()["TransID"]
        (receipt,) = running.wait_for(
            lambda: [m["message"] for m in running.inbox() if trans_id in m["message"]],
            "the Paybill deposit receipt on the phone",
        )
        assert "1,750.00" in receipt, receipt

        # The worker ran jobs, but at WARNING: none of RQ's per-job lines buried the web's.
        assert not running.said(r"Job OK|Result is kept|Successfully completed"), running.lines

        # `sacco dial` with no --url and no PORT finds this server from the instance
        # folder, and at the hang-up tells /ussd/events as the gateway would.
        server = json.loads((tmp_path / "server.json").read_text())
        assert server["url"] == running.base
        env = {k: v for k, v in os.environ.items() if k != "PORT" and not k.startswith("AT_")}
        env.update(
            DATABASE_URL=app.config["SETTINGS"].DATABASE_URL,
            REDIS_URL=app.config["REDIS_URL"],
            INSTANCE_PATH=str(tmp_path),
        )
        dialled = subprocess.run(
            [sys.executable, "-m", "app", "dial", "--phone", "0712000001"],
            cwd=ROOT,
            env=env,
            input="",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert dialled.returncode == 0, dialled.stderr
        assert dialled.stdout.splitlines()[-1] == "hung up", dialled.stdout
        event = db.session.scalars(select(UssdEvent)).one()
        assert (event.phone, event.status, event.hops) == ("+254712000001", "Incomplete", 1)
        db.session.remove()
    assert not (tmp_path / "server.json").exists()  # gone with the server


def test_a_killed_worker_is_reported_and_restarted_while_the_web_keeps_answering(
    app: Flask, tmp_path: Path
) -> None:
    _member()
    with _sacco_up(app, tmp_path) as running:
        (first,) = running.wait_for(lambda: running.pid_of("worker"), "the worker's pid")
        os.kill(first, signal.SIGKILL)
        statuses = []

        def restarted() -> bool:
            statuses.append(running.get("/healthz").status_code)
            return len(running.pid_of("worker")) >= 2

        running.wait_for(restarted, "the worker to be started again")
        assert set(statuses) == {200}, statuses
        crashed = r"^worker crashed \(killed by SIGKILL\); restarting in 1 s"
        assert running.said(crashed), running.lines
        second = running.pid_of("worker")[-1]
        assert second != first
        # The new worker does the work: a text gets its reply.
        running.text_the_sacco("BAL")
        running.wait_for(lambda: _balance_replies(running), "the BAL reply after the restart")
        assert running.get("/healthz").status_code == 200
