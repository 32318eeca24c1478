"""Members: look one up by member number or phone, and (members:write) register one."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, fields
from sqlalchemy import select

from app.api import PREFIX
from app.api.auth import require_scope
from app.api.common import Money, ProblemSchema
from app.extensions import db
from app.models import Member
from app.phone import PhoneError, normalise_phone
from app.selectors.members import member_balances

blp = Blueprint(
    "members", __name__, url_prefix=f"{PREFIX}/members", description="The SACCO's members."
)


class MemberSchema(Schema):
    member_no = fields.String(required=True, metadata={"example": "M000123"})
    name = fields.String(required=True)
    phone = fields.String(required=True, metadata={"example": "254712345678"})
    status = fields.String(required=True)
    language = fields.String(required=True)
    joined_at = fields.DateTime(required=True, attribute="created_at")
    deposits = Money(required=True)
    share_capital = Money(required=True)
    savings = Money(required=True)
    loans_owed = Money(required=True)


class LookupArgs(Schema):
    phone = fields.String(required=True, metadata={"description": "any Kenyan form: 07…, 2547…"})


def member_out(member: Member) -> dict[str, Any]:
    balances = member_balances(member_id=member.id)
    return {
        "member_no": member.member_no,
        "name": member.name,
        "phone": member.phone,
        "status": member.status,
        "language": member.language,
        "created_at": member.created_at,
        "deposits": balances.savings,
        "share_capital": balances.share_capital,
        "savings": balances.member_savings,
        "loans_owed": balances.loan_total,
    }


def member_or_404(member_no: str) -> Member:
    member = db.session.scalar(select(Member).where(Member.member_no == member_no.upper()))
    if member is None:
        abort(404, message=f"no member {member_no}", code="member_not_found")
    assert member is not None  # abort raised
    return member


@blp.route("/<string:member_no>")
class MemberView(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.response(200, MemberSchema)
    @blp.alt_response(401, schema=ProblemSchema)
    @blp.alt_response(403, schema=ProblemSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    @require_scope("members:read")
    def get(self, member_no: str) -> dict[str, Any]:
        """A member by member number, with their balances."""
        return member_out(member_or_404(member_no))


@blp.route("/lookup")
class LookupView(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.arguments(LookupArgs, location="query")
    @blp.response(200, MemberSchema)
    @blp.alt_response(401, schema=ProblemSchema)
    @blp.alt_response(403, schema=ProblemSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    @require_scope("members:read")
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """A member by phone number."""
        try:
            phone = normalise_phone(args["phone"])
        except PhoneError:
            abort(422, message="that is not a Kenyan phone number", code="invalid_phone")
        member = db.session.scalar(select(Member).where(Member.phone == phone))
        if member is None:
            abort(404, message="no member has that phone", code="member_not_found")
        assert member is not None  # abort raised
        return member_out(member)
