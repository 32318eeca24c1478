"""The ledger: every movement of money is one balanced journal entry.

`journal_post` is the only writer of journal lines and of the cached account balances.
It adds to the caller's transaction; the public services around it commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.exc import IntegrityError

from app.errors import SaccoError
from app.extensions import db
from app.models import ACCOUNT_KINDS, Account, Installment, JournalEntry, JournalLine, Loan, Member
from app.money import ZERO, MoneyError, round_money, to_decimal
from app.services.audit import audit_record

# Accounts that may never be overdrawn: a member cannot spend savings they do not have.
NO_OVERDRAFT = frozenset({"savings", "share_capital"})

GL_ACCOUNTS: dict[str, tuple[str, str]] = {
    "GL-MPESA-CLEARING": ("mpesa_clearing", "M-PESA Paybill clearing"),
    "GL-B2C-UTILITY": ("b2c_utility", "M-PESA B2C utility"),
    "GL-SUSPENSE": ("suspense", "Unmatched M-PESA payments"),
    "GL-INCOME-INTEREST": ("income_interest", "Interest income"),
    "GL-INCOME-FEES": ("income_fees", "Fee income"),
    "GL-INCOME-PENALTY": ("income_penalty", "Penalty income"),
    "GL-WRITE-OFF": ("write_off_expense", "Loans written off"),
    "GL-INCOME-RECOVERY": ("income_recovery", "Recoveries on loans written off"),
    "GL-OPENING": ("opening_balances", "Balances brought forward"),
}


class LedgerError(SaccoError):
    """A posting that must not happen; nothing was written."""


class DuplicatePosting(LedgerError):
    """An entry with this idempotency key exists already."""

    def __init__(self, key: str, entry_id: int | None) -> None:
        super().__init__(f"already posted: {key}")
        self.key = key
        self.entry_id = entry_id


@dataclass(frozen=True)
class Line:
    account: Account
    amount: Decimal  # debit positive, credit negative


def debit(account: Account, amount: Decimal) -> Line:
    return Line(account, amount)


def credit(account: Account, amount: Decimal) -> Line:
    return Line(account, -amount)


def account_get_or_create(
    *,
    code: str,
    kind: str,
    name: str,
    member_id: int | None = None,
    loan_id: int | None = None,
) -> Account:
    """The account with this code, created if missing (safe when two callers race)."""
    if kind not in ACCOUNT_KINDS:
        raise LedgerError(f"unknown account kind {kind!r}")
    found = db.session.scalar(select(Account).where(Account.code == code))
    if found is not None:
        return found
    account = Account(code=code, kind=kind, name=name, member_id=member_id, loan_id=loan_id)
    try:
        with db.session.begin_nested():
            db.session.add(account)
    except IntegrityError:
        found = db.session.scalar(select(Account).where(Account.code == code))
        if found is None:
            raise
        return found
    return account


def gl_account(code: str) -> Account:
    kind, name = GL_ACCOUNTS[code]
    return account_get_or_create(code=code, kind=kind, name=name)


# The accounts every member has: kind -> (code prefix, label). Codes are "<prefix>-<member_no>".
MEMBER_ACCOUNTS: dict[str, tuple[str, str]] = {
    "savings": ("SAV", "Savings"),
    "share_capital": ("SHR", "Share capital"),
}


# Where money from outside comes in: fresh M-PESA money, or M-PESA money that matched no
# one and that staff now assign.
MONEY_IN = {"mpesa": "GL-MPESA-CLEARING", "suspense": "GL-SUSPENSE"}


def money_in_account(source: str) -> Account:
    try:
        return gl_account(MONEY_IN[source])
    except KeyError:
        raise LedgerError(f"unknown source of money {source!r}") from None


def member_account(member: Member, kind: str) -> Account:
    prefix, label = MEMBER_ACCOUNTS[kind]
    return account_get_or_create(
        code=f"{prefix}-{member.member_no}",
        kind=kind,
        name=f"{label} {member.member_no}",
        member_id=member.id,
    )


def journal_post(
    *,
    kind: str,
    lines: Sequence[Line],
    value_date: date,
    description: str = "",
    idempotency_key: str | None = None,
    actor: str = "system",
    member_id: int | None = None,
    loan_id: int | None = None,
) -> JournalEntry:
    """Write one balanced entry and move the cached balances, in the caller's transaction.

    Refuses (LedgerError, nothing written) an entry that does not sum to zero, has fewer
    than two lines, carries fractions of a cent, touches a closed account or overdraws
    savings. A repeated idempotency key raises DuplicatePosting; the unique constraint,
    not a prior read, is what guarantees it under concurrency.
    """
    amounts = []
    for line in lines:
        try:
            amount = to_decimal(line.amount)
        except MoneyError as exc:
            raise LedgerError(str(exc)) from exc
        if amount != round_money(amount):
            raise LedgerError(f"{amount} has fractions of a cent")
        if amount == 0:
            raise LedgerError(f"a zero line on {line.account.code}")
        amounts.append(amount)
    if len(amounts) < 2:
        raise LedgerError("an entry needs at least two lines")
    total = sum(amounts, ZERO)
    if total != 0:
        raise LedgerError(f"entry does not balance: lines sum to {total}")
    for line in lines:
        if line.account.status != "open":
            raise LedgerError(f"account {line.account.code} is closed")

    entry = JournalEntry(
        kind=kind,
        description=description[:255],
        idempotency_key=idempotency_key,
        value_date=value_date,
        actor=actor,
        member_id=member_id,
        loan_id=loan_id,
    )
    try:
        with db.session.begin_nested():
            db.session.add(entry)
            db.session.flush()
            for line, amount in zip(lines, amounts, strict=True):
                db.session.add(
                    JournalLine(entry_id=entry.id, account_id=line.account.id, amount=amount)
                )
            # Lock rows in id order so two entries touching the same accounts cannot deadlock.
            deltas: dict[int, Decimal] = {}
            for line, amount in zip(lines, amounts, strict=True):
                deltas[line.account.id] = deltas.get(line.account.id, ZERO) + amount
            kinds = {line.account.id: line.account.kind for line in lines}
            for account_id in sorted(deltas):
                _move_balance(account_id, deltas[account_id], kinds[account_id])
    except IntegrityError as exc:
        if idempotency_key is not None:
            existing = db.session.scalar(
                select(JournalEntry.id).where(JournalEntry.idempotency_key == idempotency_key)
            )
            if existing is not None:
                raise DuplicatePosting(idempotency_key, existing) from exc
        raise
    for line in lines:
        db.session.expire(line.account, ["balance"])
    return entry


def _move_balance(account_id: int, delta: Decimal, kind: str) -> None:
    # One atomic UPDATE: the database serialises concurrent postings on the row, and the
    # WHERE clause makes "open" and "not overdrawn" part of the same write.
    stmt = (
        update(Account)
        .where(Account.id == account_id, Account.status == "open")
        .values(balance=Account.balance + delta)
    )
    if kind in NO_OVERDRAFT and delta > 0:
        stmt = stmt.where(Account.balance + delta <= 0)
    # An UPDATE gives a CursorResult (with rowcount); SQLAlchemy 2.1 types it as a Result.
    result = cast(
        CursorResult[Any], db.session.execute(stmt.execution_options(synchronize_session=False))
    )
    if result.rowcount != 1:
        # Fresh from the database: the caller's copy may predate the close that refused us.
        account = db.session.get(Account, account_id, populate_existing=True)
        if account is None or account.status != "open":
            raise LedgerError(f"account {account_id} is closed")
        raise LedgerError(
            f"insufficient balance in {account.code}: {account.display_balance} available"
        )


def account_close(*, account_id: int, actor: str) -> Account:
    """Close an empty account. "Empty" and "closed" are one conditional UPDATE, so a
    deposit committing meanwhile either lands first (and the close is refused) or finds
    the account closed (and is refused): never a closed account with money in it."""
    closed = cast(
        CursorResult[Any],
        db.session.execute(
            update(Account)
            .where(Account.id == account_id, Account.status == "open", Account.balance == 0)
            .values(status="closed")
            .execution_options(synchronize_session=False)
        ),
    )
    account = db.session.get(Account, account_id, populate_existing=True)
    if account is None:
        raise LedgerError(f"no account {account_id}")
    if closed.rowcount != 1:
        db.session.rollback()
        if account.status != "open":
            raise LedgerError(f"account {account.code} is closed already")
        raise LedgerError(f"account {account.code} still holds {account.display_balance}")
    audit_record(
        actor=actor,
        action="account.close",
        object_type="account",
        object_id=account.code,
        before={"status": "open"},
        after={"status": "closed"},
    )
    db.session.commit()
    return account


@dataclass(frozen=True)
class Mismatch:
    what: str
    detail: str


def ledger_check(*, fix: bool = False) -> list[Mismatch]:
    """Rebuild every balance from the journal and compare; every entry sums to zero; every
    loan's receivables match its schedule; no savings or share account is overdrawn."""
    problems: list[Mismatch] = []
    unbalanced = db.session.execute(
        select(JournalLine.entry_id, func.sum(JournalLine.amount))
        .group_by(JournalLine.entry_id)
        .having(func.sum(JournalLine.amount) != 0)
    ).all()
    for entry_id, total in unbalanced:
        problems.append(Mismatch("entry", f"journal entry {entry_id} sums to {total}"))
    single = db.session.execute(
        select(JournalLine.entry_id).group_by(JournalLine.entry_id).having(func.count() < 2)
    ).scalars()
    for entry_id in single:
        problems.append(Mismatch("entry", f"journal entry {entry_id} has one line"))

    sums = dict(
        db.session.execute(
            select(JournalLine.account_id, func.sum(JournalLine.amount)).group_by(
                JournalLine.account_id
            )
        ).all()
    )
    for account in db.session.scalars(select(Account).order_by(Account.id)):
        rebuilt = round_money(sums.get(account.id) or ZERO)
        if account.balance != rebuilt:
            problems.append(
                Mismatch("balance", f"{account.code}: cached {account.balance}, journal {rebuilt}")
            )
            if fix:
                account.balance = rebuilt
    problems += _reconcile_loans(sums)
    for account in db.session.scalars(
        select(Account).where(Account.kind.in_(NO_OVERDRAFT)).order_by(Account.id)
    ):
        held = -round_money(sums.get(account.id) or ZERO)
        if held < 0:
            problems.append(Mismatch("account", f"{account.code} is overdrawn: {held}"))
    if fix:
        db.session.commit()
    return problems


