"""The recovery pages of the console (admin/recovery.py) over HTTP: every role reads them,
a branch manager files a case, adds a hearing (the next hearing shows on the loan), starts
and finishes a recovery step and recommends a write-off; compliance records the board's
decision but cannot recommend; a loan officer gets 403 on every form and changes nothing;
a post without the CSRF token changes nothing."""

from __future__ import annotations

import html
from datetime import date, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.clock import business_today
from app.extensions import db
from app.models import (
    AuditLog,
    Hearing,
    LegalCase,
    Loan,
    RecoveryMilestone,
    WriteOffRequest,
)
from app.services.recovery import (
    hearing_add,
    legal_case_file,
    milestone_start,
    write_off_recommend,
)
from tests.helpers import browse as _browse
from tests.helpers import login, post_form, staff
from tests.loan_factories import balance, make_loan, make_product, make_staff, run_job

EVERYONE = ["loan_officer", "branch_manager", "compliance", "auditor", "admin"]


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


def text(client: FlaskClient, path: str) -> str:
    response = browse(client, path)
    assert response.status_code == 200, (path, response.status_code)
    return html.unescape(response.get_data(as_text=True))


def defaulted_loan() -> int:
    loan_id = make_loan(product=make_product(), on=date(2026, 1, 31)).id
    run_job("loan-arrears", date(2026, 4, 5))  # 36 days late: in default
    return loan_id


def count(model: type) -> int:
    value = db.session.scalar(select(func.count()).select_from(model)) or 0
    db.session.commit()
    return value


def test_every_role_reads_the_recovery_pages(app):
    loan_id = defaulted_loan()
    manager = make_staff("branch_manager")
    today = business_today()
    case = legal_case_file(
        loan_id=loan_id, staff=manager, court="Milimani", case_number="E5/2026", filing_date=today
    )
    hearing_add(case_id=case.id, staff=manager, held_on=today + timedelta(days=9))
    milestone_start(loan_id=loan_id, staff=manager, kind="auctioneer", due_date=today)
    write_off_recommend(loan_id=loan_id, staff=manager, reason="Cannot trace the member")
    db.session.commit()
    for role in EVERYONE:
        client = signed_in(app, role)
        page = text(client, f"/admin/recovery/{loan_id}")
        assert "Milimani · E5/2026" in page
        assert str(today + timedelta(days=9)) in page
        assert "Cannot trace the member" in page
        assert "Recovery history attached" in page
        assert "E5/2026" in text(client, "/admin/legalcase/")
        assert "auctioneer" in text(client, "/admin/recoverymilestone/")
        assert "Cannot trace the member" in text(client, "/admin/writeoffrequest/")
        assert f'id="recovery-loan-{loan_id}"' in text(client, "/admin/recovery/")
        forms = ("case-file", "milestone-start", f"hearing-add-{case.id}")
        if role == "branch_manager":
            assert all(f'id="{form}"' in page for form in forms)
        else:
            assert not any(f'id="{form}"' in page for form in forms)
        decides = 'id="write-off-decide-' in page
        assert decides == (role in ("branch_manager", "compliance"))


