"""The SACCO's KPIs read off the books, written nightly to kpi_snapshots so the dashboard
reads a few rows instead of a million journal lines.

Each value is a ratio (0.1234 is 12.34%), kept to six places; one that has no meaning on
a day (nothing to divide by) is not written for it.

- portfolio_yield: interest income of the fiscal year to date (chart line 4100) over the
  average principal outstanding (1210, at the end of last year and of each month since,
  and on the day), annualised by 365 over the days elapsed. Interest is recognised in
  full when a loan is paid out (app/services/loans/disburse.py), so the yield runs ahead
  of the interest earned early in a loan's life.
- cost_to_income: expenses over income of the year to date (5000 over 4000); the
  year-end close is left out, as in the income statement.
- par30: principal of loans more than 30 days late over all principal outstanding, from
  `portfolio_at_risk` (days past due as the loan-arrears job left them, as the
  dashboard's PAR30 and the portfolio snapshot read them).
- npl_ratio: principal of non-performing loans (substandard, doubtful and loss: the
  provisioning's classes, `provision_classify`, days in arrears from the schedule and
  restructured loans held at their class) over the principal of all live loans. With the
  default bands substandard starts at 31 days, so it differs from par30 by restructured
  loans and by the days' count (the schedule's, not the arrears job's).
- liquidity_ratio: cash and equivalents (1100) over members' deposits and savings (2100)
  and short-term payables (2200), on the day.
- capital_ratio: core capital, share capital (3100) and institutional capital (3200),
  over total assets (1000, net of provisions), on the day. The year's result joins
  institutional capital at the year-end close.

The nightly job "books-kpis" runs after loan-arrears (it reads the days past due that job
sets); it first sums the months closed since its last run (totals.py). It is a plain job,
not a close-of-business batch (app/batch.py): a few aggregate queries and six rows
written, nothing to split into chunks or resume.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import extract, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.extensions import db
from app.models import Account, ChartAccount, JournalEntry, JournalLine, KpiSnapshot
from app.money import ZERO
from app.selectors.loans import portfolio_at_risk
from app.services.books.chart import YEAR_END_KIND, chart_balances, chart_rollup
from app.services.books.periods import month_bounds
from app.services.books.provisioning import NON_PERFORMING, provision_classify
from app.services.books.totals import journal_totals_refresh
from app.services.bulk import on_postgres

# In the order the dashboard shows them, with the words it uses.
KPIS: dict[str, str] = {
    "portfolio_yield": "Portfolio yield (annualised)",
    "cost_to_income": "Cost-to-income",
    "par30": "PAR30",
    "npl_ratio": "NPL ratio (substandard and worse)",
    "liquidity_ratio": "Liquidity ratio",
    "capital_ratio": "Core capital to total assets",
}
PLACES = Decimal("0.000001")  # kpi_snapshots.value is NUMERIC(20, 6)
HISTORY_MONTHS = 12

# Chart codes the KPIs read.
ASSETS, LIQUID, LOANS = "1000", "1100", "1210"
DEPOSITS, PAYABLES = "2100", "2200"
SHARE_CAPITAL, INSTITUTIONAL = "3100", "3200"
INCOME, INTEREST_INCOME, EXPENSES = "4000", "4100", "5000"


def _ratio(top: Decimal, bottom: Decimal) -> Decimal | None:
    return (top / bottom).quantize(PLACES) if bottom else None


def _by_code(totals: dict[int, Decimal]) -> dict[str, Decimal]:
    codes = dict(db.session.execute(select(ChartAccount.id, ChartAccount.code)).all())
    found: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for line_id, amount in totals.items():
        found[codes[line_id]] = amount
    return found


def year_start(as_of: date) -> date:
    """The last day of the previous fiscal (calendar) year: the year to date is after it."""
    return date(as_of.year - 1, 12, 31)


def month_ends(since: date, as_of: date) -> list[date]:
    """`since`, each month end after it and before `as_of`, and `as_of`."""
    days = [since]
    day = month_bounds(since)[1]
    while True:
        day = month_bounds(day + timedelta(days=1))[1]
        if day >= as_of:
            break
        days.append(day)
    days.append(as_of)
    return days


def loans_outstanding_at(days: list[date]) -> dict[date, Decimal]:
    """Principal outstanding (the loan_principal ledger accounts, debit positive) at the
    end of each of `days` (sorted): one query grouped by value date (a row a day that
    moved principal), added up in order."""
    rows = db.session.execute(
        select(JournalEntry.value_date, func.sum(JournalLine.amount))
        .join(JournalLine, JournalLine.entry_id == JournalEntry.id)
        .join(Account, Account.id == JournalLine.account_id)
        .where(Account.kind == "loan_principal", JournalEntry.value_date <= days[-1])
        .group_by(JournalEntry.value_date)
        .order_by(JournalEntry.value_date)
    ).all()
    held: dict[date, Decimal] = {}
    running = ZERO
    queue = iter(rows)
    pending = next(queue, None)
    for day in days:
        while pending is not None and pending[0] <= day:
            running += Decimal(pending[1] or 0)
            pending = next(queue, None)
        held[day] = running
    return held


def kpis_compute(as_of: date) -> dict[str, Decimal | None]:
    """Every KPI on `as_of` from the books (None: nothing to divide by that day)."""
    since = year_start(as_of)
    position = _by_code(chart_rollup(chart_balances(as_of=as_of)))
    result = _by_code(
        chart_rollup(chart_balances(as_of=as_of, since=since, exclude_kinds=(YEAR_END_KIND,)))
    )
    income, expenses = -result[INCOME], result[EXPENSES]
    ends = month_ends(since, as_of)
    outstanding = loans_outstanding_at(ends)
    average = sum(outstanding.values(), ZERO) / len(ends)
    elapsed = (as_of - since).days
    interest = -result[INTEREST_INCOME]
    yearly = interest * Decimal(365) / elapsed if elapsed else ZERO
    portfolio = portfolio_at_risk(as_of=as_of)
    classed = provision_classify(as_of)
    npl = sum((row.principal for row in classed if row.risk_class in NON_PERFORMING), ZERO)
    classed_total = sum((row.principal for row in classed), ZERO)
    return {
        "portfolio_yield": _ratio(yearly, average),
        "cost_to_income": _ratio(expenses, income),
        "par30": _ratio(portfolio.par30_principal, portfolio.gross_principal),
        "npl_ratio": _ratio(npl, classed_total),
        "liquidity_ratio": _ratio(position[LIQUID], -(position[DEPOSITS] + position[PAYABLES])),
        "capital_ratio": _ratio(
            -(position[SHARE_CAPITAL] + position[INSTITUTIONAL]), position[ASSETS]
        ),
    }


def _upsert() -> Any:
    insert = pg_insert if on_postgres() else sqlite_insert
    stmt = insert(KpiSnapshot)
    return stmt.on_conflict_do_update(
        index_elements=["as_of", "name"], set_={"value": stmt.excluded.value}
    )


def kpis_refresh(as_of: date) -> dict[str, Decimal | None]:
    """Compute the KPIs for `as_of` and write them: one row per KPI and day, replaced when
    run again for the same day (a KPI with no value that day has its row removed).
    Commits."""
    values = kpis_compute(as_of)
    known = [
        {"as_of": as_of, "name": name, "value": v} for name, v in values.items() if v is not None
    ]
    if known:
        db.session.execute(_upsert(), known)
    undefined = [name for name, value in values.items() if value is None]
    if undefined:
        db.session.execute(
            KpiSnapshot.__table__.delete().where(
                KpiSnapshot.as_of == as_of, KpiSnapshot.name.in_(undefined)
            )
        )
    db.session.commit()
    return values


def kpis_job(*, as_of: date, stats: Any) -> None:
    """The nightly books run (after loan-arrears): the totals of months closed since the
    last run (app/services/books/totals.py, which the statements and these KPIs read),
    then the KPIs. records_updated counts the values written."""
    journal_totals_refresh()
    values = kpis_refresh(as_of)
    stats.records_scanned = len(values)
    stats.records_updated = sum(1 for value in values.values() if value is not None)


@dataclass(frozen=True)
class KpiBoard:
    """What the dashboard shows: the latest day's values, and those of the last day
    computed in each of the months before (oldest first), each {name: value}."""

    latest_on: date | None
    latest: dict[str, Decimal]
    history: list[tuple[date, dict[str, Decimal]]]


def kpis_board(months: int = HISTORY_MONTHS) -> KpiBoard:
    """Read only from kpi_snapshots: the latest day, and the last day of each of the
    `months` months before its month."""
    latest_on = db.session.scalar(select(func.max(KpiSnapshot.as_of)))
    if latest_on is None:
        return KpiBoard(None, {}, [])
    start = _months_back(latest_on, months)
    per_month = (
        select(func.max(KpiSnapshot.as_of))
        .where(KpiSnapshot.as_of >= start, KpiSnapshot.as_of < latest_on.replace(day=1))
        .group_by(extract("year", KpiSnapshot.as_of), extract("month", KpiSnapshot.as_of))
    )
    rows = db.session.execute(
        select(KpiSnapshot.as_of, KpiSnapshot.name, KpiSnapshot.value).where(
            KpiSnapshot.as_of.in_(per_month) | (KpiSnapshot.as_of == latest_on)
        )
    ).all()
    days: dict[date, dict[str, Decimal]] = defaultdict(dict)
    for day, name, value in rows:
        days[day][name] = Decimal(value)
    latest = days.pop(latest_on, {})
    return KpiBoard(latest_on, latest, sorted(days.items()))


def _months_back(day: date, count: int) -> date:
    """The first day of the month `count` months before `day`'s."""
    index = day.year * 12 + day.month - 1 - count
    return date(index // 12, index % 12 + 1, 1)
