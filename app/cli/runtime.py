"""`sacco up` (web + worker + scheduler in one), `sacco worker`, `sacco scheduler`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from rq import SimpleWorker

from app.extensions import QUEUE_NAMES, db, queue, redis_client


class AppWorker(SimpleWorker):
    """Runs jobs in the worker process, inside the app context `sacco worker` holds.

    No fork per job: a forked child would inherit the parent's database connections, and
    forking costs more than our short jobs do. Scale out with more worker processes.
    """

    def perform_job(self, job, queue):  # noqa: ANN001, ANN201
        try:
            return super().perform_job(job, queue)
        finally:
            db.session.remove()


@click.command("worker")
@click.option("--queues", "-q", multiple=True, type=click.Choice(QUEUE_NAMES), help="Default: all.")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@with_appcontext
def worker_cmd(queues: tuple[str, ...], burst: bool) -> None:
    """Run an RQ worker on the payments, sms and default queues."""
    worker = AppWorker([queue(name) for name in queues or QUEUE_NAMES], connection=redis_client())
    worker.work(burst=burst, with_scheduler=True, logging_level="INFO")


@click.command("scheduler")
@with_appcontext
def scheduler_cmd() -> None:
    """Run the RQ cron scheduler that enqueues the daily jobs."""
    from workers.schedule import build_scheduler

    build_scheduler(redis_client()).start()


@click.command("up")
@click.option("--port", type=int, default=None, help="Default: PORT (5000).")
@click.option("--host", default="127.0.0.1", show_default=True)
@with_appcontext
def up_cmd(port: int | None, host: str) -> None:
    """Migrate, load demo data, then run web + worker + scheduler until Ctrl-C."""
    from flask_migrate import upgrade

    from app.cli.demo import DEMO_PASSWORD, demo_load

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
    metrics_dir.mkdir(parents=True)
    env = dict(
        os.environ,
        REDIS_URL=app.config["REDIS_URL"],
        DATABASE_URL=settings.DATABASE_URL,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    me = [sys.executable, "-m", "app"]
    commands = {
        "web": [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"{host}:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--timeout",
            "30",
            "wsgi:app",
        ],
        "worker": [*me, "worker"],
        "scheduler": [*me, "scheduler"],
    }
    children = {name: subprocess.Popen(cmd, cwd=root, env=env) for name, cmd in commands.items()}
    click.echo(f"SACCO is up: http://{host}:{port}/  (console: http://{host}:{port}/admin/)")
    if settings.DEMO_DATA and not settings.is_production:
        click.echo(f"Demo console login: admin@sacco.test / {DEMO_PASSWORD}")
    click.echo("Ctrl-C stops web, worker and scheduler together.")

    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    exit_code = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                click.echo(f"{name} exited with {child.returncode}; stopping the rest", err=True)
                exit_code = child.returncode or 1
                stopping = True
                break
        time.sleep(0.3)
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + 10
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    raise SystemExit(exit_code)
