"""The ledger: every movement of money is one balanced journal entry.

`journal_post` is the only writer of journal lines and of the cached account balances.
It adds to the caller's transaction; the public services around it commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Subquery,
    and_,
    case,
    func,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.exc import IntegrityError

from app.errors import SaccoError
from app.extensions import db
from app.models import (
    ACCOUNT_KINDS,
    Account,
    BooksState,
    Installment,
    JournalEntry,
    JournalLine,
    Loan,
    Member,
)
from app.models.types import Money, utcnow
from app.money import ZERO, MoneyError, round_money, to_decimal
from app.selectors.guarantees import holds_problems
from app.services.audit import audit_record
from app.services.bulk import copy_rows, insert_ignoring, insert_returning, on_postgres, update_rows

# Accounts that may never be overdrawn: a member cannot spend savings they do not have.
NO_OVERDRAFT = frozenset(
    {"savings", "member_savings", "share_capital", "fixed_deposit", "target_savings"}
)

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
    "GL-INTEREST-EXPENSE": ("interest_expense", "Interest on savings and deposits"),
    "GL-DIVIDENDS": ("dividends", "Dividends on share capital"),
    "GL-WHT-PAYABLE": ("withholding_tax", "Withholding tax payable"),
    "GL-WITHDRAWALS-PENDING": ("withdrawals_pending", "Withdrawals sent to M-PESA"),
    "GL-REFUNDS-PAYABLE": ("refunds_payable", "Refunds owed to members who left"),
    "GL-BANK": ("bank", "Bank"),
    "GL-CASH": ("cash", "Cash at branch"),
    "GL-RETAINED-EARNINGS": ("retained_earnings", "Retained earnings"),
    "GL-STATUTORY-RESERVE": ("statutory_reserve", "Statutory reserve"),
    "GL-LOAN-LOSS-PROVISION": ("loan_loss_provision", "Loan-loss provision"),
    "GL-INTEREST-SUSPENSE": ("interest_suspense", "Interest in suspense"),
    "GL-PROVISION-EXPENSE": ("provision_expense", "Loan-loss provision expense"),
    "GL-DIVIDENDS-PAYABLE": ("dividends_payable", "Dividends payable"),
}


class LedgerError(SaccoError):
    """A posting that must not happen; nothing was written."""


class DuplicatePosting(LedgerError):
    """An entry with this idempotency key exists already."""

    def __init__(self, key: str, entry_id: int | None) -> None:
        super().__init__(f"already posted: {key}")
        self.key = key
        self.entry_id = entry_id


class PeriodClosed(LedgerError):
    """A posting dated inside a closed period: the books of that period are final."""

    def __init__(self, value_date: date, closed_through: date) -> None:
        super().__init__(
            f"the books are closed through {closed_through.isoformat()}: nothing may be "
            f"dated {value_date.isoformat()}; post a correction dated "
            f"{(closed_through + timedelta(days=1)).isoformat()} or later"
        )


def books_closed_through(*, lock: bool = False) -> date | None:
    """The last day of the last closed period (None: nothing closed). With `lock`, a
    shared lock on PostgreSQL that a close waits for, so a posting that passed the check
    commits before the period closes, never after."""
    stmt = select(BooksState.closed_through).where(BooksState.id == 1)
    if lock and on_postgres():
        stmt = stmt.with_for_update(
            read=True,
            # FOR KEY SHARE, the weakest: only a close writes this row, under FOR UPDATE,
            # which waits for FOR SHARE just the same (not mutated).
            key_share=True,  # pragma: no mutate
        )
        row = db.session.execute(stmt).first()
        if row is None:
            # Nothing ever closed and no row yet: a lock on no row holds nothing, and the
            # first close (which inserts it) would pass a posting in flight. Make the row.
            # The row is id 1 by the key, by the sequence's first value or found there
            # already: changing the key or the values here makes the same row (not mutated).
            first_row = insert_ignoring(BooksState, ["id"])  # pragma: no mutate
            db.session.execute(first_row, [{"id": 1}])  # pragma: no mutate
            row = db.session.execute(stmt).first()
        return row[0] if row is not None else None
    return db.session.scalar(stmt)


def period_guard(value_dates: Sequence[date]) -> None:
    """Refuse (PeriodClosed) when any of these value dates lies in a closed period."""
    if not value_dates:
        return
    closed = books_closed_through(lock=True)
    earliest = min(value_dates)
    if closed is not None and earliest <= closed:
        raise PeriodClosed(earliest, closed)


def open_value_date(day: date) -> date:
    """`day`, or the first open day when `day` lies in a closed period: the value date of
    money that must post whatever its date (a member's M-PESA payment confirmed after its
    month closed is never lost). Takes period_guard's shared lock, so no close slips in
    between this answer and the posting that uses it."""
    closed = books_closed_through(lock=True)
    if closed is not None and day <= closed:
        return closed + timedelta(days=1)
    return day


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
    # This lookup only spares a failed INSERT: without it the race path below finds the
    # same row (not mutated).
    found = db.session.scalar(select(Account).where(Account.code == code))  # pragma: no mutate
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
    corrects_entry_id: int | None = None,
) -> JournalEntry:
    """Write one balanced entry and move the cached balances, in the caller's transaction.

    Refuses (LedgerError, nothing written) an entry that does not sum to zero, has fewer
    than two lines, carries fractions of a cent, touches a closed account or overdraws
    savings. A repeated idempotency key raises DuplicatePosting; the unique constraint,
    not a prior read, is what guarantees it under concurrency.
    """
    amounts = _checked_amounts(lines)
    period_guard([value_date])
    entry = JournalEntry(
        kind=kind,
        description=description[:255],
        idempotency_key=idempotency_key,
        value_date=value_date,
        actor=actor,
        member_id=member_id,
        loan_id=loan_id,
        corrects_entry_id=corrects_entry_id,
    )
    try:
        with db.session.begin_nested():
            db.session.add(entry)
            db.session.flush()
            # The amounts are these lines' own (_checked_amounts): strict or not, one length.
            for line, amount in zip(lines, amounts, strict=True):  # pragma: no mutate
                db.session.add(
                    JournalLine(entry_id=entry.id, account_id=line.account.id, amount=amount)
                )
            # Lock rows in id order so two entries touching the same accounts cannot deadlock.
            deltas: dict[int, Decimal] = {}
            for line, amount in zip(lines, amounts, strict=True):  # pragma: no mutate
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
        # Expiring more than the balance reads the same rows again: not mutated.
        db.session.expire(line.account, ["balance"])  # pragma: no mutate
    return entry


def _checked_amounts(lines: Sequence[Line]) -> list[Decimal]:
    """The lines' amounts, once every rule of a posting holds (LedgerError otherwise)."""
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
    # Two or more Decimals sum to a Decimal with or without the start: not mutated.
    total = sum(amounts, ZERO)  # pragma: no mutate
    if total != 0:
        raise LedgerError(f"entry does not balance: lines sum to {total}")
    for line in lines:
        if line.account.status != "open":
            raise LedgerError(f"account {line.account.code} is closed")
    return amounts


