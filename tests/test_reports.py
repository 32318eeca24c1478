"""Collections and recovery reports: small books whose figures are worked out by hand,
checked in the selectors, on screen, as CSV and as PDF; the date range the heavy reports
need, refused in words when missing or too long."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.clock import business_today
from app.extensions import db
from app.models import Loan, PromiseToPay, StaffUser
from app.models.recovery import Agreement, Hearing, LegalCase, WriteOffRequest
from app.selectors.reports import (
    DateRange,
    ReportRangeError,
    agreements_by_status,
    cases_by_status,
    collections_report,
    hearings_ahead,
    promise_fulfilment_report,
    report_range,
    write_offs_report,
)
from app.services.loans import loan_repay, loan_write_off
from tests.helpers import browse as _browse
from tests.helpers import login, staff
from tests.loan_factories import make_loan, make_product, make_staff

D = Decimal
AUTUMN = DateRange(date(2026, 9, 1), date(2026, 11, 21))


def browse(client: FlaskClient, path: str, **kwargs: object):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's own read must not hold the lock
    return _browse(client, path, **kwargs)


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    email = f"{role.replace('_', '.')}@sacco.test"  # as staff() names them
    if db.session.scalar(select(StaffUser.id).where(StaffUser.email == email)) is None:
        staff(role)
    db.session.commit()
    assert login(client, email).status_code == 302
    return client


def named_officer(name: str) -> StaffUser:
    officer = make_staff("loan_officer")
    officer.name = name
    db.session.commit()
    return officer


@pytest.fixture
def book(app: Flask) -> dict[str, object]:
    """Three loans: L1 (V1, Achieng), L2 (V2, Baraka), L3 (V1, no officer); repayments
    L1 700 on 31 Aug (before the range), L1 1,000 on 10 Sep and 500 on 5 Oct, L2 2,000
    on 20 Oct, L3 300 on 2 Nov."""
    v1 = make_product("V1")
    v2 = make_product("V1", code="V2", name="Second")
    achieng, baraka = named_officer("Achieng"), named_officer("Baraka")
    on = date(2026, 8, 1)
    l1, l2, l3 = (make_loan(product=p, on=on) for p in (v1, v2, v1))
    l1.officer_id, l2.officer_id, l3.officer_id = achieng.id, baraka.id, None
    db.session.commit()
    for loan, amount, day, ref in (
        (l1, 700, date(2026, 8, 31), "R0"),
        (l1, 1000, date(2026, 9, 10), "R1"),
        (l1, 500, date(2026, 10, 5), "R2"),
        (l2, 2000, date(2026, 10, 20), "R3"),
        (l3, 300, date(2026, 11, 2), "R4"),
    ):
        loan_repay(loan_id=loan.id, amount=amount, reference=ref, value_date=day)
    return {"l1": l1.id, "l2": l2.id, "l3": l3.id, "achieng": achieng, "baraka": baraka}


# -- the range -----------------------------------------------------------------------------


def test_a_heavy_report_needs_a_range_of_at_most_366_days() -> None:
    with pytest.raises(ReportRangeError, match="needs a date range"):
        report_range(None, date(2026, 11, 1))
    with pytest.raises(ReportRangeError, match="ends .* before it starts"):
        report_range(date(2026, 11, 2), date(2026, 11, 1))
    with pytest.raises(ReportRangeError, match="at most 366 days and this range is 367 days"):
        report_range(date(2025, 11, 1), date(2026, 11, 2))
    assert report_range(date(2025, 11, 2), date(2026, 11, 2)).days == 366


# -- collections ---------------------------------------------------------------------------


def test_collections_by_month_officer_and_product(app: Flask, book: dict) -> None:
    by_month = collections_report(range_=AUTUMN, by="month")
    assert [(r.label, r.repayments, r.amount) for r in by_month.rows.rows] == [
        ("2026-09", 1, D("1000.00")),
        ("2026-10", 2, D("2500.00")),
        ("2026-11", 1, D("300.00")),
    ]
    # 31 Aug's 700 is outside the range; the deposits that funded the members are not
    # repayments.
    assert (by_month.repayments, by_month.amount) == (4, D("3800.00"))

    by_officer = collections_report(range_=AUTUMN, by="officer")
    assert [(r.label, r.repayments, r.amount) for r in by_officer.rows.rows] == [
        ("Baraka", 1, D("2000.00")),
        ("Achieng", 2, D("1500.00")),
        ("no officer", 1, D("300.00")),
    ]
    by_product = collections_report(range_=AUTUMN, by="product")
    assert [(r.label, r.repayments, r.amount) for r in by_product.rows.rows] == [
        ("V2 Second", 1, D("2000.00")),
        ("V1 Reference Loan", 3, D("1800.00")),
    ]


def test_collections_are_paged_by_group_with_the_total_of_the_whole_range(
    app: Flask, book: dict
) -> None:
    second = collections_report(range_=AUTUMN, by="officer", page=2, per_page=1)
    assert [(r.label, r.amount) for r in second.rows.rows] == [("Achieng", D("1500.00"))]
    assert (second.rows.total, second.rows.pages) == (3, 3)
    assert second.amount == D("3800.00")


# -- promises --------------------------------------------------------------------------------


def promise(loan_id: int, amount: int, due: date, status: str, paid: int | None) -> None:
    loan = db.session.get(Loan, loan_id)
    db.session.add(
        PromiseToPay(
            member_id=loan.member_id,
            loan_id=loan_id,
            amount=D(amount),
            promised_date=due,
            status=status,
            paid_amount=None if paid is None else D(paid),
        )
    )
    db.session.commit()


@pytest.fixture
def promises(book: dict) -> DateRange:
    l1, l2, l3 = book["l1"], book["l2"], book["l3"]
    promise(l1, 900, date(2026, 9, 30), "kept", 900)  # before the range
    promise(l1, 1000, date(2026, 10, 5), "kept", 1000)
    promise(l1, 500, date(2026, 10, 20), "partly", 200)
    promise(l2, 800, date(2026, 10, 25), "broken", 0)
    promise(l2, 600, date(2026, 11, 10), "kept", 600)
    promise(l3, 400, date(2026, 11, 25), "open", None)
    return DateRange(date(2026, 10, 1), date(2026, 11, 30))


def figures(row: object) -> tuple:
    return tuple(
        getattr(row, f)
        for f in ("label", "kept", "partly", "broken", "open", "rate", "promised", "paid")
    )


def test_promise_fulfilment_by_month_and_officer(app: Flask, promises: DateRange) -> None:
    by_month = promise_fulfilment_report(range_=promises, by="month")
    assert [figures(r) for r in by_month.rows.rows] == [
        # kept 1 of 3 settled (a partly kept promise counts against the rate)
        ("2026-10", 1, 1, 1, 0, D("33.3"), D("2300.00"), D("1200.00")),
        ("2026-11", 1, 0, 0, 1, D("100.0"), D("1000.00"), D("600.00")),
    ]
    assert figures(by_month.total) == ("all", 2, 1, 1, 1, D("50.0"), D("3300.00"), D("1800.00"))

    by_officer = promise_fulfilment_report(range_=promises, by="officer")
    assert [figures(r) for r in by_officer.rows.rows] == [
        ("Achieng", 1, 1, 0, 0, D("50.0"), D("1500.00"), D("1200.00")),
        ("Baraka", 1, 0, 1, 0, D("50.0"), D("1400.00"), D("600.00")),
        ("no officer", 0, 0, 0, 1, None, D("400.00"), D("0.00")),
    ]


# -- agreements, legal, write-offs -------------------------------------------------------------


def agreement(loan_id: int, status: str, settlement: int, discount: int, paid: int) -> None:
    drafter = db.session.scalar(select(StaffUser).where(StaffUser.role == "loan_officer"))
    db.session.add(
        Agreement(
            loan_id=loan_id,
            status=status,
            settlement_amount=D(settlement),
            discount=D(discount),
            paid_amount=D(paid),
            drafted_by_id=drafter.id,
        )
    )
    db.session.commit()


def test_agreements_by_status_show_every_status(app: Flask, book: dict) -> None:
    agreement(book["l1"], "draft", 5000, 500, 0)
    agreement(book["l1"], "active", 8000, 1000, 2000)
    agreement(book["l2"], "completed", 3000, 0, 3000)
    agreement(book["l2"], "approved", 4000, 200, 0)
    rows = {r.status: (r.count, r.settlement, r.discount, r.paid) for r in agreements_by_status()}
    zero = (0, D(0), D(0), D(0))
    assert rows == {
        "draft": (1, D("5000.00"), D("500.00"), D("0.00")),
        "submitted": zero,
        "approved": (1, D("4000.00"), D("200.00"), D("0.00")),
        "active": (1, D("8000.00"), D("1000.00"), D("2000.00")),
        "completed": (1, D("3000.00"), D("0.00"), D("3000.00")),
        "defaulted": zero,
        "deleted": zero,
    }


@pytest.fixture
def cases(book: dict) -> date:
    filer = db.session.scalar(select(StaffUser).where(StaffUser.role == "branch_manager"))
    today = business_today()
    found = {}
    for key, loan, status in (
        ("c1", "l1", "filed"),
        ("c2", "l2", "hearing"),
        ("c3", "l3", "hearing"),
        ("c4", "l3", "closed"),
    ):
        case = LegalCase(
            loan_id=book[loan],
            court="Milimani",
            case_number=f"E{key}/2026",
            filing_date=date(2026, 10, 1),
            status=status,
            filed_by_id=filer.id,
        )
        db.session.add(case)
        found[key] = case
    db.session.flush()
    for key, days in (("c1", 3), ("c2", 30), ("c3", 31), ("c2", -1), ("c4", 0)):
        db.session.add(Hearing(case_id=found[key].id, held_on=today + timedelta(days=days)))
    db.session.commit()
    return today


def test_legal_pipeline_cases_by_status_and_the_next_30_days_of_hearings(
    app: Flask, cases: date
) -> None:
    assert cases_by_status() == [
        ("filed", 1),
        ("hearing", 2),
        ("judgment", 0),
        ("settled", 0),
        ("withdrawn", 0),
        ("closed", 1),
    ]
    page = hearings_ahead(today=cases)
    # Today and day 30 are in; yesterday and day 31 are not.
    assert [(h.held_on, h.case_number, h.case_status) for h in page.rows] == [
        (cases, "Ec4/2026", "closed"),
        (cases + timedelta(days=3), "Ec1/2026", "filed"),
        (cases + timedelta(days=30), "Ec2/2026", "hearing"),
    ]
    assert page.total == 3
    assert [h.held_on for h in hearings_ahead(today=cases, page=2, per_page=2).rows] == [
        cases + timedelta(days=30)
    ]


@pytest.fixture
def write_offs(app: Flask) -> dict[str, int]:
    """One-month loans at 12% a year (1% interest): each owes 101% of its principal when
    written off. W1 10,000 and W2 5,000 written off in September (W1 recovers 1,500 + 100),
    W3 2,000 in October (recovers 20), W4 1,000 in December 2025, before the range."""
    product = make_product("V1")
    manager = make_staff("branch_manager")
    found = {}
    for key, amount, on, off in (
        ("w1", 10000, date(2026, 8, 1), date(2026, 9, 15)),
        ("w2", 5000, date(2026, 8, 1), date(2026, 9, 28)),
        ("w3", 2000, date(2026, 8, 1), date(2026, 10, 10)),
        ("w4", 1000, date(2025, 10, 1), date(2025, 12, 1)),
    ):
        loan = make_loan(product=product, amount=amount, on=on, term=1)
        loan.in_default = True  # as the nightly arrears job leaves it
        db.session.commit()
        loan_write_off(loan_id=loan.id, staff=manager, reason="no contact", value_date=off)
        found[key] = loan.id
    for key, amount, day, ref in (
        ("w1", 1500, date(2026, 10, 1), "REC1"),
        ("w1", 100, date(2026, 11, 1), "REC2"),
        ("w3", 20, date(2026, 11, 1), "REC3"),
    ):
        loan_repay(loan_id=found[key], amount=amount, reference=ref, value_date=day)
    for key, status in (
        ("w1", "approved"),
        ("w2", "approved"),
        ("w3", "declined"),
        ("w4", "recommended"),
    ):
        db.session.add(
            WriteOffRequest(
                loan_id=found[key], status=status, reason="board", recommended_by_id=manager.id
            )
        )
    db.session.commit()
    return found


def test_write_offs_and_recoveries_by_month_of_write_off(app: Flask, write_offs: dict) -> None:
    found = write_offs_report(range_=DateRange(date(2026, 1, 1), date(2026, 11, 21)))
    assert [(m.month, m.loans, m.written_off, m.recovered) for m in found.months] == [
        ("2026-09", 2, D("15150.00"), D("1600.00")),  # 10,100 + 5,050
        ("2026-10", 1, D("2020.00"), D("20.00")),
    ]
    total = found.total
    assert (total.loans, total.written_off, total.recovered) == (3, D("17170.00"), D("1620.00"))
    assert found.requests == [("recommended", 1), ("approved", 2), ("declined", 1)]


# -- the console -----------------------------------------------------------------------------

COLLECTIONS = "/admin/reports/collections"
RANGE = {"start": "2026-09-01", "end": "2026-11-21"}


def test_the_reports_index_lists_every_report_and_marks_the_heavy_ones(app: Flask) -> None:
    page = browse(signed_in(app, "auditor"), "/admin/reports/").get_data(as_text=True)
    for slug in ("collections", "promises", "agreements", "legal", "write-offs"):
        assert f'href="/admin/reports/{slug}"' in page
    heavy = [
        slug
        for slug in ("collections", "promises", "agreements", "legal", "write-offs")
        if "date range</span>" in page.split(f'id="report-{slug}"')[1].split("</tr>")[0]
    ]
    assert heavy == ["collections", "promises", "write-offs"]


def test_a_heavy_report_without_a_range_shows_the_form_and_says_why(app: Flask) -> None:
    response = browse(signed_in(app, "loan_officer"), COLLECTIONS)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "This report needs a date range" in page and "at most 366 days" in page
    assert "report-table" not in page
    # The form suggests this month so far.
    assert f'value="{business_today().replace(day=1).isoformat()}"' in page


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"start": "2026-01-01"}, "this report needs a date range"),
        (
            {"start": "2025-11-01", "end": "2026-11-02"},
            "at most 366 days and this range is 367 days",
        ),
        ({"start": "2026-11-02", "end": "2026-11-01"}, "before it starts"),
        ({"start": "21/11/2026", "end": "2026-11-21"}, "the from date must be a date like"),
    ],
)
@pytest.mark.parametrize("fmt", [None, "csv", "pdf"])
def test_a_missing_or_too_long_range_is_refused_in_words(
    app: Flask, query: dict, words: str, fmt: str | None
) -> None:
    args = {**query, **({"format": fmt} if fmt else {})}
    response = browse(signed_in(app, "branch_manager"), COLLECTIONS, query_string=args)
    assert response.status_code == 400
    assert words in response.get_data(as_text=True)


def test_an_export_without_a_range_is_refused(app: Flask) -> None:
    response = browse(signed_in(app, "auditor"), COLLECTIONS, query_string={"format": "csv"})
    assert response.status_code == 400
    assert "needs a date range" in response.get_data(as_text=True)


def test_the_collections_page_shows_the_figures_and_pages_the_groups(
    app: Flask, book: dict
) -> None:
    client = signed_in(app, "compliance")
    page = browse(client, COLLECTIONS, query_string={**RANGE, "by": "officer"}).get_data(
        as_text=True
    )
    for text in ("Baraka", "2,000.00", "Achieng", "1,500.00", "no officer", "3,800.00"):
        assert text in page
    assert 'href="/admin/reports/collections?format=csv&amp;start=2026-09-01' in page


def test_the_collections_csv_holds_the_hand_worked_figures(app: Flask, book: dict) -> None:
    response = browse(
        signed_in(app, "auditor"), COLLECTIONS, query_string={**RANGE, "format": "csv"}
    )
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert (
        "report-collections-month-20260901-20261121.csv" in response.headers["Content-Disposition"]
    )
    lines = response.get_data().decode("utf-8-sig").splitlines()
    assert lines[:3] == [
        "Collections",
        "Period 01 Sep 2026 to 21 Nov 2026 (82 days)",
        "By month",
    ]
    start = lines.index("Repayments collected by month")
    assert lines[start + 1 : start + 6] == [
        "Month (value date),Repayments,Collected (KES)",
        "2026-09,1,1000.00",
        "2026-10,2,2500.00",
        "2026-11,1,300.00",
        "Total,4,3800.00",
    ]


def test_the_collections_pdf_is_a_pdf_with_the_total(app: Flask, book: dict) -> None:
    response = browse(
        signed_in(app, "auditor"), COLLECTIONS, query_string={**RANGE, "format": "pdf"}
    )
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    body = response.get_data()
    assert body.startswith(b"%PDF")
    assert b"3,800.00" in body and b"Baraka" not in body  # by month: no officer names


def test_the_promise_report_on_screen_and_in_csv(app: Flask, promises: DateRange) -> None:
    client = signed_in(app, "branch_manager")
    args = {"start": "2026-10-01", "end": "2026-11-30", "by": "officer"}
    page = browse(client, "/admin/reports/promises", query_string=args).get_data(as_text=True)
    assert "Achieng" in page and "50.0%" in page and "none settled" in page
    csv_text = (
        browse(client, "/admin/reports/promises", query_string={**args, "format": "csv"})
        .get_data()
        .decode("utf-8-sig")
    )
    assert "Achieng,1,1,0,0,50.0,1500.00,1200.00" in csv_text
    assert "no officer,0,0,0,1,,400.00,0.00" in csv_text
    assert "Total,2,1,1,1,50.0,3300.00,1800.00" in csv_text


def test_the_legal_pipeline_links_each_hearing_to_its_loan(app: Flask, cases: date) -> None:
    page = browse(signed_in(app, "loan_officer"), "/admin/reports/legal").get_data(as_text=True)
    loan_no = db.session.scalar(select(LegalCase).where(LegalCase.case_number == "Ec1/2026"))
    loan = db.session.get(Loan, loan_no.loan_id)
    assert f'href="/admin/loan/details/?id={loan.id}">{loan.loan_no}</a>' in page
    assert "Ec3/2026" not in page  # day 31


def test_the_write_off_pdf_carries_its_figures(app: Flask, write_offs: dict) -> None:
    body = browse(
        signed_in(app, "compliance"),
        "/admin/reports/write-offs",
        query_string={"start": "2026-01-01", "end": "2026-11-21", "format": "pdf"},
    ).get_data()
    assert body.startswith(b"%PDF") and b"17,170.00" in body and b"1,620.00" in body


@pytest.mark.parametrize("slug", ["collections", "promises", "agreements", "legal", "write-offs"])
@pytest.mark.parametrize("fmt", ["csv", "pdf"])
def test_every_report_exports_as_csv_and_pdf(app: Flask, slug: str, fmt: str) -> None:
    response = browse(
        signed_in(app, "admin"), f"/admin/reports/{slug}", query_string={**RANGE, "format": fmt}
    )
    assert response.status_code == 200
    body = response.get_data()
    if fmt == "pdf":
        assert body.startswith(b"%PDF")
    else:
        assert body.decode("utf-8-sig").startswith(
            {"write-offs": "Write-offs", "legal": "Legal", "agreements": "Agreements"}.get(
                slug, slug.capitalize()[:5]
            )
        )


def test_signed_out_a_report_asks_for_a_login(app: Flask) -> None:
    response = browse(app.test_client(), COLLECTIONS, query_string=RANGE)
    assert response.status_code == 302 and "/admin/login" in response.headers["Location"]


def test_an_unknown_report_is_404(app: Flask) -> None:
    assert browse(signed_in(app, "auditor"), "/admin/reports/nothing").status_code == 404
