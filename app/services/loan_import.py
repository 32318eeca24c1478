"""Loan book upload: bring another system's running loans into the SACCO.

A loan book (CSV or XLSX, one loan per row) is read through once to check every row
before anything is written, then again to write members, loans, schedules and the
balances brought forward, in batches. Checking first means a bad file writes nothing;
batches keep 10,000 rows fast while every loan still lands atomically with its schedule
and its entry; reading twice, streaming, means no list of the whole book is held.

What one book may be is capped before it costs a worker its memory or its minutes: an
XLSX whose zip directory says it unpacks past MAX_UNPACKED_BYTES, or packs a part more
than MAX_PACK_RATIO times (a zip bomb), is refused before openpyxl opens it; more than
MAX_ROWS loans (or a sheet declaring or running past LINES_PER_ROW times that many lines)
as soon as the rows run over. The console keeps what it read and checked as a stored
preview (`loan_book_preview_store`, app/models/loan_book.py), which its pages and its
import read, so the file is parsed once and every web replica sees the same preview.

No transaction is held while a book is read or checked: the checker copies what it needs
from the database and ends its read first (on SQLite any open transaction holds the one
write lock, and SMS, USSD hops and jobs would wait on the spreadsheet).

Loans imported in arrears are brought up to date after the import commits by the nightly
job's own rule (`loans_update_arrears`: days past due, bucket, default flag, penalties), so
the desk and PAR30 show them late at once; loans need an officer to follow them up, so
those the book brings without one get `officer_id` (the console: DEFAULT_LOAN_OFFICER,
else the staff member importing; the CLI: --officer, else DEFAULT_LOAN_OFFICER).

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
- Speed (10,000 rows, 174,000 installments, in seconds rather than the minute they took
  row by row): every table of a batch is written in one statement as the rows
  `member_add`, `loan_account` and `journal_post` would make (ids drawn from the sequences
  first on PostgreSQL, installments and journal lines by COPY there), the opening entries
  through a private writer that keeps the ledger's invariants (each entry balanced, every
  new receivable holding its lines' sum, GL-OPENING moved once a batch). Calling
  `member_add` and `loan_account` per row costs 3-4 ms a member and 1 ms an account (a
  read and a savepoint each). tests/test_loan_import.py checks that those services find
  the imported accounts rather than making new ones, and pins a small book's figures to
  what the row-by-row import gave.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
import zipfile
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Protocol, cast

from redis.exceptions import RedisError
from sqlalchemy import CursorResult, Table, bindparam, delete, insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from app.batch import ChunkStats, batch_chunks
from app.errors import SaccoError
from app.extensions import db, enqueue
from app.models import (
    Account,
    AuditLog,
    Installment,
    JournalEntry,
    JournalLine,
    Loan,
    LoanBookPreview,
    LoanBookPreviewRow,
    LoanProduct,
    Member,
    StaffUser,
)
from app.models.loan_book import PREVIEW_OUTCOMES
from app.models.types import utcnow
from app.money import ZERO, MoneyError, money_input, round_money, to_decimal
from app.phone import PhoneError, normalise_phone
from app.services.audit import audit_record
from app.services.bulk import copy_dicts, copy_rows
from app.services.ledger import MEMBER_ACCOUNTS as LEDGER_MEMBER_ACCOUNTS
from app.services.ledger import LedgerError, books_closed_through, gl_account, period_guard
from app.services.loan_schedule import (
    MAX_ANNUAL_RATE,
    Schedule,
    ScheduleError,
    ScheduleRow,
    schedule_build,
)
from app.services.loans import ARREARS, RECEIVABLE, loan_default_officer
from app.services.members import member_number
from app.services.permissions import permission_require
from app.words import plural

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
# Rows per transaction. Every table of a batch is written in one statement (a few for
# installments), so the round trips grow with the number of batches, not of rows: 1,000
# rows (some 17,000 installments) is one all-or-nothing unit that still fits well inside a
# worker's memory and a lock's patience.
BATCH_SIZE = 1000
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
    late_loans: list[int] = field(default_factory=list)  # imported in arrears
    arrears_queued: bool = False  # their days late are being brought up to date by a job

    @property
    def summary(self) -> str:
        bad = len(self.bad_rows) if self.written else 0
        return (
            f"imported {plural(self.imported, 'loan')} "
            f"({plural(self.members_created, 'member')} created), "
            f"skipped {self.already_imported} already imported, {plural(bad, 'bad row')} skipped"
        )


# --- reading ---------------------------------------------------------------------------

# What one book may hold, checked before anything is parsed (XLSX) or while streaming (CSV).
# A 10,000-loan book is about 1 MB as CSV and 4 MB of sheet XML: these leave room for
# twice that, and refuse a zip bomb (a 409 KB file unpacking to 400 MB) or a sheet of a
# million rows within a second, before a web worker spends its memory or its minutes.
MAX_ROWS = 20_000
MAX_UNPACKED_BYTES = 25 * 1024 * 1024
# Spreadsheet XML packs 5-20 times; a part packed more than this (and bigger than
# RATIO_FLOOR, where ratios mean nothing) is built to blow up, not typed.
MAX_PACK_RATIO = 100
RATIO_FLOOR = 1024 * 1024
# Lines read, blank ones too (a sheet can declare a million empty rows in a few bytes),
# and the columns read from each (a loan book has nine; a sheet can declare 16,384).
LINES_PER_ROW = 2
MAX_COLUMNS = 64


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):,.0f} MB"


@dataclass
class LoanBook:
    """A readable loan book: `rows()` streams it from the start each time it is called
    (the import reads it twice, to check and then to write, holding neither in memory).

    The format, the XLSX packing and the header are checked when the book is opened;
    the row count while it is read."""

    name: str
    suffix: str
    path: Path | None = None
    data: bytes | None = None
    max_rows: int = MAX_ROWS

    def _binary(self) -> IO[bytes]:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return self.path.open("rb")

    def _table(self) -> Iterator[tuple[int, Sequence[object]]]:
        if self.suffix == ".csv":
            return _csv_table(self._binary, self.name)
        return _xlsx_table(self._binary, self.name, self.max_rows * LINES_PER_ROW)

    def rows(self) -> Generator[BookRow]:
        try:
            yield from _book_rows(self._table(), self.max_rows)
        except OSError as exc:
            raise LoanBookError(f"cannot read {self.name}: {exc.strerror or exc}") from exc


class RowSource(Protocol):
    def rows(self) -> Iterator[BookRow]: ...


def loan_book_open(
    *,
    path: str | Path | None = None,
    data: bytes | None = None,
    name: str | None = None,
    max_rows: int = MAX_ROWS,
) -> LoanBook:
    """A CSV or XLSX loan book (a file, or an upload's bytes), its packing and header
    checked; LoanBookError if it cannot be used. Nothing beyond the header is parsed."""
    if path is not None:
        path = Path(path)
    name = name or (path.name if path is not None else "upload")
    suffix = Path(name).suffix.lower()
    if suffix not in (".csv", ".xlsx"):
        raise LoanBookError(f"{name}: unknown format (expected a .csv or .xlsx file)")
    book = LoanBook(name=name, suffix=suffix, path=path, data=data, max_rows=max_rows)
    try:
        if suffix == ".xlsx":
            with book._binary() as handle:
                _xlsx_packing(handle, name)
        first = book.rows()
        try:
            next(first, None)  # the header (and the first row): refused here, not later
        finally:
            first.close()
    except OSError as exc:
        raise LoanBookError(f"cannot read {name}: {exc.strerror or exc}") from exc
    return book


def loan_book_read(*, path: str | Path, max_rows: int = MAX_ROWS) -> list[BookRow]:
    """The data rows of a CSV or XLSX loan book; LoanBookError if the file is unusable."""
    return list(loan_book_open(path=path, max_rows=max_rows).rows())


def _xlsx_packing(handle: IO[bytes], name: str) -> None:
    """Refuse a workbook that unpacks to more than a loan book holds, from the zip's
    central directory alone (sizes as declared, which zipfile never reads beyond: a part
    that lies about its size stops there), before openpyxl unpacks anything."""
    try:
        with zipfile.ZipFile(handle) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise LoanBookError(f"cannot read {name}: not an XLSX workbook") from exc
    unpacked = sum(part.file_size for part in parts)
    if unpacked > MAX_UNPACKED_BYTES:
        raise LoanBookError(
            f"{name} unpacks to {_mb(unpacked)}, more than the {_mb(MAX_UNPACKED_BYTES)} "
            f"a loan book may hold (about {MAX_ROWS:,} loans); split it into smaller books"
        )
    for part in parts:
        ratio = part.file_size / max(part.compress_size, 1)
        if part.file_size > RATIO_FLOOR and ratio > MAX_PACK_RATIO:
            raise LoanBookError(
                f"{name}: {part.filename} is packed {ratio:,.0f} times "
                f"(a spreadsheet packs at most {MAX_PACK_RATIO} times); "
                "save the book again from the spreadsheet program"
            )


def _csv_table(
    opener: Callable[[], IO[bytes]], name: str
) -> Iterator[tuple[int, Sequence[object]]]:
    try:
        # utf-8-sig: Excel writes a byte-order mark at the start of "CSV UTF-8" files.
        with io.TextIOWrapper(opener(), encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            for cells in reader:
                yield reader.line_num, cells
    except UnicodeDecodeError as exc:
        raise LoanBookError(f"cannot read {name}: not UTF-8 text") from exc
    except csv.Error as exc:
        raise LoanBookError(f"cannot read {name}: {exc}") from exc


def _xlsx_table(
    opener: Callable[[], IO[bytes]], name: str, max_lines: int
) -> Iterator[tuple[int, Sequence[object]]]:
    from openpyxl import load_workbook  # only XLSX uploads pay for the import

    handle = opener()
    try:
        try:
            # read_only streams the sheet row by row (its XML is never held whole).
            workbook = load_workbook(handle, read_only=True, data_only=True)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for a bad file
            raise LoanBookError(f"cannot read {name}: not an XLSX workbook") from exc
        try:
            sheet = workbook.worksheets[0]
            declared = sheet.max_row  # the sheet's own <dimension>, read without parsing it
            if declared is not None and declared > max_lines:
                raise LoanBookError(
                    f"{name}: the sheet runs to row {declared:,}, more than a book of "
                    f"{max_lines // LINES_PER_ROW:,} loans (the most one book may hold) needs; "
                    "delete the empty rows below the loans, or split the book"
                )
            # Rows and columns are read as they come, not filled out to a declared size.
            sheet.reset_dimensions()
            rows = enumerate(sheet.iter_rows(max_col=MAX_COLUMNS), start=1)
            while True:
                try:
                    number, cells = next(rows)
                    values = [_xlsx_value(cell) for cell in cells]
                except StopIteration:
                    return
                except Exception as exc:  # noqa: BLE001 - a damaged sheet, in any of many ways
                    raise LoanBookError(f"cannot read {name}: damaged worksheet") from exc
                yield number, values
        finally:
            workbook.close()
    finally:
        handle.close()


def _xlsx_value(cell: object) -> object:
    """A cell as the book's author sees it: a 12% cell holds 0.12 but means a rate of 12."""
    value = getattr(cell, "value", None)
    number_format = getattr(cell, "number_format", None) or ""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and "%" in number_format:
        return to_decimal(str(value)) * 100
    return value


def _book_rows(table: Iterable[tuple[int, Sequence[object]]], max_rows: int) -> Iterator[BookRow]:
    positions: dict[str, int] | None = None
    count = 0
    for line, cells in table:
        if line > max_rows * LINES_PER_ROW:
            raise LoanBookError(
                f"the book runs past line {line - 1:,} (blank lines too), more than a book of "
                f"{max_rows:,} loans (the most one book may hold) needs; delete the empty "
                "rows, or split the book"
            )
        if positions is None:
            positions = _header(cells)
            continue
        if not any(cells):
            continue  # empty (quickly: a sheet can hold thousands of empty rows)
        texts = [_text(cell) for cell in cells]
        if not any(texts):
            continue  # blank lines, and the empty rows spreadsheets keep at the end
        count += 1
        if count > max_rows:
            raise LoanBookError(
                f"the book has more than {max_rows:,} loans (the most one upload may hold); "
                "split it into smaller books"
            )
        # Every cell as text, as the preview stores it: a book read from the file and
        # one read back from a stored preview are checked alike.
        values: dict[str, object] = {
            column: texts[index] if index < len(texts) else ""
            for column, index in positions.items()
        }
        yield BookRow(line=line, values=values)
    if positions is None:
        raise LoanBookError("the file is empty (expected a header row: " + ", ".join(COLUMNS) + ")")


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
    """A cell as text; whole-number floats lose their ".0" (a phone typed into Excel), and
    dates read as YYYY-MM-DD (a date cell, with or without its midnight)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
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


# What a schedule is built from: the product's terms as read (a product edited between
# the passes is a different key), principal, rate, term and disbursement date.
_Terms = tuple[_Product, Decimal, Decimal, int, date]


def _terms(planned: _Planned) -> _Terms:
    p = planned
    return (p.product, p.principal, p.rate, p.term, p.disbursed_on)


@dataclass
class _FileCustomer:
    phone: str
    line: int
    member_id: int | None


@dataclass
class BookCheck:
    """What checking the whole file found: how many rows are good, and the ones refused."""

    ok: int = 0
    errors: list[RowError] = field(default_factory=list)
    already_imported: int = 0


class _Checker:
    """Checks rows one by one against the database as it was read once at the start.

    Members created by earlier rows of the same file are tracked here, so a customer on
    two rows is one member and a phone given for two customers is caught before writing.
    """

    def __init__(self, as_of: date, schedules: dict[_Terms, Schedule] | None = None) -> None:
        self.as_of = as_of
        # The import's two passes share their schedules: the first keeps each good row's,
        # the second takes it back instead of building it again (20,000 schedule builds
        # were a tenth of a 10,000-loan import). A book is capped at MAX_ROWS loans.
        self.schedules = schedules
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
        # All it needs is copied: end the read transaction before the rows are checked, so
        # no lock is held while a big book is parsed (SQLite's BEGIN IMMEDIATE would hold
        # the one write lock: every SMS, USSD hop and job would wait on the parse).
        db.session.rollback()
        self.refs_in_file: dict[str, int] = {}
        self.customers: dict[str, _FileCustomer] = {}
        self.phones: dict[str, tuple[str, int]] = {}

    def check(self, row: BookRow) -> tuple[str, str, _Planned | None]:
        """The row's outcome ("ok", "imported" or "bad"), why when bad, and what to write."""
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
                return "imported", "imported before; skipped", None
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
                return (
                    "ok",
                    "",
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
                    ),
                )
        return "bad", "; ".join(problems), None

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
        terms = (product, principal, rate, term, start)
        if self.schedules is not None and terms in self.schedules:
            return self.schedules.pop(terms)
        try:
            schedule = schedule_build(
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
        return schedule

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
    # The two forms strptime's "%Y-%m-%d" and "%d/%m/%Y" take, by regular expression:
    # strptime (and its exception for the form a date is not in) was a fifth of the time
    # it took to check a book.
    iso, dmy = _ISO_DATE.fullmatch(text), _DMY_DATE.fullmatch(text)
    try:
        if iso:
            return date(int(iso[1]), int(iso[2]), int(iso[3]))
        if dmy:
            return date(int(dmy[3]), int(dmy[2]), int(dmy[1]))
    except ValueError:  # 2026-02-30
        return None
    return None


_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})", re.ASCII)
_DMY_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})", re.ASCII)


