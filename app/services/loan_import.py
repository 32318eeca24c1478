"""Loan book upload: bring another system's running loans into the SACCO.

A loan book (CSV or XLSX, one loan per row) is read whole, every row is checked before
anything is written, and only then are members, loans, schedules and the balances brought
forward written, in batches. Checking first means a bad file writes nothing; batches keep
10,000 rows fast while every loan still lands atomically with its schedule and its entry.

Importing is idempotent: each loan carries a key built from the row (customer, date,
product, principal) in `Loan.external_ref`, and its opening entry is keyed by it too, so a
second run of the same file, or a rerun after a failure, only writes what is missing.

Decisions where the issue is silent:

- A row whose loan is already imported is skipped on the fields that make its key alone:
  a product range tightened since the first run does not turn old loans into bad rows.
- Rows are checked against the product's rate and term ranges, not its amount limits:
  a book holds loans made under older limits, and the amount is history, not a request.
- Inactive products are accepted for the same reason (a retired product's loans still run).
- "active" needs something still owed after the as-of date and "arrears" something
  already due before it; a row that says otherwise contradicts its own dates and is bad.
- Fees were taken when the loan was paid out, in the old system: `fee_amount` is zero and
  no fee is brought forward. Closed loans get no entry and no accounts.
- A member found by phone whose `external_ref` is empty is used as it is (they joined here
  first); one holding another customer's id is a bad row.
- Speed (10,000 rows in well under a minute): members, loans, installments and accounts
  are inserted a batch at a time, as the rows `member_add` and `loan_account` would make;
  only the opening entries go one per loan through `journal_post`. Calling `member_add`
  and `loan_account` per row costs 3-4 ms a member and 1 ms an account (a read and a
  savepoint each), which alone put 10,000 rows past a minute. tests/test_loan_import.py
  checks that those services find the imported accounts rather than making new ones.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import lazyload

from app.errors import SaccoError
from app.extensions import db
from app.models import Account, Installment, Loan, LoanProduct, Member, StaffUser
from app.money import ZERO, MoneyError, money_input, to_decimal
from app.phone import PhoneError, normalise_phone
from app.services.audit import audit_record
from app.services.ledger import MEMBER_ACCOUNTS as LEDGER_MEMBER_ACCOUNTS
from app.services.ledger import Line, credit, debit, gl_account, journal_post
from app.services.loan_schedule import (
    MAX_ANNUAL_RATE,
    Schedule,
    ScheduleError,
    ScheduleRow,
    schedule_build,
)
from app.services.loans import RECEIVABLE
from app.services.members import member_number
from app.services.permissions import permission_require

COLUMNS = (
    "Customer ID",
    "Name",
    "Phone",
    "Product",
    "Principal",
    "Rate",
    "Term",
    "Disbursed Date",
    "Status",
)
STATUSES = {
    "active": "active",
    "current": "active",
    "performing": "active",
    "arrears": "arrears",
    "overdue": "arrears",
    "late": "arrears",
    "closed": "closed",
    "paid": "closed",
    "repaid": "closed",
}
# Rows per transaction. journal_post opens a savepoint per entry and every entry moves the
# one GL-OPENING row: PostgreSQL keeps 64 subtransactions per transaction in memory and
# walks that row's versions on each update, so short batches measured fastest there.
BATCH_SIZE = 50
ACTOR = "import"
CUSTOMER_ID_MAX = 40  # Member.external_ref
LOAN_REF_MAX = 60  # Loan.external_ref
NAME_MAX = 120
# The accounts member_add opens for every member, coded as ledger.member_account codes them.
MEMBER_ACCOUNTS = tuple(
    (prefix, kind, label) for kind, (prefix, label) in LEDGER_MEMBER_ACCOUNTS.items()
)


class LoanBookError(SaccoError):
    """The file as a whole cannot be used (format, encoding, header); nothing was written."""


@dataclass(frozen=True)
class BookRow:
    """One data row as read: `line` is where it sits in the file (the header is line 1)."""

    line: int
    values: dict[str, object]  # canonical column name -> cell (text, number or date)


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ImportReport:
    imported: int = 0
    members_created: int = 0
    already_imported: int = 0
    bad_rows: list[RowError] = field(default_factory=list)
    written: bool = False  # False when bad rows (without skip_bad) stopped the import
    error: str | None = None  # a batch failed; everything committed before it stays

    @property
    def summary(self) -> str:
        bad = len(self.bad_rows) if self.written else 0
        return (
            f"imported {self.imported} loans ({self.members_created} members created), "
            f"skipped {self.already_imported} already imported, {bad} bad rows skipped"
        )


# --- reading ---------------------------------------------------------------------------


def loan_book_read(*, path: str | Path) -> list[BookRow]:
    """The data rows of a CSV or XLSX loan book; LoanBookError if the file is unusable."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = _csv_table(path)
    elif suffix == ".xlsx":
        table = _xlsx_table(path)
    else:
        raise LoanBookError(f"{path.name}: unknown format (expected a .csv or .xlsx file)")
    try:
        return _book_rows(table)
    except OSError as exc:
        raise LoanBookError(f"cannot read {path.name}: {exc.strerror or exc}") from exc


