"""The financial statements, read off the chart of accounts: trial balance, statement of
financial position (balance sheet), income statement, changes in equity and cash flows
(indirect method), each as a `Report` (app/services/books/exports.py) the console shows and
exports; and the drill-down from any figure to the journal lines behind it.

Every figure is a chart line's movement (as `chart_balances` gives it, debit positive) shown the way
accountants read it: assets and expenses debit-positive, liabilities, equity and income
credit-positive. Contra-assets (the loan-loss provision, interest in suspense) are credit
balances on asset lines, so they show as negatives under the loans they reduce.

The year's result is not moved to retained earnings until the year-end close, so the
balance sheet shows it as its own equity line, "Result for the year to date": income,
expense and dividends declared since 1 January, year-end close included (so it falls to
zero once the year is closed and retained earnings holds it). An earlier year not yet
closed keeps its result on the result lines; it shows beside retained earnings, where the
close will put it. The income statement leaves the close out: it is not income or expense.

The cash-flow statement ties by construction: every journal entry balances, so the change
in cash is minus the change in everything else, and every line of the chart that is not
cash is put in exactly one class (operating, investing, financing).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select

from app.errors import SaccoError
from app.extensions import db
from app.models import Account, ChartAccount, JournalEntry, JournalLine, Loan
from app.money import ZERO
from app.services.books.chart import (
    RESULT_TYPES,
    YEAR_END_KIND,
    chart_accounts,
    chart_balances,
    chart_ensure,
    chart_line_filter,
    chart_lines_query,
)
from app.services.books.exports import Report, ReportRow

CASH = "1100"  # cash and cash equivalents: the cash-flow statement explains its change
LOANS = "1200"  # loans to members and what they owe with them
DEPOSITS = "2100"  # member deposits and savings
STATEMENTS = {
    "tb": "Trial balance",
    "bs": "Statement of financial position",
    "is": "Income statement",
    "soce": "Statement of changes in equity",
    "cf": "Statement of cash flows",
}
DRILL_PAGE = 50


class StatementError(SaccoError):
    """A statement asked for with dates or a line that make no sense; nothing was read."""


@dataclass(frozen=True)
class Window:
    """What a figure of a statement's column covers: the drill-down's arguments."""

    as_of: date
    since: date | None = None
    without_year_end: bool = False


def statement_balances(windows: list[Window]) -> list[dict[int, Decimal]]:
    """Each window's movement per chart line, debit positive: `chart_balances` over
    (since, as_of], the year-end close left out when the window says so. (chart_balances
    reads closed months from their monthly totals, so each window costs the open days.)"""
    return [
        chart_balances(
            as_of=window.as_of,
            since=window.since,
            exclude_kinds=[YEAR_END_KIND] if window.without_year_end else (),
        )
        for window in windows
    ]


# -- the chart as a tree ---------------------------------------------------------------------


@dataclass
class _Chart:
    lines: list[ChartAccount]  # code order
    by_id: dict[int, ChartAccount] = field(default_factory=dict)
    children: dict[int | None, list[ChartAccount]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for line in self.lines:
            self.by_id[line.id] = line
            self.children.setdefault(line.parent_id, []).append(line)

    def level(self, line: ChartAccount) -> int:
        depth, parent = 0, line.parent_id
        while parent is not None:
            depth, parent = depth + 1, self.by_id[parent].parent_id
        return depth

    def ancestors(self, line: ChartAccount) -> list[str]:
        codes, parent = [], line.parent_id
        while parent is not None:
            codes.append(self.by_id[parent].code)
            parent = self.by_id[parent].parent_id
        return codes

    def under(self, line: ChartAccount, code: str) -> bool:
        return line.code == code or code in self.ancestors(line)

    def roots(self, chart_type: str) -> list[ChartAccount]:
        return [line for line in self.children.get(None, []) if line.type == chart_type]

    def leaves(self) -> list[ChartAccount]:
        return [line for line in self.lines if not line.header]

    def by_maps(self, maps: str) -> ChartAccount | None:
        return next((line for line in self.lines if line.maps == maps), None)


def _chart() -> _Chart:
    return _Chart(chart_accounts())


def _shown(line: ChartAccount, amount: Decimal) -> Decimal:
    """A debit-positive movement as the statements show it for the line's type."""
    return amount if line.type in ("asset", "expense") else -amount


