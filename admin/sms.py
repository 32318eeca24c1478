"""SMS in the console."""

from __future__ import annotations

from flask_admin import Admin

from admin.auth import SecureModelView
from app.extensions import db
from app.models import SmsMessage


class SmsView(SecureModelView):
    """The outbox in the columns a person reads; the rest on the details page."""

    column_list = ("created_at", "phone", "template", "status", "attempts", "sent_at", "body")
    column_filters = ("status", "template", "kind")
    column_searchable_list = ("phone", "template", "body")
    column_default_sort = ("id", True)
    column_formatters = {
        "body": lambda v, c, m, n: (m.body[:60] + "...") if len(m.body) > 60 else m.body
    }


def register(console: Admin) -> None:
    console.add_view(SmsView(SmsMessage, db, name="SMS outbox", category="SMS"))
