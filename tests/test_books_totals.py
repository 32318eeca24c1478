"""Closed months read from their monthly totals: every figure of `chart_balances` stays
the sum of its journal lines, for any window, before and after the totals are built, and
when a month is reopened, posted into and closed again."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from flask import Flask
from sqlalchemy import func, select, update

from app.extensions import db
from app.models import Account, JournalEntry, JournalLine, Loan
from app.models.books import JournalMonthTotal
from app.services.books import (
    chart_balances,
    chart_ensure,
    chart_mapping,
    journal_manual,
    period_close,
    period_reopen,
)
from app.services.books.totals import journal_totals_refresh, usable_months
from app.services.ledger import gl_account
from tests.factories import make_member
from tests.loan_factories import make_loan, make_product, make_staff, run_job

D = Decimal
WINDOWS = [
    (None, date(2026, 3, 31)),
    (None, date(2026, 4, 15)),
    (date(2026, 1, 15), date(2026, 4, 30)),
    (date(2026, 1, 31), date(2026, 3, 31)),
    (date(2026, 2, 10), date(2026, 2, 20)),
    (date(2025, 12, 31), date(2026, 2, 28)),
    (date(2026, 2, 28), date(2026, 4, 30)),
]


def _plain(as_of: date, since: date | None, excluded: tuple[str, ...] = ()) -> dict[int, Decimal]:
    """The same figures summed straight from the journal lines, account by account."""
    stmt = (
        select(Account.kind, Account.code, Loan.product_id, func.sum(JournalLine.amount))
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .join(Account, Account.id == JournalLine.account_id)
        .outerjoin(Loan, Loan.id == Account.loan_id)
        .where(JournalEntry.value_date <= as_of)
        .group_by(Account.kind, Account.code, Loan.product_id)
    )
    if since is not None:
        stmt = stmt.where(JournalEntry.value_date > since)
    if excluded:
        stmt = stmt.where(JournalEntry.kind.not_in(excluded))
    mapping = chart_mapping()
    sums: dict[int, Decimal] = {}
    for kind, code, product_id, amount in db.session.execute(stmt):
        line = mapping.line_for(kind, product_id, code)
        sums[line.id] = sums.get(line.id, D(0)) + amount
    return {line: amount for line, amount in sums.items() if amount}


def _figures(as_of: date, since: date | None, excluded: tuple[str, ...] = ()) -> dict[int, Decimal]:
    found = chart_balances(as_of=as_of, since=since, exclude_kinds=excluded)
    return {line: amount for line, amount in found.items() if amount}


def _every_window_is_the_journals() -> None:
    for since, as_of in WINDOWS:
        assert _figures(as_of, since) == _plain(as_of, since), (since, as_of)
        assert _figures(as_of, since, ("journal",)) == _plain(as_of, since, ("journal",))


def _book() -> None:
    """Four months of postings: deposits, loans of a product (its own chart line), and
    general journal entries on several days of each month."""
    chart_ensure()
    for code in ("GL-BANK", "GL-INCOME-FEES", "GL-INTEREST-EXPENSE"):
        gl_account(code)  # the general-ledger accounts the entries post to
    manager = make_staff("branch_manager")
    product = make_product("V1", interest_method="flat")
    make_loan(product=product, amount=10_000, on=date(2026, 1, 20))
    make_loan(product=product, amount=4_000, on=date(2026, 3, 3))
    make_member(savings=2500)
    for month in (1, 2, 3, 4):
        for day, amount in ((1, 700), (15, 1300), (28, 90)):
            journal_manual(
                lines=[("GL-BANK", D(amount * month)), ("GL-INCOME-FEES", D(-amount * month))],
                value_date=date(2026, month, day),
                description=f"fees {month}/{day}",
                actor=manager,
            )
    journal_manual(
        lines=[("GL-INTEREST-EXPENSE", D("333.33")), ("GL-BANK", D("-333.33"))],
        value_date=date(2026, 2, 14),
        description="interest paid",
        actor=manager,
    )


def test_closed_months_come_from_their_totals_and_every_figure_is_the_journals(
    app: Flask,
) -> None:
    _book()
    _every_window_is_the_journals()  # nothing summed yet: all from the lines
    manager = make_staff("branch_manager")
    for month in (1, 2, 3):
        period_close(month=date(2026, month, 1), actor=manager)

    assert journal_totals_refresh() == [date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31)]
    assert usable_months() == [date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31)]
    assert journal_totals_refresh() == []  # summed once
    _every_window_is_the_journals()
    # The totals are what a closed month is read from: a cent changed in February's shows.
    fees = chart_mapping().by_key["income_fees"].id
    db.session.execute(
        update(JournalMonthTotal)
        .where(
            JournalMonthTotal.month_end == date(2026, 2, 28),
            JournalMonthTotal.kind == "income_fees",
        )
        .values(amount=JournalMonthTotal.amount - D("0.01"))
    )
    assert chart_balances(as_of=date(2026, 4, 30))[fees] == _plain(date(2026, 4, 30), None)[
        fees
    ] - D("0.01")
    # A window inside February reads its lines, not the month's totals.
    assert _figures(date(2026, 2, 20), date(2026, 2, 10)) == _plain(
        date(2026, 2, 20), date(2026, 2, 10)
    )
    db.session.rollback()


def test_a_reopened_month_is_read_from_its_lines_until_it_is_summed_again(app: Flask) -> None:
    _book()
    manager, admin = make_staff("branch_manager"), make_staff("admin")
    for month in (1, 2, 3):
        period_close(month=date(2026, month, 1), actor=manager)
    journal_totals_refresh()

    period_reopen(month=date(2026, 3, 1), actor=admin, reason="a missed bank charge")
    assert usable_months() == [date(2026, 1, 31), date(2026, 2, 28)]
    journal_manual(
        lines=[("GL-INTEREST-EXPENSE", D("41.50")), ("GL-BANK", D("-41.50"))],
        value_date=date(2026, 3, 20),
        description="bank charge",
        actor=manager,
    )
    _every_window_is_the_journals()
    # Closed again: March's totals were built under the close that was undone.
    period_close(month=date(2026, 3, 1), actor=manager)
    assert usable_months() == [date(2026, 1, 31), date(2026, 2, 28)]
    _every_window_is_the_journals()

    assert journal_totals_refresh() == [date(2026, 3, 31)]
    assert usable_months() == [date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31)]
    _every_window_is_the_journals()


def test_with_nothing_closed_nothing_is_summed(app: Flask) -> None:
    _book()

    assert journal_totals_refresh() == []
    assert usable_months() == []
    assert db.session.scalar(select(func.count()).select_from(JournalMonthTotal)) == 0
    _every_window_is_the_journals()


def test_the_nightly_books_job_sums_the_months_closed_since(app: Flask) -> None:
    _book()
    period_close(month=date(2026, 1, 1), actor=make_staff("branch_manager"))

    run_job("books-kpis", date(2026, 2, 10))

    assert usable_months() == [date(2026, 1, 31)]
    _every_window_is_the_journals()