@dataclass(frozen=True)
class Draft:
    """One entry for `journal_post_many`: journal_post's arguments, its key required."""

    kind: str
    lines: Sequence[Line]
    value_date: date
    idempotency_key: str
    description: str = ""
    actor: str = "system"
    member_id: int | None = None
    loan_id: int | None = None


def journal_post_many(drafts: Sequence[Draft]) -> set[str]:
    """Many entries at once, for close of business: the rules of `journal_post` for each,
    written in a few statements (entries, lines, one balance UPDATE per account), in the
    caller's transaction. An entry whose key exists already is skipped, not an error (the
    unique constraint decides, as for one entry); returns the keys posted now."""
    if not drafts:
        return set()
    checked = [(draft, _checked_amounts(draft.lines)) for draft in drafts]
    period_guard([draft.value_date for draft in drafts])
    now = utcnow()
    inserted = insert_returning(
        JournalEntry.__table__,
        [
            dict(
                kind=draft.kind,
                description=draft.description[:255],
                idempotency_key=draft.idempotency_key,
                value_date=draft.value_date,
                # PostgreSQL's unnest INSERT needs it written (and fails on a misspelt
                # column); SQLite's INSERT applies the column's default, the same clock.
                posted_at=now,  # pragma: no mutate
                actor=draft.actor,
                member_id=draft.member_id,
                loan_id=draft.loan_id,
            )
            for draft, _ in checked
        ],
        returning=["id", "idempotency_key"],
        ignore_conflicts_on=["idempotency_key"],  # pragma: no mutate: SQL names ignore case
    )
    entry_ids = {key: entry_id for entry_id, key in inserted}
    lines: list[tuple[int, int, Decimal]] = []
    deltas: dict[int, Decimal] = {}
    kinds: dict[int, str] = {}
    accounts: dict[int, Account] = {}
    for draft, amounts in checked:
        entry_id = entry_ids.get(draft.idempotency_key)
        if entry_id is None:
            continue  # posted before: its lines and balances are there already
        # The amounts are these lines' own (_checked_amounts): strict or not, one length.
        for line, amount in zip(draft.lines, amounts, strict=True):  # pragma: no mutate
            lines.append((entry_id, line.account.id, amount))
            deltas[line.account.id] = deltas.get(line.account.id, ZERO) + amount
            kinds[line.account.id] = line.account.kind
            accounts[line.account.id] = line.account
    # Rounded: _checked_amounts refused any amount with fractions of a cent, so rounding
    # again would only cost time (the same values either way: not mutated).
    columns = ("entry_id", "account_id", "amount")
    copy_rows(JournalLine.__table__, columns, lines, rounded=True)  # pragma: no mutate
    # Lock the accounts in id order first, as journal_post does, so two chunks posting
    # to the same accounts (the income account, say) wait in turn and never deadlock. FOR
    # NO KEY UPDATE, what the UPDATE itself takes: the lines just inserted hold KEY SHARE
    # on their accounts, and a FOR UPDATE wanted by two chunks that both hold KEY SHARE on
    # the income account is a deadlock (seen with two cob workers on 100,000 loans).
    db.session.execute(
        select(Account.id)  # pragma: no mutate: only the rows it locks matter, not what it reads
        .where(Account.id.in_(sorted(deltas)))
        .order_by(Account.id)
        .with_for_update(key_share=True)
    ).all()
    plain = []
    for account_id in sorted(deltas):
        delta, kind = deltas[account_id], kinds[account_id]
        # A debit of members' money goes through _move_balance's guarded UPDATE. Sending
        # more there (`or`, or a zero delta) moves the same balances: not mutated.
        if kind in NO_OVERDRAFT and delta > 0:  # pragma: no mutate
            _move_balance(account_id, delta, kind)
        elif delta != 0:
            plain.append(dict(id=account_id, balance=delta))
    moved = update_rows(Account.__table__, plain, add=["balance"], where="status = 'open'")
    if moved != len(plain):
        raise LedgerError("an account of this posting was closed meanwhile")
    for account in accounts.values():
        # Expiring more than the balance reads the same rows again: not mutated.
        db.session.expire(account, ["balance"])  # pragma: no mutate
    return set(entry_ids)


