"""Accounts: a member's accounts with balances, holds and what is available, and an
account's statement for a date range (JSON, or the console's PDF and CSV).

An account is named by the number the member sees and pays to ("M000123" deposits,
"M000123S" savings, "M000123SH" shares, read by the one parser of typed accounts) or, for
a fixed deposit (one account per deposit), by its own code ("FIX-M000123-1").

Account statement and member statement: the console's statement is the member's, one
section per account (and per loan). An account's statement here is that same statement
cut to the account's section: the JSON lines and the PDF/CSV carry the same figures, laid
out as the console lays them. The whole member statement, loans included, is
/members/<member_no>/statement. Every statement read is audited against the member, as
the console's downloads are.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta
from typing import Any

from flask import Response, current_app, g
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from app.api import PREFIX
from app.api.auth import require_scope
from app.api.common import Money, problems
from app.api.resources.members import member_or_404
from app.clock import business_today
from app.extensions import db
from app.models import Account, AccountProduct, FixedDeposit, Member, SavingsTarget
from app.money import ZERO
from app.selectors.guarantees import member_deposits
from app.selectors.statements import (
    MEMBER_MONEY_KINDS,
    RangeStatement,
    StatementRangeError,
    StatementSection,
    member_statement_range,
)
from app.services.audit import audit_record
from app.services.savings.products import account_by_number, account_code, account_number
from app.services.savings.withdrawals import WithdrawalError, withdrawal_quote
from app.services.statements import statement_csv, statement_pdf

blp = Blueprint(
    "accounts",
    __name__,
    url_prefix=PREFIX,
    description="Members' accounts: balances, holds and statements.",
)

# Deposits first (the loan base), then withdrawable savings, targets, fixed deposits,
# shares: the member page's order, with the term accounts beside the savings.
_ORDER = {"savings": 0, "member_savings": 1, "target_savings": 2, "fixed_deposit": 3}
DEFAULT_DAYS = 90  # a statement with no dates: the last 90 days, as the member page offers
# Dates a statement may name: a bound so no date arithmetic can overflow.
_DAYS = validate.Range(min=date(2000, 1, 1), max=date(2100, 12, 31))
FORMATS = ("json", "pdf", "csv")
_FILES = {"pdf": "application/pdf", "csv": "text/csv"}


class HoldSchema(Schema):
    kind = fields.String(
        required=True,
        metadata={"description": "guarantees | own_loans | minimum_balance"},
    )
    description = fields.String(required=True)
    amount = Money(required=True)


class AccountSchema(Schema):
    number = fields.String(required=True, metadata={"example": "M000123S"})
    product = fields.String(required=True, metadata={"description": "the product's code"})
    product_name = fields.String(required=True)
    kind = fields.String(
        required=True, metadata={"description": "deposits | savings | shares | fixed | target"}
    )
    status = fields.String(required=True)
    withdrawable = fields.Boolean(required=True)
    balance = Money(required=True)
    holds = fields.List(fields.Nested(HoldSchema), required=True)
    held = Money(required=True, metadata={"description": "the holds together"})
    available = Money(
        required=True,
        metadata={
            "description": (
                "deposits: free deposits (less what guarantees and the member's own secured "
                "loans hold), what may be pledged or lent against; withdrawable savings: the "
                "most an M-PESA withdrawal takes now (after fee, minimum balance and today's "
                "limit); shares, fixed deposits and targets: 0 (locked)"
            )
        },
    )
    locked_until = fields.Date(
        allow_none=True,
        required=True,
        metadata={"description": "a fixed deposit's maturity, a target's unlock date"},
    )


class AccountListSchema(Schema):
    member_no = fields.String(required=True)
    accounts = fields.List(fields.Nested(AccountSchema), required=True)


class StatementArgs(Schema):
    start = fields.Date(
        data_key="from",
        validate=_DAYS,
        metadata={"description": f"first day (default: {DEFAULT_DAYS} days before `to`)"},
    )
    end = fields.Date(data_key="to", validate=_DAYS, metadata={"description": "default today"})
    format = fields.String(
        load_default="json",
        validate=validate.OneOf(FORMATS),
        metadata={"description": "json, or the console's pdf or csv file"},
    )


class StatementLineSchema(Schema):
    date = fields.Date(required=True, attribute="value_date")
    entry_id = fields.Integer(required=True)
    kind = fields.String(required=True)
    description = fields.String(required=True)
    debit = Money(required=True, metadata={"description": "money out (a loan: more owed)"})
    credit = Money(required=True, metadata={"description": "money in (a loan: repaid)"})
    balance = Money(required=True, metadata={"description": "running balance"})


class SectionSchema(Schema):
    title = fields.String(required=True)
    opening_balance = Money(required=True, attribute="opening")
    closing_balance = Money(required=True, attribute="closing")
    lines = fields.List(fields.Nested(StatementLineSchema), required=True, attribute="movements")


class AccountStatementSchema(SectionSchema):
    account = fields.String(required=True)
    member_no = fields.String(required=True)
    start = fields.Date(required=True, data_key="from")
    end = fields.Date(required=True, data_key="to")


class MemberStatementSchema(Schema):
    member_no = fields.String(required=True)
    name = fields.String(required=True)
    start = fields.Date(required=True, data_key="from")
    end = fields.Date(required=True, data_key="to")
    sections = fields.List(fields.Nested(SectionSchema), required=True)


# The file formats of a statement, beside its JSON (one 200 answer, three types).
_FILE_DOC = {
    "responses": {
        200: {
            "content": {
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                "text/csv": {"schema": {"type": "string", "format": "binary"}},
            }
        }
    }
}


@dataclasses.dataclass(frozen=True)
class _Held:
    account: Account
    product: AccountProduct | None
    number: str


def _member_accounts(member: Member) -> list[_Held]:
    """Every account of the member's own money, with its product, in the page's order."""
    rows = db.session.execute(
        select(Account, AccountProduct)
        .outerjoin(AccountProduct, AccountProduct.id == Account.product_id)
        .where(Account.member_id == member.id, Account.kind.in_(MEMBER_MONEY_KINDS))
    ).all()
    held = [_Held(account, product, _number(member, account, product)) for account, product in rows]
    return sorted(held, key=lambda h: (_ORDER.get(h.account.kind, 9), h.account.id))


def _number(member: Member, account: Account, product: AccountProduct | None) -> str:
    # A fixed deposit is one account per deposit, never paid into by Paybill: its code
    # names it (FIX-M000123-1), as the statement titles it.
    if product is None or product.kind == "fixed":
        return account.code
    return account_number(member.member_no or "", product)


def _locks(member_id: int) -> dict[int, date | None]:
    """Per account: when a running fixed deposit matures or a running target unlocks."""
    locks: dict[int, date | None] = dict(
        db.session.execute(
            select(FixedDeposit.account_id, FixedDeposit.maturity_on).where(
                FixedDeposit.member_id == member_id, FixedDeposit.status == "active"
            )
        ).all()
    )
    locks.update(
        db.session.execute(
            select(SavingsTarget.account_id, SavingsTarget.unlock_on).where(
                SavingsTarget.member_id == member_id, SavingsTarget.status == "active"
            )
        ).all()
    )
    return locks


def _account_out(member: Member, held: _Held, locks: dict[int, date | None]) -> dict[str, Any]:
    account, product = held.account, held.product
    balance = account.display_balance
    holds: list[dict[str, Any]] = []
    available = ZERO
    if account.kind == "savings":
        # The deposits: what guarantees and the member's own secured loans hold (the
        # guarantees selector, as the member page and USSD read them).
        deposits = member_deposits(member.id)
        if deposits.guaranteed:
            holds.append(
                {
                    "kind": "guarantees",
                    "description": "held by loans the member guarantees",
                    "amount": deposits.guaranteed,
                }
            )
        if deposits.own:
            holds.append(
                {
                    "kind": "own_loans",
                    "description": "held by the member's own secured loans",
                    "amount": deposits.own,
                }
            )
        available = deposits.free
    elif product is not None and product.withdrawable:
        if product.min_balance:
            holds.append(
                {
                    "kind": "minimum_balance",
                    "description": "the product's minimum balance",
                    "amount": product.min_balance,
                }
            )
        try:
            available = withdrawal_quote(member_id=member.id, account_id=account.id).available
        except WithdrawalError:
            available = ZERO  # closed account or product: nothing may leave it
    return {
        "number": held.number,
        "product": product.code if product is not None else account.kind,
        "product_name": product.name if product is not None else account.name,
        "kind": product.kind if product is not None else account.kind,
        "status": account.status,
        "withdrawable": bool(product is not None and product.withdrawable),
        "balance": balance,
        "holds": holds,
        "held": sum((h["amount"] for h in holds), ZERO),
        "available": available,
        "locked_until": locks.get(account.id),
    }


def _account_or_404(number: str) -> tuple[Member, _Held]:
    """The member's account a number names (see the module's words), or 404."""
    ref = number.strip().upper()
    account = None
    if 0 < len(ref) <= 40:
        account = db.session.scalar(
            select(Account).where(
                Account.code == ref,
                Account.kind.in_(MEMBER_MONEY_KINDS),
                Account.member_id.is_not(None),
            )
        )
        if account is None:
            found = account_by_number(ref)
            if found is not None:
                account = db.session.scalar(
                    select(Account).where(
                        Account.code == account_code(found.product, found.member.member_no or "")
                    )
                )
    if account is None or account.member_id is None:
        abort(404, message=f"no account {number[:40]}", code="account_not_found")
    assert account is not None and account.member_id is not None  # abort raised
    member = db.session.get(Member, account.member_id)
    assert member is not None  # the foreign key
    product = db.session.get(AccountProduct, account.product_id) if account.product_id else None
    return member, _Held(account, product, _number(member, account, product))


def _section_title(member: Member, held: _Held) -> str:
    """The title member_statement_range gives this account's section."""
    kind, product = held.account.kind, held.product
    if kind == "savings":
        return "Deposits"
    if kind == "share_capital":
        return "Share capital"
    if product is None or product.kind == "fixed":
        return f"{product.name} {held.account.code}" if product else held.account.code
    return f"{product.name} {member.member_no}{product.ref_suffix}"


