"""A report of the books (a statement, a return) as CSV, XLSX or PDF.

Every statement and return is built as one `Report`: a title, columns and rows, each row a
label with a value per column. The three writers only lay it out, so what the console
shows, what the spreadsheet holds and what the PDF prints are the same figures.

CSV amounts are plain (1234.50) so a spreadsheet reads them as numbers; XLSX cells are
numbers formatted #,##0.00 (a number Excel can add up, not text); the PDF is for people and
shows 1,234.50. fpdf2's core fonts hold Latin-1 only, so text is folded to it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from decimal import Decimal

from app.csvout import csv_bytes
from app.money import round_money

MONEY_FORMAT = "#,##0.00"
INDENT = "  "  # per level in CSV/PDF labels; XLSX uses the cell's own indent


@dataclass
class ReportRow:
    """One line of a report. `code` is the chart line a figure drills down to; `check` a
    flag shown beside it (a ratio below its minimum, a total that does not tie)."""

    label: str
    values: list[Decimal | str | None]
    level: int = 0
    bold: bool = False
    code: str | None = None
    check: str | None = None


@dataclass
class Report:
    title: str
    subtitle: str
    columns: list[str]  # the value columns' headings (the label column has none)
    rows: list[ReportRow]
    sheet: str  # the XLSX sheet's name: 31 characters at most
    notes: list[str] = field(default_factory=list)
    totals: dict[str, Decimal] = field(default_factory=dict)  # the figures tests check

    @property
    def has_check(self) -> bool:
        return any(row.check for row in self.rows)


def _plain(value: Decimal | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{round_money(value):.2f}"
    return value


def _money(value: Decimal | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        amount = round_money(value)
        # Accountants' negatives: (1,234.50) reads faster down a column than a minus sign.
        return f"({-amount:,.2f})" if amount < 0 else f"{amount:,.2f}"
    return value


def report_csv(report: Report) -> bytes:
    """Title and subtitle, a heading row, then one row per line; the chart code in its own
    column so a spreadsheet can look lines up. Through the one CSV writer (no formulas)."""
    head: list[object] = ["Code", "Line", *report.columns]
    if report.has_check:
        head.append("Check")
    rows: list[list[object]] = [[report.title], [report.subtitle], head]
    for row in report.rows:
        line: list[object] = [row.code or "", INDENT * row.level + row.label]
        line += [_plain(v) for v in row.values]
        if report.has_check:
            line.append(row.check or "")
        rows.append(line)
    rows += [[note] for note in report.notes]
    return csv_bytes(rows, bom=True)


def _sheet_name(name: str, taken: set[str]) -> str:
    # Excel refuses []:*?/\ in a sheet's name, and two sheets of one name.
    clean = "".join("-" if ch in "[]:*?/\\" else ch for ch in name)[:31] or "Report"
    candidate, n = clean, 2
    while candidate.lower() in taken:
        suffix = f" ({n})"
        candidate, n = clean[: 31 - len(suffix)] + suffix, n + 1
    taken.add(candidate.lower())
    return candidate


def report_xlsx(reports: list[Report]) -> bytes:
    """One sheet per report: a heading block (title, subtitle), the column headings, then
    the rows: label in A (indented by level), the figures as numbers formatted #,##0.00,
    bold rows bold, the chart code in the last column."""
    from openpyxl import Workbook  # only an XLSX download pays for openpyxl
    from openpyxl.styles import Alignment, Font

    book = Workbook()
    default = book.worksheets[0]  # the empty sheet every new workbook starts with
    taken: set[str] = set()
    bold = Font(bold=True)
    for report in reports:
        sheet = book.create_sheet(_sheet_name(report.sheet, taken))
        sheet.append([report.title])
        sheet["A1"].font = Font(bold=True, size=14)
        sheet.append([report.subtitle])
        sheet.append([])
        heading = ["Line", *report.columns]
        if report.has_check:
            heading.append("Check")
        heading.append("Code")
        sheet.append(heading)
        for cell in sheet[sheet.max_row]:
            cell.font = bold
        for row in report.rows:
            values: list[object] = [row.label]
            for value in row.values:
                values.append(float(round_money(value)) if isinstance(value, Decimal) else value)
            if report.has_check:
                values.append(row.check)
            values.append(row.code)
            sheet.append(values)
            cells = sheet[sheet.max_row]
            if row.level:
                cells[0].alignment = Alignment(indent=row.level)
            for cell, value in zip(cells[1:], row.values, strict=False):
                if isinstance(value, Decimal):
                    cell.number_format = MONEY_FORMAT
            if row.bold:
                for cell in cells:
                    cell.font = bold
        if report.notes:
            sheet.append([])
            for note in report.notes:
                sheet.append([note])
        sheet.column_dimensions["A"].width = 48
        for index in range(len(report.columns) + 2):
            letter = chr(ord("B") + index) if index < 25 else "Z"
            sheet.column_dimensions[letter].width = 18
    if reports:
        book.remove(default)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def report_pdf(reports: list[Report]) -> bytes:
    """An A4 page (landscape when the columns need it) per report: title, subtitle, then
    the table. Uncompressed: small files, and the text stays searchable by what checks it."""
    from fpdf import FPDF

    from app.services.statements import _fit, _latin1

    pdf = FPDF(format="A4")
    pdf.set_compression(False)
    pdf.set_auto_page_break(auto=True, margin=15)
    if reports:
        pdf.set_title(_latin1(reports[0].title))
    for report in reports:
        extra = 1 if report.has_check else 0
        count = len(report.columns) + extra
        landscape = count > 4
        pdf.add_page(orientation="L" if landscape else "P")
        usable = 277 if landscape else 190
        value_width = 28.0 if count <= 6 else max(18.0, (usable - 70) / count)
        label_width = usable - value_width * count
        pdf.set_font("Helvetica", "B", 14)
        pdf.cell(0, 8, _latin1(report.title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 10)
        pdf.cell(0, 6, _latin1(report.subtitle), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 8)
        pdf.cell(label_width, 6, "", border="B")
        for column in report.columns:
            pdf.cell(
                value_width, 6, _fit(pdf, _latin1(column), value_width - 1), border="B", align="R"
            )
        if extra:
            pdf.cell(value_width, 6, "Check", border="B", align="R")
        pdf.ln()
        for row in report.rows:
            pdf.set_font("Helvetica", "B" if row.bold else "", 8)
            label = _latin1(INDENT * 2 * row.level + row.label)
            pdf.cell(label_width, 5, _fit(pdf, label, label_width - 1))
            for value in row.values:
                text = _latin1(_money(value))
                pdf.cell(value_width, 5, _fit(pdf, text, value_width - 1), align="R")
            if extra:
                pdf.cell(
                    value_width, 5, _fit(pdf, _latin1(row.check or ""), value_width - 1), align="R"
                )
            pdf.ln()
        if report.notes:
            pdf.ln(3)
            pdf.set_font("Helvetica", "I", 8)
            for note in report.notes:
                pdf.multi_cell(0, 4, _latin1(note), new_x="LMARGIN", new_y="NEXT")
    if not reports:
        pdf.add_page()
    return bytes(pdf.output())