def _number(value: Decimal) -> str:
    """A number as a person typed it: 12, 12.5, -100 (no exponent, no trailing zeros)."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _passes(rows: Iterable[BookRow] | RowSource) -> Callable[[], Iterator[BookRow]]:
    """How to read the rows from the start, as often as asked: a book or a stored preview
    streams them again; a list is walked again."""
    if not isinstance(rows, Iterable):
        return rows.rows
    kept = rows if isinstance(rows, Collection) else list(rows)
    return lambda: iter(kept)


def loan_book_check(*, rows: Iterable[BookRow] | RowSource, as_of: date) -> BookCheck:
    """Check every row against the products, the members and the loans already imported.

    Keeps only the refusals and the counts, so a book of any length is checked in the
    memory of one row."""
    return _check_all(_passes(rows), as_of)


def _check_all(
    read: Callable[[], Iterator[BookRow]],
    as_of: date,
    schedules: dict[_Terms, Schedule] | None = None,
) -> BookCheck:
    checker = _Checker(as_of)
    result = BookCheck()
    for row in read():
        outcome, reason, planned = checker.check(row)
        if outcome == "ok":
            result.ok += 1
            if schedules is not None and planned is not None:
                schedules[_terms(planned)] = planned.schedule
        elif outcome == "imported":
            result.already_imported += 1
        else:
            result.errors.append(RowError(row.line, reason))
    return result


@dataclass(frozen=True)
class RowResult:
    """One row of a book as a preview shows it: what it says and what importing would do."""

    line: int
    values: dict[str, str]  # column -> the cell as text
    outcome: str  # "ok" (would be imported) | "imported" (already, skipped) | "bad"
    reason: str = ""


def loan_book_validate(*, rows: Iterable[BookRow] | RowSource, as_of: date) -> list[RowResult]:
    """Every row's result, by the very check the import makes first: writes nothing.

    (The console's upload preview; `loan_book_import` on the same rows and date imports
    exactly the rows marked "ok".)"""
    checker = _Checker(as_of)
    results = []
    for row in _passes(rows)():
        outcome, reason, _ = checker.check(row)
        values = {column: _text(row.values.get(column)) for column in COLUMNS}
        results.append(RowResult(row.line, values, outcome, reason))
    return results


# --- the console's stored preview ------------------------------------------------------

PREVIEW_KEEP = timedelta(days=1)  # a preview nobody imported is deleted at the next upload
PREVIEW_CHUNK = 500  # rows read back per query when importing a stored preview


def loan_book_preview_store(*, book: LoanBook, as_of: date, staff: StaffUser) -> LoanBookPreview:
    """Parse and check the book once and keep every row's result for the preview pages
    and the import, in the database, so any web replica can serve either.

    The parse and the check hold no transaction (the checker ends its reads first); the
    preview is then written in one short transaction, old previews swept in the same."""
    permission_require(staff, "loan.import")
    # Read whole first (the row cap is met here, before a single row is checked), then
    # checked: a book over the cap is refused in the time it takes to read it.
    results = loan_book_validate(rows=list(book.rows()), as_of=as_of)
    counts = {outcome: 0 for outcome in PREVIEW_OUTCOMES}
    for result in results:
        counts[result.outcome] += 1
    db.session.execute(
        delete(LoanBookPreview).where(LoanBookPreview.created_at < utcnow() - PREVIEW_KEEP)
    )
    preview = LoanBookPreview(
        token=secrets.token_urlsafe(16),
        filename=book.name[:120],
        as_of=as_of,
        staff_id=staff.id,
        total=len(results),
        ok_count=counts["ok"],
        imported_count=counts["imported"],
        bad_count=counts["bad"],
    )
    db.session.add(preview)
    db.session.flush()
    for start in range(0, len(results), 1000):
        db.session.execute(
            insert(LoanBookPreviewRow),
            [
                {
                    "preview_id": preview.id,
                    "line": r.line,
                    "cells": r.values,
                    "outcome": r.outcome,
                    "reason": r.reason,
                }
                for r in results[start : start + 1000]
            ],
        )
    db.session.commit()
    return preview


def loan_book_preview_get(*, token: str) -> LoanBookPreview | None:
    """The stored preview behind a page's token, if it is still kept."""
    cutoff = utcnow() - PREVIEW_KEEP
    preview = db.session.scalar(
        select(LoanBookPreview).where(
            LoanBookPreview.token == token, LoanBookPreview.created_at >= cutoff
        )
    )
    return preview


