"""Account products in the console (deposits, withdrawable savings, share capital): every
role reads them, admins change what a product allows.

A change goes through `product_update` (audited), never a form save. The code, the kind and
the account-number suffix are shown but never edited: members' ledger accounts and the
Paybill references members type depend on them. Creating and deleting products are not
offered: a product's accounts would be left without one.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from flask import flash
from flask_admin import Admin
from flask_admin.form import SecureForm
from sqlalchemy.exc import SQLAlchemyError
from wtforms import (
    BooleanField,
    DecimalField,
    Form,
    IntegerField,
    SelectChoice,
    SelectField,
    StringField,
)
from wtforms.validators import InputRequired, Length, NumberRange, Optional

from admin.auth import SecureModelView, actor
from app.errors import SaccoError
from app.extensions import db
from app.models import AccountProduct
from app.models.savings import INTEREST_PERIODS
from app.selectors.member_accounts import member_accounts
from app.services.savings.products import PRODUCT_FIELDS, product_update

log = logging.getLogger(__name__)

KIND_WORDS = {
    "deposits": "Deposits (not withdrawable; the base of loan limits)",
    "savings": "Savings (withdrawable)",
    "shares": "Share capital (never withdrawable)",
    "fixed": "Fixed deposit (locked for its term)",
    "target": "Target savings (locked until the member's date or amount)",
}
PERIOD_WORDS = {
    "none": "No interest",
    "monthly": "Monthly",
    "quarterly": "Quarterly",
    "yearly": "Yearly",
}
MAX_RATE = Decimal(100)  # percent a year; above it is a typing slip


def _blank_is_none(value: str | None) -> str | None:
    """A blank Kiswahili name is no name (members read `name`), not an empty one."""
    return (value or "").strip() or None


def _stripped(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


class AccountProductForm(SecureForm):
    """What `product_update` may change (PRODUCT_FIELDS), each with the refusal a person
    reads; CSRF-checked."""

    name = StringField(validators=[InputRequired(), Length(max=60)], filters=[_stripped])
    name_sw = StringField(
        "Name in Kiswahili",
        validators=[Optional(), Length(max=60)],
        filters=[_blank_is_none],
        description="What members who chose Kiswahili read on USSD; blank: the name.",
    )
    interest_rate = DecimalField(
        "Interest % a year",
        places=4,
        validators=[
            InputRequired(),
            NumberRange(min=0, max=MAX_RATE, message="a percentage from 0 to 100"),
        ],
        description="On the daily closing balance, posted at the end of each period.",
    )
    interest_period = SelectField(
        "Interest posted",
        choices=[SelectChoice(p, PERIOD_WORDS[p]) for p in INTEREST_PERIODS],
    )
    min_balance = DecimalField(
        "Minimum balance (KES)",
        places=2,
        validators=[InputRequired(), NumberRange(min=0, message="0 or more")],
        description="A withdrawal may not leave less than this.",
    )
    daily_withdrawal_limit = DecimalField(
        "Daily withdrawal limit (KES)",
        places=2,
        validators=[Optional(), NumberRange(min=0, message="0 or more")],
        description="At most this much a member a day to M-PESA; blank: no daily limit.",
    )
    withdrawal_fee = DecimalField(
        "Withdrawal fee (KES)",
        places=2,
        validators=[InputRequired(), NumberRange(min=0, message="0 or more")],
        description="On each withdrawal, to fee income.",
    )
    term_months = IntegerField(
        "Term (months)",
        validators=[Optional(), NumberRange(min=1, max=120, message="1 to 120 months")],
        description="Fixed deposits: how long a new one is locked; blank for other kinds.",
    )
    break_penalty = DecimalField(
        "Early-break penalty (% of the interest)",
        places=2,
        validators=[InputRequired(), NumberRange(min=0, max=100, message="0 to 100")],
        description="Fixed deposits broken early earn the rate less this share of it.",
    )
    active = BooleanField(description="Closed products open no new accounts; old ones stay.")


def _kind(view: object, context: object, model: AccountProduct, name: str) -> str:
    return KIND_WORDS.get(model.kind, model.kind)


def _period(view: object, context: object, model: AccountProduct, name: str) -> str:
    return PERIOD_WORDS.get(model.interest_period, model.interest_period)


def _suffix(view: object, context: object, model: AccountProduct, name: str) -> str:
    return f"M000123{model.ref_suffix}"


class AccountProductView(SecureModelView):
    edit_permission = "account_product.manage"
    editable = ("edit",)
    column_list = (
        "code",
        "name",
        "name_sw",
        "kind",
        "ref_suffix",
        "withdrawable",
        "interest_rate",
        "interest_period",
        "min_balance",
        "daily_withdrawal_limit",
        "withdrawal_fee",
        "term_months",
        "break_penalty",
        "active",
    )
    column_details_list = column_list
    column_labels = {
        "name_sw": "Name in Kiswahili",
        "ref_suffix": "Account number",
        "interest_rate": "Interest % a year",
        "interest_period": "Interest posted",
        "min_balance": "Minimum balance",
        "daily_withdrawal_limit": "Daily withdrawal limit",
        "term_months": "Term (months)",
        "break_penalty": "Early-break penalty %",
    }
    column_formatters = {"kind": _kind, "interest_period": _period, "ref_suffix": _suffix}
    column_formatters_detail = column_formatters
    column_default_sort = "id"
    edit_template = "admin_sacco/account_product_edit.html"
    kind_words = KIND_WORDS

    def get_edit_form(self) -> type[Form]:
        return AccountProductForm

    def update_model(self, form: Form, model: AccountProduct) -> bool:
        """Only what changed goes to the service, so the audit row names exactly that."""
        values: dict[str, Any] = {}
        for name in PRODUCT_FIELDS:
            value = form[name].data
            if value != getattr(model, name):
                values[name] = value
        if not values:
            flash("Nothing was changed.", "info")
            return True
        product_id = model.id
        try:
            product_update(product_id=product_id, actor=actor(), **values)
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Not saved: {exc}", "error")
            return False
        except SQLAlchemyError:
            db.session.rollback()
            log.exception("account product %s not saved", product_id)
            flash("Not saved: the database refused these settings; check each value.", "error")
            return False
        return True


def register(console: Admin) -> None:
    app: Any = console.app
    if app is not None:
        # The member page's accounts block (admin_sacco/savings_member_block.html).
        app.add_template_global(member_accounts, "member_accounts")
    console.add_view(
        AccountProductView(
            AccountProduct,
            db,
            name="Account products",
            category="Savings",
            endpoint="accountproduct",
        )
    )