def accounts_get_or_create(specs: Sequence[dict[str, Any]]) -> dict[str, Account]:
    """`account_get_or_create` for many: the accounts by code, the missing ones created in
    one INSERT that another creator racing us cannot make fail. Each spec has code, kind,
    name and optionally member_id and loan_id."""
    codes = [spec["code"] for spec in specs]
    found = {a.code: a for a in db.session.scalars(select(Account).where(Account.code.in_(codes)))}
    missing = [spec for spec in specs if spec["code"] not in found]
    for spec in missing:
        if spec["kind"] not in ACCOUNT_KINDS:
            raise LedgerError(f"unknown account kind {spec['kind']!r}")
    if missing:
        # An ORM bulk INSERT: the model's defaults (open, empty, made now) fill what a spec
        # leaves out, a member's account and a GL account alike in one batch.
        # The code is an account's only unique key but its id, and PostgreSQL refuses a
        # misspelt one (SQLite ignores the name's case): not mutated.
        db.session.execute(insert_ignoring(Account, ["code"]), missing)  # pragma: no mutate
        found.update(
            (a.code, a)
            for a in db.session.scalars(
                select(Account).where(Account.code.in_([spec["code"] for spec in missing]))
            )
        )
    return found


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
        CursorResult[Any],  # pragma: no mutate: cast() does nothing at run time
        db.session.execute(stmt.execution_options(synchronize_session=False)),
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
        CursorResult[Any],  # pragma: no mutate: cast() does nothing at run time
        db.session.execute(
            update(Account)
            .where(Account.id == account_id, Account.status == "open", Account.balance == 0)
            .values(status="closed")
            .execution_options(synchronize_session=False)  # pragma: no mutate: None is False
        ),
    )
    # Fresh from the row; the rollback or commit below expires it again before any read
    # but its code, so without populate_existing it reads the same (mutation testing).
    account = db.session.get(Account, account_id, populate_existing=True)  # pragma: no mutate
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
    loan's receivables match its schedule; no savings or share account is overdrawn; no
    member's guarantees hold more than their deposits, and an ended loan holds nothing.

    The database does the comparing and sends back only the problems, so a book of
    hundreds of thousands of accounts costs a few grouped scans, not a row per account.
    Money compares in its storage domain (NUMERIC on PostgreSQL, integer cents on
    SQLite), so every comparison is exact."""
    problems = _check_entries()
    wrong = _check_balances()
    problems += [
        Mismatch("balance", f"{code}: cached {cached}, journal {rebuilt}")
        for _, code, cached, rebuilt in wrong
    ]
    if fix and wrong:
        # A bulk UPDATE by primary key (one executemany) writing the values reported; the
        # commit below expires any Account a caller holds, so none reads a stale balance.
        db.session.execute(
            update(Account),
            [{"id": account_id, "balance": rebuilt} for account_id, _, _, rebuilt in wrong],
        )
    problems += _reconcile_loans()
    problems += _check_overdrawn()
    problems += [Mismatch("hold", detail) for detail in holds_problems()]
    if fix:
        db.session.commit()
    return problems


def _journal_sums() -> Subquery:
    """Each account's journal total, for accounts with lines."""
    return (
        select(JournalLine.account_id, func.sum(JournalLine.amount).label("total"))
        .group_by(JournalLine.account_id)
        .subquery("journal_sums")  # pragma: no mutate: an alias's name changes nothing
    )


