"""M-PESA in the console: payments, suspense payments staff assign, and the requests and
raw callbacks (read-only: they are the record of what Safaricom said)."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_admin import Admin, expose
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy.orm import Query
from werkzeug.wrappers import Response

from admin.auth import SecureModelView, TokenForm, require
from app.errors import SaccoError
from app.extensions import db
from app.models import Loan, Member, MpesaCallback, MpesaRequest, Payment
from app.services.payments import payments_assign_suspense
from app.services.permissions import permitted


def _member_no(view: object, context: object, model: Payment, name: str) -> str:
    member = db.session.get(Member, model.member_id) if model.member_id else None
    return member.member_no or "" if member is not None else ""


def _loan_no(view: object, context: object, model: Payment, name: str) -> str:
    loan = db.session.get(Loan, model.loan_id) if model.loan_id else None
    return loan.loan_no or "" if loan is not None else ""


class PaymentView(SecureModelView):
    column_list = (
        "transacted_at",
        "receipt",
        "channel",
        "direction",
        "amount",
        "phone",
        "bill_ref",
        "status",
        "member_id",
        "loan_id",
        "assigned_by",
    )
    column_labels = {
        "bill_ref": "account typed",
        "transacted_at": "paid at",
        "member_id": "member",
        "loan_id": "loan",
    }
    column_searchable_list = ("receipt", "bill_ref", "payer_name")
    column_filters = ("status", "channel", "direction")
    column_default_sort = ("id", True)
    column_formatters = {"member_id": _member_no, "loan_id": _loan_no}


def _suggested(view: object, context: object, model: Payment, name: str) -> str:
    """The member whose phone the (masked or hashed) MSISDN matches, if only one does."""
    if model.suggested_member_id is None:
        return ""
    member = db.session.get(Member, model.suggested_member_id)
    return f"{member.member_no} {member.name}" if member is not None else ""


def _assign_form(view: object, context: object, model: Payment, name: str) -> Markup | str:
    if not permitted(current_user, "suspense.assign"):
        return ""  # no button a role cannot use
    suggested = (
        db.session.get(Member, model.suggested_member_id)
        if model.suggested_member_id is not None
        else None
    )
    html = render_template("admin_sacco/suspense_assign.html", payment=model, suggested=suggested)
    return Markup(html)  # noqa: S704 - the template escaped every value


class SuspenseView(SecureModelView):
    """Paybill money whose account matched no member or loan, oldest first: it sits in
    GL-SUSPENSE until a branch manager places it (payments_assign_suspense posts it from
    there to the member's savings or loan, audited)."""

    column_list = (
        "transacted_at",
        "receipt",
        "amount",
        "payer_name",
        "phone",
        "bill_ref",
        "suggested",
        "assign",
    )
    column_labels = {
        "transacted_at": "paid at",
        "payer_name": "payer",
        "phone": "payer phone (as M-PESA sent it)",
        "bill_ref": "account typed",
        "suggested": "suggested member",
        "assign": "assign to",
    }
    column_formatters = {"suggested": _suggested, "assign": _assign_form}
    column_searchable_list = ("receipt", "bill_ref", "payer_name")
    column_default_sort = ("id", False)  # the longest-waiting first
    can_view_details = False

    def get_query(self) -> Query:
        return super().get_query().filter(Payment.status == "suspense")

    def get_count_query(self) -> Query:
        return super().get_count_query().filter(Payment.status == "suspense")

    @expose("/assign/<int:payment_id>", methods=("POST",))
    def assign(self, payment_id: int) -> Response | tuple[str, int]:
        back = redirect(url_for(".index_view"))
        if not TokenForm(request.form).validate():
            flash("The form expired; please try again.", "error")
            return back
        refused = require("suspense.assign", self)
        if refused is not None:
            return refused
        account = (request.form.get("account") or "").strip()
        note = (request.form.get("note") or "").strip() or None
        try:
            if not account:
                raise SaccoError("type the member number (M…) or loan number (L…) to assign to")
            payment = payments_assign_suspense(
                payment_id=payment_id,
                staff=current_user._get_current_object(),
                account=account,
                note=note,
            )
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Not assigned: {exc}", "error")
        else:
            member = db.session.get(Member, payment.member_id)
            loan = db.session.get(Loan, payment.loan_id) if payment.loan_id else None
            if loan is not None:
                where = f"loan {loan.loan_no} of {member.name if member else ''}".strip()
            elif member is not None:
                where = f"the savings of {member.member_no} {member.name}"
            else:
                where = account
            flash(f"KES {payment.amount:,.2f} ({payment.receipt}) assigned to {where}.", "success")
        return back


class RequestView(SecureModelView):
    column_list = (
        "created_at",
        "kind",
        "purpose",
        "status",
        "phone",
        "amount",
        "account_reference",
        "result_desc",
        "requested_by",
        "flag",
    )
    column_filters = ("kind", "status", "channel")
    column_searchable_list = ("checkout_request_id", "originator_conversation_id", "phone")
    column_default_sort = ("id", True)


class CallbackView(SecureModelView):
    # The raw body is long: it shows on the details page, not in the list.
    column_list = ("received_at", "kind", "reference", "status", "body_size", "error")
    column_filters = ("kind", "status")
    column_searchable_list = ("reference",)
    column_default_sort = ("id", True)


def register(console: Admin) -> None:
    console.add_view(PaymentView(Payment, db, name="Payments", category="M-PESA"))
    console.add_view(
        SuspenseView(
            Payment, db, name="Suspense", category="M-PESA", endpoint="suspense", url="suspense"
        )
    )
    console.add_view(RequestView(MpesaRequest, db, name="Requests", category="M-PESA"))
    console.add_view(CallbackView(MpesaCallback, db, name="Callbacks", category="M-PESA"))
