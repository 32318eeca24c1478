"""Loans: the products, a member's eligibility, an application, a loan with its schedule
and arrears, and the list of a member's loans. The figures are the console's and USSD's
(loan_eligibility, loan_apply, loan_page, loan_list_figures): no second copy of a rule.

An application through the API is the member's own as on USSD (`loan_apply`, channel
"api", audited as the API client): an instant product within its auto-approval limit is
approved and paid out, a secured one waits for guarantors, the rest for staff. A refusal
is a 422 problem with code `loan_refused`, its words in `detail`, and, when the member is
not eligible, the eligibility code in `reason` (arrears, limit, share_capital, ...).
"""

from __future__ import annotations

from typing import Any

from flask import g, url_for
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import select

from app.api import PREFIX, problem
from app.api.auth import require_scope
from app.api.common import Money, PageArgs, page_schema, paginate, problems
from app.api.idempotency import idempotent
from app.api.resources.members import member_or_404
from app.clock import business_today
from app.extensions import db
from app.models import Loan, LoanProduct, Member
from app.money import MoneyError, money_input
from app.selectors.loans import loan_eligibility, loan_list_figures, loan_page
from app.services.loans import LoanError, loan_apply

blp = Blueprint(
    "loans",
    __name__,
    url_prefix=PREFIX,
    description="Loan products, eligibility, applications and loans.",
)

_CODE = validate.Length(min=1, max=20)


def Rate(**kwargs: Any) -> fields.Decimal:  # noqa: N802 - a field factory, read like a field
    """A percentage or multiple as the product holds it ("12.0000"), a string on the wire."""
    metadata = {"type": "string", "format": "decimal"}
    metadata.update(kwargs.pop("metadata", None) or {})
    return fields.Decimal(as_string=True, metadata=metadata, **kwargs)


class LoanProductSchema(Schema):
    code = fields.String(required=True, metadata={"example": "INSTANT"})
    name = fields.String(required=True)
    name_sw = fields.String(allow_none=True, required=True)
    annual_rate = Rate(required=True, metadata={"description": "percent a year"})
    interest_method = fields.String(required=True)
    amortization = fields.String(required=True)
    frequency = fields.String(required=True, metadata={"description": "monthly | weekly"})
    default_term = fields.Integer(required=True)
    min_term = fields.Integer(required=True)
    max_term = fields.Integer(required=True)
    min_amount = Money(required=True)
    max_amount = Money(allow_none=True, required=True)
    fee_type = fields.String(required=True, metadata={"description": "none | fixed | percent"})
    fee_value = Rate(required=True)
    limit_multiple = Rate(required=True, metadata={"description": "times free deposits"})
    min_share_capital = Money(required=True)
    min_membership_days = fields.Integer(required=True)
    min_guarantors = fields.Integer(required=True)
    guarantee_cover = Rate(required=True, metadata={"description": "percent"})


class ProductListSchema(Schema):
    products = fields.List(fields.Nested(LoanProductSchema), required=True)


class EligibilityArgs(Schema):
    product = fields.String(required=True, validate=_CODE, metadata={"example": "INSTANT"})


class EligibilitySchema(Schema):
    member_no = fields.String(required=True)
    product = fields.String(required=True)
    eligible = fields.Boolean(required=True)
    limit = Money(required=True, metadata={"description": "the most the member may borrow"})
    code = fields.String(allow_none=True, required=True, metadata={"description": "why not"})
    reason = fields.String(allow_none=True, required=True, metadata={"description": "in words"})


def _money_ok(value: str) -> None:
    try:
        money_input(value)
    except MoneyError as exc:
        raise ValidationError(str(exc)) from None


class LoanApplySchema(Schema):
    member_no = fields.String(required=True, validate=_CODE, metadata={"example": "M000123"})
    product = fields.String(required=True, validate=_CODE, metadata={"example": "INSTANT"})
    amount = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=20), _money_ok],
        metadata={"example": "5000.00", "description": "KES, at most two decimals"},
    )
    term = fields.Integer(
        validate=validate.Range(min=1, max=600),
        metadata={"description": "installments; default the product's"},
    )


class InstallmentSchema(Schema):
    number = fields.Integer(required=True)
    due_date = fields.Date(required=True)
    principal = Money(required=True, attribute="principal_due")
    interest = Money(required=True, attribute="interest_due")
    fees = Money(required=True, attribute="fees_due")
    penalty = Money(required=True, attribute="penalty_due")
    total = Money(required=True, attribute="total_due")
    paid = Money(required=True, attribute="total_paid")
    outstanding = Money(required=True)
    paid_on = fields.Date(allow_none=True, required=True)
    state = fields.String(
        required=True, metadata={"description": "paid | late | due today | part paid | upcoming"}
    )
    days_late = fields.Integer(required=True)


