"""Suspense payments in the console: Paybill money that matched no account, listed for
staff and placed by a branch manager through payments_assign_suspense."""

from __future__ import annotations

import html
from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select

from app.clock import business_today
from app.extensions import db
from app.models import AuditLog, JournalEntry, Payment
from app.models.types import utcnow
from app.services.payments import PaymentError, payments_assign_suspense
from app.services.payments.c2b import c2b_confirm
from tests.factories import make_member
from tests.helpers import assert_books_reconcile, csrf_token, login, staff
from tests.helpers import browse as _browse
from tests.loan_factories import balance, make_loan, make_product, make_staff

SUSPENSE = "/admin/suspense/"


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's read transaction would hold the write lock
    return _browse(client, path, method, **kwargs)


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    db.session.commit()
    login(client, staff(role))
    return client


def assign(client: FlaskClient, payment_id: int, token: bool = True, **fields: str):  # noqa: ANN201
    db.session.commit()
    data = {**fields, **({"csrf_token": csrf_token(client)} if token else {})}
    return browse(
        client, f"/admin/suspense/assign/{payment_id}", "POST", data=data, follow_redirects=True
    )


def paid_to_nobody(
    receipt: str = "RKTQDM7W6S",
    account: str = "X999",
    amount: str = "1000",
    expect: str = "suspense",
) -> Payment:
    """A Paybill payment whose account matches no member or loan, from the masked number
    25470****149 (Safaricom masks the payer's phone in C2B confirmations)."""
    outcome = c2b_confirm(
        {
            "trans_id": receipt,
            "trans_time": "20261121063845",
            "amount": Decimal(amount),
            "bill_ref": account,
            "msisdn": "25470****149",
            "payer_name": "John Doe",
        },
        None,
    )
    db.session.commit()
    assert outcome == expect
    return db.session.scalar(select(Payment).where(Payment.receipt == receipt))


def payment_status(payment_id: int) -> str:
    db.session.expire_all()
    return db.session.get(Payment, payment_id).status


def test_the_list_shows_what_was_paid_by_whom_and_the_suggested_member(app: Flask) -> None:
    member = make_member(phone="0708374149", name="Akinyi Atieno")
    payment = paid_to_nobody(amount="12500")
    paid_to_nobody(
        receipt="RKTQDM7W6T", account=member.member_no, expect="processed"
    )  # matched: not suspense
    page = browse(signed_in(app, "branch_manager"), SUSPENSE).get_data(as_text=True)
    assert "RKTQDM7W6S" in page and "RKTQDM7W6T" not in page
    assert "12,500.00" in page and "John Doe" in page and "X999" in page
    assert f"{member.member_no} Akinyi Atieno" in page  # the masked phone matches only her
    assert f'id="assign-{payment.id}"' in page


def test_a_manager_assigns_a_payment_to_a_members_savings(app: Flask) -> None:
    member = make_member(phone="0708374149", name="Akinyi Atieno")
    payment = paid_to_nobody()
    client = signed_in(app, "branch_manager")

    page = assign(
        client, payment.id, account=f" {member.member_no.lower()} ", note="She called the branch"
    ).get_data(as_text=True)

    assert f"KES 1,000.00 (RKTQDM7W6S) assigned to the savings of {member.member_no}" in page
    assert payment_status(payment.id) == "assigned"
    assert balance(f"SAV-{member.member_no}") == Decimal("1000.00")
    assert balance("GL-SUSPENSE") == Decimal("0.00")
    row = db.session.scalar(select(AuditLog).where(AuditLog.action == "payment.assign"))
    assert row.actor == "staff:branch.manager@sacco.test" and row.object_id == "RKTQDM7W6S"
    assert row.note == "She called the branch" and row.after["member"] == member.member_no
    assert "RKTQDM7W6S" not in browse(client, SUSPENSE).get_data(as_text=True)
    assert_books_reconcile()


def test_a_payment_assigned_to_a_loan_repays_it(app: Flask) -> None:
    loan = make_loan(product=make_product("V1"), amount=10000, on=date(2026, 10, 1))
    payment = paid_to_nobody(amount="888.49")
    client = signed_in(app, "branch_manager")
    page = assign(client, payment.id, account=loan.loan_no).get_data(as_text=True)
    assert f"assigned to loan {loan.loan_no}" in page
    assert payment_status(payment.id) == "assigned"
    assert balance(f"LNP-{loan.loan_no}") == Decimal("10000") - Decimal("788.49")
    assert_books_reconcile()


def test_an_unknown_account_is_refused_in_words_and_nothing_moves(app: Flask) -> None:
    payment = paid_to_nobody()
    client = signed_in(app, "branch_manager")
    page = html.unescape(assign(client, payment.id, account="M999999").get_data(as_text=True))
    assert "Not assigned: no member or loan 'M999999'" in page
    empty = assign(client, payment.id, account=" ").get_data(as_text=True)
    assert "Not assigned: type the member number" in empty
    assert payment_status(payment.id) == "suspense"
    assert balance("GL-SUSPENSE") == Decimal("1000.00")


def test_a_loan_officer_sees_the_list_but_cannot_assign(app: Flask) -> None:
    member = make_member(phone="0708374149")
    payment = paid_to_nobody()
    client = signed_in(app, "loan_officer")
    page = browse(client, SUSPENSE).get_data(as_text=True)
    assert "RKTQDM7W6S" in page and f'id="assign-{payment.id}"' not in page
    reply = assign(client, payment.id, account=member.member_no)
    assert reply.status_code == 403
    assert payment_status(payment.id) == "suspense"
    denied = db.session.scalar(select(AuditLog).where(AuditLog.action == "access.denied"))
    assert denied is not None and denied.after["needs"] == "suspense.assign"