# Receivable account kind -> the schedule column it mirrors.
RECEIVABLE_KINDS = {
    "loan_principal": "principal",
    "loan_interest": "interest",
    "loan_fees": "fees",
    "loan_penalty": "penalty",
}
SETTLED_STATUSES = ("closed", "written_off")


def _reconcile_loans(sums: dict[int, Decimal]) -> list[Mismatch]:
    """The sub-ledger: every loan's receivables (from the journal) equal what its live
    schedule says is outstanding, component by component; a settled loan owes nothing
    on either side. One grouped query a side, so it runs nightly over the whole book."""
    owed: dict[tuple[int, str], Decimal] = {}
    columns = {
        c: func.sum(getattr(Installment, f"{c}_due") - getattr(Installment, f"{c}_paid"))
        for c in RECEIVABLE_KINDS.values()
    }
    for loan_id, *totals in db.session.execute(
        select(Installment.loan_id, *columns.values())
        .where(Installment.superseded.is_(False))
        .group_by(Installment.loan_id)
    ):
        for component, total in zip(columns, totals, strict=True):
            owed[(loan_id, component)] = round_money(total or ZERO)
    held: dict[tuple[int, str], Decimal] = {}
    for account_id, loan_id, kind in db.session.execute(
        select(Account.id, Account.loan_id, Account.kind).where(
            Account.kind.in_(RECEIVABLE_KINDS), Account.loan_id.is_not(None)
        )
    ):
        assert loan_id is not None  # the query asks for loan accounts only
        key = (loan_id, RECEIVABLE_KINDS[kind])
        held[key] = held.get(key, ZERO) + round_money(sums.get(account_id) or ZERO)
    loans = {
        loan_id: (status, loan_no)
        for loan_id, status, loan_no in db.session.execute(
            select(Loan.id, Loan.status, Loan.loan_no)
        )
    }
    problems = []
    for loan_id, component in sorted(set(owed) | set(held)):
        schedule, books = owed.get((loan_id, component), ZERO), held.get((loan_id, component), ZERO)
        status, number = loans.get(loan_id, (None, None))
        name = number or f"loan {loan_id}"
        if schedule != books:
            problems.append(
                Mismatch(
                    "loan",
                    f"{name} {component}: receivable {books}, schedule outstanding {schedule}",
                )
            )
        elif status in SETTLED_STATUSES and schedule != 0:
            problems.append(
                Mismatch("loan", f"{name} is {status} but still owes {component} {schedule}")
            )
    return problems
