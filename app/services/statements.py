"""A member's statement for a date range, as CSV or PDF, with an audit row per download.

The figures come from `member_statement_range` (app/selectors/statements.py); this module
only lays them out. Statements carry a member's money history, so every download is
audited: who, which member, which range, which format.

CSV amounts are plain (1234.50) so a spreadsheet reads them as numbers; the PDF is for
people and shows 1,234.50. fpdf2's core fonts hold Latin-1 only, so text is folded to it
(a name with an accent outside Latin-1 loses the accent, not the page).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from fpdf import FPDF

from app.csvout import csv_bytes
from app.extensions import db
from app.models import StaffUser
from app.money import round_money
from app.selectors.statements import RangeStatement, member_statement_range
from app.services.audit import audit_record
from app.services.permissions import permission_require

FORMATS = ("csv", "pdf")
CSV_HEADER = ("section", "date", "description", "debit", "credit", "balance")


@dataclass(frozen=True)
class StatementFile:
    filename: str
    mimetype: str
    content: bytes


def _plain(amount: Decimal) -> str:
    return f"{round_money(amount):.2f}"  # the one rounding: never "-0.00"


def statement_csv(statement: RangeStatement) -> bytes:
    """One row per movement under an opening and a closing row for each section, through
    the one CSV writer (app/csvout.py: no cell is a formula)."""
    rows: list[tuple[object, ...]] = [CSV_HEADER]
    for section in statement.sections:
        rows.append(
            (section.title, statement.start, "Opening balance", "", "", _plain(section.opening))
        )
        rows += [
            (
                section.title,
                m.value_date,
                m.description,
                _plain(m.debit) if m.debit else "",
                _plain(m.credit) if m.credit else "",
                _plain(m.balance),
            )
            for m in section.movements
        ]
        rows.append(
            (section.title, statement.end, "Closing balance", "", "", _plain(section.closing))
        )
    return csv_bytes(rows, bom=True)  # a BOM so Excel opens the UTF-8 names right


def _latin1(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text)
    return (
        "".join(ch for ch in folded if not unicodedata.combining(ch))
        .encode("latin-1", "replace")
        .decode("latin-1")
    )


def _money(amount: Decimal) -> str:
    return f"{round_money(amount):,.2f}"


_WIDTHS = (24, 86, 26, 26, 28)  # date, description, debit, credit, balance: 190 mm


def _fit(pdf: FPDF, text: str, width: float) -> str:
    """Cut a description to its column (an overlong one would run into the amounts)."""
    if pdf.get_string_width(text) <= width:
        return text
    while text and pdf.get_string_width(text + "...") > width:
        text = text[:-1]
    return text + "..."


def statement_pdf(statement: RangeStatement, *, printed: datetime, sacco: str) -> bytes:
    """An A4 statement: header, then a table per section. Uncompressed: the files are
    small and the text stays searchable by the tools that check it."""
    pdf = FPDF(format="A4")
    pdf.set_compression(False)
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.set_title(f"Statement {statement.member_no}")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 8, _latin1(f"{sacco}: member statement"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    for line in (
        f"Member {statement.member_no}  {statement.name}  (phone {statement.phone})",
        f"Period {statement.start:%d %b %Y} to {statement.end:%d %b %Y}",
        f"Printed {printed:%d %b %Y %H:%M} (Kenyan time)",
    ):
        pdf.cell(0, 6, _latin1(line), new_x="LMARGIN", new_y="NEXT")
    for section in statement.sections:
        pdf.ln(4)
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 7, _latin1(section.title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "B", 9)
        for width, head, align in zip(
            _WIDTHS,
            ("Date", "Description", "Debit", "Credit", "Balance"),
            ("L", "L", "R", "R", "R"),
            strict=True,
        ):
            pdf.cell(width, 6, head, border="B", align=align)
        pdf.ln()
        pdf.set_font("Helvetica", "", 9)
        rows: list[tuple[date, str, Decimal | None, Decimal | None, Decimal]] = [
            (statement.start, "Opening balance", None, None, section.opening)
        ]
        rows += [
            (m.value_date, m.description, m.debit, m.credit, m.balance) for m in section.movements
        ]
        rows.append((statement.end, "Closing balance", None, None, section.closing))
        for day, text, debit, credit, balance in rows:
            cells = (
                f"{day:%d/%m/%Y}",
                _fit(pdf, _latin1(text), _WIDTHS[1] - 2),
                _money(debit) if debit else "",
                _money(credit) if credit else "",
                _money(balance),
            )
            for width, value, align in zip(_WIDTHS, cells, ("L", "L", "R", "R", "R"), strict=True):
                pdf.cell(width, 5, value, align=align)
            pdf.ln()
    return bytes(pdf.output())


def statement_export(
    *,
    member_id: int,
    start: date,
    end: date,
    fmt: str,
    staff: StaffUser,
    printed: datetime,
    sacco: str = "SACCO",
) -> StatementFile:
    """The statement file for a download, audited with who asked for which member and
    range. Refused in words (StatementRangeError) for a bad range; nothing is written."""
    permission_require(staff, "view")
    if fmt not in FORMATS:
        fmt = "csv"
    statement = member_statement_range(member_id=member_id, start=start, end=end)
    if fmt == "pdf":
        content = statement_pdf(statement, printed=printed, sacco=sacco)
        mimetype = "application/pdf"
    else:
        content = statement_csv(statement)
        mimetype = "text/csv"
    audit_record(
        actor=f"staff:{staff.email}",
        action="member.statement",
        object_type="member",
        object_id=statement.member_no,
        after={"from": start.isoformat(), "to": end.isoformat(), "format": fmt},
    )
    db.session.commit()
    return StatementFile(
        filename=f"statement-{statement.member_no}-{start:%Y%m%d}-{end:%Y%m%d}.{fmt}",
        mimetype=mimetype,
        content=content,
    )