Extras = dict[int, list[tuple[str, list[Decimal]]]]  # under a header: synthetic rows


def _tree(
    chart: _Chart,
    line: ChartAccount,
    columns: list[dict[int, Decimal]],
    extras: Extras | None = None,
    always: bool = False,
) -> tuple[list[ReportRow], list[Decimal]]:
    """The rows of `line`'s subtree (a header with its total, then its lines indented) and
    its totals, one per column. `columns` hold each leaf's shown figure; a line with nothing
    in any column is left out (a root header is always shown)."""
    extras = extras or {}
    width = len(columns)
    level = chart.level(line)
    if not line.header:
        values = [column.get(line.id, ZERO) for column in columns]
        if not any(values) and not always:
            return [], values
        return [ReportRow(line.name, list(values), level=level, code=line.code)], values
    rows: list[ReportRow] = []
    totals = [ZERO] * width
    for child in chart.children.get(line.id, []):
        child_rows, child_totals = _tree(chart, child, columns, extras)
        rows += child_rows
        totals = [a + b for a, b in zip(totals, child_totals, strict=True)]
    for label, values in extras.get(line.id, []):
        if any(values):
            rows.append(ReportRow(label, list(values), level=level + 1))
        totals = [a + b for a, b in zip(totals, values, strict=True)]
    if not rows and not always:
        return [], totals
    head = ReportRow(line.name, list(totals), level=level, bold=True)
    return [head, *rows], totals


def _section(
    chart: _Chart,
    chart_type: str,
    columns: list[dict[int, Decimal]],
    extras: Extras | None = None,
) -> tuple[list[ReportRow], list[Decimal]]:
    rows: list[ReportRow] = []
    totals = [ZERO] * len(columns)
    for root in chart.roots(chart_type):
        root_rows, root_totals = _tree(chart, root, columns, extras, always=True)
        rows += root_rows
        totals = [a + b for a, b in zip(totals, root_totals, strict=True)]
    return rows, totals


def _shown_all(chart: _Chart, movements: dict[int, Decimal]) -> dict[int, Decimal]:
    return {
        line_id: _shown(chart.by_id[line_id], amount)
        for line_id, amount in movements.items()
        if line_id in chart.by_id
    }


def _sum(movements: dict[int, Decimal], lines: Iterable[ChartAccount]) -> Decimal:
    return sum((movements.get(line.id, ZERO) for line in lines), ZERO)


def _day(value: date) -> str:
    return f"{value.day} {value:%B %Y}"


def _period(start: date, end: date) -> str:
    return f"{start.isoformat()} to {end.isoformat()}"


def _check_period(start: date, end: date) -> None:
    if start > end:
        raise StatementError(f"the period starts ({start}) after it ends ({end})")


def year_start(day: date) -> date:
    """The day before the financial year of `day` starts (a `since`: 31 December before)."""
    return date(day.year - 1, 12, 31)


def _is_dividends(line: ChartAccount) -> bool:
    return line.maps == "dividends"


def _is_result(line: ChartAccount) -> bool:
    return line.type in RESULT_TYPES


# -- trial balance --------------------------------------------------------------------------


def trial_balance(*, as_of: date) -> Report:
    """Every line of the chart with a balance at the end of `as_of`, in a debit or a credit
    column; the two totals are equal when the books balance."""
    chart = _chart()
    (balances,) = statement_balances([Window(as_of)])
    rows: list[ReportRow] = []
    debits = credits = ZERO
    for line in chart.leaves():
        amount = balances.get(line.id, ZERO)
        if not amount:
            continue
        if amount > 0:
            debits += amount
            rows.append(ReportRow(line.name, [amount, None], level=1, code=line.code))
        else:
            credits -= amount
            rows.append(ReportRow(line.name, [None, -amount], level=1, code=line.code))
    check = None if debits == credits else f"out by {debits - credits:,.2f}"
    rows.append(ReportRow("Total", [debits, credits], bold=True, check=check))
    return Report(
        title="Trial balance",
        subtitle=f"As at {_day(as_of)}",
        columns=["Debit", "Credit"],
        rows=rows,
        sheet="Trial balance",
        totals={"debits": debits, "credits": credits},
    )


