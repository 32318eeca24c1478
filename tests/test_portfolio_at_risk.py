"""portfolio_at_risk sums in the database by days past due: loans sharing a day are
counted once each (not once an installment), and their principal lands in one bucket."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from flask import Flask

from app.selectors.loans import portfolio_at_risk
from tests.loan_factories import make_loan, make_product, restructure, run_job

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


def test_a_restructured_loan_counts_its_new_schedule_not_the_one_it_replaced(app: Flask) -> None:
    # V1 disbursed 31 Jan, 36 days late on 5 April; restructured over 12 months from the
    # 10,000 principal, 192.12 interest due and 88.84 penalties (test_loans_lifecycle).
    product = make_product(penalty_type="percent", penalty_value=D("5"))
    loan_id = make_loan(product=product, on=date(2026, 1, 31)).id
    run_job("loan-arrears", date(2026, 4, 5))
    restructure(loan_id, start=date(2026, 4, 5))
    run_job("loan-arrears", date(2026, 4, 6))

    p = portfolio_at_risk(as_of=date(2026, 4, 6))

    # Only the live schedule: the superseded rows' 10,000 would make it 20,280.96.
    assert (p.loans, p.gross_principal, p.par30_principal) == (1, D("10280.96"), D("0.00"))
    assert p.buckets["current"] == D("10280.96")


def test_par30_takes_a_loan_from_its_31st_day_past_due_not_its_30th(app: Flask) -> None:
    make_loan(product=make_product(), amount=10000, on=date(2026, 5, 5))  # first due 5 June

    run_job("loan-arrears", date(2026, 7, 5))
    thirty = portfolio_at_risk(as_of=date(2026, 7, 5))
    run_job("loan-arrears", date(2026, 7, 6))
    thirty_one = portfolio_at_risk(as_of=date(2026, 7, 6))

    assert (thirty.par30_principal, thirty.par30) == (D("0.00"), D("0.0000"))
    assert thirty.buckets["1-30"] == D("10000.00")
    assert (thirty_one.par30_principal, thirty_one.par30) == (D("10000.00"), D("1.0000"))
    assert thirty_one.buckets["31-60"] == D("10000.00")
