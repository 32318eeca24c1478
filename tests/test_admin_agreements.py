"""Compromise agreements through the console, as a browser sends them: the draft form from
a loan in default, submit, a branch manager's approval (a loan officer gets 403), refusals
in words, the schedule's paid and outstanding, and the list."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.clock import business_today
from app.extensions import db
from app.models import Agreement, AuditLog, StaffUser
from app.selectors.loans import loan_debt
from app.services.agreements import agreement_approve, agreement_draft, agreement_submit
from app.services.loans import loan_repay
from tests.helpers import browse as _browse
from tests.helpers import login, post_form, staff
from tests.loan_factories import make_loan, make_product, reload, run_job


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    # On SQLite the test's own read transaction would hold the one lock the request needs.
    db.session.commit()
    return _browse(client, path, method, **kwargs)


def post(client: FlaskClient, path: str, data: dict[str, object]):  # noqa: ANN201
    db.session.commit()
    return post_form(client, path, data)


def _loan_in_default() -> int:
    loan = make_loan(product=make_product("V1", default_threshold_days=30), on=date(2026, 1, 1))
    loan_id = loan.id
    run_job("loan-arrears", date(2026, 4, 1))
    assert reload(loan_id).in_default
    return loan_id


def _user(email: str) -> StaffUser:
    user = db.session.scalar(select(StaffUser).where(StaffUser.email == email))
    assert user is not None
    return user


def _schedule() -> tuple[str, list[tuple[date, str]]]:
    """Two installments after today (the console drafts as of the business date)."""
    first = business_today() + timedelta(days=30)
    second = first + timedelta(days=30)
    return f"{first} 4,000\n{second} 4000\n", [(first, "4000"), (second, "4000")]


def _figures(loan_id: int) -> dict[str, object]:
    owed = loan_debt(loan_id=loan_id).total
    text, _ = _schedule()
    return {
        "settlement_amount": "8000",
        "discount": str(owed - Decimal("8000")),
        "grace_days": "3",
        "default_threshold_days": "30",
        "schedule": text,
        "note": "member lost his job",
    }


def _client(app: Flask, email: str) -> FlaskClient:
    client = app.test_client()
    db.session.commit()
    login(client, email)
    return client


def _submitted(loan_id: int, drafter_email: str) -> int:
    drafter = _user(drafter_email)
    owed = loan_debt(loan_id=loan_id).total
    _, lines = _schedule()
    agreement = agreement_draft(
        loan_id=loan_id,
        staff=drafter,
        settlement_amount="8000",
        discount=owed - Decimal("8000"),
        schedule=lines,
    )
    agreement_submit(agreement_id=agreement.id, staff=drafter)
    return agreement.id


def _status(agreement_id: int) -> str:
    db.session.expire_all()
    agreement = db.session.get(Agreement, agreement_id)
    assert agreement is not None
    return agreement.status


def test_an_officer_drafts_from_the_loan_page_and_a_manager_approves(app: Flask) -> None:
    loan_id = _loan_in_default()
    officer_email, manager_email = staff("loan_officer"), staff("branch_manager")
    officer, manager = _client(app, officer_email), _client(app, manager_email)

    loan_page = browse(officer, f"/admin/loan/details/?id={loan_id}").get_data(as_text=True)
    assert 'id="draft-agreement-link"' in loan_page
    form = browse(officer, f"/admin/agreement/new?loan_id={loan_id}")
    assert form.status_code == 200
    assert "The loan owes KES" in form.get_data(as_text=True)

    created = post(officer, f"/admin/agreement/new?loan_id={loan_id}", _figures(loan_id))
    assert created.status_code == 302
    agreement_id = db.session.scalar(select(Agreement.id))
    assert agreement_id is not None and _status(agreement_id) == "draft"

    page = browse(officer, f"/admin/agreement/{agreement_id}").get_data(as_text=True)
    assert 'data-status="draft"' in page and "member lost his job" in page
    assert 'id="approve-form"' not in page  # an officer has no approve button

    post(officer, f"/admin/agreement/{agreement_id}/act", {"action": "submit"})
    assert _status(agreement_id) == "submitted"

    refused = post(officer, f"/admin/agreement/{agreement_id}/act", {"action": "approve"})
    assert refused.status_code == 403
    assert _status(agreement_id) == "submitted"
    denied = db.session.scalar(select(AuditLog).where(AuditLog.action == "access.denied"))
    assert denied is not None and denied.after["needs"] == "agreement.approve"

    page = browse(manager, f"/admin/agreement/{agreement_id}").get_data(as_text=True)
    assert 'id="approve-form"' in page
    done = post(manager, f"/admin/agreement/{agreement_id}/act", {"action": "approve"})
    assert done.status_code == 302 and _status(agreement_id) == "approved"
    page = browse(manager, f"/admin/agreement/{agreement_id}").get_data(as_text=True)
    assert 'data-status="approved"' in page and 'id="agreement-form"' not in page


def test_a_schedule_that_does_not_add_up_is_refused_on_the_form(app: Flask) -> None:
    loan_id = _loan_in_default()
    officer = _client(app, staff("loan_officer"))
    figures = _figures(loan_id)
    first = business_today() + timedelta(days=30)
    figures["schedule"] = f"{first} 4000\n{first + timedelta(days=30)} 3000"
    page = post(officer, f"/admin/agreement/new?loan_id={loan_id}", figures)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Not drafted: the installments add up to KES 7,000.00" in text
    assert "3000" in text  # what was typed stays in the form
    assert db.session.scalar(select(Agreement.id)) is None


def test_the_drafter_cannot_approve_through_the_console(app: Flask) -> None:
    loan_id = _loan_in_default()
    manager_email = staff("branch_manager")
    agreement_id = _submitted(loan_id, manager_email)
    manager = _client(app, manager_email)
    page = browse(manager, f"/admin/agreement/{agreement_id}").get_data(as_text=True)
    assert 'id="approve-form"' not in page
    response = post(manager, f"/admin/agreement/{agreement_id}/act", {"action": "approve"})
    follow = browse(manager, response.headers["Location"]).get_data(as_text=True)
    assert "cannot also approve it" in follow
    assert _status(agreement_id) == "submitted"


def test_roles_that_may_not_draft_get_403(app: Flask) -> None:
    loan_id = _loan_in_default()
    for role in ("compliance", "auditor"):
        client = _client(app, staff(role))
        assert browse(client, f"/admin/agreement/new?loan_id={loan_id}").status_code == 403
        page = browse(client, f"/admin/loan/details/?id={loan_id}").get_data(as_text=True)
        assert 'id="draft-agreement-link"' not in page
        assert browse(client, "/admin/agreement/").status_code == 200  # reading is for all


def test_an_approved_agreement_cannot_be_edited_or_deleted_from_the_console(app: Flask) -> None:
    loan_id = _loan_in_default()
    officer_email = staff("loan_officer")
    agreement_id = _submitted(loan_id, officer_email)
    agreement_approve(agreement_id=agreement_id, staff=_user(staff("branch_manager")))
    officer = _client(app, officer_email)
    response = post(officer, f"/admin/agreement/{agreement_id}/edit", _figures(loan_id))
    assert "can no longer change" in response.get_data(as_text=True)
    response = post(officer, f"/admin/agreement/{agreement_id}/act", {"action": "delete"})
    follow = browse(officer, response.headers["Location"]).get_data(as_text=True)
    assert "only draft agreements can be deleted" in follow
    post(officer, f"/admin/agreement/{agreement_id}/act", {"action": "note", "note": "called"})
    assert _status(agreement_id) == "approved"
    assert "called" in browse(officer, f"/admin/agreement/{agreement_id}").get_data(as_text=True)


def test_a_draft_is_edited_and_deleted_from_the_console(app: Flask) -> None:
    loan_id = _loan_in_default()
    officer_email = staff("loan_officer")
    agreement_id = _submitted(loan_id, officer_email)
    officer = _client(app, officer_email)
    figures = _figures(loan_id)
    figures["settlement_amount"] = "7000"
    figures["discount"] = str(loan_debt(loan_id=loan_id).total - Decimal("7000"))
    first = business_today() + timedelta(days=30)
    figures["schedule"] = f"{first} 7000"
    post(officer, f"/admin/agreement/{agreement_id}/edit", figures)
    db.session.expire_all()
    agreement = db.session.get(Agreement, agreement_id)
    assert agreement is not None
    assert agreement.status == "draft" and agreement.settlement_amount == Decimal("7000.00")
    post(officer, f"/admin/agreement/{agreement_id}/act", {"action": "delete"})
    assert _status(agreement_id) == "deleted"
    listing = browse(officer, "/admin/agreement/").get_data(as_text=True)
    assert f'id="agreement-{agreement_id}"' not in listing  # deleted drafts are hidden
    listing = browse(officer, "/admin/agreement/?status=deleted").get_data(as_text=True)
    assert f'id="agreement-{agreement_id}"' in listing


def test_the_schedule_shows_paid_and_outstanding_and_the_list_its_loan(app: Flask) -> None:
    loan_id = _loan_in_default()
    agreement_id = _submitted(loan_id, staff("loan_officer"))
    agreement_approve(agreement_id=agreement_id, staff=_user(staff("branch_manager")))
    loan_repay(loan_id=loan_id, amount="5000", reference="QKCONS0001", value_date=date(2026, 4, 2))
    client = _client(app, staff("auditor"))
    page = browse(client, f"/admin/agreement/{agreement_id}").get_data(as_text=True)
    assert 'data-status="active"' in page
    assert "4,000.00" in page and "1,000.00" in page and "3,000.00" in page
    assert '<span class="badge badge-success">paid</span>' in page
    listing = browse(client, f"/admin/agreement/?loan_id={loan_id}").get_data(as_text=True)
    loan_no = reload(loan_id).loan_no
    assert f'id="agreement-{agreement_id}"' in listing and loan_no in listing
    assert browse(client, "/admin/agreement/999999").status_code == 404
