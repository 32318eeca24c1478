"""SASRA's returns from the books: the ratios against figures worked out by hand from the
postings each test makes, the check column where a ratio falls below its minimum, the
workbook read back (sheet names, headings, figure cells), and the Regulatory page: who
sees it, every download audited, marking a return filed."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openpyxl import load_workbook
from sqlalchemy import select

from app.extensions import db
from app.models import AuditLog, StaffUser
from app.models.books import RegulatoryFiling
from app.services.books import (
    FORMS,
    ReturnError,
    chart_add,
    return_due,
    return_file,
    returns_build,
    returns_pdf,
    returns_status,
    returns_xlsx,
)
from app.services.books.periods import journal_manual
from app.services.books.provisioning import provision_classify, provision_run
from app.services.ledger import gl_account
from app.services.members import member_buy_shares, member_deposit
from app.services.permissions import PermissionDenied
from tests.factories import make_member
from tests.helpers import browse as _browse
from tests.helpers import login, post_form, staff
from tests.loan_factories import make_loan, make_product

MONTH_END = date(2026, 10, 31)
D = Decimal


def _post(day: date, *lines: tuple[str, str]) -> None:
    """A general journal entry (GL- or COA- codes, signed amounts, debit positive)."""
    for code, _ in lines:
        if code.startswith("GL-"):
            gl_account(code)
    journal_manual(
        lines=[(code, D(amount)) for code, amount in lines],
        value_date=day,
        description="test posting",
        actor="system",
    )


def _month_of_books() -> None:
    """October 2026, worked by hand in the tests below:

    assets   M-PESA clearing 90,000 (two deposits), bank 50,000, cash 6,000 = 146,000
    deposits member deposits 40,000 + 30,000 = 70,000; payables WHT 2,000
    equity   shares 20,000, statutory reserve 10,000, brought forward 40,000,
             surplus of the year 5,000 fees - 1,000 interest = 4,000
    core capital 74,000; institutional capital 54,000."""
    a, b = make_member(), make_member()
    member_deposit(member_id=a.id, amount=60000, reference="R-A", value_date=date(2026, 10, 5))
    member_deposit(member_id=b.id, amount=30000, reference="R-B", value_date=date(2026, 10, 5))
    member_buy_shares(member_id=a.id, amount=20000, reference="S-A", value_date=date(2026, 10, 6))
    _post(date(2026, 10, 1), ("GL-BANK", "50000"), ("GL-OPENING", "-50000"))
    _post(date(2026, 10, 10), ("GL-CASH", "5000"), ("GL-INCOME-FEES", "-5000"))
    _post(date(2026, 10, 11), ("GL-INTEREST-EXPENSE", "1000"), ("GL-CASH", "-1000"))
    _post(date(2026, 10, 12), ("GL-OPENING", "10000"), ("GL-STATUTORY-RESERVE", "-10000"))
    _post(date(2026, 10, 13), ("GL-CASH", "2000"), ("GL-WHT-PAYABLE", "-2000"))
    # After the month end: never in October's return.
    _post(date(2026, 11, 2), ("GL-CASH", "999"), ("GL-INCOME-FEES", "-999"))


def _row(report: object, label: str) -> object:
    found = [row for row in report.rows if row.label == label]  # type: ignore[attr-defined]
    assert len(found) == 1, label
    return found[0]


@pytest.fixture
def settings(app: Flask) -> Iterator[None]:
    before = app.config["SETTINGS"]
    yield
    app.config["SETTINGS"] = before


def test_capital_adequacy_ratios_match_the_hand_computed_figures(app: Flask) -> None:
    _month_of_books()
    [report] = returns_build("capital_adequacy", MONTH_END)
    assert report.totals["core_capital"] == D("74000")
    assert report.totals["institutional_capital"] == D("54000")
    assert report.totals["total_assets"] == D("146000")
    assert report.totals["total_deposits"] == D("70000")
    # 74,000 / 146,000 = 50.6849%; 54,000 / 146,000 = 36.9863%; 74,000 / 70,000 = 105.7142%
    assert report.totals["core_to_assets"] == D("50.68")
    assert report.totals["institutional_to_assets"] == D("36.99")
    assert report.totals["core_to_deposits"] == D("105.71")
    # Every ratio clears its minimum; 74,000 of core capital is below the KES 10 million.
    assert _row(report, "Core capital to total assets").check is None
    assert _row(report, "Institutional capital to total assets").check is None
    assert _row(report, "Core capital to total deposits").check is None
    assert _row(report, "Core capital against the minimum core capital").check == "below minimum"
    assert _row(report, "Surplus of the year to date").values[0] == D("4000")
    assert _row(report, "Balances brought forward").values[0] == D("40000")


def test_a_ratio_below_its_minimum_is_flagged(app: Flask) -> None:
    _month_of_books()
    big = make_member()
    member_deposit(member_id=big.id, amount=1000000, reference="R-BIG", value_date=MONTH_END)
    [report] = returns_build("capital_adequacy", MONTH_END)
    # 74,000 / 1,146,000 = 6.457%; 54,000 / 1,146,000 = 4.712%; 74,000 / 1,070,000 = 6.916%
    assert report.totals["core_to_assets"] == D("6.46")
    assert report.totals["institutional_to_assets"] == D("4.71")
    assert report.totals["core_to_deposits"] == D("6.92")
    for label in (
        "Core capital to total assets",
        "Institutional capital to total assets",
        "Core capital to total deposits",
    ):
        assert _row(report, label).check == "below minimum", label


def test_the_minimums_are_settings(app: Flask, settings: None) -> None:
    _month_of_books()
    app.config["SETTINGS"] = dataclasses.replace(
        app.config["SETTINGS"],
        SASRA_MIN_CORE_CAPITAL="50000",
        SASRA_CORE_CAPITAL_TO_DEPOSITS_PERCENT="110",
    )
    [report] = returns_build("capital_adequacy", MONTH_END)
    assert _row(report, "Core capital against the minimum core capital").check is None
    row = _row(report, "Core capital to total deposits")
    assert row.values == [None, D("105.71"), D("110")]
    assert row.check == "below minimum"


def test_liquidity_statement_against_deposits_and_short_term_liabilities(app: Flask) -> None:
    _month_of_books()
    [report] = returns_build("liquidity", MONTH_END)
    # Everything the SACCO holds is liquid here: 146,000 against 70,000 + 2,000.
    assert report.totals["liquid_assets"] == D("146000")
    assert report.totals["deposits_and_short_term"] == D("72000")
    assert report.totals["liquidity_ratio"] == D("202.78")  # 146,000 / 72,000 = 202.777%
    assert report.totals["required"] == D("10800")  # 15% of 72,000
    assert not any(row.check for row in report.rows)
    # Staff buy a building with 140,000 of the M-PESA money: 6,000 liquid is 8.33%.
    chart_add(code="1500", name="Land and buildings", type="asset", parent_code="1000", actor="x")
    _post(date(2026, 10, 20), ("COA-1500", "140000"), ("GL-MPESA-CLEARING", "-140000"))
    [report] = returns_build("liquidity", MONTH_END)
    assert report.totals["liquid_assets"] == D("6000")
    assert report.totals["liquidity_ratio"] == D("8.33")
    ratio = _row(report, "Liquid assets to deposits and short-term liabilities")
    assert ratio.values == [None, D("8.33"), D("15")] and ratio.check == "below minimum"
    deficiency = _row(report, "Excess / (deficiency) of liquid assets")
    assert deficiency.values[0] == D("-4800") and deficiency.check == "below minimum"
    # The building is an asset still: capital adequacy's total assets do not change.
    [capital] = returns_build("capital_adequacy", MONTH_END)
    assert capital.totals["total_assets"] == D("146000")


def test_deposit_return_by_product_and_size(app: Flask) -> None:
    _month_of_books()
    [report] = returns_build("deposits", MONTH_END)
    assert report.totals == {"accounts": D(2), "deposits": D("70000")}
    deposits = _row(report, "Member deposits")
    assert deposits.values == ["2", D("70000")] and deposits.check is None
    assert _row(report, "10,001 to 50,000").values == ["2", D("70000")]
    assert _row(report, "Up to 10,000").values == ["0", D("0")]
    assert _row(report, "Over 1,000,000").values == ["0", D("0")]


def test_risk_classification_reads_provisioning_and_the_provision_held(app: Flask) -> None:
    product = make_product()
    loans = [
        make_loan(product=product, amount=amount, on=date(2026, 10, 1))
        for amount in (
            10000,
            25000,
        )
    ]
    rows = provision_classify(MONTH_END)
    assert {row.loan_id for row in rows} == {loan.id for loan in loans}
    principal = sum((row.principal for row in rows), D(0))
    required = sum((row.provision for row in rows), D(0))
    [report] = returns_build("risk_classification", MONTH_END)
    performing = report.rows[1]
    assert performing.label == "Performing"
    assert performing.values == ["2", principal, D("1"), required]
    assert required == (principal / 100).quantize(D("0.01"))  # 1% of performing principal
    assert report.totals["required"] == required
    short = _row(report, "Excess / (shortfall) of provision held")
    assert short.values[3] == -required and short.check == "under-provided"
    provision_run(MONTH_END)
    [report] = returns_build("risk_classification", MONTH_END)
    assert report.totals["held"] == required
    assert _row(report, "Excess / (shortfall) of provision held").check is None


def test_the_workbook_reads_back_with_the_forms_layout(app: Flask) -> None:
    _month_of_books()
    book = load_workbook(io.BytesIO(returns_xlsx("all", MONTH_END)))
    assert book.sheetnames == [
        "Form 1 Capital Adequacy",
        "Form 2 Liquidity",
        "Form 3 Deposits",
        "Form 4 Risk Classification",
    ]
    sheet = book["Form 1 Capital Adequacy"]
    assert sheet["A1"].value == "Capital Adequacy Return"
    assert "Form 1" in sheet["A2"].value and "31 October 2026" in sheet["A2"].value
    assert [c.value for c in sheet[4]] == ["Line", "Amount", "Ratio %", "Minimum", "Check", "Code"]
    cells = {row[0].value: [c.value for c in row] for row in sheet.iter_rows(min_row=5)}
    assert cells["Core capital"][1] == 74000
    assert cells["Institutional capital"][1] == 54000
    assert cells["Institutional capital"][5] == "3200"
    assert cells["Core capital to total assets"][2:5] == [pytest.approx(50.68), 10, None]
    assert cells["Core capital against the minimum core capital"][4] == "below minimum"
    share_row = next(r for r in sheet.iter_rows(min_row=5) if r[0].value.startswith("Share"))
    assert share_row[1].value == 20000 and share_row[1].number_format == "#,##0.00"
    liquidity = book["Form 2 Liquidity"]
    cells = {row[0].value: [c.value for c in row] for row in liquidity.iter_rows(min_row=5)}
    assert cells["Total liquid assets"][1] == 146000
    assert cells["Liquid assets to deposits and short-term liabilities"][2] == pytest.approx(202.78)
    deposits = book["Form 3 Deposits"]
    assert [c.value for c in deposits[4]] == ["Line", "Accounts", "Amount", "Code"]
    # One return alone: its own sheet only.
    one = load_workbook(io.BytesIO(returns_xlsx("liquidity", MONTH_END)))
    assert one.sheetnames == ["Form 2 Liquidity"]


def test_the_pdf_names_the_form_and_its_figures(app: Flask) -> None:
    _month_of_books()
    pdf = returns_pdf("capital_adequacy", MONTH_END)
    assert pdf.startswith(b"%PDF")
    assert b"Capital Adequacy Return" in pdf and b"74,000.00" in pdf and b"below minimum" in pdf


def test_bad_requests_are_refused_in_words(app: Flask) -> None:
    with pytest.raises(ReturnError, match="not the last day of a month"):
        returns_build("capital_adequacy", date(2026, 10, 30))
    with pytest.raises(ReturnError, match="no return 'form9'"):
        returns_build("form9", MONTH_END)


def test_filing_once_per_month_and_never_ahead(app: Flask) -> None:
    compliance = db.session.scalar(select(StaffUser).where(StaffUser.email == staff("compliance")))
    teller = db.session.scalar(select(StaffUser).where(StaffUser.email == staff("loan_officer")))
    with pytest.raises(PermissionDenied):
        return_file(form="liquidity", period_end=MONTH_END, actor=teller)
    filing = return_file(form="liquidity", period_end=MONTH_END, actor=compliance)
    assert filing.filed_by == "staff:compliance@sacco.test"
    with pytest.raises(ReturnError, match="marked filed by staff:compliance"):
        return_file(form="liquidity", period_end=MONTH_END, actor=compliance)
    with pytest.raises(ReturnError, match="not over yet"):
        return_file(form="liquidity", period_end=date(2026, 12, 31), actor=compliance)
    assert db.session.scalar(select(AuditLog).where(AuditLog.action == "books.file")) is not None
    status = {s.form.code: s for s in returns_status(today=date(2026, 12, 5))}
    assert status["liquidity"].last_filed is not None
    assert status["liquidity"].next_period_end == date(2026, 11, 30)
    assert status["liquidity"].next_due == date(2026, 12, 15)
    assert status["liquidity"].overdue is False
    # Never filed: last month is the one to file; past its due date it is overdue.
    assert status["deposits"].last_filed is None
    assert status["deposits"].next_period_end == date(2026, 11, 30)
    later = {s.form.code: s for s in returns_status(today=date(2026, 12, 16))}
    assert later["deposits"].overdue is True
    assert return_due(date(2027, 1, 31)) == date(2027, 2, 15)


# -- the console -----------------------------------------------------------------------------


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    db.session.commit()
    return _browse(client, path, method, **kwargs)


def signed_in(app: Flask, role: str) -> FlaskClient:
    email = staff(role)
    client = app.test_client()
    db.session.commit()
    login(client, email)
    return client


def test_regulatory_page_roles_downloads_audited_and_mark_filed(app: Flask) -> None:
    _month_of_books()
    officer = signed_in(app, "loan_officer")
    assert browse(officer, "/admin/regulatory/").status_code == 403
    assert browse(officer, "/admin/regulatory/liquidity/2026-10-31.xlsx").status_code == 403

    auditor = signed_in(app, "auditor")
    page = browse(auditor, "/admin/regulatory/?month_end=2026-10-31&form=capital_adequacy")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    for form in FORMS.values():
        assert form.title in text
    assert "below minimum" in text and "74,000.00" in text
    assert "Mark Oct 2026 filed" not in text  # an auditor reads; compliance files
    reply = browse(auditor, "/admin/regulatory/capital_adequacy/2026-10-31.xlsx")
    assert reply.status_code == 200
    book = load_workbook(io.BytesIO(reply.data))
    assert book.sheetnames == ["Form 1 Capital Adequacy"]
    reply = browse(auditor, "/admin/regulatory/all/2026-10-31.pdf")
    assert reply.status_code == 200 and reply.data.startswith(b"%PDF")
    db.session.expire_all()
    exports = db.session.scalars(
        select(AuditLog).where(AuditLog.action == "books.export").order_by(AuditLog.id)
    ).all()
    assert [(e.object_id, e.after["format"], e.actor) for e in exports] == [
        ("capital_adequacy:2026-10-31", "xlsx", "staff:auditor@sacco.test"),
        ("all:2026-10-31", "pdf", "staff:auditor@sacco.test"),
    ]
    # Not a month end: refused in words, nothing exported.
    reply = browse(auditor, "/admin/regulatory/liquidity/2026-10-30.xlsx")
    assert reply.status_code == 302
    assert browse(auditor, "/admin/regulatory/liquidity/2026-10-31.docx").status_code == 404
    assert browse(auditor, "/admin/regulatory/?form=nonsense").status_code == 404
    refused = post_form(
        auditor, "/admin/regulatory/file", {"form": "liquidity", "period_end": "2026-10-31"}
    )
    assert refused.status_code == 403

    compliance = signed_in(app, "compliance")
    reply = post_form(
        compliance, "/admin/regulatory/file", {"form": "liquidity", "period_end": "2026-10-31"}
    )
    assert reply.status_code == 302
    db.session.expire_all()
    filing = db.session.scalar(select(RegulatoryFiling))
    assert (filing.form, filing.period_end, filing.filed_by) == (
        "liquidity",
        MONTH_END,
        "staff:compliance@sacco.test",
    )
    page = browse(compliance, "/admin/regulatory/?month_end=2026-10-31").get_data(as_text=True)
    assert "Form 2 Liquidity Statement for October 2026 marked filed." in page
    assert "November 2026" in page  # liquidity's next month to file
    assert "Oct 2026 filed" in page and page.count("Mark Oct 2026 filed") == len(FORMS) - 1
    # The same month again: refused in words, one filing kept.
    post_form(
        compliance, "/admin/regulatory/file", {"form": "liquidity", "period_end": "2026-10-31"}
    )
    page = browse(compliance, "/admin/regulatory/?month_end=2026-10-31").get_data(as_text=True)
    assert "was marked filed by staff:compliance@sacco.test" in page
    db.session.expire_all()
    assert len(db.session.scalars(select(RegulatoryFiling)).all()) == 1
