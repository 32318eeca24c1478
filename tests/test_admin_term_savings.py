"""Fixed deposits and target savings through the console's member page, as a browser sends
them: an officer opens a fixed deposit from savings and breaks it early (interest at the
rate less the penalty, net of tax, back to savings with the principal), sets a target and
releases it once reached; the service's refusals come back in its words and change
nothing; roles without term_savings.manage get 403; a form without its CSRF token changes
nothing."""

from __future__ import annotations

import html
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.clock import business_today
from app.extensions import db
from app.models import Account, AuditLog, FixedDeposit, JournalEntry, Member, SavingsTarget
from app.services.ledger import credit, debit, gl_account, journal_post
from app.services.savings import account_product, member_product_account
from app.services.savings.fixed import fixed_deposit_open, target_set
from tests.factories import make_member
from tests.helpers import browse as _browse
from tests.helpers import login, post_form, staff
from workers.schedule import run_job

D = Decimal
PAGE = "/admin/term-savings"


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


def member_page(client: FlaskClient, member_id: int) -> str:
    response = browse(client, f"/admin/member/details/?id={member_id}")
    assert response.status_code == 200
    return html.unescape(response.get_data(as_text=True))


def count(model: type) -> int:
    value = db.session.scalar(select(func.count()).select_from(model)) or 0
    db.session.commit()
    return value


def balance(member_id: int, code: str = "ORD") -> D:
    db.session.expire_all()
    member = db.session.get(Member, member_id)
    value = member_product_account(member, account_product(code)).display_balance
    db.session.commit()
    return value


def pay_in(member_id: int, amount: str, code: str = "ORD") -> None:
    """Money into one of the member's accounts, as a Paybill payment to its number."""
    member = db.session.get(Member, member_id)
    account = member_product_account(member, account_product(code))
    journal_post(
        kind="deposit",
        lines=[debit(gl_account("GL-MPESA-CLEARING"), D(amount)), credit(account, D(amount))],
        value_date=business_today() - timedelta(days=500),
        idempotency_key=f"deposit:{code}-{member_id}-{amount}",
        member_id=member_id,
    )
    db.session.commit()


def saver(amount: str) -> int:
    member_id = make_member().id
    pay_in(member_id, amount)
    return member_id


def deposit(deposit_id: int) -> FixedDeposit:
    db.session.expire_all()
    found = db.session.get(FixedDeposit, deposit_id)
    assert found is not None
    return found


def by_hand(principal: str, rate: str, days: int) -> D:
    """Simple interest for `days` less 15% withholding tax, written out plainly."""
    cent = D("0.01")
    gross = (D(principal) * D(rate) / 100 * days / 365).quantize(cent, ROUND_HALF_UP)
    return gross - (gross * D("0.15")).quantize(cent, ROUND_HALF_UP)


def test_an_officer_opens_a_fixed_deposit_from_savings_from_the_member_page(app: Flask) -> None:
    member_id = saver("60000")
    officer = signed_in(app, "loan_officer")
    page = member_page(officer, member_id)
    assert 'id="fixed-deposit-new"' in page and 'id="target-new"' in page

    response = post(
        officer, f"{PAGE}/member/{member_id}/fixed", {"amount": "50000", "on_maturity": "rollover"}
    )
    assert response.headers["Location"].endswith(
        f"/admin/member/details/?id={member_id}#term-savings"
    )
    opened = db.session.scalars(select(FixedDeposit)).one()
    maturity = opened.maturity_on
    page = member_page(officer, member_id)
    assert (
        f"Fixed deposit of KES 50,000.00 opened from savings at 8% a year; it matures on "
        f"{maturity:%d %b %Y} and then rolls over." in page
    )
    row = page.split(f'id="fixed-deposit-{opened.id}"')[1].split("</tr>")[0]
    assert "50,000.00" in row and f"{business_today()}" in row and f"{maturity}" in row
    assert "rolled over" in row and "active" in row and f'id="break-fixed-{opened.id}"' in row
    assert "8% a year for 12 months" in page  # the terms the next deposit gets
    assert (opened.principal, opened.on_maturity, opened.opened_by) == (
        D("50000.00"),
        "rollover",
        "staff:loan.officer@sacco.test",
    )
    assert balance(member_id) == D("10000.00")
    assert balance(member_id, "FIX") == D("0.00")  # FIX-M...: the deposit has its own
    assert db.session.get(Account, opened.account_id).display_balance == D("50000.00")


