"""A member leaving, through the console as a browser sends it: notice taken from the member's
page, the exit page's figures (deposits, savings, shares, each loan offset, the refund, what
still stops a settlement), the branch manager's settlement once the notice has run, the exit
statement, the payout by bank, cancelling during the notice; the service's refusals in its
words changing nothing; roles without the permission get 403."""

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
from app.models import Account, AuditLog, JournalEntry, Loan, Member, MemberExit
from app.selectors.members import member_balances
from app.services.ledger import credit, debit, gl_account, journal_post
from app.services.loans import loan_apply
from app.services.members import member_buy_shares
from app.services.savings import account_product, member_product_account
from app.services.savings.exits import exit_figures, exit_request
from tests.helpers import browse as _browse
from tests.helpers import login, post_form, staff
from tests.loan_factories import make_borrower, make_loan, make_product, make_staff

D = Decimal
PAGE = "/admin/exits"
MONEY = ("savings", "member_savings", "share_capital")


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


def gl(code: str) -> D:
    value = db.session.scalar(select(Account.balance).where(Account.code == code)) or D(0)
    db.session.commit()
    return value


def reload_exit(exit_id: int) -> MemberExit:
    db.session.expire_all()
    found = db.session.get(MemberExit, exit_id)
    assert found is not None
    return found


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


def gave_notice_long_ago(member_id: int) -> int:
    """An exit whose notice has run (taken 61 days ago by the officer): its id."""
    leaving = exit_request(
        member_id=member_id,
        reason="moving to Mombasa",
        actor=make_staff("loan_officer"),
        today=business_today() - timedelta(days=61),
    )
    return leaving.id


def test_notice_from_the_member_page_then_cancelled_during_the_notice(app: Flask) -> None:
    member = make_borrower(savings=3000)
    member_id = member.id
    officer = signed_in(app, "loan_officer")
    manager = signed_in(app, "branch_manager")
    page = text(officer, f"/admin/member/details/?id={member_id}")
    assert 'id="exit-notice"' in page and "Take notice to leave" in page

    post(officer, f"{PAGE}/member/{member_id}/notice", {"reason": "   "})
    assert "Not done: say why the member is leaving" in text(
        officer, f"/admin/member/details/?id={member_id}"
    )
    assert count(MemberExit) == 0

    response = post(officer, f"{PAGE}/member/{member_id}/notice", {"reason": "moving abroad"})
    leaving = db.session.scalars(select(MemberExit)).one()
    exit_id, ends = leaving.id, leaving.notice_ends_on
    assert response.headers["Location"].endswith(f"{PAGE}/{exit_id}")
    assert (leaving.status, leaving.requested_on) == ("notice", business_today())
    page = text(manager, f"{PAGE}/{exit_id}")
    assert "Notice taken: the settlement may be made from" in text(officer, f"{PAGE}/{exit_id}")
    assert "Where the member's money stands today" in page and "3,000.00" in page
    assert f"The notice runs until {ends}." in page  # the settle button waits
    # The member page now shows the notice instead of the form.
    page = text(officer, f"/admin/member/details/?id={member_id}")
    assert f"the settlement may be made from {ends}" in page and 'id="exit-notice"' not in page

    post(officer, f"{PAGE}/member/{member_id}/notice", {"reason": "again"})
    assert "has given notice already" in text(officer, f"/admin/member/details/?id={member_id}")
    entries = count(JournalEntry)
    post(manager, f"{PAGE}/{exit_id}/settle")
    assert f"Not done: the notice runs until {ends:%d %b %Y}." in text(manager, f"{PAGE}/{exit_id}")
    assert reload_exit(exit_id).status == "notice" and count(JournalEntry) == entries

    post(officer, f"{PAGE}/{exit_id}/cancel")
    assert "The notice is cancelled: the member stays" in text(officer, f"{PAGE}/{exit_id}")
    assert reload_exit(exit_id).status == "cancelled"
    assert db.session.get(Member, member_id).status == "active"
    assert member_balances(member_id=member_id).savings == D("3000.00")
    post(officer, f"{PAGE}/{exit_id}/cancel")
    assert "it can no longer be cancelled" in text(officer, f"{PAGE}/{exit_id}")
    actions = set(db.session.scalars(select(AuditLog.action)))
    assert {"member_exit.request", "member_exit.cancel"} <= actions


