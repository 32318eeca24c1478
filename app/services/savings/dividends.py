"""The annual dividend on share capital and interest on deposits (SPEC "Savings, shares
and dividends"; issue 20).

Staff enter the year and the rates the AGM declared; `dividend_declare` computes every
member's line (the preview) from the journal, in the close-of-business shape: a chunk of
members, one grouped query for their balances by month, one bulk insert of their lines.
A branch manager who did not declare it approves it (maker-checker); `dividend_post`
pays it as a partitioned job: a chunk of lines locks its members, writes one journal
entry (gross dividend and interest out of the appropriation and expense accounts,
withholding tax to the payable, each member's net to their withdrawable savings), marks
the lines paid and texts each member.

Basis of a member's figure, by the run's method:
- simple: the balance at the year's end;
- weighted: each month's closing balance earns for that month, rate/12 on each of the
  twelve (the same as each month's net contribution earning for the months left in the
  year and the opening balance for all twelve). A negative balance earns nothing.

A line is paid at most once: the chunk reads only lines not yet paid, under the members'
locks, and marks them in the same transaction as the entry; the entry's key names the
run and the first and last line of what it pays, so a retried chunk (whole, or one line
at a time after a failure) can never post an entry another commit already made.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import current_app
from sqlalchemy import case, extract, func, select, type_coerce, update
from sqlalchemy.exc import IntegrityError

from app.batch import Batch, ChunkStats, batch_chunks, batch_run
from app.clock import business_today
from app.csvout import csv_bytes
from app.errors import SaccoError
from app.extensions import db
from app.models import (
    Account,
    DividendLine,
    DividendRun,
    JournalEntry,
    JournalLine,
    Loan,
    Member,
    MpesaRequest,
    StaffUser,
)
from app.models.savings import DIVIDEND_METHODS, DIVIDEND_PAYOUTS
from app.models.types import Money, utcnow
from app.money import ZERO, round_money
from app.selectors.loans import LIVE_STATUSES, loan_list_figures
from app.services.audit import audit_record
from app.services.bulk import copy_rows, update_rows
from app.services.ledger import (
    Draft,
    Line,
    accounts_get_or_create,
    credit,
    debit,
    gl_account,
    journal_post_many,
)
from app.services.locking import lock_row
from app.services.permissions import permission_require
from app.services.savings.products import account_code, account_number, account_product
from app.services.savings.withdrawals import payout_to_mpesa, withdrawal_send_queue
from app.services.sms import Outgoing, sms_queue_many
from app.sms_templates import render_sms

# Ledger kinds the two figures are computed on: share capital, and the member's deposits.
SHARES, DEPOSITS = "share_capital", "savings"
PAYOUT_PRODUCT = "ORD"  # the withdrawable savings the net is credited to
ENTRY_KIND = "dividend"
KEY_PREFIX = "dividend:"  # + "<run>:<first line>-<last line>"
SMS_TEMPLATE = "dividend_paid"
ARREARS_TEMPLATE = "dividend_paid_arrears"  # part of it paid the member's loan arrears
MPESA_TEMPLATE = "dividend_paid_mpesa"  # sent on to the member's M-PESA
FORMATS = ("csv", "xlsx", "pdf")
LIVE = ("draft", "approved", "posting", "posted")
COMPUTING = "computing the preview"  # a run's note until every line is written


class DividendError(SaccoError):
    """A dividend run request that cannot be done; nothing was written."""


@dataclass
class RunStats:
    """What `batch_run` counts into (the job runner's JobStats has the same fields)."""

    records_scanned: int = 0
    records_updated: int = 0
    notifications_sent: int = 0
    notifications_failed: int = 0
    errors: list[str] = field(default_factory=list)
    run_id: str = ""
    workers: int | None = None

    def error(self, what: str) -> None:
        self.errors.append(what)


# -- the figures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Basis:
    """One member's balance over the year of one account kind: at the start, and at the end
    of each of the twelve months (their money, so positive)."""

    opening: Decimal
    month_ends: tuple[Decimal, ...]

    def simple(self) -> Decimal:
        return self.month_ends[-1]

    def weighted_sum(self) -> Decimal:
        """Sum of the twelve month-end balances (never below zero): rate/12 of it earns."""
        return sum((max(b, ZERO) for b in self.month_ends), ZERO)


def balances_by_month(member_ids: Sequence[int], year: int) -> dict[tuple[int, str], Basis]:
    """Each member's share capital and deposits, month by month through `year`, by value
    date: two set queries for all of them (never a query a member). Their accounts first,
    then those accounts' lines by id: named by id, PostgreSQL walks the lines' account
    index (23 ms a chunk of 500 members on a book of 1.4 million lines) where a join on
    the member scanned every line of the journal for each chunk (195 ms)."""
    start, end = date(year, 1, 1), date(year, 12, 31)
    owners: dict[int, tuple[int, str]] = {
        account_id: (member_id, kind)
        for account_id, member_id, kind in db.session.execute(
            select(Account.id, Account.member_id, Account.kind).where(
                Account.member_id.in_(list(member_ids)), Account.kind.in_((SHARES, DEPOSITS))
            )
        )
        if member_id is not None  # always, by the IN: the type does not know it
    }
    if not owners:
        return {}
    # Month 0 is everything before the year: the opening balance.
    month = case(
        (JournalEntry.value_date < start, 0), else_=extract("month", JournalEntry.value_date)
    )
    moves = (
        select(
            JournalLine.account_id.label("account_id"),
            month.label("month"),
            JournalLine.amount.label("amount"),
        )
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .where(JournalLine.account_id.in_(list(owners)), JournalEntry.value_date <= end)
        .subquery("moves")
    )
    total = type_coerce(func.sum(moves.c.amount), Money())
    grouped = db.session.execute(
        select(moves.c.account_id, moves.c.month, total).group_by(moves.c.account_id, moves.c.month)
    ).all()
    rows = [(*owners[account_id], month_no, amount) for account_id, month_no, amount in grouped]
    # Credits are negative in the journal: a member's money is minus the sum.
    sums: dict[tuple[int, str], list[Decimal]] = defaultdict(lambda: [ZERO] * 13)
    for member_id, kind, month_no, amount in rows:
        sums[(member_id, kind)][int(month_no)] -= round_money(amount)
    found: dict[tuple[int, str], Basis] = {}
    for key, moved in sums.items():
        balance, ends = moved[0], []
        for m in range(1, 13):
            balance += moved[m]
            ends.append(balance)
        found[key] = Basis(opening=moved[0], month_ends=tuple(ends))
    return found


@dataclass(frozen=True)
class Figures:
    share_basis: Decimal
    deposit_basis: Decimal
    dividend: Decimal
    interest: Decimal
    tax: Decimal
    net: Decimal


def _earned(basis: Basis | None, rate: Decimal, method: str) -> tuple[Decimal, Decimal]:
    """(the basis shown, the gross earned) on one balance at `rate` percent a year."""
    if basis is None:
        return ZERO, ZERO
    if method == "weighted":
        total = basis.weighted_sum()
        return round_money(total / 12), round_money(total * rate / Decimal(1200))
    year_end = max(basis.simple(), ZERO)
    return round_money(year_end), round_money(year_end * rate / 100)


def figures_for(shares: Basis | None, deposits: Basis | None, run: DividendRun) -> Figures | None:
    """A member's line in `run`, or None when they earn nothing."""
    share_basis, dividend = _earned(shares, run.share_rate, run.method)
    deposit_basis, interest = _earned(deposits, run.deposit_rate, run.method)
    if dividend <= 0 and interest <= 0:
        return None
    tax = round_money(dividend * run.dividend_tax_rate / 100) + round_money(
        interest * run.interest_tax_rate / 100
    )
    return Figures(
        share_basis=share_basis,
        deposit_basis=deposit_basis,
        dividend=dividend,
        interest=interest,
        tax=tax,
        net=dividend + interest - tax,
    )


# -- declare, approve, cancel ---------------------------------------------------------------


def _rate(value: object, what: str) -> Decimal:
    try:
        rate = Decimal(str(value).strip().rstrip("%"))
    except (InvalidOperation, ValueError):
        raise DividendError(f"the {what} rate must be a number, not {value!r}") from None
    if not rate.is_finite() or rate < 0 or rate > 100:
        raise DividendError(f"the {what} rate must be between 0 and 100 percent")
    if rate != rate.quantize(Decimal("0.0001")):
        raise DividendError(f"the {what} rate has more than 4 decimal places")
    return rate


def _staff_name(staff: StaffUser) -> str:
    return f"staff:{staff.email}"


def dividend_members(year: int) -> list[int]:
    """Members with share capital or deposits in the books by the end of `year`."""
    return list(
        db.session.scalars(
            select(Account.member_id)
            .where(Account.member_id.is_not(None), Account.kind.in_((SHARES, DEPOSITS)))
            .distinct()
            .order_by(Account.member_id)
        )
    )


LINE_COLUMNS = (
    "run_id",
    "member_id",
    "share_basis",
    "deposit_basis",
    "dividend",
    "interest",
    "tax",
    "net",
)


def dividend_lines_compute(run: DividendRun, member_ids: Sequence[int]) -> int:
    """Write these members' lines of `run` (a draft) in one bulk insert, in the caller's
    transaction; members who earn nothing get none. How many were written."""
    bases = balances_by_month(member_ids, run.year)
    rows = []
    for member_id in sorted(member_ids):
        found = figures_for(bases.get((member_id, SHARES)), bases.get((member_id, DEPOSITS)), run)
        if found is None:
            continue
        rows.append(
            (
                run.id,
                member_id,
                found.share_basis,
                found.deposit_basis,
                found.dividend,
                found.interest,
                found.tax,
                found.net,
            )
        )
    # Every figure is round_money's already: PostgreSQL takes them as they are.
    copy_rows(DividendLine.__table__, LINE_COLUMNS, rows, rounded=True)
    return len(rows)


def _totals(run: DividendRun) -> None:
    """The run's totals from its lines (one grouped read)."""
    money = [
        type_coerce(func.coalesce(func.sum(getattr(DividendLine, name)), 0), Money())
        for name in ("dividend", "interest", "tax", "net")
    ]
    row = db.session.execute(
        select(func.count(DividendLine.id), *money).where(DividendLine.run_id == run.id)
    ).one()
    run.members = int(row[0])
    run.dividend_gross = round_money(row[1])
    run.interest_gross = round_money(row[2])
    run.tax = round_money(row[3])
    run.net = round_money(row[4])


def _validated_year(year: object) -> int:
    try:
        value = int(str(year).strip())
    except ValueError:
        raise DividendError(f"the year must be a number, not {year!r}") from None
    this_year = business_today().year
    if value < 2000 or value > this_year:
        raise DividendError(f"the year must be between 2000 and {this_year}")
    return value


def dividend_declare(
    *,
    year: int,
    share_rate: object,
    deposit_rate: object,
    method: str,
    payout: str,
    staff: StaffUser,
    resolution_ref: str | None = None,
) -> DividendRun:
    """Declare `year`'s run with the AGM's rates and compute every member's line (the
    preview), status draft. Refused in words (nothing written) for a bad rate, method or
    payout, or a year that has a live run already."""
    permission_require(staff, "dividend.declare")
    year = _validated_year(year)
    shares = _rate(share_rate, "dividend")
    deposits = _rate(deposit_rate, "interest")
    if method not in DIVIDEND_METHODS:
        raise DividendError(f"the method must be {' or '.join(DIVIDEND_METHODS)}")
    if payout not in DIVIDEND_PAYOUTS:
        raise DividendError(f"the payout must be one of {', '.join(DIVIDEND_PAYOUTS)}")
    if shares == 0 and deposits == 0:
        raise DividendError("both rates are zero: there is nothing to pay")
    live = db.session.scalar(
        select(DividendRun.id).where(DividendRun.year == year, DividendRun.status.in_(LIVE))
    )
    if live is not None:
        raise DividendError(f"{year} has a dividend run already (run {live}); cancel it first")
    settings = current_app.config["SETTINGS"]
    ref = (resolution_ref or "").strip()[:60] or None
    run = DividendRun(
        year=year,
        share_rate=shares,
        deposit_rate=deposits,
        method=method,
        payout=payout,
        dividend_tax_rate=Decimal(settings.wht_dividend_rate),
        interest_tax_rate=Decimal(settings.wht_interest_rate),
        status="draft",
        resolution_ref=ref,
        declared_by_id=staff.id,
        declared_at=utcnow(),
        note=COMPUTING,
    )
    db.session.add(run)
    db.session.flush()
    audit_record(
        actor=_staff_name(staff),
        action="dividend.declare",
        object_type="dividend_run",
        object_id=run.id,
        after={
            "year": year,
            "share_rate": str(shares),
            "deposit_rate": str(deposits),
            "method": method,
            "payout": payout,
            "dividend_tax_rate": str(run.dividend_tax_rate),
            "interest_tax_rate": str(run.interest_tax_rate),
            "resolution_ref": ref,
        },
    )
    # The run is committed first (a racing declaration for the year loses on the unique
    # index here); the lines follow a chunk a transaction, as close of business does.
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise DividendError(f"{year} has a dividend run already") from None
    run_id = run.id

    def chunk(ids: Sequence[int], as_of: date, counts: ChunkStats) -> None:
        current = db.session.get(DividendRun, run_id)
        assert current is not None
        counts.records_updated += dividend_lines_compute(current, ids)

    stats = RunStats()
    batch = Batch("dividend-declare", lambda as_of: dividend_members(year), chunk, "member")
    members = dividend_members(year)
    db.session.commit()
    batch_chunks(batch, members, as_of=date(year, 12, 31), stats=stats)
    declared = db.session.get(DividendRun, run_id, populate_existing=True)
    assert declared is not None
    run = declared
    if stats.errors:
        # A preview missing members must not be approved: the run is cancelled, and says why.
        run.status = "cancelled"
        run.note = "; ".join(stats.errors[:5])[:2000]
        db.session.commit()
        raise DividendError(
            f"the preview failed for {len(stats.errors)} member(s): {stats.errors[0]}"
        )
    _totals(run)
    run.note = None
    db.session.commit()
    return run


def _locked_run(run_id: int) -> DividendRun:
    run = lock_row(DividendRun, run_id)
    if run is None:
        raise DividendError(f"no dividend run {run_id}")
    return run


def dividend_approve(*, run_id: int, staff: StaffUser) -> DividendRun:
    """A checker approves a draft run: a branch manager or admin who did not declare it."""
    permission_require(staff, "dividend.approve")
    run = _locked_run(run_id)
    if run.status != "draft":
        db.session.rollback()
        raise DividendError(f"the {run.year} run is {run.status}, not a draft waiting approval")
    if run.declared_by_id == staff.id:
        db.session.rollback()
        raise DividendError("the run must be approved by someone other than who declared it")
    if run.note == COMPUTING:
        # Its lines are written a chunk a transaction: a declaration that stopped half-way
        # leaves a preview short of members, which must never be paid as it stands.
        db.session.rollback()
        raise DividendError("the preview is not complete: cancel the run and declare it again")
    run.status = "approved"
    run.approved_by_id = staff.id
    run.approved_at = utcnow()
    audit_record(
        actor=_staff_name(staff),
        action="dividend.approve",
        object_type="dividend_run",
        object_id=run.id,
        before={"status": "draft"},
        after={
            "status": "approved",
            "year": run.year,
            "members": run.members,
            "net": str(run.net),
            "tax": str(run.tax),
        },
    )
    db.session.commit()
    return run


def dividend_cancel(*, run_id: int, staff: StaffUser) -> DividendRun:
    """Cancel a draft (its lines stay, for the record); the year may be declared again."""
    permission_require(staff, "dividend.declare")
    run = _locked_run(run_id)
    if run.status != "draft":
        db.session.rollback()
        raise DividendError(f"the {run.year} run is {run.status}: only a draft can be cancelled")
    run.status = "cancelled"
    audit_record(
        actor=_staff_name(staff),
        action="dividend.cancel",
        object_type="dividend_run",
        object_id=run.id,
        before={"status": "draft"},
        after={"status": "cancelled", "year": run.year},
    )
    db.session.commit()
    return run


# -- post --------------------------------------------------------------------------------------


def dividend_unpaid_line_ids(as_of: date) -> list[int]:
    """The scan: lines of runs being posted that are not paid yet."""
    return list(
        db.session.scalars(
            select(DividendLine.id)
            .join(DividendRun, DividendRun.id == DividendLine.run_id)
            .where(DividendRun.status == "posting", DividendLine.paid_at.is_(None))
            .order_by(DividendLine.id)
        )
    )


def _payout_accounts(members: dict[int, Any]) -> dict[int, Account]:
    """Each member's withdrawable savings account, opened (in one insert) where missing."""
    product = account_product(PAYOUT_PRODUCT)
    specs = [
        dict(
            code=account_code(product, m.member_no or ""),
            kind=product.ledger_kind,
            name=f"{product.name} {m.member_no}",
            member_id=m.id,
            product_id=product.id,
        )
        for m in members.values()
    ]
    if not product.active:
        # Closed to new accounts: only members who hold one already are paid.
        existing = {
            a.code
            for a in db.session.scalars(
                select(Account).where(Account.code.in_([s["code"] for s in specs]))
            )
        }
        missing = [s["code"] for s in specs if s["code"] not in existing]
        if missing:
            raise DividendError(f"{product.name} is closed to new accounts ({missing[0]})")
    found = accounts_get_or_create(specs)
    # An account opened before products existed belongs to the product from now on.
    db.session.execute(
        update(Account)
        .where(Account.code.in_(list(found)), Account.product_id.is_(None))
        .values(product_id=product.id)
        .execution_options(synchronize_session=False)
    )
    by_code = {s["code"]: s["member_id"] for s in specs}
    return {by_code[code]: account for code, account in found.items()}


def arrears_by_member(
    member_ids: Sequence[int], as_of: date
) -> dict[int, list[tuple[int, Decimal]]]:
    """Each member's live loans with something fell due by `as_of` and unpaid: (loan id,
    that amount), oldest loan first. Two set queries for all of them."""
    loans = db.session.execute(
        select(Loan.id, Loan.member_id)
        .where(Loan.member_id.in_(list(member_ids)), Loan.status.in_(LIVE_STATUSES))
        .order_by(Loan.id)
    ).all()
    figures = loan_list_figures(loan_ids=[loan_id for loan_id, _ in loans], as_of=as_of)
    found: dict[int, list[tuple[int, Decimal]]] = defaultdict(list)
    for loan_id, member_id in loans:
        due = figures[loan_id].due_now if loan_id in figures else ZERO
        if due > 0:
            found[member_id].append((loan_id, due))
    return found


def _arrears_paid(line: DividendLine, loans: list[tuple[int, Decimal]], run: DividendRun) -> None:
    """The part of a line's net credited to the member's deposits pays their loans' arrears,
    oldest loan first, through the one repayment service (penalty, fees, interest,
    principal; oldest installment first), in the chunk's transaction."""
    from app.services.loans.repay import loan_repay  # loans import the savings package

    assert run.value_date is not None
    left = line.net
    for loan_id, due in loans:
        take = min(left, due)
        if take <= 0:
            break
        loan_repay(
            loan_id=loan_id,
            amount=take,
            reference=f"DIV{run.id}-{line.member_id}-{loan_id}",
            value_date=run.value_date,
            source="savings",
            actor="system",
            commit=False,
        )
        left -= take


def dividend_lines_pay(line_ids: Sequence[int]) -> tuple[int, int]:
    """Pay these lines if still unpaid, in the caller's transaction: members locked in id
    order, one journal entry per run, lines marked, members texted. (paid, texted)."""
    member_ids = sorted(
        db.session.scalars(
            select(DividendLine.member_id).where(DividendLine.id.in_(list(line_ids)))
        )
    )
    if not member_ids:
        return 0, 0
    # The members' locks first (every money path takes the member before anything else),
    # then a fresh read of what is still unpaid: a line another worker paid meanwhile is
    # seen paid here and skipped.
    db.session.execute(
        select(Member.id).where(Member.id.in_(member_ids)).order_by(Member.id).with_for_update()
    ).all()
    lines = (
        db.session.execute(
            select(DividendLine)
            .where(DividendLine.id.in_(list(line_ids)), DividendLine.paid_at.is_(None))
            .order_by(DividendLine.id)
            .execution_options(populate_existing=True)
        )
        .scalars()
        .all()
    )
    if not lines:
        return 0, 0
    runs = {
        r.id: r
        for r in db.session.scalars(
            select(DividendRun).where(DividendRun.id.in_({line.run_id for line in lines}))
        )
    }
    members = {
        m.id: m
        for m in db.session.execute(
            select(Member.id, Member.member_no, Member.phone, Member.language).where(
                Member.id.in_([line.member_id for line in lines])
            )
        ).all()
    }
    accounts = _payout_accounts(members)
    product = account_product(PAYOUT_PRODUCT)
    # Arrears first (the run's policy): what the member's loans have fallen behind by is
    # credited to their deposits, which then pay it; the rest goes to savings as usual.
    arrears_first = [
        line.member_id for line in lines if runs[line.run_id].payout == "arrears_first"
    ]
    to_loans: dict[int, Decimal] = {}
    arrears: dict[int, list[tuple[int, Decimal]]] = {}
    deposits: dict[int, Account] = {}
    if arrears_first:
        value_dates = {runs[line.run_id].value_date for line in lines}
        as_of = max(day for day in value_dates if day is not None)
        arrears = arrears_by_member(arrears_first, as_of)
        for line in lines:
            owed = sum((due for _, due in arrears.get(line.member_id, [])), ZERO)
            if runs[line.run_id].payout == "arrears_first" and owed > 0:
                to_loans[line.id] = min(line.net, owed)
        if to_loans:
            owners = {line.member_id for line in lines if line.id in to_loans}
            deposits = {
                a.member_id: a
                for a in db.session.scalars(
                    select(Account).where(Account.member_id.in_(owners), Account.kind == DEPOSITS)
                )
                if a.member_id is not None
            }
    by_run: dict[int, list[DividendLine]] = defaultdict(list)
    for line in lines:
        if runs[line.run_id].status != "posting":
            continue  # not (or no longer) being posted: left for its own run
        by_run[line.run_id].append(line)
    drafts: list[tuple[Draft, list[DividendLine]]] = []
    for run_id, paid in sorted(by_run.items()):
        run = runs[run_id]
        assert run.value_date is not None  # set when posting starts
        dividend = sum((line.dividend for line in paid), ZERO)
        interest = sum((line.interest for line in paid), ZERO)
        tax = sum((line.tax for line in paid), ZERO)
        entry_lines: list[Line] = []
        if dividend > 0:
            entry_lines.append(debit(gl_account("GL-DIVIDENDS"), dividend))
        if interest > 0:
            entry_lines.append(debit(gl_account("GL-INTEREST-EXPENSE"), interest))
        if tax > 0:
            entry_lines.append(credit(gl_account("GL-WHT-PAYABLE"), tax))
        for line in paid:
            loans_part = to_loans.get(line.id, ZERO)
            if loans_part > 0:
                entry_lines.append(credit(deposits[line.member_id], loans_part))
            if line.net - loans_part > 0:
                entry_lines.append(credit(accounts[line.member_id], line.net - loans_part))
        key = f"{KEY_PREFIX}{run.id}:{paid[0].id}-{paid[-1].id}"
        drafts.append(
            (
                Draft(
                    kind=ENTRY_KIND,
                    lines=entry_lines,
                    value_date=run.value_date,
                    idempotency_key=key,
                    description=f"Dividend and interest {run.year} ({len(paid)} members)",
                ),
                paid,
            )
        )
    posted = journal_post_many([draft for draft, _ in drafts])
    entry_ids = dict(
        db.session.execute(
            select(JournalEntry.idempotency_key, JournalEntry.id).where(
                JournalEntry.idempotency_key.in_(list(posted))
            )
        ).all()
    )
    now = utcnow()
    marks: list[dict[str, Any]] = []
    outgoing: list[Outgoing] = []
    for draft, paid in drafts:
        if draft.idempotency_key not in posted:
            continue  # that entry was committed before, with its lines marked: nothing to do
        run = runs[paid[0].run_id]
        for line in paid:
            loans_part = to_loans.get(line.id, ZERO)
            if loans_part > 0:
                _arrears_paid(line, arrears[line.member_id], run)
            member = members[line.member_id]
            paid_to = "arrears" if loans_part > 0 else "savings"
            if run.payout == "mpesa":
                # Credited to savings by the entry above, then sent on by the withdrawal's
                # path in the same transaction (queued once the chunk commits).
                sent = payout_to_mpesa(
                    member_id=line.member_id,
                    member_no=member.member_no or "",
                    phone=member.phone,
                    account=accounts[line.member_id],
                    amount=line.net,
                    requested_by=f"dividend:{run.id}",
                    value_date=run.value_date or now.date(),
                )
                paid_to = "mpesa" if sent is not None else "savings"
            marks.append(
                dict(
                    id=line.id,
                    entry_id=entry_ids[draft.idempotency_key],
                    paid_to=paid_to,
                    paid_at=now,
                )
            )
            template = (
                ARREARS_TEMPLATE
                if loans_part > 0
                else MPESA_TEMPLATE
                if paid_to == "mpesa"
                else SMS_TEMPLATE
            )
            outgoing.append(
                Outgoing(
                    template=template,
                    body=render_sms(
                        template,
                        member.language,
                        year=run.year,
                        dividend=line.dividend,
                        interest=line.interest,
                        tax=line.tax,
                        net=line.net - loans_part,
                        account=account_number(member.member_no or "", product),
                        **({"amount": loans_part} if loans_part > 0 else {}),
                    ),
                    phone=member.phone,
                    idempotency_key=f"{KEY_PREFIX}{run.id}:{line.member_id}",
                    member_id=line.member_id,
                    language=member.language,
                )
            )
    update_rows(DividendLine.__table__, marks)
    for line in lines:
        db.session.expire(line)
    queued = sms_queue_many(outgoing)
    return len(marks), len(queued)


def _post_chunk(line_ids: Sequence[int], as_of: date, stats: ChunkStats) -> None:
    paid, texted = dividend_lines_pay(line_ids)
    stats.records_updated += paid
    stats.notifications_sent += texted


DIVIDEND_POST = Batch("dividend-post", dividend_unpaid_line_ids, _post_chunk, "dividend line")


def dividend_post(*, run_id: int, value_date: date, workers: int | None = None) -> DividendRun:
    """Pay an approved run (or finish one whose posting stopped) as of `value_date`.

    Returns the run: "posted" when every line is paid; still "posting", with the first
    errors in its note, when some failed (run it again to finish them; nothing is paid
    twice)."""
    run = _locked_run(run_id)
    if run.status not in ("approved", "posting"):
        db.session.rollback()
        raise DividendError(f"the {run.year} run is {run.status}: only an approved run is posted")
    if value_date <= date(run.year, 12, 31):
        db.session.rollback()
        raise DividendError(f"the value date must be after the end of {run.year}")
    if run.status == "posting" and run.value_date not in (None, value_date):
        db.session.rollback()
        raise DividendError(f"the run is being posted as of {run.value_date}; use that date")
    if run.status == "approved":
        audit_record(
            actor="system",
            action="dividend.post",
            object_type="dividend_run",
            object_id=run.id,
            before={"status": "approved"},
            after={"status": "posting", "value_date": value_date.isoformat()},
        )
    run.status = "posting"
    run.value_date = value_date
    db.session.commit()
    stats = RunStats()
    batch_run(DIVIDEND_POST, as_of=value_date, stats=stats, workers=workers)
    # Payouts by M-PESA written by the chunks, committed: send them (the payments sweep
    # sends any whose queueing is lost).
    for request_id in db.session.scalars(
        select(MpesaRequest.id).where(
            MpesaRequest.requested_by == f"dividend:{run_id}", MpesaRequest.status == "pending"
        )
    ).all():
        withdrawal_send_queue(request_id)
    run = _locked_run(run_id)
    unpaid = db.session.scalar(
        select(func.count(DividendLine.id)).where(
            DividendLine.run_id == run_id, DividendLine.paid_at.is_(None)
        )
    )
    if unpaid == 0:
        run.status = "posted"
        run.posted_at = utcnow()
        run.note = None
    else:
        run.note = (f"{unpaid} not paid yet: " + "; ".join(stats.errors[:5]))[:2000]
    db.session.commit()
    return run


# -- report ------------------------------------------------------------------------------------


REPORT_HEADER = (
    "member_no",
    "name",
    "share_basis",
    "deposit_basis",
    "dividend",
    "interest",
    "tax",
    "net",
    "paid_to",
    "entry_id",
    "paid_at",
)


@dataclass(frozen=True)
class JournalTotals:
    """What the run's entries moved: the reconciliation side of the report."""

    dividend: Decimal
    interest: Decimal
    tax: Decimal
    net: Decimal


def dividend_journal_totals(run_id: int) -> JournalTotals:
    """Sums of the run's journal entries by the accounts they touched: the dividends and
    interest expense debited, the tax payable credited, and the members' savings credited."""
    amount = type_coerce(func.sum(JournalLine.amount), Money())
    rows = db.session.execute(
        select(Account.code, Account.kind, amount)
        .select_from(JournalLine)
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .join(Account, Account.id == JournalLine.account_id)
        .where(
            JournalEntry.kind == ENTRY_KIND,
            JournalEntry.idempotency_key.like(f"{KEY_PREFIX}{run_id}:%"),
        )
        .group_by(Account.code, Account.kind)
    ).all()
    sums = {"dividend": ZERO, "interest": ZERO, "tax": ZERO, "net": ZERO}
    for code, _kind, total in rows:
        total = round_money(total)
        if code == "GL-DIVIDENDS":
            sums["dividend"] += total
        elif code == "GL-INTEREST-EXPENSE":
            sums["interest"] += total
        elif code == "GL-WHT-PAYABLE":
            sums["tax"] -= total
        else:
            sums["net"] -= total
    return JournalTotals(**sums)


def _report_rows(run: DividendRun) -> list[Any]:
    rows = db.session.execute(
        select(
            Member.member_no,
            Member.name,
            DividendLine.share_basis,
            DividendLine.deposit_basis,
            DividendLine.dividend,
            DividendLine.interest,
            DividendLine.tax,
            DividendLine.net,
            DividendLine.paid_to,
            DividendLine.entry_id,
            DividendLine.paid_at,
        )
        .join(Member, Member.id == DividendLine.member_id)
        .where(DividendLine.run_id == run.id)
        .order_by(DividendLine.member_id)
    ).all()
    return list(rows)


def _plain(amount: Decimal) -> str:
    return f"{round_money(amount):.2f}"


def dividend_report(run_id: int, fmt: str) -> bytes:
    """The run's lines, a totals row and the journal's totals under it (equal once posted):
    CSV, XLSX or PDF."""
    if fmt not in FORMATS:
        raise DividendError(f"the report format must be one of {', '.join(FORMATS)}")
    run = db.session.get(DividendRun, run_id)
    if run is None:
        raise DividendError(f"no dividend run {run_id}")
    rows = _report_rows(run)
    journal = dividend_journal_totals(run.id)
    totals = (run.dividend_gross, run.interest_gross, run.tax, run.net)
    title = (
        f"Dividend run {run.id}: {run.year}, {run.method}, shares {run.share_rate}%, "
        f"deposits {run.deposit_rate}%, tax {run.dividend_tax_rate}%/{run.interest_tax_rate}%, "
        f"{run.status}"
    )
    if fmt == "csv":
        out: list[tuple[object, ...]] = [REPORT_HEADER]
        out += [
            (
                no,
                name,
                *(_plain(v) for v in (sb, db_, d, i, t, n)),
                paid_to or "",
                entry or "",
                paid_at.isoformat() if paid_at else "",
            )
            for no, name, sb, db_, d, i, t, n, paid_to, entry, paid_at in rows
        ]
        out.append(("TOTAL", f"{run.members} members", "", "", *(_plain(v) for v in totals)))
        out.append(
            (
                "JOURNAL",
                "posted entries",
                "",
                "",
                *(
                    _plain(v)
                    for v in (journal.dividend, journal.interest, journal.tax, journal.net)
                ),
            )
        )
        return csv_bytes(out, bom=True)
    if fmt == "xlsx":
        return _xlsx(title, rows, totals, journal, run.members)
    return _pdf(title, rows, totals, journal, run.members)


def _xlsx(
    title: str,
    rows: list[Any],
    totals: tuple[Decimal, ...],
    journal: JournalTotals,
    members: int,
) -> bytes:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("Dividends")
    sheet.append([title])
    sheet.append(list(REPORT_HEADER))
    for no, name, *money, paid_to, entry, paid_at in rows:
        sheet.append(
            [
                no,
                name,
                *(float(round_money(v)) for v in money),  # a number Excel can add up
                paid_to or "",
                entry or "",
                paid_at.replace(tzinfo=None) if paid_at else "",
            ]
        )
    sheet.append(["TOTAL", f"{members} members", None, None, *(float(v) for v in totals)])
    sheet.append(
        [
            "JOURNAL",
            "posted entries",
            None,
            None,
            *(float(v) for v in (journal.dividend, journal.interest, journal.tax, journal.net)),
        ]
    )
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _pdf(
    title: str,
    rows: list[Any],
    totals: tuple[Decimal, ...],
    journal: JournalTotals,
    members: int,
) -> bytes:
    from fpdf import FPDF

    from app.services.statements import _fit, _latin1

    # Kept out of mutation: the page, fonts, widths and alignment (no test reads where or
    # how a word is drawn; the report test reads the words drawn, in order). Left
    # uncompressed so that a test, or an auditor, can read them.
    # Member, name, 2 bases, 4 figures: 196 mm.
    widths = (22, 50, 22, 22, 20, 20, 18, 22)  # pragma: no mutate
    pdf = FPDF(format="A4")  # pragma: no mutate
    pdf.set_compression(False)  # pragma: no mutate
    pdf.set_auto_page_break(auto=True, margin=12)  # pragma: no mutate
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 11)  # pragma: no mutate
    pdf.multi_cell(0, 6, _latin1(title), new_x="LMARGIN", new_y="NEXT")  # pragma: no mutate
    pdf.set_font("Helvetica", "B", 8)  # pragma: no mutate
    heads = ("Member", "Name", "Shares", "Deposits", "Dividend", "Interest", "Tax", "Net")
    for width, head in zip(widths, heads, strict=True):  # pragma: no mutate
        align = "L" if head in heads[:2] else "R"  # pragma: no mutate
        pdf.cell(width, 5, head, border="B", align=align)  # pragma: no mutate
    pdf.ln()
    pdf.set_font("Helvetica", "", 8)  # pragma: no mutate

    def line(cells: Sequence[str]) -> None:
        for i, (width, value) in enumerate(zip(widths, cells, strict=True)):  # pragma: no mutate
            pdf.cell(width, 4, value, align="L" if i < 2 else "R")  # pragma: no mutate
        pdf.ln()

    for no, name, *money, _paid_to, _entry, _paid_at in rows:
        line(
            [
                str(no),
                _fit(pdf, _latin1(str(name)), widths[1] - 2),
                *(f"{round_money(v):,.2f}" for v in money),
            ]
        )
    pdf.set_font("Helvetica", "B", 8)  # pragma: no mutate
    line(["TOTAL", f"{members} members", "", "", *(f"{v:,.2f}" for v in totals)])
    line(
        [
            "JOURNAL",
            "posted entries",
            "",
            "",
            *(f"{v:,.2f}" for v in (journal.dividend, journal.interest, journal.tax, journal.net)),
        ]
    )
    return bytes(pdf.output())