# -- statement of financial position ---------------------------------------------------------


@dataclass(frozen=True)
class _Position:
    """One column of the balance sheet: each leaf's shown figure and the synthetic rows."""

    shown: dict[int, Decimal]
    result: Decimal  # income less expenses since 1 January, the year-end close included
    earlier: Decimal  # earlier years' results (less dividends) not yet closed


def _position(chart: _Chart, balances: dict[int, Decimal], ytd: dict[int, Decimal]) -> _Position:
    """A column from the balances at its day and the movement since 1 January."""
    leaves = chart.leaves()
    results = [line for line in leaves if _is_result(line)]
    dividends = [line for line in leaves if _is_dividends(line)]
    shown: dict[int, Decimal] = {}
    for line in leaves:
        if line.type in ("asset", "liability"):
            shown[line.id] = _shown(line, balances.get(line.id, ZERO))
        elif _is_dividends(line):
            # This year's declarations; earlier years' are folded in with their results.
            shown[line.id] = -ytd.get(line.id, ZERO)
        elif line.type == "equity":
            shown[line.id] = -balances.get(line.id, ZERO)
    closing = [*results, *dividends]
    earlier = -(_sum(balances, closing) - _sum(ytd, closing))
    return _Position(shown, -_sum(ytd, results), earlier)


EARLIER = "Earlier years' results not yet closed"
RESULT_YTD = "Result for the year to date"


def balance_sheet(*, as_of: date, compare_to: date | None = None) -> Report:
    """Assets, liabilities and equity at the end of `as_of` (and of `compare_to`, a second
    column); the year's result so far is an equity line of its own. Totals: assets,
    liabilities, equity, result; assets equal liabilities plus equity."""
    chart = _chart()
    dates = [as_of] if compare_to is None else [as_of, compare_to]
    sums = statement_balances(
        [w for day in dates for w in (Window(day), Window(day, year_start(day)))]
    )
    positions = [_position(chart, sums[2 * i], sums[2 * i + 1]) for i in range(len(dates))]
    columns = [p.shown for p in positions]
    retained = chart.by_maps("retained_earnings")
    equity_roots = chart.roots("equity")
    extras: Extras = {}
    earlier_under = retained.parent_id if retained and retained.parent_id else None
    if earlier_under is None and equity_roots:
        earlier_under = equity_roots[0].id
    if earlier_under is not None:
        extras.setdefault(earlier_under, []).append((EARLIER, [p.earlier for p in positions]))
    if equity_roots:
        extras.setdefault(equity_roots[0].id, []).append(
            (RESULT_YTD, [p.result for p in positions])
        )
    asset_rows, assets = _section(chart, "asset", columns)
    liability_rows, liabilities = _section(chart, "liability", columns)
    equity_rows, equity = _section(chart, "equity", columns, extras)
    both = [a + b for a, b in zip(liabilities, equity, strict=True)]
    check = None if assets == both else f"out by {assets[0] - both[0]:,.2f}"
    rows = [
        *asset_rows,
        ReportRow("Total assets", list(assets), bold=True),
        *liability_rows,
        ReportRow("Total liabilities", list(liabilities), bold=True),
        *equity_rows,
        ReportRow("Total equity", list(equity), bold=True),
        ReportRow("Total liabilities and equity", list(both), bold=True, check=check),
    ]
    notes = [
        "Contra-assets (the loan-loss provision, interest in suspense) show as negatives.",
        f"{RESULT_YTD}: income less expenses since 1 January; it moves to retained "
        "earnings at the year-end close.",
    ]
    if any(p.earlier for p in positions):
        notes.append(f"{EARLIER}: a year-end close still to run moves them to retained earnings.")
    return Report(
        title="Statement of financial position",
        subtitle=f"As at {_day(as_of)}"
        + (f", compared with {_day(compare_to)}" if compare_to else ""),
        columns=[day.isoformat() for day in dates],
        rows=rows,
        sheet="Balance sheet",
        notes=notes,
        totals={
            "assets": assets[0],
            "liabilities": liabilities[0],
            "equity": equity[0],
            "result": positions[0].result,
        },
    )


