"""Compromise agreements in the console: the list, one agreement's page (its schedule with
what is paid and outstanding, and the buttons its status and the role allow), and the
draft form reached from a loan in default.

Every post checks the CSRF token, then the role (403), then calls one service in
app/services/agreements.py, which guards the transition and writes the audit row.
"""

from __future__ import annotations

from datetime import datetime

from flask import abort, flash, redirect, request, url_for
from flask_admin import Admin, BaseView, expose
from flask_admin.form import SecureForm
from flask_login import current_user
from werkzeug.wrappers import Response
from wtforms import HiddenField, StringField, TextAreaField
from wtforms.validators import Optional

from admin.auth import SecureMixin, _kenyan_time, require
from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import Agreement, Loan
from app.models.recovery import AGREEMENT_STATUSES
from app.selectors.agreements import agreement_people, agreements_page
from app.selectors.loans import LIVE_STATUSES, loan_debt
from app.services.agreements import (
    DEFAULT_GRACE_DAYS,
    DEFAULT_THRESHOLD_DAYS,
    EDITABLE,
    agreement_add_note,
    agreement_approve,
    agreement_default_date,
    agreement_delete,
    agreement_draft,
    agreement_needs_supervisor,
    agreement_return,
    agreement_schedule_parse,
    agreement_submit,
    agreement_update,
)

PER_PAGE = 25

# What each button of the agreement page needs (app/services/permissions.py), and how
# its outcome reads.
ACTIONS = {
    "submit": ("agreement.draft", "submitted to a branch manager"),
    "approve": ("agreement.approve", "approved"),
    "return": ("agreement.approve", "returned to its drafter"),
    "delete": ("agreement.draft", "deleted"),
    "note": ("agreement.draft", "noted"),
}
BADGES = {
    "draft": "secondary",
    "submitted": "info",
    "approved": "primary",
    "active": "success",
    "completed": "dark",
    "defaulted": "danger",
    "deleted": "light",
}


class AgreementForm(SecureForm):
    """The figures and the typed schedule of a draft (CSRF-checked)."""

    settlement_amount = StringField(validators=[Optional()])
    discount = StringField(validators=[Optional()])
    grace_days = StringField(validators=[Optional()], default=str(DEFAULT_GRACE_DAYS))
    default_threshold_days = StringField(
        validators=[Optional()], default=str(DEFAULT_THRESHOLD_DAYS)
    )
    schedule = TextAreaField(validators=[Optional()])
    note = TextAreaField(validators=[Optional()])


class ActionForm(SecureForm):
    action = HiddenField()
    reason = StringField(validators=[Optional()])
    note = TextAreaField(validators=[Optional()])


def when(moment: datetime | None) -> str:
    """Kenyan time to the minute, as the console's lists show it."""
    return _kenyan_time(None, moment, "") if moment is not None else ""


def _schedule_text(agreement: Agreement) -> str:
    return "\n".join(f"{r.due_date} {r.amount}" for r in agreement.installments)


