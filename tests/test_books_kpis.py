"""The KPIs read off the books: a half year of postings made here, each KPI worked out by
hand from them; the nightly job's rows (replaced, not added, when it runs again for the
day); and the dashboard's finance section for the roles that read the books only."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import Account, KpiSnapshot
from app.services.books import chart_ensure, journal_manual, kpis_board, kpis_refresh
from app.services.books.kpis import loans_outstanding_at, month_ends
from app.services.ledger import gl_account
from tests.helpers import browse as _browse
from tests.helpers import login, staff
from tests.loan_factories import make_borrower, make_loan, make_product, make_staff, run_job

D = Decimal
AS_OF = date(2026, 6, 30)


def browse(client: FlaskClient, path: str):  # noqa: ANN201
    db.session.commit()  # the test's read transaction holds SQLite's lock
    return _browse(client, path)


def _book() -> None:
    """Half a year: 100,000 of capital brought forward into the bank; three loans at a
    flat 12% a year over 12 months (interest income in full at disbursement: 1,200,
    2,400 and 600), each borrower with deposits equal to the loan, never repaid; a member
    with 3,000 of shares; 500 of fees received and 900 of interest paid, by the bank."""
    chart_ensure()
    for code in ("GL-BANK", "GL-OPENING", "GL-INCOME-FEES", "GL-INTEREST-EXPENSE"):
        gl_account(code)  # the general-ledger accounts the entries post to
    manager = make_staff("branch_manager")
    journal_manual(
        lines=[("GL-BANK", D(100_000)), ("GL-OPENING", D(-100_000))],
        value_date=date(2026, 1, 1),
        description="capital brought forward",
        actor=manager,
    )
    product = make_product("V1", interest_method="flat")
    make_loan(product=product, amount=10_000, on=date(2026, 1, 1))  # 149 days late on 30 Jun
    make_loan(product=product, amount=20_000, on=date(2026, 5, 1))  # 29 days late
    make_loan(product=product, amount=5_000, on=date(2026, 6, 1))  # current
    make_borrower(shares=3000)
    journal_manual(
        lines=[("GL-BANK", D(500)), ("GL-INCOME-FEES", D(-500))],
        value_date=date(2026, 4, 15),
        description="fees received",
        actor=manager,
    )
    journal_manual(
        lines=[("GL-INTEREST-EXPENSE", D(900)), ("GL-BANK", D(-900))],
        value_date=date(2026, 3, 31),
        description="interest on deposits",
        actor=manager,
    )
    run_job("loan-arrears", AS_OF)


def _held(kind: str) -> Decimal:
    return db.session.scalar(select(func.sum(Account.balance)).where(Account.kind == kind)) or D(0)


def test_each_kpi_matches_the_figure_worked_out_by_hand(app: Flask) -> None:
    _book()
    # The postings as the hand figures assume them.
    assert _held("loan_interest") == D("4200.00")
    assert _held("savings") == D("-35000.00") and _held("share_capital") == D("-3000.00")
    assert _held("mpesa_clearing") == D("38000.00") and _held("b2c_utility") == D("-35000.00")

    values = kpis_refresh(AS_OF)

    # Interest 4,200 over 181 days, annualised; principal outstanding at 31 Dec and each
    # month end after (0, 10,000 four times, 30,000) and on 30 June (35,000): 15,000.
    assert values["portfolio_yield"] == (D(4200) * 365 / 181 / D(15000)).quantize(D("0.000001"))
    assert values["portfolio_yield"] == D("0.564641")
    # Expenses 900 over income 4,200 + 500.
    assert values["cost_to_income"] == D("0.191489")
    # The 10,000 loan 149 days late, of 35,000: more than 30 days, and doubtful (NPL).
    assert values["par30"] == D("0.285714")
    assert values["npl_ratio"] == D("0.285714")
    # Bank 100,000 + 500 - 900, clearing 38,000 in, B2C 35,000 out: 102,600 liquid, over
    # members' deposits 35,000 (nothing payable).
    assert values["liquidity_ratio"] == D("2.931429")
    # Shares 3,000 and capital brought forward 100,000 over assets 102,600 + loans 35,000
    # + interest receivable 4,200.
    assert values["capital_ratio"] == D("0.726375")
    rows = dict(
        db.session.execute(
            select(KpiSnapshot.name, KpiSnapshot.value).where(KpiSnapshot.as_of == AS_OF)
        ).all()
    )
    assert rows == values


def test_the_average_principal_reads_each_month_end_and_the_day(app: Flask) -> None:
    _book()
    days = month_ends(date(2025, 12, 31), AS_OF)

    assert days == [
        date(2025, 12, 31),
        date(2026, 1, 31),
        date(2026, 2, 28),
        date(2026, 3, 31),
        date(2026, 4, 30),
        date(2026, 5, 31),
        AS_OF,
    ]
    held = loans_outstanding_at(days)
    assert [held[day] for day in days] == [0, 10000, 10000, 10000, 10000, 30000, 35000]
    assert month_ends(date(2025, 12, 31), date(2026, 1, 31)) == [
        date(2025, 12, 31),
        date(2026, 1, 31),
    ]


def test_the_nightly_job_run_again_for_the_day_replaces_its_rows(app: Flask) -> None:
    _book()
    run_job("books-kpis", AS_OF)
    first = dict(
        db.session.execute(
            select(KpiSnapshot.name, KpiSnapshot.value).where(KpiSnapshot.as_of == AS_OF)
        ).all()
    )
    run_job("books-kpis", AS_OF)
    again = dict(
        db.session.execute(
            select(KpiSnapshot.name, KpiSnapshot.value).where(KpiSnapshot.as_of == AS_OF)
        ).all()
    )

    assert len(first) == 6 and again == first
    assert db.session.scalar(select(func.count()).select_from(KpiSnapshot)) == 6
    # A posting later dated that day: the next run replaces the day's figure.
    journal_manual(
        lines=[("GL-INTEREST-EXPENSE", D(1450)), ("GL-BANK", D(-1450))],
        value_date=AS_OF,
        description="more interest on deposits",
        actor=make_staff("branch_manager"),
    )
    run_job("books-kpis", AS_OF)
    assert db.session.scalar(select(func.count()).select_from(KpiSnapshot)) == 6
    assert db.session.scalar(
        select(KpiSnapshot.value).where(
            KpiSnapshot.as_of == AS_OF, KpiSnapshot.name == "cost_to_income"
        )
    ) == D("0.500000")  # (900 + 1,450) over 4,700


def test_an_empty_book_writes_no_ratio_it_cannot_divide(app: Flask) -> None:
    chart_ensure()

    values = kpis_refresh(AS_OF)

    assert set(values.values()) == {None}
    assert db.session.scalar(select(func.count()).select_from(KpiSnapshot)) == 0
    assert kpis_board().latest_on is None


def _signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    email = staff(role)  # its own sign-in (the book's manager has another password)
    db.session.commit()
    assert login(client, email).status_code == 302
    return client


@pytest.fixture
def snapshots(app: Flask) -> None:
    """The book's KPIs at three month ends and on a later day (the latest)."""
    _book()
    for day in (date(2026, 4, 30), date(2026, 5, 20), date(2026, 5, 31), AS_OF):
        kpis_refresh(day)