def _csv_table(path: Path) -> Iterator[tuple[int, Sequence[object]]]:
    try:
        # utf-8-sig: Excel writes a byte-order mark at the start of "CSV UTF-8" files.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            for cells in reader:
                yield reader.line_num, cells
    except UnicodeDecodeError as exc:
        raise LoanBookError(f"cannot read {path.name}: not UTF-8 text") from exc
    except csv.Error as exc:
        raise LoanBookError(f"cannot read {path.name}: {exc}") from exc


def _xlsx_table(path: Path) -> Iterator[tuple[int, Sequence[object]]]:
    from openpyxl import load_workbook  # only XLSX uploads pay for the import

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for a bad file
        raise LoanBookError(f"cannot read {path.name}: not an XLSX workbook") from exc
    try:
        rows = enumerate(workbook.worksheets[0].iter_rows(), start=1)
        while True:
            try:
                number, cells = next(rows)
                values = [_xlsx_value(cell) for cell in cells]
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - a damaged sheet, in any of many ways
                raise LoanBookError(f"cannot read {path.name}: damaged worksheet") from exc
            yield number, values
    finally:
        workbook.close()


def _xlsx_value(cell: object) -> object:
    """A cell as the book's author sees it: a 12% cell holds 0.12 but means a rate of 12."""
    value = getattr(cell, "value", None)
    number_format = getattr(cell, "number_format", None) or ""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and "%" in number_format:
        return to_decimal(str(value)) * 100
    return value


def _book_rows(table: Iterable[tuple[int, Sequence[object]]]) -> list[BookRow]:
    rows: list[BookRow] = []
    positions: dict[str, int] | None = None
    for line, cells in table:
        if positions is None:
            positions = _header(cells)
            continue
        texts = [_text(cell) for cell in cells]
        if not any(texts):
            continue  # blank lines, and the empty rows spreadsheets keep at the end
        values = {
            column: cells[index] if index < len(cells) and cells[index] is not None else ""
            for column, index in positions.items()
        }
        rows.append(BookRow(line=line, values=values))
    if positions is None:
        raise LoanBookError("the file is empty (expected a header row: " + ", ".join(COLUMNS) + ")")
    return rows


def _header(cells: Sequence[object]) -> dict[str, int]:
    found: dict[str, int] = {}
    for index, cell in enumerate(cells):
        found.setdefault(_text(cell).lower(), index)
    missing = [column for column in COLUMNS if column.lower() not in found]
    if missing:
        raise LoanBookError(
            f"missing column{'s' if len(missing) > 1 else ''}: {', '.join(missing)} "
            f"(the header must have: {', '.join(COLUMNS)})"
        )
    return {column: found[column.lower()] for column in COLUMNS}


