"""The books' reports on paper and in spreadsheets: one Report laid out as CSV, XLSX and
PDF with the same figures; and the Statements console page: who may read it, every export
audited, the XLSX readable."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from openpyxl import load_workbook

from app.services.books.exports import Report, ReportRow, report_csv, report_pdf, report_xlsx


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
