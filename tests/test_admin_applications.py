"""The applications queue: what a checker sees beside each application, and decisions taken
from it one at a time or in bulk, through the loan services."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.clock import business_today
from app.extensions import db
from app.models import AuditLog, Loan, LoanProduct, Member
from app.selectors.loans import ApplicantPosition, applicant_position, loan_applications
from app.services.loans import (
    loan_apply,
    loan_recommend,
    loan_update_arrears,
    loan_write_off,
)
from app.services.staff import staff_add
from tests.helpers import PASSWORD, csrf_token, login, staff
from tests.helpers import browse as _browse
from tests.loan_factories import (
    make_borrower,
    make_loan,
    make_product,
    make_staff,
    reload,
    restructure,
    run_job,
)

D = Decimal

QUEUE = "/admin/applications/"


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's read transaction would hold the write lock
    return _browse(client, path, method, **kwargs)


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    db.session.commit()
    login(client, staff(role))
    return client


def text(client: FlaskClient, path: str) -> str:
    page = browse(client, path)
    assert page.status_code == 200, (path, page.status_code)
    return page.get_data(as_text=True)


def post(client: FlaskClient, path: str, data: dict[str, object], follow: bool = True):  # noqa: ANN201
    db.session.commit()
    token = csrf_token(client)
    return browse(client, path, "POST", data={**data, "csrf_token": token}, follow_redirects=follow)


def dev() -> LoanProduct:
    # The demo's development loan, open to new members without shares; maker-checker
    # above KES 100,000.
    return make_product("DEV", min_membership_days=0, min_share_capital=Decimal("0"))


def apply(member: Member, product: LoanProduct, amount: int, term: int = 12) -> Loan:
    return loan_apply(
        member_id=member.id,
        product_id=product.id,
        amount=amount,
        term=term,
        as_of=business_today(),
        channel="console",
    )


def cell_texts(html: str, loan: Loan) -> list[str]:
    """The queue row of `loan` as a person reads it: each cell's text, tags dropped."""
    row = re.search(rf'<tr id="application-{loan.id}">(.*?)</tr>', html, re.S)
    assert row, f"{loan.loan_no} is not in the queue"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", c).split()) for c in cells]


def status(loan_id: int) -> str:
    db.session.expire_all()
    return db.session.get(Loan, loan_id).status


def test_each_application_shows_the_members_eligibility_worked_out_by_hand(app: Flask) -> None:
    today = business_today()
    v1, product = make_product("V1"), dev()
    # A member with KES 40,000 saved and a V1 loan of 10,000 paid out 10 days ago (nothing
    # due yet). Limit: 40,000 x 3 - 10,000 principal owed = 110,000. The V1 loan owes its
    # principal and the whole scheduled interest (661.86): 10,661.86.
    clean = make_borrower(savings=40000)
    make_loan(product=v1, amount=10000, on=today - timedelta(days=10), member=clean)
    asks = apply(clean, product, 50000)
    # A member with 20,000 saved whose V1 loan of 10,000 was paid out 75 days ago: the
    # first two installments (888.49 each) fell due and are unpaid, 1,776.98 in arrears.
    late = make_borrower(savings=20000)
    old = make_loan(product=v1, amount=10000, on=today - timedelta(days=75), member=late)
    behind = apply(late, product, 30000)
    loan_update_arrears(loan_id=old.id, as_of=today)  # the daily job's days past due
    first_due = db.session.get(Loan, old.id).installments[0].due_date

    html = text(signed_in(app, "loan_officer"), QUEUE)

    cells = cell_texts(html, asks)
    # loan, member, applied, asks, savings, limit, other loans, arrears, decide
    assert cells[3].startswith("KES 50,000.00 12 months at 12%")
    assert cells[4] == "40,000.00 shares 0.00"
    assert cells[5] == "110,000.00"
    assert cells[6] == "1 owing 10,661.86"
    assert cells[7] == "none"
    cells = cell_texts(html, behind)
    assert cells[4].startswith("20,000.00")
    assert cells[5] == "not eligible: You have a loan in arrears. Pay it first to borrow again."
    assert cells[7] == f"1,776.98 {(today - first_due).days} days late"
    # The proposed schedule: 50,000 at 12% over 12 months, whole-shilling installments.
    schedule = re.search(rf'<details id="schedule-{asks.id}">(.*?)</details>', html, re.S)
    assert schedule and "12 installments" in schedule.group(1)
    assert "4,442.00" in schedule.group(1) and "4,447.58" in schedule.group(1)


