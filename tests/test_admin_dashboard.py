"""The console's landing page: a small book whose figures are worked out by hand, shown
to every role, with its chart library served by the console itself."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from flask import Flask, current_app
from flask.testing import FlaskClient
from sqlalchemy import select

from app.clock import business_today
from app.extensions import db
from app.models import Loan, LoanProduct, Payment, SmsMessage, StaffUser
from app.models.member import STAFF_ROLES
from app.services.loans import loan_apply, loan_approve, loan_disburse, loan_recommend, loan_repay
from app.services.payments.callbacks import callback_process, callback_store
from app.services.payments.stk import payments_request_stk
from tests.factories import make_member
from tests.helpers import browse as _browse
from tests.helpers import c2b_body, login, staff, stk_body
from tests.loan_factories import make_borrower, make_product


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    # End the test's read transaction first: on SQLite it holds the write lock.
    db.session.commit()
    return _browse(client, path, method, **kwargs)


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    email = db.session.scalar(select(StaffUser.email).where(StaffUser.role == role))
    email = email or staff(role)
    db.session.commit()
    assert login(client, email).status_code == 302
    return client


def disbursed(product: LoanProduct, manager: StaffUser, amount: int, on: date) -> Loan:
    member = make_borrower(savings=amount)
    loan = loan_apply(member_id=member.id, product_id=product.id, amount=amount, as_of=on)
    loan_approve(loan_id=loan.id, staff=manager, as_of=on)
    return loan_disburse(loan_id=loan.id, reference=f"B2C{loan.id:05d}", value_date=on)


def late(loan: Loan, days: int, bucket: str) -> None:
    """Days past due as the nightly arrears job leaves them."""
    loan.days_past_due, loan.aging_bucket = days, bucket
    db.session.commit()


def deliver(kind: str, body: dict) -> str:
    """A callback as the web endpoint stores it, then processed as the worker does."""
    raw = json.dumps(body).encode()
    received = callback_store(kind=kind, raw=raw, size=len(raw), remote_addr="196.201.214.200")
    return callback_process(callback_id=received.callback_id)


def stk_paid_by_member(loan: Loan, amount: int, officer_email: str) -> None:
    """An officer sends a prompt from the console; Daraja takes it; the member pays now."""
    request = payments_request_stk(
        loan_id=loan.id, amount=amount, channel="console", actor=f"staff:{officer_email}"
    )
    request.status, request.checkout_request_id = "sent", f"ws_CO_dash_{request.id}"
    db.session.commit()
    body = stk_body(request.checkout_request_id, amount=amount, receipt="SDB0000001")
    now = datetime.now(current_app.config["SETTINGS"].tz)
    body["Body"]["stkCallback"]["CallbackMetadata"]["Item"][3]["Value"] = int(
        now.strftime("%Y%m%d%H%M%S")
    )
    body["Body"]["stkCallback"]["CallbackMetadata"]["Item"][4]["Value"] = int(loan.member.phone)
    assert deliver("stk", body) == "processed"


def sms(status: str, n: int, created_at: datetime | None = None) -> None:
    for k in range(n):
        db.session.add(
            SmsMessage(
                phone="254700000001",
                template="repayment_received",
                body="Thank you",
                idempotency_key=f"dash:{status}:{k}:{created_at}",
                status=status,
                created_at=created_at or datetime.now(UTC),
            )
        )
    db.session.commit()


@pytest.fixture
def book(app: Flask) -> dict[str, object]:
    """Four live loans, one in each of four buckets, two applications waiting, a dormant
    member, two repayments this month, a suspense payment and SMS outcomes.

    By hand (V1: 12% a year, monthly, declining, equal installments, no fee):
      A 10,000 out 60 days ago, 45 days late; repaid 600 today by an officer's STK prompt:
        installment 1 is 100.00 interest, so 500.00 goes to principal -> 9,500.00
      B 20,000 out today, current -> 20,000.00
      C 5,000 out on the 1st, 10 days late; repaid 250 on the 1st: 50.00 interest,
        200.00 principal -> 4,800.00
      D 8,000 out 150 days ago, 100 days late -> 8,000.00
      outstanding 42,300.00; PAR30 (A + D) 17,500.00 / 42,300.00 = 41.37 %
      savings 10,000 + 20,000 + 5,000 + 8,000 (borrowers) + 3,000 + 4,000 (applicants)
        = 50,000.00
    """
    today = business_today()
    first = today.replace(day=1)
    product = make_product("V1")
    manager = db.session.scalar(select(StaffUser).where(StaffUser.email == staff("branch_manager")))
    officer_email = staff("loan_officer")
    officer = db.session.scalar(select(StaffUser).where(StaffUser.email == officer_email))
    a = disbursed(product, manager, 10000, today - timedelta(days=60))
    b = disbursed(product, manager, 20000, today)
    c = disbursed(product, manager, 5000, first)
    d = disbursed(product, manager, 8000, today - timedelta(days=150))
    late(a, 45, "31-60")
    late(c, 10, "1-30")
    late(d, 100, "90+")
    stk_paid_by_member(a, 600, officer_email)
    loan_repay(loan_id=c.id, amount=250, reference="BANK-C-1", value_date=first)
    # Two applications: one waiting for a recommendation, one for a checker.
    p1 = loan_apply(
        member_id=make_borrower(savings=3000).id, product_id=product.id, amount=3000, as_of=today
    )
    p2 = loan_apply(
        member_id=make_borrower(savings=4000).id, product_id=product.id, amount=4000, as_of=today
    )
    loan_recommend(loan_id=p2.id, staff=officer)
    dormant = make_member()
    dormant.status = "dormant"
    db.session.commit()
    # 300 that matched no member, and 3 delivered + 1 failed SMS in the window (an older
    # delivery and one still waiting do not count in the rate).
    assert deliver("c2b_confirmation", c2b_body("RKT0000009", amount="300", account="NOBODY")) in (
        "processed",
        "suspense",
    )
    sms("delivered", 3)
    sms("failed", 1)
    sms("sent", 2)
    sms("delivered", 5, created_at=datetime.now(UTC) - timedelta(days=40))
    return {
        "today": today,
        "first": first,
        "loans": {k: v.loan_no for k, v in dict(a=a, b=b, c=c, d=d, p1=p1, p2=p2).items()},
        "officer": officer_email,
        "manager": manager.email,
    }


def text_of(page: str, element_id: str) -> str:
    """The visible text of the card with this id, whitespace collapsed."""
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</div>\s*</div>\s*</div>', page, re.S)
    assert match, f"no {element_id} on the page"
    words = " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())
    return re.sub(r" ([,.:])", r"\1", words)


def test_the_dashboard_shows_the_figures_worked_out_by_hand(
    app: Flask, book: dict[str, object]
) -> None:
    assert db.session.scalar(select(Payment.status).where(Payment.receipt == "RKT0000009")) == (
        "suspense"
    )
    page = browse(signed_in(app, "auditor"), "/admin/").get_data(as_text=True)
    same_day = book["first"] == book["today"]  # run on the 1st: C's day is today too

    assert text_of(page, "fig-members") == "Members 7 6 active"
    assert text_of(page, "fig-savings") == (
        "Deposits KES 50,000.00 Savings KES 0.00 · share capital KES 0.00"
    )
    assert text_of(page, "fig-outstanding") == (
        "Portfolio outstanding KES 42,300.00 4 live loans (principal)"
    )
    assert text_of(page, "fig-par30") == "PAR30 41.37% KES 17,500.00 more than 30 days late"
    assert text_of(page, "fig-disbursed-today") == (
        "Disbursed today KES 25,000.00 2 loans"
        if same_day
        else "Disbursed today KES 20,000.00 1 loan"
    )
    assert text_of(page, "fig-disbursed-month") == "Disbursed this month KES 25,000.00 2 loans"
    assert text_of(page, "fig-collected-today") == (
        "Collected today KES 850.00 2 repayments"
        if same_day
        else "Collected today KES 600.00 1 repayments"
    )
    assert text_of(page, "fig-collected-month") == "Collected this month KES 850.00 2 repayments"
    assert text_of(page, "fig-pending") == (
        "Pending approvals 2 KES 7,000.00: 1 submitted, 1 recommended, waiting for a checker"
    )
    assert text_of(page, "fig-suspense") == "Suspense waiting 1 KES 300.00 matched no member"
    assert text_of(page, "fig-sms") == (
        "SMS delivery rate (30 days) 75.0% 3 delivered, 1 failed, 2 waiting for a report"
    )
    aging = " ".join(re.sub(r"<[^>]+>", " ", page.split('id="aging-table">')[1]).split())
    assert aging.startswith(
        "days late loans principal (KES) current 1 20,000.00 1-30 1 4,800.00 "
        "31-60 1 9,500.00 61-90 0 0.00 90+ 1 8,000.00"
    )
    officers = " ".join(re.sub(r"<[^>]+>", " ", page.split('id="officers">')[1]).split())
    assert f"loan.officer {book['officer']} loan officer 0 0.00 1 1 600.00" in officers
    assert f"branch.manager {book['manager']} branch manager 4 43,000.00 0 0 0.00" in officers

    # The charts' numbers are in the page as JSON, exact.
    data = json.loads(
        re.search(r'id="dashboard-data">(.*?)</script>', page, re.S).group(1)  # type: ignore[union-attr]
    )
    assert data["aging"]["amounts"] == ["20000.00", "4800.00", "9500.00", "0.00", "8000.00"]
    assert data["aging"]["loans"] == [1, 1, 1, 0, 1]
    days = data["collections"]["amounts"]
    assert len(days) == 30 and days[-1] == ("850.00" if same_day else "600.00")
    assert sum(Decimal(x) for x in days) == Decimal(
        "850.00" if (book["today"] - book["first"]).days < 30 else "600.00"
    )
    assert data["collections"]["labels"][-1] == book["today"].strftime("%d %b")


def test_the_figures_link_to_the_lists_they_count(app: Flask, book: dict[str, object]) -> None:
    client = signed_in(app, "loan_officer")
    page = browse(client, "/admin/").get_data(as_text=True)
    pending = re.search(r'id="fig-pending".*?<a href="([^"]+)"', page, re.S).group(1)  # type: ignore[union-attr]
    listed = browse(client, pending.replace("&amp;", "&"))
    assert listed.status_code == 200
    shown = listed.get_data(as_text=True)
    loans = book["loans"]
    assert loans["p1"] in shown and loans["p2"] in shown  # type: ignore[index]
    assert loans["a"] not in shown and loans["b"] not in shown  # type: ignore[index]

    par = re.search(r'id="fig-par30".*?<a href="([^"]+)"', page, re.S).group(1)  # type: ignore[union-attr]
    shown = browse(client, par.replace("&amp;", "&")).get_data(as_text=True)
    assert loans["a"] in shown and loans["d"] in shown  # type: ignore[index]
    assert loans["c"] not in shown and loans["b"] not in shown  # type: ignore[index]


def test_the_chart_library_is_served_by_the_console_and_nothing_comes_from_a_cdn(
    app: Flask,
) -> None:
    client = signed_in(app, "compliance")
    page = browse(client, "/admin/").get_data(as_text=True)
    scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', page)
    styles = re.findall(r'<link[^>]*\bhref="([^"]+)"', page)
    assert "/admin/sacco-static/chartjs/chart.umd.min.js" in scripts
    outside = [u for u in scripts + styles if u.startswith(("http:", "https:", "//"))]
    assert outside == []
    with browse(client, "/admin/sacco-static/chartjs/chart.umd.min.js") as library:
        assert library.status_code == 200
        assert "Chart.js v4" in library.get_data(as_text=True)[:300]
    with browse(client, "/admin/sacco-static/chartjs/LICENSE.md") as licence:
        assert licence.status_code == 200
        assert "MIT License" in licence.get_data(as_text=True)


@pytest.mark.parametrize("role", STAFF_ROLES)
def test_every_role_opens_the_dashboard(app: Flask, role: str) -> None:
    page = browse(signed_in(app, role), "/admin/")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    # An empty book: zeros, not errors, and no rate before any delivery report.
    assert "Portfolio outstanding" in text and "KES 0.00" in text
    assert text_of(text, "fig-sms") == (
        "SMS delivery rate (30 days) no reports yet 0 waiting for a report"
    )
    assert text_of(text, "fig-par30").startswith("PAR30 0.00%")


def test_signed_out_the_dashboard_asks_for_a_login(app: Flask) -> None:
    page = browse(app.test_client(), "/admin/")
    assert page.status_code == 302 and "/admin/login" in page.headers["Location"]


def test_the_page_reads_aggregates_not_rows(app: Flask, book: dict[str, object]) -> None:
    """However big the book, the dashboard runs a fixed number of queries."""
    from sqlalchemy import event

    client = signed_in(app, "branch_manager")
    browse(client, "/admin/")  # warm: the login user load and the like
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        before = len(statements)
        browse(client, "/admin/")
        small = len(statements) - before
        # Twenty more live loans must not add a query.
        product = db.session.scalar(select(LoanProduct))
        manager = db.session.scalar(select(StaffUser).where(StaffUser.role == "branch_manager"))
        for _ in range(20):
            disbursed(product, manager, 1000, book["today"])  # type: ignore[arg-type]
        before = len(statements)
        browse(client, "/admin/")
        bigger = len(statements) - before
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert bigger == small


def test_the_suspicious_activity_box_leaves_out_sign_ins_and_keeps_night_work(
    app: Flask,
) -> None:
    """Issue 17: the box listed the viewer's own sign-ins at night. Signing in and out is
    no alert at any hour; what a staff member did at night still is, and so are failed
    sign-ins."""
    from app.models import AuditLog

    tz = current_app.config["SETTINGS"].tz
    night = datetime.combine(business_today() - timedelta(days=1), datetime.min.time(), tz)
    night = (night + timedelta(hours=2)).astimezone(UTC)  # 02:00 yesterday, Kenyan time
    for actor, action in (
        ("staff:compliance@sacco.test", "staff.login"),
        ("staff:compliance@sacco.test", "staff.logout"),
        ("staff:owl@sacco.test", "staff.login"),
        ("staff:owl@sacco.test", "loan.approve"),
    ):
        db.session.add(
            AuditLog(at=night, actor=actor, action=action, object_type="x", object_id="1")
        )
    db.session.commit()

    page = browse(signed_in(app, "compliance"), "/admin/").get_data(as_text=True)

    box = page.split('id="suspicious-activity"')[1].split("</div>")[0]
    assert "1 action by owl@sacco.test outside working hours" in box
    assert "compliance@sacco.test" not in box
