"""Share transfers through the console, as a browser sends them: an officer enters one from
the signed form, a second person (a branch manager) approves it and the shares move; the
service's refusals come back in its words and change nothing; roles without the permission
get 403; a form without its CSRF token changes nothing."""

from __future__ import annotations

import html
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditLog, JournalEntry, ShareTransfer
from app.selectors.members import member_balances
from app.services.staff import staff_add
from tests.helpers import PASSWORD, login, post_form, staff
from tests.helpers import browse as _browse
from tests.loan_factories import make_borrower

D = Decimal
PAGE = "/admin/share-transfers/"


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's read transaction would hold the write lock
    return _browse(client, path, method, **kwargs)


def post(client: FlaskClient, path: str, data: dict[str, object] | None = None):  # noqa: ANN201
    db.session.commit()
    return post_form(client, path, data)


def signed_in(app: Flask, email: str) -> FlaskClient:
    client = app.test_client()
    db.session.commit()
    login(client, email)
    return client


def text(client: FlaskClient, path: str = PAGE) -> str:
    response = browse(client, path)
    assert response.status_code == 200, (path, response.status_code)
    return html.unescape(response.get_data(as_text=True))


def shares(member_id: int) -> D:
    value = member_balances(member_id=member_id).share_capital
    db.session.commit()
    return value


def count(model: type) -> int:
    value = db.session.scalar(select(func.count()).select_from(model)) or 0
    db.session.commit()
    return value


def only_transfer() -> ShareTransfer:
    db.session.expire_all()
    transfers = db.session.scalars(select(ShareTransfer)).all()
    assert len(transfers) == 1
    return transfers[0]


def test_an_officer_enters_a_transfer_and_a_manager_approves_it(app: Flask) -> None:
    seller, buyer = make_borrower(shares=5000), make_borrower()
    seller_id, buyer_id = seller.id, buyer.id
    officer = signed_in(app, staff("loan_officer"))
    manager = signed_in(app, staff("branch_manager"))

    response = post(
        officer,
        f"{PAGE}new",
        {
            "seller": seller.member_no,
            "buyer": buyer.member_no.lstrip("M0"),  # "123" finds M000123 too
            "amount": "2,000",
            "form_ref": "STF-17",
        },
    )
    assert response.status_code == 302
    page = text(officer)
    assert "is entered: a branch manager other than you approves it" in page
    transfer = only_transfer()
    assert (transfer.status, transfer.amount, transfer.form_ref) == (
        "requested",
        D("2000"),
        "STF-17",
    )
    assert shares(seller_id) == D("5000.00") and shares(buyer_id) == D("0.00")  # not yet
    # The officer sees no decision buttons; the manager does.
    assert f'id="decide-{transfer.id}"' not in page
    assert f'id="decide-{transfer.id}"' in text(manager)

    post(manager, f"{PAGE}{transfer.id}/decide", {"decision": "approve"})
    assert f"Transfer {transfer.id} is approved: the shares have moved." in text(manager)
    assert only_transfer().status == "approved"
    assert shares(seller_id) == D("3000.00") and shares(buyer_id) == D("2000.00")
    actions = list(db.session.scalars(select(AuditLog.action).order_by(AuditLog.id)))
    assert actions.count("share_transfer.request") == 1
    assert actions.count("share_transfer.approve") == 1

    # A second click moves nothing twice.
    entries = count(JournalEntry)
    post(manager, f"{PAGE}{transfer.id}/decide", {"decision": "approve"})
    assert f"Not done: transfer {transfer.id} is approved already." in text(manager)
    assert count(JournalEntry) == entries
    assert shares(seller_id) == D("3000.00") and shares(buyer_id) == D("2000.00")


