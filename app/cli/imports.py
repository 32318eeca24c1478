"""`sacco import ...`: bring data from another system in."""

from __future__ import annotations

from datetime import date, datetime

import click
from flask import current_app
from flask.cli import AppGroup

from app.cli.people import fail
from app.services.loan_import import LoanBookError, loan_book_import, loan_book_read

import_cli = AppGroup("import", help="Bring data from another system in: loan books.")


@import_cli.command("loan-book")
@click.argument("file", metavar="FILE")
@click.option("--skip-bad", is_flag=True, help="Import the good rows even when some are bad.")
@click.option(
    "--as-of-date",
    default=None,
    metavar="YYYY-MM-DD",
    help="The date the book is true on [default: today]. Installments due before it are "
    "paid for active loans and unpaid for loans in arrears.",
)
def loan_book_cmd(file: str, skip_bad: bool, as_of_date: str | None) -> None:
    """Import a loan book from FILE (.csv or .xlsx, first sheet).

    \b
    Columns (any order, any case): Customer ID, Name, Phone, Product,
    Principal, Rate, Term, Disbursed Date, Status.
    A filled-in example: templates/loan-book-template.csv.

    Product is a product code or name; Rate a yearly percent; Term in the
    product's periods; Disbursed Date YYYY-MM-DD or DD/MM/YYYY; Status one of
    active, arrears, closed. Every row is checked first: bad rows are listed
    as "line N: reason" and nothing is imported unless --skip-bad is given.
    Importing the same file again creates nothing twice.
    """
    as_of = _as_of(as_of_date)
    try:
        rows = loan_book_read(path=file)
    except LoanBookError as exc:
        fail(str(exc))
        return
    report = loan_book_import(rows=rows, skip_bad=skip_bad, as_of=as_of)
    for problem in report.bad_rows:
        click.echo(str(problem), err=True)
    if not report.written:
        fail(
            f"{len(report.bad_rows)} bad row(s), nothing imported "
            "(fix them, or use --skip-bad to import the other rows)"
        )
        return
    click.echo(report.summary)
    if report.error:
        fail(f"import stopped: {report.error}; run the same file again to import the rest")


def _as_of(value: str | None) -> date:
    if value is None:
        return datetime.now(current_app.config["SETTINGS"].tz).date()
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%d").date()
    except ValueError:
        fail(f"--as-of-date must be YYYY-MM-DD, not {value!r}")
        raise SystemExit(1) from None  # not reached: fail() exits