def test_a_branch_manager_works_a_loan_through_the_console(app):
    loan_id = defaulted_loan()
    client = signed_in(app, "branch_manager")
    today = business_today()
    page = f"/admin/recovery/{loan_id}"

    response = post(
        client,
        f"{page}/case",
        {"court": "Milimani", "case_number": "E7/2026", "filing_date": today.isoformat()},
    )
    assert response.status_code == 302 and response.headers["Location"].endswith(page)
    case_id = db.session.scalar(select(LegalCase.id))
    hearing_on = today + timedelta(days=14)
    post(client, f"/admin/recovery/case/{case_id}/hearing", {"held_on": hearing_on.isoformat()})
    assert db.session.get(Loan, loan_id).next_hearing_on == hearing_on
    shown = text(client, page)
    assert "The hearing is added." in shown
    assert f'<td id="next-hearing">{hearing_on}</td>' in shown

    # A hearing's outcome before its day is refused in words.
    hearing_id = db.session.scalar(select(Hearing.id))
    post(client, f"/admin/recovery/hearing/{hearing_id}", {"outcome": "Adjourned"})
    assert "has not happened yet; no outcome until then" in text(client, page)

    post(client, f"/admin/recovery/case/{case_id}/status", {"status": "hearing"})
    assert db.session.get(LegalCase, case_id).status == "hearing"

    post(
        client,
        f"{page}/milestone",
        {"kind": "demand_letter", "due_date": (today + timedelta(days=7)).isoformat()},
    )
    step_id = db.session.scalar(select(RecoveryMilestone.id))
    post(client, f"/admin/recovery/milestone/{step_id}/done", {"done_on": today.isoformat()})
    assert db.session.get(RecoveryMilestone, step_id).done_on == today

    post(client, f"{page}/write-off", {"reason": "Member emigrated"})
    request = db.session.scalars(select(WriteOffRequest)).one()
    assert request.status == "recommended" and request.history["cases"][0]["status"] == "hearing"
    # A second recommendation is refused in words.
    post(client, f"{page}/write-off", {"reason": "Again"})
    assert "waits for the board's decision" in text(client, page)
    assert count(WriteOffRequest) == 1


def test_compliance_records_the_approval_and_the_loan_is_written_off(app):
    loan_id = defaulted_loan()
    request_id = write_off_recommend(
        loan_id=loan_id, staff=make_staff("branch_manager"), reason="Emigrated"
    ).id
    db.session.commit()
    compliance = signed_in(app, "compliance")
    today = business_today()

    # Compliance may decide, not recommend.
    refused = post(compliance, f"/admin/recovery/{loan_id}/write-off", {"reason": "x"})
    assert refused.status_code == 403

    post(
        compliance,
        f"/admin/recovery/write-off/{request_id}/decide",
        {"decision": "approve", "decision_date": today.isoformat(), "minute_ref": "BOD/11/3"},
    )
    request = db.session.get(WriteOffRequest, request_id)
    assert (request.status, request.minute_ref) == ("approved", "BOD/11/3")
    loan = db.session.get(Loan, loan_id)
    assert loan.status == "written_off"
    assert loan.written_off_amount == Decimal("10661.86")
    assert balance("GL-WRITE-OFF") == Decimal("10661.86")
    page = text(compliance, f"/admin/recovery/{loan_id}")
    assert "The board's approval is recorded and the loan is written off." in page
    assert "KES 10,661.86 on" in page
    listing = text(compliance, "/admin/writeoffrequest/")
    assert "BOD/11/3" in listing and "10,661.86" in listing


def test_a_declined_decision_leaves_the_loan(app):
    loan_id = defaulted_loan()
    request_id = write_off_recommend(
        loan_id=loan_id, staff=make_staff("branch_manager"), reason="Emigrated"
    ).id
    db.session.commit()
    manager = signed_in(app, "branch_manager")
    post(
        manager,
        f"/admin/recovery/write-off/{request_id}/decide",
        {
            "decision": "decline",
            "decision_date": business_today().isoformat(),
            "minute_ref": "BOD/11/4",
        },
    )
    assert db.session.get(WriteOffRequest, request_id).status == "declined"
    loan = db.session.get(Loan, loan_id)
    assert (loan.status, loan.written_off_amount) == ("active", Decimal("0.00"))
    assert balance("GL-WRITE-OFF") == Decimal("0.00")


