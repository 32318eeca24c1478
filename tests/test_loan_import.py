"""`sacco import loan-book`: CSV and XLSX, bad rows, --skip-bad, re-import, balances."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner
from openpyxl import Workbook
from sqlalchemy import func, select

from app.cli.demo import PRODUCTS
from app.extensions import db
from app.models import (
    Account,
    AuditLog,
    Installment,
    JournalEntry,
    JournalLine,
    Loan,
    LoanProduct,
    Member,
)
from app.selectors.loans import loan_debt, portfolio_at_risk
from app.services.ledger import account_get_or_create, ledger_check, member_account
from app.services.loan_import import COLUMNS, loan_book_import, loan_book_read
from app.services.loan_schedule import schedule_build
from app.services.loans import loan_account, loan_apply
from app.services.members import member_add
from app.services.staff import staff_add, staff_set_active
from tests.factories import make_member
from tests.helpers import PASSWORD
from tests.loan_factories import make_borrower, make_product

D = Decimal
AS_OF = date(2026, 3, 31)
TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "loan-book-template.csv"

# Customer ID, Name, Phone, Product, Principal, Rate, Term, Disbursed Date, Status
ACTIVE = [
    "C001",
    "Wanjiku Kamau",
    "0711000001",
    "DEV",
    "120000",
    "12",
    "12",
    "2025-10-15",
    "active",
]
ARREARS = [
    "C002",
    "Otieno Ochieng",
    "0722000002",
    "INSTANT",
    "5000",
    "90",
    "1",
    "2026-01-20",
    "arrears",
]
CLOSED = ["C003", "Akinyi Atieno", "0733000003", "DEV", "30000", "15", "6", "10/01/2024", "closed"]
BOOK = [ACTIVE, ARREARS, CLOSED]


@pytest.fixture(autouse=True)
def _ledger_balances(app: Flask) -> Iterator[None]:
    """Whatever a scenario did or refused, the journal and the cached balances agree."""
    yield
    db.session.rollback()
    assert ledger_check() == []


@pytest.fixture
def products(app: Flask) -> dict[str, LoanProduct]:
    dev = LoanProduct(**{**PRODUCTS[1], "min_rate": D("10"), "max_rate": D("24")})
    instant = LoanProduct(**PRODUCTS[0])
    db.session.add_all([dev, instant])
    db.session.commit()
    return {"DEV": dev, "INSTANT": instant}


def write_csv(folder: Path, rows: Sequence[Sequence[str]], header: Sequence[str] = COLUMNS) -> Path:
    path = folder / "book.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def run(runner: FlaskCliRunner, path: Path, *options: str) -> Result:
    db.session.commit()  # end the test's own transaction: SQLite would make the CLI wait
    return runner.invoke(
        args=["import", "loan-book", str(path), "--as-of-date", AS_OF.isoformat(), *options]
    )


def counts() -> dict[str, int]:
    tables = (Member, Loan, Installment, Account, JournalEntry, JournalLine, AuditLog)
    result = {
        model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
        for model in tables
    }
    db.session.rollback()
    return result


REFUSED = "(fix them, or use --skip-bad to import the other rows)"
NOTHING = {
    "members": 0,
    "loans": 0,
    "installments": 0,
    "accounts": 0,
    "journal_entries": 0,
    "journal_lines": 0,
    "audit_log": 0,
}


def loan_of(customer_id: str) -> Loan:
    return db.session.scalars(
        select(Loan).join(Member).where(Member.external_ref == customer_id)
    ).one()


def balance(code: str) -> Decimal:
    return db.session.scalar(select(Account.balance).where(Account.code == code)) or D("0")


def expected_owed(product: LoanProduct, row: list[str]) -> tuple[Decimal, Decimal]:
    """Outstanding principal and interest, worked out from the schedule independently."""
    principal, rate, term, disbursed, status = D(row[4]), D(row[5]), int(row[6]), row[7], row[8]
    schedule = schedule_build(
        principal=principal,
        annual_rate=rate,
        installments=term,
        interest_method=product.interest_method,
        amortization=product.amortization,
        frequency=product.frequency,
        multiple_of=product.installment_multiple,
        start_date=date.fromisoformat(disbursed),
    )
    unpaid = [r for r in schedule.rows if status == "arrears" or r.due_date >= AS_OF]
    return sum((r.principal for r in unpaid), D("0")), sum((r.interest for r in unpaid), D("0"))


# --- importing -------------------------------------------------------------------------


def test_csv_import_creates_members_loans_schedules_and_balances_brought_forward(
    runner: FlaskCliRunner, products: dict[str, LoanProduct], tmp_path: Path
) -> None:
    result = run(runner, write_csv(tmp_path, BOOK))

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout.strip() == (
        "imported 3 loans (3 members created), skipped 0 already imported, 0 bad rows skipped"
    )
    member = db.session.scalars(select(Member).where(Member.external_ref == "C001")).one()
    assert (member.name, member.phone, member.status) == ("Wanjiku Kamau", "254711000001", "active")
    assert member.member_no == f"M{member.id:06d}"

    active, arrears, closed = loan_of("C001"), loan_of("C002"), loan_of("C003")
    dev = db.session.get(LoanProduct, products["DEV"].id)
    assert active.loan_no == f"L{active.id:06d}"
    assert active.external_ref == "import:C001:2025-10-15:DEV:120000.00"
    assert (active.status, active.channel, active.disbursed_on) == (
        "active",
        "import",
        date(2025, 10, 15),
    )
    assert (active.principal, active.annual_rate, active.term) == (D("120000.00"), D("12"), 12)
    assert (active.interest_method, active.amortization, active.frequency) == (
        dev.interest_method,
        dev.amortization,
        dev.frequency,
    )
    assert active.installment_multiple == dev.installment_multiple
    assert closed.annual_rate == D("15") and closed.term == 6  # from the row, not the product

    # active: installments due before the as-of date are paid, on their due dates.
    rows = active.installments
    assert len(rows) == 12 and rows[0].due_date == date(2025, 11, 15)
    paid = [r for r in rows if r.due_date < AS_OF]
    assert len(paid) == 5
    assert all(r.outstanding == 0 and r.paid_on == r.due_date for r in paid)
    assert all(r.total_paid == 0 and r.paid_on is None for r in rows if r.due_date >= AS_OF)
    # arrears: nothing is paid; closed: everything is, and nothing is owed.
    assert all(r.total_paid == 0 and r.paid_on is None for r in arrears.installments)
    assert closed.status == "closed" and closed.closed_on == date(2024, 7, 10)
    assert all(r.outstanding == 0 and r.paid_on == r.due_date for r in closed.installments)
    assert loan_debt(loan_id=closed.id).total == 0

    expected = {
        "C001": expected_owed(products["DEV"], ACTIVE),
        "C002": expected_owed(products["INSTANT"], ARREARS),
    }
    for customer_id, (principal, interest) in expected.items():
        loan = loan_of(customer_id)
        assert balance(f"LNP-{loan.loan_no}") == principal > 0
        assert balance(f"LNI-{loan.loan_no}") == interest > 0
        debt = loan_debt(loan_id=loan.id)
        assert (debt.principal, debt.interest) == (principal, interest)
    total = sum((p + i for p, i in expected.values()), D("0"))
    assert balance("GL-OPENING") == -total

    entry = db.session.scalars(select(JournalEntry).where(JournalEntry.loan_id == active.id)).one()
    assert entry.idempotency_key == "import:import:C001:2025-10-15:DEV:120000.00"
    assert (entry.kind, entry.value_date, entry.member_id) == ("opening_balance", AS_OF, member.id)
    assert db.session.scalar(select(func.count()).where(JournalEntry.loan_id == closed.id)) == 0
    assert balance(f"LNP-{closed.loan_no}") == 0

    # Accounts are the ones the loan and member services use, not look-alikes.
    before = counts()["accounts"]
    for loan in (active, arrears):
        assert loan_account(loan, "principal").code == f"LNP-{loan.loan_no}"
        assert loan_account(loan, "interest").member_id == loan.member_id
    assert member_account(member, "savings").code == f"SAV-{member.member_no}"
    assert member_account(member, "share_capital").code == f"SHR-{member.member_no}"
    assert counts()["accounts"] == before
    actions = db.session.scalars(select(AuditLog.action)).all()
    assert sorted(actions) == ["loan.import"] * 3 + ["member.add"] * 3


def test_xlsx_import_reads_numbers_dates_and_percent_cells(
    runner: FlaskCliRunner, products: dict[str, LoanProduct], tmp_path: Path
) -> None:
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(
        [" customer id ", "NAME", "Phone", "product", "Principal", "Rate", "Term"]
        + ["Disbursed date", "STATUS"]
    )
    sheet.append(
        [
            1001,
            "Wanjiku Kamau",
            711000001,
            "development loan",
            120000.0,
            0.12,
            12,
            datetime(2025, 10, 15),
            "Performing",
        ]
    )
    sheet.cell(row=2, column=6).number_format = "0%"
    sheet.append(
        [
            1002,
            "Otieno Ochieng",
            254722000002,
            "instant",
            5000.5,
            90,
            1.0,
            date(2026, 1, 20),
            "OVERDUE",
        ]
    )
    sheet.append([None] * 9)  # spreadsheets keep empty rows
    path = tmp_path / "book.xlsx"
    workbook.save(path)

    result = run(runner, path)

    assert result.exit_code == 0, result.output
    assert "imported 2 loans (2 members created)" in result.stdout
    first, second = loan_of("1001"), loan_of("1002")
    assert first.member.phone == "254711000001"
    assert (first.annual_rate, first.term, first.principal) == (D("12"), 12, D("120000.00"))
    assert first.external_ref == "import:1001:2025-10-15:DEV:120000.00"
    assert (second.principal, second.term, second.product.code) == (D("5000.50"), 1, "INSTANT")
    assert second.member.phone == "254722000002"
    assert all(r.paid_on is None for r in second.installments)  # "overdue" = arrears


def test_status_words_product_names_and_dates_are_read_in_their_common_forms(
    runner: FlaskCliRunner, products: dict[str, LoanProduct], tmp_path: Path
) -> None:
    rows = [
        [
            "C1",
            "A One",
            "+254 711 000 001",
            "Development Loan",
            "50,000",
            "12%",
            "12",
            "15/10/2025",
            "Current",
        ],
        ["C2", "B Two", "0722-000-002", "dev", "40000.5", "10", "12", "2025-10-15", "late"],
        ["C3", "C Three", "733000003", "Instant Loan", "1000", "90", "1", "2025-01-01", "REPAID"],
    ]
    header = [
        "Status",
        "Disbursed Date",
        "Term",
        "Rate",
        "Principal",
        "Product",
        "Phone",
        "Name",
        "Customer ID",
        "Notes",
    ]
    reordered = [list(reversed(row)) + ["ignored"] for row in rows]

    result = run(runner, write_csv(tmp_path, reordered, header=header))

    assert result.exit_code == 0, result.output
    assert "imported 3 loans (3 members created)" in result.stdout
    assert loan_of("C1").principal == D("50000.00") and loan_of("C1").disbursed_on == date(
        2025, 10, 15
    )
    assert any(r.paid_on for r in loan_of("C1").installments)  # "current" = active
    assert all(r.paid_on is None for r in loan_of("C2").installments)  # "late" = arrears
    assert loan_of("C3").status == "closed"
    assert loan_of("C2").member.phone == "254722000002"


def test_template_imports(runner: FlaskCliRunner, products: dict[str, LoanProduct]) -> None:
    result = run(runner, TEMPLATE)

    assert result.exit_code == 0, result.output
    assert "imported 2 loans (2 members created)" in result.stdout


def test_help_names_the_columns_and_the_template(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["import", "loan-book", "--help"])

    assert result.exit_code == 0
    assert "templates/loan-book-template.csv" in result.stdout
    assert "--skip-bad" in result.stdout and "Disbursed Date" in result.stdout


# --- importing again -------------------------------------------------------------------


def test_importing_the_same_book_again_creates_nothing(
    runner: FlaskCliRunner, products: dict[str, LoanProduct], tmp_path: Path
) -> None:
    path = write_csv(tmp_path, BOOK)
    assert run(runner, path).exit_code == 0
    before = counts()
    opening = balance("GL-OPENING")

    again = run(runner, path)

    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == (
        "imported 0 loans (0 members created), skipped 3 already imported, 0 bad rows skipped"
    )
    assert counts() == before
    assert balance("GL-OPENING") == opening


def test_the_same_book_as_xlsx_is_recognised_as_already_imported(
    runner: FlaskCliRunner, products: dict[str, LoanProduct], tmp_path: Path
) -> None:
    assert run(runner, write_csv(tmp_path, BOOK)).exit_code == 0
    before = counts()
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(list(COLUMNS))
    for row in BOOK:
        day = datetime.strptime(row[7], "%d/%m/%Y" if "/" in row[7] else "%Y-%m-%d")
        sheet.append(row[:4] + [float(row[4]), int(row[5]), int(row[6]), day, row[8]])
    workbook.save(tmp_path / "book.xlsx")

    again = run(runner, tmp_path / "book.xlsx")

    assert again.exit_code == 0, again.output
    assert "imported 0 loans (0 members created), skipped 3 already imported" in again.stdout
    assert counts() == before


def test_a_failed_batch_keeps_what_was_committed_and_a_rerun_finishes(
    app: Flask, products: dict[str, LoanProduct], tmp_path: Path
) -> None:
    # An account already holding the code the third loan's receivable will get makes that
    # batch fail at the database, as a real constraint violation would.
    account_get_or_create(code="LNP-L000003", kind="loan_principal", name="in the way")
    db.session.commit()
    path = write_csv(tmp_path, [CLOSED, ACTIVE, ARREARS])

    report = loan_book_import(
        rows=loan_book_read(path=path), skip_bad=False, as_of=AS_OF, batch_size=2
    )

    assert report.error is not None and report.error.startswith(
        "rows on lines 4-4 were not imported"
    )
    assert "IntegrityError" in report.error and "\n" not in report.error
    assert (report.imported, report.members_created) == (2, 2)
    assert {loan.external_ref.split(":")[1] for loan in db.session.scalars(select(Loan))} == {
        "C003",
        "C001",
    }
    assert counts()["journal_entries"] == 1  # the active loan's; closed loans have none
    # Nothing of the failed batch stays: not its schedule (COPY on PostgreSQL, in the
    # batch's transaction), not its member, audit rows or lines.
    assert counts() == {
        "members": 2,
        "loans": 2,
        "installments": 6 + 12,
        # savings and shares, the active loan's receivables, GL-OPENING, the one in the way
        "accounts": 2 * 2 + 2 + 1 + 1,
        "journal_entries": 1,
        "journal_lines": 3,
        "audit_log": 4,
    }

    db.session.delete(
        db.session.scalars(select(Account).where(Account.code == "LNP-L000003")).one()
    )
    db.session.commit()
    rerun = loan_book_import(
        rows=loan_book_read(path=path), skip_bad=False, as_of=AS_OF, batch_size=2
    )

    assert rerun.error is None
    assert (rerun.imported, rerun.members_created, rerun.already_imported) == (1, 1, 2)
    # Two openings, and the penalty the nightly arrears rule charges the loan in arrears
    # (run on the imported loans at once).
    assert counts()["loans"] == 3 and counts()["journal_entries"] == 3


def test_the_cli_reports_a_failed_batch_in_one_line(
    runner: FlaskCliRunner, products: dict[str, LoanProduct], tmp_path: Path
) -> None:
    account_get_or_create(code="LNP-L000001", kind="loan_principal", name="in the way")
    result = run(runner, write_csv(tmp_path, [ACTIVE]))

    assert result.exit_code == 1
    assert "imported 0 loans (0 members created)" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: import stopped: rows on lines 2-2 were not imported")
    assert counts()["loans"] == 0


# --- existing members ------------------------------------------------------------------


def test_existing_members_are_found_by_customer_id_then_by_phone(
    runner: FlaskCliRunner, products: dict[str, LoanProduct], tmp_path: Path
) -> None:
    by_phone = make_member(phone="0711000001")  # joined here first: no external_ref
    by_id = member_add(name="Otieno O.", phone="0799000099", external_ref="C002")
    ids = (by_phone.id, by_id.id)

    result = run(runner, write_csv(tmp_path, BOOK))

    assert result.exit_code == 0, result.output
    assert "imported 3 loans (1 member created)" in result.stdout
    assert loan_of("C002").member_id == ids[1]  # matched by Customer ID, phone not used
    c001 = db.session.scalars(select(Loan).where(Loan.external_ref.like("import:C001:%"))).one()
    assert c001.member_id == ids[0]
    assert db.session.get(Member, ids[0]).external_ref is None


def test_a_phone_held_by_another_customer_is_a_bad_row(
    runner: FlaskCliRunner, products: dict[str, LoanProduct], tmp_path: Path
) -> None:
    holder = member_add(name="Someone Else", phone="0711000001", external_ref="X9")

    result = run(runner, write_csv(tmp_path, BOOK))

    assert result.exit_code == 1
    assert (
        f"line 2: phone 254711000001 belongs to member {holder.member_no} (Customer ID X9)"
        in result.stderr
    )


# --- bad rows --------------------------------------------------------------------------


def _with(row: list[str], **changes: str) -> list[str]:
    index = {"cid": 0, "name": 1, "phone": 2, "product": 3, "principal": 4, "rate": 5}
    index |= {"term": 6, "date": 7, "status": 8}
    changed = list(row)
    for key, value in changes.items():
        changed[index[key]] = value
    return changed


BAD_ROWS = [
    (_with(ARREARS, principal="-5000"), "Principal must be more than zero (-5000)"),
    (_with(ARREARS, principal="0"), "Principal must be more than zero (0)"),
    (_with(ARREARS, principal="100.005"), "Principal has fractions of a cent (100.005)"),
    (_with(ARREARS, principal="lots"), "Principal is not a number (lots)"),
    (_with(ARREARS, principal=""), "Principal is required"),
    (_with(ACTIVE, rate="30"), "Rate 30% is outside 10-24% for DEV"),
    (_with(ACTIVE, rate="9.5"), "Rate 9.5% is outside 10-24% for DEV"),
    (_with(ARREARS, rate="120"), "Rate 120% is outside 0-100% for INSTANT"),
    (_with(ACTIVE, rate="twelve"), "Rate 'twelve' is not a number"),
    (_with(ACTIVE, term="48"), "Term 48 is outside 3-36 months for DEV"),
    (_with(ACTIVE, term="0"), "Term 0 is outside 3-36 months for DEV"),
    (_with(ACTIVE, term="12.5"), "Term '12.5' is not a whole number of periods"),
    (_with(ACTIVE, product="GOLD"), "unknown product 'GOLD'"),
    (_with(ACTIVE, date="2025-13-01"), "Disbursed Date '2025-13-01' is not a date"),
    (_with(ACTIVE, date="2026-04-01"), "Disbursed Date 2026-04-01 is after 2026-03-31"),
    (_with(ACTIVE, phone="12345"), "not a Kenyan mobile number: '12345'"),
    (
        _with(ACTIVE, status="written off"),
        "Status 'written off' is not one of active, arrears, closed",
    ),
    (_with(ACTIVE, name=" "), "Name is required"),
    (_with(ACTIVE, cid=""), "Customer ID is required"),
    (_with(ACTIVE, cid="C" * 41), "Customer ID is longer than 40 characters"),
    (_with(ACTIVE, cid="C" * 30), "Customer ID is too long to key the loan"),
    (
        _with(ACTIVE, term="3", date="2025-01-10"),
        "Status is active but every installment fell due before 2026-03-31",
    ),
    (
        _with(ARREARS, date="2026-03-20"),
        "Status is arrears but the first installment falls due on 2026-04-20, "
        "not before 2026-03-31",
    ),
    (
        _with(CLOSED, cid="C001"),
        "Customer ID C001 has phone 254711000001 on line 2, not 254733000003",
    ),
    (
        _with(CLOSED, phone="0711000001"),
        "phone 254711000001 is given for Customer ID C001 on line 2",
    ),
    (list(ACTIVE), "the same loan (customer, date, product, principal) as line 2"),
]


@pytest.mark.parametrize(("row", "reason"), BAD_ROWS, ids=[reason[:40] for _, reason in BAD_ROWS])
def test_a_bad_row_is_refused_with_its_line_and_reason_and_nothing_is_written(
    runner: FlaskCliRunner,
    products: dict[str, LoanProduct],
    tmp_path: Path,
    row: list[str],
    reason: str,
) -> None:
    result = run(runner, write_csv(tmp_path, [ACTIVE, row]))

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("line 3: ") and reason in lines[0], lines
    assert lines[-1] == f"error: 1 bad row(s), nothing imported {REFUSED}"
    assert counts() == NOTHING


def test_every_bad_row_is_reported_with_all_its_reasons(
    runner: FlaskCliRunner, products: dict[str, LoanProduct], tmp_path: Path
) -> None:
    rows = [
        _with(ACTIVE, principal="0", rate="99"),
        ARREARS,
        _with(CLOSED, product="GOLD"),
        _with(CLOSED, cid="C004", phone="0744000004", status="?"),
    ]

    result = run(runner, write_csv(tmp_path, rows))

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "line 2: Principal must be more than zero (0); Rate 99% is outside 10-24% for DEV",
        "line 4: unknown product 'GOLD'",
        "line 5: Status '?' is not one of active, arrears, closed",
        f"error: 3 bad row(s), nothing imported {REFUSED}",
    ]
    assert counts() == NOTHING


def test_skip_bad_imports_the_good_rows(
    runner: FlaskCliRunner, products: dict[str, LoanProduct], tmp_path: Path
) -> None:
    # The customer's first row is bad, their second good: the member comes from the second.
    rows = [ACTIVE, _with(ARREARS, rate="120"), _with(ARREARS, date="2026-01-21"), CLOSED]

    result = run(runner, write_csv(tmp_path, rows), "--skip-bad")

    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == ["line 3: Rate 120% is outside 0-100% for INSTANT"]
    assert result.stdout.strip() == (
        "imported 3 loans (3 members created), skipped 0 already imported, 1 bad row skipped"
    )
    assert loan_of("C002").disbursed_on == date(2026, 1, 21)


# --- files that cannot be read ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "book.txt",
            b"Customer ID\n",
            "error: book.txt: unknown format (expected a .csv or .xlsx file)",
        ),
        ("book.xlsx", b"not a zip", "error: cannot read book.xlsx: not an XLSX workbook"),
        (
            "book.csv",
            "Customer ID,Name\nC1,Wañjiku\n".encode("latin-1"),
            "error: cannot read book.csv: not UTF-8 text",
        ),
        ("book.csv", b"", "error: the file is empty"),
        (
            "book.csv",
            b"Customer ID,Name,Phone,Product,Principal,Term,Disbursed Date\n",
            "error: missing columns: Rate, Status (the header must have: Customer ID,",
        ),
        ("missing.csv", None, "error: cannot read missing.csv: No such file or directory"),
    ],
)
def test_a_file_that_cannot_be_read_is_one_error_line(
    runner: FlaskCliRunner,
    products: dict[str, LoanProduct],
    tmp_path: Path,
    name: str,
    content: bytes | None,
    message: str,
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)

    result = run(runner, path)

    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(message), result.stderr
    assert counts() == NOTHING


def test_a_bad_as_of_date_is_one_error_line(runner: FlaskCliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        args=["import", "loan-book", str(write_csv(tmp_path, BOOK)), "--as-of-date", "31/03/2026"]
    )

    assert result.exit_code == 1
    assert result.stderr == "error: --as-of-date must be YYYY-MM-DD, not '31/03/2026'\n"


# --- after the import ------------------------------------------------------------------


def test_the_daily_arrears_job_picks_up_loans_in_arrears_and_not_current_ones(
    runner: FlaskCliRunner, products: dict[str, LoanProduct], tmp_path: Path
) -> None:
    assert run(runner, write_csv(tmp_path, BOOK)).exit_code == 0

    job = runner.invoke(args=["jobs", "run", "loan-arrears", "--as-of-date", AS_OF.isoformat()])

    assert job.exit_code == 0, job.output
    assert loan_of("C002").days_past_due == (AS_OF - date(2026, 2, 20)).days
    assert loan_of("C001").days_past_due == 0


# --- right after the import: days late, PAR30 and who follows the loans up -------------


def test_an_imported_loan_in_arrears_shows_its_days_late_and_par30_at_once(
    runner: FlaskCliRunner, products: dict[str, LoanProduct], tmp_path: Path
) -> None:
    result = run(runner, write_csv(tmp_path, BOOK))

    assert result.exit_code == 0, result.output
    late, current = loan_of("C002"), loan_of("C001")
    # The nightly rule, run on the imported loans for the book's date: no job needed.
    assert late.days_past_due == (AS_OF - date(2026, 2, 20)).days == 39
    assert (late.aging_bucket, late.in_default) == ("31-60", True)
    assert (current.days_past_due, current.aging_bucket) == (0, "current")
    at_risk = portfolio_at_risk(as_of=AS_OF)
    assert at_risk.par30_principal == D("5000.00") and at_risk.par30 > 0
    assert late.officer_id is None  # no officer given and no DEFAULT_LOAN_OFFICER

    # The nightly job, run after it, finds nothing more to change.
    job = runner.invoke(args=["jobs", "run", "loan-arrears", "--as-of-date", AS_OF.isoformat()])
    assert job.exit_code == 0 and '"records_updated": 0' in job.output, job.output


def test_imported_loans_are_given_the_officer_named_or_the_default_officer(
    app: Flask,
    runner: FlaskCliRunner,
    products: dict[str, LoanProduct],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    officer = staff_add(email="officer@sacco.test", role="loan_officer", password=PASSWORD)
    default = staff_add(email="default@sacco.test", role="loan_officer", password=PASSWORD)
    officer_id, default_id = officer.id, default.id
    db.session.commit()
    first = write_csv(tmp_path, [ACTIVE])
    assert run(runner, first, "--officer", "OFFICER@sacco.test").exit_code == 0
    assert loan_of("C001").officer_id == officer_id

    unknown = run(runner, write_csv(tmp_path, [ARREARS]), "--officer", "nobody@sacco.test")
    assert unknown.exit_code == 1
    assert (
        unknown.stderr
        == "error: --officer nobody@sacco.test: no active staff member has that email\n"
    )

    settings = app.config["SETTINGS"]
    monkeypatch.setitem(
        app.config,
        "SETTINGS",
        dataclasses.replace(settings, DEFAULT_LOAN_OFFICER="Default@sacco.test"),
    )
    assert run(runner, write_csv(tmp_path, [ARREARS])).exit_code == 0
    assert loan_of("C002").officer_id == default_id


def test_an_auto_approved_loan_goes_to_the_default_officer_too(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No staff member decided an instant loan: DEFAULT_LOAN_OFFICER follows it up."""
    instant = make_product("INSTANT")
    member = make_borrower(savings=5000)
    before = loan_apply(member_id=member.id, product_id=instant.id, amount=1000, as_of=AS_OF)
    assert before.status == "approved" and before.officer_id is None  # no default set

    default = staff_add(email="default@sacco.test", role="loan_officer", password=PASSWORD)
    db.session.commit()
    settings = app.config["SETTINGS"]
    monkeypatch.setitem(
        app.config, "SETTINGS", dataclasses.replace(settings, DEFAULT_LOAN_OFFICER=default.email)
    )
    other = make_borrower(savings=5000)
    loan = loan_apply(member_id=other.id, product_id=instant.id, amount=1000, as_of=AS_OF)
    assert loan.status == "approved" and loan.officer_id == default.id