def loan_book_preview_page(
    *, preview: LoanBookPreview, only_bad: bool, page: int, per_page: int
) -> list[RowResult]:
    """One page of a stored preview's rows, in file order (a query, never a parse)."""
    stmt = select(LoanBookPreviewRow).where(LoanBookPreviewRow.preview_id == preview.id)
    if only_bad:
        stmt = stmt.where(LoanBookPreviewRow.outcome == "bad")
    stmt = stmt.order_by(LoanBookPreviewRow.line).offset((page - 1) * per_page).limit(per_page)
    return [
        RowResult(r.line, {c: str(r.cells.get(c, "")) for c in COLUMNS}, r.outcome, r.reason)
        for r in db.session.scalars(stmt)
    ]


@dataclass(frozen=True)
class _StoredRows:
    """A stored preview's rows read back as the book's, a chunk per query, each read's
    transaction ended before its rows are checked or written."""

    preview_id: int

    def rows(self) -> Iterator[BookRow]:
        last = 0
        while True:
            chunk = db.session.execute(
                select(LoanBookPreviewRow.line, LoanBookPreviewRow.cells)
                .where(
                    LoanBookPreviewRow.preview_id == self.preview_id,
                    LoanBookPreviewRow.line > last,
                )
                .order_by(LoanBookPreviewRow.line)
                .limit(PREVIEW_CHUNK)
            ).all()
            db.session.rollback()  # only a read; nothing of the import is pending here
            if not chunk:
                return
            for line, cells in chunk:
                values: dict[str, object] = dict(cells)
                yield BookRow(line=line, values=values)
            last = chunk[-1][0]


