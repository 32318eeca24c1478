"""Interest on savings (SPEC "The cooperative's own money"; issue 20): accrued daily on
the closing balance, posted at the end of each of the product's periods, withholding tax
deducted, in the close-of-business shape (`app.batch`).

For an account whose product has a rate and a period, a period's interest is

    round_money(sum over each day of the period of max(closing balance, 0) x rate/100/365)

where a day's closing balance is everything on the account with a value date up to and
including that day (the journal, not the cached balance: a payment keyed to an earlier
day counts on that day). Periods are calendar months, quarters (Jan-Mar, ...) or years.

A period is posted once it is over: its last day is before the run's as-of date (the
nightly run for 1 July posts June). What a run posts is every period of the account over
by its as-of date and after the last one posted (for an account never paid, from the
period its first movement falls in), so a missed night or a replay for an earlier date
fills in what is missing and nothing else; the periods a run posts in one go compound as
nightly runs would have. `InterestPosting` (unique account and period end) is what makes
each at most once, whichever run or worker gets there first. An account that earned
nothing in a period gets a posting of zeros: the period is known done and is not computed
again every night. A posting is never recomputed: money keyed to a day of a period
already paid (a late back-dated entry) earns from the next period on.

Each chunk posts one journal entry per period end (one, on an ordinary night): Dr interest
expense the gross, Cr withholding tax payable the tax, Cr each account its net; value
date the period's last day, so the statement shows it in its period and the next period
earns on it.

The rate has no history: it is the product's rate when the run posts. So that switching
a rate on (say on deposits, rate 0 since the first release) does not pay every period since
the members joined, the periods that earn end on or after the day staff last changed the
product's rate or period (its `account_product.update` audit row).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import exists, func, select, type_coerce
from sqlalchemy.orm import lazyload

from app.batch import Batch, ChunkStats, batch_run
from app.clock import business_date
from app.extensions import db
from app.models import Account, AccountProduct, AuditLog, InterestPosting, JournalEntry, JournalLine
from app.models.types import Money, utcnow
from app.money import ZERO, round_money
from app.services.bulk import insert_returning, update_rows
from app.services.ledger import Draft, credit, debit, gl_account, journal_post_many

JOB_NAME = "savings-interest"
DAYS_IN_YEAR = Decimal(365)  # the brief's convention: rate/100/365 a day, leap years too
MONTHS_IN_PERIOD = {"monthly": 1, "quarterly": 3, "yearly": 12}


def period_of(day: date, period: str) -> tuple[date, date]:
    """The (first, last) day of the `period` ("monthly", "quarterly", "yearly") `day` is in."""
    months = MONTHS_IN_PERIOD[period]
    first_month = (day.month - 1) // months * months + 1
    start = date(day.year, first_month, 1)
    return start, _next_start(start, months) - timedelta(days=1)


def _next_start(start: date, months: int) -> date:
    month = start.month - 1 + months
    return date(start.year + month // 12, month % 12 + 1, 1)


def last_period_ended(as_of: date, period: str) -> tuple[date, date]:
    """The latest period whose last day is before `as_of` (the run for 1 July: June)."""
    current_start, _ = period_of(as_of, period)
    return period_of(current_start - timedelta(days=1), period)


def periods_between(first: date, last_end: date, period: str) -> list[tuple[date, date]]:
    """The periods from the one `first` is in to the one ending `last_end`, in order."""
    found = []
    start, end = period_of(first, period)
    while end <= last_end:
        found.append((start, end))
        start, end = period_of(end + timedelta(days=1), period)
    return found


def wht_rate() -> Decimal:
    """Withholding tax on interest, percent (settings WHT_INTEREST_PERCENT)."""
    return Decimal(current_app.config["SETTINGS"].wht_interest_rate)


def interest_for(balance_days: Decimal, rate: Decimal) -> Decimal:
    """Gross interest on a period's sum of daily closing balances at `rate` % a year."""
    return round_money(balance_days * rate / 100 / DAYS_IN_YEAR)


