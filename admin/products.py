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
from decimal import Decimal

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
from app.services.books import chart_ensure
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


SECURITY_HELP = {
    "min_guarantors": "At least this many guarantors must accept (0: none needed).",
    "guarantee_cover": "Percent (0-100) of the amount above the member's own free deposits "
    "that guarantees and collateral must cover; 0 with no guarantors: an unsecured product.",
    "collateral_allowed": "Registered collateral may stand in for guarantees.",
    "collateral_haircut": "Percent (0-100) cut from collateral's forced-sale value before it "
    "counts toward cover.",
    "guarantee_days": "Days a guarantor has to answer a request (1-90).",
}
MAX_GUARANTORS = 20  # more names than any SACCO's form has room for
MAX_GUARANTEE_DAYS = 90


def security_problem(product: LoanProduct) -> str | None:
    """Why the security settings cannot be saved, in words (the table's constraints say
    only that a row was refused)."""
    guarantors, days = product.min_guarantors, product.guarantee_days
    if guarantors is None or not 0 <= guarantors <= MAX_GUARANTORS:
        return f"the minimum number of guarantors is a whole number from 0 to {MAX_GUARANTORS}"
    for name, words in (("guarantee_cover", "cover"), ("collateral_haircut", "haircut")):
        value = getattr(product, name)
        if value is None or not Decimal(0) <= value <= Decimal(100):
            return f"the guarantee {words} is a percentage from 0 to 100"
        if value != value.quantize(Decimal("0.01")):
            return f"the guarantee {words} has at most two decimals"
    if days is None or not 1 <= days <= MAX_GUARANTEE_DAYS:
        return f"guarantors are given from 1 to {MAX_GUARANTEE_DAYS} days to answer"
    return None


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
    column_labels = {
        "annual_rate": "Rate % a year",
        "name_sw": "Name in Kiswahili",
        "guarantee_cover": "Guarantee cover %",
        "collateral_haircut": "Collateral haircut %",
        "guarantee_days": "Days to answer a guarantee",
    }
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
        | {name: {"description": words} for name, words in SECURITY_HELP.items()}
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
        problem = _missing(model) or product_problem(model) or security_problem(model)
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

    def after_model_change(self, form: object, model: LoanProduct, is_created: bool) -> None:
        # A new product gets its own line of loans receivable in the chart of accounts now,
        # committed, rather than in whichever read of the books first needs it.
        if is_created:
            chart_ensure()
            db.session.commit()

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
