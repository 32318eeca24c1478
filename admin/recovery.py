"""Legal and recovery actions in the console: a loan's recovery page (cases and hearings,
recovery steps, write-off requests and the board's decisions, documents), the loans in
recovery, and read-only lists of cases, steps and write-off requests.

Every form posts here, checks its CSRF token, then the role (403 and an audit row when the
role may not), then calls one service in app/services/recovery.py, which guards the
transition and writes the audit row; a refusal is rolled back and told in words. Only
an approved board decision writes a loan off (through loan_write_off).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import flash, g, redirect, request, url_for
from flask_admin import Admin, BaseView, expose
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import select
from werkzeug.wrappers import Response

from admin.applications import when
from admin.auth import SecureMixin, SecureModelView, TokenForm, require
from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import Hearing, LegalCase, Loan, RecoveryMilestone, WriteOffRequest
from app.models.recovery import CASE_STATUSES, MILESTONE_KINDS
from app.selectors.legal import loan_recovery, recovery_loans
from app.selectors.loans import loan_debt
from app.services.recovery import (
    CASE_MOVES,
    MILESTONE_WORDS,
    OPEN_CASE,
    RecoveryError,
    hearing_add,
    hearing_update,
    legal_case_file,
    legal_case_update,
    milestone_done,
    milestone_start,
    write_off_decide,
    write_off_recommend,
)

PER_PAGE = 25
_LINK = Markup('<a href="{}">{}</a>')


def _date(name: str, what: str, *, required: bool = True) -> date | None:
    raw = (request.form.get(name) or "").strip()
    if not raw:
        if required:
            raise RecoveryError(f"the {what} is needed")
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise RecoveryError(f"the {what} must be a date (YYYY-MM-DD)") from None


def _staff() -> Any:
    return current_user._get_current_object()


class RecoveryView(SecureMixin, BaseView):
    """Every role may read; each form needs its own permission."""

    permission = "view"

    def _page(self, loan_id: int | None) -> Response:
        if loan_id is None:
            return redirect(url_for(".index"))
        return redirect(url_for(".loan", loan_id=loan_id))

    def _post(self, needs: str, loan_id: int | None, act: Any, done: str) -> Any:
        """CSRF, then the role, then the service; a refusal is flashed in words."""
        if not TokenForm(request.form).validate():
            flash("The form expired; please try again.", "error")
            return self._page(loan_id)
        refused = require(needs, self)
        if refused is not None:
            return refused
        if loan_id is None:
            flash("Not found.", "error")
            return self._page(None)
        try:
            act()
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Not done: {exc}.", "error")
        else:
            flash(done, "success")
        return self._page(loan_id)

    @expose("/")
    def index(self) -> str:
        page = max(request.args.get("page", 1, type=int) or 1, 1)
        loans, total = recovery_loans(page=page, per_page=PER_PAGE)
        return self.render(
            "admin_sacco/recovery_list.html",
            loans=loans,
            total=total,
            page=page,
            pages=max((total + PER_PAGE - 1) // PER_PAGE, 1),
        )

    @expose("/<int:loan_id>")
    def loan(self, loan_id: int) -> Response | str:
        found = loan_recovery(loan_id=loan_id)
        if found is None:
            flash(f"No loan {loan_id}.", "error")
            return redirect(url_for(".index"))
        loan = found.loan
        return self.render(
            "admin_sacco/recovery.html",
            r=found,
            loan=loan,
            debt=loan_debt(loan_id=loan.id) if loan.disbursed_on else None,
            today=business_today(),
            case_statuses=CASE_STATUSES,
            case_moves=CASE_MOVES,
            open_case=OPEN_CASE,
            milestone_kinds=MILESTONE_KINDS,
            milestone_words=MILESTONE_WORDS,
            when=when,
        )

    # -- legal cases and hearings ----------------------------------------------------------

    @expose("/<int:loan_id>/case", methods=("POST",))
    def case_file(self, loan_id: int) -> Any:
        def act() -> None:
            legal_case_file(
                loan_id=loan_id,
                staff=_staff(),
                court=request.form.get("court", ""),
                case_number=request.form.get("case_number", ""),
                filing_date=_date("filing_date", "filing date"),  # type: ignore[arg-type]
                note=request.form.get("note"),
            )

        return self._post("legal.file", loan_id, act, "The case is filed.")

    @expose("/case/<int:case_id>/status", methods=("POST",))
    def case_status(self, case_id: int) -> Any:
        case = db.session.get(LegalCase, case_id)

        def act() -> None:
            legal_case_update(
                case_id=case_id,
                staff=_staff(),
                status=request.form.get("status", ""),
                note=request.form.get("note"),
            )

        loan_id = case.loan_id if case is not None else None
        return self._post("legal.file", loan_id, act, "The case status is changed.")

    @expose("/case/<int:case_id>/hearing", methods=("POST",))
    def hearing_new(self, case_id: int) -> Any:
        case = db.session.get(LegalCase, case_id)

        def act() -> None:
            hearing_add(
                case_id=case_id,
                staff=_staff(),
                held_on=_date("held_on", "hearing date"),  # type: ignore[arg-type]
                outcome=request.form.get("outcome"),
            )

        loan_id = case.loan_id if case is not None else None
        return self._post("legal.file", loan_id, act, "The hearing is added.")

    @expose("/hearing/<int:hearing_id>", methods=("POST",))
    def hearing_change(self, hearing_id: int) -> Any:
        hearing = db.session.get(Hearing, hearing_id)
        case = db.session.get(LegalCase, hearing.case_id) if hearing is not None else None

        def act() -> None:
            hearing_update(
                hearing_id=hearing_id,
                staff=_staff(),
                held_on=_date("held_on", "hearing date", required=False),
                outcome=request.form.get("outcome"),
            )

        loan_id = case.loan_id if case is not None else None
        return self._post("legal.file", loan_id, act, "The hearing is updated.")

    # -- recovery steps ----------------------------------------------------------------------

    @expose("/<int:loan_id>/milestone", methods=("POST",))
    def milestone_new(self, loan_id: int) -> Any:
        def act() -> None:
            milestone_start(
                loan_id=loan_id,
                staff=_staff(),
                kind=request.form.get("kind", ""),
                due_date=_date("due_date", "due date"),  # type: ignore[arg-type]
                note=request.form.get("note"),
            )

        return self._post("recovery.start", loan_id, act, "The recovery step is started.")

    @expose("/milestone/<int:milestone_id>/done", methods=("POST",))
    def milestone_finish(self, milestone_id: int) -> Any:
        milestone = db.session.get(RecoveryMilestone, milestone_id)

        def act() -> None:
            milestone_done(
                milestone_id=milestone_id,
                staff=_staff(),
                done_on=_date("done_on", "day it was done") or business_today(),
                note=request.form.get("note"),
            )

        loan_id = milestone.loan_id if milestone is not None else None
        return self._post("recovery.start", loan_id, act, "The recovery step is marked done.")

    # -- write-off ---------------------------------------------------------------------------

    @expose("/<int:loan_id>/write-off", methods=("POST",))
    def write_off_new(self, loan_id: int) -> Any:
        def act() -> None:
            write_off_recommend(
                loan_id=loan_id, staff=_staff(), reason=request.form.get("reason", "")
            )

        return self._post(
            "write_off.recommend",
            loan_id,
            act,
            "The write-off is recommended; the board's decision is recorded here.",
        )

    @expose("/write-off/<int:request_id>/decide", methods=("POST",))
    def write_off_decision(self, request_id: int) -> Any:
        found = db.session.get(WriteOffRequest, request_id)
        decision = request.form.get("decision", "")

        def act() -> None:
            write_off_decide(
                request_id=request_id,
                staff=_staff(),
                decision=decision,
                decision_date=_date("decision_date", "decision date"),  # type: ignore[arg-type]
                minute_ref=request.form.get("minute_ref", ""),
            )

        done = (
            "The board's approval is recorded and the loan is written off."
            if decision == "approve"
            else "The board's decision is recorded; the loan stays as it is."
        )
        loan_id = found.loan_id if found is not None else None
        return self._post("write_off.decide", loan_id, act, done)


# -- read-only lists ---------------------------------------------------------------------------


def _loans_of(ids: list[int]) -> dict[int, Loan]:
    if not ids:
        return {}
    return {loan.id: loan for loan in db.session.scalars(select(Loan).where(Loan.id.in_(ids)))}


def _loan(model: Any) -> Loan | None:
    loans = g.get("recovery_loans")
    if loans is None or model.loan_id not in loans:  # a details page
        loans = _loans_of([model.loan_id])
    return loans.get(model.loan_id)


def _loan_link(view: object, context: object, model: Any, name: str) -> Markup:
    loan = _loan(model)
    text = str(loan) if loan is not None else f"loan {model.loan_id}"
    return _LINK.format(url_for("recovery.loan", loan_id=model.loan_id), text)


def _loan_amount(field: str) -> Any:
    def show(view: object, context: object, model: Any, name: str) -> str:
        loan = _loan(model)
        return f"{getattr(loan, field):,.2f}" if loan is not None else ""

    return show


def _next_hearing(view: object, context: object, model: Any, name: str) -> str:
    loan = _loan(model)
    return str(loan.next_hearing_on or "") if loan is not None else ""


class _LoanListView(SecureModelView):
    """Read-only: changes go through the loan's recovery page and its services."""

    def get_list(self, *args: Any, **kwargs: Any) -> Any:
        count, data = super().get_list(*args, **kwargs)
        # The page's loans in one query, not one per row.
        g.recovery_loans = _loans_of(list({row.loan_id for row in data}))
        return count, data