def loan_book_import_preview(
    *, token: str, skip_bad: bool, staff: StaffUser
) -> tuple[ImportReport, str]:
    """The console's import: the stored preview's rows imported as the CLI imports a file
    (checked again against the books as they are now), with an audit row saying who
    imported which book and what came of it. The preview is deleted once imported."""
    permission_require(staff, "loan.import")
    preview = loan_book_preview_get(token=token)
    if preview is None:
        raise LoanBookError("that upload is gone (imported, or older than a day); upload it again")
    name, as_of, preview_id = preview.filename, preview.as_of, preview.id
    default = loan_default_officer()
    officer_id = default.id if default is not None else staff.id
    # Penalties and days late of the loans in arrears go to a job after the commit: on a
    # big book they cost as much again as the import, and a web request has 30 s.
    report = loan_book_import(
        rows=_StoredRows(preview_id),
        skip_bad=skip_bad,
        as_of=as_of,
        officer_id=officer_id,
        arrears_now=False,
    )
    audit_record(
        actor=f"staff:{staff.email}",
        action="loan_book.import",
        object_type="loan_book",
        object_id=name[:30],
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
    if report.written and not report.error:
        db.session.execute(delete(LoanBookPreview).where(LoanBookPreview.id == preview_id))
    db.session.commit()
    if report.late_loans:
        try:
            enqueue("default", ARREARS_JOB, report.late_loans, as_of.isoformat())
            report.arrears_queued = True
        except RedisError:  # no queue: the staff member waits for it instead
            problem = loan_book_arrears_update(loan_ids=report.late_loans, as_of=as_of)
            report.error = report.error or problem
    return report, name


# A filled-in example for the downloadable templates (templates/loan-book-template.csv
# holds the same rows for the CLI). Made-up people on numbers no member has (0700 000 00x):
# an example imported by mistake never lands on a real member's account.
TEMPLATE_ROWS: tuple[tuple[str, ...], ...] = (
    (
        "EXAMPLE-0001",
        "Amina Mfano",
        "0700000001",
        "DEV",
        "50000.00",
        "12",
        "36",
        "2025-06-15",
        "active",
    ),
    (
        "EXAMPLE-0002",
        "Baraka Mfano",
        "0700000002",
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
    *,
    rows: Iterable[BookRow] | RowSource,
    skip_bad: bool,
    as_of: date,
    batch_size: int = BATCH_SIZE,
    officer_id: int | None = None,
    arrears_now: bool = True,
) -> ImportReport:
    """Check the whole book, then write it in batches (each batch one transaction).

    The book is read twice, streaming: once to check every row (keeping only the
    refusals), then again to write, a batch at a time, the rows the same check plans; no
    list of the whole book is ever held. With bad rows and no `skip_bad` nothing is
    written. A batch that fails is rolled back and the import stops with `report.error`
    set; earlier batches stay, complete loan by loan, and running the same file again
    writes only the rest. Loans without an officer in the book get `officer_id`.

    Once written, the loans imported in arrears have their days past due, aging bucket,
    default flag and penalties brought up to `as_of` by the nightly job's own rule
    (`loans_update_arrears`), so the desk and PAR30 show them late from the first minute;
    with `arrears_now` False that is left to the caller (`report.late_loans`).
    """
    closed = books_closed_through()
    if closed is not None and as_of <= closed:
        # Its balances brought forward would be dated inside books that are final.
        raise LoanBookError(
            f"the books are closed through {closed.isoformat()}: a book true on "
            f"{as_of.isoformat()} would post inside them; import it as of "
            f"{(closed + timedelta(days=1)).isoformat()} or later"
        )
    read = _passes(rows)
    schedules: dict[_Terms, Schedule] = {}
    checked = _check_all(read, as_of, schedules)
    report = ImportReport(already_imported=checked.already_imported, bad_rows=checked.errors)
    if checked.errors and not skip_bad:
        return report
    report.written = True
    refused = {error.line for error in checked.errors}
    created: dict[str, int] = {}  # customer id -> member id, for members committed so far
    checker = _Checker(as_of, schedules)  # the state the first pass started from
    batch: list[_Planned] = []

    def write() -> bool:
        try:
            new_members, arrears = _write_batch(batch, created, as_of, officer_id)
            db.session.commit()
        except (SQLAlchemyError, ValueError) as exc:
            db.session.rollback()
            report.error = (
                f"rows on lines {batch[0].line}-{batch[-1].line} were not imported: "
                f"{type(exc).__name__}: {_first_line(exc)}"
            )
            return False
        created.update(new_members)
        report.late_loans.extend(arrears)
        report.imported += len(batch)
        report.members_created += len(new_members)
        batch.clear()
        return True

    for row in read():
        outcome, reason, planned = checker.check(row)
        if planned is not None:
            batch.append(planned)
        elif outcome == "bad" and row.line not in refused:
            # The books changed since the first pass (a member added meanwhile): skipped.
            report.bad_rows.append(RowError(row.line, reason))
        if len(batch) >= batch_size and not write():
            break
    else:
        if batch:
            write()
    if arrears_now:
        problem = loan_book_arrears_update(loan_ids=report.late_loans, as_of=as_of)
        report.error = report.error or problem
    return report


# The job the console's import queues (a dotted path: this module never imports workers).
ARREARS_JOB = "workers.imports.loan_book_arrears"


def loan_book_arrears_update(*, loan_ids: Sequence[int], as_of: date) -> str | None:
    """Loans just imported in arrears, brought up to `as_of` by the nightly run's own
    batch (`ARREARS`: days past due, bucket, default flag, penalties), a chunk of loans
    a transaction: one loan at a time cost 75 ms each, more than the whole import. A
    chunk that fails is redone loan by loan, so one bad loan does not stop the others;
    the first problem comes back in words, or None (the nightly job retries it)."""
    stats = ChunkStats()
    batch_chunks(ARREARS, loan_ids, as_of=as_of, stats=stats)
    if not stats.errors:
        return None
    return f"days late not brought up to date for {stats.errors[0]} (the nightly job will)"


def _first_line(exc: Exception) -> str:
    """The database's own words, without the statement and its parameters."""
    cause = getattr(exc, "orig", None) or exc
    return (str(cause).strip().splitlines() or [type(exc).__name__])[0]


def _write_batch(
    batch: list[_Planned], created: dict[str, int], as_of: date, officer_id: int | None
) -> tuple[dict[str, int], list[int]]:
    """Members, loans, installments, accounts, audit rows and opening entries for a batch.

    Adds to the session without committing; returns the members it created and the loans
    it wrote in arrears. Rows are inserted a stage at a time (all members, all loans, all
    installments, all accounts, all audit rows of the batch in one statement each, the
    opening entries and their lines in one each, `_openings_post`), so the round trips
    grow with the batches, not the rows: per-row ORM flushes and one savepoint and balance
    UPDATE per entry were what kept 10,000 rows near a minute.
    """
    new_members = _members_insert(batch, created)
    member_ids = created | new_members
    now = utcnow()

    loan_ids = _numbered_insert(
        Loan.__table__,
        "loan_no",
        loan_number,
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
                "officer_id": officer_id,
                "applied_at": now,
            }
            for row in batch
        ],
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
    _installments_insert([item for w in loans for item in _installments(w.id, w.row, as_of)])
    _audit_insert(
        [
            _audit_row(
                action="loan.import",
                object_type="loan",
                object_id=w.loan_no,
                after={
                    "status": "closed" if w.row.status == "closed" else "active",
                    "book_status": w.row.status,
                    "principal": str(w.row.principal),
                    "rate": str(w.row.rate),
                    "term": w.row.term,
                    "product": w.row.product.code,
                    "disbursed_on": w.row.disbursed_on.isoformat(),
                    "external_ref": w.row.ref,
                },
                note=f"loan book line {w.row.line}",
            )
            for w in loans
        ]
    )

    open_loans = [w for w in loans if w.row.status != "closed"]
    balances = {w.id: _outstanding(w.row, as_of) for w in open_loans}
    _openings_post(open_loans, balances, as_of)
    return new_members, [w.id for w in loans if w.row.status == "arrears"]


def _audit_row(
    *, action: str, object_type: str, object_id: str, after: dict[str, object], note: str
) -> dict[str, object]:
    """The row `audit_record(actor=ACTOR, ...)` would add, its values already text as it
    makes them (numbers and dates as str, whole numbers and None as they are)."""
    return {
        "actor": ACTOR,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "before": None,
        "after": after,
        "note": note,
    }


def _audit_insert(rows: list[dict[str, object]]) -> None:
    """The batch's audit rows in one INSERT: a flush of thousands of AuditLog objects costs
    more than the rows they record."""
    if rows:
        now = utcnow()
        copy_dicts(AuditLog.__table__, [{**row, "at": now} for row in rows])


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
    now = utcnow()
    ids = _numbered_insert(
        Member.__table__,
        "member_no",
        member_number,
        [
            {"name": row.name, "phone": row.phone, "external_ref": customer_id, "created_at": now}
            for customer_id, row in first.items()
        ],
    )
    new = dict(zip(first, ids, strict=True))
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
        ]
    )
    _audit_insert(
        [
            _audit_row(
                action="member.add",
                object_type="member",
                object_id=member_number(new[customer_id]),
                after={"name": row.name, "phone": row.phone, "national_id": None},
                note=f"loan book line {row.line}",
            )
            for customer_id, row in first.items()
        ]
    )
    return new


