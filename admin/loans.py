"""Loans in the console: the list (found by loan number or the member's name, number or
phone; with each loan's officer and what it owes, read for the whole page at once), the
loan page (summary, people, schedule, payments) and the actions staff take on a loan,
grouped by what they do and shown to the roles that may use them.

Every button posts to `decide`, which calls one service in app/services/loans/; the
service guards the transition and writes the audit row, so the console cannot do what
the service would refuse.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast

from flask import flash, g, redirect, request, url_for
from flask_admin import Admin, expose
from flask_admin.form import SecureForm
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy.orm import lazyload
from werkzeug.wrappers import Response
from wtforms import HiddenField, IntegerField, StringField
from wtforms.validators import Optional

from admin.auth import SecureModelView, _kenyan_time, require
from admin.search import apply_words, loan_match
from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import Installment, Loan
from app.money import money_text
from app.selectors.loans import LoanFigures, loan_list_figures, loan_page
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


def _loan_no(view: object, context: object, model: Loan, name: str) -> Markup:
    """The number opens the loan page (the page the list is for)."""
    return Markup('<a href="{}">{}</a>').format(
        url_for(".details_view", id=model.id), model.loan_no or f"loan {model.id}"
    )


def _member(view: object, context: object, model: Loan, name: str) -> Markup:
    member = model.member
    return Markup("{}<br><small>{} · {}</small>").format(
        member.name, member.member_no or "", member.phone
    )


def _figures(loan_id: int) -> LoanFigures | None:
    return cast("dict[int, LoanFigures]", g.get("loan_figures", {})).get(loan_id)


def _owed(view: object, context: object, model: Loan, name: str) -> Markup | str:
    figures = _figures(model.id)
    if figures is None or not model.disbursed_on:
        return ""
    if figures.due_now > 0 and figures.due_now != figures.owed:
        return Markup('{}<br><small class="text-danger text-nowrap">{} due now</small>').format(
            money_text(figures.owed), money_text(figures.due_now)
        )
    return money_text(figures.owed)


def _officer(view: object, context: object, model: Loan, name: str) -> str:
    figures = _figures(model.id)
    return (figures.officer if figures else None) or ""


def rate_text(annual_rate: Decimal) -> str:
    """90.0000 reads "90% a year"; 12.5000 reads "12.5% a year"."""
    return f"{annual_rate.normalize():f}% a year"


class LoanView(SecureModelView):
    column_list = (
        "loan_no",
        "member",
        "product",
        "status",
        "principal",
        "owed",
        "days_past_due",
        "officer",
        "disbursed_on",
        "aging_bucket",
        "payout_error",
    )
    column_labels = {
        "loan_no": "Loan",
        "days_past_due": "Days late",
        "owed": "Owed (KES)",
        "aging_bucket": "Bucket",
        "payout_error": "Payout problem",
    }
    column_formatters = {
        "loan_no": _loan_no,
        "member": _member,
        "owed": _owed,
        "officer": _officer,
    }
    # The search box: loan number (l12), or the member's name, number or phone
    # (admin/search.py reads the words).
    column_searchable_list = ("loan_no",)
    column_filters = ("status", "aging_bucket", "in_default", "channel")
    column_default_sort = ("id", True)
    details_template = "admin_sacco/loan_details.html"

    def search_placeholder(self) -> str:
        return "Loan no. (l12), member name, number or phone"

    def _apply_search(
        self, query: Any, count_query: Any, joins: Any, count_joins: Any, search: str
    ) -> tuple[Any, Any, Any, Any]:
        query, count_query = apply_words(query, count_query, search, loan_match)
        return query, count_query, joins, count_joins

    def get_query(self) -> Any:
        # The list shows no installment: the model's eager schedule load (a dozen rows per
        # loan) is left for the pages that read it.
        return super().get_query().options(lazyload(Loan.installments))

    def get_list(self, *args: Any, **kwargs: Any) -> Any:
        """The page's loans, with what each owes and its officer read for the whole page
        in one grouped query (a query per row would grow with the page)."""
        count, loans = super().get_list(*args, **kwargs)
        if kwargs.get("execute", True):
            g.loan_figures = loan_list_figures(
                loan_ids=[loan.id for loan in loans], as_of=business_today()
            )
        return count, loans

    def render(self, template: str, **kwargs: object) -> str:
        if template == self.details_template and kwargs.get("model") is not None:
            loan: Loan = kwargs["model"]  # type: ignore[assignment]
            today = business_today()
            kwargs["facts"] = loan_page(loan=loan, as_of=today)
            kwargs["today"] = today
            kwargs["rate_text"] = rate_text
            kwargs["ke"] = lambda value: _kenyan_time(None, value, "") if value else ""
            kwargs["member_link"] = url_for("member.details_view", id=loan.member_id)
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
