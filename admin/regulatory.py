"""The Regulatory page: SASRA's monthly returns (app/services/books/returns.py) with the
last filed and the next due, a month-end chooser, XLSX and PDF downloads, and "mark filed".

The roles that read finance (books.view) see the page and download; every download is
audited (action "books.export": a return leaves the building with members' money in it).
Marking a return filed needs books.file (compliance, admin): CSRF, the role (403,
audited), then the one service, which checks the role again and audits the filing.
"""

from __future__ import annotations

from datetime import date, timedelta

from flask import abort, flash, redirect, request, url_for
from flask_admin import Admin, BaseView, expose
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from admin.auth import SecureMixin, _kenyan_time, actor, form_post
from app.clock import business_today
from app.extensions import db
from app.models.books import RegulatoryFiling
from app.services.audit import audit_record
from app.services.books.periods import month_bounds
from app.services.books.returns import (
    FORMS,
    ReturnError,
    return_file,
    return_filings,
    returns_build,
    returns_pdf,
    returns_status,
    returns_xlsx,
)

FORMATS = {
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}
MONTHS_OFFERED = 24  # the chooser's month ends, newest first


def _last_month_end() -> date:
    return month_bounds(business_today())[0] - timedelta(days=1)


def month_ends(count: int = MONTHS_OFFERED) -> list[date]:
    """The month ends the chooser offers: last month's and those before it."""
    ends, end = [], _last_month_end()
    for _ in range(count):
        ends.append(end)
        end = month_bounds(end)[0] - timedelta(days=1)
    return ends


def _chosen(raw: str | None) -> date:
    """The month end asked for (?month_end=2026-10-31), last month's when none; a bad one
    is a refusal in words."""
    if not raw:
        return _last_month_end()
    try:
        day = date.fromisoformat(raw.strip())
    except ValueError:
        raise ReturnError("the month end must be a date like 2026-10-31") from None
    if month_bounds(day)[1] != day:
        raise ReturnError(f"{day:%d %b %Y} is not the last day of a month")
    return day


class RegulatoryView(SecureMixin, BaseView):
    permission = "books.view"

    @expose("/")
    def index(self) -> str | Response:
        try:
            month_end = _chosen(request.args.get("month_end"))
        except ReturnError as exc:
            flash(f"{exc}.", "error")
            return redirect(url_for(".index"))
        preview = request.args.get("form")
        reports = []
        if preview:
            if preview not in FORMS:
                abort(404)
            reports = returns_build(preview, month_end)
        return self.render(
            "admin_sacco/regulatory.html",
            statuses=returns_status(),
            filings=return_filings(),
            forms=FORMS,
            month_end=month_end,
            month_ends=month_ends(),
            preview=preview,
            reports=reports,
            # The returns already marked filed for the chosen month: no button for them.
            filed=set(
                db.session.scalars(
                    select(RegulatoryFiling.form).where(RegulatoryFiling.period_end == month_end)
                )
            ),
            today=business_today(),
            when=lambda moment: _kenyan_time(None, moment, ""),
        )

    @expose("/<form>/<month_end>.<fmt>")
    def download(self, form: str, month_end: str, fmt: str) -> Response:
        if fmt not in FORMATS or (form not in FORMS and form != "all"):
            abort(404)
        try:
            day = _chosen(month_end)
            content = returns_xlsx(form, day) if fmt == "xlsx" else returns_pdf(form, day)
        except ReturnError as exc:
            db.session.rollback()
            flash(f"No return: {exc}.", "error")
            return redirect(url_for(".index"))
        audit_record(
            actor=actor(),
            action="books.export",
            object_type="regulatory_return",
            object_id=f"{form}:{day.isoformat()}",
            after={"format": fmt, "month_end": day.isoformat()},
        )
        db.session.commit()
        filename = f"sasra-{form.replace('_', '-')}-{day.isoformat()}.{fmt}"
        return Response(
            content,
            mimetype=FORMATS[fmt],
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @expose("/file", methods=("POST",))
    def file(self) -> Response:
        form = request.form.get("form", "")
        back = url_for(".index", month_end=request.form.get("period_end") or None)

        def act() -> str:
            period_end = _chosen(request.form.get("period_end"))
            staff = current_user._get_current_object()
            filing = return_file(form=form, period_end=period_end, actor=staff)
            spec = FORMS[filing.form]
            return f"{spec.number} {spec.title} for {period_end:%B %Y} marked filed."

        return form_post(self, "books.file", back, act)


def register(console: Admin) -> None:
    console.add_view(
        RegulatoryView(name="Regulatory", category="Books", endpoint="regulatory", url="regulatory")
    )
