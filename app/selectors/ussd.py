"""What a USSD hop shows, read in as few database round trips as the screen allows.

A hop is an HTTP request the gateway times out after a few seconds, and at close of business
hundreds of them arrive a second, so each read here is one statement (two for the balance)
and only the columns the screen uses. On PostgreSQL a read that is not part of a write runs
outside a transaction (autocommit): under READ COMMITTED each statement sees its own
snapshot either way, so this changes nothing the member sees, and it saves the BEGIN and
ROLLBACK round trips psycopg would send around it. SQLite keeps the session: there every
transaction starts with BEGIN IMMEDIATE (app/extensions.py) and its autocommit switch
would undo the driver setting the ledger's savepoints need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, Select, and_, bindparam, case, select

from app.extensions import db
from app.models import (
    Account,
    AccountProduct,
    Guarantee,
    Installment,
    Loan,
    LoanProduct,
    Member,
)
from app.money import ZERO
from app.selectors.loans import LIVE_STATUSES, UNPAID


def read_rows(
    stmt: Select[*tuple[Any, ...]], params: dict[str, Any]
) -> Sequence[Row[*tuple[Any, ...]]]:
    """Run a read-only statement: on PostgreSQL, outside any transaction unless the hop's
    session has one open (then inside it, so the hop sees its own uncommitted writes)."""
    if db.session().in_transaction() or db.engine.dialect.name != "postgresql":
        return db.session.execute(stmt, params).all()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return conn.execute(stmt, params).all()


# The statements are built once, with bound parameters: building a select costs more
# Python than the round trip it saves on a hop this small.
_CALLER = select(
    Member.id,
    Member.language,
    Member.status,
    Member.locked_until,
    and_(Member.pin_hash.is_not(None), Member.pin_hash != "").label("has_pin"),
).where(Member.phone == bindparam("phone"))
_LIVE = (
    select(Loan.id, Loan.loan_no, Loan.days_past_due)
    .where(Loan.member_id == bindparam("member_id"), Loan.status.in_(LIVE_STATUSES))
    .order_by(Loan.id)
)
# Every product with the member's account of it, if any: the accounts they hold (the
# balance screen) and the open products they may pay into or open (Save), in one read.
# Deposits first (the loan base), then savings, then shares.
_ACCOUNTS = (
    select(
        AccountProduct.id.label("product_id"),
        AccountProduct.kind,
        AccountProduct.name,
        AccountProduct.name_sw,
        AccountProduct.ref_suffix,
        AccountProduct.withdrawable,
        AccountProduct.active,
        Account.id.label("account_id"),
        Account.balance,
        Member.member_no,
    )
    .select_from(AccountProduct)
    .join(Member, Member.id == bindparam("member_id"))
    .outerjoin(
        Account,
        and_(
            Account.product_id == AccountProduct.id,
            Account.member_id == Member.id,
            Account.status == "open",
        ),
    )
    .where(AccountProduct.active | Account.id.is_not(None))
    .order_by(
        case({"deposits": 0, "savings": 1, "shares": 2}, value=AccountProduct.kind),
        AccountProduct.id,
    )
)
_live_sub = _LIVE.subquery()
_LIVE_UNPAID = (
    select(_live_sub, Installment.due_date, UNPAID.label("unpaid"))
    .outerjoin(
        Installment,
        and_(
            Installment.loan_id == _live_sub.c.id,
            Installment.superseded.is_(False),
            UNPAID > 0,
        ),
    )
    .order_by(_live_sub.c.id, Installment.number)
)


@dataclass(frozen=True)
class Caller:
    """The member a first hop is from: what picks the door (PIN, activation, locked)."""

    id: int
    language: str
    status: str
    locked_until: datetime | None
    has_pin: bool


def ussd_caller(*, phone: str) -> Caller | None:
    """The member with this phone, in one statement (the first hop's only read)."""
    rows = read_rows(_CALLER, {"phone": phone})
    if not rows:
        return None
    row = rows[0]
    return Caller(row.id, row.language, row.status, row.locked_until, bool(row.has_pin))


@dataclass(frozen=True)
class LoanLine:
    """A live loan as the menus list it."""

    id: int
    loan_no: str
    days_past_due: int


def ussd_live_loans(*, member_id: int) -> list[LoanLine]:
    """The member's live loans, oldest first, in one statement."""
    rows = read_rows(_LIVE, {"member_id": member_id})
    return [LoanLine(r.id, r.loan_no, r.days_past_due) for r in rows]


@dataclass(frozen=True)
class LoanPosition:
    """One live loan on the balance screen: all it owes, what is due now and when."""

    loan: LoanLine
    owed: Decimal
    due: Decimal
    when: date | None  # the oldest unpaid due date; None when nothing is left unpaid


@dataclass(frozen=True)
class AccountLine:
    """One of the member's accounts (or an open product they hold none of yet: no
    account_id, balance zero) as the menus list it."""

    product_id: int
    kind: str  # the product's: deposits | savings | shares
    name: str  # in the member's language
    number: str  # member number and the product's suffix: what the member pays to
    balance: Decimal  # as the member reads it: positive
    withdrawable: bool
    account_id: int | None


def ussd_accounts(*, member_id: int, language: str, held_only: bool = True) -> list[AccountLine]:
    """The member's accounts, deposits first, in one statement; with `held_only=False`
    also the open products they hold no account of yet (what "Save" may open)."""
    lines = []
    for r in read_rows(_ACCOUNTS, {"member_id": member_id}):
        if held_only and r.account_id is None:
            continue
        name = (r.name_sw or r.name) if language == "sw" else r.name
        lines.append(
            AccountLine(
                product_id=r.product_id,
                kind=r.kind,
                name=name,
                number=f"{r.member_no}{r.ref_suffix}",
                # Credit-normal accounts: stored negative, shown positive (member_balances).
                balance=-(r.balance or ZERO),
                withdrawable=bool(r.withdrawable),
                account_id=r.account_id,
            )
        )
    return lines


@dataclass(frozen=True)
class BalanceView:
    savings: Decimal  # deposits
    shares: Decimal
    loans: list[LoanPosition]
    accounts: list[AccountLine] = field(default_factory=list)  # each account, deposits first


def ussd_balance(
    *, member_id: int, today: date, with_accounts: bool = True, language: str = "en"
) -> BalanceView:
    """The balance screen in two statements: each account's balance (cached on the
    accounts; skipped with `with_accounts=False`, for the later pages), and every live
    loan with the unpaid rows of its live schedule.

    What is due now: the arrears (rows due on or before `today`) when there are any, else
    the next installment; the same rule the menus always used, one read for all loans."""
    accounts = ussd_accounts(member_id=member_id, language=language) if with_accounts else []
    savings = sum((a.balance for a in accounts if a.kind == "deposits"), ZERO)
    shares = sum((a.balance for a in accounts if a.kind == "shares"), ZERO)
    rows = read_rows(_LIVE_UNPAID, {"member_id": member_id})
    schedules: dict[int, tuple[LoanLine, list[tuple[date, Decimal]]]] = {}
    for r in rows:
        line, unpaid = schedules.setdefault(r.id, (LoanLine(r.id, r.loan_no, r.days_past_due), []))
        if r.due_date is not None:
            unpaid.append((r.due_date, r.unpaid))
    return BalanceView(
        savings,
        shares,
        [_position(line, unpaid, today) for line, unpaid in schedules.values()],
        accounts,
    )


def _position(line: LoanLine, unpaid: list[tuple[date, Decimal]], today: date) -> LoanPosition:
    owed = sum((amount for _, amount in unpaid), ZERO)
    if not unpaid:
        return LoanPosition(line, owed, ZERO, None)
    late = [(day, amount) for day, amount in unpaid if day <= today]
    if late:
        return LoanPosition(line, owed, sum((a for _, a in late), ZERO), late[0][0])
    return LoanPosition(line, owed, unpaid[0][1], unpaid[0][0])


def ussd_secured_applications(*, member_id: int, statuses: Sequence[str]) -> list[LoanLine]:
    """The member's own applications of a secured product in `statuses` (the ones guarantors
    are asked in), oldest first, in one statement: where menu 2 offers to add guarantors."""
    rows = read_rows(
        select(Loan.id, Loan.loan_no, Loan.days_past_due)
        .join(LoanProduct, LoanProduct.id == Loan.product_id)
        .where(
            Loan.member_id == member_id,
            Loan.status.in_(list(statuses)),
            (LoanProduct.min_guarantors > 0) | (LoanProduct.guarantee_cover > 0),
        )
        .order_by(Loan.id),
        {},
    )
    return [LoanLine(r.id, r.loan_no or "", r.days_past_due) for r in rows]


def ussd_guarantee_live(*, loan_id: int, guarantor_id: int) -> bool:
    """Whether this member has already been asked for this loan and not said no (a request
    waiting or a pledge given): the applicant is told before typing an amount."""
    rows = read_rows(
        select(Guarantee.id).where(
            Guarantee.loan_id == loan_id,
            Guarantee.guarantor_id == guarantor_id,
            Guarantee.status.in_(("requested", "accepted")),
        ),
        {},
    )
    return bool(rows)
