"""Collections and recovery reports in the console, each on screen, as CSV and as PDF.

The figures come from app/selectors/reports.py (aggregate queries); this module turns each
report into tables (a title, typed columns, rows, a total) that one template draws, and
that the CSV and the PDF lay out the same way, so the three never disagree. The PDF uses
the member statement's helpers (Latin-1 folding, cutting text to its column, amounts with
separators) and its page set-up.

Decisions where the issue is silent:

- Every role that may open the console may read the reports ("view"): they hold counts
  and amounts, and the hearings list the loan numbers any role sees on the loan pages.
- The screen shows a page of groups (PER_PAGE); an export holds the whole report, refused
  in words above EXPORT_MAX_ROWS rows (a narrower range, then). Exports are GET requests
  that change nothing, so they carry no CSRF token and write no audit row.
- A heavy report opened without a range shows its form (the current month filled in as a
  suggestion) and the words saying a range is needed, and runs no query; a range that is
  half given, back to front or longer than MAX_REPORT_DAYS is answered 400 in words, on
  screen and for an export alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from flask import current_app, request, url_for
from flask_admin import Admin, BaseView, expose
from fpdf import FPDF
from werkzeug.wrappers import Response

from admin.auth import SecureMixin, money_text
from app.clock import business_today
from app.csvout import csv_bytes
from app.selectors.reports import (
    COLLECTION_GROUPS,
    HEARING_DAYS,
    MAX_REPORT_DAYS,
    NO_OFFICER,
    PROMISE_GROUPS,
    RANGE_NEEDED,
    DateRange,
    Page,
    PromiseRow,
    ReportRangeError,
    agreements_by_status,
    cases_by_status,
    collections_report,
    hearings_ahead,
    promise_fulfilment_report,
    report_range,
    write_offs_report,
)
from app.services.statements import _fit, _latin1, _money, _plain

PER_PAGE = 25
EXPORT_MAX_ROWS = 5000  # an export's ceiling; a year of months, officers or products is far less
FORMATS = ("csv", "pdf")
SACCO = "SACCO"


# -- a report as tables -----------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    head: str
    kind: str = "text"  # text | count | money | percent | date


@dataclass
class Table:
    title: str
    columns: tuple[Column, ...]
    rows: list[tuple[Any, ...]]
    total: tuple[Any, ...] | None = None
    note: str = ""
    page: Page[Any] | None = None  # the screen pages this table
    links: list[str | None] = field(default_factory=list)  # per row, on screen only
    link_column: int = 0  # which cell carries the row's link


@dataclass
class Report:
    slug: str
    title: str
    heavy: bool  # needs a date range
    range: DateRange | None = None
    lines: list[str] = field(default_factory=list)  # under the title: period, grouping
    tables: list[Table] = field(default_factory=list)
    groups: tuple[str, ...] = ()  # the "by" choices, if the report has any
    by: str = ""


def screen_text(value: Any, kind: str) -> str:
    """A cell as people read it, on screen and in the PDF."""
    if value is None:
        return "none settled" if kind == "percent" else ""
    if kind == "money":
        return money_text(value)
    if kind == "count":
        return f"{value:,}"
    if kind == "percent":
        return f"{value}%"
    if kind == "date":
        return f"{value:%d %b %Y}"
    return str(value)


def csv_text(value: Any, kind: str) -> object:
    """A cell as a spreadsheet reads it: plain numbers, ISO dates; the one CSV writer
    (app/csvout.py) makes sure no text is a formula."""
    if value is None:
        return ""
    if kind == "money":
        return _plain(value)
    return value


def report_csv(report: Report) -> bytes:
    """Each table under its title, header first, total last; a blank line between."""
    rows: list[tuple[object, ...]] = [(report.title,), *((line,) for line in report.lines)]
    for table in report.tables:
        rows += [(), (table.title,), tuple(c.head for c in table.columns)]
        rows += [
            tuple(csv_text(v, c.kind) for v, c in zip(row, table.columns, strict=True))
            for row in [*table.rows, *([table.total] if table.total else [])]
        ]
    return csv_bytes(rows, bom=True)  # a BOM: Excel reads UTF-8 names right


_PAGE_WIDTH = 190  # A4 less the margins, mm
_WEIGHT = {"text": 3.0, "date": 1.6, "count": 1.2, "money": 1.8, "percent": 1.3}


def report_pdf(report: Report, *, printed: datetime, sacco: str = SACCO) -> bytes:
    """An A4 report laid out as the member statement is: a header, then each table with
    its column heads, rows and a bold total. Uncompressed, so its text stays searchable."""
    pdf = FPDF(format="A4")
    pdf.set_compression(False)
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.set_title(report.title)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 8, _latin1(f"{sacco}: {report.title}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    for line in [*report.lines, f"Printed {printed:%d %b %Y %H:%M} (Kenyan time)"]:
        pdf.cell(0, 6, _latin1(line), new_x="LMARGIN", new_y="NEXT")
    for table in report.tables:
        weights = [_WEIGHT[c.kind] for c in table.columns]
        widths = [_PAGE_WIDTH * w / sum(weights) for w in weights]
        aligns = ["L" if c.kind in ("text", "date") else "R" for c in table.columns]
        pdf.ln(4)
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 7, _latin1(table.title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "B", 9)
        for width, column, align in zip(widths, table.columns, aligns, strict=True):
            pdf.cell(width, 6, _fit(pdf, _latin1(column.head), width - 1), border="B", align=align)
        pdf.ln()
        rows = [(r, "") for r in table.rows] + ([(table.total, "B")] if table.total else [])
        if not rows:
            pdf.set_font("Helvetica", "I", 9)
            pdf.cell(0, 5, "Nothing in this range.", new_x="LMARGIN", new_y="NEXT")
        for row, style in rows:
            pdf.set_font("Helvetica", style, 9)
            for width, value, column, align in zip(widths, row, table.columns, aligns, strict=True):
                text = _money(value) if column.kind == "money" else screen_text(value, column.kind)
                pdf.cell(
                    width,
                    5,
                    _fit(pdf, _latin1(text), width - 1),
                    align=align,
                    border="T" if style else 0,
                )
            pdf.ln()
        if table.note:
            pdf.set_font("Helvetica", "I", 8)
            pdf.multi_cell(0, 4, _latin1(table.note), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


# -- the reports ------------------------------------------------------------------------------


def _col(head: str, kind: str = "text") -> Column:
    return Column(head, kind)


def _period(range_: DateRange) -> str:
    return f"Period {range_.start:%d %b %Y} to {range_.end:%d %b %Y} ({range_.days:,} days)"


def collections(report: Report, *, page: int, per_page: int) -> None:
    assert report.range is not None  # noqa: S101 - a heavy report is built with its range
    found = collections_report(range_=report.range, by=report.by, page=page, per_page=per_page)
    heads = {"month": "Month (value date)", "officer": "Loan officer", "product": "Product"}
    report.lines += [_period(report.range), f"By {found.by}"]
    report.tables.append(
        Table(
            title=f"Repayments collected by {found.by}",
            columns=(
                _col(heads[found.by]),
                _col("Repayments", "count"),
                _col("Collected (KES)", "money"),
            ),
            rows=[(r.label, r.repayments, r.amount) for r in found.rows.rows],
            total=("Total", found.repayments, found.amount),
            page=found.rows,
            note="Collected: the money side of each repayment posted with a value date in the "
            "range (M-PESA, suspense placed by staff, or savings), recoveries on written-off "
            f"loans included; officer and product are the loan's now ({NO_OFFICER}: unassigned).",
        )
    )


def _promise_cells(row: PromiseRow) -> tuple[Any, ...]:
    return (
        row.label,
        row.kept,
        row.partly,
        row.broken,
        row.open,
        row.rate,
        row.promised,
        row.paid,
    )


def promises(report: Report, *, page: int, per_page: int) -> None:
    assert report.range is not None  # noqa: S101
    found = promise_fulfilment_report(
        range_=report.range, by=report.by, page=page, per_page=per_page
    )
    head = "Month (promised date)" if found.by == "month" else "Loan officer"
    report.lines += [_period(report.range) + ", by the promised date", f"By {found.by}"]
    report.tables.append(
        Table(
            title=f"Promise fulfilment by {found.by}",
            columns=(
                _col(head),
                _col("Kept", "count"),
                _col("Partly", "count"),
                _col("Broken", "count"),
                _col("Open", "count"),
                _col("Kept rate", "percent"),
                _col("Promised (KES)", "money"),
                _col("Paid by the date (KES)", "money"),
            ),
            rows=[_promise_cells(r) for r in found.rows.rows],
            total=("Total", *_promise_cells(found.total)[1:]),
            page=found.rows,
            note="Kept rate: kept over settled promises (kept + partly + broken); open "
            "promises count neither way. The officer is the loan's officer.",
        )
    )


def agreements(report: Report, *, page: int, per_page: int) -> None:
    rows = agreements_by_status()
    report.lines.append("All agreements, by their status now")
    report.tables.append(
        Table(
            title="Compromise agreements by status",
            columns=(
                _col("Status"),
                _col("Agreements", "count"),
                _col("Settlement (KES)", "money"),
                _col("Discount (KES)", "money"),
                _col("Paid (KES)", "money"),
            ),
            rows=[(r.status, r.count, r.settlement, r.discount, r.paid) for r in rows],
            total=(
                "Total",
                sum(r.count for r in rows),
                sum((r.settlement for r in rows), Decimal(0)),
                sum((r.discount for r in rows), Decimal(0)),
                sum((r.paid for r in rows), Decimal(0)),
            ),
        )
    )


def legal(report: Report, *, page: int, per_page: int) -> None:
    today = business_today()
    statuses = cases_by_status()
    hearings = hearings_ahead(today=today, page=page, per_page=per_page)
    report.lines.append(f"Cases now; hearings from {today:%d %b %Y} for {HEARING_DAYS} days")
    report.tables += [
        Table(
            title="Legal cases by status",
            columns=(_col("Status"), _col("Cases", "count")),
            rows=statuses,
            total=("Total", sum(n for _, n in statuses)),
        ),
        Table(
            title=f"Hearings in the next {HEARING_DAYS} days",
            columns=(
                _col("Date", "date"),
                _col("Court"),
                _col("Case number"),
                _col("Case status"),
                _col("Loan"),
                _col("Member"),
            ),
            rows=[
                (h.held_on, h.court, h.case_number, h.case_status, h.loan_no, h.member)
                for h in hearings.rows
            ],
            page=hearings,
            links=[url_for("loan.details_view", id=h.loan_id) for h in hearings.rows],
            link_column=4,
        ),
    ]


def write_offs(report: Report, *, page: int, per_page: int) -> None:
    assert report.range is not None  # noqa: S101
    found = write_offs_report(range_=report.range)
    report.lines.append(_period(report.range) + ", by the month of the write-off")
    report.tables += [
        Table(
            title="Write-offs and recoveries by month of write-off",
            columns=(
                _col("Month written off"),
                _col("Loans", "count"),
                _col("Written off (KES)", "money"),
                _col("Recovered since (KES)", "money"),
            ),
            rows=[(m.month, m.loans, m.written_off, m.recovered) for m in found.months],
            total=("Total", found.total.loans, found.total.written_off, found.total.recovered),
            note="Recovered: repayments received on those loans after the write-off, to date.",
        ),
        Table(
            title="Write-off requests by status (all time)",
            columns=(_col("Status"), _col("Requests", "count")),
            rows=found.requests,
            total=("Total", sum(n for _, n in found.requests)),
        ),
    ]


@dataclass(frozen=True)
class Kind:
    title: str
    summary: str
    heavy: bool
    build: Callable[..., None]
    groups: tuple[str, ...] = ()


REPORTS: dict[str, Kind] = {
    "collections": Kind(
        "Collections",
        "Repayments collected by month, loan officer or product, for a date range.",
        True,
        collections,
        COLLECTION_GROUPS,
    ),
    "promises": Kind(
        "Promise fulfilment",
        "Promises to pay kept, partly kept, broken and open, by month or officer.",
        True,
        promises,
        PROMISE_GROUPS,
    ),
    "agreements": Kind(
        "Agreements by status",
        "Compromise agreements in each status, with the settlements and discounts agreed.",
        False,
        agreements,
    ),
    "legal": Kind(
        "Legal pipeline",
        f"Legal cases by status, and the hearings of the next {HEARING_DAYS} days.",
        False,
        legal,
    ),
    "write-offs": Kind(
        "Write-offs and recoveries",
        "Amounts written off and recovered since, by month of write-off; requests by status.",
        True,
        write_offs,
    ),
}


def _day(raw: str | None, which: str) -> date | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ReportRangeError(f"the {which} date must be a date like 2026-01-31") from None


def _month_so_far(today: date) -> tuple[date, date]:
    return today.replace(day=1), today


class ReportsView(SecureMixin, BaseView):
    """Every report at /admin/reports/<name>; ?format=csv or pdf downloads it."""

    permission = "view"

    @expose("/")
    def index(self) -> str:
        return self.render("admin_sacco/reports.html", reports=REPORTS, max_days=MAX_REPORT_DAYS)

    @expose("/<slug>")
    def report(self, slug: str) -> Response | str | tuple[str, int]:
        kind = REPORTS.get(slug)
        if kind is None:
            return self.render(
                "admin_sacco/report.html", report=None, error="There is no such report."
            ), 404
        by = request.args.get("by", "")
        report = Report(
            slug=slug,
            title=kind.title,
            heavy=kind.heavy,
            groups=kind.groups,
            by=by if by in kind.groups else (kind.groups[0] if kind.groups else ""),
        )
        fmt = request.args.get("format", "")
        page = max(request.args.get("page", 1, type=int) or 1, 1)
        start_raw, end_raw = request.args.get("start"), request.args.get("end")
        form = {"start": start_raw or "", "end": end_raw or ""}
        if kind.heavy:
            try:
                start, end = _day(start_raw, "from"), _day(end_raw, "to")
                if start is None and end is None and fmt not in FORMATS:
                    # The first visit: a form to fill in, and no query run.
                    suggest = _month_so_far(business_today())
                    form = {"start": suggest[0].isoformat(), "end": suggest[1].isoformat()}
                    return self._page(
                        report, form, notice=f"{RANGE_NEEDED[0].upper()}{RANGE_NEEDED[1:]}."
                    )
                report.range = report_range(start, end)
            except ReportRangeError as exc:
                if fmt in FORMATS:
                    return Response(f"No report: {exc}.\n", status=400, mimetype="text/plain")
                return self._page(report, form, error=f"No report: {exc}."), 400
        if fmt in FORMATS:
            kind.build(report, page=1, per_page=EXPORT_MAX_ROWS)
            if any(t.page is not None and t.page.total > EXPORT_MAX_ROWS for t in report.tables):
                return Response(
                    f"No report: it has more than {EXPORT_MAX_ROWS:,} rows; choose a shorter "
                    "range.\n",
                    status=400,
                    mimetype="text/plain",
                )
            return self._file(report, fmt)
        kind.build(report, page=page, per_page=PER_PAGE)
        return self._page(report, form)

    def _page(self, report: Report, form: dict[str, str], error: str = "", notice: str = "") -> str:
        args = {k: v for k, v in (("start", form["start"]), ("end", form["end"])) if v}
        if report.by:
            args["by"] = report.by
        return self.render(
            "admin_sacco/report.html",
            report=report,
            form=form,
            error=error,
            notice=notice,
            args=args,
            screen_text=screen_text,
            max_days=MAX_REPORT_DAYS,
        )

    def _file(self, report: Report, fmt: str) -> Response:
        stamp = f"{report.range.start:%Y%m%d}-{report.range.end:%Y%m%d}" if report.range else ""
        name = "-".join(p for p in ("report", report.slug, report.by, stamp) if p)
        if fmt == "pdf":
            printed = datetime.now(current_app.config["SETTINGS"].tz)
            content, mimetype = report_pdf(report, printed=printed), "application/pdf"
        else:
            content, mimetype = report_csv(report), "text/csv"
        return Response(
            content,
            mimetype=mimetype,
            headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
        )


def register(console: Admin) -> None:
    console.add_view(ReportsView(name="Reports", endpoint="reports", url="/admin/reports"))