def _text(value: object) -> str:
    """A cell as text; whole-number floats lose their ".0" (a phone typed into Excel)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Decimal):
        return f"{value.normalize():f}" if value == value.to_integral_value() else f"{value:f}"
    return str(value).strip()


# --- checking --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Product:
    """A product's terms, copied once so batches never reload expired ORM objects."""

    id: int
    code: str
    name: str
    frequency: str
    interest_method: str
    amortization: str
    installment_multiple: Decimal | None
    min_rate: Decimal | None
    max_rate: Decimal | None
    min_term: int
    max_term: int

    @property
    def periods(self) -> str:
        return "months" if self.frequency == "monthly" else "weeks"


@dataclass(frozen=True)
class _KnownMember:
    id: int
    member_no: str | None
    external_ref: str | None


@dataclass(frozen=True)
class _Planned:
    """A checked row, with everything the write phase needs and no database objects."""

    line: int
    customer_id: str
    name: str
    phone: str
    member_id: int | None  # None: the member is created from the first row of this customer
    product: _Product
    principal: Decimal
    rate: Decimal
    term: int
    disbursed_on: date
    status: str  # active | arrears | closed (the book's words, normalised)
    ref: str
    schedule: Schedule


@dataclass
class _FileCustomer:
    phone: str
    line: int
    member_id: int | None


@dataclass
class BookCheck:
    """What checking the whole file found: the rows to write and the ones refused."""

    planned: list[_Planned] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    already_imported: int = 0
    already_lines: list[int] = field(default_factory=list)  # for a preview of every row


