"""A member's statement for a date range: the figures (opening, movements, running and
closing balances) and the CSV and PDF staff download from the member page."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db
from app.models import AuditLog, Member
from app.selectors.members import member_balances
from app.selectors.statements import StatementRangeError, member_statement_range
from app.services.loans import loan_repay
from app.services.members import member_buy_shares, member_deposit
from tests.factories import make_member
from tests.helpers import browse as _browse
from tests.helpers import login, staff
from tests.loan_factories import JOINED, make_loan, make_product

START, END = "2026-02-01", "2026-03-31"


def browse(client: FlaskClient, path: str, **kwargs: object):  # noqa: ANN201
    db.session.commit()  # SQLite: the request's session needs the write lock
    return _browse(client, path, **kwargs)


def member_with_history() -> tuple[Member, str]:
    """Savings 5,000 on 1 Jan; a 0% loan of 12,000 on 15 Jan (1,000 a month); in the
    statement's range: deposits of 500 and 250, 300 of shares bought from savings, and a
    repayment of 1,000 split over nothing but principal."""
    member = make_member(savings=Decimal("5000"), name="Wanjirũ Kamau")
    member.created_at = JOINED  # a member long enough to borrow
    product = make_product("V1", code="ZERO", annual_rate=Decimal("0"))
    loan = make_loan(product=product, amount=12000, on=date(2026, 1, 15), member=member)
    member_deposit(
        member_id=member.id, amount="500", reference="RKT1", value_date=date(2026, 2, 10)
    )
    loan_repay(loan_id=loan.id, amount="1000", reference="RKT2", value_date=date(2026, 2, 20))
    member_deposit(member_id=member.id, amount="250", reference="RKT3", value_date=date(2026, 3, 5))
    member_buy_shares(
        member_id=member.id, amount="300", reference="SH1", value_date=date(2026, 3, 10)
    )
    member_deposit(  # after the range: not in it, and not in its closing balance
        member_id=member.id, amount="50", reference="RKT4", value_date=date(2026, 4, 2)
    )
    return member, loan.loan_no


def download(client: FlaskClient, member_id: int, fmt: str, start: str = START, end: str = END):  # noqa: ANN201
    return browse(
        client,
        f"/admin/member/statement/{member_id}",
        query_string={"start": start, "end": end, "format": fmt},
        follow_redirects=True,
    )


def test_the_statement_has_opening_movements_running_and_closing_balances(app: Flask) -> None:
    member, loan_no = member_with_history()
    statement = member_statement_range(
        member_id=member.id, start=date(2026, 2, 1), end=date(2026, 3, 31)
    )
    by_title = {s.title: s for s in statement.sections}
    assert list(by_title) == ["Deposits", "Share capital", f"Loan {loan_no}"]

    savings = by_title["Deposits"]
    assert savings.opening == Decimal("5000.00")
    assert [(m.value_date, m.credit, m.debit, m.balance) for m in savings.movements] == [
        (date(2026, 2, 10), Decimal("500.00"), Decimal("0.00"), Decimal("5500.00")),
        (date(2026, 3, 5), Decimal("250.00"), Decimal("0.00"), Decimal("5750.00")),
        (date(2026, 3, 10), Decimal("0.00"), Decimal("300.00"), Decimal("5450.00")),
    ]
    assert savings.closing == Decimal("5450.00")

    shares = by_title["Share capital"]
    assert (shares.opening, shares.closing) == (Decimal("0.00"), Decimal("300.00"))

    loan = by_title[f"Loan {loan_no}"]
    assert loan.opening == Decimal("12000.00")
    assert [(m.credit, m.balance) for m in loan.movements] == [
        (Decimal("1000.00"), Decimal("11000.00"))
    ]
    assert loan.closing == Decimal("11000.00")


def test_a_statement_up_to_today_closes_on_the_balances_the_member_sees(app: Flask) -> None:
    member, loan_no = member_with_history()
    statement = member_statement_range(
        member_id=member.id, start=date(2026, 1, 1), end=date(2026, 12, 31)
    )
    balances = member_balances(member_id=member.id)
    by_title = {s.title: s for s in statement.sections}
    assert by_title["Deposits"].closing == balances.savings == Decimal("5500.00")
    assert by_title["Share capital"].closing == balances.share_capital
    assert by_title[f"Loan {loan_no}"].closing == balances.loan_total
    # From the first day, the opening is nothing and the disbursement is a debit.
    assert by_title[f"Loan {loan_no}"].opening == 0
    assert by_title[f"Loan {loan_no}"].movements[0].debit == Decimal("12000.00")


def test_the_csv_download_has_the_rows_and_is_audited(app: Flask) -> None:
    member, loan_no = member_with_history()
    client = app.test_client()
    login(client, staff("auditor"))
    response = download(client, member.id, "csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert (
        f"statement-{member.member_no}-20260201-20260331.csv"
        in (response.headers["Content-Disposition"])
    )
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0] == ["section", "date", "description", "debit", "credit", "balance"]
    savings = [r for r in rows if r[0] == "Deposits"]
    assert [(r[1], r[3], r[4], r[5]) for r in savings] == [
        ("2026-02-01", "", "", "5000.00"),
        ("2026-02-10", "", "500.00", "5500.00"),
        ("2026-03-05", "", "250.00", "5750.00"),
        ("2026-03-10", "300.00", "", "5450.00"),
        ("2026-03-31", "", "", "5450.00"),
    ]
    assert savings[0][2] == "Opening balance" and savings[-1][2] == "Closing balance"
    assert "RKT1" in savings[1][2]
    loan = [r for r in rows if r[0] == f"Loan {loan_no}"]
    assert [(r[4], r[5]) for r in loan] == [
        ("", "12000.00"),
        ("1000.00", "11000.00"),
        ("", "11000.00"),
    ]

    row = db.session.scalar(select(AuditLog).where(AuditLog.action == "member.statement"))
    assert row is not None and row.actor == "staff:auditor@sacco.test"
    assert row.object_id == member.member_no
    assert row.after == {"from": START, "to": END, "format": "csv"}


def test_the_pdf_download_is_a_pdf_with_the_member_and_separated_amounts(app: Flask) -> None:
    member, _ = member_with_history()
    client = app.test_client()
    login(client, staff("loan_officer"))
    response = download(client, member.id, "pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    body = response.get_data()
    assert body.startswith(b"%PDF")
    assert member.member_no.encode() in body
    assert b"5,450.00" in body and b"12,000.00" in body
    assert b"Wanjiru Kamau" in body  # folded to the PDF font's Latin-1, not dropped
    row = db.session.scalar(select(AuditLog).where(AuditLog.action == "member.statement"))
    assert row is not None and row.after["format"] == "pdf"


@pytest.mark.parametrize(
    ("start", "end", "words"),
    [
        (
            "2026-03-31",
            "2026-02-01",
            "the statement ends (01 Feb 2026) before it starts (31 Mar 2026)",
        ),
        (
            "2025-01-01",
            "2026-03-31",
            "a statement covers at most 366 days and this range is 455 days; "
            "download it a year at a time",
        ),
        ("last week", "2026-03-31", "the start date must be a date like 2026-01-31"),
        ("", "2026-03-31", "the start date must be a date like 2026-01-31"),
    ],
)
def test_a_bad_range_is_refused_in_words_on_the_member_page(
    app: Flask, start: str, end: str, words: str
) -> None:
    member = make_member()
    client = app.test_client()
    login(client, staff("compliance"))
    response = download(client, member.id, "csv", start=start, end=end)
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert f"No statement: {words}" in response.get_data(as_text=True)
    assert db.session.scalar(select(AuditLog).where(AuditLog.action == "member.statement")) is None


def test_the_selector_refuses_a_range_longer_than_a_year(app: Flask) -> None:
    member = make_member()
    with pytest.raises(StatementRangeError, match="at most 366 days"):
        member_statement_range(member_id=member.id, start=date(2025, 1, 1), end=date(2026, 1, 2))
    # A leap year's 366 days are fine.
    member_statement_range(member_id=member.id, start=date(2028, 1, 1), end=date(2028, 12, 31))


def test_a_statement_needs_a_signed_in_staff_member(app: Flask) -> None:
    member = make_member()
    response = download(app.test_client(), member.id, "csv")
    assert b"section,date" not in response.get_data()
    assert db.session.scalar(select(AuditLog).where(AuditLog.action == "member.statement")) is None


def test_each_savings_account_is_a_section_of_its_own_beside_the_deposits(app: Flask) -> None:
    """A withdrawable savings account reads as its own section, named by its product and
    the number the member pays to, with its own running balance; the deposits section is
    not changed by it."""
    from app.services.ledger import credit, debit, gl_account, journal_post
    from app.services.savings import account_product, member_product_account

    member = make_member(savings=Decimal("1000"))
    ordinary = member_product_account(member, account_product("ORD"))
    for day, amount, ref in ((3, "700", "S1"), (9, "300", "S2")):
        journal_post(
            kind="deposit",
            lines=[
                debit(gl_account("GL-MPESA-CLEARING"), Decimal(amount)),
                credit(ordinary, Decimal(amount)),
            ],
            value_date=date(2026, 2, day),
            idempotency_key=f"deposit:{ref}",
            member_id=member.id,
        )
    journal_post(
        kind="withdrawal",
        lines=[
            debit(ordinary, Decimal("150")),
            credit(gl_account("GL-MPESA-CLEARING"), Decimal("150")),
        ],
        value_date=date(2026, 2, 12),
        member_id=member.id,
    )
    db.session.commit()

    statement = member_statement_range(
        member_id=member.id, start=date(2026, 2, 1), end=date(2026, 2, 28)
    )
    by_title = {section.title: section for section in statement.sections}
    title = f"Ordinary savings {member.member_no}S"
    assert list(by_title) == ["Deposits", title, "Share capital"]
    savings = by_title[title]
    assert savings.opening == Decimal("0.00")
    assert [m.balance for m in savings.movements] == [
        Decimal("700"),
        Decimal("1000"),
        Decimal("850"),
    ]
    assert [m.debit for m in savings.movements][-1] == Decimal("150")
    assert savings.closing == Decimal("850.00")
    assert by_title["Deposits"].closing == Decimal("1000.00")
