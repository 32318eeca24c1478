"""Standing orders through the console's member page, as a browser sends them: an officer sets
one (to deposits, to a loan), the nightly job moves the money and the page shows the run;
cancel stops the next month's; the service's refusals in its words change nothing; roles
without the permission get 403; a form without its CSRF token changes nothing."""

from __future__ import annotations

import html
from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditLog, JournalEntry, Member, StandingOrder, StandingOrderRun
from app.selectors.members import member_balances
from app.services.ledger import credit, debit, gl_account, journal_post
from app.services.savings import account_product, member_product_account
from app.services.savings.standing_orders import standing_order_create
from tests.factories import make_member
from tests.helpers import browse as _browse
from tests.helpers import login, post_form, staff
from tests.loan_factories import make_loan, make_product
from workers.schedule import run_job

D = Decimal
START = "2026-01-01"


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's read transaction would hold the write lock
    return _browse(client, path, method, **kwargs)


def post(client: FlaskClient, path: str, data: dict[str, object] | None = None):  # noqa: ANN201
    db.session.commit()
    return post_form(client, path, data)


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    email = staff(role)
    db.session.commit()
    login(client, email)
    return client


def page_of(client: FlaskClient, member_id: int) -> str:
    response = browse(client, f"/admin/member/details/?id={member_id}")
    assert response.status_code == 200
    return html.unescape(response.get_data(as_text=True))


def count(model: type) -> int:
    value = db.session.scalar(select(func.count()).select_from(model)) or 0
    db.session.commit()
    return value


def save(member: Member, amount: str) -> None:
    """Money into the member's withdrawable savings, as a Paybill payment to M...S."""
    journal_post(
        kind="deposit",
        lines=[
            debit(gl_account("GL-MPESA-CLEARING"), D(amount)),
            credit(member_product_account(member, account_product("ORD")), D(amount)),
        ],
        value_date=date(2026, 1, 5),
        idempotency_key=f"deposit:ORD-{member.id}",
        member_id=member.id,
    )
    db.session.commit()


def ordinary(member_id: int) -> D:
    member = db.session.get(Member, member_id)
    value = member_product_account(member, account_product("ORD")).display_balance
    db.session.commit()
    return value


def deposits(member_id: int) -> D:
    value = member_balances(member_id=member_id).savings
    db.session.commit()
    return value


def orders() -> list[StandingOrder]:
    db.session.expire_all()
    return list(db.session.scalars(select(StandingOrder).order_by(StandingOrder.id)))


def order_form(**changes: str) -> dict[str, object]:
    return {
        "target": "deposits",
        "amount": "1000",
        "day_of_month": "5",
        "partial": "yes",
        "starts_on": START,
        "ends_on": "",
        **changes,
    }


def test_an_officer_sets_an_order_the_night_runs_it_and_cancel_stops_the_next(app: Flask) -> None:
    member = make_member()
    save(member, "5000")
    member_id = member.id
    officer = signed_in(app, "loan_officer")
    page = page_of(officer, member_id)
    assert 'id="standing-order-new"' in page and 'value="loan"' not in page  # no loan to pay

    response = post(officer, f"/admin/standing-orders/member/{member_id}/new", order_form())
    assert response.status_code == 302
    assert response.headers["Location"].endswith(
        f"/admin/member/details/?id={member_id}#standing-orders"
    )
    (order,) = orders()
    order_id = order.id
    assert (order.target, order.amount, order.day_of_month, order.partial, order.channel) == (
        "deposits",
        D("1000"),
        5,
        True,
        "console",
    )
    page = page_of(officer, member_id)
    assert f"Standing order {order_id} is set: KES 1,000.00 to deposits on day 5" in page
    assert f'id="standing-order-{order_id}"' in page and "none yet" in page

    assert run_job("standing-orders", date(2026, 3, 5)) == 0
    assert deposits(member_id) == D("1000.00") and ordinary(member_id) == D("4000.00")
    page = page_of(officer, member_id)
    assert "2026-03-05: done 1,000.00" in page
    assert f'id="order-{order_id}"' in html.unescape(
        browse(officer, "/admin/standing-orders/").get_data(as_text=True)
    )

    post(officer, f"/admin/standing-orders/{order_id}/cancel")
    page = page_of(officer, member_id)
    assert f"Standing order {order_id} is cancelled; its past runs stay." in page
    assert orders()[0].status == "cancelled"
    assert f'id="cancel-order-{order_id}"' not in page
    assert run_job("standing-orders", date(2026, 4, 5)) == 0
    assert count(StandingOrderRun) == 1
    assert deposits(member_id) == D("1000.00") and ordinary(member_id) == D("4000.00")
    post(officer, f"/admin/standing-orders/{order_id}/cancel")
    assert f"Not done: standing order {order_id} is cancelled already." in page_of(
        officer, member_id
    )
    actions = list(db.session.scalars(select(AuditLog.action)))
    assert actions.count("standing_order.create") == 1
    assert actions.count("standing_order.cancel") == 1