def test_breaking_a_deposit_early_pays_the_reduced_interest_and_returns_everything(
    app: Flask,
) -> None:
    member_id = saver("60000")
    opened = fixed_deposit_open(
        member_id=member_id,
        amount="50000",
        actor="staff:x",
        today=business_today() - timedelta(days=100),
    )
    deposit_id = opened.id
    officer = signed_in(app, "loan_officer")
    assert balance(member_id) == D("10000.00")

    post(officer, f"{PAGE}/fixed/{deposit_id}/break")
    net = by_hand("50000", "4", 100)  # 8% less the 50% penalty, for the 100 days held
    assert net == D("465.76")
    page = member_page(officer, member_id)
    assert (
        f"The fixed deposit is broken: KES 50,000.00 and KES {net:,.2f} interest (less the "
        "penalty, net of tax) are back in savings." in page
    )
    found = deposit(deposit_id)
    assert (found.status, found.closed_on, found.interest_paid) == (
        "broken",
        business_today(),
        net,
    )
    row = page.split(f'id="fixed-deposit-{deposit_id}"')[1].split("</tr>")[0]
    assert "broken on" in row and f"{net:,.2f}" in row and "break-fixed" not in row
    assert balance(member_id) == D("60000.00") + net

    entries = count(JournalEntry)
    post(officer, f"{PAGE}/fixed/{deposit_id}/break")
    assert "Not done: the fixed deposit is broken already." in member_page(officer, member_id)
    assert count(JournalEntry) == entries and balance(member_id) == D("60000.00") + net


def test_a_rolled_over_deposit_broken_says_only_the_breaks_interest(app: Flask) -> None:
    member_id = saver("60000")
    opened_on = business_today() - timedelta(days=400)
    deposit_id = fixed_deposit_open(
        member_id=member_id,
        amount="50000",
        actor="staff:x",
        today=opened_on,
        on_maturity="rollover",
    ).id
    first_term_end = deposit(deposit_id).maturity_on
    run_job("fixed-deposit-maturity", first_term_end)
    rolled = deposit(deposit_id)
    first_net = by_hand("50000", "8", (first_term_end - opened_on).days)
    assert (rolled.terms_run, rolled.interest_paid) == (2, first_net)
    assert rolled.principal == D("50000") + first_net
    principal, days = rolled.principal, (business_today() - first_term_end).days
    officer = signed_in(app, "loan_officer")

    post(officer, f"{PAGE}/fixed/{deposit_id}/break")
    net = by_hand(str(principal), "4", days)
    assert (
        f"The fixed deposit is broken: KES {principal:,.2f} and KES {net:,.2f} interest"
        in member_page(officer, member_id)
    )
    assert balance(member_id) == D("10000.00") + principal + net
    assert deposit(deposit_id).interest_paid == first_net + net


def test_fixed_deposit_refusals_are_told_in_words_and_change_nothing(app: Flask) -> None:
    member_id = saver("10000")
    officer = signed_in(app, "loan_officer")
    entries = count(JournalEntry)
    path = f"{PAGE}/member/{member_id}/fixed"
    cases = [
        ({"amount": "9950", "on_maturity": "savings"}, "only KES 9,900.00 of the savings is free"),
        ({"amount": "0", "on_maturity": "savings"}, "amount must be more than zero"),
        ({"amount": "ten", "on_maturity": "savings"}, "amount is not a number"),
        (
            {"amount": "500", "on_maturity": "mpesa"},
            "at maturity the deposit goes to savings or rolls over",
        ),
    ]
    for data, words in cases:
        post(officer, path, data)
        assert f"Not done: {words}" in member_page(officer, member_id), data
    assert count(FixedDeposit) == 0 and count(JournalEntry) == entries
    assert balance(member_id) == D("10000.00")


