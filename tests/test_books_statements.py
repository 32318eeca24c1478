"""The financial statements against figures the test works out itself.

A year and a bit of activity goes through the real services (deposits, shares, two loans,
a repayment, a write-off and a recovery) and a few general-ledger entries (fees, interest
on savings, a provision, dividends declared and paid, a transfer to the statutory reserve,
a year 2025 whose result is not yet closed). Every posting's legs are written down here,
by chart code, as the test makes them; the expected figures are sums over that list, not
anything the statements service computed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

import pytest

from app.extensions import db
from app.models import Loan
from app.services.books import chart_ensure, period_close
from app.services.books.exports import Report, ReportRow
from app.services.books.statements import (
    EARLIER,
    RESULT_YTD,
    StatementError,
    balance_sheet,
    cash_flow,
    changes_in_equity,
    income_statement,
    previous_month_end,
    previous_period,
    same_period_last_year,
    statement_drill_window,
    statement_drilldown,
    statement_windows,
    trial_balance,
)
from app.services.ledger import credit, debit, gl_account, journal_post, member_account
from app.services.loans import loan_repay, loan_write_off
from app.services.members import member_buy_shares, member_deposit
from tests.loan_factories import make_borrower, make_loan, make_product, make_staff, receivables

D = Decimal
ASSET_CODES = ("1110", "1120", "1130", "1140", "1210-V1", "1210-V9", "1220", "1250")
CASH_CODES = ("1110", "1120", "1130", "1140")
LIABILITY_CODES = ("2110", "2240")
EQUITY_CODES = ("3100", "3210", "3220", "3300")
INCOME_CODES = ("4100", "4200", "4400")
EXPENSE_CODES = ("5100", "5200", "5300")
END = date(2026, 11, 30)
LAST_YEAR_END = date(2025, 12, 31)

pytestmark = pytest.mark.usefixtures("app")


@dataclass
class Books:
    """Every leg the test posted: (value date, entry kind, chart code, debit-positive)."""

    legs: list[tuple[date, str, str, Decimal]] = field(default_factory=list)

    def add(self, day: date, kind: str, *legs: tuple[str, Decimal | str | int]) -> None:
        assert sum(D(str(amount)) for _code, amount in legs) == 0, "the test's own entry"
        self.legs += [(day, kind, code, D(str(amount))) for code, amount in legs]

    def sum(
        self,
        codes: Iterable[str],
        as_of: date,
        since: date | None = None,
        without_year_end: bool = False,
    ) -> Decimal:
        wanted = set(codes)
        return sum(
            (
                amount
                for day, kind, code, amount in self.legs
                if code in wanted
                and day <= as_of
                and (since is None or day > since)
                and not (without_year_end and kind == "year_end_close")
            ),
            D("0"),
        )


def _gl(books: Books, day: date, key: str, *legs: tuple[str, str, str]) -> None:
    """A general-ledger entry: (ledger code, chart code, debit-positive amount) legs."""
    journal_post(
        kind="test_entry",
        lines=[
            debit(gl_account(ledger), D(amount))
            if D(amount) > 0
            else credit(gl_account(ledger), -D(amount))
            for ledger, _code, amount in legs
        ],
        value_date=day,
        description=key,
        idempotency_key=f"test:{key}",
    )
    db.session.commit()
    books.add(day, "test_entry", *[(code, amount) for _l, code, amount in legs])


def _activity() -> tuple[Books, dict[str, object]]:
    chart_ensure()
    books = Books()
    facts: dict[str, object] = {}
    # 2025: fees of 1,000 in cash and 100 of interest paid on deposits; never closed here.
    _gl(
        books,
        date(2025, 11, 15),
        "fees-2025",
        ("GL-CASH", "1110", "1000"),
        ("GL-INCOME-FEES", "4200", "-1000"),
    )
    _gl(
        books,
        date(2025, 12, 20),
        "interest-2025",
        ("GL-INTEREST-EXPENSE", "5100", "100"),
        ("GL-CASH", "1110", "-100"),
    )

    # A saver: 50,000 deposited through M-PESA, 5,000 of it into shares.
    saver = make_borrower()
    member_deposit(
        member_id=saver.id, amount="50000", reference="DEP-1", value_date=date(2026, 1, 5)
    )
    books.add(date(2026, 1, 5), "deposit", ("1130", 50000), ("2110", -50000))
    member_buy_shares(
        member_id=saver.id, amount="5000", reference="SH-1", value_date=date(2026, 1, 10)
    )
    books.add(date(2026, 1, 10), "share_purchase", ("2110", 5000), ("3100", -5000))

    # A loan of 10,000 on 1 February: the whole schedule's interest is income at once.
    borrower = make_borrower(savings=10000)  # deposited on 1 January 2026
    books.add(date(2026, 1, 1), "deposit", ("1130", 10000), ("2110", -10000))
    loan = make_loan(product=make_product("V1"), amount=10000, on=date(2026, 2, 1), member=borrower)
    interest = receivables(loan)["interest"]
    assert interest > 0
    books.add(date(2026, 2, 1), "disbursement", ("1210-V1", 10000), ("1140", -10000))
    books.add(date(2026, 2, 1), "disbursement", ("1220", interest), ("4100", -interest))
    before = receivables(loan)
    loan_repay(loan_id=loan.id, amount="1500", reference="REPAY-1", value_date=date(2026, 3, 1))
    after = receivables(db.session.get(Loan, loan.id))  # type: ignore[arg-type]
    paid_principal = before["principal"] - after["principal"]
    paid_interest = before["interest"] - after["interest"]
    assert paid_principal + paid_interest == D("1500")
    books.add(
        date(2026, 3, 1),
        "repayment",
        ("1130", 1500),
        ("1210-V1", -paid_principal),
        ("1220", -paid_interest),
    )

    # A loan that goes bad: written off in April, 1,000 recovered in May.
    bad = make_loan(
        product=make_product("V1", code="V9", name="Defaulting"), amount=8000, on=date(2026, 1, 15)
    )
    books.add(date(2026, 1, 1), "deposit", ("1130", 8000), ("2110", -8000))  # its borrower's
    bad_interest = receivables(bad)["interest"]
    books.add(date(2026, 1, 15), "disbursement", ("1210-V9", 8000), ("1140", -8000))
    books.add(date(2026, 1, 15), "disbursement", ("1220", bad_interest), ("4100", -bad_interest))
    bad.in_default = True  # what the arrears job would say by April; set here, not run
    db.session.commit()
    loan_write_off(
        loan_id=bad.id,
        staff=make_staff("branch_manager"),
        reason="gone",
        value_date=date(2026, 4, 15),
    )
    written_off = 8000 + bad_interest
    books.add(
        date(2026, 4, 15),
        "write_off",
        ("5200", written_off),
        ("1210-V9", -8000),
        ("1220", -bad_interest),
    )
    loan_repay(loan_id=bad.id, amount="1000", reference="RECOVER-1", value_date=date(2026, 5, 10))
    books.add(date(2026, 5, 10), "recovery", ("1130", 1000), ("4400", -1000))

    # Interest on the saver's deposits, a provision, dividends declared and part paid, and
    # a transfer from retained earnings to the statutory reserve.
    journal_post(
        kind="test_entry",
        lines=[
            debit(gl_account("GL-INTEREST-EXPENSE"), D("300")),
            credit(member_account(saver, "savings"), D("300")),
        ],
        value_date=date(2026, 3, 31),
        idempotency_key="test:savings-interest",
    )
    db.session.commit()
    books.add(date(2026, 3, 31), "test_entry", ("5100", 300), ("2110", -300))
    _gl(
        books,
        date(2026, 6, 30),
        "provision",
        ("GL-PROVISION-EXPENSE", "5300", "500"),
        ("GL-LOAN-LOSS-PROVISION", "1250", "-500"),
    )
    _gl(
        books,
        date(2026, 7, 1),
        "dividends",
        ("GL-DIVIDENDS", "3300", "200"),
        ("GL-DIVIDENDS-PAYABLE", "2240", "-200"),
    )
    _gl(
        books,
        date(2026, 7, 20),
        "dividends-paid",
        ("GL-DIVIDENDS-PAYABLE", "2240", "50"),
        ("GL-BANK", "1120", "-50"),
    )
    _gl(
        books,
        date(2026, 7, 2),
        "reserve",
        ("GL-RETAINED-EARNINGS", "3220", "100"),
        ("GL-STATUTORY-RESERVE", "3210", "-100"),
    )
    # After the statements' end: must not show.
    _gl(
        books,
        date(2026, 12, 2),
        "after-end",
        ("GL-CASH", "1110", "999"),
        ("GL-INCOME-FEES", "4200", "-999"),
    )
    facts.update(interest=interest, bad_interest=bad_interest, written_off=written_off)
    return books, facts


def _row(report: Report, label: str | None = None, code: str | None = None) -> ReportRow:
    rows = [
        r
        for r in report.rows
        if (label is None or r.label == label) and (code is None or r.code == code)
    ]
    assert len(rows) == 1, (label, code, [r.label for r in report.rows])
    return rows[0]


def _codes(report: Report) -> dict[str, ReportRow]:
    return {row.code: row for row in report.rows if row.code}


def test_trial_balance_lists_every_balance_and_debits_equal_credits() -> None:
    books, _facts = _activity()
    tb = trial_balance(as_of=END)
    codes = {code for _d, _k, code, _a in books.legs}
    expected = {code: books.sum([code], END) for code in codes}
    shown = _codes(tb)
    assert set(shown) == {code for code, amount in expected.items() if amount}
    for code, row in shown.items():
        debit_value, credit_value = row.values
        assert (debit_value or 0) - (credit_value or 0) == expected[code], code
    debits = sum(a for a in expected.values() if a > 0)
    assert tb.totals == {"debits": debits, "credits": debits}
    assert tb.rows[-1].check is None


def test_balance_sheet_balances_with_the_year_so_far_and_last_year_not_closed() -> None:
    books, facts = _activity()
    bs = balance_sheet(as_of=END, compare_to=LAST_YEAR_END)
    assets = books.sum(ASSET_CODES, END)
    liabilities = -books.sum(LIABILITY_CODES, END)
    result_2026 = -books.sum(INCOME_CODES + EXPENSE_CODES, END, since=LAST_YEAR_END)
    result_2025 = -books.sum(INCOME_CODES + EXPENSE_CODES, LAST_YEAR_END)
    assert result_2025 == D("900")
    assert result_2026 == (
        facts["interest"] + facts["bad_interest"] + 1000 - 300 - facts["written_off"] - 500  # type: ignore[operator]
    )
    equity = D("5000") + D("100") - D("100") - D("200") + result_2026 + result_2025
    assert bs.totals == {
        "assets": assets,
        "liabilities": liabilities,
        "equity": equity,
        "result": result_2026,
    }
    assert assets == liabilities + equity
    assert _row(bs, "Total liabilities and equity").values == [assets, D("900")]
    assert _row(bs, "Total liabilities and equity").check is None
    # The provision is a negative under the loans; dividends this year's; results apart.
    assert _row(bs, code="1250").values == [D("-500"), D("0")]
    assert _row(bs, code="3300").values == [D("-200"), D("0")]
    assert _row(bs, RESULT_YTD).values == [result_2026, result_2025]
    assert _row(bs, EARLIER).values == [result_2025, D("0")]
    assert _row(bs, code="3220").values == [D("-100"), D("0")]
    assert _row(bs, "Total assets").values == [assets, D("900")]
    # Each leaf's figure is the test's own sum; the 999 after the end is nowhere.
    for code in ("1110", "1120", "1130", "1140", "1210-V1", "1220", "2110", "2240", "3100"):
        sign = 1 if code[0] == "1" else -1
        assert _row(bs, code=code).values[0] == sign * books.sum([code], END), code
    assert _row(bs, code="1110").values == [D("900"), D("900")]


def test_income_statement_result_and_comparative_leave_out_the_year_end_close() -> None:
    books, facts = _activity()
    report = income_statement(
        start=date(2026, 1, 1), end=END, compare=(date(2025, 1, 1), date(2025, 11, 30))
    )
    since = LAST_YEAR_END
    income = -books.sum(INCOME_CODES, END, since)
    expenses = books.sum(EXPENSE_CODES, END, since)
    assert report.totals == {"income": income, "expenses": expenses, "result": income - expenses}
    assert _row(report, code="4400").values == [D("1000"), D("0")]
    assert _row(report, code="5200").values == [facts["written_off"], D("0")]
    assert _row(report, "Result for the period").values == [income - expenses, D("1000")]

    # The year 2025 closes: its result moves to retained earnings, which change by exactly
    # the income statement's result; the statement itself does not change.
    period_close(month=date(2025, 12, 1), actor=make_staff("admin"))
    year_2025 = income_statement(start=date(2025, 1, 1), end=LAST_YEAR_END)
    assert year_2025.totals["result"] == D("900")
    equity_2025 = changes_in_equity(start=date(2025, 1, 1), end=LAST_YEAR_END)
    retained = [r.label for r in equity_2025.rows]
    column = equity_2025.columns.index("Retained earnings")
    closing = equity_2025.rows[retained.index("Balance at 31 December 2025")].values[column]
    opening = equity_2025.rows[0].values[column]
    assert closing - opening == year_2025.totals["result"]  # type: ignore[operator]
    # After the close: no earlier-year line, retained earnings hold 2025, totals unchanged.
    bs = balance_sheet(as_of=END, compare_to=LAST_YEAR_END)
    assert EARLIER not in [r.label for r in bs.rows]
    assert _row(bs, code="3220").values == [D("800"), D("900")]
    assert _row(bs, RESULT_YTD).values[1] == D("0")
    assert bs.totals["assets"] == bs.totals["liabilities"] + bs.totals["equity"]
    assert bs.totals["result"] == -books.sum(INCOME_CODES + EXPENSE_CODES, END, LAST_YEAR_END)


def test_changes_in_equity_move_opening_to_the_balance_sheet_closing() -> None:
    books, _facts = _activity()
    report = changes_in_equity(start=date(2026, 1, 1), end=END)
    result = -books.sum(INCOME_CODES + EXPENSE_CODES, END, LAST_YEAR_END)
    rows = {row.label: row.values for row in report.rows}
    total = len(report.columns) - 1
    assert report.columns[-2:] == ["Result not yet closed", "Total"]
    shares = report.columns.index("Share capital")
    assert rows["Share capital issued"][shares] == D("5000")
    assert rows["Share capital redeemed or refunded"][shares] == D("0")
    assert rows["Result for the period"][total] == result == report.totals["result"]
    assert rows["Dividends declared"][total] == D("-200")
    reserve = report.columns.index("Statutory reserve")
    retained = report.columns.index("Retained earnings")
    moved = rows["Transfers to reserves and other movements"]
    assert (moved[reserve], moved[retained], moved[total]) == (D("100"), D("-100"), D("0"))
    assert report.totals["opening"] == balance_sheet(as_of=LAST_YEAR_END).totals["equity"]
    assert report.totals["closing"] == balance_sheet(as_of=END).totals["equity"]
    assert report.totals["closing"] == report.totals["opening"] + D("5000") + result - D("200")
    assert report.rows[-1].check is None


def test_cash_flow_explains_the_change_in_cash() -> None:
    books, facts = _activity()
    report = cash_flow(start=date(2026, 1, 1), end=END)
    opening = books.sum(CASH_CODES, LAST_YEAR_END)
    closing = books.sum(CASH_CODES, END)
    assert report.totals == {
        "net_change_in_cash": closing - opening,
        "opening_cash": opening,
        "closing_cash": closing,
    }
    assert opening == D("900")
    # Cash in: 50,000 + 10,000 + 8,000 deposited, 1,500 repaid, 1,000 recovered;
    # out: 18,000 lent, 50 of dividends paid.
    assert closing - opening == D("50000") + 10000 + 8000 + 1500 + 1000 - 18000 - 50
    rows = {row.label: row.values[0] for row in report.rows}
    assert rows["Loan-loss provision charge"] == D("500")
    assert rows["Loans written off"] == facts["written_off"]
    assert rows["Increase / (decrease) in member deposits and savings"] == -books.sum(
        ["2110"], END, LAST_YEAR_END
    )
    assert rows["Share capital issued less redeemed"] == D("5000")
    assert rows["Dividends declared"] == D("-200")
    assert rows["Increase / (decrease) in payables and other liabilities"] == D("150")
    # Loans: 18,000 lent with its interest charged, 1,500 repaid; the write-off and the
    # provision moved no cash (added back above, so not counted again here).
    loans = -books.sum(("1210-V1", "1210-V9", "1220", "1250"), END, LAST_YEAR_END)
    assert (
        rows["(Increase) / decrease in loans and receivables"] == loans - 500 - facts["written_off"]
    )  # type: ignore[operator]
    assert loans - 500 - facts["written_off"] == -(  # type: ignore[operator]
        D("18000") + facts["interest"] + facts["bad_interest"] - 1500  # type: ignore[operator]
    )
    assert report.rows[-1].check is None


def test_each_figure_drills_down_to_lines_that_sum_to_it() -> None:
    books, _facts = _activity()
    params_bs = {"as_of": END, "compare_to": LAST_YEAR_END}
    params_is = {
        "start": date(2026, 1, 1),
        "end": END,
        "compare": (date(2025, 1, 1), LAST_YEAR_END),
    }
    checked = 0
    for kind, report, params in (
        ("bs", balance_sheet(**params_bs), params_bs),  # type: ignore[arg-type]
        ("is", income_statement(**params_is), params_is),  # type: ignore[arg-type]
    ):
        windows = statement_windows(kind, **params)
        for row in report.rows:
            if not row.code:
                continue
            for value, window in zip(row.values, windows, strict=True):
                window = statement_drill_window(kind, row.code, window)
                drill = statement_drilldown(
                    code=row.code,
                    as_of=window.as_of,
                    since=window.since,
                    without_year_end=window.without_year_end,
                    per_page=1000,
                )
                assert drill.figure == value, (kind, row.code)
                assert sum((r.amount for r in drill.rows), D("0")) == drill.total
                assert len(drill.rows) == drill.count
                checked += 1
    assert checked > 20
    # Pages: two lines a page over the M-PESA clearing's five movements.
    first = statement_drilldown(code="1130", as_of=END, per_page=2)
    last = statement_drilldown(code="1130", as_of=END, per_page=2, page=first.pages)
    assert (first.count, first.pages, len(first.rows), len(last.rows)) == (5, 3, 2, 1)
    assert first.rows[0].value_date <= first.rows[1].value_date
    # A header's drill-down gathers its lines: cash and equivalents.
    cash = statement_drilldown(code="1100", as_of=END, per_page=500)
    assert cash.figure == books.sum(CASH_CODES, END)


def test_bad_dates_and_lines_are_refused_in_words() -> None:
    chart_ensure()
    with pytest.raises(StatementError, match="starts"):
        income_statement(start=date(2026, 2, 1), end=date(2026, 1, 31))
    with pytest.raises(StatementError, match="starts"):
        cash_flow(start=date(2026, 2, 1), end=date(2026, 1, 31))
    with pytest.raises(StatementError, match="no line 9999"):
        statement_drilldown(code="9999", as_of=END)


def test_comparison_periods() -> None:
    assert previous_month_end(date(2026, 11, 30)) == date(2026, 10, 31)
    assert previous_period(date(2026, 11, 1), date(2026, 11, 30)) == (
        date(2026, 10, 1),
        date(2026, 10, 31),
    )
    assert previous_period(date(2026, 1, 1), date(2026, 3, 31)) == (
        date(2025, 10, 1),
        date(2025, 12, 31),
    )
    assert previous_period(date(2026, 3, 5), date(2026, 3, 14)) == (
        date(2026, 2, 23),
        date(2026, 3, 4),
    )
    assert same_period_last_year(date(2024, 2, 1), date(2024, 2, 29)) == (
        date(2023, 2, 1),
        date(2023, 2, 28),
    )