# -- income statement -----------------------------------------------------------------------


def _movement(start: date, end: date) -> Window:
    """The movement over a period without the year-end close (not income or expense)."""
    return Window(end, start - timedelta(days=1), True)


def income_statement(*, start: date, end: date, compare: tuple[date, date] | None = None) -> Report:
    """Income and expenses over `start`..`end` (inclusive), the year-end close left out;
    result = income - expenses. `compare`: a second period for a comparative column.
    Totals: income, expenses, result (of the first period)."""
    _check_period(start, end)
    periods = [(start, end)] if compare is None else [(start, end), compare]
    for first, last in periods:
        _check_period(first, last)
    chart = _chart()
    sums = statement_balances([_movement(first, last) for first, last in periods])
    columns = [_shown_all(chart, column) for column in sums]
    income_rows, income = _section(chart, "income", columns)
    expense_rows, expenses = _section(chart, "expense", columns)
    result = [a - b for a, b in zip(income, expenses, strict=True)]
    rows = [
        *income_rows,
        ReportRow("Total income", list(income), bold=True),
        *expense_rows,
        ReportRow("Total expenses", list(expenses), bold=True),
        ReportRow("Result for the period", list(result), bold=True),
    ]
    return Report(
        title="Income statement",
        subtitle=f"For {_period(start, end)}"
        + (f", compared with {_period(*compare)}" if compare else ""),
        columns=[_period(first, last) for first, last in periods],
        rows=rows,
        sheet="Income statement",
        notes=["The year-end close (the result moved to retained earnings) is left out."],
        totals={"income": income[0], "expenses": expenses[0], "result": result[0]},
    )


# -- changes in equity ----------------------------------------------------------------------


def _issued_redeemed(line: ChartAccount, since: date, end: date) -> tuple[Decimal, Decimal]:
    """What members paid into a capital line and what left it, entry by entry (a transfer
    between two members is one entry and nets to nothing), credit-positive."""
    per_entry = (
        select(JournalLine.entry_id, func.sum(JournalLine.amount).label("net"))
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .join(Account, Account.id == JournalLine.account_id)
        .outerjoin(Loan, Loan.id == Account.loan_id)
        .where(
            chart_line_filter(line),
            JournalEntry.value_date > since,
            JournalEntry.value_date <= end,
            JournalEntry.kind != YEAR_END_KIND,
        )
        .group_by(JournalLine.entry_id)
        .subquery()
    )
    net = per_entry.c.net
    issued, redeemed = db.session.execute(
        select(
            func.coalesce(func.sum(case((net < 0, -net), else_=0)), 0),
            func.coalesce(func.sum(case((net > 0, -net), else_=0)), 0),
        )
    ).one()
    return Decimal(issued), Decimal(redeemed)


RESULT_COLUMN = "Result not yet closed"


