"""The books' keeping pages in the console (Books menu): closing and reopening periods, the
chart of accounts with each line's balance today, and the general journal entry (or the
correction of an entry in a closed month).

The roles that read finance see the periods and the chart; the buttons follow the role
(books.close, books.reopen, books.chart, books.journal in app/services/permissions.py).
Every post checks the CSRF token, then the role (403, audited), then calls one service in
app/services/books/, which checks the role again and writes the audit row; a refusal comes
back in the service's words and nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from flask import flash, redirect, request, url_for
from flask_admin import Admin, BaseView, expose
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from admin.auth import SecureMixin, TokenForm, form_post, require
from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import Account, ChartAccount, JournalEntry
from app.models.books import CHART_TYPES
from app.money import ZERO, money_input
from app.services.books import (
    PeriodError,
    chart_accounts,
    chart_add,
    chart_balances,
    chart_delete,
    chart_rollup,
    journal_correct,
    journal_manual,
    month_bounds,
    period_close,
    period_reopen,
    periods_status,
)
from app.services.ledger import GL_ACCOUNTS

# Types whose balance reads credit-positive (a liability, equity or income shows as held).
CREDIT_TYPES = ("liability", "equity", "income")
ACTION_WORDS = {"close": "Closed", "year_end": "Closed with the year", "reopen": "Reopened"}
JOURNAL_LINES = 6  # rows on the journal form; an entry needs two at least


def _staff() -> Any:
    return current_user._get_current_object()


def _month(raw: str | None) -> date:
    """A month as the form sends it ("2026-10", or a day in it)."""
    text = (raw or "").strip()
    try:
        return date.fromisoformat(f"{text}-01" if len(text) == 7 else text)
    except ValueError:
        raise PeriodError(f"choose a month like 2026-10, not {text!r}") from None


def _day(raw: str | None) -> date:
    text = (raw or "").strip()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise PeriodError(f"the value date must be a date like 2026-11-02, not {text!r}") from None


class PeriodsView(SecureMixin, BaseView):
    """Closed through, the month that closes next, its button, reopening, and history."""

    permission = "books.view"

    @expose("/")
    def index(self) -> str:
        status = periods_status(limit=50)
        start, end = month_bounds(status.next_to_close)
        return self.render(
            "admin_sacco/periods.html",
            status=status,
            next_start=start,
            next_end=end,
            next_over=end < business_today(),
            last_closed=month_bounds(status.closed_through)[0] if status.closed_through else None,
            action_words=ACTION_WORDS,
        )

    @expose("/close", methods=("POST",))
    def close(self) -> Any:
        def act() -> str:
            event = period_close(month=_month(request.form.get("month")), actor=_staff())
            what = f"{event.period_start:%B %Y} is closed"
            if event.action == "year_end":
                what += f": {event.period_start.year} is closed with its result"
                if event.entry_id is not None:
                    what += f" moved to retained earnings (entry #{event.entry_id})"
            return what + "."

        return form_post(self, "books.close", url_for(".index"), act)

    @expose("/reopen", methods=("POST",))
    def reopen(self) -> Any:
        def act() -> str:
            event = period_reopen(
                month=_month(request.form.get("month")),
                actor=_staff(),
                reason=request.form.get("reason", ""),
            )
            return (
                f"{event.period_start:%B %Y} is open again: postings dated from "
                f"{event.period_start.isoformat()} go through; the reason is in the audit log."
            )

        return form_post(self, "books.reopen", url_for(".index"), act)


@dataclass(frozen=True)
class ChartRow:
    line: ChartAccount
    depth: int
    balance: Decimal  # as the line's type reads it: a liability's credit shows positive


def chart_rows(as_of: date) -> list[ChartRow]:
    """The chart as a tree (parents before their lines, code order within), each line with
    its balance as of `as_of`: headers the sum of their lines."""
    lines = chart_accounts()
    totals = chart_rollup(chart_balances(as_of=as_of))
    children: dict[int | None, list[ChartAccount]] = {}
    for line in lines:
        children.setdefault(line.parent_id, []).append(line)
    rows: list[ChartRow] = []

    def walk(parent: int | None, depth: int) -> None:
        for line in children.get(parent, []):
            amount = totals.get(line.id, ZERO)
            rows.append(ChartRow(line, depth, -amount if line.type in CREDIT_TYPES else amount))
            walk(line.id, depth + 1)

    walk(None, 0)
    return rows


class ChartView(SecureMixin, BaseView):
    """The chart of accounts with today's balances; an admin adds or removes lines."""

    permission = "books.view"

    @expose("/")
    def index(self) -> str:
        today = business_today()
        rows = chart_rows(today)
        db.session.commit()  # the default chart, seeded if a line was missing
        return self.render(
            "admin_sacco/chart.html",
            rows=rows,
            today=today,
            types=CHART_TYPES,
            headers=[r.line for r in rows if r.line.header],
        )

    @expose("/add", methods=("POST",))
    def add(self) -> Any:
        form = request.form

        def act() -> str:
            line = chart_add(
                code=form.get("code", ""),
                name=form.get("name", ""),
                type=form.get("type", ""),
                parent_code=form.get("parent") or None,
                actor=_staff(),
                header=form.get("header") == "1",
            )
            return f"{line.code} {line.name} is in the chart."

        return form_post(self, "books.chart", url_for(".index"), act)

    @expose("/delete", methods=("POST",))
    def delete(self) -> Any:
        code = request.form.get("code", "").strip()

        def act() -> str:
            chart_delete(code=code, actor=_staff())
            return f"{code} is out of the chart."

        return form_post(self, "books.chart", url_for(".index"), act)