class LegalCaseView(_LoanListView):
    column_list = ("loan", "court", "case_number", "filing_date", "status", "next_hearing")
    column_labels = {"next_hearing": "Loan's next hearing"}
    column_filters = ("status", "court", "filing_date")
    column_searchable_list = ("case_number", "court")
    column_sortable_list = ("court", "case_number", "filing_date", "status")
    column_default_sort = [("filing_date", True), ("id", True)]
    column_formatters = {"loan": _loan_link, "next_hearing": _next_hearing}
    column_details_list = (*column_list, "note", "created_at")
    column_formatters_detail = column_formatters


class RecoveryMilestoneView(_LoanListView):
    column_list = ("loan", "kind", "due_date", "done_on", "overdue_flagged_on", "created_at")
    column_labels = {"overdue_flagged_on": "Flagged overdue", "created_at": "Started"}
    column_filters = ("kind", "due_date", "done_on", "overdue_flagged_on")
    column_sortable_list = ("kind", "due_date", "done_on", "overdue_flagged_on", "created_at")
    column_default_sort = [("due_date", False), ("id", False)]
    column_formatters = {"loan": _loan_link}
    column_details_list = (*column_list, "note")
    column_formatters_detail = column_formatters


class WriteOffRequestView(_LoanListView):
    column_list = (
        "loan",
        "status",
        "reason",
        "recommended_at",
        "decision_date",
        "minute_ref",
        "written_off",
        "recovered",
    )
    column_labels = {"minute_ref": "Board minute", "recommended_at": "Recommended"}
    column_filters = ("status", "decision_date")
    column_sortable_list = ("status", "recommended_at", "decision_date")
    column_default_sort = [("recommended_at", True), ("id", True)]
    column_formatters = {
        "loan": _loan_link,
        "written_off": _loan_amount("written_off_amount"),
        "recovered": _loan_amount("recovered_amount"),
    }
    column_details_list = (*column_list, "history")
    column_formatters_detail = column_formatters


def register(console: Admin) -> None:
    s = db
    console.add_view(
        RecoveryView(name="Loans in recovery", category="Recovery", endpoint="recovery")
    )
    console.add_view(LegalCaseView(LegalCase, s, name="Legal cases", category="Recovery"))
    console.add_view(
        RecoveryMilestoneView(RecoveryMilestone, s, name="Recovery steps", category="Recovery")
    )
    console.add_view(
        WriteOffRequestView(WriteOffRequest, s, name="Write-off requests", category="Recovery")
    )
    from admin import documents

    documents.register(console)