def _ids_reserve(table: Table, count: int) -> list[int] | None:
    """`count` new ids from the table's own sequence on PostgreSQL; None elsewhere."""
    if db.engine.dialect.name != "postgresql":
        return None
    return list(
        db.session.scalars(
            text(
                "SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"
            ),
            {"table": table.name, "n": count},
        )
    )


def _numbered_insert(
    table: Table, column: str, number: Callable[[int], str], rows: list[dict[str, object]]
) -> list[int]:
    """Insert rows numbered from their ids (`member_number`, `loan_number`); their ids, in
    order.

    On PostgreSQL the ids come from the table's sequence first, so each row goes in whole
    by one executemany (a statement psycopg parses once and pipelines): an INSERT ...
    RETURNING of a thousand rows is one statement of some 17,000 placeholders that psycopg
    splits in Python, which cost more than the database's work. Elsewhere (SQLite):
    RETURNING in parameter order, then the numbers in one UPDATE."""
    ids = _ids_reserve(table, len(rows))
    if ids is not None:
        copy_dicts(
            table,
            [
                {**row, "id": row_id, column: number(row_id)}
                for row, row_id in zip(rows, ids, strict=True)
            ],
        )
        return ids
    ids = list(
        db.session.scalars(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows)
    )
    db.session.execute(
        update(table)
        .where(table.c.id == bindparam("row_id"))
        .values({column: bindparam("row_number")}),
        [{"row_id": row_id, "row_number": number(row_id)} for row_id in ids],
    )
    return ids


