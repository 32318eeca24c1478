"""Members in the console: the list, and one page with everything about a member.

The member page reads each block (loans, payments, SMS, USSD sessions, promises, audit)
through a selector capped at the newest rows, with a link to the full list. Its buttons
post to `act`, which checks the role, then calls one service in app/services/members.py;
the service checks the role again and writes the audit row. Registering and editing a
member go through `member_add` and `member_update`, never a form save; the phone is not
edited here (a new number has its own verified flow).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from flask import current_app, flash, redirect, request, url_for
from flask_admin import Admin, expose
from flask_admin.contrib.sqla.filters import FilterEqual
from flask_admin.form import SecureForm
from flask_login import current_user
from werkzeug.wrappers import Response
from wtforms import Form, HiddenField, SelectChoice, SelectField, StringField
from wtforms.validators import InputRequired, Length, Optional

from admin.auth import SecureModelView, _kenyan_time, actor, require
from admin.search import apply_words, member_match
from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import AuditLog, Loan, Member, Payment, PromiseToPay, SmsMessage, UssdEvent
from app.selectors.members import (
    member_audit,
    member_balances,
    member_loans,
    member_open_loans,
    member_payments,
    member_promises,
    member_sms,
    member_ussd_sessions,
)
from app.selectors.promises import member_promise_keeping
from app.selectors.statements import MAX_STATEMENT_DAYS, StatementRangeError
from app.services.members import (
    ActivationCode,
    MemberError,
    member_add,
    member_issue_activation_code,
    member_request_payment,
    member_reset_pin,
    member_send_statement,
    member_update,
)
from app.services.permissions import permitted
from app.services.statements import statement_export
from app.sms_templates import sms_body_for_staff

LANGUAGES = [SelectChoice("en", "English"), SelectChoice("sw", "Kiswahili")]


class MemberCreateForm(SecureForm):
    name = StringField(validators=[InputRequired(), Length(max=120)])
    phone = StringField(
        description="07..., +254... or 254...", validators=[InputRequired(), Length(max=20)]
    )
    national_id = StringField("National ID", validators=[Optional(), Length(max=20)])
    language = SelectField(choices=LANGUAGES, default="en")


class MemberEditForm(SecureForm):
    """No phone: a new number goes through the verified phone change."""

    name = StringField(validators=[InputRequired(), Length(max=120)])
    national_id = StringField("National ID", validators=[Optional(), Length(max=20)])
    language = SelectField(choices=LANGUAGES)


class ActionForm(SecureForm):
    """CSRF-checked: each button of the member page posts this."""

    action = HiddenField()
    loan_id = StringField(validators=[Optional()])
    amount = StringField(validators=[Optional()])
    request_id = HiddenField()


# The permission (app/services/permissions.py) each button of the member page needs.
ACTIONS = {
    "request_payment": "payment.request",
    "send_statement": "member.message",
    "reset_pin": "member.edit",
    "activation_code": "member.edit",
}


def _code_words(member: Member, code: ActivationCode) -> str:
    """The one time staff see an activation code: to hand to the member in person (not by
    SMS: a code texted to the phone would prove only what the caller id already claims)."""
    until = _kenyan_time(None, code.expires_at, "")[:10]
    return (
        f"Activation code for {member.member_no}: {code.code} (until {until}). Give it to "
        "the member for their first dial; it is not shown again."
    )


class MemberView(SecureModelView):
    column_list = ("member_no", "name", "phone", "national_id", "status", "language", "created_at")
    column_searchable_list = ("member_no", "name", "phone", "national_id")
    column_filters = ("status", "language")
    column_exclude_list = ("pin_hash",)
    column_details_list = (
        "member_no",
        "name",
        "phone",
        "national_id",
        "status",
        "language",
        "failed_pin_count",
        "locked_until",
        "external_ref",
        "created_at",
    )
    column_default_sort = ("id", True)
    details_template = "admin_sacco/member_details.html"
    edit_permission = "member.edit"
    editable = ("create", "edit")

    def search_placeholder(self) -> str:
        return "Name, member no. (m3), ID or phone (0733..., +254...)"

    def _apply_search(
        self, query: Any, count_query: Any, joins: Any, count_joins: Any, search: str
    ) -> tuple[Any, Any, Any, Any]:
        """A phone or member number as a person types it (admin/search.py)."""
        query, count_query = apply_words(query, count_query, search, member_match)
        return query, count_query, joins, count_joins

    # -- register and edit: through the services ----------------------------------------

    def get_create_form(self) -> type[Form]:
        return MemberCreateForm

    def get_edit_form(self) -> type[Form]:
        return MemberEditForm

    def create_model(self, form: Form) -> Member | bool:
        try:
            member = member_add(
                name=form.name.data or "",
                phone=form.phone.data or "",
                national_id=form.national_id.data,
                language=form.language.data or "en",
                actor=actor(),
                commit=False,
            )
            # Committed with the member: a member is never registered without a code.
            code = member_issue_activation_code(
                member_id=member.id, staff=current_user._get_current_object()
            )
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Not registered: {exc}", "error")
            return False
        flash(
            f"Registered {member.member_no} {member.name}. {_code_words(member, code)}", "success"
        )
        return member

    def update_model(self, form: Form, model: Member) -> bool:
        try:
            member_update(
                member_id=model.id,
                staff=current_user._get_current_object(),
                name=form.name.data or "",
                national_id=form.national_id.data,
                language=form.language.data or "",
            )
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Not saved: {exc}", "error")
            return False
        return True

    # -- the member page ------------------------------------------------------------------

    def _view_of(self, model: type) -> SecureModelView | None:
        for view in self.admin._views:  # type: ignore[union-attr]
            if getattr(view, "model", None) is model and view.is_accessible():
                return view
        return None

    def list_link(
        self, model: type, column: str, value: object, search: str | None = None
    ) -> str | None:
        """The full list behind a capped block: the view of `model` filtered on `column`
        when it offers that filter, else searched for `search`, else unfiltered. None when
        the role cannot open that list."""
        view = self._view_of(model)
        if view is None:
            return None
        endpoint = f"{view.endpoint}.index_view"
        for arg, (_, flt) in (view._filter_args or {}).items():
            key = getattr(getattr(flt, "column", None), "key", None)
            if key == column and isinstance(flt, FilterEqual):
                return url_for(endpoint, **{f"flt0_{arg}": value})
        if search is not None and view.column_searchable_list:
            return url_for(endpoint, search=search)
        return url_for(endpoint)

    def row_link(self, model: type, row_id: int) -> str | None:
        view = self._view_of(model)
        return url_for(f"{view.endpoint}.details_view", id=row_id) if view else None

    def render(self, template: str, **kwargs: Any) -> str:
        if template == self.details_template and kwargs.get("model") is not None:
            kwargs.update(self._member_page(kwargs["model"]))
        return super().render(template, **kwargs)

    def _member_page(self, member: Member) -> dict[str, Any]:
        today = business_today()
        loans = member_loans(member_id=member.id, as_of=today)
        may_audit = permitted(current_user, "audit.view")
        no = member.member_no or ""
        return {
            "today": today,
            "balances": member_balances(member_id=member.id),
            "loans": loans,
            "open_loans": member_open_loans(member_id=member.id),
            "payments": member_payments(member_id=member.id),
            "sms": member_sms(member_id=member.id),
            # Every outbox body on the page as staff may read it (codes starred out).
            "sms_body": lambda message: sms_body_for_staff(message.template, message.body),
            "ussd": member_ussd_sessions(phone=member.phone),
            "promises": member_promises(member_id=member.id),
            "promise_keeping": member_promise_keeping(member_id=member.id),
            # The audit log is for compliance, auditors and admins (the role matrix).
            "audit": member_audit(member_no=no, loan_nos=[m.loan.loan_no for m in loans.rows])
            if may_audit
            else None,
            "links": {
                "loans": self.list_link(Loan, "member_id", member.id) if loans.more else None,
                "payments": self.list_link(Payment, "member_id", member.id, no),
                "sms": self.list_link(SmsMessage, "member_id", member.id, member.phone),
                "ussd": self.list_link(UssdEvent, "phone", f"+{member.phone}", member.phone),
                "promises": self.list_link(PromiseToPay, "member_id", member.id, no),
                "audit": self.list_link(AuditLog, "object_id", no, no) if may_audit else None,
            },
            "row_link": self.row_link,
            "action_form": ActionForm(),
            # One id per page view: a double-click on "send statement" sends one SMS.
            "request_id": uuid.uuid4().hex,
            "statement_from": today - timedelta(days=90),
            "statement_to": today,
            "max_days": MAX_STATEMENT_DAYS,
            "ke": lambda value: _kenyan_time(None, value, "") if value else "",
            "loan_link": lambda loan_id: self.row_link(Loan, loan_id),
            "loan_numbers": {m.loan.id: m.loan.loan_no for m in loans.rows},
            "payment_link": lambda payment_id: self.row_link(Payment, payment_id),
        }

    @expose("/act/<int:member_id>", methods=("POST",))
    def act(self, member_id: int) -> Response | tuple[str, int]:
        back = url_for(".details_view", id=member_id)
        form = ActionForm(request.form)
        if not form.validate():
            flash("The form expired; please try again.", "error")
            return redirect(back)
        action = form.action.data or ""
        refused = require(ACTIONS.get(action, "member.edit"), self)
        if refused is not None:
            return refused
        staff = current_user._get_current_object()
        try:
            if action == "request_payment":
                try:
                    loan_id = int(form.loan_id.data or "")
                except ValueError:
                    raise MemberError("choose the loan the payment is for") from None
                prompt = member_request_payment(
                    member_id=member_id,
                    loan_id=loan_id,
                    amount=(form.amount.data or "").strip(),
                    staff=staff,
                )
                message = (
                    f"An M-PESA prompt for KES {prompt.amount:,.0f} is on its way to "
                    f"{prompt.phone}."
                )
            elif action == "send_statement":
                sms = member_send_statement(
                    member_id=member_id,
                    staff=staff,
                    request_id=form.request_id.data or uuid.uuid4().hex,
                )
                message = f"The mini statement is queued by SMS to {sms.phone}."
            elif action == "reset_pin":
                member_reset_pin(member_id=member_id, staff=staff)
                message = (
                    "The PIN is reset: on the next dial the member sets a new one after their "
                    "ID number or an activation code."
                )
            elif action == "activation_code":
                code = member_issue_activation_code(member_id=member_id, staff=staff)
                member = db.session.get(Member, member_id)
                assert member is not None  # the code was just issued to it
                message = _code_words(member, code)
                if member.pin_hash:
                    message += " The member has a PIN: the code is asked for only after a reset."
            else:
                raise MemberError(f"unknown action {action!r}")
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Not done: {exc}", "error")
        else:
            flash(message, "success")
        return redirect(back)

    @expose("/statement/<int:member_id>")
    def statement(self, member_id: int) -> Response:
        """The statement for a range as CSV or PDF (anyone who may view members)."""
        back = url_for(".details_view", id=member_id)
        try:
            start = _day(request.args.get("start"), "start")
            end = _day(request.args.get("end"), "end")
            export = statement_export(
                member_id=member_id,
                start=start,
                end=end,
                fmt=request.args.get("format", "csv"),
                staff=current_user._get_current_object(),
                printed=datetime.now(current_app.config["SETTINGS"].tz),
            )
        except SaccoError as exc:
            db.session.rollback()
            flash(f"No statement: {exc}", "error")
            return redirect(back)
        return Response(
            export.content,
            mimetype=export.mimetype,
            headers={"Content-Disposition": f'attachment; filename="{export.filename}"'},
        )


def _day(raw: str | None, which: str) -> date:
    try:
        return date.fromisoformat((raw or "").strip())
    except ValueError:
        raise StatementRangeError(f"the {which} date must be a date like 2026-01-31") from None


def register(console: Admin) -> None:
    console.add_view(MemberView(Member, db, name="Members", category="Members"))