def _check_entries() -> list[Mismatch]:
    # One scan for both rules; all the unbalanced first, then the one-line ones, as always.
    # No line is zero (a CHECK), so a one-line entry never sums to zero: the sum finds it.
    total = func.sum(JournalLine.amount)
    lines = func.count()
    rows = db.session.execute(
        select(JournalLine.entry_id, total, lines)
        .group_by(JournalLine.entry_id)
        .having(total != 0)
        # Grouped rows come back in key order on both databases at any size a test builds;
        # the ORDER BY makes it a promise (not mutated).
        .order_by(JournalLine.entry_id)  # pragma: no mutate
    ).all()
    unbalanced = [
        Mismatch("entry", f"journal entry {entry_id} sums to {amount}")
        for entry_id, amount, _ in rows
        if amount != 0
    ]
    single = [
        Mismatch("entry", f"journal entry {entry_id} has one line")
        for entry_id, _, count in rows
        if count < 2
    ]
    return unbalanced + single


def _check_balances() -> list[tuple[int, str, Decimal, Decimal]]:
    """(id, code, cached, rebuilt) of every account whose cached balance is not the sum of
    its journal lines, in account order."""
    sums = _journal_sums()
    rebuilt = type_coerce(func.coalesce(sums.c.total, 0), Money())
    rows = db.session.execute(
        select(Account.id, Account.code, Account.balance, rebuilt)
        # The foreign key gives SQLAlchemy this very ON clause (not mutated).
        .outerjoin(sums, sums.c.account_id == Account.id)  # pragma: no mutate
        .where(Account.balance != rebuilt)
        .order_by(Account.id)
    ).all()
    return [
        (account_id, code, cached, round_money(total)) for account_id, code, cached, total in rows
    ]


def _check_overdrawn() -> list[Mismatch]:
    # From the journal, not the cache: a tampered cache must not hide an overdraft.
    total = type_coerce(func.sum(JournalLine.amount), Money())
    rows = db.session.execute(
        select(Account.code, total)
        # The foreign key gives SQLAlchemy this very ON clause (not mutated).
        .join(JournalLine, JournalLine.account_id == Account.id)  # pragma: no mutate
        .where(Account.kind.in_(NO_OVERDRAFT))
        .group_by(Account.id)  # the code follows from the key (PostgreSQL knows it)
        .having(total > 0)
        .order_by(Account.id)  # pragma: no mutate: key order either way, as in _check_entries
    ).all()
    return [
        Mismatch("account", f"{code} is overdrawn: {-round_money(amount)}") for code, amount in rows
    ]


