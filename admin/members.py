"""Members in the console."""

from __future__ import annotations

from typing import Any

from flask_admin import Admin

from admin.auth import SecureModelView
from app.extensions import db
from app.models import Member
from app.phone import PhoneError, normalise_phone


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


def register(console: Admin) -> None:
    console.add_view(MemberView(Member, db, name="Members", category="Members"))
