"""Loan products in the console: everyone reads them, admins change them.

The columns with a fixed set of values (the model's CheckConstraints) are drop-downs, so
a product cannot be saved with a value the schedule does not know. They are plain WTForms
SelectFields (`form_overrides`) given SelectChoice objects: Flask-Admin 2.2.1's default
Select2Field (what `form_choices` makes) passes the choices on as tuples, which WTForms 3.3
deprecates (a warning, an error under the tests' filterwarnings); this needs no script, and
a value outside the list is refused by the field in words.
"""

from __future__ import annotations

import logging

from flask import flash
from flask_admin import Admin
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from wtforms import DecimalField, SelectChoice, SelectField
from wtforms.validators import InputRequired, ValidationError

from admin.auth import SecureModelView, actor
from app.extensions import db
from app.models import LoanProduct
from app.models.types import Money
from app.services.audit import audit_record
from app.services.loan_products import product_problem
from app.services.loan_schedule import AMORTIZATIONS, FREQUENCIES, INTEREST_METHODS

log = logging.getLogger(__name__)

# What a person reads beside each stored value; the stored values come from the schedule
# service's own lists, which match the table's CheckConstraints.
_WORDS = {
    "declining": "Declining balance",
    "flat": "Flat rate",
    "equal_installments": "Equal installments",
    "equal_principal": "Equal principal",
    "monthly": "Monthly",
    "weekly": "Weekly",
    "none": "None",
    "fixed": "Fixed amount (KES)",
    "percent": "Percent of the amount",
}
CHARGE_TYPES = ("none", "fixed", "percent")  # fee_type and penalty_type (model comments)
CHOICES: dict[str, tuple[str, ...]] = {
    "interest_method": INTEREST_METHODS,
    "amortization": AMORTIZATIONS,
    "frequency": FREQUENCIES,
    "fee_type": CHARGE_TYPES,
    "penalty_type": CHARGE_TYPES,
}


def _in_words(view: object, context: object, model: LoanProduct, name: str) -> str:
    value = getattr(model, name)
    return _WORDS.get(value, value)


def _missing(model: LoanProduct) -> str | None:
    """A blank box for a column the table requires: said in words, not as the database's
    NOT NULL error."""
    for column in LoanProduct.__table__.columns:
        if not column.nullable and not column.primary_key and column.key != "created_at":
            if getattr(model, column.key) is None:
                return f"{column.key.replace('_', ' ')} is required"
    return None


AMOUNTS = tuple(
    column.key for column in LoanProduct.__table__.columns if isinstance(column.type, Money)
)


def _blank_is_none(value: str | None) -> str | None:
    """A blank Kiswahili name is no name (members read `name`), not an empty one."""
    return (value or "").strip() or None


def _nullable(name: str) -> bool:
    return bool(LoanProduct.__table__.columns[name].nullable)


class ProductView(SecureModelView):
    """Admins set product terms; running loans keep the terms they were made with."""

    edit_permission = "product.manage"
    editable = ("create", "edit")
    column_list = (
        "code",
        "name",
        "name_sw",
        "active",
        "annual_rate",
        "interest_method",
        "frequency",
        "min_term",
        "default_term",
        "max_term",
        "min_amount",
        "max_amount",
    )
    column_labels = {"annual_rate": "Rate % a year", "name_sw": "Name in Kiswahili"}
    column_searchable_list = ("code", "name", "name_sw")
    column_filters = ("active", "interest_method", "frequency")
    form_excluded_columns = ("created_at",)
    # Flask-Admin has no converter for the Money type (it skipped every amount, so admins
    # could not set a product's amounts): shillings with cents.
    form_overrides = {**dict.fromkeys(CHOICES, SelectField), **dict.fromkeys(AMOUNTS, DecimalField)}
    form_args = (
        {
            name: {"choices": [SelectChoice(value, _WORDS[value]) for value in values]}
            for name, values in CHOICES.items()
        }
        | {
            # A blank box for a required amount says so (the field alone says "Not a valid
            # decimal value"); the nullable ones get Flask-Admin's Optional.
            name: {"places": 2, "validators": [] if _nullable(name) else [InputRequired()]}
            for name in AMOUNTS
        }
        | {
            "name_sw": {
                "description": "What members who chose Kiswahili read on USSD; blank: the name.",
                "filters": [_blank_is_none],
            }
        }
    )
    column_formatters = dict.fromkeys(CHOICES, _in_words)
    column_formatters_detail = dict.fromkeys(CHOICES, _in_words)

    def on_model_change(self, form: object, model: LoanProduct, is_created: bool) -> None:
        problem = _missing(model) or product_problem(model)
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

    def handle_view_exception(self, exc: Exception) -> bool:
        """Staff read what was wrong in words, never the database's error text."""
        if isinstance(exc, ValidationError):
            flash(f"Not saved: {exc}", "error")
            return True
        if isinstance(exc, IntegrityError):
            flash("Not saved: a product with this code exists already.", "error")
            return True
        if isinstance(exc, SQLAlchemyError):
            log.exception("product not saved")
            flash("Not saved: the database refused these settings; check each value.", "error")
            return True
        return super().handle_view_exception(exc)


def register(console: Admin) -> None:
    console.add_view(ProductView(LoanProduct, db, name="Products", category="Loans"))