def test_refusals_come_back_in_the_services_words_and_change_nothing(app: Flask) -> None:
    seller, buyer = make_borrower(shares=1000), make_borrower()
    seller_id, buyer_id = seller.id, buyer.id
    seller_no, buyer_no = seller.member_no, buyer.member_no
    manager = signed_in(app, staff("branch_manager"))
    entries = count(JournalEntry)

    for form, words in [
        ({"seller": seller_no, "buyer": buyer_no, "amount": "1500"}, "holds only KES 1,000.00"),
        ({"seller": seller_no, "buyer": seller_no, "amount": "100"}, "to themselves"),
        ({"seller": "M999999", "buyer": buyer_no, "amount": "100"}, "no member 'M999999'"),
        ({"seller": seller_no, "buyer": "", "amount": "100"}, "the buyer's member number"),
        ({"seller": seller_no, "buyer": buyer_no, "amount": "lots"}, "Not done:"),
    ]:
        post(manager, f"{PAGE}new", form)
        assert words in text(manager), words
    assert count(ShareTransfer) == 0

    # The manager who entered a transfer cannot approve it; a rejection needs a reason.
    post(manager, f"{PAGE}new", {"seller": seller_no, "buyer": buyer_no, "amount": "800"})
    transfer_id = only_transfer().id
    post(manager, f"{PAGE}{transfer_id}/decide", {"decision": "approve"})
    page = text(manager)
    assert "the transfer needs a second person: you entered it" in page
    assert "You entered it: another branch manager decides." in page
    staff_add(email="bm2@sacco.test", role="branch_manager", password=PASSWORD)
    second = signed_in(app, "bm2@sacco.test")
    post(second, f"{PAGE}{transfer_id}/decide", {"decision": "reject", "reason": "  "})
    assert "say why the transfer is rejected" in text(second)
    assert only_transfer().status == "requested"
    assert count(JournalEntry) == entries

    post(second, f"{PAGE}{transfer_id}/decide", {"decision": "reject", "reason": "form unsigned"})
    page = text(second)
    assert f"Transfer {transfer_id} is rejected; no shares moved." in page
    assert "form unsigned" in page
    assert only_transfer().status == "rejected"
    assert shares(seller_id) == D("1000.00") and shares(buyer_id) == D("0.00")
    assert count(JournalEntry) == entries


@pytest.mark.parametrize("role", ["auditor", "loan_officer"])
def test_roles_without_the_permission_get_403_and_change_nothing(app: Flask, role: str) -> None:
    seller, buyer = make_borrower(shares=3000), make_borrower()
    seller_id = seller.id
    maker = signed_in(app, staff("branch_manager"))
    post(
        maker, f"{PAGE}new", {"seller": seller.member_no, "buyer": buyer.member_no, "amount": "500"}
    )
    transfer_id = only_transfer().id
    client = signed_in(app, staff(role))
    assert browse(client, PAGE).status_code == 200  # every role reads the list
    forms = {f"{PAGE}{transfer_id}/decide": ("share_transfer.approve", {"decision": "approve"})}
    if role == "auditor":
        forms[f"{PAGE}new"] = (
            "share_transfer.request",
            {"seller": seller.member_no, "buyer": buyer.member_no, "amount": "100"},
        )
    for path, (needs, data) in forms.items():
        assert post(client, path, data).status_code == 403, path
        denied = db.session.scalars(
            select(AuditLog).where(AuditLog.action == "access.denied").order_by(AuditLog.id.desc())
        ).first()
        assert denied.after["needs"] == needs and denied.object_id == path
    assert count(ShareTransfer) == 1 and only_transfer().status == "requested"
    assert shares(seller_id) == D("3000.00")


def test_a_post_without_the_csrf_token_changes_nothing(app: Flask) -> None:
    seller, buyer = make_borrower(shares=3000), make_borrower()
    client = signed_in(app, staff("branch_manager"))
    data = {"seller": seller.member_no, "buyer": buyer.member_no, "amount": "500"}
    response = browse(client, f"{PAGE}new", "POST", data=data)
    assert response.status_code == 302
    assert "The form expired" in text(client)
    assert count(ShareTransfer) == 0
