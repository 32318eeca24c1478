"""Withdrawals paid at the branch through the console, as a browser sends them: an officer
records one from the member's page (paid at once up to the limit, held above it), a second
branch manager approves or rejects it from the queue; the service's refusals come back in
its words and change nothing; roles without the permission get 403; a form without its
CSRF token changes nothing."""

from __future__ import annotations

import html
from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import Account, AuditLog, BranchWithdrawal, JournalEntry, Member
from app.services.ledger import credit, debit, gl_account, journal_post
from app.services.savings import account_product, member_product_account
from app.services.staff import staff_add
from tests.factories import make_member
from tests.helpers import PASSWORD, login, post_form, staff
from tests.helpers import browse as _browse

D = Decimal
PAGE = "/admin/branch-withdrawals/"


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


def text(client: FlaskClient, path: str) -> str:
    response = browse(client, path)
    assert response.status_code == 200, (path, response.status_code)
    return html.unescape(response.get_data(as_text=True))


def member_page(client: FlaskClient, member_id: int) -> str:
    return text(client, f"/admin/member/details/?id={member_id}")


def count(model: type) -> int:
    value = db.session.scalar(select(func.count()).select_from(model)) or 0
    db.session.commit()
    return value


def balance(account_id: int) -> D:
    db.session.expire_all()
    account = db.session.get(Account, account_id)
    assert account is not None
    value = account.display_balance
    db.session.commit()
    return value


def gl(code: str) -> D:
    db.session.expire_all()
    value = db.session.scalar(select(Account.balance).where(Account.code == code)) or D(0)
    db.session.commit()
    return value


def saver(amount: str) -> tuple[int, int, int]:
    """A member with `amount` in withdrawable savings (paid in by Paybill to M...S) and
    KES 1,000 in deposits: member id, savings account id, deposits account id."""
    member = make_member(savings=1000)
    account = member_product_account(member, account_product("ORD"))
    journal_post(
        kind="deposit",
        lines=[debit(gl_account("GL-MPESA-CLEARING"), D(amount)), credit(account, D(amount))],
        value_date=date(2026, 1, 5),
        idempotency_key=f"deposit:ORD-{member.id}",
        member_id=member.id,
    )
    deposits = member_product_account(member, account_product("DEP"))
    db.session.commit()
    return member.id, account.id, deposits.id


def withdrawal(withdrawal_id: int) -> BranchWithdrawal:
    db.session.expire_all()
    found = db.session.get(BranchWithdrawal, withdrawal_id)
    assert found is not None
    return found


def last_withdrawal() -> BranchWithdrawal:
    db.session.expire_all()
    found = db.session.scalars(
        select(BranchWithdrawal).order_by(BranchWithdrawal.id.desc())
    ).first()
    assert found is not None
    return found


def test_a_withdrawal_up_to_the_limit_is_paid_from_the_member_page(app: Flask) -> None:
    member_id, savings_id, deposits_id = saver("20000")
    officer = signed_in(app, staff("loan_officer"))
    page = member_page(officer, member_id)
    form = page.split('id="branch-withdrawal-new"')[1].split("</form>")[0]
    assert f'value="{savings_id}"' in form and "20,000.00" in form
    assert f'value="{deposits_id}"' not in form  # deposits are never withdrawn
    assert "Up to KES 50,000.00 it is paid at once" in page
    cash = gl("GL-CASH")

    response = post(
        officer,
        f"{PAGE}member/{member_id}/new",
        {"account_id": savings_id, "amount": "5000", "method": "cash", "reference": "V-001"},
    )
    assert response.headers["Location"].endswith(
        f"/admin/member/details/?id={member_id}#branch-withdrawals"
    )
    page = member_page(officer, member_id)
    assert "Paid: KES 5,000.00 by cash (V-001)." in page
    row = last_withdrawal()
    assert (row.status, row.amount, row.method, row.reference) == (
        "paid",
        D("5000.00"),
        "cash",
        "V-001",
    )
    assert f'id="member-withdrawal-{row.id}"' in page
    assert balance(savings_id) == D("15000.00")
    assert gl("GL-CASH") == cash - D("5000.00")
    queue = text(officer, PAGE)
    recent = queue.split('id="recent-withdrawals"')[1]
    assert f'id="withdrawal-{row.id}"' in recent and "paid at once" in recent
    assert 'id="no-pending"' in queue