def tax_on(gross: Decimal, rate: Decimal) -> Decimal:
    return round_money(gross * rate / 100)


def _earning_products() -> list[AccountProduct]:
    return list(
        db.session.scalars(
            select(AccountProduct)
            .where(AccountProduct.interest_rate > 0, AccountProduct.interest_period != "none")
            .order_by(AccountProduct.id)
        )
    )


def rate_floors(products: Sequence[AccountProduct]) -> dict[int, date]:
    """For each product whose rate or period staff have changed, the business day of the
    latest change: periods ending before it do not earn at today's rate."""
    by_code = {p.code: p.id for p in products}
    if not by_code:
        return {}
    floors: dict[int, date] = {}
    rows = db.session.execute(
        select(AuditLog.object_id, AuditLog.at, AuditLog.before, AuditLog.after)
        .where(
            AuditLog.action == "account_product.update",
            AuditLog.object_id.in_(list(by_code)),
        )
        .order_by(AuditLog.id)
    ).all()
    for code, at, before, after in rows:
        before, after = before or {}, after or {}
        changed = any(
            name in after and not _same(after[name], before.get(name))
            for name in ("interest_rate", "interest_period")
        )
        if changed:
            floors[by_code[code]] = business_date(at)
    return floors


def _same(one: object, other: object) -> bool:
    """Audited values are text: "3" and "3.0000" are the same rate (a form that sends a
    product's terms back unchanged changes nothing)."""
    try:
        return Decimal(str(one)) == Decimal(str(other))
    except ArithmeticError:
        return str(one) == str(other)


def interest_due_ids(as_of: date) -> list[int]:
    """Open accounts of products that pay interest, with a movement on or before their
    product's last period ended by `as_of`, and that period not posted yet (the chunk
    posts it and any earlier period missing)."""
    ids: list[int] = []
    for product in _earning_products():
        _, last_end = last_period_ended(as_of, product.interest_period)
        moved = (
            select(JournalLine.id)
            .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
            .where(JournalLine.account_id == Account.id, JournalEntry.value_date <= last_end)
        )
        posted = select(InterestPosting.id).where(
            InterestPosting.account_id == Account.id, InterestPosting.period_end == last_end
        )
        ids += db.session.scalars(
            select(Account.id).where(
                Account.product_id == product.id,
                Account.status == "open",
                exists(moved),
                ~exists(posted),
            )
        )
    return sorted(ids)


@dataclass(frozen=True)
class PeriodInterest:
    """One account's interest for one period, before it is written."""

    account_id: int
    member_id: int | None
    start: date
    end: date
    balance_days: Decimal
    gross: Decimal
    tax: Decimal

    @property
    def net(self) -> Decimal:
        return self.gross - self.tax


def balance_days_in(
    opening: Decimal, movements: Sequence[tuple[date, Decimal]], start: date, end: date
) -> tuple[Decimal, Decimal]:
    """(sum of max(closing balance, 0) over each day from `start` to `end`, the closing
    balance of `end`), the balance being `opening` (the close of the day before `start`)
    moved by `movements` (day, amount, sorted by day, all within the period). Walked by
    the days between movements, not day by day: the same sum."""
    total = ZERO
    balance = opening
    day = start
    for moved_on, amount in movements:
        if moved_on > day:
            total += max(balance, ZERO) * (moved_on - day).days
            day = moved_on
        balance += amount
    total += max(balance, ZERO) * ((end - day).days + 1)
    return total, balance


def _summed() -> Any:
    # In the column's type: SQLite keeps money as integer cents, and a bare SUM of them
    # would come back in cents.
    return type_coerce(func.sum(JournalLine.amount), Money())


