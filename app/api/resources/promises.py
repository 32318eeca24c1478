"""Promises to pay: a late member's word that an amount will reach a loan by a date,
recorded as USSD menu 6 and SMS record it (app.services.promises.promise_record)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, fields
from sqlalchemy import select

from app.api import PREFIX, problem
from app.api.auth import require_scope
from app.api.common import Money, problems
from app.api.idempotency import idempotent
from app.api.resources.members import IDEMPOTENCY_KEY
from app.api.resources.payments import amount_in
from app.clock import business_today
from app.extensions import db
from app.models import Loan
from app.services.promises import MAX_DAYS_AHEAD, PromiseError, promise_record

blp = Blueprint(
    "promises", __name__, url_prefix=PREFIX, description="Promises to pay a loan in arrears."
)


class PromiseCreate(Schema):
    amount = amount_in(
        required=True,
        metadata={"description": "KES, at most what the loan owes in all", "example": "2500"},
    )
    promised_date = fields.Date(
        required=True,
        metadata={"description": f"from tomorrow to {MAX_DAYS_AHEAD} days ahead"},
    )


class PromiseSchema(Schema):
    id = fields.Integer(required=True)
    loan_no = fields.String(required=True)
    amount = Money(required=True)
    promised_date = fields.Date(required=True)
    status = fields.String(required=True, metadata={"description": "open, kept, partly, broken"})
    channel = fields.String(required=True)
    created_at = fields.DateTime(required=True)


@blp.route("/loans/<string:loan_no>/promises")
class PromisesView(MethodView):
    @blp.doc(security=[{"bearer": []}], parameters=[IDEMPOTENCY_KEY])
    @blp.arguments(PromiseCreate)
    @blp.response(201, PromiseSchema)
    @problems(blp, 400, 401, 403, 404, 409, 422)
    @require_scope("promises:write")
    @idempotent
    def post(self, data: dict[str, Any], loan_no: str) -> Any:
        """Record the member's promise for a loan in arrears; the member is texted a
        confirmation. One open promise per loan. A refusal is a 422 whose code says why:
        `promise_not_in_arrears`, `promise_date`, `promise_open` (one is open already),
        `promise_too_much` (more than the loan owes)."""
        loan = db.session.scalar(select(Loan).where(Loan.loan_no == loan_no.upper()))
        if loan is None:
            abort(404, message=f"no loan {loan_no}", code="loan_not_found")
        assert loan is not None  # abort raised
        try:
            promise = promise_record(
                member_id=loan.member_id,
                loan_id=loan.id,
                amount=data["amount"],
                promised_date=data["promised_date"],
                as_of=business_today(),
                channel="api",
            )
        except PromiseError as exc:
            db.session.rollback()
            code = f"promise_{exc.problem[0]}" if exc.problem else "promise_refused"
            return problem(422, code, str(exc))
        body = PromiseSchema().dump(
            {
                "id": promise.id,
                "loan_no": loan.loan_no,
                "amount": promise.amount,
                "promised_date": promise.promised_date,
                "status": promise.status,
                "channel": promise.channel,
                "created_at": promise.created_at,
            }
        )
        # Dumped here: @idempotent keeps (and replays) the body the view gives it.
        return body, 201
