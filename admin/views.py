"""Model views. Edits that move money or loan state are services, not form saves."""

from __future__ import annotations

from typing import Any

from flask_admin import Admin
from markupsafe import Markup
from sqlalchemy import inspect
from wtforms.validators import ValidationError

from admin.auth import SecureModelView, actor
from admin.loans import LoanView
from app.extensions import db
from app.models import (
    Account,
    AuditLog,
    Installment,
    JournalEntry,
    Loan,
    LoanProduct,
    Member,
    MpesaCallback,
    MpesaRequest,
    Payment,
    SmsMessage,
    StaffUser,
)
from app.phone import PhoneError, normalise_phone
from app.services.audit import audit_record
from app.services.loan_products import product_problem


class MemberView(SecureModelView):
    column_list = ("member_no", "name", "phone", "national_id", "status", "language", "created_at")
    column_searchable_list = ("member_no", "name", "phone", "national_id")

    def search_placeholder(self) -> str:
        return "Name, member no., ID or phone (07..., +254...)"

    def get_list(
        self,
        page: int | None,
        sort_field: str | None,
        sort_desc: bool,
        search: str | None,
        filters: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """A phone typed as a person types it (07…, +254 7…, 7…) is searched in the form
        we store (2547…)."""
        if search:
            try:
                search = normalise_phone(search)
            except PhoneError:
                pass
        return super().get_list(page, sort_field, sort_desc, search, filters, *args, **kwargs)

    column_filters = ("status", "language")
    column_exclude_list = ("pin_hash",)
    column_details_exclude_list = ("pin_hash",)


def _display_balance(view: object, context: object, model: Account, name: str) -> str:
    # Savings and income are credit-normal: the journal stores them negative, a person
    # reads them positive.
    return f"{model.display_balance:,.2f}"


class AccountView(SecureModelView):
    column_list = ("code", "kind", "name", "status", "balance")
    column_formatters = {"balance": _display_balance}
    column_formatters_detail = {"balance": _display_balance}
    column_searchable_list = ("code", "name")
    column_filters = ("kind", "status")


_LINE = Markup(
    "<tr><td>{}</td><td>{}</td><td class='text-right'>{}</td><td class='text-right'>{}</td></tr>"
)
_LINES = Markup(
    "<table class='table table-sm mb-0'><tr><th>account</th><th></th>"
    "<th class='text-right'>debit</th><th class='text-right'>credit</th></tr>{}</table>"
)


def _entry_lines(view: object, context: object, model: JournalEntry, name: str) -> Markup:
    """An entry's lines as a person checks them: account, debit, credit (Markup.format
    escapes every value)."""
    rows = Markup("").join(
        _LINE.format(
            line.account.code,
            line.account.name,
            f"{line.amount:,.2f}" if line.amount > 0 else "",
            f"{-line.amount:,.2f}" if line.amount < 0 else "",
        )
        for line in model.lines
    )
    return _LINES.format(rows)


class JournalView(SecureModelView):
    column_list = (
        "id",
        "posted_at",
        "value_date",
        "kind",
        "description",
        "actor",
        "idempotency_key",
    )
    column_searchable_list = ("description", "idempotency_key")
    column_filters = ("kind", "value_date")
    column_default_sort = ("id", True)
    column_details_list = (*column_list, "member_id", "loan_id", "lines")
    column_formatters_detail = {"lines": _entry_lines}


class SmsView(SecureModelView):
    """The outbox in the columns a person reads; the rest on the details page."""

    column_list = ("created_at", "phone", "template", "status", "attempts", "sent_at", "body")
    column_filters = ("status", "template", "kind")
    column_searchable_list = ("phone", "template", "body")
    column_default_sort = ("id", True)
    column_formatters = {
        "body": lambda v, c, m, n: (m.body[:60] + "...") if len(m.body) > 60 else m.body
    }


class ProductView(SecureModelView):
    """Admins set product terms; running loans keep the terms they were made with."""

    roles = ("admin",)
    can_create = True
    can_edit = True
    form_excluded_columns = ("created_at",)

    def on_model_change(self, form: object, model: LoanProduct, is_created: bool) -> None:
        problem = product_problem(model)
        if problem:
            raise ValidationError(problem)
        # Product terms decide what members are offered: every change is audited.
        before, after = {}, {}
        for attr in inspect(model).attrs:
            history = attr.history
            if history.has_changes():
                before[attr.key] = history.deleted[0] if history.deleted else None
                after[attr.key] = history.added[0] if history.added else None
        audit_record(
            actor=actor(),
            action="product.create" if is_created else "product.update",
            object_type="loan_product",
            object_id=model.code,
            before=None if is_created else before,
            after=after,
        )


class InstallmentView(SecureModelView):
    column_filters = ("loan_id", "due_date", "superseded")


class AuditView(SecureModelView):
    roles = ("admin", "compliance", "auditor", "branch_manager")
    column_default_sort = ("id", True)
    column_filters = ("action", "actor", "object_type")
    column_searchable_list = ("object_id", "actor")


class StaffView(SecureModelView):
    roles = ("admin",)
    column_list = ("email", "name", "role", "active", "created_at")
    column_exclude_list = ("password_hash",)
    column_details_exclude_list = ("password_hash",)


def register_views(console: Admin) -> None:
    s = db  # Flask-Admin 2.2 deprecates passing db.session (a warning is an error in tests)
    console.add_view(MemberView(Member, s, name="Members", category="Members"))
    console.add_view(AccountView(Account, s, name="Accounts", category="Ledger"))
    console.add_view(JournalView(JournalEntry, s, name="Journal", category="Ledger"))
    console.add_view(LoanView(Loan, s, name="Loans", category="Loans"))
    console.add_view(InstallmentView(Installment, s, name="Schedules", category="Loans"))
    console.add_view(ProductView(LoanProduct, s, name="Products", category="Loans"))
    console.add_view(SecureModelView(Payment, s, name="Payments", category="M-PESA"))
    console.add_view(SecureModelView(MpesaRequest, s, name="Requests", category="M-PESA"))
    console.add_view(SecureModelView(MpesaCallback, s, name="Callbacks", category="M-PESA"))
    console.add_view(SmsView(SmsMessage, s, name="SMS outbox", category="SMS"))
    console.add_view(AuditView(AuditLog, s, name="Audit log", category="Admin"))
    console.add_view(StaffView(StaffUser, s, name="Staff", category="Admin"))
