"""Loans in the console: the schedule, and the decisions staff take on a loan.

Every button posts to `decide`, which calls one service in app/services/loans.py; the
service guards the transition and writes the audit row, so the console cannot do what
the service would refuse.
"""

from __future__ import annotations

from datetime import date, datetime

from flask import flash, redirect, request, url_for
from flask_admin import Admin, expose
from flask_admin.form import SecureForm
from flask_login import current_user
from werkzeug.wrappers import Response
from wtforms import HiddenField, IntegerField, StringField
from wtforms.validators import Optional

from admin.auth import SecureModelView, require
from app.errors import SaccoError
from app.extensions import db
from app.models import Installment, Loan
from app.selectors.loans import current_installments, loan_debt
from app.services.loans import (
    LoanError,
    loan_approve,
    loan_disburse,
    loan_recommend,
    loan_reject,
    loan_restructure,
    loan_retry_payout,
    loan_reverse_penalty,
    loan_withdraw,
)
from app.services.payments import payments_request_stk


class DecisionForm(SecureForm):
    """CSRF-checked: a decision is a state change made with the staff member's session."""

    action = HiddenField()
    reason = StringField(validators=[Optional()])
    reference = StringField(validators=[Optional()])
    term = IntegerField(validators=[Optional()])
    amount = StringField(validators=[Optional()])
    installment = IntegerField(validators=[Optional()])


# The permission (app/services/permissions.py) each button of the loan page needs.
DECISIONS = {
    "recommend": "loan.recommend",
    "withdraw": "loan.recommend",
    "approve": "loan.approve",
    "reject": "loan.approve",
    "request_payment": "payment.request",
    "retry_payout": "loan.disburse",
    "disburse": "loan.disburse",
    "restructure": "loan.restructure",
    "reverse_penalty": "penalty.reverse",
}


def _today() -> date:
    from flask import current_app

    return datetime.now(current_app.config["SETTINGS"].tz).date()


class LoanView(SecureModelView):
    column_list = (
        "loan_no",
        "member",
        "product",
        "status",
        "principal",
        "term",
        "disbursed_on",
        "payout_error",
        "days_past_due",
        "aging_bucket",
        "in_default",
    )
    column_searchable_list = ("loan_no",)
    column_filters = ("status", "aging_bucket", "in_default", "channel")
    column_default_sort = ("id", True)
    details_template = "admin_sacco/loan_details.html"

    def render(self, template: str, **kwargs: object) -> str:
        if template == self.details_template and kwargs.get("model") is not None:
            loan: Loan = kwargs["model"]  # type: ignore[assignment]
            kwargs["installments"] = current_installments(loan.id)
            kwargs["superseded"] = [r for r in loan.installments if r.superseded]
            kwargs["debt"] = loan_debt(loan_id=loan.id) if loan.disbursed_on else None
            kwargs["decision_form"] = DecisionForm()
        return super().render(template, **kwargs)

    @expose("/decide/<int:loan_id>", methods=("POST",))
    def decide(self, loan_id: int) -> Response | tuple[str, int]:
        back = url_for(".details_view", id=loan_id)
        form = DecisionForm(request.form)
        if not form.validate():
            flash("The form expired; please try again.", "error")
            return redirect(back)
        action, staff = form.action.data, current_user._get_current_object()
        refused = require(DECISIONS.get(action, "loan.approve"), self)
        if refused is not None:
            return refused
        reason = (form.reason.data or "").strip()
        try:
            if action == "recommend":
                loan_recommend(loan_id=loan_id, staff=staff, note=reason or None)
            elif action == "approve":
                loan_approve(loan_id=loan_id, staff=staff, note=reason or None)
            elif action == "reject":
                loan_reject(loan_id=loan_id, staff=staff, reason=reason)
            elif action == "withdraw":
                loan_withdraw(loan_id=loan_id, actor=staff)
            elif action == "request_payment":
                request_ = payments_request_stk(
                    loan_id=loan_id,
                    amount=(form.amount.data or "").strip(),
                    channel="console",
                    actor=f"staff:{staff.email}",
                )
                flash(
                    f"An M-PESA prompt for KES {request_.amount:,.0f} is on its way to "
                    f"{request_.phone}.",
                    "info",
                )
            elif action == "retry_payout":
                loan_retry_payout(loan_id=loan_id, staff=staff)
            elif action == "disburse":
                reference = (form.reference.data or "").strip()
                if not reference:
                    raise LoanError("a manual disbursement needs the bank or cash reference")
                loan_disburse(
                    loan_id=loan_id,
                    reference=reference,
                    value_date=_today(),
                    channel="manual",
                    actor=staff,
                )
            elif action == "restructure":
                loan_restructure(
                    loan_id=loan_id,
                    staff=staff,
                    term=form.term.data or 0,
                    start_date=_today(),
                    reason=reason,
                )
            elif action == "reverse_penalty":
                number = form.installment.data
                if not number:
                    raise LoanError("choose the installment whose penalty was charged in error")
                reversed_ = loan_reverse_penalty(
                    loan_id=loan_id,
                    installment_number=number,
                    staff=staff,
                    reason=reason,
                    value_date=_today(),
                )
                flash(
                    f"The penalty of KES {reversed_:,.2f} on installment {number} is reversed.",
                    "info",
                )
            else:
                raise LoanError(f"unknown action {action!r}")
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Not done: {exc}", "error")
        else:
            flash(f"Done: {action.replace('_', ' ')}.", "success")
        return redirect(back)


class InstallmentView(SecureModelView):
    column_filters = ("loan_id", "due_date", "superseded")


def register(console: Admin) -> None:
    from admin import applications, imports

    applications.register(console)
    console.add_view(LoanView(Loan, db, name="Loans", category="Loans"))
    console.add_view(InstallmentView(Installment, db, name="Schedules", category="Loans"))
    imports.register(console)
