"""A member's statements: the mini statement (their latest movements on savings and loan
accounts, for USSD and SMS) and the statement for a date range (the console's CSV and PDF)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select

from app.errors import SaccoError
from app.extensions import db
from app.models import Account, AccountProduct, JournalEntry, JournalLine, Loan, Member
from app.money import ZERO
from app.selectors.members import LOAN_RECEIVABLE_KINDS

STATEMENT_KINDS = ("savings", *LOAN_RECEIVABLE_KINDS)
# The member's own money, one statement section per account: deposits, withdrawable
# savings (one account per savings product), share capital.
MEMBER_MONEY_KINDS = (
    "savings",
    "member_savings",
    "fixed_deposit",
    "target_savings",
    "share_capital",
)


@dataclass(frozen=True)
class StatementLine:
    value_date: date
    account: str  # "savings" or "loan" (principal, interest, fees, penalties together)
    kind: str  # the journal entry's kind: deposit, repayment, disbursement, ...
    # How the balance the member sees moved: savings +500 is a deposit; loan +10,000 is
    # money lent (more owed), loan -1,000 a repayment.
    amount: Decimal
    entry_id: int


def member_statement(*, member_id: int, limit: int = 5) -> list[StatementLine]:
    """The newest `limit` movements, newest first: one line per journal entry and account
    group, so a repayment split over interest and principal reads as one loan line."""
    on_member = (Account.member_id == member_id) & Account.kind.in_(STATEMENT_KINDS)
    latest = (
        select(JournalEntry.id)
        .join(JournalLine, JournalLine.entry_id == JournalEntry.id)
        .join(Account, Account.id == JournalLine.account_id)
        .where(on_member)
        .group_by(JournalEntry.id, JournalEntry.value_date)
        .order_by(JournalEntry.value_date.desc(), JournalEntry.id.desc())
        .limit(limit)
        .subquery()
    )
    group = case((Account.kind == "savings", "savings"), else_="loan")
    rows = db.session.execute(
        select(
            JournalEntry.id,
            JournalEntry.value_date,
            JournalEntry.kind,
            group,
            func.sum(JournalLine.amount),
        )
        .join(JournalLine, JournalLine.entry_id == JournalEntry.id)
        .join(Account, Account.id == JournalLine.account_id)
        .where(on_member, JournalEntry.id.in_(select(latest.c.id)))
        .group_by(JournalEntry.id, JournalEntry.value_date, JournalEntry.kind, group)
        .order_by(JournalEntry.value_date.desc(), JournalEntry.id.desc(), group.desc())
    ).all()
    lines = [
        StatementLine(
            value_date=value_date,
            account=account,
            kind=kind,
            # Credit-normal savings read with the sign flipped (Account.display_balance).
            amount=-total if account == "savings" else total,
            entry_id=entry_id,
        )
        for entry_id, value_date, kind, account, total in rows
        if total  # a move between two of the member's loan accounts nets to nothing
    ]
    return lines[:limit]


# -- a statement for a date range (the console's CSV and PDF) ------------------------------

MAX_STATEMENT_DAYS = 366
MAX_STATEMENT_LINES = 5000  # a year of a busy member is a few hundred; this only bounds a read


class StatementRangeError(SaccoError):
    """A date range a statement cannot cover; the message says why."""


@dataclass(frozen=True)
class Movement:
    value_date: date
    entry_id: int
    kind: str
    description: str
    debit: Decimal  # as the journal has it: money lent, a charge, a withdrawal
    credit: Decimal  # a deposit, a repayment
    balance: Decimal  # the running balance as the member reads it (savings, amount owed)


@dataclass(frozen=True)
class StatementSection:
    title: str  # "Savings", "Share capital", "Loan L000012"
    opening: Decimal
    movements: list[Movement]
    closing: Decimal


@dataclass(frozen=True)
class RangeStatement:
    member_id: int
    member_no: str
    name: str
    phone: str
    start: date
    end: date
    sections: list[StatementSection]


def statement_range_check(start: date, end: date) -> None:
    """Refuse, in words, a range that is back to front or longer than a year."""
    if end < start:
        raise StatementRangeError(
            f"the statement ends ({end:%d %b %Y}) before it starts ({start:%d %b %Y})"
        )
    days = (end - start).days + 1
    if days > MAX_STATEMENT_DAYS:
        raise StatementRangeError(
            f"a statement covers at most {MAX_STATEMENT_DAYS} days and this range is "
            f"{days:,} days; download it a year at a time"
        )


def member_statement_range(*, member_id: int, start: date, end: date) -> RangeStatement:
    """Deposits, share capital, each savings account and each loan: the balance on the
    morning of `start`, every movement up to and including `end` (by value date, one line
    per journal entry), and the closing balance. Balances read as the member reads them:
    their money positive, a loan as what is owed."""
    statement_range_check(start, end)
    member = db.session.get(Member, member_id)
    if member is None:
        raise StatementRangeError(f"no member {member_id}")

    accounts = db.session.execute(
        select(Account.id, Account.kind, Account.loan_id, Loan.loan_no, Account.code)
        .outerjoin(Loan, Loan.id == Account.loan_id)
        .where(
            Account.member_id == member_id,
            Account.kind.in_(MEMBER_MONEY_KINDS + LOAN_RECEIVABLE_KINDS),
        )
    ).all()
    products = {
        code: product
        for code, product in db.session.execute(
            select(Account.code, AccountProduct)
            .join(AccountProduct, AccountProduct.id == Account.product_id)
            .where(Account.member_id == member_id)
        )
    }
    # One section per deposits, share capital, each savings account and each loan; the
    # loan's four receivables read as one.
    group_of: dict[int, str] = {}
    order: dict[str, tuple[int, int]] = {"Deposits": (0, 0), "Share capital": (1, 0)}
    flip = {"Deposits": True, "Share capital": True}  # credit-normal: held negative
    for account_id, kind, loan_id, loan_no, code in accounts:
        if kind == "savings":
            group_of[account_id] = "Deposits"
        elif kind == "share_capital":
            group_of[account_id] = "Share capital"
        elif kind in MEMBER_MONEY_KINDS:
            product = products.get(code)
            if product is None or product.kind == "fixed":
                # A member may hold several fixed deposits: each reads by its own code.
                title = f"{product.name} {code}" if product else code
            else:
                title = f"{product.name} {member.member_no}{product.ref_suffix}"
            group_of[account_id] = title
            order[title] = (0, account_id)  # beside the deposits: the member's own money
            flip[title] = True
        else:
            title = f"Loan {loan_no or loan_id}"
            group_of[account_id] = title
            order[title] = (2, loan_id or 0)
    ids = list(group_of)

    opening: dict[str, Decimal] = {title: ZERO for title in order}
    rows: list[Any] = []
    if ids:
        for account_id, total in db.session.execute(
            select(JournalLine.account_id, func.sum(JournalLine.amount))
            .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
            .where(JournalLine.account_id.in_(ids), JournalEntry.value_date < start)
            .group_by(JournalLine.account_id)
        ):
            title = group_of[account_id]
            opening[title] += total or ZERO
        rows = list(
            db.session.execute(
                select(
                    JournalEntry.id,
                    JournalEntry.value_date,
                    JournalEntry.kind,
                    JournalEntry.description,
                    JournalLine.account_id,
                    JournalLine.amount,
                )
                .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
                .where(
                    JournalLine.account_id.in_(ids),
                    JournalEntry.value_date >= start,
                    JournalEntry.value_date <= end,
                )
                .order_by(JournalEntry.value_date, JournalEntry.id, JournalLine.id)
                .limit(MAX_STATEMENT_LINES + 1)
            )
        )
    if len(rows) > MAX_STATEMENT_LINES:
        raise StatementRangeError(
            f"this member has more than {MAX_STATEMENT_LINES:,} movements in the range; "
            "download a shorter range"
        )

    # Per section, one movement per entry: a repayment split over interest and principal
    # is one line, and a move between two of the loan's accounts (nets to zero) none.
    moved: dict[str, dict[int, list[Any]]] = {title: {} for title in order}
    for entry_id, value_date, kind, description, account_id, amount in rows:
        title = group_of[account_id]
        line = moved[title].setdefault(entry_id, [value_date, kind, description, ZERO])
        line[3] += amount

    sections = []
    for title in sorted(order, key=order.__getitem__):
        sign = -1 if flip.get(title) else 1
        balance = sign * opening[title]
        first = balance
        movements = []
        for entry_id, (value_date, kind, description, amount) in moved[title].items():
            if not amount:
                continue
            balance += sign * amount
            movements.append(
                Movement(
                    value_date=value_date,
                    entry_id=entry_id,
                    kind=kind,
                    description=description or kind.replace("_", " "),
                    debit=amount if amount > 0 else ZERO,
                    credit=-amount if amount < 0 else ZERO,
                    balance=balance,
                )
            )
        if title.startswith("Loan") and not movements and not first:
            continue  # a loan settled before the range (or never paid out) says nothing
        sections.append(
            StatementSection(title=title, opening=first, movements=movements, closing=balance)
        )
    return RangeStatement(
        member_id=member.id,
        member_no=member.member_no or "",
        name=member.name,
        phone=member.phone,
        start=start,
        end=end,
        sections=sections,
    )