@pytest.mark.parametrize("role", ["loan_officer", "auditor", "admin"])
def test_roles_without_the_permission_get_403_and_change_nothing(app, role):
    loan_id = defaulted_loan()
    manager = make_staff("branch_manager")
    today = business_today()
    case_id = legal_case_file(
        loan_id=loan_id, staff=manager, court="Milimani", case_number="E8/2026", filing_date=today
    ).id
    hearing_id = hearing_add(case_id=case_id, staff=manager, held_on=today + timedelta(days=3)).id
    step_id = milestone_start(
        loan_id=loan_id, staff=manager, kind="dacion", due_date=today + timedelta(days=3)
    ).id
    request_id = write_off_recommend(loan_id=loan_id, staff=manager, reason="x").id
    db.session.commit()
    client = signed_in(app, role)
    tables = (LegalCase, Hearing, RecoveryMilestone, WriteOffRequest)
    before = [count(t) for t in tables]
    day = today.isoformat()
    forms = {
        f"/admin/recovery/{loan_id}/case": (
            "legal.file",
            {"court": "X", "case_number": "E9", "filing_date": day},
        ),
        f"/admin/recovery/case/{case_id}/status": ("legal.file", {"status": "withdrawn"}),
        f"/admin/recovery/case/{case_id}/hearing": ("legal.file", {"held_on": day}),
        f"/admin/recovery/hearing/{hearing_id}": ("legal.file", {"held_on": day}),
        f"/admin/recovery/{loan_id}/milestone": (
            "recovery.start",
            {"kind": "auctioneer", "due_date": day},
        ),
        f"/admin/recovery/milestone/{step_id}/done": ("recovery.start", {"done_on": day}),
        f"/admin/recovery/{loan_id}/write-off": ("write_off.recommend", {"reason": "x"}),
        f"/admin/recovery/write-off/{request_id}/decide": (
            "write_off.decide",
            {"decision": "approve", "decision_date": day, "minute_ref": "B/1"},
        ),
    }
    for path, (needs, data) in forms.items():
        response = post(client, path, data)
        assert response.status_code == 403, path
        denied = db.session.scalars(
            select(AuditLog).where(AuditLog.action == "access.denied").order_by(AuditLog.id.desc())
        ).first()
        assert denied.after["needs"] == needs and denied.object_id == path
    assert [count(t) for t in tables] == before
    assert db.session.get(LegalCase, case_id).status == "filed"
    assert db.session.get(RecoveryMilestone, step_id).done_on is None
    assert db.session.get(WriteOffRequest, request_id).status == "recommended"
    assert db.session.get(Loan, loan_id).status == "active"


def test_a_post_without_the_csrf_token_changes_nothing(app):
    loan_id = defaulted_loan()
    request_id = write_off_recommend(
        loan_id=loan_id, staff=make_staff("branch_manager"), reason="x"
    ).id
    db.session.commit()
    client = signed_in(app, "branch_manager")
    day = business_today().isoformat()
    for path, data in {
        f"/admin/recovery/{loan_id}/case": {"court": "X", "case_number": "E1", "filing_date": day},
        f"/admin/recovery/{loan_id}/milestone": {"kind": "auctioneer", "due_date": day},
        f"/admin/recovery/write-off/{request_id}/decide": {
            "decision": "approve",
            "decision_date": day,
            "minute_ref": "B/1",
        },
    }.items():
        response = browse(client, path, "POST", data=data)
        assert response.status_code == 302
    assert (count(LegalCase), count(RecoveryMilestone)) == (0, 0)
    assert db.session.get(WriteOffRequest, request_id).status == "recommended"
    assert db.session.get(Loan, loan_id).status == "active"
    assert "The form expired" in text(client, f"/admin/recovery/{loan_id}")


def test_bad_dates_are_refused_in_words(app):
    loan_id = defaulted_loan()
    client = signed_in(app, "branch_manager")
    post(
        client,
        f"/admin/recovery/{loan_id}/case",
        {"court": "Milimani", "case_number": "E1", "filing_date": "21/11/2026"},
    )
    assert "the filing date must be a date (YYYY-MM-DD)" in text(
        client, f"/admin/recovery/{loan_id}"
    )
    assert count(LegalCase) == 0
