"""Payments: an M-PESA prompt (STK push) for a loan repayment or into a member's account,
its status, and the payments of a member. The prompt goes through the same services as
the console's "request payment" (a loan) and USSD "Save" (an account); B2C stays
internal (approval and withdrawal paths only)."""

from __future__ import annotations

from typing import Any

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy import select

from app.api import PREFIX, problem
from app.api.auth import require_scope
from app.api.common import Money, PageArgs, page_schema, paginate, problems
from app.api.idempotency import idempotent
from app.api.resources.members import IDEMPOTENCY_KEY, member_or_404
from app.extensions import db
from app.models import Loan, MpesaRequest, Payment
from app.services.payments import PaymentError, payments_request_stk
from app.services.payments.stk import MAX_STK_AMOUNT, payments_request_deposit_stk
from app.services.savings import account_by_number

blp = Blueprint(
    "api-payments",  # "payments" is the M-PESA callbacks' blueprint
    __name__,
    url_prefix=PREFIX,
    description="M-PESA prompts (STK push) and the payments of a member.",
)

# The largest id a row may have (PostgreSQL's integer): a bigger one in a path is no row,
# and must not reach the database (an out-of-range parameter is an error there).
MAX_ID = 2**31 - 1
# What a client reads of a prompt: our request's states folded into three.
PROMPT_STATUS = {"succeeded": "paid", "failed": "failed"}  # every other state: pending


def amount_in(**kwargs: Any) -> fields.String:
    """An amount a client sends: a string of digits with at most two decimals ("1500",
    "1500.50"), as amounts go out; the service reads it (money_input) and says what is
    wrong with it."""
    return fields.String(
        validate=validate.Regexp(r"^[0-9]{1,9}([.][0-9]{1,2})?$", error="an amount like 1500.00"),
        **kwargs,
    )


class StkPushRequest(Schema):
    loan_no = fields.String(
        validate=validate.Length(min=1, max=20),
        metadata={"description": "a loan to repay (or account_no)", "example": "L000045"},
    )
    account_no = fields.String(
        validate=validate.Length(min=1, max=20),
        metadata={
            "description": "an account to pay into: member number and the product's suffix "
            "(M000123 deposits, M000123S savings, M000123SH shares)",
            "example": "M000123S",
        },
    )
    amount = amount_in(
        required=True,
        metadata={
            "description": f"KES, whole shillings (M-PESA's rule), 1 to {MAX_STK_AMOUNT:.0f}",
            "example": "1500",
        },
    )
    phone = fields.String(
        validate=validate.Length(min=9, max=20),
        metadata={"description": "the phone to prompt; the member's own by default"},
    )

    @validates_schema
    def one_target(self, data: dict[str, Any], **_: Any) -> None:
        if bool(data.get("loan_no")) == bool(data.get("account_no")):
            raise ValidationError("send loan_no or account_no, one of them", "_schema")


class StkPushSchema(Schema):
    id = fields.Integer(required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf(["pending", "paid", "failed"]),
        metadata={"description": "pending until M-PESA answers; paid with its receipt"},
    )
    mpesa_status = fields.String(
        required=True,
        metadata={
            "description": "ours in detail: pending, sending, sent, unknown, succeeded, failed"
        },
    )
    purpose = fields.String(required=True, metadata={"example": "repayment"})
    loan_no = fields.String(allow_none=True, required=True)
    account_no = fields.String(allow_none=True, required=True)
    amount = Money(required=True)
    phone = fields.String(required=True)
    receipt = fields.String(allow_none=True, required=True)
    result_code = fields.String(allow_none=True, required=True)
    result_desc = fields.String(allow_none=True, required=True)
    created_at = fields.DateTime(required=True)
    completed_at = fields.DateTime(allow_none=True, required=True)


class PaymentSchema(Schema):
    id = fields.Integer(required=True)
    receipt = fields.String(allow_none=True, required=True)
    channel = fields.String(required=True, metadata={"description": "stk, c2b or b2c"})
    direction = fields.String(required=True, metadata={"description": "in or out"})
    amount = Money(required=True)
    status = fields.String(required=True)
    loan_no = fields.String(allow_none=True, required=True)
    account_ref = fields.String(allow_none=True, required=True)
    prompt_id = fields.Integer(allow_none=True, required=True)
    transacted_at = fields.DateTime(allow_none=True, required=True)
    created_at = fields.DateTime(required=True)


PaymentPage = page_schema(PaymentSchema, "PaymentPage")


def prompt_out(request: MpesaRequest) -> dict[str, Any]:
    loan_no = None
    if request.loan_id is not None:
        loan_no = db.session.scalar(select(Loan.loan_no).where(Loan.id == request.loan_id))
    return {
        "id": request.id,
        "status": PROMPT_STATUS.get(request.status, "pending"),
        "mpesa_status": request.status,
        "purpose": request.purpose,
        "loan_no": loan_no,
        "account_no": request.account_reference if request.purpose == "deposit" else None,
        "amount": request.amount,
        "phone": request.phone,
        "receipt": request.receipt,
        "result_code": request.result_code,
        "result_desc": request.result_desc,
        "created_at": request.created_at,
        "completed_at": request.completed_at,
    }


