"""The role matrix of issue 11, checked on the server: each role signs in and tries each
action over HTTP; a role the table does not allow gets 403 and an audit row, and its
attempt changes nothing. The table is written out here from the issue, not read from
app/services/permissions.py, so the code is checked against the rule and not against
itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditLog, JournalEntry, Loan, Member, StaffUser
from app.models.member import STAFF_ROLES
from app.services.loans import loan_apply
from app.services.permissions import PERMISSIONS
from app.services.staff import staff_add
from tests.helpers import PASSWORD, browse, csrf_token, login, staff
from tests.loan_factories import make_borrower, make_product

ALL = set(STAFF_ROLES)
MAKERS = {"loan_officer", "branch_manager"}

# issue 11, "Roles": action -> the roles that may do it
MATRIX: dict[str, set[str]] = {
    "view": ALL,
    "member.edit": {"loan_officer", "branch_manager", "admin"},
    "loan.recommend": MAKERS,
    "loan.approve": {"branch_manager"},
    "payment.request": MAKERS,
    "suspense.assign": {"branch_manager"},
    "loan.restructure": {"branch_manager"},
    "loan.write_off": {"branch_manager", "compliance"},
    "penalty.reverse": {"branch_manager"},
    "audit.view": {"compliance", "auditor", "admin"},
    "staff.manage": {"admin"},
    "product.manage": {"admin"},
}
# Ours where the issue's table is silent: who may upload a loan book (a migration of the
# SACCO's books: the branch manager who answers for them, and admins); who texts a member
# (a statement, an SMS sent again: those who deal with members); who sends a loan's money
# by hand or again (the checker who approved it).
MATRIX_OURS = {
    # issue 12's remedial matrix: loan officers record payments (calls, promises) and
    # upload; branch managers approve, file, start recovery, recommend and decide
    # write-offs; compliance decides write-offs and uploads.
    "collection.record": MAKERS,
    "document.upload": {"loan_officer", "branch_manager", "compliance"},
    "portfolio.assign": {"branch_manager"},
    "agreement.draft": MAKERS,
    "agreement.approve": {"branch_manager"},
    "legal.file": {"branch_manager"},
    "recovery.start": {"branch_manager"},
    "write_off.recommend": {"branch_manager"},
    "write_off.decide": {"branch_manager", "compliance"},
    "loan.import": {"branch_manager", "admin"},
    "member.message": MAKERS,
    "loan.disburse": {"branch_manager"},
    # Issue 20, the members' own money: a maker and a different checker wherever money
    # leaves or moves between members (dividends, share transfers, exits, branch
    # withdrawals above the limit); product terms are an admin's.
    "dividend.declare": {"branch_manager", "admin", "compliance"},
    "dividend.approve": {"branch_manager", "admin"},
    "account_product.manage": {"admin"},
    "share_transfer.request": MAKERS,
    "share_transfer.approve": {"branch_manager"},
    "member_exit.request": MAKERS,
    "member_exit.settle": {"branch_manager"},
    "branch_withdrawal.record": MAKERS,
    "branch_withdrawal.approve": {"branch_manager"},
    "standing_order.manage": MAKERS,
    "term_savings.manage": MAKERS,
}


# Issue 17: deletes, bulk actions and exports. No list of the console deletes from the
# books or their evidence (journal, payments, accounts, M-PESA, SMS, loans, the audit log),
# nor any other list today; only the audit log exports. What no role may do is refused
# 403 and audited like the rest (it used to redirect quietly, unaudited).
NOBODY = "nobody"
ROLES_FOR = {**MATRIX, **MATRIX_OURS, NOBODY: set()}


def test_the_permission_table_is_the_issues_matrix() -> None:
    for action, roles in {**MATRIX, **MATRIX_OURS}.items():
        assert set(PERMISSIONS[action]) == roles, action


@dataclass(frozen=True)
class Attempt:
    permission: str
    method: str
    path: Callable[[dict[str, int]], str]  # from the ids of the rows the test made
    data: dict[str, str] | None = None
    # A page closed to a role as a whole refuses with the page's permission first.
    page_permission: str | None = None
    needs: str | None = None  # what the audit row names, when not `permission`


def _decide(action: str, permission: str, **fields: str) -> Attempt:
    return Attempt(
        permission,
        "POST",
        lambda ids: f"/admin/loan/decide/{ids['loan']}",
        {"action": action, **fields},
    )


ATTEMPTS: dict[str, Attempt] = {
    "dashboard": Attempt("view", "GET", lambda _: "/admin/"),
    "members": Attempt("view", "GET", lambda _: "/admin/member/"),
    "loans": Attempt("view", "GET", lambda _: "/admin/loan/"),
    "loan page": Attempt("view", "GET", lambda ids: f"/admin/loan/details/?id={ids['loan']}"),
    "member page": Attempt("view", "GET", lambda ids: f"/admin/member/details/?id={ids['member']}"),
    "applications": Attempt("view", "GET", lambda _: "/admin/applications/"),
    "promises": Attempt("view", "GET", lambda _: "/admin/promisetopay/"),
    "sms outbox": Attempt("view", "GET", lambda _: "/admin/smsmessage/"),
    "suspense": Attempt("view", "GET", lambda _: "/admin/suspense/"),
    "register member form": Attempt("member.edit", "GET", lambda _: "/admin/member/new/"),
    "edit member form": Attempt(
        "member.edit", "GET", lambda ids: f"/admin/member/edit/?id={ids['member']}"
    ),
    "reset PIN": Attempt(
        "member.edit",
        "POST",
        lambda ids: f"/admin/member/act/{ids['member']}",
        {"action": "reset_pin"},
    ),
    "new activation code": Attempt(
        "member.edit",
        "POST",
        lambda ids: f"/admin/member/act/{ids['member']}",
        {"action": "activation_code"},
    ),
    "send statement": Attempt(
        "member.message",
        "POST",
        lambda ids: f"/admin/member/act/{ids['member']}",
        {"action": "send_statement"},
    ),
    "approve from the queue": Attempt(
        "loan.approve",
        "POST",
        lambda ids: f"/admin/applications/decide/{ids['loan']}",
        {"action": "approve", "reason": "good record"},
    ),
    "bulk reject": Attempt(
        "loan.approve",
        "POST",
        lambda _: "/admin/applications/bulk",
        {"action": "reject", "reason": "no"},
    ),
    "assign suspense": Attempt(
        "suspense.assign",
        "POST",
        lambda _: "/admin/suspense/assign/999",
        {"account": "M000001", "note": "checked"},
    ),
    "reverse penalty": _decide("reverse_penalty", "penalty.reverse", reason="wrong date"),
    "audit export": Attempt("audit.view", "GET", lambda _: "/admin/auditlog/export/csv/"),
    "add staff form": Attempt("staff.manage", "GET", lambda _: "/admin/staffuser/add"),
    "loan book upload": Attempt("loan.import", "GET", lambda _: "/admin/loan-book/"),
    "payments": Attempt("view", "GET", lambda _: "/admin/payment/"),
    "journal": Attempt("view", "GET", lambda _: "/admin/journalentry/"),
    "products": Attempt("view", "GET", lambda _: "/admin/loanproduct/"),
    "recommend": _decide("recommend", "loan.recommend", reason="payslip seen"),
    "withdraw": _decide("withdraw", "loan.recommend"),
    "approve": _decide("approve", "loan.approve", reason="good record"),
    "reject": _decide("reject", "loan.approve", reason="no"),
    "request payment": _decide("request_payment", "payment.request", amount="500"),
    "restructure": _decide("restructure", "loan.restructure", term="6", reason="lost job"),
    "board decision on a write-off": Attempt(
        "write_off.decide",
        "POST",
        lambda _: "/admin/recovery/write-off/999/decide",
        {"decision": "approve", "decision_date": "2026-03-02", "minute_ref": "BM/1"},
    ),
    "recommend a write-off": Attempt(
        "write_off.recommend",
        "POST",
        lambda ids: f"/admin/recovery/{ids['loan']}/write-off",
        {"reason": "emigrated"},
    ),
    "officer desk": Attempt("collection.record", "GET", lambda _: "/admin/desk/"),
    "record a call": Attempt(
        "collection.record",
        "POST",
        lambda ids: f"/admin/desk/contact/{ids['loan']}",
        {"kind": "call", "outcome": "no_answer"},
    ),
    "reassign a loan": Attempt(
        "portfolio.assign",
        "POST",
        lambda ids: f"/admin/desk/assign/{ids['loan']}",
        {"officer_id": "1"},
        page_permission="collection.record",  # the desk itself
    ),
    "file a legal case": Attempt(
        "legal.file",
        "POST",
        lambda ids: f"/admin/recovery/{ids['loan']}/case",
        {"court": "Milimani", "case_number": "E1/2026", "filing_date": "2026-03-02"},
    ),
    "start a recovery step": Attempt(
        "recovery.start",
        "POST",
        lambda ids: f"/admin/recovery/{ids['loan']}/milestone",
        {"kind": "demand_letter", "due_date": "2099-01-01"},
    ),
    "leaderboard": Attempt("view", "GET", lambda _: "/admin/desk/leaderboard/"),
    "reports": Attempt("view", "GET", lambda _: "/admin/reports/"),
    "agreements": Attempt("view", "GET", lambda _: "/admin/agreement/"),
    "audit log": Attempt("audit.view", "GET", lambda _: "/admin/auditlog/"),
    "staff users": Attempt("staff.manage", "GET", lambda _: "/admin/staffuser/"),
    "new product form": Attempt("product.manage", "GET", lambda _: "/admin/loanproduct/new/"),
    "delete a member": Attempt(
        NOBODY,
        "POST",
        lambda ids: "/admin/member/delete/",
        {"id": "{member}"},
        needs="member.delete",
    ),
    "bulk delete members": Attempt(
        NOBODY,
        "POST",
        lambda ids: "/admin/member/action/",
        {"action": "delete", "rowid": "{member}"},
        needs="member.delete",
    ),
    "bulk action on loans": Attempt(
        NOBODY,
        "POST",
        lambda ids: "/admin/loan/action/",
        {"action": "approve", "rowid": "{loan}"},
        needs="loan.action",
    ),
    "delete a loan": Attempt(
        NOBODY, "POST", lambda _: "/admin/loan/delete/", {"id": "{loan}"}, needs="loan.delete"
    ),
    "delete a journal entry": Attempt(
        NOBODY,
        "POST",
        lambda _: "/admin/journalentry/delete/",
        {"id": "1"},
        needs="journalentry.delete",
    ),
    "delete an account": Attempt(
        NOBODY, "POST", lambda _: "/admin/account/delete/", {"id": "1"}, needs="account.delete"
    ),
    "delete a payment": Attempt(
        NOBODY, "POST", lambda _: "/admin/payment/delete/", {"id": "1"}, needs="payment.delete"
    ),
    "delete an SMS": Attempt(
        NOBODY,
        "POST",
        lambda _: "/admin/smsmessage/delete/",
        {"id": "1"},
        needs="smsmessage.delete",
    ),
    "delete an audit row": Attempt(
        NOBODY,
        "POST",
        lambda _: "/admin/auditlog/delete/",
        {"id": "1"},
        page_permission="audit.view",
        needs="auditlog.delete",
    ),
    "export members": Attempt(
        NOBODY, "GET", lambda _: "/admin/member/export/csv/", needs="member.export"
    ),
    "export the journal": Attempt(
        NOBODY, "GET", lambda _: "/admin/journalentry/export/csv/", needs="journalentry.export"
    ),
    "audit export as xlsx": Attempt(
        NOBODY,
        "GET",
        lambda _: "/admin/auditlog/export/xlsx/",
        page_permission="audit.view",
        needs="auditlog.export",
    ),
}


def _denied_rows() -> int:
    count = db.session.scalar(
        select(func.count()).select_from(AuditLog).where(AuditLog.action == "access.denied")
    )
    db.session.rollback()  # end the read: SQLite would keep the request waiting on its lock
    return count


@pytest.mark.parametrize("role", STAFF_ROLES)
@pytest.mark.parametrize("name", sorted(ATTEMPTS))
def test_each_role_gets_what_the_matrix_allows_and_403_otherwise(
    app: Flask, role: str, name: str
) -> None:
    attempt = ATTEMPTS[name]
    product = make_product("V1")
    loan = loan_apply(
        member_id=make_borrower(savings=10000).id,
        product_id=product.id,
        amount=5000,
        as_of=date(2026, 3, 2),
    )
    # The loan is in the signed-in staff member's book (the desk is one's own book).
    loan.officer_id = db.session.scalar(select(StaffUser.id).where(StaffUser.email == staff(role)))
    ids = {"loan": loan.id, "member": loan.member_id}
    loan_id, member_id = ids["loan"], ids["member"]
    journal_rows = db.session.scalar(select(func.count()).select_from(JournalEntry))
    db.session.commit()  # the test's reads end before each request (SQLite's one lock)
    client: FlaskClient = app.test_client()
    login(client, f"{role.replace('_', '.')}@sacco.test")
    denied_before = _denied_rows()
    data = {k: v.format(**ids) for k, v in (attempt.data or {}).items()}
    if attempt.method == "POST":
        data = {**data, "csrf_token": csrf_token(client)}
    path = attempt.path(ids)

    response = browse(client, path, attempt.method, data=data or None)

    db.session.expire_all()
    if role in ROLES_FOR[attempt.permission]:
        assert response.status_code in (200, 302), (role, name, response.status_code)
        assert _denied_rows() == denied_before
    else:
        assert response.status_code == 403, (role, name, response.status_code)
        assert "Not open to your role" in response.get_data(as_text=True)
        assert response.mimetype == "text/html"  # an export refused sends no file
        row = db.session.scalars(
            select(AuditLog).where(AuditLog.action == "access.denied").order_by(AuditLog.id)
        ).all()[-1]
        assert row.actor == f"staff:{role.replace('_', '.')}@sacco.test"
        assert row.after["needs"] in (
            attempt.needs or attempt.permission,
            attempt.page_permission,
        )
        # Refused before the service ran: the loan is as it was, nothing was deleted.
        assert db.session.get(Loan, loan_id).status == "submitted"
        assert db.session.get(Member, member_id) is not None
        assert db.session.scalar(select(func.count()).select_from(JournalEntry)) == journal_rows


def test_buttons_show_only_to_roles_that_may_use_them(app: Flask) -> None:
    product = make_product("V1")
    loan = loan_apply(
        member_id=make_borrower(savings=10000).id,
        product_id=product.id,
        amount=5000,
        as_of=date(2026, 3, 2),
    )
    pages, path = {}, f"/admin/loan/details/?id={loan.id}"
    for role in ("loan_officer", "branch_manager", "auditor"):
        client = app.test_client()
        login(client, staff(role))
        db.session.rollback()
        pages[role] = browse(client, path).get_data(as_text=True)

    assert 'value="approve"' in pages["branch_manager"]
    assert 'value="approve"' not in pages["loan_officer"]
    assert 'value="recommend"' in pages["loan_officer"]
    assert not any(f'value="{a}"' in pages["auditor"] for a in ("approve", "recommend", "reject"))


def test_a_long_email_signs_in_and_a_long_refused_path_is_audited(app: Flask) -> None:
    """The audit row of a login names the email and of a 403 the path: both fit however
    long (PostgreSQL refuses an over-long value, so the row, and the request, would fail)."""
    email = "mary.wanjiku.kamau.the.loan.officer@nairobi-branch.examplesacco.co.ke"
    staff_add(email=email, role="loan_officer", password=PASSWORD)
    client = app.test_client()

    assert login(client, email).status_code == 302
    path = "/admin/auditlog/?search=" + "x" * 120
    assert browse(client, path).status_code == 403

    db.session.expire_all()
    rows = db.session.scalars(select(AuditLog).order_by(AuditLog.id)).all()
    assert [(r.action, r.object_id) for r in rows[-2:]] == [
        ("staff.login", email),
        ("access.denied", "/admin/auditlog/"),
    ]
    assert rows[-1].actor == f"staff:{email}"


def test_no_list_of_the_console_deletes_and_money_rows_never_do(app: Flask) -> None:
    """Every delete and bulk-action route in the app's URL map (a view added later is
    covered), posted by an admin with a valid token for a row that exists: 403 and an
    audit row each, and the rows are all still there. The books' lists refuse deletion in
    the base view itself, whatever a view's settings say."""
    from admin.auth import NEVER_DELETED, SecureModelView

    product = make_product("V1")
    loan = loan_apply(
        member_id=make_borrower(savings=10000).id,
        product_id=product.id,
        amount=5000,
        as_of=date(2026, 3, 2),
    )
    ids = {"loan": loan.id, "member": loan.member_id}
    email = staff("admin")
    db.session.commit()  # the test's reads end before each request (SQLite's one lock)
    client: FlaskClient = app.test_client()
    login(client, email)
    tables = {t: db.session.scalar(select(func.count()).select_from(t)) for t in NEVER_DELETED}
    db.session.rollback()
    routes = sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/admin/") and rule.rule.endswith(("/delete/", "/action/"))
    )
    assert "/admin/journalentry/delete/" in routes and "/admin/payment/action/" in routes
    token = csrf_token(client)
    db.session.rollback()

    for path in routes:
        row = str(ids.get(path.split("/")[2], 1))
        data = {"csrf_token": token, "id": row, "rowid": row, "action": "delete"}
        response = browse(client, path, "POST", data=data)
        assert response.status_code == 403, (path, response.status_code)

    db.session.expire_all()
    assert _denied_rows() == len(routes)
    tables[AuditLog] += len(routes)  # the refusals, and nothing else, were added
    assert {t: db.session.scalar(select(func.count()).select_from(t)) for t in NEVER_DELETED} == (
        tables
    )
    with pytest.raises(TypeError, match="never deleted"):

        class Deleting(SecureModelView):
            editable = ("delete",)
            edit_permission = "staff.manage"

        Deleting(JournalEntry, db)
