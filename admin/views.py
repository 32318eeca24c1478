"""Model views. Edits that move money or loan state are services, not form saves."""

from __future__ import annotations

from flask_admin import Admin

from admin.auth import SecureModelView
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


class MemberView(SecureModelView):
    column_list = ("member_no", "name", "phone", "national_id", "status", "language", "created_at")
    column_searchable_list = ("member_no", "name", "phone", "national_id")
    column_filters = ("status", "language")
    column_exclude_list = ("pin_hash",)
    column_details_exclude_list = ("pin_hash",)


class AccountView(SecureModelView):
    column_list = ("code", "kind", "name", "status", "balance")
    column_searchable_list = ("code", "name")
    column_filters = ("kind", "status")


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


class ProductView(SecureModelView):
    roles = ("admin",)
    can_create = True
    can_edit = True


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
    console.add_view(SecureModelView(SmsMessage, s, name="SMS outbox", category="SMS"))
    console.add_view(AuditView(AuditLog, s, name="Audit log", category="Admin"))
    console.add_view(StaffView(StaffUser, s, name="Staff", category="Admin"))