# Receivable account kind -> the schedule column it mirrors.
RECEIVABLE_KINDS = {
    "loan_principal": "principal",
    "loan_interest": "interest",
    "loan_fees": "fees",
    "loan_penalty": "penalty",
}
SETTLED_STATUSES = ("closed", "written_off")


def _reconcile_loans() -> list[Mismatch]:
    """The sub-ledger: every loan's receivables (from the journal) equal what its live
    schedule says is outstanding, component by component; a settled loan owes nothing
    on either side. One row a loan a side, aggregated and compared in the database, which
    returns only the loans with a problem."""
    components = list(RECEIVABLE_KINDS.values())
    owed = (
        select(
            Installment.loan_id,
            # Sums of Money columns, read as Money by the coalesce below.
            *(
                func.sum(
                    getattr(Installment, f"{c}_due") - getattr(Installment, f"{c}_paid")
                ).label(c)
                for c in components
            ),
        )
        .where(Installment.superseded.is_(False))
        .group_by(Installment.loan_id)
        .subquery("owed")  # pragma: no mutate: an alias's name changes nothing
    )
    held = (
        select(
            Account.loan_id,
            # A kind the loan has no lines of sums to NULL, which the coalesce below makes 0.
            *(
                func.sum(case((Account.kind == kind, JournalLine.amount))).label(c)
                for kind, c in RECEIVABLE_KINDS.items()
            ),
        )
        # The foreign key gives SQLAlchemy this very ON clause (not mutated).
        .join(JournalLine, JournalLine.account_id == Account.id)  # pragma: no mutate
        # Narrows the scan only: the CASE picks the kinds, and no loan has a NULL id.
        .where(Account.kind.in_(RECEIVABLE_KINDS))  # pragma: no mutate
        .where(Account.loan_id.is_not(None))  # pragma: no mutate
        .group_by(Account.loan_id)
        .subquery("held")  # pragma: no mutate: an alias's name changes nothing
    )
    # Driven from loans: both sides' loan_id is a foreign key to it, so every loan either
    # side knows of is there (a receivable without a schedule still shows up), and the
    # planner gets one row a loan to estimate, not a union of two aggregates.
    schedule = {c: type_coerce(func.coalesce(owed.c[c], 0), Money()) for c in components}
    books = {c: type_coerce(func.coalesce(held.c[c], 0), Money()) for c in components}
    settled = Loan.status.in_(SETTLED_STATUSES)
    rows = db.session.execute(
        select(
            Loan.id,
            Loan.status,
            Loan.loan_no,
            # Read by position below: the labels name them for a reader (not mutated).
            *(schedule[c].label(f"schedule_{c}") for c in components),  # pragma: no mutate
            *(books[c].label(f"books_{c}") for c in components),  # pragma: no mutate
        )
        # The foreign keys give SQLAlchemy these very ON clauses (not mutated).
        .outerjoin(owed, owed.c.loan_id == Loan.id)  # pragma: no mutate
        .outerjoin(held, held.c.loan_id == Loan.id)  # pragma: no mutate
        .where(
            or_(
                *(schedule[c] != books[c] for c in components),
                and_(settled, or_(*(schedule[c] != 0 for c in components))),
            )
        )
    ).all()
    found: list[tuple[int, str, Mismatch]] = []
    for row in rows:
        loan_id, status, number = row[0], row[1], row[2]
        name = number or f"loan {loan_id}"
        for i, component in enumerate(components):
            owing = round_money(row[3 + i])
            booked = round_money(row[3 + len(components) + i])
            if owing != booked:
                detail = f"{name} {component}: receivable {booked}, schedule outstanding {owing}"
            elif status in SETTLED_STATUSES and owing != 0:
                detail = f"{name} is {status} but still owes {component} {owing}"
            else:
                continue
            found.append((loan_id, component, Mismatch("loan", detail)))
    # Sorted here, not by ORDER BY: the order must not depend on the database's collation.
    # A (loan, component) pair is found once, so sorting whole tuples is the same (not mutated).
    ordered = sorted(found, key=lambda f: (f[0], f[1]))  # pragma: no mutate
    return [mismatch for _, _, mismatch in ordered]