def _range(args: dict[str, Any]) -> tuple[date, date]:
    end = args.get("end") or business_today()
    start = args.get("start") or end - timedelta(days=DEFAULT_DAYS - 1)
    return start, end


def _statement(member: Member, start: date, end: date) -> RangeStatement:
    try:
        return member_statement_range(member_id=member.id, start=start, end=end)
    except StatementRangeError as exc:
        db.session.rollback()
        abort(422, message=str(exc), code="statement_range")
        raise  # abort raised


def _audit(member: Member, start: date, end: date, fmt: str, account: str | None) -> None:
    """As the console's download: who read which member's statement, for which range."""
    after = {"from": start.isoformat(), "to": end.isoformat(), "format": fmt}
    if account is not None:
        after["account"] = account
    audit_record(
        actor=f"api:{g.api_caller.client.client_id}",
        action="member.statement",
        object_type="member",
        object_id=member.member_no,
        after=after,
    )
    db.session.commit()


def _file(statement: RangeStatement, fmt: str, name: str) -> Response:
    if fmt == "pdf":
        settings = current_app.config["SETTINGS"]
        content = statement_pdf(statement, printed=datetime.now(settings.tz), sacco="SACCO")
    else:
        content = statement_csv(statement)
    filename = f"statement-{name}-{statement.start:%Y%m%d}-{statement.end:%Y%m%d}.{fmt}"
    return Response(
        content,
        mimetype=_FILES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@blp.route("/members/<string:member_no>/accounts")
class MemberAccountsView(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.response(200, AccountListSchema)
    @problems(blp, 401, 403, 404)
    @require_scope("accounts:read")
    def get(self, member_no: str) -> dict[str, Any]:
        """Every account of the member's own money (deposits, savings, shares, fixed
        deposits, targets) with its balance, holds and what is available."""
        member = member_or_404(member_no)
        locks = _locks(member.id)
        return {
            "member_no": member.member_no,
            "accounts": [_account_out(member, h, locks) for h in _member_accounts(member)],
        }


@blp.route("/accounts/<string:account_number>/statement")
class AccountStatementView(MethodView):
    @blp.doc(security=[{"bearer": []}], **_FILE_DOC)
    @blp.arguments(StatementArgs, location="query")
    @blp.response(200, AccountStatementSchema)
    @problems(blp, 401, 403, 404, 422)
    @require_scope("accounts:read")
    def get(self, args: dict[str, Any], account_number: str) -> Any:
        """An account's statement from `from` to `to` (at most a year): the opening
        balance, one line per movement with the running balance, the closing balance.
        `format=pdf` or `csv`: the console's statement file, cut to this account."""
        member, held = _account_or_404(account_number)
        start, end = _range(args)
        statement = _statement(member, start, end)
        title = _section_title(member, held)
        section = next((s for s in statement.sections if s.title == title), None)
        if section is None:  # an account the statement does not know: nothing moved
            section = StatementSection(title=title, opening=ZERO, movements=[], closing=ZERO)
        fmt = args["format"]
        _audit(member, start, end, fmt, held.number)
        if fmt in _FILES:
            return _file(dataclasses.replace(statement, sections=[section]), fmt, held.number)
        return {
            "account": held.number,
            "member_no": member.member_no,
            "start": start,
            "end": end,
            "title": section.title,
            "opening": section.opening,
            "closing": section.closing,
            "movements": section.movements,
        }


@blp.route("/members/<string:member_no>/statement")
class MemberStatementView(MethodView):
    @blp.doc(security=[{"bearer": []}], **_FILE_DOC)
    @blp.arguments(StatementArgs, location="query")
    @blp.response(200, MemberStatementSchema)
    @problems(blp, 401, 403, 404, 422)
    @require_scope("accounts:read")
    def get(self, args: dict[str, Any], member_no: str) -> Any:
        """The member's whole statement, as the console makes it: a section per account
        and per loan. `format=pdf` or `csv`: the console's very file."""
        member = member_or_404(member_no)
        start, end = _range(args)
        statement = _statement(member, start, end)
        fmt = args["format"]
        _audit(member, start, end, fmt, None)
        if fmt in _FILES:
            return _file(statement, fmt, member.member_no or "")
        return {
            "member_no": member.member_no,
            "name": member.name,
            "start": start,
            "end": end,
            "sections": statement.sections,
        }
