"""The books: chart of accounts, statements, period close, loan-loss provisioning, the
regulator's returns and the KPIs read off them. Callers import from here."""

from __future__ import annotations

from app.services.books.chart import (
    DEFAULT_CHART,
    ChartError,
    chart_accounts,
    chart_add,
    chart_balances,
    chart_delete,
    chart_ensure,
    chart_line_filter,
    chart_lines_query,
    chart_mapping,
    chart_rollup,
)
from app.services.books.exports import Report, ReportRow, report_csv, report_pdf, report_xlsx
from app.services.books.periods import (
    PeriodError,
    journal_correct,
    journal_manual,
    month_bounds,
    period_close,
    period_reopen,
    periods_status,
)
from app.services.books.statements import (
    StatementError,
    balance_sheet,
    cash_flow,
    changes_in_equity,
    income_statement,
    statement_drilldown,
    trial_balance,
)

__all__ = [
    "DEFAULT_CHART",
    "ChartError",
    "PeriodError",
    "chart_accounts",
    "chart_add",
    "chart_balances",
    "chart_delete",
    "chart_ensure",
    "chart_line_filter",
    "chart_lines_query",
    "chart_mapping",
    "chart_rollup",
    "journal_correct",
    "journal_manual",
    "month_bounds",
    "period_close",
    "period_reopen",
    "periods_status",
    "Report",
    "ReportRow",
    "StatementError",
    "balance_sheet",
    "cash_flow",
    "changes_in_equity",
    "income_statement",
    "report_csv",
    "report_pdf",
    "report_xlsx",
    "statement_drilldown",
    "trial_balance",
]