class _Checker:
    """Checks rows one by one against the database as it was read once at the start.

    Members created by earlier rows of the same file are tracked here, so a customer on
    two rows is one member and a phone given for two customers is caught before writing.
    """

    def __init__(self, as_of: date) -> None:
        self.as_of = as_of
        products = [
            _Product(
                id=p.id,
                code=p.code,
                name=p.name,
                frequency=p.frequency,
                interest_method=p.interest_method,
                amortization=p.amortization,
                installment_multiple=p.installment_multiple,
                min_rate=p.min_rate,
                max_rate=p.max_rate,
                min_term=p.min_term,
                max_term=p.max_term,
            )
            for p in db.session.scalars(select(LoanProduct).order_by(LoanProduct.id))
        ]
        # Codes win over names: a product named like another's code is found by the code.
        self.products = {p.name.strip().lower(): p for p in products}
        self.products.update({p.code.strip().lower(): p for p in products})
        self.by_ref: dict[str, _KnownMember] = {}
        self.by_phone: dict[str, _KnownMember] = {}
        for member_id, member_no, phone, ref in db.session.execute(
            select(Member.id, Member.member_no, Member.phone, Member.external_ref)
        ):
            known = _KnownMember(member_id, member_no, ref)
            self.by_phone[phone] = known
            if ref is not None:
                self.by_ref[ref] = known
        self.imported_refs: set[str] = set(
            db.session.scalars(select(Loan.external_ref).where(Loan.external_ref.like("import:%")))
        )
        self.refs_in_file: dict[str, int] = {}
        self.customers: dict[str, _FileCustomer] = {}
        self.phones: dict[str, tuple[str, int]] = {}
        self.result = BookCheck()

    def check(self, row: BookRow) -> None:
        v = row.values
        problems: list[str] = []
        customer_id = _text(v["Customer ID"])
        if not customer_id:
            problems.append("Customer ID is required")
        elif len(customer_id) > CUSTOMER_ID_MAX:
            problems.append(f"Customer ID is longer than {CUSTOMER_ID_MAX} characters")
        product = self._product(v["Product"], problems)
        principal = _principal(v["Principal"], problems)
        disbursed_on = self._disbursed(v["Disbursed Date"], problems)

        ref = None
        if not problems and product and principal is not None and disbursed_on is not None:
            ref = f"import:{customer_id}:{disbursed_on.isoformat()}:{product.code}:{principal:f}"
            if ref in self.imported_refs:
                self.result.already_imported += 1
                self.result.already_lines.append(row.line)
                return
            if len(ref) > LOAN_REF_MAX:
                problems.append(
                    f"Customer ID is too long to key the loan (at most {LOAN_REF_MAX} characters "
                    "for customer, date, product and principal together)"
                )
            elif ref in self.refs_in_file:
                problems.append(
                    f"the same loan (customer, date, product, principal) as line "
                    f"{self.refs_in_file[ref]}"
                )
            else:
                self.refs_in_file[ref] = row.line

        name = " ".join(_text(v["Name"]).split())
        if not name:
            problems.append("Name is required")
        elif len(name) > NAME_MAX:
            problems.append(f"Name is longer than {NAME_MAX} characters")
        phone = _phone(v["Phone"], problems)
        rate = self._rate(v["Rate"], product, problems)
        term = self._term(v["Term"], product, problems)
        status = _status(v["Status"], problems)

        member_id = None
        if customer_id and phone and len(customer_id) <= CUSTOMER_ID_MAX:
            member_id = self._member(customer_id, phone, row.line, problems)

        if not problems:
            # Every field parsed (the asserts only tell the type checker so).
            assert product and principal is not None and rate is not None and term is not None
            assert disbursed_on is not None and status is not None and ref is not None
            schedule = self._schedule(product, principal, rate, term, disbursed_on, problems)
            if schedule is not None:
                self._status_fits(status, schedule, problems)
            if schedule is not None and not problems:
                self.result.planned.append(
                    _Planned(
                        line=row.line,
                        customer_id=customer_id,
                        name=name,
                        phone=phone,
                        member_id=member_id,
                        product=product,
                        principal=principal,
                        rate=rate,
                        term=term,
                        disbursed_on=disbursed_on,
                        status=status,
                        ref=ref,
                        schedule=schedule,
                    )
                )
                return
        self.result.errors.append(RowError(row.line, "; ".join(problems)))

    def _product(self, value: object, problems: list[str]) -> _Product | None:
        text = _text(value)
        if not text:
            problems.append("Product is required")
            return None
        product = self.products.get(text.lower())
        if product is None:
            problems.append(f"unknown product {text!r}")
        return product

    def _disbursed(self, value: object, problems: list[str]) -> date | None:
        day = _date(value)
        if day is None:
            problems.append(
                f"Disbursed Date {_text(value)!r} is not a date (use YYYY-MM-DD or DD/MM/YYYY)"
                if _text(value)
                else "Disbursed Date is required"
            )
        elif day > self.as_of:
            problems.append(f"Disbursed Date {day.isoformat()} is after {self.as_of.isoformat()}")
            return None
        return day

    def _rate(self, value: object, product: _Product | None, problems: list[str]) -> Decimal | None:
        text = _text(value).removesuffix("%").strip()
        if not text:
            problems.append("Rate is required")
            return None
        try:
            rate = to_decimal(text)
        except MoneyError:
            problems.append(f"Rate {_text(value)!r} is not a number")
            return None
        low = product.min_rate if product and product.min_rate is not None else ZERO
        high = product.max_rate if product and product.max_rate is not None else MAX_ANNUAL_RATE
        low, high = max(low, ZERO), min(high, MAX_ANNUAL_RATE)
        if not low <= rate <= high:
            where = f" for {product.code}" if product else ""
            problems.append(
                f"Rate {_number(rate)}% is outside {_number(low)}-{_number(high)}%{where}"
            )
            return None
        return rate

    def _term(self, value: object, product: _Product | None, problems: list[str]) -> int | None:
        text = _text(value)
        if not text:
            problems.append("Term is required")
            return None
        try:
            number = to_decimal(text)
        except MoneyError:
            number = None
        if number is None or number != number.to_integral_value():
            problems.append(f"Term {text!r} is not a whole number of periods")
            return None
        term = int(number)
        if product and not product.min_term <= term <= product.max_term:
            problems.append(
                f"Term {term} is outside {product.min_term}-{product.max_term} "
                f"{product.periods} for {product.code}"
            )
            return None
        if term < 1:
            problems.append(f"Term must be at least 1, not {term}")
            return None
        return term

    def _member(self, customer_id: str, phone: str, line: int, problems: list[str]) -> int | None:
        known = self.by_ref.get(customer_id)
        if known is not None:
            return known.id  # the customer id decides; their phone may have changed since
        seen = self.customers.get(customer_id)
        if seen is not None:
            if seen.phone != phone:
                problems.append(
                    f"Customer ID {customer_id} has phone {seen.phone} on line {seen.line}, "
                    f"not {phone}"
                )
            return seen.member_id
        other = self.phones.get(phone)
        if other is not None:
            problems.append(f"phone {phone} is given for Customer ID {other[0]} on line {other[1]}")
            return None
        holder = self.by_phone.get(phone)
        if holder is not None and holder.external_ref not in (None, customer_id):
            problems.append(
                f"phone {phone} belongs to member {holder.member_no} "
                f"(Customer ID {holder.external_ref})"
            )
            return None
        member_id = holder.id if holder is not None else None
        self.customers[customer_id] = _FileCustomer(phone, line, member_id)
        self.phones[phone] = (customer_id, line)
        return member_id

    def _schedule(
        self,
        product: _Product,
        principal: Decimal,
        rate: Decimal,
        term: int,
        start: date,
        problems: list[str],
    ) -> Schedule | None:
        try:
            return schedule_build(
                principal=principal,
                annual_rate=rate,
                installments=term,
                interest_method=product.interest_method,
                amortization=product.amortization,
                frequency=product.frequency,
                multiple_of=product.installment_multiple,
                start_date=start,
            )
        except ScheduleError as exc:
            problems.append(str(exc))
            return None

    def _status_fits(self, status: str, schedule: Schedule, problems: list[str]) -> None:
        as_of = self.as_of.isoformat()
        if status == "active":
            owed = sum((r.total for r in schedule.rows if r.due_date >= self.as_of), ZERO)
            if owed == 0:
                problems.append(
                    f"Status is active but every installment fell due before {as_of} "
                    "(closed or arrears?)"
                )
        elif status == "arrears" and schedule.rows[0].due_date >= self.as_of:
            first = schedule.rows[0].due_date.isoformat()
            problems.append(
                f"Status is arrears but the first installment falls due on {first}, "
                f"not before {as_of}"
            )


