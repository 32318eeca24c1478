"""CSRF on every form of the console: every POST route under /admin, taken from the app's
own URL map (so a route added later is covered without editing this test), is posted
with plausible fields but no CSRF token, by an admin and by a branch manager (between
them every permission), and the database must be exactly as it was. Only the record of a
refused attempt ("access.denied") may be added."""

from __future__ import annotations

import re
from datetime import date

from flask import Flask
from sqlalchemy import select

from app.extensions import db
from app.models import AuditLog, SmsMessage, StaffUser
from app.services.loans import loan_apply
from tests.helpers import browse, login, staff
from tests.loan_factories import make_borrower, make_loan, make_product

# Plausible values for the fields the console's forms post: with the token, each of
# these would do something.
FIELDS = {
    "action": "approve",
    "reason": "checked by phone",
    "note": "checked by phone",
    "amount": "500",
    "term": "6",
    "reference": "EFT-0001",
    "account": "M000001",
    "installment": "1",
    "installment_number": "1",
    "email": "new.staff@sacco.test",
    "password": "a-long-password-1",
    "role": "branch_manager",
    "name": "New Name",
    "national_id": "29999999",
    "language": "sw",
    "phone": "0799000111",
    "current": "staff-password-1",
    "new": "another-password-1",
    "repeat": "another-password-1",
    "code": "NEWPROD",
    "text": "1",
    "outcome": "success",
    "skip_bad": "y",
}


def snapshot() -> dict[str, list[tuple]]:
    """Every row of every table, but the audit rows that record refusals."""
    db.session.expire_all()
    rows = {}
    for table in db.metadata.sorted_tables:
        query = select(table)
        if table.name == AuditLog.__tablename__:
            query = query.where(table.c.action != "access.denied")
        rows[table.name] = [
            tuple(r) for r in db.session.execute(query.order_by(*table.primary_key))
        ]
    db.session.rollback()
    return rows


def _post_routes(app: Flask) -> list[str]:
    return sorted(
        {
            rule.rule
            for rule in app.url_map.iter_rules()
            if rule.rule.startswith("/admin") and "POST" in (rule.methods or ())
        }
    )


def test_no_console_post_changes_anything_without_the_csrf_token(app: Flask) -> None:
    product = make_product("V1")
    waiting = loan_apply(
        member_id=make_borrower(savings=10000).id,
        product_id=product.id,
        amount=5000,
        as_of=date(2026, 3, 2),
    )
    active = make_loan(product=product, on=date(2026, 1, 1))
    ids = {
        "loan_id": waiting.id,
        "member_id": waiting.member_id,
        "payment_id": 1,
        "message_id": db.session.scalars(select(SmsMessage.id)).first(),
        "token": "a" * 22,
    }
    admin_email, manager_email = staff("admin"), staff("branch_manager")
    ids["user_id"] = db.session.scalar(select(StaffUser.id).where(StaffUser.email == manager_email))
    loan_ids = [str(waiting.id), str(active.id)]
    db.session.rollback()  # no test read may hold SQLite's one lock during a request
    clients = {}
    for email in (admin_email, manager_email):
        clients[email] = app.test_client()
        login(clients[email], email)
    routes = _post_routes(app)
    before = snapshot()  # ends with a rollback: no test read holds SQLite's lock from here

    posted = []
    for rule in routes:
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(ids.get(m.group(1), 1)), rule)
        for email, client in clients.items():
            data = {**FIELDS, "loan_id": loan_ids}
            response = browse(client, path, "POST", data=data)
            assert response.status_code < 500, (path, email, response.status_code)
            posted.append(path)

    assert snapshot() == before
    # The map really holds the console's forms (a broken filter would pass vacuously).
    for expected in (
        "/admin/login",
        "/admin/logout",
        "/admin/password",
        "/admin/loan/decide/<int:loan_id>",
        "/admin/applications/decide/<int:loan_id>",
        "/admin/applications/bulk",
        "/admin/member/act/<int:member_id>",
        "/admin/member/new/",
        "/admin/member/edit/",
        "/admin/suspense/assign/<int:payment_id>",
        "/admin/loan-book/upload",
        "/admin/staffuser/manage/<int:user_id>",
        "/admin/smsmessage/resend/<int:message_id>",
        "/admin/loanproduct/new/",
        "/admin/phone/ussd",
    ):
        assert expected in routes, expected
    # Both staff members are still signed in: a token-less sign-out did not sign them out.
    for client in clients.values():
        assert browse(client, "/admin/").status_code == 200