def changes_in_equity(*, start: date, end: date) -> Report:
    """Each equity line's opening balance, its movements over `start`..`end` and its
    closing balance, which is the balance sheet's at `end` (in total: the balance sheet
    splits the result not yet closed into this year's and earlier years')."""
    _check_period(start, end)
    chart = _chart()
    since = start - timedelta(days=1)
    opening, closing, everything, without_close = statement_balances(
        [Window(since), Window(end), Window(end, since), _movement(start, end)]
    )
    leaves = chart.leaves()
    results = [line for line in leaves if _is_result(line)]
    dividends = [line for line in leaves if _is_dividends(line)]
    components = [line for line in leaves if line.type == "equity" and not _is_dividends(line)]
    labels = [line.name for line in components] + [RESULT_COLUMN, "Total"]

    def row(label: str, values: list[Decimal], bold: bool = False) -> ReportRow:
        return ReportRow(label, [*values, sum(values, ZERO)], bold=bold)

    closed = [*results, *dividends]
    open_values = [-opening.get(line.id, ZERO) for line in components] + [-_sum(opening, closed)]
    close_values = [-closing.get(line.id, ZERO) for line in components] + [-_sum(closing, closed)]
    issued: list[Decimal] = []
    redeemed: list[Decimal] = []
    for line in components:
        if line.maps == "share_capital":
            paid_in, paid_out = _issued_redeemed(line, since, end)
        else:
            paid_in = paid_out = ZERO
        issued.append(paid_in)
        redeemed.append(paid_out)
    issued.append(ZERO)
    redeemed.append(ZERO)
    period_result = [ZERO] * len(components) + [-_sum(without_close, results)]
    declared = [ZERO] * len(components) + [-_sum(without_close, dividends)]
    year_end = [
        -(everything.get(line.id, ZERO) - without_close.get(line.id, ZERO)) for line in components
    ] + [-(_sum(everything, closed) - _sum(without_close, closed))]
    other = [
        -without_close.get(line.id, ZERO) - paid_in - paid_out
        for line, paid_in, paid_out in zip(components, issued, redeemed, strict=False)
    ] + [ZERO]
    movements = [issued, redeemed, period_result, declared, year_end, other]
    rows = [
        row(f"Balance at {_day(since)}", open_values, bold=True),
        row("Share capital issued", issued),
        row("Share capital redeemed or refunded", redeemed),
        row("Result for the period", period_result),
        row("Dividends declared", declared),
        row("Year-end close: result to retained earnings", year_end),
        row("Transfers to reserves and other movements", other),
    ]
    computed = [o + sum((m[i] for m in movements), ZERO) for i, o in enumerate(open_values)]
    check = None if computed == close_values else "movements do not add up"
    last = row(f"Balance at {_day(end)}", close_values, bold=True)
    last.check = check
    rows.append(last)
    return Report(
        title="Statement of changes in equity",
        subtitle=f"For {_period(start, end)}",
        columns=labels,
        rows=rows,
        sheet="Changes in equity",
        notes=[
            f"{RESULT_COLUMN}: income less expenses and dividends declared, until a "
            "year-end close moves them to retained earnings."
        ],
        totals={
            "opening": sum(open_values, ZERO),
            "closing": sum(close_values, ZERO),
            "result": period_result[-1],
        },
    )


# -- cash flows -----------------------------------------------------------------------------


def _cash_class(chart: _Chart, line: ChartAccount) -> str:
    """Where a line's change shows in the cash-flow statement: every line has one."""
    if chart.under(line, CASH):
        return "cash"
    if _is_result(line):
        return "result"
    if line.type == "asset":
        return "loans" if chart.under(line, LOANS) else "other_assets"
    if line.type == "liability":
        return "deposits" if chart.under(line, DEPOSITS) else "payables"
    if line.maps == "share_capital":
        return "shares"
    if _is_dividends(line):
        return "dividends"
    return "other_equity"


