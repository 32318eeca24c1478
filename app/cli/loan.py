"""`sacco loan ...`: loan tools for the command line."""

from __future__ import annotations

import json
from datetime import date, datetime

import click
from flask.cli import AppGroup

from app.clock import business_today
from app.services.loan_schedule import Schedule, ScheduleError, schedule_build

loan_cli = AppGroup("loan", help="Loan tools: repayment schedules.")

INTEREST_METHODS = {"declining": "declining", "flat": "flat"}
AMORTIZATIONS = {
    "equal-installments": "equal_installments",
    "equal-principal": "equal_principal",
}
FREQUENCIES = {"monthly": "monthly", "weekly": "weekly"}
HEADERS = ("#", "due date", "principal", "interest", "total", "balance")
ROW_KEYS = ("number", "due_date", "principal", "interest", "total", "balance")


# Every option is read as text and checked here rather than by click's types, so bad
# input of any kind gives the same single `error:` line and exit code 1.
@loan_cli.command("schedule", with_appcontext=False)
@click.option("--principal", metavar="AMOUNT", help="Amount lent (required).")
@click.option("--annual-rate", metavar="PERCENT", help="Yearly rate; 12 means 12% (required).")
@click.option("--installments", metavar="N", help="Number of installments (required).")
@click.option(
    "--interest-method",
    default="declining",
    show_default=True,
    metavar="declining|flat",
)
@click.option(
    "--amortization",
    default="equal-installments",
    show_default=True,
    metavar="equal-installments|equal-principal",
)
@click.option(
    "--multiple-of",
    metavar="N",
    help="Round the equal installment to a multiple (e.g. 1 for whole shillings).",
)
@click.option("--start-date", metavar="YYYY-MM-DD", help="Disbursement date [default: today].")
@click.option("--frequency", default="monthly", show_default=True, metavar="monthly|weekly")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def schedule_command(
    principal: str | None,
    annual_rate: str | None,
    installments: str | None,
    interest_method: str,
    amortization: str,
    multiple_of: str | None,
    start_date: str | None,
    frequency: str,
    as_json: bool,
) -> None:
    """Print the repayment schedule of a loan."""
    try:
        schedule = schedule_build(
            principal=_required("--principal", principal),
            annual_rate=_required("--annual-rate", annual_rate),
            installments=_parse_int("--installments", _required("--installments", installments)),
            interest_method=_choice("--interest-method", interest_method, INTEREST_METHODS),
            amortization=_choice("--amortization", amortization, AMORTIZATIONS),
            frequency=_choice("--frequency", frequency, FREQUENCIES),
            multiple_of=multiple_of,
            start_date=_parse_date(start_date) if start_date is not None else business_today(),
        )
    except ScheduleError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    if as_json:
        click.echo(json.dumps(schedule.as_dict()))
    else:
        click.echo(format_table(schedule))


def format_table(schedule: Schedule) -> str:
    """The schedule as aligned columns with a totals line."""
    data = schedule.as_dict()
    lines: list[tuple[str, ...]] = [HEADERS]
    for row in data["installments"]:
        lines.append(tuple(str(row[key]) for key in ROW_KEYS))
    totals = data["totals"]
    lines.append(("total", "", totals["principal"], totals["interest"], totals["total"], ""))
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    rendered = []
    for line in lines:
        cells = [line[0].rjust(widths[0]), line[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(line[2:], widths[2:], strict=True)]
        rendered.append("  ".join(cells).rstrip())
    return "\n".join(rendered)


def _required(option: str, value: str | None) -> str:
    if value is None:
        raise ScheduleError(f"{option} is required")
    return value


def _parse_int(option: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ScheduleError(f"{option} must be a whole number, not {value!r}") from None


def _choice(option: str, value: str, choices: dict[str, str]) -> str:
    if value not in choices:
        raise ScheduleError(f"{option} must be one of {'|'.join(choices)}, not {value!r}")
    return choices[value]


def _parse_date(value: str) -> date:
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%d").date()
    except ValueError:
        raise ScheduleError(f"--start-date must be YYYY-MM-DD, not {value!r}") from None
