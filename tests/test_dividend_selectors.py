"""The reads of dividend runs the console and USSD show: the preview's largest lines, the
list of runs, a member's own figures. Rows are written directly: what is read, not how a
run makes them (tests/test_dividends.py), is under test. (Mutation testing, issue 23.)"""

from __future__ import annotations

from decimal import Decimal

import pytest
from flask import Flask

from app.extensions import db
from app.models import DividendLine, DividendRun
from app.selectors.dividends import dividend_runs, dividend_summary, member_dividends
from tests.factories import make_member
from tests.loan_factories import make_staff

D = Decimal


def _run(named: dict[str, int], year: int, status: str = "draft", **nets: str) -> int:
    """A run of `year` with a line of net `nets[name]` for each of the `named` members."""
    run = DividendRun(
        year=year,
        share_rate=D(10),
        deposit_rate=D(6),
        method="simple",
        dividend_tax_rate=D(5),
        interest_tax_rate=D(15),
        status=status,
        declared_by_id=make_staff("admin").id,
    )
    db.session.add(run)
    db.session.flush()
    for name, net in nets.items():
        db.session.add(
            DividendLine(
                run_id=run.id,
                member_id=named[name],
                share_basis=D(0),
                deposit_basis=D(0),
                dividend=D(net),
                interest=D(0),
                tax=D(0),
                net=D(net),
            )
        )
    db.session.commit()
    return run.id


@pytest.fixture
def named(app: Flask) -> dict[str, int]:
    """Four members by name, made in name order (so in member id order)."""
    ids = {name: make_member().id for name in ("amina", "baraka", "chege", "dorcas")}
    db.session.commit()
    return ids


def test_the_preview_shows_the_largest_lines_first_ties_by_member_and_no_more_than_asked(
    named: dict[str, int],
) -> None:
    # Members were made in name order; the tie of 500 is written the other way round.
    run_id = _run(named, 2025, dorcas="120.00", chege="500.00", baraka="500.00", amina="900.00")

    run, top = dividend_summary(run_id, top=3)

    assert run.id == run_id
    assert [(line.member_id, line.net) for line in top] == [
        (named["amina"], D("900.00")),
        (named["baraka"], D("500.00")),
        (named["chege"], D("500.00")),
    ]
    with pytest.raises(LookupError) as unknown:
        dividend_summary(999999)
    assert str(unknown.value) == "no dividend run 999999"


def test_runs_are_listed_newest_year_first_a_year_s_latest_run_first_twenty_at_most(
    named: dict[str, int],
) -> None:
    cancelled = _run(named, 2025, "cancelled")
    older = _run(named, 2024, "posted")
    again = _run(named, 2025)  # declared again after the cancellation
    assert [run.id for run in dividend_runs()] == [again, cancelled, older]
    assert [run.id for run in dividend_runs(limit=2)] == [again, cancelled]

    for year in range(2000, 2018):
        _run(named, year)
    listed = dividend_runs()
    assert len(listed) == 20
    assert [run.year for run in listed][-2:] == [2002, 2001]  # 2000, the 21st, is left out


def test_a_member_sees_each_year_s_live_run_newest_first_never_a_cancelled_one(
    named: dict[str, int],
) -> None:
    _run(named, 2023, "posted", amina="100.00", baraka="1.00")
    _run(named, 2024, "cancelled", amina="999.00")
    _run(named, 2024, "approved", amina="240.00")
    _run(named, 2025, "draft", amina="300.00", baraka="2.00")
    _run(named, 2022, "posted", baraka="50.00")

    mine = member_dividends(named["amina"], [2022, 2023, 2024, 2025])

    assert [(d.year, d.status, d.net) for d in mine] == [
        (2025, "draft", D("300.00")),
        (2024, "approved", D("240.00")),
        (2023, "posted", D("100.00")),
    ]
    assert member_dividends(named["amina"], [2022]) == []
