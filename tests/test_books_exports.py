"""The books' reports on paper and in spreadsheets: one Report laid out as CSV, XLSX and
PDF with the same figures; and the Statements console page: who may read it, every export
audited, the XLSX readable."""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openpyxl import load_workbook
from sqlalchemy import select

from app.extensions import db
from app.models import AuditLog
from app.services.books import chart_ensure
from app.services.books.exports import Report, ReportRow, report_csv, report_pdf, report_xlsx
from app.services.members import member_buy_shares, member_deposit
from tests.factories import make_member
from tests.helpers import browse as _browse
from tests.helpers import login, staff


def _report(sheet: str = "Balance sheet") -> Report:
    return Report(
        title="Statement of financial position",
        subtitle="As at 30 November 2026",
        columns=["2026-11-30", "2026-10-31"],
        rows=[
            ReportRow("Assets", [None, None], bold=True),
            ReportRow("Cash at branch", [Decimal("1234.5"), Decimal("0")], level=1, code="1110"),
            ReportRow("Loan-loss provision", [Decimal("-200"), None], level=1, code="1250"),
            ReportRow("Total assets", [Decimal("1034.50"), Decimal("0")], bold=True),
        ],
        sheet=sheet,
        notes=["Contra-assets show as negatives."],
    )


def test_csv_has_codes_labels_and_plain_amounts() -> None:
    text = report_csv(_report()).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["Statement of financial position"]
    assert rows[2] == ["Code", "Line", "2026-11-30", "2026-10-31"]
    assert rows[4] == ["1110", "  Cash at branch", "1234.50", "0.00"]
    assert rows[5] == ["1250", "  Loan-loss provision", "-200.00", ""]
    assert rows[-1] == ["Contra-assets show as negatives."]


def test_xlsx_reads_back_numbers_formatted_and_bold_rows() -> None:
    data = report_xlsx([_report(), _report("Balance sheet")])  # a second sheet of one name
    book = load_workbook(io.BytesIO(data))
    assert book.sheetnames == ["Balance sheet", "Balance sheet (2)"]
    sheet = book["Balance sheet"]
    assert sheet["A1"].value == "Statement of financial position"
    assert sheet["A2"].value == "As at 30 November 2026"
    assert [c.value for c in sheet[4]] == ["Line", "2026-11-30", "2026-10-31", "Code"]
    cash = sheet[6]
    assert cash[0].value == "Cash at branch" and cash[0].alignment.indent == 1
    assert cash[1].value == 1234.5 and cash[1].number_format == "#,##0.00"
    assert cash[3].value == "1110"
    assert sheet[7][1].value == -200 and sheet[7][2].value is None
    total = sheet[8]
    assert total[0].font.bold and total[1].font.bold and total[1].value == 1034.5


def test_pdf_is_a_pdf_with_the_title_and_figures() -> None:
    data = report_pdf([_report()])
    assert data.startswith(b"%PDF")
    assert b"Statement of financial position" in data
    assert b"1,234.50" in data and b"\\(200.00\\)" in data  # PDF escapes parentheses


# -- the console ----------------------------------------------------------------------------

BS = "/admin/books/?kind=bs&as_of=2026-11-30&compare=year"


def browse(client: FlaskClient, path: str):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's read transaction would hold the write lock
    return _browse(client, path)


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    email = staff(role)
    db.session.commit()
    login(client, email)
    return client


def _money() -> None:
    """30,000 deposited in 2026, 4,000 of it in shares: the balance sheet's figures."""
    chart_ensure()
    member = make_member()
    member_deposit(member_id=member.id, amount="30000", reference="D1", value_date=date(2026, 2, 1))
    member_buy_shares(
        member_id=member.id, amount="4000", reference="S1", value_date=date(2026, 2, 2)
    )
    db.session.commit()


def _audits() -> list[AuditLog]:
    db.session.expire_all()
    return list(db.session.scalars(select(AuditLog).where(AuditLog.action == "books.export")))