def _prompt(data: dict[str, Any], actor: str) -> MpesaRequest:
    """The prompt, through the service the console (a loan) or USSD "Save" (an account)
    uses; PaymentError says why not."""
    amount = data["amount"]
    phone = data.get("phone")
    if data.get("loan_no"):
        loan_id = db.session.scalar(select(Loan.id).where(Loan.loan_no == data["loan_no"].upper()))
        if loan_id is None:
            raise LookupError(f"no loan {data['loan_no']}")
        return payments_request_stk(
            loan_id=loan_id, amount=amount, phone=phone, channel="api", actor=actor
        )
    ref = account_by_number(data["account_no"])
    if ref is None:
        raise LookupError(f"no account {data['account_no']}")
    return payments_request_deposit_stk(
        member_id=ref.member.id,
        product_id=ref.product.id,
        amount=amount,
        phone=phone,
        channel="api",
        actor=actor,
    )


@blp.route("/payments/stk-push")
class StkPushView(MethodView):
    @blp.doc(security=[{"bearer": []}], parameters=[IDEMPOTENCY_KEY])
    @blp.arguments(StkPushRequest)
    @blp.response(202, StkPushSchema)
    @problems(blp, 400, 401, 403, 409, 422)
    @require_scope("payments:write")
    @idempotent
    def post(self, data: dict[str, Any]) -> Any:
        """Send an M-PESA prompt (STK push) to the member's phone: for a loan repayment
        (`loan_no`) or into one of their accounts (`account_no`). Answers at once (202)
        with the prompt's id; its status moves to paid or failed when M-PESA answers (GET
        it, or subscribe to `payment.received`). A refusal (an amount M-PESA cannot carry,
        a prompt for the same loan or account already on its way, the same amount to the
        same phone within 2 minutes) is a 422 with code `payment_refused`."""
        actor = f"api:{g.api_caller.client.client_id}"
        try:
            request = _prompt(data, actor)
        except LookupError as exc:
            db.session.rollback()
            return problem(422, "unknown_target", str(exc))
        except PaymentError as exc:
            db.session.rollback()
            return problem(422, "payment_refused", str(exc))
        # Dumped here: @idempotent keeps the body it is given, and a replay must be
        # byte for byte the answer the first request had.
        location = f"{PREFIX}/payments/stk-push/{request.id}"
        return StkPushSchema().dump(prompt_out(request)), 202, {"Location": location}


@blp.route("/payments/stk-push/<int:prompt_id>")
class StkStatusView(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.response(200, StkPushSchema)
    @problems(blp, 401, 403, 404)
    @require_scope("payments:read")
    def get(self, prompt_id: int) -> dict[str, Any]:
        """A prompt's status (the `/api/mpesa/query/{id}` of the first design): pending,
        paid (with the M-PESA receipt) or failed (with M-PESA's reason). Any prompt: the
        API's, the console's or one a member started on USSD."""
        request = (
            db.session.scalar(
                select(MpesaRequest).where(MpesaRequest.id == prompt_id, MpesaRequest.kind == "stk")
            )
            if prompt_id <= MAX_ID
            else None
        )
        if request is None:
            abort(404, message=f"no payment prompt {prompt_id}", code="prompt_not_found")
        assert request is not None  # abort raised
        return prompt_out(request)


@blp.route("/members/<string:member_no>/payments")
class MemberPaymentsView(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, PaymentPage)
    @problems(blp, 400, 401, 403, 404)
    @require_scope("payments:read")
    def get(self, args: dict[str, Any], member_no: str) -> dict[str, Any]:
        """M-PESA money of a member, in (prompts, Paybill, suspense money staff placed
        with them) and out (loan payouts, withdrawals), newest first, a page at a time."""
        member = member_or_404(member_no)
        page = paginate(select(Payment).where(Payment.member_id == member.id), Payment.id, args)
        loan_ids = {p.loan_id for p in page.items if p.loan_id is not None}
        loan_nos: dict[int, str | None] = {}
        if loan_ids:
            rows = db.session.execute(select(Loan.id, Loan.loan_no).where(Loan.id.in_(loan_ids)))
            loan_nos = {loan_id: loan_no for loan_id, loan_no in rows}
        return {
            "items": [
                {
                    "id": p.id,
                    "receipt": p.receipt,
                    "channel": p.channel,
                    "direction": p.direction,
                    "amount": p.amount,
                    "status": p.status,
                    "loan_no": loan_nos.get(p.loan_id) if p.loan_id is not None else None,
                    "account_ref": p.bill_ref,
                    "prompt_id": p.request_id,
                    "transacted_at": p.transacted_at,
                    "created_at": p.created_at,
                }
                for p in page.items
            ],
            "next_cursor": page.next_cursor,
        }
