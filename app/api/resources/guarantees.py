"""Guarantee requests: what a member has been asked to guarantee, and their answer, as
the SMS YES/NO and USSD answers give it (app.services.guarantees)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from app.api import PREFIX, problem
from app.api.auth import require_scope
from app.api.common import Money, PageArgs, page_schema, paginate, problems
from app.api.idempotency import idempotent
from app.api.resources.members import IDEMPOTENCY_KEY, member_or_404
from app.api.resources.payments import MAX_ID, amount_in
from app.extensions import db
from app.models import Guarantee, Loan, Member
from app.services.guarantees import (
    GuaranteeError,
    guarantee_accept,
    guarantee_decline,
    guarantees_waiting,
)

blp = Blueprint(
    "api-guarantees",  # "guarantees" is the console's
    __name__,
    url_prefix=PREFIX,
    description="Requests to guarantee a fellow member's loan, and the answers.",
)


class GuaranteeRequestSchema(Schema):
    id = fields.Integer(required=True)
    loan_no = fields.String(required=True)
    applicant_no = fields.String(required=True, metadata={"description": "the borrower"})
    applicant_name = fields.String(required=True)
    guarantor_no = fields.String(required=True)
    amount = Money(required=True, metadata={"description": "what the guarantor is asked to pledge"})
    status = fields.String(
        required=True,
        metadata={"description": "requested, accepted, declined, expired, cancelled, released, …"},
    )
    answerable = fields.Boolean(
        required=True, metadata={"description": "waiting for this member's answer now"}
    )
    replaces_another = fields.Boolean(
        required=True, metadata={"description": "taking another guarantor's place"}
    )
    requested_at = fields.DateTime(required=True)
    expires_on = fields.Date(required=True)
    answered_at = fields.DateTime(allow_none=True, required=True)
    answered_via = fields.String(allow_none=True, required=True)


class AnswerRequest(Schema):
    answer = fields.String(required=True, validate=validate.OneOf(["accept", "decline"]))
    amount = amount_in(
        metadata={
            "description": "optional: the amount the member agreed to; refused (422 "
            "amount_mismatch) unless it is the amount asked (a guarantee is accepted "
            "whole or declined)"
        },
    )
    member_no = fields.String(
        validate=validate.Length(min=1, max=12),
        metadata={"description": "optional: the guarantor answering; checked against the request"},
    )


GuaranteePage = page_schema(GuaranteeRequestSchema, "GuaranteeRequestPage")


def guarantee_out(guarantee: Guarantee, answerable: bool) -> dict[str, Any]:
    loan: Loan = guarantee.loan
    guarantor = db.session.get(Member, guarantee.guarantor_id)
    return {
        "id": guarantee.id,
        "loan_no": loan.loan_no,
        "applicant_no": loan.member.member_no,
        "applicant_name": loan.member.name,
        "guarantor_no": guarantor.member_no if guarantor is not None else "",
        "amount": guarantee.amount,
        "status": guarantee.status,
        "answerable": answerable,
        "replaces_another": guarantee.replaces_id is not None,
        "requested_at": guarantee.requested_at,
        "expires_on": guarantee.expires_on,
        "answered_at": guarantee.answered_at,
        "answered_via": guarantee.answered_via,
    }


@blp.route("/members/<string:member_no>/guarantee-requests")
class MemberGuaranteesView(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, GuaranteePage)
    @problems(blp, 400, 401, 403, 404)
    @require_scope("guarantees:read")
    def get(self, args: dict[str, Any], member_no: str) -> dict[str, Any]:
        """What the member has been asked to guarantee, newest first, a page at a time;
        `answerable` marks the ones waiting for their answer now."""
        member = member_or_404(member_no)
        waiting = {g.id for g in guarantees_waiting(member.id)}
        page = paginate(
            select(Guarantee).where(Guarantee.guarantor_id == member.id), Guarantee.id, args
        )
        return {
            "items": [guarantee_out(g, g.id in waiting) for g in page.items],
            "next_cursor": page.next_cursor,
        }


@blp.route("/guarantee-requests/<int:guarantee_id>/answer")
class AnswerView(MethodView):
    @blp.doc(security=[{"bearer": []}], parameters=[IDEMPOTENCY_KEY])
    @blp.arguments(AnswerRequest)
    @blp.response(200, GuaranteeRequestSchema)
    @problems(blp, 400, 401, 403, 404, 409, 422)
    @require_scope("guarantees:write")
    @idempotent
    def post(self, data: dict[str, Any], guarantee_id: int) -> Any:
        """The guarantor's answer to a request, as their SMS YES or NO gives it. Accepting
        holds that much of their free deposits; refused (422 `guarantee_refused`, with
        why) when they are short, the request was answered or has expired, or the loan
        no longer waits for guarantors."""
        guarantee = db.session.get(Guarantee, guarantee_id) if guarantee_id <= MAX_ID else None
        if guarantee is None:
            abort(404, message=f"no guarantee request {guarantee_id}", code="guarantee_not_found")
        assert guarantee is not None  # abort raised
        guarantor = db.session.get(Member, guarantee.guarantor_id)
        assert guarantor is not None  # a foreign key
        if data.get("member_no") and data["member_no"].upper() != guarantor.member_no:
            return problem(422, "not_the_guarantor", "this request was not made to that member")
        if data.get("amount") is not None and Decimal(data["amount"]) != guarantee.amount:
            return problem(
                422,
                "amount_mismatch",
                f"the request is for KES {guarantee.amount:,.2f}: accept it whole or decline",
            )
        answer = guarantee_accept if data["answer"] == "accept" else guarantee_decline
        try:
            answered = answer(guarantee_id=guarantee.id, guarantor_id=guarantor.id, via="api")
        except GuaranteeError as exc:
            db.session.rollback()
            return problem(422, "guarantee_refused", str(exc))
        # Dumped here: @idempotent keeps (and replays) the body the view gives it.
        return GuaranteeRequestSchema().dump(guarantee_out(answered, answerable=False)), 200