def test_the_queue_lists_the_oldest_application_first_a_page_at_a_time(app: Flask) -> None:
    product = make_product("V1")
    loans = [apply(make_borrower(savings=10000), product, 5000) for _ in range(27)]
    client = signed_in(app, "loan_officer")
    first = text(client, QUEUE)
    assert "27 applications waiting" in first and "page 1 of 2" in first
    assert first.index(loans[0].loan_no) < first.index(loans[1].loan_no)
    assert loans[25].loan_no not in first
    second = text(client, QUEUE + "?page=2")
    assert loans[25].loan_no in second and loans[26].loan_no in second
    assert loans[0].loan_no not in second


def test_the_queue_is_in_order_of_asking_and_filters_by_status(app: Flask) -> None:
    product = dev()
    early, late, big = (
        apply(make_borrower(savings=100000), product, n) for n in (5000, 6000, 150000)
    )
    # Numbered in one order, asked in the other (an import, a clock): applied_at rules.
    db.session.get(Loan, late.id).applied_at = early.applied_at - timedelta(hours=1)
    loan_recommend(loan_id=big.id, staff=make_staff("branch_manager"))
    db.session.commit()

    everything, total = loan_applications(page=1, per_page=25)
    recommended, recommended_total = loan_applications(page=1, per_page=25, status="recommended")

    assert [loan.id for loan in everything] == [late.id, early.id, big.id] and total == 3
    assert [loan.id for loan in recommended] == [big.id] and recommended_total == 1


def test_an_empty_queue_counts_none_waiting(app: Flask) -> None:
    assert loan_applications(page=1, per_page=25) == ([], 0)


APRIL_1 = date(2026, 4, 1)


def application_of(member_id: int) -> int:
    """An application on 1 April, made before that night's arrears job (which would refuse it)."""
    return loan_apply(
        member_id=member_id, product_id=dev().id, amount=5000, as_of=APRIL_1, channel="console"
    ).id


def position_of(application: int) -> ApplicantPosition:
    return applicant_position(loan=reload(application), as_of=APRIL_1)


def test_beside_an_application_only_the_members_running_loans_count(app: Flask) -> None:
    v1 = make_product("V1", default_threshold_days=30)
    member = make_borrower(savings=30000)
    member_id = member.id
    gone = make_loan(product=v1, on=date(2026, 1, 1), member=member).id
    running = make_loan(product=v1, on=date(2026, 2, 1), member=member).id
    elsewhere = make_loan(product=v1, on=date(2025, 12, 1)).id  # another member's
    application = application_of(member_id)
    run_job("loan-arrears", APRIL_1)
    loan_write_off(
        loan_id=gone, staff=make_staff("branch_manager"), reason="Absconded", value_date=APRIL_1
    )
    late = [reload(loan_id).days_past_due for loan_id in (gone, running, elsewhere)]
    assert late == [59, 31, 90]

    position = position_of(application)

    # The written-off loan is neither another loan beside this one, nor late, nor in arrears;
    # the other member's loan, 90 days late, is none of this member's business.
    assert (position.other_loans, position.days_past_due) == (1, 31)
    # Arrears: the running loan's first installment (1 March), not its second, due today.
    assert position.arrears == D("888.49")


def test_beside_a_first_application_nothing_is_owed_or_late(app: Flask) -> None:
    position = position_of(application_of(make_borrower(savings=30000).id))

    assert (position.other_loans, position.days_past_due, position.arrears) == (0, 0, D("0"))


def test_beside_an_application_a_restructured_loan_is_late_only_on_its_new_schedule(
    app: Flask,
) -> None:
    member = make_borrower(savings=30000)
    member_id = member.id
    late = make_loan(product=make_product("V1"), on=date(2026, 1, 31), member=member).id
    application = application_of(member_id)
    run_job("loan-arrears", date(2026, 3, 31))
    restructure(late, start=date(2026, 3, 31))

    position = position_of(application)

    # The replaced rows (28 Feb and 31 Mar, unpaid) are history; the new ones fall due later.
    assert (position.other_loans, position.days_past_due, position.arrears) == (1, 0, D("0"))


