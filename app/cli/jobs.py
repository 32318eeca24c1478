"""`sacco jobs run NAME [--as-of-date YYYY-MM-DD]` and `sacco jobs list`."""

from __future__ import annotations

from datetime import date, datetime

import click
from flask.cli import AppGroup
from sqlalchemy.exc import SQLAlchemyError

from app.clock import business_today
from app.extensions import db
from app.services.ledger import books_closed_through
from workers.schedule import JOBS, run_job

jobs_cli = AppGroup("jobs", help="Run the scheduled jobs by hand.")


@jobs_cli.command("list")
def jobs_list() -> None:
    """Names of the jobs `jobs run` accepts."""
    for name, fn in sorted(JOBS.items()):
        click.echo(f"{name:24} {(fn.__doc__ or '').strip().splitlines()[0] if fn.__doc__ else ''}")


@jobs_cli.command("run")
@click.argument("name")
@click.option("--as-of-date", default=None, help="Run as if today were this date (YYYY-MM-DD).")
@click.option(
    "--workers",
    type=click.IntRange(min=0, max=64),
    default=None,
    help="Close-of-business jobs: spread the loans over N local worker processes "
    "(0: in this process; default: the COB_WORKERS setting, for the `cob` workers).",
)
def jobs_run(name: str, as_of_date: str | None, workers: int | None) -> None:
    """Run one job now; exit 0 success or skipped, 2 partial, 1 fatal."""
    as_of: date | None = None
    if as_of_date:
        try:
            as_of = datetime.strptime(as_of_date, "%Y-%m-%d").date()
        except ValueError:
            click.echo(f"error: --as-of-date must be YYYY-MM-DD, got {as_of_date!r}", err=True)
            raise SystemExit(1) from None
    if as_of is not None and as_of > business_today():
        click.echo(
            f"error: --as-of-date {as_of} is after today's business date {business_today()}",
            err=True,
        )
        raise SystemExit(1)
    # Read only for a replayed day: a plain run must reach the runner, which ends in its
    # one JSON line and logs why it could not run (no lock, no database), not a traceback.
    try:
        closed = books_closed_through() if as_of is not None else None
    except SQLAlchemyError as exc:
        click.echo(f"error: the books cannot be read: {type(exc).__name__}", err=True)
        raise SystemExit(1) from None
    db.session.rollback()  # a read only: no transaction left open while the job runs
    if as_of is not None and closed is not None and as_of <= closed:
        # The runner refuses it too; said here in words, as for a day not yet come.
        click.echo(
            f"error: --as-of-date {as_of} is in a closed period: the books are closed "
            f"through {closed}",
            err=True,
        )
        raise SystemExit(1)
    if name not in JOBS:
        known = ", ".join(sorted(JOBS))
        click.echo(f"error: no job {name!r} (jobs: {known})", err=True)
        raise SystemExit(1)
    raise SystemExit(run_job(name, as_of, workers=workers))
