"""`sacco ledger check`."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.services.ledger import ledger_check

ledger_cli = AppGroup("ledger", help="Check the journal.")


@ledger_cli.command("check")
@click.option("--fix", is_flag=True, help="Rewrite cached balances from the journal.")
def ledger_check_cmd(fix: bool) -> None:
    """Rebuild every balance from the journal; exit 1 on any mismatch."""
    problems = ledger_check(fix=fix)
    for problem in problems:
        click.echo(f"{problem.what}: {problem.detail}", err=True)
    if problems:
        fixed = " (balances rewritten)" if fix else ""
        click.echo(f"ledger check: {len(problems)} problem(s){fixed}", err=True)
        raise SystemExit(1)
    click.echo("ledger check: ok")