def test_an_order_to_a_loan_pays_the_chosen_loan_from_savings(app: Flask) -> None:
    loan = make_loan(product=make_product("V1"), amount=6000, on=date(2026, 1, 10))
    member = db.session.get(Member, loan.member_id)
    save(member, "5000")
    member_id, loan_id, loan_no = member.id, loan.id, loan.loan_no
    manager = signed_in(app, "branch_manager")
    page = page_of(manager, member_id)
    assert f'<option value="{loan_id}">{loan_no}</option>' in page

    post(
        manager,
        f"/admin/standing-orders/member/{member_id}/new",
        order_form(target="loan", loan_id=str(loan_id), amount="700", partial="no"),
    )
    (order,) = orders()
    assert (order.target, order.loan_id, order.partial) == ("loan", loan_id, False)
    assert f"loan {loan_no}" in page_of(manager, member_id)
    entries = count(JournalEntry)
    assert run_job("standing-orders", date(2026, 3, 5)) == 0
    assert ordinary(member_id) == D("4300.00") and count(JournalEntry) > entries
    run = db.session.scalars(select(StandingOrderRun)).one()
    assert (run.status, run.moved, run.entry_id is not None) == ("done", D("700.00"), True)
    assert "2026-03-05: done 700.00" in page_of(manager, member_id)


def test_refusals_come_back_in_the_services_words_and_change_nothing(app: Flask) -> None:
    member = make_member()
    save(member, "5000")
    foreign = make_loan(product=make_product("V1"), amount=3000, on=date(2026, 1, 10))
    member_id, foreign_id = member.id, foreign.id
    officer = signed_in(app, "loan_officer")
    path = f"/admin/standing-orders/member/{member_id}/new"
    for changes, words in [
        ({"day_of_month": "31"}, "the day must be 1 to 28, a day every month has"),
        ({"day_of_month": "first"}, "the day must be 1 to 28, a day every month has"),
        ({"target": "loan", "loan_id": str(foreign_id)}, "choose one of the member's own loans"),
        ({"target": "loan"}, "choose one of the member's own loans"),
        ({"target": "fees"}, "a standing order pays a loan, deposits or shares, not 'fees'"),
        ({"ends_on": "2025-12-31"}, "the order would end before it starts"),
        ({"starts_on": "next week"}, "the start date must be a date (YYYY-MM-DD)"),
        ({"amount": "0"}, "Not done:"),
    ]:
        post(officer, path, order_form(**changes))
        assert words in page_of(officer, member_id), words
    assert count(StandingOrder) == 0

    assert ordinary(member_id) == D("5000.00") and deposits(member_id) == D("0.00")
    response = post(officer, "/admin/standing-orders/999999/cancel")
    assert response.headers["Location"].endswith("/admin/standing-orders/")
    assert "No standing order 999999." in html.unescape(
        browse(officer, "/admin/standing-orders/").get_data(as_text=True)
    )


@pytest.mark.parametrize("role", ["auditor", "compliance", "admin"])
def test_roles_without_the_permission_get_403_and_change_nothing(app: Flask, role: str) -> None:
    member = make_member()
    save(member, "5000")
    member_id = member.id
    order_id = standing_order_create(
        member_id=member_id, target="deposits", amount="100", day_of_month=1, actor="x"
    ).id
    client = signed_in(app, role)
    page = page_of(client, member_id)  # every role reads the orders
    assert f'id="standing-order-{order_id}"' in page
    assert 'id="standing-order-new"' not in page and f'id="cancel-order-{order_id}"' not in page
    for path, data in {
        f"/admin/standing-orders/member/{member_id}/new": order_form(),
        f"/admin/standing-orders/{order_id}/cancel": {},
    }.items():
        assert post(client, path, data).status_code == 403, path
        denied = db.session.scalars(
            select(AuditLog).where(AuditLog.action == "access.denied").order_by(AuditLog.id.desc())
        ).first()
        assert denied.after["needs"] == "standing_order.manage" and denied.object_id == path
    assert [(o.id, o.status) for o in orders()] == [(order_id, "active")]
    assert ordinary(member_id) == D("5000.00")


def test_a_post_without_the_csrf_token_changes_nothing(app: Flask) -> None:
    member = make_member()
    client = signed_in(app, "loan_officer")
    response = browse(
        client, f"/admin/standing-orders/member/{member.id}/new", "POST", data=order_form()
    )
    assert response.status_code == 302
    assert "The form expired" in page_of(client, member.id)
    assert count(StandingOrder) == 0