def test_a_target_is_set_refused_while_locked_and_released_once_reached(app: Flask) -> None:
    member_id = saver("1000")
    officer = signed_in(app, "loan_officer")
    path = f"{PAGE}/member/{member_id}/target"
    tomorrow = business_today() + timedelta(days=1)
    for data, words in [
        ({"name": " ", "goal_amount": "5000"}, "name the target (school fees, a holiday, ...)"),
        ({"name": "Fees", "goal_amount": "", "unlock_on": ""}, "a target needs a date, an amount"),
        ({"name": "Fees", "unlock_on": str(business_today())}, "the unlock date must be after"),
        ({"name": "Fees", "unlock_on": "next June"}, "the unlock date must be a date (YYYY-MM-DD)"),
    ]:
        post(officer, path, data)
        assert f"Not done: {words}" in member_page(officer, member_id), data
    assert count(SavingsTarget) == 0

    post(officer, path, {"name": "School fees", "goal_amount": "5000", "unlock_on": str(tomorrow)})
    page = member_page(officer, member_id)
    assert (
        f"Target 'School fees' is set: its savings are locked until {tomorrow:%d %b %Y} or it "
        "holds KES 5,000.00." in page
    )
    target = db.session.scalars(select(SavingsTarget)).one()
    target_id = target.id
    row = page.split(f'id="target-{target_id}"')[1].split("</tr>")[0]
    assert "School fees" in row and "5,000.00" in row and str(tomorrow) in row and "locked" in row
    assert 'id="target-new"' not in page  # one target at a time

    post(officer, path, {"name": "Holiday", "goal_amount": "100"})
    assert "Not done: the target 'School fees' is running: release it first." in member_page(
        officer, member_id
    )
    pay_in(member_id, "3000", "TGT")
    entries = count(JournalEntry)
    post(officer, f"{PAGE}/target/{target_id}/release")
    assert (
        f"Not done: School fees is locked until {tomorrow:%d %b %Y} or until it holds "
        "KES 5,000.00." in member_page(officer, member_id)
    )
    assert count(JournalEntry) == entries and balance(member_id, "TGT") == D("3000.00")

    pay_in(member_id, "2000", "TGT")
    assert "reached: may be released" in member_page(officer, member_id)
    post(officer, f"{PAGE}/target/{target_id}/release")
    page = member_page(officer, member_id)
    assert "The target is released: KES 5,000.00 moved to savings." in page
    assert f"The last, School fees, was released on {business_today()}." in page
    assert balance(member_id, "TGT") == D("0.00") and balance(member_id) == D("6000.00")
    db.session.expire_all()
    assert db.session.get(SavingsTarget, target_id).status == "released"
    post(officer, f"{PAGE}/target/{target_id}/release")
    assert "Not done: the target is released already." in member_page(officer, member_id)
    assert balance(member_id) == D("6000.00")
    actions = set(db.session.scalars(select(AuditLog.action)))
    assert {"savings_target.set", "savings_target.release"} <= actions


def test_a_new_target_may_be_set_after_the_last_was_released(app: Flask) -> None:
    member_id = saver("1000")
    target_set(
        member_id=member_id,
        name="Fees",
        actor="staff:x",
        unlock_on=business_today(),
        today=business_today() - timedelta(days=30),
    )
    officer = signed_in(app, "loan_officer")
    target_id = db.session.scalars(select(SavingsTarget.id)).one()
    post(officer, f"{PAGE}/target/{target_id}/release")
    response = post(
        officer, f"{PAGE}/member/{member_id}/target", {"name": "Holiday", "goal_amount": "900"}
    )
    assert response.status_code == 302
    assert "Target 'Holiday' is set" in member_page(officer, member_id)


@pytest.mark.parametrize("role", ["auditor", "compliance"])
def test_roles_without_the_permission_get_403_and_change_nothing(app: Flask, role: str) -> None:
    member_id = saver("60000")
    opened = fixed_deposit_open(
        member_id=member_id, amount="20000", actor="staff:x", today=business_today()
    )
    running = target_set(
        member_id=member_id,
        name="Fees",
        actor="staff:x",
        unlock_on=business_today(),
        today=business_today() - timedelta(days=30),
    )
    deposit_id, target_id = opened.id, running.id
    pay_in(member_id, "700", "TGT")
    client = signed_in(app, role)
    page = member_page(client, member_id)
    assert f'id="fixed-deposit-{deposit_id}"' in page and 'id="savings-target"' in page
    for form in ("fixed-deposit-new", f"break-fixed-{deposit_id}", f"release-target-{target_id}"):
        assert f'id="{form}"' not in page, form
    entries = count(JournalEntry)
    forms = {
        f"{PAGE}/member/{member_id}/fixed": {"amount": "100", "on_maturity": "savings"},
        f"{PAGE}/fixed/{deposit_id}/break": {},
        f"{PAGE}/member/{member_id}/target": {"name": "x", "goal_amount": "100"},
        f"{PAGE}/target/{target_id}/release": {},
    }
    for path, data in forms.items():
        assert post(client, path, data).status_code == 403, path
        denied = db.session.scalars(
            select(AuditLog).where(AuditLog.action == "access.denied").order_by(AuditLog.id.desc())
        ).first()
        assert denied.after["needs"] == "term_savings.manage" and denied.object_id == path
    assert count(JournalEntry) == entries and count(FixedDeposit) == 1
    assert deposit(deposit_id).status == "active"
    db.session.expire_all()
    assert db.session.get(SavingsTarget, target_id).status == "active"
    assert balance(member_id) == D("40000.00") and balance(member_id, "TGT") == D("700.00")


def test_a_post_without_the_csrf_token_changes_nothing(app: Flask) -> None:
    member_id = saver("10000")
    client = signed_in(app, "loan_officer")
    response = browse(
        client,
        f"{PAGE}/member/{member_id}/fixed",
        "POST",
        data={"amount": "500", "on_maturity": "savings"},
    )
    assert response.status_code == 302
    assert "The form expired" in member_page(client, member_id)
    assert count(FixedDeposit) == 0 and balance(member_id) == D("10000.00")