def test_settle_offsets_the_loan_shows_the_statement_and_the_payout_is_recorded(
    app: Flask,
) -> None:
    loan = make_loan(product=make_product("V1"), amount=6000, on=date(2026, 1, 10))
    member = db.session.get(Member, loan.member_id)
    member_buy_shares(
        member_id=member.id, amount="1000", reference="SH1", value_date=date(2026, 1, 11)
    )
    save(member, "2500")
    member_id, loan_id, loan_no = member.id, loan.id, loan.loan_no
    exit_id = gave_notice_long_ago(member_id)
    figures = exit_figures(member_id)
    db.session.commit()
    assert figures.blockers == [] and figures.refund > 0
    refund = figures.refund
    manager = signed_in(app, "branch_manager")

    page = text(manager, f"{PAGE}/{exit_id}")
    assert f'id="offset-{loan_id}"' in page and loan_no in page
    assert f"-{figures.owed:,.2f}" in page and "2,500.00" in page and "1,000.00" in page
    assert f'id="exit-refund">{refund:,.2f}<' in page
    assert "disabled" not in page.split('id="exit-settle"')[1].split("</form>")[0]

    post(manager, f"{PAGE}/{exit_id}/settle")
    page = text(manager, f"{PAGE}/{exit_id}")
    assert f"Settled: loans offset, accounts closed; KES {refund:,.2f} is owed" in page
    assert 'id="exit-statement"' in page and f'id="statement-refund">{refund:,.2f}<' in page
    assert f"less loan {loan_no}" in page and 'id="exit-pay"' in page
    leaving = reload_exit(exit_id)
    assert (leaving.status, leaving.refund) == ("settled", refund)
    assert leaving.settlement["refund"] == str(refund)
    assert db.session.get(Loan, loan_id).status == "closed"
    assert db.session.get(Member, member_id).status == "exited"
    accounts = db.session.scalars(
        select(Account).where(Account.member_id == member_id, Account.kind.in_(MONEY))
    ).all()
    assert {(a.status, a.balance) for a in accounts} == {("closed", D("0.00"))}
    assert -gl("GL-REFUNDS-PAYABLE") == refund

    # A tampered method, a missing reference: refused in the service's words.
    bank = gl("GL-BANK")
    post(manager, f"{PAGE}/{exit_id}/pay", {"method": "mpesa", "reference": "X"})
    assert "Not done: paid by bank or cash." in text(manager, f"{PAGE}/{exit_id}")
    post(manager, f"{PAGE}/{exit_id}/pay", {"method": "bank", "reference": " "})
    assert "the bank reference or cash voucher number is needed" in text(
        manager, f"{PAGE}/{exit_id}"
    )
    assert reload_exit(exit_id).status == "settled" and gl("GL-BANK") == bank
    post(manager, f"{PAGE}/{exit_id}/cancel")
    assert "the exit is settled: it can no longer be cancelled" in text(
        manager, f"{PAGE}/{exit_id}"
    )

    post(manager, f"{PAGE}/{exit_id}/pay", {"method": "bank", "reference": "CHQ 0042"})
    page = text(manager, f"{PAGE}/{exit_id}")
    assert "The refund is recorded as paid by bank (CHQ 0042)." in page
    assert 'id="exit-pay"' not in page
    leaving = reload_exit(exit_id)
    assert (leaving.status, leaving.payment_ref) == ("paid", "CHQ 0042")
    assert gl("GL-REFUNDS-PAYABLE") == D("0.00") and gl("GL-BANK") == bank - refund
    post(manager, f"{PAGE}/{exit_id}/pay", {"method": "bank", "reference": "again"})
    assert "only a settled one is paid" in text(manager, f"{PAGE}/{exit_id}")
    assert gl("GL-BANK") == bank - refund
    listing = text(manager, f"{PAGE}/")
    assert f'id="exit-{exit_id}"' in listing and "CHQ 0042" in listing


def test_a_settlement_that_waits_says_why_and_changes_nothing(app: Flask) -> None:
    member = make_borrower(savings=10000)
    member_id = member.id
    application = loan_apply(
        member_id=member_id,
        product_id=make_product("V1").id,
        amount=5000,
        as_of=business_today() - timedelta(days=70),
    )
    loan_ref = application.loan_no or str(application.id)
    exit_id = gave_notice_long_ago(member_id)
    manager = signed_in(app, "branch_manager")
    page = text(manager, f"{PAGE}/{exit_id}")
    blocker = f"loan application {loan_ref} is {application.status}: withdraw or finish it first"
    assert 'id="exit-blockers"' in page and blocker in page

    entries = count(JournalEntry)
    post(manager, f"{PAGE}/{exit_id}/settle")
    assert f"Not done: not yet: {blocker}." in text(manager, f"{PAGE}/{exit_id}")
    assert reload_exit(exit_id).status == "notice"
    assert db.session.get(Member, member_id).status == "active"
    assert member_balances(member_id=member_id).savings == D("10000.00")
    assert count(JournalEntry) == entries


@pytest.mark.parametrize("role", ["auditor", "loan_officer"])
def test_roles_without_the_permission_get_403_and_change_nothing(app: Flask, role: str) -> None:
    leaving_member = make_borrower(savings=3000)
    other = make_borrower(savings=1000)
    leaving_id, other_id = leaving_member.id, other.id
    exit_id = gave_notice_long_ago(leaving_id)
    client = signed_in(app, role)
    assert browse(client, f"{PAGE}/").status_code == 200  # every role reads the exits
    assert browse(client, f"{PAGE}/{exit_id}").status_code == 200
    forms = {
        f"{PAGE}/{exit_id}/settle": ("member_exit.settle", {}),
        f"{PAGE}/{exit_id}/pay": ("member_exit.settle", {"method": "bank", "reference": "X"}),
    }
    if role == "auditor":
        assert 'id="exit-notice"' not in text(client, f"/admin/member/details/?id={other_id}")
        forms[f"{PAGE}/member/{other_id}/notice"] = ("member_exit.request", {"reason": "x"})
        forms[f"{PAGE}/{exit_id}/cancel"] = ("member_exit.request", {})
    entries = count(JournalEntry)
    for path, (needs, data) in forms.items():
        assert post(client, path, data).status_code == 403, path
        denied = db.session.scalars(
            select(AuditLog).where(AuditLog.action == "access.denied").order_by(AuditLog.id.desc())
        ).first()
        assert denied.after["needs"] == needs and denied.object_id == path
    assert count(MemberExit) == 1 and reload_exit(exit_id).status == "notice"
    assert count(JournalEntry) == entries
    assert member_balances(member_id=leaving_id).savings == D("3000.00")


def test_a_post_without_the_csrf_token_changes_nothing(app: Flask) -> None:
    member = make_borrower(savings=3000)
    client = signed_in(app, "loan_officer")
    response = browse(client, f"{PAGE}/member/{member.id}/notice", "POST", data={"reason": "x"})
    assert response.status_code == 302
    assert "The form expired" in text(client, f"/admin/member/details/?id={member.id}")
    assert count(MemberExit) == 0
