"""A loan's guarantors in the console (admin/guarantee_recovery.py) over HTTP: every role
reads the page and finds it from the loan page; a branch manager proposes recovery from
the guarantors, compliance records the board's approval and the deposits are debited; the
proposer cannot decide; an officer asks a replacement guarantor and records their signed
consent, a branch manager approves; roles without the permission get 403 and change
nothing; a post without the CSRF token changes nothing."""

from __future__ import annotations

import html
from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.clock import business_today
from app.extensions import db
from app.models import AuditLog, Guarantee, GuaranteeRecovery, Loan, Member
from app.services.guarantees import guarantee_accept, guarantee_request
from app.services.guarantees.recovery import (
    guarantee_recovery_propose,
    guarantee_substitute_accept,
    guarantee_substitute_request,
)
from app.services.loans import loan_apply, loan_approve, loan_disburse
from tests.helpers import browse as _browse
from tests.helpers import login, post_form, staff
from tests.loan_factories import balance, make_borrower, make_product, make_staff, run_job

D = Decimal
EVERYONE = ["loan_officer", "branch_manager", "compliance", "auditor", "admin"]
PAID_OUT = date(2026, 1, 1)


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


def count(model: type) -> int:
    value = db.session.scalar(select(func.count()).select_from(model)) or 0
    db.session.commit()
    return value


def defaulted() -> tuple[int, list[int]]:
    """A 10,000 loan guaranteed 4,000 and 2,000 by two members (who have just that),
    paid out on 1 January and in default by April: its id and the guarantors' ids."""
    product = make_product(
        "V1", code="SEC", name="Development", min_guarantors=2, guarantee_cover=D("100")
    )
    borrower = make_borrower(savings=5000)
    loan = loan_apply(member_id=borrower.id, product_id=product.id, amount=10000, as_of=PAID_OUT)
    ids = []
    for pledge in (4000, 2000):
        guarantor = make_borrower(savings=pledge)
        asked = guarantee_request(
            loan_id=loan.id,
            guarantor_id=guarantor.id,
            amount=pledge,
            actor="staff:t",
            today=PAID_OUT,
        )
        guarantee_accept(
            guarantee_id=asked.id, guarantor_id=guarantor.id, via="ussd", today=PAID_OUT
        )
        ids.append(guarantor.id)
    loan_approve(loan_id=loan.id, staff=make_staff("branch_manager"))
    loan_disburse(loan_id=loan.id, reference="B2CGUAR1", value_date=PAID_OUT)
    loan_id = loan.id
    run_job("loan-arrears", date(2026, 4, 1))
    assert db.session.get(Loan, loan_id).in_default
    return loan_id, ids


def savings_of(member_id: int) -> D:
    member = db.session.get(Member, member_id)
    return balance(f"SAV-{member.member_no}")


def test_every_role_reads_the_page_and_finds_it_from_the_loan(app):
    loan_id, _ = defaulted()
    proposal = guarantee_recovery_propose(
        loan_id=loan_id, staff=make_staff("branch_manager"), reason="Borrower cannot be traced"
    )
    db.session.commit()
    page = f"/admin/guarantee-recovery/{loan_id}"
    for role in EVERYONE:
        client = signed_in(app, role)
        shown = text(client, page)
        assert "Borrower cannot be traced" in shown
        assert "KES 6,000.00" in shown  # the guarantors' exposure now
        assert 'id="guarantors-link"' in text(client, f"/admin/loan/details/?id={loan_id}")
        decides = f'id="recovery-decide-{proposal.id}"' in shown
        assert decides == (role in ("branch_manager", "compliance"))
        assert ('id="replace-' in shown) is False  # a proposal waits: no replacing now
        assert 'id="recovery-propose"' not in shown  # one open proposal at a time
        assert "Borrower cannot be traced" in text(client, "/admin/guaranteerecovery/")


def test_a_manager_proposes_and_compliance_records_the_approval(app):
    loan_id, (first, second) = defaulted()
    manager = signed_in(app, "branch_manager")
    page = f"/admin/guarantee-recovery/{loan_id}"
    assert 'id="recovery-propose"' in text(manager, page)
    response = post(manager, f"{page}/propose", {"reason": "Demand letters unanswered"})
    assert response.status_code == 302 and response.headers["Location"].endswith(page)
    proposal = db.session.scalars(select(GuaranteeRecovery)).one()
    assert proposal.status == "proposed"
    shown = text(manager, page)
    assert "Recovery from the guarantors is proposed" in shown
    assert "You proposed it: someone else records the board's decision." in shown

    # The proposer cannot record the decision, even by posting the form.
    today = business_today().isoformat()
    decision = {"decision": "approve", "decision_date": today, "minute_ref": "BOD/12/1"}
    post(manager, f"/admin/guarantee-recovery/recovery/{proposal.id}/decide", decision)
    assert "someone other than who proposed it" in text(manager, page)
    assert savings_of(first) == D("4000")

    compliance = signed_in(app, "compliance")
    post(compliance, f"/admin/guarantee-recovery/recovery/{proposal.id}/decide", decision)
    db.session.expire_all()
    assert db.session.get(GuaranteeRecovery, proposal.id).status == "approved"
    assert (savings_of(first), savings_of(second)) == (D("0.00"), D("0.00"))
    statuses = db.session.scalars(select(Guarantee.status).where(Guarantee.loan_id == loan_id))
    assert set(statuses) == {"recovered"}
    shown = text(compliance, page)
    assert "the guarantors' deposits are debited" in shown
    assert "minute BOD/12/1" in shown and "KES 6,000.00 recovered" in shown


