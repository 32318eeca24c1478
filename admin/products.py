"""Loan products in the console: everyone reads them, admins change them."""

from __future__ import annotations

from flask_admin import Admin
from sqlalchemy import inspect
from wtforms.validators import ValidationError

from admin.auth import SecureModelView, actor
from app.extensions import db
from app.models import LoanProduct
from app.services.audit import audit_record
from app.services.loan_products import product_problem


class ProductView(SecureModelView):
    """Admins set product terms; running loans keep the terms they were made with."""

    edit_permission = "product.manage"
    editable = ("create", "edit")
    form_excluded_columns = ("created_at",)

    def on_model_change(self, form: object, model: LoanProduct, is_created: bool) -> None:
        problem = product_problem(model)
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


def register(console: Admin) -> None:
    console.add_view(ProductView(LoanProduct, db, name="Products", category="Loans"))
