"""Promises to pay in the console: the list with its member and loan, filters, and the
fulfilment rate (kept / (kept + broken)) worked out by hand here."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.clock import business_today
from app.extensions import db
from app.models import PromiseToPay
from app.selectors.promises import promise_fulfilment
from tests.helpers import browse as _browse
from tests.helpers import login, staff
from tests.loan_factories import make_loan, make_product

EVERYONE = ["loan_officer", "branch_manager", "compliance", "auditor", "admin"]


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's read transaction would hold the write lock
    return _browse(client, path, method, **kwargs)


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    db.session.commit()
    login(client, staff(role))
    return client


def promises(*rows: tuple[str, date, str]) -> list[PromiseToPay]:
    """Promises on one loan: (status, promised date, amount). Written as rows: the service
    allows one open promise per loan, and settling is the reminder job's business."""
    loan = make_loan(
        product=make_product("DEV", min_membership_days=0, min_share_capital=Decimal("0")),
        on=date(2026, 1, 5),
    )
    made = [
        PromiseToPay(
            member_id=loan.member_id,
            loan_id=loan.id,
            amount=Decimal(amount),
            promised_date=day,
            status=status,
            channel="ussd" if n % 2 == 0 else "staff",
        )
        for n, (status, day, amount) in enumerate(rows)
    ]
    db.session.add_all(made)
    db.session.commit()
    return made


def test_fulfilment_overall_and_this_month(app: Flask) -> None:
    today = date(2026, 11, 21)
    promises(
        ("kept", date(2026, 10, 3), "500"),
        ("kept", date(2026, 10, 20), "500"),
        ("kept", date(2026, 10, 31), "500"),  # the last day of last month
        ("broken", date(2026, 10, 15), "500"),
        ("kept", date(2026, 11, 1), "500"),  # the first day of this month
        ("broken", date(2026, 11, 10), "500"),
        ("broken", date(2026, 11, 20), "500"),
        ("open", date(2026, 11, 30), "500"),
        ("open", date(2026, 12, 2), "500"),  # due next month
    )
    result = promise_fulfilment(today=today)
    # All time: 4 kept, 3 broken -> 4 / 7 = 57.14..% ; November: 1 kept, 2 broken -> 33.33..%
    assert (result.overall.kept, result.overall.broken, result.overall.open) == (4, 3, 2)
    assert (result.this_month.kept, result.this_month.broken, result.this_month.open) == (1, 2, 1)
    assert result.overall.rate == Decimal("57.1") and result.this_month.rate == Decimal("33.3")
    assert result.month_start == date(2026, 11, 1)
    # December: nothing settled yet is no rate, not 0%.
    december = promise_fulfilment(today=date(2026, 12, 5)).this_month
    assert (december.kept, december.broken, december.open, december.rate) == (0, 0, 1, None)


def test_no_promises_yet_reads_as_none_settled(app: Flask) -> None:
    html = browse(signed_in(app, "loan_officer"), "/admin/promisetopay/").get_data(as_text=True)
    assert html.count("none settled yet") == 2


@pytest.mark.parametrize("role", EVERYONE)
def test_every_role_reads_the_promises_with_the_rate_on_top(app: Flask, role: str) -> None:
    today = business_today()
    month_start = today.replace(day=1)
    last_month = month_start - timedelta(days=1)
    made = promises(
        ("kept", last_month, "1500"),
        ("kept", last_month, "1500"),
        ("broken", last_month, "1500"),
        ("kept", month_start, "2000"),
        ("broken", month_start, "2500"),
        ("open", today + timedelta(days=3), "12345"),
    )
    client = signed_in(app, role)
    reply = browse(client, "/admin/promisetopay/")
    assert reply.status_code == 200
    html = reply.get_data(as_text=True)
    # All time 3 kept / (3 + 2) = 60.0%; this month 1 / (1 + 1) = 50.0%.
    assert "60.0%" in html and "3 kept, 2 broken, 1 still open" in html
    assert "50.0%" in html and "1 kept, 1 broken, 1 still open" in html
    assert f"promises due in {month_start:%B %Y}" in html
    assert html.index("60.0%") < html.index("12,345.00")  # the rate above the list
    promise = made[-1]
    loan_no = promise_loan_no(promise)
    assert f'href="/admin/loan/details/?id={promise.loan_id}">{loan_no}</a>' in html
    assert f'href="/admin/member/details/?id={promise.member_id}">' in html
    assert "/admin/promisetopay/new/" not in html  # read-only


def promise_loan_no(promise: PromiseToPay) -> str:
    from app.models import Loan

    return db.session.get(Loan, promise.loan_id).loan_no


def filter_arg(html: str, group: str, operation: str) -> str:
    data = re.search(r'id="filter-groups-data" class="d-none">(.*?)</div>', html).group(1)
    groups = json.loads(data.replace("&#34;", '"').replace("&quot;", '"'))
    [found] = [f["arg"] for f in groups[group] if f["operation"] == operation]
    return f"flt0_{found}"


def test_promises_filter_by_status_and_due_date(app: Flask) -> None:
    promises(
        ("kept", date(2026, 11, 2), "1111"),
        ("broken", date(2026, 11, 9), "2222"),
        ("open", date(2026, 11, 25), "3333"),
    )
    client = signed_in(app, "branch_manager")
    html = browse(client, "/admin/promisetopay/").get_data(as_text=True)

    def listed(arg: str, value: str) -> set[str]:
        page = browse(client, f"/admin/promisetopay/?{arg}={value}").get_data(as_text=True)
        return {a for a in ("1,111.00", "2,222.00", "3,333.00") if a in page}

    assert listed(filter_arg(html, "Status", "equals"), "broken") == {"2,222.00"}
    assert listed(filter_arg(html, "Due", "equals"), "2026-11-25") == {"3,333.00"}
    assert listed(filter_arg(html, "Due", "greater than"), "2026-11-05") == {"2,222.00", "3,333.00"}
    # Newest due date first.
    assert html.index("3,333.00") < html.index("2,222.00") < html.index("1,111.00")