def _ids_insert(table: Table, rows: list[dict[str, object]]) -> list[int]:
    """Insert rows and give their ids in order (on PostgreSQL reserved first, as above)."""
    if not rows:
        return []
    ids = _ids_reserve(table, len(rows))
    if ids is not None:
        copy_dicts(table, [{**row, "id": row_id} for row, row_id in zip(rows, ids, strict=True)])
        return ids
    return list(
        db.session.scalars(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows)
    )


def _openings_post(
    loans: list[_Written], balances: dict[int, tuple[Decimal, Decimal]], as_of: date
) -> None:
    """Each open loan's balance brought forward: the entry `journal_post` would write
    (kind, key, description, actor, lines debiting the new principal and interest
    receivables and crediting GL-OPENING), for the whole batch in four statements.

    The receivables are new, so each is inserted holding its balance (its one line's
    amount) instead of being moved afterwards by an UPDATE per account; GL-OPENING moves
    once, by the batch's total, under the same "still open" condition journal_post uses.
    A key posted before, or an account code taken, fails the batch at its unique
    constraint, as journal_post's savepoint would have."""
    if not loans:
        return
    period_guard([as_of])  # journal_post's check and lock: a close waits for this batch
    now = utcnow()
    receivables: list[dict[str, object]] = []
    for w in loans:
        for component, amount in zip(("principal", "interest"), balances[w.id], strict=True):
            if amount > 0:  # a schedule's last rows can be interest alone (see loan_schedule)
                if amount != round_money(amount):
                    raise LedgerError(f"{amount} has fractions of a cent")
                receivables.append(
                    {**_loan_account_row(w, component), "status": "open", "balance": amount}
                )
    account_ids = dict(
        zip(
            (str(row["code"]) for row in receivables),
            _ids_insert(Account.__table__, [{**row, "created_at": now} for row in receivables]),
            strict=True,
        )
    )
    entry_ids = _ids_insert(
        JournalEntry.__table__,
        [
            {
                "kind": "opening_balance",
                "description": (
                    f"Balance brought forward {w.loan_no} (loan book line {w.row.line})"
                )[:255],
                "idempotency_key": f"import:{w.row.ref}",
                "value_date": as_of,
                "posted_at": now,
                "actor": ACTOR,
                "member_id": w.member_id,
                "loan_id": w.id,
            }
            for w in loans
        ],
    )
    opening = gl_account("GL-OPENING")
    lines: list[tuple[int, int, Decimal]] = []
    total = ZERO
    for w, entry_id in zip(loans, entry_ids, strict=True):
        principal, interest = balances[w.id]
        if principal > 0:
            lines.append((entry_id, account_ids[_loan_account_code(w, "principal")], principal))
        if interest > 0:
            lines.append((entry_id, account_ids[_loan_account_code(w, "interest")], interest))
        lines.append((entry_id, opening.id, -(principal + interest)))
        total += principal + interest
    _lines_insert(lines)
    moved = db.session.execute(
        update(Account)
        .where(Account.id == opening.id, Account.status == "open")
        .values(balance=Account.balance - total)
        .execution_options(synchronize_session=False)
    )
    if cast(CursorResult[Any], moved).rowcount != 1:
        raise LedgerError(f"account {opening.code} is closed")
    db.session.expire(opening, ["balance"])