def _principal(value: object, problems: list[str]) -> Decimal | None:
    text = _text(value)
    if not text:
        problems.append("Principal is required")
        return None
    try:
        return money_input(text, "Principal")
    except MoneyError as exc:
        problems.append(f"{exc} ({text})")
        return None


def _phone(value: object, problems: list[str]) -> str:
    text = _text(value)
    if not text:
        problems.append("Phone is required")
        return ""
    try:
        return normalise_phone(text)
    except PhoneError as exc:
        problems.append(str(exc))
        return ""


def _status(value: object, problems: list[str]) -> str | None:
    text = _text(value)
    status = STATUSES.get(text.lower())
    if status is None:
        problems.append(
            f"Status {text!r} is not one of active, arrears, closed"
            if text
            else "Status is required (active, arrears or closed)"
        )
    return status


def _date(value: object) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = _text(value)
    for pattern in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    return None


def _number(value: Decimal) -> str:
    """A number as a person typed it: 12, 12.5, -100 (no exponent, no trailing zeros)."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def loan_book_check(*, rows: Iterable[BookRow], as_of: date) -> BookCheck:
    """Check every row against the products, the members and the loans already imported."""
    checker = _Checker(as_of)
    for row in rows:
        checker.check(row)
    return checker.result


@dataclass(frozen=True)
class RowResult:
    """One row of a book as a preview shows it: what it says and what importing would do."""

    line: int
    values: dict[str, str]  # column -> the cell as text
    outcome: str  # "ok" (would be imported) | "imported" (already, skipped) | "bad"
    reason: str = ""


def loan_book_validate(*, rows: Sequence[BookRow], as_of: date) -> list[RowResult]:
    """Every row's result, by the very check the import makes first: writes nothing.

    (The console's upload preview; `loan_book_import` on the same rows and date imports
    exactly the rows marked "ok".)"""
    checked = loan_book_check(rows=rows, as_of=as_of)
    db.session.rollback()  # only reads: leave no transaction open
    reasons = {error.line: error.reason for error in checked.errors}
    already = set(checked.already_lines)
    results = []
    for row in rows:
        values = {column: _text(row.values.get(column)) for column in COLUMNS}
        if row.line in reasons:
            results.append(RowResult(row.line, values, "bad", reasons[row.line]))
        elif row.line in already:
            results.append(RowResult(row.line, values, "imported", "imported before; skipped"))
        else:
            results.append(RowResult(row.line, values, "ok"))
    return results


# A filled-in example for the downloadable templates (templates/loan-book-template.csv
# holds the same rows for the CLI).
TEMPLATE_ROWS: tuple[tuple[str, ...], ...] = (
    (
        "CUST-0001",
        "Wanjiku Kamau",
        "0711223344",
        "DEV",
        "50000.00",
        "12",
        "36",
        "2025-06-15",
        "active",
    ),
    (
        "CUST-0002",
        "Otieno Ochieng",
        "0722334455",
        "Instant Loan",
        "2000",
        "90",
        "1",
        "28/02/2026",
        "arrears",
    ),
)


# --- writing ---------------------------------------------------------------------------


def loan_book_import(
    *, rows: Iterable[BookRow], skip_bad: bool, as_of: date, batch_size: int = BATCH_SIZE
) -> ImportReport:
    """Check the whole book, then write it in batches (each batch one transaction).

    With bad rows and no `skip_bad` nothing is written. A batch that fails is rolled back
    and the import stops with `report.error` set; earlier batches stay, complete loan by
    loan, and running the same file again writes only the rest.
    """
    checked = loan_book_check(rows=rows, as_of=as_of)
    db.session.rollback()  # end the read transaction before writing (SQLite locks on write)
    report = ImportReport(already_imported=checked.already_imported, bad_rows=checked.errors)
    if checked.errors and not skip_bad:
        return report
    report.written = True
    created: dict[str, int] = {}  # customer id -> member id, for members committed so far
    planned = checked.planned
    for start in range(0, len(planned), batch_size):
        batch = planned[start : start + batch_size]
        try:
            new_members = _write_batch(batch, created, as_of)
            db.session.commit()
        except (SQLAlchemyError, ValueError) as exc:
            db.session.rollback()
            report.error = (
                f"rows on lines {batch[0].line}-{batch[-1].line} were not imported: "
                f"{type(exc).__name__}: {_first_line(exc)}"
            )
            return report
        created.update(new_members)
        report.imported += len(batch)
        report.members_created += len(new_members)
    return report


def loan_book_import_file(
    *, path: str | Path, as_of: date, skip_bad: bool, staff: StaffUser, name: str | None = None
) -> ImportReport:
    """The console's upload: the CLI's import (`loan_book_read` then `loan_book_import`),
    for a staff member allowed to import, with an audit row saying who imported which file
    and what came of it (the rows themselves are audited by the import, as from the CLI)."""
    permission_require(staff, "loan.import")
    rows = loan_book_read(path=path)
    report = loan_book_import(rows=rows, skip_bad=skip_bad, as_of=as_of)
    audit_record(
        actor=f"staff:{staff.email}",
        action="loan_book.import",
        object_type="loan_book",
        object_id=(name or Path(path).name)[:30],
        after={
            "as_of": as_of.isoformat(),
            "skip_bad": skip_bad,
            "written": report.written,
            "imported": report.imported,
            "members_created": report.members_created,
            "already_imported": report.already_imported,
            "bad_rows": len(report.bad_rows),
            "error": report.error,
        },
        note=report.summary if report.written else "bad rows: nothing imported",
    )
    db.session.commit()
    return report


def _first_line(exc: Exception) -> str:
    """The database's own words, without the statement and its parameters."""
    cause = getattr(exc, "orig", None) or exc
    return (str(cause).strip().splitlines() or [type(exc).__name__])[0]