def accounts_interest(
    account_ids: Sequence[int], *, as_of: date
) -> tuple[list[Account], list[PeriodInterest]]:
    """Lock these accounts (id order) and compute the interest of each period of theirs
    ended by `as_of` and not posted yet, in a few set queries for all of them."""
    accounts = list(
        db.session.scalars(
            select(Account)
            .where(Account.id.in_(sorted(account_ids)), Account.status == "open")
            .order_by(Account.id)
            # The lock journal_post_many takes itself (FOR NO KEY UPDATE): taken first
            # here, in id order, so two runs on the same accounts wait in turn.
            .with_for_update(key_share=True, of=Account)
            .options(lazyload("*"))  # not the account's eager loads: its row is enough
            .execution_options(populate_existing=True)
        )
    )
    products = {p.id: p for p in _earning_products()}
    accounts = [a for a in accounts if a.product_id in products]
    if not accounts:
        return [], []
    ids = [a.id for a in accounts]
    floors = rate_floors(list(products.values()))
    first_moves = dict(
        db.session.execute(
            select(JournalLine.account_id, func.min(JournalEntry.value_date))
            .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
            .where(JournalLine.account_id.in_(ids))
            .group_by(JournalLine.account_id)
        ).all()
    )
    last_posted: dict[int, date] = dict(
        db.session.execute(
            select(InterestPosting.account_id, func.max(InterestPosting.period_end))
            .where(InterestPosting.account_id.in_(ids))
            .group_by(InterestPosting.account_id)
        ).all()
    )
    wanted: dict[int, list[tuple[date, date]]] = {}
    for account in accounts:
        product = products[account.product_id]  # type: ignore[index]
        first = first_moves.get(account.id)
        if first is None:
            continue
        floor = floors.get(product.id)
        if floor is not None:
            first = max(first, floor)
        _, last_end = last_period_ended(as_of, product.interest_period)
        # Only after the last period paid, and from its next day: a product moved from
        # monthly to quarterly pays the quarter from where the months stopped, never a
        # day twice.
        paid_to = last_posted.get(account.id)
        if paid_to is not None:
            first = max(first, paid_to + timedelta(days=1))
        periods = [
            (start if paid_to is None else max(start, paid_to + timedelta(days=1)), end)
            for start, end in periods_between(first, last_end, product.interest_period)
        ]
        if periods:
            wanted[account.id] = periods
    if not wanted:
        return accounts, []
    window_start = min(periods[0][0] for periods in wanted.values())
    window_end = max(periods[-1][1] for periods in wanted.values())
    chosen = sorted(wanted)
    # A member account's balance is what the SACCO owes it: its credits, so minus the
    # journal's sum (negated below, once read).
    opening: dict[int, Decimal] = dict(
        db.session.execute(
            select(JournalLine.account_id, _summed())
            .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
            .where(JournalLine.account_id.in_(chosen), JournalEntry.value_date < window_start)
            .group_by(JournalLine.account_id)
        ).all()
    )
    moves: dict[int, list[tuple[date, Decimal]]] = {a: [] for a in chosen}
    for account_id, day, amount in db.session.execute(
        select(JournalLine.account_id, JournalEntry.value_date, _summed())
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .where(
            JournalLine.account_id.in_(chosen),
            JournalEntry.value_date >= window_start,
            JournalEntry.value_date <= window_end,
        )
        .group_by(JournalLine.account_id, JournalEntry.value_date)
        .order_by(JournalLine.account_id, JournalEntry.value_date)
    ):
        moves[account_id].append((day, -round_money(amount)))
    tax_rate = wht_rate()
    by_id = {a.id: a for a in accounts}
    found: list[PeriodInterest] = []
    for account_id in chosen:
        account = by_id[account_id]
        rate = products[account.product_id].interest_rate  # type: ignore[index]
        balance = -round_money(opening.get(account_id) or ZERO)
        pending = moves[account_id]
        i = 0
        for start, end in wanted[account_id]:
            # Bring the balance to the close of the day before `start`.
            while i < len(pending) and pending[i][0] < start:
                balance += pending[i][1]
                i += 1
            j = i
            while j < len(pending) and pending[j][0] <= end:
                j += 1
            total, balance = balance_days_in(balance, pending[i:j], start, end)
            i = j
            gross = interest_for(total, rate)
            earned = PeriodInterest(
                account_id=account_id,
                member_id=account.member_id,
                start=start,
                end=end,
                balance_days=total,
                gross=gross,
                tax=tax_on(gross, tax_rate),
            )
            found.append(earned)
            # Credited on the period's last day, after its close: the next periods of this
            # run earn on it, as they would had each night run (it is not in the journal
            # read above yet).
            balance += earned.net
    return accounts, found


