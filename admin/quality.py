"""What the weekly data-quality check found (read-only; fixing is done where the data is)."""

from __future__ import annotations

from flask_admin import Admin

from admin.auth import SecureModelView
from app.extensions import db
from app.models import DataQualityFinding


class FindingView(SecureModelView):
    column_list = ("run_date", "rule", "object_type", "object_id", "detail")
    column_filters = ("run_date", "rule", "object_type")
    column_searchable_list = ("object_id", "detail")
    column_default_sort = [("run_date", True), ("id", False)]
    column_labels = {"rule": "check", "object_type": "what", "object_id": "id"}


def register(console: Admin) -> None:
    console.add_view(FindingView(DataQualityFinding, db, name="Data quality", category="Admin"))