class OwedSchema(Schema):
    principal = Money(required=True)
    interest = Money(required=True)
    fees = Money(required=True)
    penalty = Money(required=True)
    total = Money(required=True)


class LoanSummarySchema(Schema):
    loan_no = fields.String(required=True, metadata={"example": "L000012"})
    member_no = fields.String(required=True)
    product = fields.String(required=True)
    status = fields.String(required=True)
    channel = fields.String(required=True)
    principal = Money(required=True)
    applied_at = fields.DateTime(required=True)
    disbursed_on = fields.Date(allow_none=True, required=True)
    closed_on = fields.Date(allow_none=True, required=True)
    owed = Money(required=True, attribute="owed_total")
    due_now = Money(required=True)
    days_in_arrears = fields.Integer(required=True)


class LoanSchema(LoanSummarySchema):
    product_name = fields.String(required=True)
    annual_rate = Rate(required=True)
    term = fields.Integer(required=True)
    frequency = fields.String(required=True)
    fee = Money(required=True)
    decided_at = fields.DateTime(allow_none=True, required=True)
    in_default = fields.Boolean(required=True)
    owed_parts = fields.Nested(
        OwedSchema,
        required=True,
        data_key="owed_by_part",
        metadata={"description": "what is owed, by part (zero until paid out)"},
    )
    arrears = Money(required=True, metadata={"description": "fell due before today, unpaid"})
    late_installments = fields.Integer(required=True)
    schedule = fields.List(fields.Nested(InstallmentSchema), required=True)


LoanPageSchema = page_schema(LoanSummarySchema, "LoanPage")


def _product_out(product: LoanProduct) -> dict[str, Any]:
    return {name: getattr(product, name) for name in LoanProductSchema._declared_fields}


def _product_or_422(code: str) -> LoanProduct:
    product = db.session.scalar(select(LoanProduct).where(LoanProduct.code == code.strip()))
    if product is None:
        abort(422, message=f"no loan product {code[:20]}", code="product_not_found")
    assert product is not None  # abort raised
    return product


def _member_or_422(member_no: str) -> Member:
    member = db.session.scalar(select(Member).where(Member.member_no == member_no.strip().upper()))
    if member is None:
        abort(422, message=f"no member {member_no[:20]}", code="member_not_found")
    assert member is not None  # abort raised
    return member


def _summary(loan: Loan, owed: Any, due_now: Any) -> dict[str, Any]:
    return {
        "loan_no": loan.loan_no,
        "member_no": loan.member.member_no,
        "product": loan.product.code,
        "status": loan.status,
        "channel": loan.channel,
        "principal": loan.principal,
        "applied_at": loan.applied_at,
        "disbursed_on": loan.disbursed_on,
        "closed_on": loan.closed_on,
        "owed_total": owed,
        "due_now": due_now,
        "days_in_arrears": loan.days_past_due,
    }


def loan_out(loan: Loan) -> dict[str, Any]:
    """A loan as the console's loan page reads it (loan_page), for the wire."""
    page = loan_page(loan=loan, as_of=business_today(), payments_limit=0)
    zero = {"principal": 0, "interest": 0, "fees": 0, "penalty": 0, "total": 0}
    debt = page.debt
    parts = (
        {
            "principal": debt.principal,
            "interest": debt.interest,
            "fees": debt.fees,
            "penalty": debt.penalty,
            "total": debt.total,
        }
        if debt is not None
        else zero
    )
    late = [row for row in page.schedule if row.state == "late"]
    return {
        **_summary(loan, parts["total"], page.due_now if debt is not None else 0),
        "product_name": loan.product.name,
        "annual_rate": loan.annual_rate,
        "term": loan.term,
        "frequency": loan.frequency,
        "fee": loan.fee_amount,
        "decided_at": loan.decided_at,
        "in_default": loan.in_default,
        "owed_parts": parts,
        "arrears": sum((row.installment.outstanding for row in late), 0),
        "late_installments": page.late_installments,
        "schedule": [
            {
                "number": row.installment.number,
                "due_date": row.installment.due_date,
                "principal_due": row.installment.principal_due,
                "interest_due": row.installment.interest_due,
                "fees_due": row.installment.fees_due,
                "penalty_due": row.installment.penalty_due,
                "total_due": row.installment.total_due,
                "total_paid": row.installment.total_paid,
                "outstanding": row.installment.outstanding,
                "paid_on": row.installment.paid_on,
                "state": row.state,
                "days_late": row.days_late,
            }
            for row in page.schedule
        ],
    }


