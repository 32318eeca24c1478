"""portfolio_at_risk sums in the database by days past due: loans sharing a day are
counted once each (not once an installment), and their principal lands in one bucket."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from flask import Flask

from app.selectors.loans import portfolio_at_risk
from tests.loan_factories import make_loan, make_product, run_job

D = Decimal
AS_OF = date(2026, 6, 15)


def test_loans_on_the_same_day_past_due_are_each_counted_once(app: Flask) -> None:
    product = make_product()
    # Two current loans (dpd 0) and two 10 days late (first due 5 Jun), twelve rows each.
    for amount, on in ((10000, date(2026, 6, 1)), (2500, date(2026, 6, 1))):
        make_loan(product=product, amount=amount, on=on)
    for amount in (20000, 3000):
        make_loan(product=product, amount=amount, on=date(2026, 5, 5))
    run_job("loan-arrears", AS_OF)

    p = portfolio_at_risk(as_of=AS_OF)

    assert p.loans == 4
    assert p.gross_principal == D("35500.00")
    assert p.par30_principal == D("0.00") and p.par30 == D("0.0000")
    assert p.buckets == {
        "current": D("12500.00"),
        "1-30": D("23000.00"),
        "31-60": D("0.00"),
        "61-90": D("0.00"),
        "90+": D("0.00"),
    }


def test_an_empty_book_has_no_portfolio(app: Flask) -> None:
    p = portfolio_at_risk(as_of=AS_OF)

    assert (p.loans, p.gross_principal, p.par30) == (0, D("0.00"), D("0.0000"))
    assert set(p.buckets.values()) == {D("0.00")}
