"""The RQ worker as `sacco worker` runs it: a real worker on the suite's Redis and database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from flask import Flask
from rq.job import JobStatus

from app.cli.runtime import make_worker
from app.cli.supervise import Supervisor, describe_exit, error_cause
from app.extensions import db, enqueue
from tests.factories import make_member

ROOT = Path(__file__).resolve().parent.parent


def test_each_job_starts_with_a_clean_session_whatever_the_job_before_left(app: Flask) -> None:
    member_id = make_member(name="Jane Wanjiru").id
    db.session.commit()
    failing = enqueue("default", "tests.helpers.job_rename_member_then_fail", member_id)
    reading = enqueue("default", "tests.helpers.job_member_name", member_id)

    make_worker(("default",)).work(burst=True)

    assert failing.get_status(refresh=True) == JobStatus.FAILED
    # Without the after-job callback the second job would read the first one's unsaved
    # change out of the worker's session.
    assert reading.get_status(refresh=True) == JobStatus.FINISHED
    assert reading.return_value() == "Jane Wanjiru"


def test_a_stopped_worker_exits_0(app: Flask, tmp_path: Path) -> None:
    env = dict(
        os.environ,
        DATABASE_URL=app.config["SETTINGS"].DATABASE_URL,
        REDIS_URL=app.config["REDIS_URL"],
        INSTANCE_PATH=str(tmp_path),
    )
    worker = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "app", "worker"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so a failing test can stop RQ's scheduler process too
    )
    # Maintenance runs inside the loop, after RQ has put its signal handlers in place; then
    # the worker waits for jobs, where a stop request normally finds it.
    _, err = _wait_for_line(worker, "cleaning group registries")
    time.sleep(0.5)
    worker.send_signal(signal.SIGTERM)
    try:
        rest = worker.communicate(timeout=30)[1]
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        raise
    assert worker.returncode == 0, err + rest


def _wait_for_line(process: subprocess.Popen[str], text: str) -> tuple[None, str]:
    seen = ""
    deadline = time.monotonic() + 30
    assert process.stderr is not None
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen += line
        if text in line:
            return None, seen
        if not line and process.poll() is not None:
            break
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"the worker never said {text!r}:\n{seen}")


def test_a_crash_is_told_by_its_exit_status_and_the_error_it_logged() -> None:
    assert describe_exit(1) == "exit status 1"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    json_log = [
        '{"level": "info", "msg": "Worker w: sms: workers.sms.send_sms(1)"}\n',
        '{"level": "error", "msg": "Worker w: found an unhandled exception, quitting...", '
        '"exc": "Traceback (most recent call last):\\n  ...\\nTypeError: takes 3 but 4"}\n',
        '{"level": "info", "msg": "Worker w: unsubscribing from channel"}\n',
    ]
    assert error_cause(json_log) == (
        "Worker w: found an unhandled exception, quitting... TypeError: takes 3 but 4"
    )
    plain = ["Traceback (most recent call last):\n", "  File x\n", "OSError: port in use\n"]
    assert error_cause(plain) == "OSError: port in use"
    assert error_cause(['{"level": "info", "msg": "fine"}\n']) is None


def test_a_child_killed_from_outside_is_told_by_its_signal_not_an_error_it_had_logged(
    tmp_path: Path,
) -> None:
    """The worker logs a job that failed and will be retried, then the OOM killer takes it:
    the report names the signal alone. A child that exits on an error is told by it."""
    logged = "import sys, time; print('{err}', file=sys.stderr, flush=True); {then}"
    said: list[str] = []
    supervisor = Supervisor(
        {
            "worker": [
                sys.executable,
                "-c",
                logged.format(err="DarajaNoAnswer: token: ConnectionError", then="time.sleep(60)"),
            ],
            "web": [sys.executable, "-c", logged.format(err="OSError: in use", then="sys.exit(3)")],
        },
        cwd=tmp_path,
        env=os.environ,
        say=said.append,
    )
    worker, web = supervisor.children
    try:
        for child in supervisor.children:
            supervisor.start(child)
        deadline = time.monotonic() + 30
        while not (worker.stderr_tail and web.stderr_tail) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.process is not None and web.process is not None
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait(timeout=30)
        web.process.wait(timeout=30)
        supervisor.check(time.monotonic())
    finally:
        supervisor.stop()

    assert "worker crashed (killed by SIGKILL); restarting in 1 s" in said, said
    assert "web crashed (exit status 3): OSError: in use; restarting in 1 s" in said, said