def cash_flow(*, start: date, end: date) -> Report:
    """Cash flows over `start`..`end`, indirect method: the result, the non-cash items added
    back, the change in each class of the balance sheet; the net change equals the change
    in cash and cash equivalents (opening and closing shown). Totals: net_change_in_cash,
    opening_cash, closing_cash."""
    _check_period(start, end)
    chart = _chart()
    since = start - timedelta(days=1)
    moved, balances_before, balances_after = statement_balances(
        [_movement(start, end), Window(since), Window(end)]
    )
    by_class: dict[str, list[ChartAccount]] = {}
    for leaf in chart.leaves():
        by_class.setdefault(_cash_class(chart, leaf), []).append(leaf)

    def change(name: str) -> Decimal:
        """The cash a class brought in: minus its debit-positive movement."""
        return -_sum(moved, by_class.get(name, []))

    def maps_movement(maps: str) -> Decimal:
        return _sum(moved, [leaf for leaf in chart.leaves() if leaf.maps == maps])

    result = change("result")
    provision = maps_movement("provision_expense")
    written_off = maps_movement("write_off_expense")
    # The provision and the write-offs reduce the loans without cash moving: added back
    # above, they come out of the loans' change here (each entry is Dr expense, Cr loans).
    loans = change("loans") - provision - written_off
    deposits = change("deposits")
    payables = change("payables")
    operating = result + provision + written_off + loans + deposits + payables
    investing = change("other_assets")
    shares, declared, other_equity = change("shares"), change("dividends"), change("other_equity")
    financing = shares + declared + other_equity
    net = operating + investing + financing
    cash_lines = by_class.get("cash", [])
    opening = _sum(balances_before, cash_lines)
    closing = _sum(balances_after, cash_lines)
    check = None if opening + net == closing else f"out by {closing - opening - net:,.2f}"

    def figure(label: str, value: Decimal, level: int = 1, bold: bool = False) -> ReportRow:
        return ReportRow(label, [value], level=level, bold=bold)

    rows = [
        ReportRow("Operating activities", [None], bold=True),
        figure("Result for the period", result),
        ReportRow("Adjustments for items that moved no cash", [None], level=1),
        figure("Loan-loss provision charge", provision, 2),
        figure("Loans written off", written_off, 2),
        ReportRow("Changes in operating assets and liabilities", [None], level=1),
        figure("(Increase) / decrease in loans and receivables", loans, 2),
        figure("Increase / (decrease) in member deposits and savings", deposits, 2),
        figure("Increase / (decrease) in payables and other liabilities", payables, 2),
        figure("Net cash from operating activities", operating, 0, True),
        ReportRow("Investing activities", [None], bold=True),
        figure("(Increase) / decrease in other assets", investing),
        figure("Net cash from investing activities", investing, 0, True),
        ReportRow("Financing activities", [None], bold=True),
        figure("Share capital issued less redeemed", shares),
        figure("Dividends declared", declared),
        figure("Reserves, balances brought forward and other equity", other_equity),
        figure("Net cash from financing activities", financing, 0, True),
        figure("Net change in cash and cash equivalents", net, 0, True),
        figure(f"Cash and cash equivalents at {_day(since)}", opening, 0),
        ReportRow(f"Cash and cash equivalents at {_day(end)}", [closing], bold=True, check=check),
    ]
    return Report(
        title="Statement of cash flows",
        subtitle=f"For {_period(start, end)} (indirect method)",
        columns=[_period(start, end)],
        rows=rows,
        sheet="Cash flows",
        notes=[
            "Dividends credited to members' savings or owed to them show as increases in "
            "deposits or payables beside the dividends declared.",
            "Interest on a loan is income when the loan is disbursed; until it is repaid it "
            "sits in loans and receivables.",
        ],
        totals={"net_change_in_cash": net, "opening_cash": opening, "closing_cash": closing},
    )


# -- drill-down -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DrillLine:
    value_date: date
    entry_id: int
    kind: str
    description: str
    account_code: str
    account_name: str
    amount: Decimal  # debit positive


@dataclass(frozen=True)
class DrillDown:
    line: ChartAccount
    as_of: date
    since: date | None
    without_year_end: bool
    rows: list[DrillLine]
    count: int  # every line behind the figure, not only this page's
    page: int
    pages: int
    total: Decimal  # debit positive, over every line
    figure: Decimal  # the total as the statement shows it for the line's type


