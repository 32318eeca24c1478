"""Promises to pay in the console: every promise with its member and loan, and how often
members keep them (the fulfilment rate, counted by the database)."""

from __future__ import annotations

from typing import Any

from flask import g, url_for
from flask_admin import Admin
from markupsafe import Markup

from admin.auth import SecureModelView
from app.clock import business_today
from app.extensions import db
from app.models import PromiseToPay
from app.selectors.promises import promise_fulfilment, promise_parties

_LINK = Markup('<a href="{}">{}</a>')


def _parties(model: PromiseToPay) -> Any:
    parties = g.get("promise_parties")
    if parties is None or model.member_id not in parties.members:  # a details page
        parties = promise_parties(member_ids=[model.member_id], loan_ids=[model.loan_id])
    return parties


def _member(view: object, context: object, model: PromiseToPay, name: str) -> Markup:
    member_no, member_name = _parties(model).members.get(model.member_id, ("", ""))
    target = url_for("member.details_view", id=model.member_id)
    return _LINK.format(target, f"{member_no} {member_name}".strip())


def _loan(view: object, context: object, model: PromiseToPay, name: str) -> Markup:
    loan_no = _parties(model).loans.get(model.loan_id, f"#{model.loan_id}")
    return _LINK.format(url_for("loan.details_view", id=model.loan_id), loan_no)


class PromiseView(SecureModelView):
    """Read-only: a promise is made by the member (USSD, SMS) or recorded by the service,
    and settled by the reminder job."""

    column_list = ("member", "loan", "amount", "promised_date", "status", "channel", "created_at")
    column_labels = {"promised_date": "Due", "created_at": "Made at"}
    column_filters = ("status", "promised_date", "channel")
    column_sortable_list = ("amount", "promised_date", "status", "channel", "created_at")
    column_default_sort = [("promised_date", True), ("id", True)]
    column_formatters = {"member": _member, "loan": _loan}
    column_details_list = column_list
    column_formatters_detail = column_formatters
    list_template = "admin_sacco/promises_list.html"

    def get_list(self, *args: Any, **kwargs: Any) -> Any:
        count, data = super().get_list(*args, **kwargs)
        # The page's members and loans in two queries, not two per row.
        g.promise_parties = promise_parties(
            member_ids=[p.member_id for p in data], loan_ids=[p.loan_id for p in data]
        )
        return count, data

    def render(self, template: str, **kwargs: Any) -> str:
        if template == self.list_template:
            kwargs["fulfilment"] = promise_fulfilment(today=business_today())
        return super().render(template, **kwargs)


def register(console: Admin) -> None:
    console.add_view(PromiseView(PromiseToPay, db, name="Promises to pay", category="Loans"))