def test_refusals_are_told_in_the_services_words_and_change_nothing(app: Flask) -> None:
    member_id, savings_id, deposits_id = saver("20000")
    officer = signed_in(app, staff("loan_officer"))
    entries, cash = count(JournalEntry), gl("GL-CASH")
    path = f"{PAGE}member/{member_id}/new"
    good = {"account_id": savings_id, "amount": "5000", "method": "cash", "reference": "V-1"}
    cases = [
        ({"amount": "19950"}, "at most KES 19,900.00 can be withdrawn: KES 100.00 stays"),
        ({"amount": "-5"}, "amount must be more than zero"),
        ({"amount": "abc"}, "amount is not a number"),
        ({"method": "mpesa"}, "paid in cash or by bank transfer"),
        ({"reference": "  "}, "the voucher or bank reference is needed"),
        ({"account_id": deposits_id}, "Deposits cannot be withdrawn; only savings can"),
        ({"account_id": ""}, "choose the account the money comes from"),
    ]
    for change, words in cases:
        post(officer, path, {**good, **change})
        assert f"Not done: {words}" in member_page(officer, member_id), change
    assert count(BranchWithdrawal) == 0 and count(JournalEntry) == entries
    assert balance(savings_id) == D("20000.00") and gl("GL-CASH") == cash


def test_above_the_limit_it_waits_for_a_second_manager_who_pays_or_rejects_it(
    app: Flask,
) -> None:
    member_id, savings_id, _ = saver("200000")
    staff_add(email="manager2@sacco.test", role="branch_manager", password=PASSWORD)
    officer = signed_in(app, staff("loan_officer"))
    maker = signed_in(app, staff("branch_manager"))
    checker = signed_in(app, "manager2@sacco.test")
    path = f"{PAGE}member/{member_id}/new"
    bank, pending = gl("GL-BANK"), gl("GL-WITHDRAWALS-PENDING")

    post(
        maker,
        path,
        {"account_id": savings_id, "amount": "80000", "method": "bank", "reference": "EFT 77"},
    )
    assert "KES 80,000.00 by bank transfer is above the approval limit: it waits" in member_page(
        maker, member_id
    )
    big = last_withdrawal()
    big_id = big.id
    assert big.status == "pending"
    assert balance(savings_id) == D("120000.00")  # held out of the account at once
    assert gl("GL-WITHDRAWALS-PENDING") == pending - D("80000.00") and gl("GL-BANK") == bank
    assert "waiting for approval" in member_page(officer, member_id)

    # The maker sees the note, not the buttons; posting anyway is refused in words.
    queue = text(maker, PAGE)
    row = queue.split(f'id="withdrawal-{big_id}"')[1].split("</tr>")[0]
    assert "You entered it: another branch manager decides." in row and "decide-" not in row
    post(maker, f"{PAGE}{big_id}/decide", {"decision": "approve"})
    assert "Not done: the withdrawal needs a second person: you entered it." in text(maker, PAGE)
    assert 'id="decide-' + str(big_id) in text(checker, PAGE)
    post(checker, f"{PAGE}{big_id}/decide", {"decision": "reject", "reason": " "})
    assert "Not done: say why the withdrawal is refused." in text(checker, PAGE)
    post(checker, f"{PAGE}{big_id}/decide", {"decision": "maybe"})
    assert "Not done: choose approve or reject." in text(checker, PAGE)
    assert withdrawal(big_id).status == "pending" and gl("GL-BANK") == bank

    post(checker, f"{PAGE}{big_id}/decide", {"decision": "approve"})
    assert f"Withdrawal {big_id} is approved: pay KES 80,000.00 by bank transfer (EFT 77)." in text(
        checker, PAGE
    )
    assert withdrawal(big_id).status == "paid"
    assert gl("GL-BANK") == bank - D("80000.00") and gl("GL-WITHDRAWALS-PENDING") == pending
    assert balance(savings_id) == D("120000.00")
    post(checker, f"{PAGE}{big_id}/decide", {"decision": "approve"})
    assert f"Not done: withdrawal {big_id} is paid already." in text(checker, PAGE)
    assert gl("GL-BANK") == bank - D("80000.00")

    # A second one rejected with a reason: the money goes back to the account.
    post(
        officer,
        path,
        {"account_id": savings_id, "amount": "60000", "method": "cash", "reference": "V-9"},
    )
    other_id = last_withdrawal().id
    assert balance(savings_id) == D("60000.00")
    post(checker, f"{PAGE}{other_id}/decide", {"decision": "reject", "reason": "ID not shown"})
    page = text(checker, PAGE)
    assert f"Withdrawal {other_id} is rejected; the money is back in the account." in page
    assert "ID not shown" in page.split('id="recent-withdrawals"')[1]
    assert 'id="no-pending"' in page
    found = withdrawal(other_id)
    assert (found.status, found.reason) == ("rejected", "ID not shown")
    assert balance(savings_id) == D("120000.00") and gl("GL-WITHDRAWALS-PENDING") == pending
    actions = set(db.session.scalars(select(AuditLog.action)))
    assert {
        "branch_withdrawal.record",
        "branch_withdrawal.approve",
        "branch_withdrawal.reject",
    } <= actions