def test_the_board_has_the_latest_day_and_the_month_ends_before_it(
    app: Flask, snapshots: None
) -> None:
    board = kpis_board()

    assert board.latest_on == AS_OF
    assert board.latest["par30"] == D("0.285714")
    # 20 May is not its month's last day computed: 31 May stands for May.
    assert [day for day, _ in board.history] == [date(2026, 4, 30), date(2026, 5, 31)]
    # On 30 April only the 10,000 loan was out: no yield yet to speak of is still a yield.
    april = board.history[0][1]
    assert april["capital_ratio"] == kpis_refresh(date(2026, 4, 30))["capital_ratio"]


@pytest.mark.parametrize("role", ["branch_manager", "auditor"])
def test_the_dashboard_shows_the_kpis_to_roles_that_read_the_books(
    app: Flask, snapshots: None, role: str
) -> None:
    page = browse(_signed_in(app, role), "/admin/").get_data(as_text=True)

    assert 'id="finance-kpis"' in page
    assert "as of 30 Jun 2026" in page
    par = page.split('id="kpi-par30"')[1].split("</tr>")[0]
    assert "28.57%" in par
    liquidity = page.split('id="kpi-liquidity_ratio"')[1].split("</tr>")[0]
    assert "293.14%" in liquidity
    assert "30 Apr 26" in page and "31 May 26" in page and "20 May 26" not in page


def test_the_dashboard_hides_the_kpis_from_a_loan_officer(app: Flask, snapshots: None) -> None:
    page = browse(_signed_in(app, "loan_officer"), "/admin/")

    assert page.status_code == 200
    assert 'id="finance-kpis"' not in page.get_data(as_text=True)


def test_before_the_first_night_the_section_says_so(app: Flask) -> None:
    page = browse(_signed_in(app, "auditor"), "/admin/").get_data(as_text=True)

    assert 'id="finance-kpis"' in page
    assert "No KPIs yet" in page