def _write_batch(batch: list[_Planned], created: dict[str, int], as_of: date) -> dict[str, int]:
    """Members, loans, installments, accounts, audit rows and opening entries for a batch.

    Adds to the session without committing; returns the members it created. Rows are
    inserted a stage at a time (all members, all loans, all installments, all accounts of
    the batch in one statement each) so the round trips grow with the batches; only the
    opening entries go one by one, through `journal_post`, the ledger's only writer.
    """
    new_members = _members_insert(batch, created)
    member_ids = created | new_members

    loan_ids = list(
        db.session.scalars(
            insert(Loan.__table__).returning(Loan.id, sort_by_parameter_order=True),
            [
                {
                    "member_id": row.member_id or member_ids[row.customer_id],
                    "product_id": row.product.id,
                    "status": "closed" if row.status == "closed" else "active",
                    "channel": "import",
                    "principal": row.principal,
                    "annual_rate": row.rate,
                    "term": row.term,
                    "frequency": row.product.frequency,
                    "interest_method": row.product.interest_method,
                    "amortization": row.product.amortization,
                    "installment_multiple": row.product.installment_multiple,
                    "fee_amount": ZERO,
                    "disbursed_on": row.disbursed_on,
                    "closed_on": (
                        _paid_on(row.schedule.rows[-1], as_of) if row.status == "closed" else None
                    ),
                    "external_ref": row.ref,
                }
                for row in batch
            ],
        )
    )
    loans = [
        _Written(
            row=row,
            id=loan_id,
            loan_no=loan_number(loan_id),
            member_id=row.member_id or member_ids[row.customer_id],
        )
        for row, loan_id in zip(batch, loan_ids, strict=True)
    ]
    db.session.execute(update(Loan), [{"id": w.id, "loan_no": w.loan_no} for w in loans])
    db.session.execute(
        insert(Installment.__table__),
        [item for w in loans for item in _installments(w.id, w.row, as_of)],
    )
    for w in loans:
        audit_record(
            actor=ACTOR,
            action="loan.import",
            object_type="loan",
            object_id=w.loan_no,
            after={
                "status": "closed" if w.row.status == "closed" else "active",
                "book_status": w.row.status,
                "principal": w.row.principal,
                "rate": w.row.rate,
                "term": w.row.term,
                "product": w.row.product.code,
                "disbursed_on": w.row.disbursed_on.isoformat(),
                "external_ref": w.row.ref,
            },
            note=f"loan book line {w.row.line}",
        )

    open_loans = [w for w in loans if w.row.status != "closed"]
    balances = {w.id: _outstanding(w.row, as_of) for w in open_loans}
    accounts = _accounts_insert(
        [
            _loan_account_row(w, component)
            for w in open_loans
            for component, amount in zip(("principal", "interest"), balances[w.id], strict=True)
            if amount > 0
        ]
    )
    opening = gl_account("GL-OPENING")
    for w in open_loans:
        principal, interest = balances[w.id]
        lines: list[Line] = []
        if principal > 0:  # a schedule's last rows can be interest alone (see loan_schedule)
            lines.append(debit(accounts[_loan_account_code(w, "principal")], principal))
        if interest > 0:
            lines.append(debit(accounts[_loan_account_code(w, "interest")], interest))
        lines.append(credit(opening, principal + interest))
        journal_post(
            kind="opening_balance",
            lines=lines,
            value_date=as_of,
            description=f"Balance brought forward {w.loan_no} (loan book line {w.row.line})",
            idempotency_key=f"import:{w.row.ref}",
            actor=ACTOR,
            member_id=w.member_id,
            loan_id=w.id,
        )
    return new_members


