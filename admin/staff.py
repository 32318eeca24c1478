"""Staff users and the audit log (admin, compliance and auditors)."""

from __future__ import annotations

from flask_admin import Admin

from admin.auth import SecureModelView
from app.extensions import db
from app.models import AuditLog, StaffUser


class AuditView(SecureModelView):
    permission = "audit.view"
    column_default_sort = ("id", True)
    column_filters = ("action", "actor", "object_type")
    column_searchable_list = ("object_id", "actor")


class StaffView(SecureModelView):
    permission = "staff.manage"
    column_list = ("email", "name", "role", "active", "created_at")
    column_exclude_list = ("password_hash",)
    column_details_exclude_list = ("password_hash",)


def register(console: Admin) -> None:
    console.add_view(AuditView(AuditLog, db, name="Audit log", category="Admin"))
    console.add_view(StaffView(StaffUser, db, name="Staff", category="Admin"))