@blp.route("/loan-products")
class LoanProductsView(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.response(200, ProductListSchema)
    @problems(blp, 401, 403)
    @require_scope("loans:read")
    def get(self) -> dict[str, Any]:
        """The loan products open to applications."""
        products = db.session.scalars(
            select(LoanProduct).where(LoanProduct.active.is_(True)).order_by(LoanProduct.id)
        )
        return {"products": [_product_out(p) for p in products]}


@blp.route("/members/<string:member_no>/eligibility")
class EligibilityView(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.arguments(EligibilityArgs, location="query")
    @blp.response(200, EligibilitySchema)
    @problems(blp, 401, 403, 404, 422)
    @require_scope("loans:read")
    def get(self, args: dict[str, Any], member_no: str) -> dict[str, Any]:
        """The member's limit for a product today, or why they cannot borrow from it (the
        same answer USSD and the console give)."""
        member = member_or_404(member_no)
        product = _product_or_422(args["product"])
        found = loan_eligibility(member=member, product=product, as_of=business_today())
        return {
            "member_no": member.member_no,
            "product": product.code,
            "eligible": found.eligible,
            "limit": found.limit,
            "code": found.code,
            "reason": found.reason,
        }


@blp.route("/loans")
class LoansView(MethodView):
    @blp.doc(
        security=[{"bearer": []}],
        parameters=[
            {
                "in": "header",
                "name": "Idempotency-Key",
                "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        ],
    )
    @blp.arguments(LoanApplySchema)
    @blp.response(201, LoanSchema)
    @problems(blp, 400, 401, 403, 409, 422)
    @require_scope("loans:write")
    @idempotent
    def post(self, body: dict[str, Any]) -> Any:
        """Apply for a loan for a member, as the member does on USSD. Instant products
        within their auto-approval limit are approved and paid out; others wait for
        guarantors or staff. Send an Idempotency-Key: a retry gets the same answer."""
        member = _member_or_422(body["member_no"])
        product = _product_or_422(body["product"])
        try:
            loan = loan_apply(
                member_id=member.id,
                product_id=product.id,
                amount=body["amount"],
                term=body.get("term"),
                channel="api",
                as_of=business_today(),
                actor=f"api:{g.api_caller.client.client_id}",
            )
        except LoanError as exc:
            db.session.rollback()
            # Which eligibility rule said no, for programs (None: another rule, in words).
            found = loan_eligibility(member=member, product=product, as_of=business_today())
            return problem(
                422,
                "loan_refused",
                str(exc),
                reason=None if found.eligible else found.code,
            )
        location = url_for("loans.LoanView", loan_no=loan.loan_no)
        # Dumped here: @idempotent keeps the response it is given, and @blp.response
        # passes a finished response through without its schema.
        return LoanSchema().dump(loan_out(loan)), 201, {"Location": location}


@blp.route("/loans/<string:loan_no>")
class LoanView(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.response(200, LoanSchema)
    @problems(blp, 401, 403, 404)
    @require_scope("loans:read")
    def get(self, loan_no: str) -> dict[str, Any]:
        """A loan: its status, what it owes, its schedule and its arrears."""
        loan = None
        if len(loan_no) <= 12:
            loan = db.session.scalar(select(Loan).where(Loan.loan_no == loan_no.strip().upper()))
        if loan is None:
            abort(404, message=f"no loan {loan_no[:20]}", code="loan_not_found")
        assert loan is not None  # abort raised
        return loan_out(loan)


@blp.route("/members/<string:member_no>/loans")
class MemberLoansView(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, LoanPageSchema)
    @problems(blp, 400, 401, 403, 404, 422)
    @require_scope("loans:read")
    def get(self, args: dict[str, Any], member_no: str) -> dict[str, Any]:
        """The member's loans, newest first, a page at a time (pass `next_cursor` back as
        `cursor` for the next page)."""
        member = member_or_404(member_no)
        page = paginate(select(Loan).where(Loan.member_id == member.id), Loan.id, args)
        figures = loan_list_figures(
            loan_ids=[loan.id for loan in page.items], as_of=business_today()
        )
        items = []
        for loan in page.items:
            # Nothing is owed before the payout (as loan_out reads it).
            found = figures.get(loan.id) if loan.disbursed_on else None
            items.append(_summary(loan, found.owed if found else 0, found.due_now if found else 0))
        return {"items": items, "next_cursor": page.next_cursor}