def journal_codes() -> list[tuple[str, str]]:
    """The accounts a journal entry may post to: the general ledger's and the chart's own
    lines (COA-...), with their names; members' and loans' accounts move by their services."""
    codes = {code: name for code, (_kind, name) in GL_ACCOUNTS.items()}
    general = db.session.execute(
        select(Account.code, Account.name).where(Account.kind == "general")
    ).all()
    codes.update({code: name for code, name in general})
    return sorted(codes.items())


def journal_lines(form: Any) -> list[tuple[str, Decimal]]:
    """The form's rows as (account code, signed amount: debit positive); blank rows are
    skipped, a row with an account needs exactly one of debit and credit."""
    lines: list[tuple[str, Decimal]] = []
    for n in range(JOURNAL_LINES):
        code = form.get(f"account-{n}", "").strip().upper()
        debit_raw = form.get(f"debit-{n}", "").strip().replace(",", "")
        credit_raw = form.get(f"credit-{n}", "").strip().replace(",", "")
        if not (code or debit_raw or credit_raw):
            continue
        if not code:
            raise PeriodError(f"line {n + 1} has an amount but no account")
        if bool(debit_raw) == bool(credit_raw):
            raise PeriodError(f"line {n + 1} ({code}): give a debit or a credit, one of them")
        if debit_raw:
            lines.append((code, money_input(debit_raw, f"line {n + 1}'s debit")))
        else:
            lines.append((code, -money_input(credit_raw, f"line {n + 1}'s credit")))
    if len(lines) < 2:
        raise PeriodError("a journal entry needs two lines at least (a debit and a credit)")
    return lines


class JournalEntryView(SecureMixin, BaseView):
    """A general journal entry by a branch manager or admin, or the correction of an entry
    (posted in the open period, naming the entry it corrects)."""

    permission = "books.journal"

    def _page(self, error: str | None = None, status: int = 200) -> Any:
        form = request.form if request.method == "POST" else {}
        corrects = form.get("corrects") or request.args.get("corrects", "")
        original = None
        if corrects.strip().isdigit():
            original = db.session.get(JournalEntry, int(corrects))
        page = self.render(
            "admin_sacco/journal_entry.html",
            form=form,
            error=error,
            corrects=corrects,
            original=original,
            codes=journal_codes(),
            rows=range(JOURNAL_LINES),
            closed_through=periods_status(limit=0).closed_through,
            today=business_today(),
        )
        return (page, status) if status != 200 else page

    @expose("/", methods=("GET",))
    def index(self) -> Any:
        return self._page()

    @expose("/", methods=("POST",))
    def post(self) -> Response | Any:
        if not TokenForm(request.form).validate():
            flash("The form expired; please try again.", "error")
            return redirect(url_for(".index"))
        refused = require("books.journal", self)
        if refused is not None:
            return refused
        form = request.form
        try:
            lines = journal_lines(form)
            value_date = _day(form.get("value_date"))
            description = form.get("description", "")
            corrects = form.get("corrects", "").strip().lstrip("#")
            if corrects:
                if not corrects.isdigit():
                    raise PeriodError(
                        f"the entry corrected is a number like 1234, not {corrects!r}"
                    )
                entry = journal_correct(
                    corrects_entry_id=int(corrects),
                    lines=lines,
                    value_date=value_date,
                    description=description,
                    actor=_staff(),
                )
            else:
                entry = journal_manual(
                    lines=lines, value_date=value_date, description=description, actor=_staff()
                )
        except SaccoError as exc:
            db.session.rollback()
            return self._page(error=f"Not posted: {exc}.", status=400)
        flash(
            f"Entry #{entry.id} posted, dated {entry.value_date.isoformat()}"
            + (f", correcting #{entry.corrects_entry_id}." if entry.corrects_entry_id else "."),
            "success",
        )
        return redirect(url_for(".index"))


def register(console: Admin) -> None:
    console.add_view(
        PeriodsView(name="Periods", category="Books", endpoint="books_periods", url="books/periods")
    )
    console.add_view(
        ChartView(
            name="Chart of accounts", category="Books", endpoint="books_chart", url="books/chart"
        )
    )
    console.add_view(
        JournalEntryView(
            name="Journal entry", category="Books", endpoint="books_journal", url="books/journal"
        )
    )