class AgreementView(SecureMixin, BaseView):
    """Every role reads agreements; the buttons and the posts follow the role."""

    permission = "view"

    # -- reads ---------------------------------------------------------------------------

    @expose("/")
    def index(self) -> str:
        page = max(request.args.get("page", 1, type=int) or 1, 1)
        status = request.args.get("status")
        status = status if status in AGREEMENT_STATUSES else None
        loan_id = request.args.get("loan_id", type=int)
        rows, total = agreements_page(page=page, per_page=PER_PAGE, status=status, loan_id=loan_id)
        loan = db.session.get(Loan, loan_id) if loan_id else None
        return self.render(
            "admin_sacco/agreement_list.html",
            rows=rows,
            total=total,
            page=page,
            pages=max((total + PER_PAGE - 1) // PER_PAGE, 1),
            status=status,
            statuses=AGREEMENT_STATUSES,
            loan=loan,
            badges=BADGES,
        )

    @expose("/<int:agreement_id>")
    def details(self, agreement_id: int) -> str:
        agreement = db.session.get(Agreement, agreement_id)
        if agreement is None:
            abort(404)
        return self._details(agreement, AgreementForm(data=self._form_data(agreement)))

    def _form_data(self, agreement: Agreement) -> dict[str, object]:
        return {
            "settlement_amount": f"{agreement.settlement_amount}",
            "discount": f"{agreement.discount}",
            "grace_days": str(agreement.grace_days),
            "default_threshold_days": str(agreement.default_threshold_days),
            "schedule": _schedule_text(agreement),
        }

    def _details(self, agreement: Agreement, form: AgreementForm) -> str:
        loan = db.session.get(Loan, agreement.loan_id)
        today = business_today()
        rows = [
            {
                "row": r,
                "outstanding": r.amount - r.paid,
                "late": r.paid < r.amount and r.due_date < today,
                "defaults_on": agreement_default_date(agreement, r),
            }
            for r in agreement.installments
        ]
        return self.render(
            "admin_sacco/agreement_details.html",
            agreement=agreement,
            loan=loan,
            owed=loan_debt(loan_id=loan.id).total if loan is not None else None,
            rows=rows,
            people=agreement_people(agreement),
            needs_supervisor=agreement_needs_supervisor(agreement),
            editable=agreement.status in EDITABLE and agreement.drafted_by_id == current_user.id,
            form=form,
            action_form=ActionForm(),
            badges=BADGES,
            when=when,
        )

    # -- the draft form ------------------------------------------------------------------

    @expose("/new", methods=("GET", "POST"))
    def new(self) -> Response | str | tuple[str, int]:
        refused = require("agreement.draft", self)
        if refused is not None:
            return refused
        loan_id = request.args.get("loan_id", type=int)
        loan = db.session.get(Loan, loan_id) if loan_id else None
        if loan is None:
            flash("Open a loan in default and draft its agreement from there.", "error")
            return redirect(url_for(".index"))
        form = AgreementForm(request.form)
        error = None
        if request.method == "POST":
            if not form.validate():
                flash("The form expired; please try again.", "error")
                return redirect(url_for(".new", loan_id=loan.id))
            try:
                agreement = agreement_draft(
                    loan_id=loan.id,
                    staff=current_user._get_current_object(),
                    settlement_amount=(form.settlement_amount.data or "").replace(",", ""),
                    discount=(form.discount.data or "").replace(",", ""),
                    schedule=agreement_schedule_parse(form.schedule.data or ""),
                    grace_days=form.grace_days.data,
                    default_threshold_days=form.default_threshold_days.data,
                    note=form.note.data,
                )
            except SaccoError as exc:
                db.session.rollback()
                error = str(exc)
            else:
                flash(f"Agreement {agreement.id} drafted for {loan.loan_no}.", "success")
                return redirect(url_for(".details", agreement_id=agreement.id))
        owed = loan_debt(loan_id=loan.id).total if loan.status in LIVE_STATUSES else None
        return self.render(
            "admin_sacco/agreement_new.html",
            loan=loan,
            owed=owed,
            form=form,
            error=error,
            today=business_today(),
        )

    @expose("/<int:agreement_id>/edit", methods=("POST",))
    def edit(self, agreement_id: int) -> Response | str | tuple[str, int]:
        back = redirect(url_for(".details", agreement_id=agreement_id))
        form = AgreementForm(request.form)
        if not form.validate():
            flash("The form expired; please try again.", "error")
            return back
        refused = require("agreement.draft", self)
        if refused is not None:
            return refused
        try:
            agreement_update(
                agreement_id=agreement_id,
                staff=current_user._get_current_object(),
                settlement_amount=(form.settlement_amount.data or "").replace(",", ""),
                discount=(form.discount.data or "").replace(",", ""),
                schedule=agreement_schedule_parse(form.schedule.data or ""),
                grace_days=form.grace_days.data,
                default_threshold_days=form.default_threshold_days.data,
            )
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Agreement {agreement_id} not changed: {exc}", "error")
            agreement = db.session.get(Agreement, agreement_id)
            if agreement is None:
                return redirect(url_for(".index"))
            return self._details(agreement, form)  # what was typed stays on the page
        flash(f"Agreement {agreement_id} changed; it is a draft again.", "success")
        return back

    # -- the buttons ---------------------------------------------------------------------

    @expose("/<int:agreement_id>/act", methods=("POST",))
    def act(self, agreement_id: int) -> Response | tuple[str, int]:
        back = redirect(url_for(".details", agreement_id=agreement_id))
        form = ActionForm(request.form)
        if not form.validate():
            flash("The form expired; please try again.", "error")
            return back
        action = form.action.data or ""
        needs, done = ACTIONS.get(action, ("agreement.approve", ""))
        refused = require(needs, self)
        if refused is not None:
            return refused
        staff = current_user._get_current_object()
        try:
            if action == "submit":
                agreement_submit(agreement_id=agreement_id, staff=staff)
            elif action == "approve":
                agreement_approve(agreement_id=agreement_id, staff=staff)
            elif action == "return":
                agreement_return(agreement_id=agreement_id, staff=staff, reason=form.reason.data)
            elif action == "delete":
                agreement_delete(agreement_id=agreement_id, staff=staff)
            elif action == "note":
                agreement_add_note(agreement_id=agreement_id, staff=staff, note=form.note.data)
            else:
                flash("Choose what to do with the agreement.", "error")
                return back
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Agreement {agreement_id} not {done}: {exc}", "error")
        else:
            flash(f"Agreement {agreement_id} {done}.", "success")
        return back


def register(console: Admin) -> None:
    console.add_view(
        AgreementView(
            name="Compromise agreements", category="Loans", endpoint="agreement", url="agreement"
        )
    )
