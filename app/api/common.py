"""What every resource of /api/v1 shares: money as strings with two decimals, cursor
pagination, and the problem document's schema for the OpenAPI document."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from flask_smorest import Blueprint, abort
from marshmallow import INCLUDE, Schema, fields, validate
from sqlalchemy import Select

from app.extensions import db

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
MAX_PAGE = 100


def Money(**kwargs: Any) -> fields.Decimal:  # noqa: N802 - a field factory, read like a field
    """An amount as a string with two decimals ("1500.00"): never a float on the wire."""
    # apispec documents every Decimal as a number; the wire carries a string, and the
    # document must say so (schemathesis checks each response against it).
    metadata = {"type": "string", "format": "decimal", "example": "1500.00"}
    metadata.update(kwargs.pop("metadata", None) or {})
    return fields.Decimal(places=2, as_string=True, metadata=metadata, **kwargs)


class ProblemSchema(Schema):
    """RFC 9457 problem details, as every error of this API answers."""

    class Meta:
        # RFC 9457 s3.2: a problem type may carry extension members (loan_refused's
        # reason...): the document allows them (additionalProperties), as clients must.
        unknown = INCLUDE

    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    code = fields.String(required=True, metadata={"description": "stable, for programs"})
    detail = fields.String(required=True, metadata={"description": "for people"})
    errors = fields.Dict(metadata={"description": "invalid fields, when there are"})


def problems(blp: Blueprint, *statuses: int) -> Callable[[F], F]:
    """The problem answers a route documents (application/problem+json, ProblemSchema):
    one line per route instead of one decorator per status."""

    def decorate(view: F) -> F:
        for status in statuses:
            view = blp.alt_response(status, schema=ProblemSchema)(view)
        return view

    return decorate


class PageArgs(Schema):
    cursor = fields.String(metadata={"description": "next_cursor of the previous page"})
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=MAX_PAGE))


def page_schema(item: type[Schema], name: str) -> type[Schema]:
    """A page of `item`s with the cursor of the next page (null on the last)."""
    return Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item), required=True),
            "next_cursor": fields.String(allow_none=True, required=True),
        },
        name=name,
    )


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def _decode(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        value = int(base64.urlsafe_b64decode(cursor.encode() + b"==").decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        abort(400, message="the cursor is not one this API gave", code="bad_cursor")
    if not 0 < value < 2**63:  # an id: a bigger number is an error in the database, not a row
        abort(400, message="the cursor is not one this API gave", code="bad_cursor")
    return value


def _encode(value: int) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def paginate(stmt: Select[Any], id_column: Any, args: dict[str, Any]) -> Page[Any]:
    """Newest first by id: the rows after the cursor, `limit` of them, and the next cursor
    (a row's id, opaque to the client). Stable while rows are added: a cursor is a
    position, not an offset."""
    after = _decode(args.get("cursor"))
    limit = int(args.get("limit") or 20)
    if after is not None:
        stmt = stmt.where(id_column < after)
    rows: Sequence[Any] = db.session.scalars(stmt.order_by(id_column.desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = list(rows[:limit])
    return Page(rows, _encode(rows[-1].id) if more and rows else None)
