"""Promises to pay in the console: every promise with its member and loan, and how often
members keep them (the fulfilment rate, counted by the database). Filters by status, due
date, amount and the loan's officer; promises are made on the officer desk (admin/desk.py),
one at a time after a call or in bulk from the arrears list."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from flask import g, url_for
from flask_admin import Admin
from flask_admin.contrib.sqla.filters import BaseSQLAFilter
from markupsafe import Markup
from sqlalchemy import func, select

from admin.auth import SecureModelView
from app.clock import business_today
from app.extensions import db
from app.models import Loan, PromiseToPay, StaffUser
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


_BADGE = Markup('<span class="badge {}">{}</span>')
_BADGES = {
    "open": "badge-info",
    "kept": "badge-success",
    "partly": "badge-warning",
    "broken": "badge-danger",
}


def _status(view: object, context: object, model: PromiseToPay, name: str) -> Markup:
    label = "partly kept" if model.status == "partly" else model.status
    return _BADGE.format(_BADGES.get(model.status, "badge-secondary"), label)


class OfficerFilter(BaseSQLAFilter):
    """Promises on the loans an officer follows up now, by the officer's email ("none":
    loans nobody follows up). Typed, not a drop-down: Flask-Admin builds a filter's
    options once, when the console starts, and staff come and go."""

    def __init__(self) -> None:
        super().__init__(PromiseToPay.loan_id, "Officer")

    def apply(self, query: Any, value: str, alias: Any = None) -> Any:
        value = value.strip().lower()
        if value == "none":
            loans = select(Loan.id).where(Loan.officer_id.is_(None))
        else:
            officer = select(StaffUser.id).where(func.lower(StaffUser.email) == value)
            loans = select(Loan.id).where(Loan.officer_id.in_(officer))
        return query.filter(PromiseToPay.loan_id.in_(loans))

    def operation(self) -> str:
        return "email is"


class _Amount(BaseSQLAFilter):
    """Flask-Admin has no filter for our Money type (integer cents on SQLite): a KES
    amount typed by staff, compared through the column's own type."""

    def validate(self, value: str) -> bool:
        try:
            Decimal(value)
        except (InvalidOperation, ValueError):
            return False
        return True

    def clean(self, value: str) -> Decimal:
        return Decimal(value)


class AmountAtLeast(_Amount):
    def apply(self, query: Any, value: Decimal, alias: Any = None) -> Any:
        return query.filter(self.get_column(alias) >= value)

    def operation(self) -> str:
        return "at least (KES)"


class AmountAtMost(_Amount):
    def apply(self, query: Any, value: Decimal, alias: Any = None) -> Any:
        return query.filter(self.get_column(alias) <= value)

    def operation(self) -> str:
        return "at most (KES)"


class PromiseView(SecureModelView):
    """Read-only: a promise is made by the member (USSD, SMS) or recorded by the service,
    and settled by the reminder job."""

    column_list = (
        "member",
        "loan",
        "amount",
        "promised_date",
        "status",
        "paid_amount",
        "channel",
        "created_at",
    )
    column_labels = {"promised_date": "Due", "created_at": "Made at", "paid_amount": "Paid"}
    column_filters = (
        "status",
        "promised_date",
        AmountAtLeast(PromiseToPay.amount, "Amount"),
        AmountAtMost(PromiseToPay.amount, "Amount"),
        "channel",
        OfficerFilter(),
    )
    column_sortable_list = ("amount", "promised_date", "status", "channel", "created_at")
    column_default_sort = [("promised_date", True), ("id", True)]
    column_formatters = {"member": _member, "loan": _loan, "status": _status}
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
