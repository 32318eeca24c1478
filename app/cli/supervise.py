"""The process supervisor behind `sacco up`: web, worker and scheduler as children.

A child that dies without being asked to is reported with its exit status and the last
error it wrote (or the signal that stopped it from outside, alone), then started again
after a pause that doubles with each quick crash (1 s up to a minute), so the web server
keeps answering members while a worker is down. Each child runs in a session of its own:
Ctrl-C reaches only the supervisor, which then stops them all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
STABLE_AFTER_SECONDS = 60.0  # a child up this long has its backoff reset
STOP_GRACE_SECONDS = 10.0
STOPPED_FROM_OUTSIDE = {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def error_cause(lines: Sequence[str]) -> str | None:
    """The last error a child wrote: a JSON log line at error level (with its exception's
    last line), or the last line of a plain traceback."""
    for line in reversed(lines):
        text = line.strip()
        if not text:
            continue
        if text.startswith("{"):
            try:
                record = json.loads(text)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("level") in ("error", "critical"):
                exc = str(record.get("exc") or "").strip().splitlines()
                return f"{record.get('msg', '')} {exc[-1] if exc else ''}".strip()
            continue
        if "Error" in text or "Exception" in text:
            return text
    return None


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    """Signal a child and every process it started (each child leads its own group)."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):  # the whole group is gone already
        pass


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen[str] | None = None
    started_at: float = 0.0
    backoff: float = FIRST_BACKOFF_SECONDS
    restart_at: float | None = None
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))


class Supervisor:
    def __init__(
        self,
        commands: Mapping[str, list[str]],
        *,
        cwd: Path,
        env: Mapping[str, str],
        say: Callable[[str], None],
    ) -> None:
        self.children = [Child(name, list(cmd)) for name, cmd in commands.items()]
        self.cwd = cwd
        self.env = dict(env)
        self.say = say
        self.stopping = False

    def start(self, child: Child) -> None:
        child.stderr_tail.clear()
        child.process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            child.command,
            cwd=self.cwd,
            env=self.env,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        threading.Thread(
            target=self._forward_stderr, args=(child, child.process), daemon=True
        ).start()
        self.say(f"started {child.name} (pid {child.process.pid})")

    @staticmethod
    def _forward_stderr(child: Child, process: subprocess.Popen[str]) -> None:
        # Pass the child's log through, keeping its tail to name the cause of a crash.
        assert process.stderr is not None
        with process.stderr:  # closed at the child's end: a restarted child leaks no pipe
            for line in process.stderr:
                child.stderr_tail.append(line)
                sys.stderr.write(line)
                sys.stderr.flush()

    def check(self, now: float) -> None:
        """Notice children that died and start those whose pause is over."""
        for child in self.children:
            process = child.process
            if process is not None and process.poll() is not None:
                # Let the reader thread drain what the child wrote last.
                if process.stderr is not None:
                    time.sleep(0.1)
                child.process = None
                # What it started dies with it: RQ's scheduler process, left alone, would
                # hold the scheduler lock the restarted worker needs.
                _signal_group(process.pid, signal.SIGKILL)
                if now - child.started_at >= STABLE_AFTER_SECONDS:
                    child.backoff = FIRST_BACKOFF_SECONDS
                # A child stopped from outside (the OOM killer, an operator) did not die of
                # the last error it logged: a failed job it was about to retry said it.
                killed = -process.returncode in STOPPED_FROM_OUTSIDE
                cause = None if killed else error_cause(list(child.stderr_tail))
                self.say(
                    f"{child.name} crashed ({describe_exit(process.returncode)})"
                    + (f": {cause}" if cause else "")
                    + f"; restarting in {child.backoff:g} s"
                )
                child.restart_at = now + child.backoff
                child.backoff = min(child.backoff * 2, MAX_BACKOFF_SECONDS)
            if child.process is None and child.restart_at is not None and now >= child.restart_at:
                self.start(child)

    def run(self, poll_seconds: float = 0.3) -> int:
        def _stop(signum: int, frame: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        for child in self.children:
            self.start(child)
        while not self.stopping:
            self.check(time.monotonic())
            time.sleep(poll_seconds)
        self.stop()
        return 0

    def stop(self) -> None:
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _signal_group(process.pid, signal.SIGKILL)
        self.say("stopped web, worker and scheduler")