def test_approving_from_the_queue_keeps_the_reason_and_writes_the_audit_row(app: Flask) -> None:
    loan = apply(make_borrower(savings=100000), dev(), 50000)
    client = signed_in(app, "branch_manager")
    html = text(client, QUEUE)
    assert f'id="approve-{loan.id}"' in html and f'id="reject-{loan.id}"' in html

    page = post(
        client,
        f"/admin/applications/decide/{loan.id}",
        {"action": "approve", "reason": "Savings cover it three times"},
    ).get_data(as_text=True)

    assert f"{loan.loan_no} approved." in page
    db.session.expire_all()
    stored = db.session.get(Loan, loan.id)
    assert stored.status == "approved"
    assert stored.decision_reason == "Savings cover it three times"
    row = db.session.scalar(select(AuditLog).where(AuditLog.action == "loan.approve"))
    assert row.actor == "staff:branch.manager@sacco.test"
    assert row.object_id == loan.loan_no and row.note == "Savings cover it three times"
    assert loan.loan_no not in re.sub(r'<div class="alert.*?</div>', "", page, flags=re.S)


def test_rejecting_from_the_queue_needs_a_reason_and_keeps_it(app: Flask) -> None:
    loan = apply(make_borrower(savings=100000), dev(), 50000)
    client = signed_in(app, "branch_manager")
    path = f"/admin/applications/decide/{loan.id}"
    page = post(client, path, {"action": "reject", "reason": " "}).get_data(as_text=True)
    assert f"{loan.loan_no} not rejected: a rejection needs a reason the member can read" in page
    assert status(loan.id) == "submitted"
    post(client, path, {"action": "reject", "reason": "Guarantor form missing"})
    db.session.expire_all()
    assert db.session.get(Loan, loan.id).decision_reason == "Guarantor form missing"
    row = db.session.scalar(select(AuditLog).where(AuditLog.action == "loan.reject"))
    assert row is not None and row.note == "Guarantor form missing"


def test_a_bulk_approval_reports_each_loan_and_refuses_what_the_service_refuses(
    app: Flask,
) -> None:
    product = dev()
    small = apply(make_borrower(savings=100000), product, 50000)
    big = apply(make_borrower(savings=100000), product, 150000)  # needs a maker first
    made = apply(make_borrower(savings=100000), product, 150000)
    officer = staff("loan_officer")
    loan_recommend(loan_id=made.id, staff=db.session.scalar(select_staff(officer)), note="Checked")
    client = signed_in(app, "branch_manager")

    page = post(
        client,
        "/admin/applications/bulk",
        {
            "action": "approve",
            "reason": "Batch of the week",
            "loan_id": [small.id, big.id, made.id],
        },
    ).get_data(as_text=True)

    assert f"2 approved: {small.loan_no}, {made.loan_no}." in page
    assert (
        f"{big.loan_no} not approved: loans above KES 100,000 need a recommendation by "
        "another staff member first"
    ) in page
    assert [status(small.id), status(big.id), status(made.id)] == [
        "approved",
        "submitted",
        "approved",
    ]
    approvals = db.session.scalars(
        select(AuditLog.object_id).where(AuditLog.action == "loan.approve").order_by(AuditLog.id)
    ).all()
    assert approvals == [small.loan_no, made.loan_no]
    assert db.session.get(Loan, small.id).decision_reason == "Batch of the week"


def test_a_manager_cannot_approve_in_bulk_what_they_recommended(app: Flask) -> None:
    loan = apply(make_borrower(savings=100000), dev(), 150000)
    staff_add(email="one.manager@sacco.test", role="branch_manager", password=PASSWORD)
    client = app.test_client()
    db.session.commit()
    login(client, "one.manager@sacco.test")
    post(client, f"/admin/applications/decide/{loan.id}", {"action": "recommend"})
    assert status(loan.id) == "recommended"
    page = post(
        client, "/admin/applications/bulk", {"action": "approve", "loan_id": [loan.id]}
    ).get_data(as_text=True)
    assert "the staff member who recommended a loan cannot also approve it" in page
    assert status(loan.id) == "recommended"


