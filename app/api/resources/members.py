"""Members: look one up by member number or phone, and (members:write) register one."""

from __future__ import annotations

from typing import Any

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from app.api import PREFIX, problem
from app.api.auth import require_scope
from app.api.common import Money, problems
from app.api.idempotency import HEADER, idempotent
from app.errors import SaccoError
from app.extensions import db
from app.models import Member
from app.models.types import utcnow
from app.phone import PhoneError, normalise_phone
from app.selectors.members import member_balances
from app.services.members import member_add

blp = Blueprint(
    "members", __name__, url_prefix=f"{PREFIX}/members", description="The SACCO's members."
)


# The header every POST documents (app.api.idempotency checks it).
IDEMPOTENCY_KEY: dict[str, Any] = {
    "in": "header",
    "name": HEADER,
    "required": True,
    "description": "any unique string per operation: a retry with the same key and body "
    "gets the first answer again, never a second action",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


class MemberSchema(Schema):
    member_no = fields.String(required=True, metadata={"example": "M000123"})
    name = fields.String(required=True)
    phone = fields.String(required=True, metadata={"example": "254712345678"})
    status = fields.String(
        required=True,
        validate=validate.OneOf(["active", "dormant", "suspended", "exited"]),
    )
    pin_set = fields.Boolean(
        required=True, metadata={"description": "has chosen a USSD PIN (can use *384*96#)"}
    )
    pin_locked_until = fields.DateTime(
        allow_none=True,
        required=True,
        metadata={"description": "USSD locked after wrong PINs until then; null: not locked"},
    )
    language = fields.String(required=True)
    joined_at = fields.DateTime(required=True, attribute="created_at")
    deposits = Money(required=True)
    share_capital = Money(required=True)
    savings = Money(required=True)
    loans_owed = Money(required=True)


class MemberCreate(Schema):
    """KYC fields of a new member, as the console's registration form asks them."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=120))
    phone = fields.String(
        required=True,
        validate=validate.Length(min=9, max=20),
        metadata={"description": "any Kenyan form: 07…, +2547…, 2547…"},
    )
    national_id = fields.String(
        validate=validate.Length(max=20), metadata={"description": "letters and digits"}
    )
    language = fields.String(load_default="en", validate=validate.OneOf(["en", "sw"]))


class LookupArgs(Schema):
    phone = fields.String(required=True, metadata={"description": "any Kenyan form: 07…, 2547…"})


def member_out(member: Member) -> dict[str, Any]:
    balances = member_balances(member_id=member.id)
    return {
        "member_no": member.member_no,
        "name": member.name,
        "phone": member.phone,
        "status": member.status,
        "pin_set": member.pin_hash is not None,
        "pin_locked_until": (
            member.locked_until
            if member.locked_until is not None and member.locked_until > utcnow()
            else None
        ),
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


@blp.route("")
class MembersView(MethodView):
    @blp.doc(security=[{"bearer": []}], parameters=[IDEMPOTENCY_KEY])
    @blp.arguments(MemberCreate)
    @blp.response(201, MemberSchema)
    @problems(blp, 400, 401, 403, 409, 422)
    @require_scope("members:write")
    @idempotent
    def post(self, data: dict[str, Any]) -> Any:
        """Register a member (the console's registration: member number, deposits and
        share-capital accounts). A phone or national id another member has is a 422 with
        code `member_refused`. The first USSD PIN then needs the member's ID number (or
        an activation code staff give from the console)."""
        try:
            member = member_add(
                name=data["name"],
                phone=data["phone"],
                national_id=data.get("national_id"),
                language=data["language"],
                actor=f"api:{g.api_caller.client.client_id}",
            )
        except SaccoError as exc:
            db.session.rollback()
            return problem(422, "member_refused", str(exc))
        location = f"{PREFIX}/members/{member.member_no}"
        # Dumped here: @idempotent keeps (and replays) the body the view gives it.
        return MemberSchema().dump(member_out(member)), 201, {"Location": location}


@blp.route("/<string:member_no>")
class MemberView(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.response(200, MemberSchema)
    @problems(blp, 401, 403, 404)
    @require_scope("members:read")
    def get(self, member_no: str) -> dict[str, Any]:
        """A member by member number, with their balances."""
        return member_out(member_or_404(member_no))


@blp.route("/lookup")
class LookupView(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.arguments(LookupArgs, location="query")
    @blp.response(200, MemberSchema)
    @problems(blp, 401, 403, 404)
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
