"""A month of a SACCO's life, then its books (issue 21, "Done when").

December 2025: members save and buy shares, loans are paid out and repaid, a loan lent in
June defaults (penalties charged by the nightly arrears job), is written off and partly
recovered, ordinary savings earn the month's interest (the real `savings-interest` job),
and last year's dividends (a late AGM) are declared, approved and posted. Then the statements: every
total is checked against a figure this test computes on its own, straight from the
journal by ledger kind (never through the chart or the statements' code), and the
drill-down of every line sums to the line. Closing December closes the year: the income
statement's result is what retained earnings gain.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import func, select

from app.extensions import db
from app.models import Account, JournalEntry, JournalLine, Loan, LoanProduct, Member, StaffUser
from app.services.books import chart_accounts, chart_lines_query, period_close
from app.services.books.chart import YEAR_END_KIND
from app.services.books.statements import (
    balance_sheet,
    cash_flow,
    changes_in_equity,
    income_statement,
    trial_balance,
)
from app.services.loans import loan_repay, loan_write_off
from app.services.members import member_buy_shares, member_deposit
from app.services.savings import (
    account_product,
    dividend_approve,
    dividend_declare,
    dividend_post,
)
from app.services.savings.money_in import account_deposit
from tests.loan_factories import make_borrower, make_loan, make_product, make_staff, reload, run_job

D = Decimal
START, END = date(2025, 12, 1), date(2025, 12, 31)
YEAR_START = date(2025, 1, 1)

ASSET_KINDS = (
    "cash", "bank", "mpesa_clearing", "b2c_utility", "loan_principal", "loan_interest",
    "loan_fees", "loan_penalty", "loan_loss_provision", "interest_suspense",
)  # fmt: skip
LIABILITY_KINDS = (
    "savings", "member_savings", "fixed_deposit", "target_savings", "withdrawals_pending",
    "refunds_payable", "withholding_tax", "dividends_payable", "suspense",
)  # fmt: skip
EQUITY_KINDS = ("share_capital", "statutory_reserve", "retained_earnings", "opening_balances")
INCOME_KINDS = ("income_interest", "income_fees", "income_penalty", "income_recovery")
EXPENSE_KINDS = ("interest_expense", "write_off_expense", "provision_expense")
CASH_KINDS = ("cash", "bank", "mpesa_clearing", "b2c_utility")


def by_kind(
    kinds: tuple[str, ...],
    *,
    upto: date,
    after: date | None = None,
    without_year_end: bool = False,
) -> Decimal:
    """The journal's own sum (debit positive) over accounts of these kinds: the figure a
    statement must show, computed without the chart or the statements."""
    stmt = (
        select(func.coalesce(func.sum(JournalLine.amount), 0))
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .join(Account, Account.id == JournalLine.account_id)
        .where(Account.kind.in_(kinds), JournalEntry.value_date <= upto)
    )
    if after is not None:
        stmt = stmt.where(JournalEntry.value_date > after)
    if without_year_end:
        stmt = stmt.where(JournalEntry.kind != YEAR_END_KIND)
    return D(db.session.scalar(stmt))


def month_of_activity() -> dict[str, object]:
    """December 2025 through the services and jobs; what was done, for the checks."""
    manager = make_staff("branch_manager")
    manager_id = manager.id
    product = make_product(
        "V1",
        default_threshold_days=30,
        penalty_type="fixed",
        penalty_value=D(200),
        fee_type="percent",
        fee_value=D(1),
    )
    product_id = product.id
    members = [make_borrower() for _ in range(3)]
    ids = [m.id for m in members]
    deposits = D(0)
    for n, member in enumerate(members):
        amount = D(20000 + 5000 * n)
        member_deposit(
            member_id=member.id, amount=amount, reference=f"DEP{n}", value_date=date(2024, 6, 1)
        )
        deposits += amount
    member_buy_shares(
        member_id=members[0].id, amount=D(5000), reference="SHR0", value_date=date(2024, 6, 2)
    )
    ordinary = account_product("ORD")
    account_deposit(
        member_id=members[1].id,
        product=ordinary,
        amount=D(50000),
        reference="ORD1",
        value_date=date(2025, 12, 1),
    )
    db.session.commit()

    # Lent in June and never paid: in default by December, penalties charged nightly.
    bad = make_loan(
        product=product, amount=10000, on=date(2025, 6, 1), member=db.session.get(Member, ids[2])
    )
    bad_id = bad.id
    run_job("loan-arrears", date(2025, 12, 1))
    assert reload(bad_id).in_default
    loan_write_off(
        loan_id=bad_id,
        staff=make_staff("compliance"),
        reason="absconded",
        value_date=date(2025, 12, 10),
    )
    # Money comes in after the write-off: a recovery.
    loan_repay(loan_id=bad_id, amount=D(3000), reference="REC1", value_date=date(2025, 12, 20))

    good = make_loan(
        product=db.session.get(LoanProduct, product_id),
        amount=12000,
        on=date(2025, 12, 2),
        member=db.session.get(Member, ids[0]),
    )
    good_id = good.id
    loan_repay(loan_id=good_id, amount=D(2500), reference="REP1", value_date=date(2025, 12, 28))

    run_job("savings-interest", date(2026, 1, 1))  # December's interest on ordinary savings
    run = dividend_declare(
        year=2024,
        share_rate="10",
        deposit_rate="5",
        method="simple",
        payout="savings",
        staff=db.session.get(StaffUser, manager_id),
    )
    dividend_approve(run_id=run.id, staff=make_staff("admin"))
    dividend_post(run_id=run.id, value_date=date(2025, 12, 15))
    return {"bad": bad_id, "good": good_id, "deposits": deposits, "manager": manager_id}


def _leaf_sums_to_line(code: str, figure: Decimal, *, as_of: date, since: date | None) -> None:
    line = next(c for c in chart_accounts() if c.code == code)
    rows = db.session.execute(chart_lines_query(line, as_of=as_of, since=since)).all()
    assert sum((r[0].amount for r in rows), D(0)) == figure, code


def test_a_month_of_activity_gives_books_that_balance_and_tie_to_the_journal(app) -> None:
    done = month_of_activity()
    assert db.session.scalar(select(func.count(Loan.id))) == 2

    tb = trial_balance(as_of=END)
    assert tb.totals["debits"] == tb.totals["credits"] > 0
    # Every leaf of the trial balance drills down to journal lines that make its figure.
    for row in tb.rows:
        if row.code and not row.bold:
            debit_value, credit_value = (v or D(0) for v in row.values[:2])
            _leaf_sums_to_line(row.code, D(debit_value) - D(credit_value), as_of=END, since=None)

    assets = by_kind(ASSET_KINDS, upto=END)
    liabilities = -by_kind(LIABILITY_KINDS, upto=END)
    result = -by_kind(INCOME_KINDS + EXPENSE_KINDS, upto=END, after=date(2024, 12, 31))
    dividends = by_kind(("dividends",), upto=END)
    equity = -by_kind(EQUITY_KINDS, upto=END) + result - dividends
    bs = balance_sheet(as_of=END)
    assert bs.totals["assets"] == assets
    assert bs.totals["liabilities"] == liabilities
    assert bs.totals["equity"] == equity
    assert bs.totals["assets"] == bs.totals["liabilities"] + bs.totals["equity"]
    # The year's result so far sits in equity (the dividends declared on their own line).
    assert bs.totals["result"] == result

    year_is = income_statement(start=YEAR_START, end=END)
    assert year_is.totals["income"] == -by_kind(INCOME_KINDS, upto=END, after=date(2024, 12, 31))
    assert year_is.totals["expenses"] == by_kind(EXPENSE_KINDS, upto=END, after=date(2024, 12, 31))
    assert year_is.totals["result"] == result
    month_is = income_statement(start=START, end=END)
    assert month_is.totals["result"] == -by_kind(
        INCOME_KINDS + EXPENSE_KINDS, upto=END, after=date(2025, 11, 30)
    )

    cf = cash_flow(start=START, end=END)
    assert cf.totals["opening_cash"] == by_kind(CASH_KINDS, upto=date(2025, 11, 30))
    assert cf.totals["closing_cash"] == by_kind(CASH_KINDS, upto=END)
    assert cf.totals["net_change_in_cash"] == cf.totals["closing_cash"] - cf.totals["opening_cash"]

    # Changes in equity run from the equity a year ago to the balance sheet's equity.
    soce = changes_in_equity(start=YEAR_START, end=END)
    assert soce.totals["closing"] == bs.totals["equity"]
    assert soce.totals["opening"] == -by_kind(
        EQUITY_KINDS + INCOME_KINDS + EXPENSE_KINDS + ("dividends",), upto=date(2024, 12, 31)
    )

    # The month did what it says: each kind of activity left its mark in the year's books.
    assert -by_kind(("income_recovery",), upto=END, after=date(2025, 11, 30)) == D(3000)
    assert -by_kind(("income_penalty",), upto=END, after=date(2025, 11, 30)) > 0
    assert by_kind(("write_off_expense",), upto=END, after=date(2025, 11, 30)) > 0
    assert by_kind(("interest_expense",), upto=END, after=date(2025, 11, 30)) > 0
    assert dividends > 0

    # Closing December closes the year: retained earnings gain the year's result, less the
    # dividends declared out of it; the year's income statement is unchanged by the close.
    retained_before = -by_kind(("retained_earnings",), upto=END)
    period_close(month=END, actor=db.session.get(StaffUser, done["manager"]))
    retained_after = -by_kind(("retained_earnings",), upto=END)
    assert retained_after - retained_before == year_is.totals["result"] - dividends
    assert (
        by_kind(INCOME_KINDS + EXPENSE_KINDS + ("dividends",), upto=END, after=date(2024, 12, 31))
        == 0
    )
    assert income_statement(start=YEAR_START, end=END).totals["result"] == year_is.totals["result"]
    after_close = balance_sheet(as_of=END)
    assert after_close.totals["assets"] == assets
    assert after_close.totals["result"] == 0
    assert (
        after_close.totals["assets"]
        == after_close.totals["liabilities"] + after_close.totals["equity"]
    )