def _lines_insert(lines: list[tuple[int, int, Decimal]]) -> None:
    """Journal lines (entry, account, amount): COPY on PostgreSQL, as the installments;
    the amounts are the schedule's, rounded to the cent already."""
    copy_rows(JournalLine.__table__, ("entry_id", "account_id", "amount"), lines, rounded=True)


# The installment columns, in the order COPY sends them.
INSTALLMENT_COLUMNS = (
    "loan_id",
    "version",
    "superseded",
    "number",
    "due_date",
    "principal_due",
    "interest_due",
    "fees_due",
    "penalty_due",
    "principal_paid",
    "interest_paid",
    "fees_paid",
    "penalty_paid",
    "paid_on",
    "last_penalty_on",
    "penalty_reversals",
)


def _installments_insert(rows: list[tuple[object, ...]]) -> None:
    """The batch's schedules: on PostgreSQL by COPY, elsewhere by one executemany INSERT.

    A 10,000-loan book has some 174,000 installments, more rows than everything else it
    writes together; as an INSERT each of their eight money values goes through the Money
    type and psycopg parses a statement of thousands of placeholders, which alone took
    longer than the rest of the import. COPY streams the same rows (the schedule's amounts
    are rounded to the cent already) in the session's own transaction, so a batch stays
    all-or-nothing."""
    copy_rows(
        Installment.__table__,
        INSTALLMENT_COLUMNS,
        rows,
        rounded=True,
    )


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