def statement_drilldown(
    *,
    code: str,
    as_of: date,
    since: date | None = None,
    without_year_end: bool = False,
    page: int = 1,
    per_page: int = DRILL_PAGE,
) -> DrillDown:
    """The journal lines behind one chart line's figure: value dates in (since, as_of], the
    year-end close left out when the figure leaves it out (the income statement's). One
    page of them, oldest first; the count and total cover them all and equal the figure."""
    # The chart is seeded in whatever transaction first needs it; a read-only request's
    # is rolled back, so a drill-down (its own request) makes sure of it too.
    chart_ensure()
    line = db.session.scalar(select(ChartAccount).where(ChartAccount.code == code))
    if line is None:
        raise StatementError(f"no line {code} in the chart")
    if since is not None and since >= as_of:
        raise StatementError(f"the period starts after it ends ({since} to {as_of})")
    stmt = chart_lines_query(line, as_of=as_of, since=since)
    if without_year_end:
        stmt = stmt.where(JournalEntry.kind != YEAR_END_KIND)
    count, total = db.session.execute(
        stmt.with_only_columns(
            func.count(JournalLine.id), func.coalesce(func.sum(JournalLine.amount), 0)
        ).order_by(None)
    ).one()
    per_page = max(1, min(per_page, 500))
    pages = max(1, -(-int(count) // per_page))
    page = max(1, min(page, pages))
    rows = [
        DrillLine(
            value_date=entry.value_date,
            entry_id=entry.id,
            kind=entry.kind,
            description=entry.description,
            account_code=account.code,
            account_name=account.name,
            amount=journal_line.amount,
        )
        for journal_line, entry, account in db.session.execute(
            stmt.limit(per_page).offset((page - 1) * per_page)
        )
    ]
    total = Decimal(total)
    return DrillDown(
        line=line,
        as_of=as_of,
        since=since,
        without_year_end=without_year_end,
        rows=rows,
        count=int(count),
        page=page,
        pages=pages,
        total=total,
        figure=_shown(line, total),
    )


def statement_windows(kind: str, **params: Any) -> list[Window]:
    """Each column's window for a statement of `kind` built with `params` (the same
    arguments its function takes): a balance as of a day, or a period's movement."""
    if kind in ("tb", "bs"):
        days = [params["as_of"]]
        if kind == "bs" and params.get("compare_to"):
            days.append(params["compare_to"])
        return [Window(day) for day in days]
    if kind == "is":
        periods = [(params["start"], params["end"])]
        if params.get("compare"):
            periods.append(params["compare"])
        return [Window(last, first - timedelta(days=1), True) for first, last in periods]
    return []  # changes in equity and cash flows: their figures gather many lines


def statement_drill_window(kind: str, code: str, window: Window) -> Window:
    """The window of one line's figure: on the balance sheet, dividends declared are this
    year's (earlier years' sit with their results)."""
    if kind == "bs":
        line = db.session.scalar(select(ChartAccount).where(ChartAccount.code == code))
        if line is not None and _is_dividends(line):
            return Window(window.as_of, year_start(window.as_of))
    return window


# -- periods to compare ---------------------------------------------------------------------


def _month_end(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


def year_earlier(day: date) -> date:
    """The same day a year before (29 February becomes the 28th)."""
    return day.replace(year=day.year - 1, day=min(day.day, 28 if day.month == 2 else 31))


def previous_month_end(day: date) -> date:
    """The last month end before `day` (for 30 November: 31 October)."""
    return day.replace(day=1) - timedelta(days=1)


def previous_period(start: date, end: date) -> tuple[date, date]:
    """The period before, as long: whole months give the months before, any other span
    the same number of days before it."""
    if start.day == 1 and end == _month_end(end.year, end.month):
        months = (end.year - start.year) * 12 + end.month - start.month + 1
        first = start
        for _ in range(months):
            first = (first - timedelta(days=1)).replace(day=1)
        return first, start - timedelta(days=1)
    days = (end - start).days + 1
    return start - timedelta(days=days), start - timedelta(days=1)


def same_period_last_year(start: date, end: date) -> tuple[date, date]:
    if start.day == 1 and end == _month_end(end.year, end.month):
        return start.replace(year=start.year - 1), _month_end(end.year - 1, end.month)
    return year_earlier(start), year_earlier(end)