def test_a_deactivated_default_officer_is_given_no_more_loans(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staff who left keep their login row, switched off: DEFAULT_LOAN_OFFICER still naming
    them must not hand them an instant loan to follow up. (Mutation testing, issue 23.)"""
    instant = make_product("INSTANT")
    admin = staff_add(email="admin@sacco.test", role="admin", password=PASSWORD)
    gone = staff_add(email="gone@sacco.test", role="loan_officer", password=PASSWORD)
    staff_set_active(user_id=gone.id, active=False, staff=admin)
    settings = app.config["SETTINGS"]
    monkeypatch.setitem(
        app.config, "SETTINGS", dataclasses.replace(settings, DEFAULT_LOAN_OFFICER=gone.email)
    )
    loan = loan_apply(
        member_id=make_borrower(savings=5000).id, product_id=instant.id, amount=1000, as_of=AS_OF
    )
    assert loan.status == "approved" and loan.officer_id is None


# --- the same result, written in bulk --------------------------------------------------

# A small book of every kind (monthly declining and flat, weekly, cents, a customer with
# two loans, active, arrears and closed) whose results were taken from the import as it
# was before it wrote in bulk (one journal_post per loan): the bulk path must give the
# same rows, to the cent.
PINNED_BOOK = [
    ["C101", "Amani Juma", "0711100101", "DEV", "250000", "12", "24", "2025-06-15", "active"],
    ["C102", "Baraka Ali", "0711100102", "DEV", "80000.50", "12", "12", "10/01/2025", "arrears"],
    ["C103", "Chiku Wafula", "0711100103", "INSTANT", "3000", "90", "1", "2026-02-01", "late"],
    ["C101", "Amani Juma", "0711100101", "INSTANT", "1500.25", "90", "1", "2026-03-20", "current"],
    ["C104", "Dalia Njeri", "0711100104", "WEEK", "20000", "18", "26", "2026-01-05", "active"],
    ["C105", "Eliud Kiprop", "0711100105", "WEEK", "12000", "24", "10", "2025-12-01", "arrears"],
    ["C106", "Fatuma Said", "0711100106", "DEV", "40000", "15", "6", "2024-05-01", "closed"],
]


def pinned_figures() -> dict[str, object]:
    """Per loan (by customer and date): status, receivable balances, schedule sums and the
    arrears standing; and the totals of the GL accounts and of every table written."""
    loans = {}
    for loan in db.session.scalars(select(Loan).order_by(Loan.id)):
        rows = [r for r in loan.installments if not r.superseded]
        key = ":".join(loan.external_ref.split(":")[1:3])
        loans[key] = (
            loan.status,
            str(balance(f"LNP-{loan.loan_no}")),
            str(balance(f"LNI-{loan.loan_no}")),
            str(balance(f"LNX-{loan.loan_no}")),
            len(rows),
            str(sum((r.principal_due for r in rows), D("0"))),
            str(sum((r.interest_due for r in rows), D("0"))),
            str(sum((r.total_paid for r in rows), D("0"))),
            str(sum((r.penalty_due for r in rows), D("0"))),
            (loan.days_past_due, loan.aging_bucket, loan.in_default),
        )
    return {
        "loans": loans,
        "GL-OPENING": str(balance("GL-OPENING")),
        "GL-INCOME-PENALTY": str(balance("GL-INCOME-PENALTY")),
        "counts": counts(),
    }


@pytest.fixture
def weekly(app: Flask) -> LoanProduct:
    product = LoanProduct(
        **{
            **PRODUCTS[1],
            "code": "WEEK",
            "name": "Weekly",
            "frequency": "weekly",
            "min_term": 4,
            "max_term": 52,
            "min_rate": D("12"),
            "max_rate": D("24"),
        }
    )
    db.session.add(product)
    db.session.commit()
    return product


@pytest.mark.parametrize("batch_size", [1000, 2])
def test_a_book_imports_to_the_same_figures_as_before_the_bulk_writer(
    app: Flask,
    products: dict[str, LoanProduct],
    weekly: LoanProduct,
    tmp_path: Path,
    batch_size: int,
) -> None:
    path = write_csv(tmp_path, PINNED_BOOK)

    report = loan_book_import(
        rows=loan_book_read(path=path), skip_bad=False, as_of=AS_OF, batch_size=batch_size
    )

    assert report.error is None and (report.imported, report.members_created) == (7, 6)
    assert pinned_figures() == PINNED_FIGURES
    assert ledger_check() == []
    db.session.rollback()

    again = loan_book_import(rows=loan_book_read(path=path), skip_bad=False, as_of=AS_OF)

    assert (again.imported, again.already_imported, again.error) == (0, 7, None)
    assert pinned_figures() == PINNED_FIGURES


# Taken from the import before the bulk writer, on this book (the same on SQLite and
# PostgreSQL): status, principal, interest and penalty receivables, installments, their
# principal, interest, paid and penalty sums, and (days past due, bucket, default).
PINNED_FIGURES: dict[str, object] = {
    "loans": {
        "C101:2025-06-15": (
            "active",
            "163172.48",
            "13357.44",
            "0",
            24,
            "250000.00",
            "32441.92",
            "105912.00",
            "0.00",
            (0, "current", False),
        ),
        "C102:2025-01-10": (
            "active",
            "80000.50",
            "5294.84",
            "1705.91",
            12,
            "80000.50",
            "5294.84",
            "0.00",
            "1705.91",
            (414, "90+", True),
        ),
        "C103:2026-02-01": (
            "active",
            "3000.00",
            "225.00",
            "161.25",
            1,
            "3000.00",
            "225.00",
            "0.00",
            "161.25",
            (30, "1-30", False),
        ),
        "C101:2026-03-20": (
            "active",
            "1500.25",
            "112.52",
            "0",
            1,
            "1500.25",
            "112.52",
            "0.00",
            "0.00",
            (0, "current", False),
        ),
        "C104:2026-01-05": (
            "active",
            "10988.50",
            "287.22",
            "0",
            26,
            "20000.00",
            "947.72",
            "9672.00",
            "0.00",
            (0, "current", False),
        ),
        "C105:2025-12-01": (
            "active",
            "12000.00",
            "306.64",
            "246.13",
            10,
            "12000.00",
            "306.64",
            "0.00",
            "246.13",
            (113, "90+", True),
        ),
        "C106:2024-05-01": (
            "closed",
            "0",
            "0",
            "0",
            6,
            "40000.00",
            "1768.19",
            "41768.19",
            "0.00",
            (0, "current", False),
        ),
    },
    "GL-OPENING": "-290245.39",
    "GL-INCOME-PENALTY": "-2113.29",
    "counts": {
        "members": 6,
        "loans": 7,
        "installments": 80,
        "accounts": 29,
        "journal_entries": 29,
        "journal_lines": 64,
        "audit_log": 13,
    },
}