def test_an_assignment_without_the_csrf_token_changes_nothing(app: Flask) -> None:
    member = make_member(phone="0708374149")
    payment = paid_to_nobody()
    client = signed_in(app, "branch_manager")
    page = assign(client, payment.id, token=False, account=member.member_no)
    assert "The form expired" in page.get_data(as_text=True)
    assert payment_status(payment.id) == "suspense"
    assert db.session.scalar(select(AuditLog).where(AuditLog.action == "payment.assign")) is None


def test_requests_and_callbacks_stay_read_only(app: Flask) -> None:
    client = signed_in(app, "admin")
    for path in ("/admin/mpesarequest/", "/admin/mpesacallback/", "/admin/payment/"):
        page = browse(client, path).get_data(as_text=True)
        assert "/new/" not in page and "/edit/" not in page, path
    assert browse(client, "/admin/mpesacallback/new/").status_code in (302, 403)


# -- what an assignment records (the service the console calls) ---------------------------


def _assigned(payment_id: int) -> tuple[Payment, JournalEntry]:
    db.session.expire_all()
    payment = db.session.get(Payment, payment_id)
    return payment, db.session.get(JournalEntry, payment.journal_entry_id)


def _assign_audit() -> AuditLog:
    return db.session.scalar(select(AuditLog).where(AuditLog.action == "payment.assign"))


def test_an_assignment_to_savings_records_who_when_and_the_deposit_it_posted(app: Flask) -> None:
    member = make_member(phone="0708374149")
    payment = paid_to_nobody()
    to_suspense = payment.journal_entry_id
    manager = make_staff("branch_manager")
    started = utcnow()

    payments_assign_suspense(
        payment_id=payment.id, staff=manager, account=member.member_no, note="Walked in"
    )

    done, entry = _assigned(payment.id)
    by = f"staff:{manager.email}"
    assert (done.status, done.member_id, done.loan_id, done.assigned_by) == (
        "assigned",
        member.id,
        None,
        by,
    )
    assert started <= done.assigned_at <= utcnow()
    # The payment now points at the deposit out of suspense, not at its way in.
    assert entry.id != to_suspense
    assert (entry.kind, entry.idempotency_key, entry.actor, entry.member_id) == (
        "deposit",
        "deposit:assign:RKTQDM7W6S",
        by,
        member.id,
    )
    assert entry.value_date == business_today()
    audit = _assign_audit()
    assert (audit.actor, audit.object_type, audit.object_id, audit.note) == (
        by,
        "payment",
        "RKTQDM7W6S",
        "Walked in",
    )
    assert audit.before == {"status": "suspense", "member": None, "loan": None}
    assert audit.after == {
        "status": "assigned",
        "member": member.member_no,
        "account": member.member_no,
        "loan": None,
        "amount": "1000.00",
    }
    assert balance("GL-SUSPENSE") == Decimal("0.00")
    assert_books_reconcile()


def test_an_assignment_to_a_loan_repays_it_out_of_suspense_in_the_managers_name(
    app: Flask,
) -> None:
    loan = make_loan(product=make_product("V1"), amount=10000, on=date(2026, 10, 1))
    loan_id, loan_no, member_id = loan.id, loan.loan_no, loan.member_id
    payment = paid_to_nobody(amount="888.49")
    manager = make_staff("branch_manager")
    commits: list[object] = []
    count = commits.append  # one bound method: a listener is removed by identity
    # The database's commits, not the session's: savepoints end with "after_commit" too.
    event.listen(db.engine, "commit", count)

    payments_assign_suspense(payment_id=payment.id, staff=manager, account=loan_no)

    event.remove(db.engine, "commit", count)
    # One commit: the repayment and the payment's new status land together. A commit
    # between them would free the payment's lock while it still reads "suspense".
    assert len(commits) == 1

    done, entry = _assigned(payment.id)
    by = f"staff:{manager.email}"
    assert (done.status, done.member_id, done.loan_id, done.assigned_by) == (
        "assigned",
        member_id,
        loan_id,
        by,
    )
    assert (entry.idempotency_key, entry.actor, entry.loan_id) == (
        "repay:assign:RKTQDM7W6S",
        by,
        loan_id,
    )
    assert entry.value_date == business_today()
    audit = _assign_audit()
    assert audit.before == {"status": "suspense", "member": None, "loan": None}
    assert (audit.after["loan"], audit.after["account"]) == (loan_no, None)
    assert balance("GL-SUSPENSE") == Decimal("0.00")
    assert_books_reconcile()


def test_an_assignment_is_refused_for_no_payment_and_for_an_account_paybill_cannot_pay(
    app: Flask,
) -> None:
    member = make_member(phone="0708374149")
    payment = paid_to_nobody()
    manager = make_staff("branch_manager")
    with pytest.raises(PaymentError, match=r"^no payment 999999$"):
        payments_assign_suspense(payment_id=999999, staff=manager, account=member.member_no)
    # The member is known, but a fixed deposit is opened from savings for its own term:
    # no money is ever paid into one.
    fixed = f"{member.member_no}F"
    with pytest.raises(PaymentError, match=rf"^no member or loan '{fixed}'$"):
        payments_assign_suspense(payment_id=payment.id, staff=manager, account=fixed)
    assert payment_status(payment.id) == "suspense"
    assert balance("GL-SUSPENSE") == Decimal("1000.00")
    assert _assign_audit() is None
