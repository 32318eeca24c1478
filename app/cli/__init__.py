"""The `sacco` command group (a Flask CLI group; `flask --app wsgi ...` works too)."""

from __future__ import annotations

from flask import Flask
from flask.cli import FlaskGroup


def register_cli(app: Flask) -> None:
    from app.cli.demo import demo_data
    from app.cli.dial import dial_cmd
    from app.cli.dividends import dividends_cli
    from app.cli.imports import import_cli
    from app.cli.jobs import jobs_cli
    from app.cli.ledger import ledger_cli
    from app.cli.mpesa import mpesa_cli
    from app.cli.people import member_cli, staff_cli
    from app.cli.runtime import scheduler_cmd, up_cmd, worker_cmd

    for command in (
        member_cli,
        staff_cli,
        ledger_cli,
        mpesa_cli,
        jobs_cli,
        import_cli,
        demo_data,
        up_cmd,
        worker_cmd,
        scheduler_cmd,
        dial_cmd,
        dividends_cli,
    ):
        app.cli.add_command(command)
    try:
        from app.cli.loan import loan_cli
    except ImportError:  # pragma: no cover - the loan commands arrive with the loan engine
        pass
    else:
        app.cli.add_command(loan_cli)


def _create_app() -> Flask:
    from app import create_app

    return create_app()


def main() -> None:
    cli = FlaskGroup(
        create_app=_create_app,
        add_default_commands=True,
        help="The SACCO channel server: run it, manage members, staff, loans and jobs.",
    )
    cli.main(prog_name="sacco")
