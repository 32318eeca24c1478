"""`sacco import ...`: bring data from another system in."""

from __future__ import annotations

from datetime import date, datetime

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import func, select

from app.cli.people import fail
from app.extensions import db
from app.models import StaffUser
from app.services.loan_import import MAX_ROWS, LoanBookError, loan_book_import, loan_book_open
from app.services.loans import loan_default_officer

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
@click.option(
    "--officer",
    default=None,
    metavar="EMAIL",
    help="The loan officer who follows the imported loans up [default: DEFAULT_LOAN_OFFICER].",
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=MAX_ROWS,
    show_default=True,
    help="Refuse a book with more loans than this (the console's upload keeps the default).",
)
def loan_book_cmd(
    file: str, skip_bad: bool, as_of_date: str | None, officer: str | None, max_rows: int
) -> None:
    """Import a loan book from FILE (.csv or .xlsx, first sheet).

    \b
    Columns (any order, any case): Customer ID, Name, Phone, Product,
    Principal, Rate, Term, Disbursed Date, Status.
    A filled-in example: templates/loan-book-template.csv.

    Product is a product code or name; Rate a yearly percent; Term in the
    product's periods; Disbursed Date YYYY-MM-DD or DD/MM/YYYY; Status one of
    active, arrears, closed. Every row is checked first: bad rows are listed
    as "line N: reason" and nothing is imported unless --skip-bad is given.
    Importing the same file again creates nothing twice. Loans in arrears
    show their days late at once (the nightly arrears rule runs on them).
    A book holds at most 20,000 loans (--max-rows) and, as XLSX, unpacks to
    at most 25 MB.
    """
    as_of = _as_of(as_of_date)
    officer_id = _officer_id(officer)
    db.session.rollback()  # end that read: SQLite holds its write lock for any transaction
    try:
        # Streamed twice (checked, then written): a long book is never held in memory.
        book = loan_book_open(path=file, max_rows=max_rows)
        sum(1 for _ in book.rows())  # the row cap, met before a row is checked
        report = loan_book_import(rows=book, skip_bad=skip_bad, as_of=as_of, officer_id=officer_id)
    except LoanBookError as exc:
        fail(str(exc))
        return
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


def _officer_id(email: str | None) -> int | None:
    if email is None:
        default = loan_default_officer()
        return default.id if default is not None else None
    staff = db.session.scalar(
        select(StaffUser).where(
            func.lower(StaffUser.email) == email.strip().lower(), StaffUser.active.is_(True)
        )
    )
    if staff is None:
        fail(f"--officer {email}: no active staff member has that email")
        raise SystemExit(1)  # not reached: fail() exits
    return staff.id


def _as_of(value: str | None) -> date:
    if value is None:
        return datetime.now(current_app.config["SETTINGS"].tz).date()
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%d").date()
    except ValueError:
        fail(f"--as-of-date must be YYYY-MM-DD, not {value!r}")
        raise SystemExit(1) from None  # not reached: fail() exits
