"""`sacco dividends declare|approve|post|report`: the annual dividend run from the server.

Staff are named by their console email; the services check what their role may do, as
they do for the console. A refusal prints one line and exits 1.
"""

from __future__ import annotations

import sys
from datetime import date

import click
from flask.cli import AppGroup
from sqlalchemy import select

from app.errors import SaccoError
from app.extensions import db
from app.models import DividendRun, StaffUser
from app.services.savings.dividends import (
    FORMATS,
    dividend_approve,
    dividend_cancel,
    dividend_declare,
    dividend_post,
    dividend_report,
)

dividends_cli = AppGroup("dividends", help="The annual dividend and interest on deposits.")


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(1)


def _staff(email: str) -> StaffUser:
    user = db.session.scalar(select(StaffUser).where(StaffUser.email == email.strip().lower()))
    if user is None or not user.active:
        _fail(f"no active staff user {email}")
    assert user is not None
    return user


def _summary(run: DividendRun) -> str:
    return (
        f"run {run.id} ({run.year}, {run.method}, {run.status}): {run.members} members, "
        f"dividend {run.dividend_gross:,.2f}, interest {run.interest_gross:,.2f}, "
        f"tax {run.tax:,.2f}, net {run.net:,.2f}"
    )


@dividends_cli.command("declare")
@click.option("--year", required=True, help="The financial year the AGM declared for.")
@click.option("--share-rate", required=True, metavar="PERCENT", help="Dividend on shares.")
@click.option("--deposit-rate", required=True, metavar="PERCENT", help="Interest on deposits.")
@click.option("--method", default="weighted", show_default=True, metavar="simple|weighted")
@click.option("--payout", default="savings", show_default=True, metavar="savings|mpesa")
@click.option("--staff", "email", required=True, help="The declaring staff member's email.")
@click.option("--resolution", default=None, help="The AGM minute (reference).")
def declare_cmd(
    year: str,
    share_rate: str,
    deposit_rate: str,
    method: str,
    payout: str,
    email: str,
    resolution: str | None,
) -> None:
    """Declare a year's run and compute its preview (status draft)."""
    try:
        run = dividend_declare(
            year=_number("--year", year),
            share_rate=share_rate,
            deposit_rate=deposit_rate,
            method=method,
            payout=payout,
            staff=_staff(email),
            resolution_ref=resolution,
        )
    except SaccoError as exc:
        _fail(str(exc))
    else:
        click.echo(_summary(run))


def _number(option: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        _fail(f"{option} must be a whole number, not {value!r}")
        raise  # unreachable: _fail exits


def _run_id(value: str) -> int:
    return _number("--run", value)


@dividends_cli.command("approve")
@click.option("--run", "run", required=True, help="The run's number.")
@click.option("--staff", "email", required=True, help="The approving staff member's email.")
def approve_cmd(run: str, email: str) -> None:
    """Approve a draft run (not by who declared it)."""
    try:
        approved = dividend_approve(run_id=_run_id(run), staff=_staff(email))
    except SaccoError as exc:
        _fail(str(exc))
    else:
        click.echo(_summary(approved))


@dividends_cli.command("cancel")
@click.option("--run", "run", required=True, help="The run's number.")
@click.option("--staff", "email", required=True, help="The staff member's email.")
def cancel_cmd(run: str, email: str) -> None:
    """Cancel a draft run (the year may then be declared again)."""
    try:
        cancelled = dividend_cancel(run_id=_run_id(run), staff=_staff(email))
    except SaccoError as exc:
        _fail(str(exc))
    else:
        click.echo(_summary(cancelled))


@dividends_cli.command("post")
@click.option("--run", "run", required=True, help="The run's number.")
@click.option("--value-date", required=True, metavar="YYYY-MM-DD", help="The payment's date.")
@click.option("--workers", type=int, default=None, help="Partitions over N workers (0: here).")
def post_cmd(run: str, value_date: str, workers: int | None) -> None:
    """Pay an approved run; run again to finish one that stopped (nobody is paid twice)."""
    try:
        day = date.fromisoformat(value_date)
    except ValueError:
        _fail(f"--value-date must be YYYY-MM-DD, not {value_date!r}")
        return
    try:
        posted = dividend_post(run_id=_run_id(run), value_date=day, workers=workers)
    except SaccoError as exc:
        _fail(str(exc))
    else:
        click.echo(_summary(posted))
        if posted.status != "posted":
            _fail(posted.note or "the run is not fully paid")


@dividends_cli.command("report")
@click.option("--run", "run", required=True, help="The run's number.")
@click.option("--format", "fmt", default="csv", show_default=True, metavar="|".join(FORMATS))
@click.option("--out", default="-", show_default=True, help="File to write ('-': stdout).")
def report_cmd(run: str, fmt: str, out: str) -> None:
    """The run's lines with totals and the journal's totals under them."""
    try:
        content = dividend_report(_run_id(run), fmt)
    except SaccoError as exc:
        _fail(str(exc))
        return
    if out == "-":
        sys.stdout.buffer.write(content)
        sys.stdout.buffer.flush()
    else:
        with open(out, "wb") as handle:
            handle.write(content)
        click.echo(f"wrote {out} ({len(content):,} bytes)")
