"""The financial statements in the console: choose a statement, a date or a period and a
comparison; read it on screen, every figure linking to the journal lines behind it;
download it as CSV, XLSX or PDF.

Finance reports are for the roles that read the books (books.view: branch manager,
compliance, auditor, admin); others get 403. Every download is audited (who, which
statement, which dates, which format) before the file leaves.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import abort, flash, request, url_for
from flask_admin import Admin, BaseView, expose
from flask_login import current_user
from werkzeug.wrappers import Response

from admin.auth import SecureMixin
from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.services.audit import audit_record
from app.services.books.exports import Report, report_csv, report_pdf, report_xlsx
from app.services.books.periods import month_bounds
from app.services.books.statements import (
    STATEMENTS,
    Window,
    balance_sheet,
    cash_flow,
    changes_in_equity,
    income_statement,
    previous_month_end,
    previous_period,
    same_period_last_year,
    statement_drill_window,
    statement_drilldown,
    statement_windows,
    trial_balance,
)

FORMATS = {
    "csv": "text/csv",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}
COMPARE = {
    "none": "No comparison",
    "previous": "Previous month end / previous period",
    "year": "Last year end / same period last year",
}
AS_OF_KINDS = ("tb", "bs")  # a balance on a day; the others cover a period


class BadInput(SaccoError):
    """A date or a choice the page cannot read."""


def _day(name: str, default: date) -> date:
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadInput(f"{raw!r} is not a date (YYYY-MM-DD)") from None


def statement_params() -> tuple[str, str, dict[str, Any], dict[str, str]]:
    """The statement, the comparison and the arguments its function takes, read from the
    query string (defaults: the balance sheet at the last month end, or that month); and
    the query string that rebuilds it."""
    kind = request.args.get("kind") or "bs"
    if kind not in STATEMENTS:
        raise BadInput("choose one of the statements")
    compare = request.args.get("compare") or "none"
    if compare not in COMPARE:
        raise BadInput("choose a comparison: none, previous or year")
    last_month_end = previous_month_end(business_today())
    if kind in AS_OF_KINDS:
        as_of = _day("as_of", last_month_end)
        params: dict[str, Any] = {"as_of": as_of}
        if kind == "bs" and compare != "none":
            params["compare_to"] = (
                previous_month_end(as_of) if compare == "previous" else date(as_of.year - 1, 12, 31)
            )
        query = {"kind": kind, "as_of": as_of.isoformat(), "compare": compare}
        return kind, compare, params, query
    first, last = month_bounds(last_month_end)
    start, end = _day("start", first), _day("end", last)
    if start > end:
        raise BadInput(f"the period starts ({start}) after it ends ({end})")
    params = {"start": start, "end": end}
    if kind == "is" and compare != "none":
        params["compare"] = (
            previous_period(start, end)
            if compare == "previous"
            else same_period_last_year(start, end)
        )
    query = {"kind": kind, "start": start.isoformat(), "end": end.isoformat(), "compare": compare}
    return kind, compare, params, query


def statement_build(kind: str, params: dict[str, Any]) -> Report:
    builders = {
        "tb": trial_balance,
        "bs": balance_sheet,
        "is": income_statement,
        "soce": changes_in_equity,
        "cf": cash_flow,
    }
    return builders[kind](**params)  # type: ignore[operator]


def _drill_url(kind: str, code: str, window: Window) -> str:
    window = statement_drill_window(kind, code, window)
    args: dict[str, Any] = {"code": code, "as_of": window.as_of.isoformat()}
    if window.since is not None:
        args["since"] = window.since.isoformat()
    if window.without_year_end:
        args["ye"] = "0"
    return url_for(".drill", **args)


def _links(kind: str, report: Report, params: dict[str, Any]) -> list[list[str | None]]:
    """Each figure's drill-down link, row by row and column by column (None: no link).
    The trial balance's debit and credit are one balance; changes in equity and cash flows
    gather many lines into each figure, so they have none."""
    windows = statement_windows(kind, **params)
    links: list[list[str | None]] = []
    for row in report.rows:
        cells: list[str | None] = []
        for index, value in enumerate(row.values):
            window = windows[0] if kind == "tb" and windows else None
            if kind != "tb" and index < len(windows):
                window = windows[index]
            linked = row.code and value is not None and window is not None
            cells.append(_drill_url(kind, row.code, window) if linked else None)  # type: ignore[arg-type]
        links.append(cells)
    return links


def _actor() -> str:
    return f"staff:{current_user.email}"


class BooksView(SecureMixin, BaseView):
    """The statements and their drill-down: read-only, for the roles that read finance."""

    permission = "books.view"

    @expose("/")
    def index(self) -> str:
        report = None
        links: list[list[str | None]] = []
        error = None
        kind, compare = request.args.get("kind") or "bs", "none"
        query: dict[str, str] = {}
        try:
            kind, compare, params, query = statement_params()
            report = statement_build(kind, params)
            links = _links(kind, report, params)
        except SaccoError as exc:
            db.session.rollback()
            error = str(exc)
        return self.render(
            "admin_sacco/books_statement.html",
            statements=STATEMENTS,
            compares=COMPARE,
            kind=kind,
            compare=compare,
            query=query,
            args=request.args,
            report=report,
            links=links,
            error=error,
            formats=FORMATS,
            as_of_kinds=AS_OF_KINDS,
        )

    @expose("/drill")
    def drill(self) -> str:
        code = (request.args.get("code") or "").strip()
        try:
            as_of = _day("as_of", business_today())
            since_raw = request.args.get("since")
            since = _day("since", as_of) if since_raw else None
            page = (
                int(request.args.get("page") or 1)
                if (request.args.get("page") or "1").isdigit()
                else 1
            )
            drill = statement_drilldown(
                code=code,
                as_of=as_of,
                since=since,
                without_year_end=request.args.get("ye") == "0",
                page=page,
            )
        except SaccoError as exc:
            db.session.rollback()
            flash(str(exc), "error")
            return self.render("admin_sacco/books_drill.html", drill=None, args=request.args)
        return self.render("admin_sacco/books_drill.html", drill=drill, args=request.args)

    @expose("/export.<fmt>")
    def export(self, fmt: str) -> Response | str:
        if fmt not in FORMATS:
            abort(404)
        try:
            kind, _compare, params, query = statement_params()
            report = statement_build(kind, params)
        except SaccoError as exc:
            db.session.rollback()
            flash(f"No file: {exc}", "error")
            return self.index()
        content = {
            "csv": lambda: report_csv(report),
            "xlsx": lambda: report_xlsx([report]),
            "pdf": lambda: report_pdf([report]),
        }[fmt]()
        audit_record(
            actor=_actor(),
            action="books.export",
            object_type="statement",
            object_id=kind,
            after={**query, "format": fmt, "title": report.title},
        )
        db.session.commit()
        dates = query.get("as_of") or f"{query.get('start')}_{query.get('end')}"
        filename = f"{report.sheet.lower().replace(' ', '-')}-{dates}.{fmt}"
        return Response(
            content,
            mimetype=FORMATS[fmt],
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )


def register(console: Admin) -> None:
    console.add_view(BooksView(name="Statements", category="Books", endpoint="books", url="books"))