@pytest.mark.parametrize("role", ["branch_manager", "compliance", "auditor", "admin"])
def test_finance_roles_read_the_balance_sheet_and_drill_down(app: Flask, role: str) -> None:
    _money()
    client = signed_in(app, role)
    page = browse(client, BS)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Statement of financial position" in text and "30,000.00" in text
    # The deposits' figure links to its journal lines: one deposit, less the shares.
    link = re.search(r'<tr id="line-2110".*?<a href="([^"]+)">26,000.00</a>', text, re.S)
    assert link is not None
    drill = browse(client, link.group(1).replace("&amp;", "&"))
    assert drill.status_code == 200
    body = drill.get_data(as_text=True)
    assert 'id="drill-count">2<' in body and 'id="drill-figure">26,000.00<' in body


def test_a_loan_officer_is_refused(app: Flask) -> None:
    _money()
    client = signed_in(app, "loan_officer")
    assert browse(client, BS).status_code == 403
    assert browse(client, "/admin/books/export.xlsx?kind=bs&as_of=2026-11-30").status_code == 403
    assert browse(client, "/admin/books/drill?code=2110&as_of=2026-11-30").status_code == 403
    assert _audits() == []


def test_every_export_is_audited_and_the_xlsx_reads_back(app: Flask) -> None:
    _money()
    client = signed_in(app, "auditor")
    reply = browse(client, "/admin/books/export.xlsx?kind=bs&as_of=2026-11-30&compare=year")
    assert reply.status_code == 200
    assert "balance-sheet-2026-11-30.xlsx" in reply.headers["Content-Disposition"]
    sheet = load_workbook(io.BytesIO(reply.data))["Balance sheet"]
    assert sheet["A1"].value == "Statement of financial position"
    figures = {row[0].value: row[1].value for row in sheet.iter_rows(min_row=5)}
    assert figures["Total assets"] == 30000
    assert figures["Member deposits"] == 26000 and figures["Share capital"] == 4000
    csv_reply = browse(client, "/admin/books/export.csv?kind=tb&as_of=2026-11-30")
    assert csv_reply.status_code == 200
    rows = list(csv.reader(io.StringIO(csv_reply.data.decode("utf-8-sig"))))
    assert rows[-1][1:] == ["Total", "30000.00", "30000.00"]
    pdf = browse(client, "/admin/books/export.pdf?kind=is&start=2026-01-01&end=2026-11-30")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    audits = _audits()
    assert [(a.object_id, a.after["format"]) for a in audits] == [  # type: ignore[index]
        ("bs", "xlsx"),
        ("tb", "csv"),
        ("is", "pdf"),
    ]
    assert all(a.actor == "staff:auditor@sacco.test" for a in audits)
    assert audits[0].after["as_of"] == "2026-11-30"  # type: ignore[index]


def test_a_bad_date_is_told_in_words_and_nothing_is_exported(app: Flask) -> None:
    _money()
    client = signed_in(app, "admin")
    page = browse(client, "/admin/books/?kind=bs&as_of=30-11-2026")
    assert page.status_code == 200
    assert "is not a date" in page.get_data(as_text=True)
    period = browse(client, "/admin/books/?kind=cf&start=2026-12-01&end=2026-01-01")
    assert "after it ends" in period.get_data(as_text=True)
    refused = browse(client, "/admin/books/export.csv?kind=is&start=2026-12-01&end=2026-01-01")
    assert refused.status_code == 200 and "after it ends" in refused.get_data(as_text=True)
    assert browse(client, "/admin/books/export.doc?kind=bs").status_code == 404
    assert _audits() == []


@pytest.mark.parametrize("kind", ["tb", "bs", "is", "soce", "cf"])
def test_each_statement_shows_with_its_exports(app: Flask, kind: str) -> None:
    _money()
    client = signed_in(app, "branch_manager")
    query = "as_of=2026-11-30" if kind in ("tb", "bs") else "start=2026-01-01&end=2026-11-30"
    page = browse(client, f"/admin/books/?kind={kind}&{query}&compare=previous")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert 'id="report-title"' in text and 'id="export-pdf"' in text
    assert "out by" not in text and "do not add up" not in text
