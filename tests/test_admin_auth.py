from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from werkzeug.test import TestResponse

from app.extensions import db
from app.models import StaffUser
from tests.helpers import PASSWORD, browse, login, post_form, staff


def location(response: TestResponse) -> tuple[str, str, str]:
    parts = urlsplit(response.headers["Location"])
    return parts.netloc, parts.path, parts.query


def test_the_console_sends_anonymous_visitors_to_the_login_page(client: FlaskClient) -> None:
    response = browse(client, "/admin/")

    assert response.status_code == 302
    assert location(response)[:2] == ("", "/admin/login")
    page = browse(client, "/admin/login")
    assert page.status_code == 200
    assert "Staff sign in" in page.get_data(as_text=True)


def test_an_anonymous_visit_to_a_view_comes_back_there_after_login(
    app: Flask, client: FlaskClient
) -> None:
    email = staff("loan_officer")
    response = browse(client, "/admin/member/")

    assert response.status_code == 302
    netloc, path, query = location(response)
    assert (netloc, path) == ("", "/admin/login")
    next_ = parse_qs(query)["next"][0]
    assert next_.startswith("/admin/member/")

    after = login(client, email, next_=next_)
    assert after.status_code == 302
    assert location(after)[1] == "/admin/member/"


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("loan.officer@sacco.test", "wrong-password-1"),
        ("nobody@sacco.test", PASSWORD),
        ("loan.officer@sacco.test", ""),
    ],
)
def test_a_wrong_email_or_password_shows_an_error_and_lets_nobody_in(
    app: Flask, client: FlaskClient, email: str, password: str
) -> None:
    staff("loan_officer")

    response = login(client, email, password)

    assert response.status_code == 200
    assert "Wrong email or password." in response.get_data(as_text=True)
    assert location(browse(client, "/admin/"))[1] == "/admin/login"


def test_the_right_password_opens_the_console(app: Flask, client: FlaskClient) -> None:
    email = staff("loan_officer")

    response = login(client, email.upper())  # emails are not case sensitive

    assert response.status_code == 302
    assert location(response)[:2] == ("", "/admin/")
    index = browse(client, "/admin/")
    assert index.status_code == 200
    assert "SACCO console" in index.get_data(as_text=True)
    assert browse(client, "/admin/member/").status_code == 200


def test_logout_closes_the_console_again(app: Flask, client: FlaskClient) -> None:
    email = staff("admin")
    login(client, email)
    assert browse(client, "/admin/").status_code == 200

    post_form(client, "/admin/logout")

    assert location(browse(client, "/admin/"))[1] == "/admin/login"


def test_a_deactivated_staff_member_cannot_log_in(app: Flask, client: FlaskClient) -> None:
    email = staff("admin")
    db.session.execute(update(StaffUser).where(StaffUser.email == email).values(active=False))
    db.session.commit()

    response = login(client, email)

    assert response.status_code == 200
    assert "Wrong email or password." in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/admin/auditlog/", "/admin/staffuser/"])
def test_a_loan_officer_is_turned_away_from_the_audit_log_and_staff_views(
    app: Flask, client: FlaskClient, path: str
) -> None:
    login(client, staff("loan_officer"))

    response = browse(client, path)

    assert response.status_code == 403
    assert "Not open to your role" in response.get_data(as_text=True)


def test_an_auditor_can_read_the_audit_log_but_not_manage_staff(
    app: Flask, client: FlaskClient
) -> None:
    login(client, staff("auditor"))

    audit = browse(client, "/admin/auditlog/")

    assert audit.status_code == 200
    assert "staff.add" in audit.get_data(as_text=True)  # the row staff_add wrote
    assert browse(client, "/admin/staffuser/").status_code == 403


def test_an_admin_can_open_the_staff_view_without_seeing_password_hashes(
    app: Flask, client: FlaskClient
) -> None:
    login(client, staff("admin"))

    page = browse(client, "/admin/staffuser/")

    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "admin@sacco.test" in body
    assert "scrypt:" not in body and "pbkdf2:" not in body


@pytest.mark.parametrize(
    "next_",
    [
        "//evil.example",
        "//evil.example/admin/",
        "https://evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "evil.example",
    ],
)
def test_login_never_redirects_off_site(app: Flask, client: FlaskClient, next_: str) -> None:
    email = staff("admin")

    response = login(client, email, next_=next_)

    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"


def test_login_follows_a_local_next(app: Flask, client: FlaskClient) -> None:
    response = login(client, staff("admin"), next_="/admin/auditlog/?page=2")

    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/auditlog/?page=2"