@pytest.mark.parametrize("role", ["auditor", "loan_officer"])
def test_roles_without_the_permission_get_403_and_change_nothing(app: Flask, role: str) -> None:
    member_id, savings_id, _ = saver("200000")
    maker = signed_in(app, staff("branch_manager"))
    post(
        maker,
        f"{PAGE}member/{member_id}/new",
        {"account_id": savings_id, "amount": "80000", "method": "bank", "reference": "EFT 1"},
    )
    held_id = last_withdrawal().id
    client = signed_in(app, staff(role))
    assert browse(client, PAGE).status_code == 200  # every role reads the queue
    assert f'id="decide-{held_id}"' not in text(client, PAGE)
    forms = {f"{PAGE}{held_id}/decide": ("branch_withdrawal.approve", {"decision": "approve"})}
    if role == "auditor":
        assert 'id="branch-withdrawal-new"' not in member_page(client, member_id)
        forms[f"{PAGE}member/{member_id}/new"] = (
            "branch_withdrawal.record",
            {"account_id": savings_id, "amount": "100", "method": "cash", "reference": "V"},
        )
    entries = count(JournalEntry)
    for path, (needs, data) in forms.items():
        assert post(client, path, data).status_code == 403, path
        denied = db.session.scalars(
            select(AuditLog).where(AuditLog.action == "access.denied").order_by(AuditLog.id.desc())
        ).first()
        assert denied.after["needs"] == needs and denied.object_id == path
    assert count(BranchWithdrawal) == 1 and withdrawal(held_id).status == "pending"
    assert count(JournalEntry) == entries and balance(savings_id) == D("120000.00")


def test_a_post_without_the_csrf_token_changes_nothing(app: Flask) -> None:
    member_id, savings_id, _ = saver("20000")
    client = signed_in(app, staff("loan_officer"))
    response = browse(
        client,
        f"{PAGE}member/{member_id}/new",
        "POST",
        data={"account_id": savings_id, "amount": "500", "method": "cash", "reference": "V"},
    )
    assert response.status_code == 302
    assert "The form expired" in member_page(client, member_id)
    assert count(BranchWithdrawal) == 0 and balance(savings_id) == D("20000.00")


def test_an_exited_members_page_offers_no_withdrawal_form(app: Flask) -> None:
    member_id, _, _ = saver("20000")
    db.session.get(Member, member_id).status = "exited"
    db.session.commit()
    client = signed_in(app, staff("loan_officer"))
    assert 'id="branch-withdrawal-new"' not in member_page(client, member_id)