@dataclass(frozen=True)
class _Written:
    row: _Planned
    id: int
    loan_no: str
    member_id: int


def _members_insert(batch: list[_Planned], created: dict[str, int]) -> dict[str, int]:
    """The batch's new members, as `member_add` makes them, in three statements.

    `member_add` costs a read and three savepoints per member (3-4 ms: 8,000 members
    alone would take half a minute), so this writes the same rows in bulk: the member, its
    number, its savings and share-capital accounts and the "member.add" audit row. The
    checks it makes were made on the whole file; the unique phone still guards a race.
    """
    first: dict[str, _Planned] = {}
    for row in batch:
        if row.member_id is None and row.customer_id not in created:
            first.setdefault(row.customer_id, row)
    if not first:
        return {}
    ids = list(
        db.session.scalars(
            insert(Member.__table__).returning(Member.id, sort_by_parameter_order=True),
            [
                {"name": row.name, "phone": row.phone, "external_ref": customer_id}
                for customer_id, row in first.items()
            ],
        )
    )
    new = dict(zip(first, ids, strict=True))
    db.session.execute(
        update(Member),
        [{"id": member_id, "member_no": member_number(member_id)} for member_id in ids],
    )
    _accounts_insert(
        [
            {
                "code": f"{prefix}-{member_number(member_id)}",
                "kind": kind,
                "name": f"{label} {member_number(member_id)}",
                "member_id": member_id,
                "loan_id": None,
            }
            for member_id in ids
            for prefix, kind, label in MEMBER_ACCOUNTS
        ],
        load=False,
    )
    for customer_id, row in first.items():
        audit_record(
            actor=ACTOR,
            action="member.add",
            object_type="member",
            object_id=member_number(new[customer_id]),
            after={"name": row.name, "phone": row.phone, "national_id": None},
            note=f"loan book line {row.line}",
        )
    return new


