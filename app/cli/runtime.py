"""`sacco up` (web + worker + scheduler in one), `sacco worker`, `sacco scheduler`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from rq import Retry, SimpleWorker

from app.cli.supervise import Supervisor
from app.extensions import QUEUE_NAMES, db, enqueue, queue, redis_client
from workers.schedule import build_scheduler, catch_up

# What `sacco up` leaves in the instance folder while it runs, so `sacco dial` (and anyone
# else on this machine) finds the server without being told its port.
SERVER_FILE = "server.json"
# RQ says "Job OK" and "Result is kept for 500 seconds" for every job at INFO: under
# `sacco up` that buries the web server's lines, so it runs the worker at WARNING unless
# asked (`sacco up --verbose`, or this variable).
WORKER_LOG_LEVEL_ENV = "SACCO_WORKER_LOG_LEVEL"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# The web server's settings (processes, worker class, timeout), shared with the image.
GUNICORN_CONF = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"


def server_file_write(instance_path: str, *, host: str, port: int) -> Path:
    """Record where this `sacco up` serves (a wildcard bind is reached on 127.0.0.1)."""
    reach = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 - a comparison
    path = Path(instance_path) / SERVER_FILE
    path.write_text(json.dumps({"url": f"http://{reach}:{port}", "pid": os.getpid()}))
    return path


def running_server_url(instance_path: str) -> str | None:
    """The URL a live `sacco up` wrote, or None (no file, unreadable, or its process is
    gone: a crash leaves the file behind)."""
    try:
        found = json.loads((Path(instance_path) / SERVER_FILE).read_text())
        url, pid = str(found["url"]), int(found["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, someone else's
    return url


def make_worker(queue_names: tuple[str, ...] = QUEUE_NAMES) -> SimpleWorker:
    """A worker that runs jobs in its own process, inside the app context it is made in.

    No fork per job: a forked child would inherit the parent's database connections, and
    forking costs more than our short jobs do. Scale out with more worker processes. The
    session is handed back after each job by the callbacks every enqueued job carries.
    """
    return SimpleWorker([queue(name) for name in queue_names], connection=redis_client())


class _StopSignals:
    """Notes SIGINT/SIGTERM delivered while RQ's own handlers are installed.

    `signal.set_wakeup_fd` sees every signal that has a Python handler, whoever installed
    it, so we learn whether RQ left its loop because it was asked to.
    """

    def __enter__(self) -> _StopSignals:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._previous = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.set_wakeup_fd(self._previous)
        received = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := self._read.recv(512):
                received += chunk
        self._read.close()
        self._write.close()
        self.requested = bool({signal.SIGINT, signal.SIGTERM} & set(received))


@click.command("worker")
@click.option("--queues", "-q", multiple=True, type=click.Choice(QUEUE_NAMES), help="Default: all.")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    envvar=WORKER_LOG_LEVEL_ENV,
    default="INFO",
    show_default=True,
    help=f"RQ's own lines (INFO: one per job). Also {WORKER_LOG_LEVEL_ENV}.",
)
@with_appcontext
def worker_cmd(queues: tuple[str, ...], burst: bool, log_level: str) -> None:
    """Run an RQ worker on the payments, sms, default and cob queues (cob last)."""
    worker = make_worker(queues or QUEUE_NAMES)
    with _StopSignals() as stop:
        worker.work(burst=burst, with_scheduler=True, logging_level=log_level.upper())
    if not burst and not stop.requested:
        # Unasked, RQ leaves its loop only after an error it has just logged (Redis gone,
        # an exception outside any job): that is a crash, and the exit status says so.
        raise click.ClickException("the worker stopped on an error (logged above)")


@click.command("scheduler")
@with_appcontext
def scheduler_cmd() -> None:
    """Run the RQ cron scheduler; first queue any daily run missed while it was down."""
    settings = current_app.config["SETTINGS"]
    for run in catch_up(now=datetime.now(UTC), tz=settings.tz):
        click.echo(
            f"catching up {run.name} for {run.as_of} (was due {run.due_at:%Y-%m-%d %H:%M} UTC)"
        )
    db.session.remove()
    build_scheduler(redis_client()).start()


def web_command(host: str, port: int) -> list[str]:
    """The web server as `sacco up` runs it (the USSD load benchmark runs this very one):
    gunicorn with the settings in gunicorn.conf.py, which the Docker image uses too."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        str(GUNICORN_CONF),
        "--bind",
        f"{host}:{port}",
        "wsgi:app",
    ]


@click.command("up")
@click.option("--port", type=int, default=None, help="Default: PORT (5000).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--verbose",
    is_flag=True,
    help=f"The worker's line per job too (its default here is WARNING; {WORKER_LOG_LEVEL_ENV}).",
)
@with_appcontext
def up_cmd(port: int | None, host: str, verbose: bool) -> None:
    """Migrate, load demo data, then run web + worker + scheduler until Ctrl-C."""
    from flask_migrate import upgrade

    from app.cli.demo import DEMO_DIAL_HINT, DEMO_PASSWORD, demo_load

    app = current_app
    settings = app.config["SETTINGS"]
    port = port or settings.PORT
    upgrade()
    if settings.DEMO_DATA and not settings.is_production:
        demo_load()
    db.session.remove()
    db.engine.dispose()

    root = Path(app.root_path).parent
    # One metrics folder for web workers and the RQ worker, emptied at each start (stale
    # files from a previous run would be added to today's counts).
    metrics_dir = Path(app.instance_path) / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(mode=0o700, parents=True)  # counts of members' activity: ours alone
    env = dict(
        os.environ,
        REDIS_URL=app.config["REDIS_URL"],
        DATABASE_URL=settings.DATABASE_URL,
        PORT=str(port),  # the worker texts the local simulator on this port
        INSTANCE_PATH=app.instance_path,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    if verbose:
        env[WORKER_LOG_LEVEL_ENV] = "INFO"
    else:
        env.setdefault(WORKER_LOG_LEVEL_ENV, "WARNING")
    me = [sys.executable, "-m", "app"]
    commands = {
        "web": web_command(host, port),
        "worker": [*me, "worker"],
        "scheduler": [*me, "scheduler"],
    }
    click.echo(f"SACCO is up: http://{host}:{port}/  (console: http://{host}:{port}/admin/)")
    if settings.DEMO_DATA and not settings.is_production:
        click.echo(f"Demo console login: admin@sacco.test / {DEMO_PASSWORD}")
        click.echo(DEMO_DIAL_HINT)
    click.echo("Ctrl-C stops web, worker and scheduler together.")
    if settings.mpesa_simulated:
        # So a Paybill payment made on the simulator page reaches us, as after
        # `sacco mpesa register-urls` in production. A job, retried while the web starts.
        enqueue(
            "payments",
            "workers.payments.register_urls",
            job_id="register-urls",
            retry=Retry(max=6, interval=[1, 2, 4, 8, 15, 30]),
        )
    supervisor = Supervisor(commands, cwd=root, env=env, say=lambda m: click.echo(m, err=True))
    server_file = server_file_write(app.instance_path, host=host, port=port)
    try:
        status = supervisor.run()
    finally:
        server_file.unlink(missing_ok=True)
    raise SystemExit(status)