def test_an_officer_asks_a_replacement_and_a_manager_approves_it(app):
    loan_id, (first, _) = defaulted()
    newcomer = make_borrower(savings=5000)
    old_id = db.session.scalar(
        select(Guarantee.id).where(Guarantee.loan_id == loan_id, Guarantee.guarantor_id == first)
    )
    officer = signed_in(app, "loan_officer")
    page = f"/admin/guarantee-recovery/{loan_id}"
    assert f'id="replace-{old_id}"' in text(officer, page)
    post(
        officer,
        f"/admin/guarantee-recovery/guarantee/{old_id}/replace",
        {"guarantor": newcomer.member_no},
    )
    new = db.session.scalars(select(Guarantee).where(Guarantee.replaces_id == old_id)).one()
    assert (new.status, new.amount, new.guarantor_id) == ("requested", D("4000"), newcomer.id)
    assert "The new guarantor is asked by SMS" in text(officer, page)
    post(officer, f"/admin/guarantee-recovery/guarantee/{new.id}/consent")
    db.session.expire_all()
    assert (new.status, new.answered_via) == ("accepted", "console")
    # Officers may not approve the replacement.
    assert post(officer, f"/admin/guarantee-recovery/guarantee/{new.id}/approve").status_code == 403

    manager = signed_in(app, "branch_manager")
    assert f'id="approve-{new.id}"' in text(manager, page)
    post(manager, f"/admin/guarantee-recovery/guarantee/{new.id}/approve")
    db.session.expire_all()
    assert db.session.get(Guarantee, old_id).status == "replaced"
    assert "The replacement is approved" in text(manager, page)


def test_an_unknown_new_guarantor_is_refused_in_words(app):
    loan_id, (first, _) = defaulted()
    old_id = db.session.scalar(
        select(Guarantee.id).where(Guarantee.loan_id == loan_id, Guarantee.guarantor_id == first)
    )
    manager = signed_in(app, "branch_manager")
    post(manager, f"/admin/guarantee-recovery/guarantee/{old_id}/replace", {"guarantor": "M999999"})
    assert "Not done: no active member 'M999999'." in text(
        manager, f"/admin/guarantee-recovery/{loan_id}"
    )
    assert count(Guarantee) == 2


@pytest.mark.parametrize("role", ["loan_officer", "auditor"])
def test_roles_without_the_permission_get_403_and_change_nothing(app, role):
    loan_id, (first, _) = defaulted()
    manager = make_staff("branch_manager")
    proposal_id = guarantee_recovery_propose(loan_id=loan_id, staff=manager, reason="x").id
    old_id = db.session.scalar(
        select(Guarantee.id).where(Guarantee.loan_id == loan_id, Guarantee.guarantor_id == first)
    )
    db.session.commit()
    client = signed_in(app, role)
    day = business_today().isoformat()
    forms = {
        f"/admin/guarantee-recovery/{loan_id}/propose": ("guarantee.recover", {"reason": "x"}),
        f"/admin/guarantee-recovery/recovery/{proposal_id}/decide": (
            "guarantee.recovery_decide",
            {"decision": "approve", "decision_date": day, "minute_ref": "B/1"},
        ),
        f"/admin/guarantee-recovery/guarantee/{old_id}/approve": ("guarantee.substitute", {}),
    }
    if role == "auditor":
        forms[f"/admin/guarantee-recovery/guarantee/{old_id}/replace"] = (
            "guarantee.manage",
            {"guarantor": "M000001"},
        )
    for path, (needs, data) in forms.items():
        response = post(client, path, data)
        assert response.status_code == 403, path
        denied = db.session.scalars(
            select(AuditLog).where(AuditLog.action == "access.denied").order_by(AuditLog.id.desc())
        ).first()
        assert denied.after["needs"] == needs and denied.object_id == path
    assert count(GuaranteeRecovery) == 1 and count(Guarantee) == 2
    assert db.session.get(GuaranteeRecovery, proposal_id).status == "proposed"
    assert db.session.get(Guarantee, old_id).status == "accepted"
    assert savings_of(first) == D("4000")


def test_a_post_without_the_csrf_token_changes_nothing(app):
    loan_id, (first, _) = defaulted()
    newcomer = make_borrower(savings=5000)
    old_id = db.session.scalar(
        select(Guarantee.id).where(Guarantee.loan_id == loan_id, Guarantee.guarantor_id == first)
    )
    new_id = guarantee_substitute_request(
        guarantee_id=old_id, guarantor_id=newcomer.id, by=make_staff("loan_officer")
    ).id
    guarantee_substitute_accept(guarantee_id=new_id, guarantor_id=newcomer.id, via="ussd")
    proposal_id = guarantee_recovery_propose(
        loan_id=loan_id, staff=make_staff("branch_manager"), reason="x"
    ).id
    db.session.commit()
    client = signed_in(app, "branch_manager")
    day = business_today().isoformat()
    for path, data in {
        f"/admin/guarantee-recovery/recovery/{proposal_id}/decide": {
            "decision": "approve",
            "decision_date": day,
            "minute_ref": "B/1",
        },
        f"/admin/guarantee-recovery/guarantee/{new_id}/approve": {},
    }.items():
        response = browse(client, path, "POST", data=data)
        assert response.status_code == 302
    assert db.session.get(GuaranteeRecovery, proposal_id).status == "proposed"
    assert db.session.get(Guarantee, old_id).status == "accepted"
    assert "The form expired" in text(client, f"/admin/guarantee-recovery/{loan_id}")