def _accounts_insert(rows: list[dict[str, object]]) -> None:
    """Insert new accounts (at a zero balance) in one executemany."""
    if rows:
        now = utcnow()
        copy_dicts(
            Account.__table__,
            [{**row, "status": "open", "balance": ZERO, "created_at": now} for row in rows],
        )


def _is_paid(row: _Planned, installment: ScheduleRow, as_of: date) -> bool:
    """The status rule: closed pays everything, active what fell due before `as_of`."""
    if row.status == "closed":
        return True
    return row.status == "active" and installment.due_date < as_of


def _paid_on(installment: ScheduleRow, as_of: date) -> date:
    # A loan closed early has installments dated after the import; it was paid by then.
    return min(installment.due_date, as_of)


def _installments(loan_id: int, row: _Planned, as_of: date) -> list[tuple[object, ...]]:
    """The loan's installment rows, in INSTALLMENT_COLUMNS order (tuples, not dicts: a
    book has some 174,000 of them)."""
    result: list[tuple[object, ...]] = []
    for item in row.schedule.rows:
        paid = _is_paid(row, item, as_of)
        result.append(
            (
                loan_id,
                1,  # version
                False,  # superseded
                item.number,
                item.due_date,
                item.principal,  # principal_due
                item.interest,  # interest_due
                ZERO,  # fees_due
                ZERO,  # penalty_due
                item.principal if paid else ZERO,  # principal_paid
                item.interest if paid else ZERO,  # interest_paid
                ZERO,  # fees_paid
                ZERO,  # penalty_paid
                _paid_on(item, as_of) if paid else None,  # paid_on
                None,  # last_penalty_on
                0,  # penalty_reversals
            )
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