def interest_post(account_ids: Sequence[int], *, as_of: date) -> int:
    """Post the interest of these accounts' periods ended by `as_of` and not posted yet,
    in the caller's transaction (the batch's chunk commits). How many accounts were
    credited (a posting of zeros records the period, credits nothing)."""
    accounts, found = accounts_interest(account_ids, as_of=as_of)
    if not found:
        return 0
    now = utcnow()
    # The unique key decides first: a period another run recorded meanwhile comes back
    # with nothing, and only what this insert wrote is paid.
    written = insert_returning(
        InterestPosting.__table__,
        [
            dict(
                account_id=p.account_id,
                member_id=p.member_id,
                period_start=p.start,
                period_end=p.end,
                balance_days=p.balance_days,
                gross=p.gross,
                tax=p.tax,
                net=p.net,
                created_at=now,  # given: the unnest() insert knows no Python default
            )
            for p in found
        ],
        returning=["id", "account_id", "period_end"],
        ignore_conflicts_on=["account_id", "period_end"],
    )
    row_of = {(account_id, end): row_id for row_id, account_id, end in written}
    paying = [p for p in found if (p.account_id, p.end) in row_of and p.gross > 0]
    if not paying:
        return 0
    by_id = {a.id: a for a in accounts}
    expense, wht = gl_account("GL-INTEREST-EXPENSE"), gl_account("GL-WHT-PAYABLE")
    drafts: list[tuple[Draft, list[PeriodInterest]]] = []
    for end in sorted({p.end for p in paying}):
        group = [p for p in paying if p.end == end]
        gross = sum((p.gross for p in group), ZERO)
        tax = sum((p.tax for p in group), ZERO)
        lines = [debit(expense, gross)]
        if tax > 0:
            lines.append(credit(wht, tax))
        lines += [credit(by_id[p.account_id], p.net) for p in group if p.net > 0]
        posting_ids = sorted(row_of[(p.account_id, p.end)] for p in group)
        # The postings' ids were made by this insert, so the key is new: it names the
        # entry, the postings' unique key is what keeps each period once.
        key = f"savings-interest:{end.isoformat()}:{posting_ids[0]}-{posting_ids[-1]}"
        drafts.append(
            (
                Draft(
                    kind="savings_interest",
                    lines=lines,
                    value_date=end,
                    idempotency_key=key,
                    # What each member's statement shows beside their net.
                    description=f"Interest to {end.isoformat()}, net of withholding tax",
                ),
                group,
            )
        )
    journal_post_many([draft for draft, _ in drafts])
    entry_ids = dict(
        db.session.execute(
            select(JournalEntry.idempotency_key, JournalEntry.id).where(
                JournalEntry.idempotency_key.in_([d.idempotency_key for d, _ in drafts])
            )
        ).all()
    )
    update_rows(
        InterestPosting.__table__,
        [
            dict(id=row_of[(p.account_id, p.end)], entry_id=entry_ids[draft.idempotency_key])
            for draft, group in drafts
            for p in group
        ],
    )
    return len({p.account_id for p in paying})


def _interest_chunk(account_ids: Sequence[int], as_of: date, stats: ChunkStats) -> None:
    stats.records_updated += interest_post(account_ids, as_of=as_of)


SAVINGS_INTEREST = Batch(JOB_NAME, interest_due_ids, _interest_chunk, "account")


# `stats` is the runner's JobStats (workers.runner): app/ never imports workers/.
def savings_interest_job(*, as_of: date, stats: Any) -> None:
    """Interest on savings: every period ended and not posted, net of withholding tax.
    records_scanned counts the accounts due, records_updated those credited."""
    batch_run(SAVINGS_INTEREST, as_of=as_of, stats=stats)
