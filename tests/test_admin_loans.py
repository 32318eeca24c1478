"""Loan decisions and product edits through the console, as a browser would send them."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db
from app.models import AuditLog, Loan, LoanProduct
from app.services.loans import loan_apply
from app.services.staff import staff_add
from tests.helpers import PASSWORD, login, staff
from tests.helpers import browse as _browse
from tests.loan_factories import make_borrower, make_product


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    # End the test's own read transaction first: on SQLite every transaction takes the
    # write lock at BEGIN, and the request runs in a session of its own.
    db.session.commit()
    return _browse(client, path, method, **kwargs)


CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_from(client: FlaskClient, path: str) -> str:
    page = browse(client, path)
    assert page.status_code == 200, page.status_code
    match = CSRF.search(page.get_data(as_text=True))
    assert match, "no CSRF token on the page"
    return match.group(1)


def submitted_loan(amount: int = 150000) -> int:
    product = make_product("DEV", min_membership_days=0, min_share_capital=Decimal("0"))
    member = make_borrower(savings=100000)
    return loan_apply(
        member_id=member.id, product_id=product.id, amount=amount, term=12, as_of=date(2026, 3, 2)
    ).id


def decide(client: FlaskClient, loan_id: int, action: str, **fields: str):  # noqa: ANN201
    token = csrf_from(client, f"/admin/loan/details/?id={loan_id}")
    return browse(
        client,
        f"/admin/loan/decide/{loan_id}",
        "POST",
        data={"csrf_token": token, "action": action, **fields},
        follow_redirects=True,
    )


def status(loan_id: int) -> str:
    db.session.expire_all()
    return db.session.get(Loan, loan_id).status


def test_maker_checker_through_the_console(app: Flask) -> None:
    loan_id = submitted_loan()
    officer, manager = staff("loan_officer"), staff("branch_manager")
    maker, checker = app.test_client(), app.test_client()
    db.session.commit()
    login(maker, officer)
    login(checker, manager)

    page = decide(checker, loan_id, "approve")
    assert "need a recommendation by another staff member" in page.get_data(as_text=True)
    assert status(loan_id) == "submitted"
    assert decide(maker, loan_id, "approve").status_code == 403  # a maker never approves

    assert "Done: recommend." in decide(maker, loan_id, "recommend").get_data(as_text=True)
    assert "Done: approve." in decide(checker, loan_id, "approve").get_data(as_text=True)
    assert status(loan_id) == "approved"
    actors = db.session.scalars(
        select(AuditLog.actor)
        .where(AuditLog.action.in_(("loan.recommend", "loan.approve")))
        .order_by(AuditLog.id)
    ).all()
    assert actors == [f"staff:{officer}", f"staff:{manager}"]


def test_a_manager_cannot_approve_a_loan_they_recommended(app: Flask) -> None:
    loan_id = submitted_loan()
    first, second = staff("branch_manager"), "second.manager@sacco.test"
    staff_add(email=second, role="branch_manager", password=PASSWORD)
    one, other = app.test_client(), app.test_client()
    login(one, first)
    login(other, second)

    assert "Done: recommend." in decide(one, loan_id, "recommend").get_data(as_text=True)
    page = decide(one, loan_id, "approve").get_data(as_text=True)
    assert "cannot also approve it" in page
    assert status(loan_id) == "recommended"
    assert "Done: approve." in decide(other, loan_id, "approve").get_data(as_text=True)
    assert status(loan_id) == "approved"


def test_a_decision_without_the_csrf_token_changes_nothing(app: Flask) -> None:
    loan_id = submitted_loan(amount=50000)
    client = app.test_client()
    db.session.commit()
    login(client, staff("branch_manager"))
    page = browse(
        client,
        f"/admin/loan/decide/{loan_id}",
        "POST",
        data={"action": "approve"},
        follow_redirects=True,
    )
    assert "The form expired" in page.get_data(as_text=True)
    assert status(loan_id) == "submitted"


def test_reject_needs_a_reason_and_tells_the_member(app: Flask) -> None:
    loan_id = submitted_loan(amount=50000)
    client = app.test_client()
    db.session.commit()
    login(client, staff("branch_manager"))
    assert "Not done" in decide(client, loan_id, "reject", reason=" ").get_data(as_text=True)
    assert status(loan_id) == "submitted"
    decide(client, loan_id, "reject", reason="Guarantor form missing")
    assert status(loan_id) == "rejected"


def test_a_product_edit_is_audited_with_before_and_after(app: Flask) -> None:
    product = make_product()
    client = app.test_client()
    db.session.commit()
    login(client, staff("admin"))
    path = f"/admin/loanproduct/edit/?id={product.id}"
    token = csrf_from(client, path)
    page = browse(client, path)
    form = dict(
        re.findall(r'<input[^>]*name="(\w+)"[^>]*value="([^"]*)"', page.get_data(as_text=True))
    )
    form.update(csrf_token=token, annual_rate="14", grace_days="5")
    response = browse(client, path, "POST", data=form)
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    db.session.expire_all()
    assert db.session.get(LoanProduct, product.id).annual_rate == Decimal("14")
    row = db.session.scalar(select(AuditLog).where(AuditLog.action == "product.update"))
    assert row is not None and row.object_id == "V1"
    assert row.before["grace_days"] == "3" or row.before["grace_days"] == 3
    assert str(row.after["annual_rate"]).startswith("14")


def test_a_failed_payout_shows_its_reason_and_staff_send_it_again(app: Flask) -> None:
    from app.models import MpesaRequest
    from app.services.locking import lock_row
    from app.services.payments.b2c import payout_failed

    loan_id = submitted_loan()
    officer, manager = staff("loan_officer"), staff("branch_manager")
    maker, client = app.test_client(), app.test_client()
    db.session.commit()
    login(maker, officer)
    login(client, manager)
    decide(maker, loan_id, "recommend")
    decide(client, loan_id, "approve")
    first = db.session.scalar(select(MpesaRequest).where(MpesaRequest.loan_id == loan_id))
    assert first is not None and first.kind == "b2c"
    # Safaricom says no (as a result callback would): sent, then failed for good.
    db.session.get(Loan, loan_id).status = "disbursing"
    first.status = "sent"
    db.session.commit()
    payout_failed(lock_row(MpesaRequest, first.id), code="2040", desc="unregistered")
    db.session.commit()
    page = browse(client, f"/admin/loan/details/?id={loan_id}").get_data(as_text=True)
    assert "the number is not registered for M-PESA" in page
    assert "Done: retry payout." in decide(client, loan_id, "retry_payout").get_data(as_text=True)
    requests = db.session.scalars(
        select(MpesaRequest.status).where(MpesaRequest.loan_id == loan_id).order_by(MpesaRequest.id)
    ).all()
    assert requests == ["failed", "pending"]
    assert status(loan_id) == "approved"


def test_staff_send_a_payment_prompt_from_the_loan_page(app: Flask) -> None:
    from app.models import MpesaRequest
    from tests.loan_factories import make_loan

    loan_id = make_loan(product=make_product("V1"), on=date(2026, 1, 1)).id
    client = app.test_client()
    login(client, staff("loan_officer"))
    page = decide(client, loan_id, "request_payment", amount="500").get_data(as_text=True)
    assert "An M-PESA prompt for KES 500 is on its way" in page
    again = decide(client, loan_id, "request_payment", amount="700").get_data(as_text=True)
    assert "already on its way" in again
    bad = decide(client, loan_id, "request_payment", amount="12.5").get_data(as_text=True)
    assert "Not done: M-PESA takes whole shillings only" in bad
    rows = db.session.scalars(select(MpesaRequest).where(MpesaRequest.kind == "stk")).all()
    assert [(r.amount, r.channel, r.status) for r in rows] == [(500, "console", "pending")]


def penalised_loan() -> Loan:
    """A V1 loan paid out 45 days ago with a fixed penalty of 200 charged on its first,
    overdue installment (no grace days)."""
    from datetime import timedelta

    from app.clock import business_today
    from app.services.loans import loan_update_arrears
    from tests.loan_factories import make_loan

    today = business_today()
    product = make_product("V1", penalty_type="fixed", penalty_value=Decimal("200"), grace_days=0)
    loan = make_loan(product=product, amount=10000, on=today - timedelta(days=45))
    loan_update_arrears(loan_id=loan.id, as_of=today)
    return loan


def first_penalty(loan_id: int) -> Decimal:
    from app.selectors.loans import current_installments

    db.session.expire_all()
    return current_installments(loan_id)[0].penalty_due


def test_a_manager_reverses_a_wrongly_charged_penalty_from_the_loan_page(app: Flask) -> None:
    loan = penalised_loan()
    assert first_penalty(loan.id) == Decimal("200.00")
    client = app.test_client()
    db.session.commit()
    login(client, staff("branch_manager"))
    html = browse(client, f"/admin/loan/details/?id={loan.id}").get_data(as_text=True)
    assert 'id="reverse-penalty"' in html and "#1 due" in html and "penalty 200.00" in html

    page = decide(
        client, loan.id, "reverse_penalty", installment="1", reason="Job ran for the wrong date"
    ).get_data(as_text=True)

    assert "The penalty of KES 200.00 on installment 1 is reversed." in page
    assert first_penalty(loan.id) == Decimal("0.00")
    row = db.session.scalar(select(AuditLog).where(AuditLog.action == "loan.penalty_reverse"))
    assert row.actor == "staff:branch.manager@sacco.test"
    assert row.note == "Job ran for the wrong date" and row.object_id == loan.loan_no
    again = decide(client, loan.id, "reverse_penalty", installment="1", reason="Twice")
    assert "Not done: installment 1 of" in again.get_data(as_text=True)


def test_a_penalty_reversal_needs_a_reason(app: Flask) -> None:
    loan = penalised_loan()
    client = app.test_client()
    db.session.commit()
    login(client, staff("branch_manager"))
    page = decide(client, loan.id, "reverse_penalty", installment="1", reason=" ")
    assert "Not done: a penalty reversal needs a reason" in page.get_data(as_text=True)
    assert first_penalty(loan.id) == Decimal("200.00")


def test_a_loan_officer_cannot_reverse_a_penalty(app: Flask) -> None:
    loan = penalised_loan()
    client = app.test_client()
    db.session.commit()
    login(client, staff("loan_officer"))
    html = browse(client, f"/admin/loan/details/?id={loan.id}").get_data(as_text=True)
    assert 'id="reverse-penalty"' not in html
    reply = decide(client, loan.id, "reverse_penalty", installment="1", reason="Please")
    assert reply.status_code == 403
    assert first_penalty(loan.id) == Decimal("200.00")
    denied = db.session.scalar(select(AuditLog).where(AuditLog.action == "access.denied"))
    assert denied is not None and denied.after["needs"] == "penalty.reverse"


def test_a_penalty_reversal_without_the_csrf_token_changes_nothing(app: Flask) -> None:
    loan = penalised_loan()
    client = app.test_client()
    db.session.commit()
    login(client, staff("branch_manager"))
    page = browse(
        client,
        f"/admin/loan/decide/{loan.id}",
        "POST",
        data={"action": "reverse_penalty", "installment": "1", "reason": "x"},
        follow_redirects=True,
    )
    assert "The form expired" in page.get_data(as_text=True)
    assert first_penalty(loan.id) == Decimal("200.00")


# -- the loans list: search, officer and amount owed ----------------------------------------


def loans_found(client: FlaskClient, typed: str) -> str:
    response = browse(client, "/admin/loan/", query_string={"search": typed})
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def test_loans_are_found_by_member_name_phone_number_and_loan_number(app: Flask) -> None:
    from datetime import timedelta

    from app.clock import business_today
    from tests.factories import make_member
    from tests.loan_factories import JOINED, make_loan

    product = make_product("V1")
    on = business_today() - timedelta(days=10)
    akinyi = make_member(name="Akinyi Atieno", phone="0733445566", savings=20000)
    otieno = make_member(name="Otieno Ochieng", phone="0710733999", savings=20000)
    for member in (akinyi, otieno):
        member.created_at = JOINED  # members long enough to borrow
    wanted = make_loan(product=product, on=on, member=akinyi).loan_no
    other = make_loan(product=product, on=on, member=otieno).loan_no
    n = int(wanted[1:])
    client = app.test_client()
    db.session.commit()  # SQLite: the test's transaction holds the write lock
    login(client, staff("auditor"))
    for typed in ("Akinyi", "akinyi atieno", "0733", "+25473", akinyi.member_no, f"l{n}", f"L{n}"):
        html = loans_found(client, typed)
        assert f">{wanted}</a>" in html, typed
        assert f">{other}</a>" not in html, typed


def test_the_loans_list_shows_the_officer_and_what_each_loan_owes(app: Flask) -> None:
    from datetime import timedelta

    from app.clock import business_today
    from app.models import StaffUser
    from app.selectors.loans import loan_debt
    from tests.loan_factories import make_loan

    officer = db.session.scalar(select(StaffUser).where(StaffUser.email == staff("loan_officer")))
    officer.name = "Grace Wambui"
    # Paid out 70 days ago and never repaid: two monthly installments have fallen due.
    loan = make_loan(product=make_product("V1"), on=business_today() - timedelta(days=70))
    loan.officer_id = officer.id
    db.session.commit()
    owed = loan_debt(loan_id=loan.id).total
    due = sum(
        (r.outstanding for r in loan.installments if r.due_date <= business_today()), Decimal(0)
    )
    client = app.test_client()
    db.session.commit()  # SQLite: the test's transaction holds the write lock
    login(client, staff("auditor"))
    html = loans_found(client, loan.loan_no)
    assert "Grace Wambui" in html
    assert f"{owed:,.2f}" in html and f"{due:,.2f} due now" in html
    assert f'href="/admin/loan/details/?id={loan.id}">{loan.loan_no}</a>' in html


def test_the_loans_list_figures_are_each_loans_own_live_schedule(app: Flask) -> None:
    from app.selectors.loans import loan_debt, loan_list_figures
    from tests.loan_factories import make_loan, make_staff, restructure, run_job

    officer = make_staff("loan_officer")
    name = officer.name
    v1 = make_product("V1")
    # Restructured on 5 April: its replaced rows (due 28 Feb and 31 Mar) are history and
    # its new ones fall due from 5 May. The other loan's first row falls due on 5 April.
    restructured = make_loan(product=v1, on=date(2026, 1, 31)).id
    fresh = make_loan(product=v1, on=date(2026, 3, 5)).id
    for loan_id in (restructured, fresh):
        db.session.get(Loan, loan_id).officer_id = officer.id
    db.session.commit()
    run_job("loan-arrears", date(2026, 4, 5))
    restructure(restructured, start=date(2026, 4, 5))
    new_schedule = loan_debt(loan_id=restructured).total

    figures = loan_list_figures(loan_ids=[restructured, fresh], as_of=date(2026, 4, 5))

    assert figures[restructured].owed == new_schedule
    assert figures[restructured].due_now == Decimal("0")
    # 10,000 and all its interest; due now: the row falling due today.
    assert (figures[fresh].owed, figures[fresh].due_now) == (Decimal("10661.86"), Decimal("888.49"))
    assert figures[fresh].officer == figures[restructured].officer == name


def test_the_loans_list_reads_a_page_in_the_same_number_of_queries_for_5_or_25_loans(
    app: Flask,
) -> None:
    """No query per row: what each loan owes and its officer come from one grouped query
    for the page, so 25 loans cost what 5 do."""
    from datetime import timedelta

    from sqlalchemy import event

    from app.clock import business_today
    from tests.loan_factories import make_loan

    product = make_product("V1")
    on = business_today() - timedelta(days=40)
    client = app.test_client()
    db.session.commit()  # SQLite: the test's transaction holds the write lock
    login(client, staff("auditor"))

    def statements_for_the_list() -> int:
        statements: list[str] = []

        def count(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
            statements.append(statement)

        db.session.commit()
        with app.app_context():
            engine = db.engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            html = loans_found(client, "")
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert html.count('href="/admin/loan/details/?id=') >= 5
        return len(statements)

    for _ in range(5):
        make_loan(product=product, on=on)
    five = statements_for_the_list()
    for _ in range(20):
        make_loan(product=product, on=on)
    twenty_five = statements_for_the_list()
    assert twenty_five == five, (five, twenty_five)


# -- the loan page ---------------------------------------------------------------------------


def late_loan_with_a_payment(officer_email: str) -> Loan:
    """V1 (10,000 at 12% over 12 months, 888.49 a month) paid out 70 days ago; the first
    installment paid by Paybill, the second fell due unpaid; the arrears job has run."""
    from datetime import timedelta

    from app.cli.runtime import make_worker
    from app.clock import business_today
    from app.models import StaffUser
    from tests.helpers import c2b_body
    from tests.loan_factories import make_loan, run_job

    today = business_today()
    officer = db.session.scalar(select(StaffUser).where(StaffUser.email == officer_email))
    officer.name = "Grace Wambui"
    loan = make_loan(product=make_product("V1"), on=today - timedelta(days=70))
    loan.officer_id = officer.id
    loan_id, loan_no = loan.id, loan.loan_no
    db.session.commit()
    reply = app_client_post_c2b(c2b_body("RKLOANPG01", amount="888.49", account=loan_no))
    assert reply.status_code == 200
    make_worker(("payments",)).work(burst=True)
    db.session.remove()
    run_job("loan-arrears", today)
    return db.session.get(Loan, loan_id)


def app_client_post_c2b(body: dict):  # noqa: ANN201
    from flask import current_app

    db.session.commit()
    token = current_app.config["SETTINGS"].CALLBACK_TOKEN
    return current_app.test_client().post(f"/payments/{token}/c2b/confirmation", json=body)


def test_the_loan_page_sums_up_the_loan_its_people_schedule_and_payments(app: Flask) -> None:
    officer = staff("loan_officer")
    loan = late_loan_with_a_payment(officer)
    from app.models import StaffUser
    from app.selectors.loans import loan_debt

    loan_id, loan_no, days_late = loan.id, loan.loan_no, loan.days_past_due
    approved_by = db.session.get(StaffUser, loan.approved_by_id)
    approver = approved_by.name or approved_by.email

    owed = loan_debt(loan_id=loan_id).total
    assert days_late > 0
    client = app.test_client()
    db.session.commit()  # SQLite: the test's transaction holds the write lock
    login(client, staff("auditor"))
    html = browse(client, f"/admin/loan/details/?id={loan_id}").get_data(as_text=True)

    summary = html[html.index('id="loan-summary"') : html.index("<h4>People</h4>")]
    assert loan_no in summary and 'id="loan-status">active</span>' in summary
    assert "Reference Loan (V1)" in summary and "KES 10,000.00" in summary
    assert '<dd id="loan-rate">12% a year</dd>' in summary and "12 months" in summary
    assert f">{days_late} <small>" in summary  # days late, with its bucket
    assert "Owed now</dt>" in summary and "KES 888.49" in summary  # the late installment
    assert f"KES {owed:,.2f}" in summary  # owed in all
    people = html[html.index('id="loan-people"') : html.index("<h4>Schedule</h4>")]
    assert "Grace Wambui" in people and approver in people
    schedule = html[html.index('id="schedule"') : html.index("<h4>Payments</h4>")]
    assert schedule.count('data-state="paid"') == 1
    assert schedule.count('data-state="late"') == 1
    assert schedule.count('data-state="upcoming"') == 10
    assert "RKLOANPG01" in html[html.index('id="loan-payments"') :]
    # Not Flask-Admin's raw field list any more.
    assert "In Default" not in html and "Annual Rate" not in html


def test_the_loan_page_reads_each_row_by_what_it_still_owes_and_when_it_fell_due(
    app: Flask,
) -> None:
    from app.selectors.loans import loan_page
    from app.services.loans import loan_repay
    from tests.loan_factories import make_loan, reload

    # V1: 888.49 a month from 28 Feb. The first row paid but for 50 cents the day before.
    loan_id = make_loan(product=make_product("V1"), on=date(2026, 1, 31)).id
    loan_repay(loan_id=loan_id, amount="887.99", reference="PART0001", value_date=date(2026, 2, 27))

    before = loan_page(loan=reload(loan_id), as_of=date(2026, 2, 27))
    after = loan_page(loan=reload(loan_id), as_of=date(2026, 3, 31))
    # A shilling on 30 March: the 50 cents of the first row, then 50 cents of the second.
    loan_repay(loan_id=loan_id, amount="1.00", reference="PART0002", value_date=date(2026, 3, 30))
    cleared = loan_page(loan=reload(loan_id), as_of=date(2026, 3, 30))

    assert [(s.state, s.days_late) for s in before.schedule[:2]] == [
        ("part paid", 0),
        ("upcoming", 0),
    ]
    assert (before.due_now, before.late_installments, before.days_late) == (Decimal("0"), 0, 0)
    # Fifty cents owed is still owed: late, not paid.
    assert [(s.state, s.days_late) for s in after.schedule[:3]] == [
        ("late", 31),
        ("due today", 0),
        ("upcoming", 0),
    ]
    assert (after.due_now, after.late_installments, after.days_late) == (
        Decimal("888.99"),
        1,
        31,
    )
    assert [s.installment.number for s in after.schedule] == list(range(1, 13))
    assert [(s.state, s.days_late) for s in cleared.schedule[:3]] == [
        ("paid", 0),
        ("part paid", 0),
        ("upcoming", 0),
    ]
    assert (cleared.due_now, cleared.late_installments, cleared.days_late) == (Decimal("0"), 0, 0)


def test_the_loan_page_lists_the_latest_twenty_payments_and_says_when_there_are_more(
    app: Flask,
) -> None:
    from app.models import Payment
    from app.selectors.loans import loan_page
    from tests.loan_factories import make_loan, reload

    loan_id = make_loan(product=make_product("V1"), on=date(2026, 1, 31)).id

    def paid(n: int) -> None:
        db.session.add(
            Payment(
                receipt=f"RKPAGE{n:04d}",
                channel="c2b",
                direction="in",
                amount=Decimal("100"),
                loan_id=loan_id,
            )
        )
        db.session.commit()

    for n in range(1, 21):
        paid(n)
    twenty = loan_page(loan=reload(loan_id), as_of=date(2026, 2, 1))
    paid(21)
    twenty_one = loan_page(loan=reload(loan_id), as_of=date(2026, 2, 1))

    assert [p.receipt for p in twenty.payments] == [f"RKPAGE{n:04d}" for n in range(20, 0, -1)]
    assert twenty.more_payments is False
    assert [p.receipt for p in twenty_one.payments] == [f"RKPAGE{n:04d}" for n in range(21, 1, -1)]
    assert twenty_one.more_payments is True


def test_the_loan_page_names_who_recommended_and_who_approved_and_when(app: Flask) -> None:
    from app.selectors.loans import loan_page
    from app.services.loans import loan_approve, loan_recommend
    from tests.loan_factories import make_staff, reload

    loan_id = submitted_loan()  # above DEV's maker-checker threshold: recommended, approved
    maker, checker = make_staff("branch_manager"), make_staff("branch_manager")
    maker_id, checker_id = maker.id, checker.id
    submitted = loan_page(loan=reload(loan_id), as_of=date(2026, 3, 2))
    loan_recommend(loan_id=loan_id, staff=maker)
    loan_approve(loan_id=loan_id, staff=checker)
    recommended_at = db.session.scalar(
        select(AuditLog.at).where(AuditLog.action == "loan.recommend")
    )
    # Another member's loan, recommended later, has a time of its own.
    later = loan_apply(
        member_id=make_borrower(savings=100000).id,
        product_id=reload(loan_id).product_id,
        amount=150000,
        as_of=date(2026, 3, 2),
    ).id
    loan_recommend(loan_id=later, staff=make_staff("branch_manager"))

    page = loan_page(loan=reload(loan_id), as_of=date(2026, 3, 2))

    assert (submitted.recommended_by, submitted.recommended_at, submitted.approved_by) == (
        None,
        None,
        None,
    )
    # Not paid out: no schedule yet, nothing due, nothing late.
    assert (submitted.schedule, submitted.due_now, submitted.days_late) == ([], Decimal("0"), 0)
    assert (page.recommended_by.id, page.approved_by.id) == (maker_id, checker_id)
    assert recommended_at is not None and page.recommended_at == recommended_at
    assert page.decided_at == reload(loan_id).decided_at is not None
    assert page.officer.id == reload(loan_id).officer_id and page.debt is None  # not paid out


def test_a_restructured_loans_page_keeps_the_replaced_schedule_apart(app: Flask) -> None:
    from app.selectors.loans import loan_page
    from tests.loan_factories import make_loan, reload, restructure, run_job

    loan_id = make_loan(product=make_product("V1"), on=date(2026, 1, 31)).id
    run_job("loan-arrears", date(2026, 4, 5))
    restructure(loan_id, start=date(2026, 4, 5), term=6)

    page = loan_page(loan=reload(loan_id), as_of=date(2026, 4, 6))

    assert [(r.version, r.number) for r in page.superseded] == [(1, n) for n in range(1, 13)]
    assert [(s.installment.version, s.state) for s in page.schedule] == [(2, "upcoming")] * 6
    assert (page.due_now, page.days_late) == (Decimal("0"), 0)


def test_the_loan_page_shows_each_group_of_actions_only_to_roles_that_may_use_them(
    app: Flask,
) -> None:
    emails = {role: staff(role) for role in ("branch_manager", "loan_officer", "auditor")}
    loan_id = late_loan_with_a_payment(emails["loan_officer"]).id
    pages = {}
    for role, email in emails.items():
        client = app.test_client()
        db.session.commit()  # SQLite: the test's transaction holds the write lock
        login(client, email)
        pages[role] = browse(client, f"/admin/loan/details/?id={loan_id}").get_data(as_text=True)

    manager, officer, auditor = pages["branch_manager"], pages["loan_officer"], pages["auditor"]
    # A late loan: the manager collects and may restructure it.
    assert 'id="actions-collect"' in manager and 'value="request_payment"' in manager
    assert 'id="actions-restructure"' in manager and 'value="restructure"' in manager
    # The officer collects, but restructuring is the manager's.
    assert 'value="request_payment"' in officer
    assert 'id="actions-restructure"' not in officer and 'value="restructure"' not in officer
    # The auditor reads: no form posts an action, the recovery page is a link to read.
    assert 'name="action"' not in auditor
    assert 'id="actions-restructure"' not in auditor and 'id="actions-decide"' not in auditor
    assert 'id="recovery-link"' in auditor
    # Nothing is decided or paid out on a running loan, whoever looks.
    for html in pages.values():
        assert 'id="actions-decide"' not in html and 'id="actions-disburse"' not in html


def test_an_application_shows_the_decide_group_to_a_manager_and_nothing_to_an_auditor(
    app: Flask,
) -> None:
    loan_id = submitted_loan(amount=5000)
    pages = {}
    for role in ("branch_manager", "auditor"):
        client = app.test_client()
        login(client, staff(role))
        pages[role] = browse(client, f"/admin/loan/details/?id={loan_id}").get_data(as_text=True)
    decide_group = pages["branch_manager"][pages["branch_manager"].index('id="actions-decide"') :]
    assert 'value="approve"' in decide_group and 'value="reject"' in decide_group
    assert "Owed</dt>" in pages["auditor"] and "nothing until it is paid out" in pages["auditor"]
    assert 'id="actions-decide"' not in pages["auditor"] and 'id="no-actions"' in pages["auditor"]