def test_a_bulk_rejection_needs_one_reason_for_all(app: Flask) -> None:
    product = dev()
    loans = [apply(make_borrower(savings=100000), product, 50000) for _ in range(2)]
    client = signed_in(app, "branch_manager")
    ids = [loan.id for loan in loans]
    page = post(client, "/admin/applications/bulk", {"action": "reject", "loan_id": ids})
    assert page.get_data(as_text=True).count("a rejection needs a reason") == 2
    post(
        client,
        "/admin/applications/bulk",
        {"action": "reject", "loan_id": ids, "reason": "Branch closed for audit"},
    )
    db.session.expire_all()
    assert [db.session.get(Loan, i).decision_reason for i in ids] == ["Branch closed for audit"] * 2


def test_a_loan_officer_sees_no_approve_button_and_gets_403_for_a_decision(app: Flask) -> None:
    loan = apply(make_borrower(savings=100000), dev(), 50000)
    client = signed_in(app, "loan_officer")
    html = text(client, QUEUE)
    assert f'id="recommend-{loan.id}"' in html
    assert f'id="approve-{loan.id}"' not in html and 'id="bulk"' not in html
    for path, data in (
        (f"/admin/applications/decide/{loan.id}", {"action": "approve"}),
        (f"/admin/applications/decide/{loan.id}", {"action": "reject", "reason": "No"}),
        ("/admin/applications/bulk", {"action": "approve", "loan_id": [loan.id]}),
        ("/admin/applications/bulk", {"action": "reject", "loan_id": [loan.id], "reason": "No"}),
    ):
        assert post(client, path, data, follow=False).status_code == 403, (path, data)
    assert status(loan.id) == "submitted"
    denied = db.session.scalars(
        select(AuditLog).where(AuditLog.action == "access.denied").order_by(AuditLog.id)
    ).all()
    assert len(denied) == 4 and denied[0].after["needs"] == "loan.approve"
    # The maker's own step works for them.
    post(client, f"/admin/applications/decide/{loan.id}", {"action": "recommend"})
    assert status(loan.id) == "recommended"


def test_an_auditor_reads_the_queue_but_cannot_recommend(app: Flask) -> None:
    loan = apply(make_borrower(savings=100000), dev(), 50000)
    client = signed_in(app, "auditor")
    html = text(client, QUEUE)
    assert loan.loan_no in html and f'id="recommend-{loan.id}"' not in html
    path = f"/admin/applications/decide/{loan.id}"
    assert post(client, path, {"action": "recommend"}, follow=False).status_code == 403
    assert status(loan.id) == "submitted"


def test_a_decision_without_the_csrf_token_changes_nothing(app: Flask) -> None:
    loan = apply(make_borrower(savings=100000), dev(), 50000)
    client = signed_in(app, "branch_manager")
    for path, data in (
        (f"/admin/applications/decide/{loan.id}", {"action": "approve"}),
        ("/admin/applications/bulk", {"action": "approve", "loan_id": [loan.id]}),
    ):
        page = browse(client, path, "POST", data=data, follow_redirects=True)
        assert "The form expired" in page.get_data(as_text=True)
    assert status(loan.id) == "submitted"
    assert db.session.scalar(select(AuditLog).where(AuditLog.action == "loan.approve")) is None


def select_staff(email: str):  # noqa: ANN201
    from app.models import StaffUser

    return select(StaffUser).where(StaffUser.email == email)


def test_on_a_phone_each_application_stacks_into_a_card_with_its_column_names(
    app: Flask,
) -> None:
    """At 390 px the queue's rows become cards (console.css); every cell names its column
    so the card still reads "savings 50,000.00". The browser test measures the width."""
    apply(make_borrower(savings=50000), dev(), 5000)
    html = text(signed_in(app, "branch_manager"), QUEUE)
    assert "/admin/sacco-static/console.css" in html
    table = html[html.index('id="applications"') :]
    assert 'class="table table-sm table-bordered table-stack"' in html
    for label in ("loan", "member", "applied", "asks", "savings", "limit now", "arrears"):
        assert f'data-label="{label}"' in table, label
    assert 'class="form-inline stack-form' in table  # the buttons take the card's width