def _loan_account_code(loan: _Written, component: str) -> str:
    return f"{RECEIVABLE[component][0]}-{loan.loan_no}"


def _loan_account_row(loan: _Written, component: str) -> dict[str, object]:
    """The account `loan_account(loan, component)` would create, as a row to insert."""
    _, kind, label = RECEIVABLE[component]
    return {
        "code": _loan_account_code(loan, component),
        "kind": kind,
        "name": f"{label} {loan.loan_no}",
        "member_id": loan.member_id,
        "loan_id": loan.id,
    }


def _accounts_insert(rows: list[dict[str, object]], *, load: bool = True) -> dict[str, Account]:
    """Insert new accounts in one statement; with `load`, read them back by code at once."""
    if not rows:
        return {}
    db.session.execute(
        insert(Account.__table__), [{**row, "status": "open", "balance": ZERO} for row in rows]
    )
    if not load:
        return {}
    codes = [str(row["code"]) for row in rows]
    # The entries need only the accounts themselves, not their members (a joined load).
    stmt = select(Account).options(lazyload(Account.member)).where(Account.code.in_(codes))
    return {account.code: account for account in db.session.scalars(stmt)}


def _is_paid(row: _Planned, installment: ScheduleRow, as_of: date) -> bool:
    """The status rule: closed pays everything, active what fell due before `as_of`."""
    if row.status == "closed":
        return True
    return row.status == "active" and installment.due_date < as_of


def _paid_on(installment: ScheduleRow, as_of: date) -> date:
    # A loan closed early has installments dated after the import; it was paid by then.
    return min(installment.due_date, as_of)


def _installments(loan_id: int, row: _Planned, as_of: date) -> list[dict[str, object]]:
    result = []
    for item in row.schedule.rows:
        paid = _is_paid(row, item, as_of)
        result.append(
            {
                "loan_id": loan_id,
                "version": 1,
                "superseded": False,
                "number": item.number,
                "due_date": item.due_date,
                "principal_due": item.principal,
                "interest_due": item.interest,
                "fees_due": ZERO,
                "penalty_due": ZERO,
                "principal_paid": item.principal if paid else ZERO,
                "interest_paid": item.interest if paid else ZERO,
                "fees_paid": ZERO,
                "penalty_paid": ZERO,
                "paid_on": _paid_on(item, as_of) if paid else None,
                "last_penalty_on": None,
            }
        )
    return result


def loan_number(loan_id: int) -> str:
    """The number `loan_apply` gives a loan, from its id."""
    return f"L{loan_id:06d}"


def _outstanding(row: _Planned, as_of: date) -> tuple[Decimal, Decimal]:
    """Principal and interest still owed on the schedule, per the status rule."""
    unpaid = [item for item in row.schedule.rows if not _is_paid(row, item, as_of)]
    return (
        sum((item.principal for item in unpaid), ZERO),
        sum((item.interest for item in unpaid), ZERO),
    )
