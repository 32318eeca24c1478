"""Loan products in the console: drop-downs for the fixed choices, refusals in words, every
change audited, and only admins may change them."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditLog, LoanProduct
from tests.helpers import browse as _browse
from tests.helpers import login, staff
from tests.loan_factories import make_product

CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's read transaction would hold the write lock
    return _browse(client, path, method, **kwargs)


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    db.session.commit()
    login(client, staff(role))
    return client


def token(client: FlaskClient, path: str = "/admin/loanproduct/new/") -> str:
    page = browse(client, path)
    assert page.status_code == 200
    return CSRF.search(page.get_data(as_text=True)).group(1)


def good_form(**changes: str) -> dict[str, str]:
    form = {
        "code": "BIZ",
        "name": "Biashara Loan",
        "interest_method": "flat",
        "amortization": "equal_principal",
        "annual_rate": "18",
        "min_rate": "10",
        "max_rate": "24",
        "frequency": "weekly",
        "default_term": "12",
        "min_term": "4",
        "max_term": "26",
        "min_amount": "1000",
        "max_amount": "100000",
        "fee_type": "percent",
        "fee_value": "1.5",
        "fee_min": "50",
        "fee_max": "2000",
        "penalty_type": "fixed",
        "penalty_value": "200",
        "grace_days": "3",
        "default_threshold_days": "30",
        "limit_multiple": "3",
        "min_share_capital": "0",
        "min_membership_days": "0",
        "active": "y",
    }
    form.update(changes)
    return form


def create(client: FlaskClient, **changes: str):  # noqa: ANN201
    data = {"csrf_token": token(client), **good_form(**changes)}
    return browse(client, "/admin/loanproduct/new/", "POST", data=data, follow_redirects=True)


def product(code: str = "BIZ") -> LoanProduct | None:
    db.session.expire_all()
    return db.session.scalar(select(LoanProduct).where(LoanProduct.code == code))


def test_the_fixed_choices_are_drop_downs_with_every_allowed_value(app: Flask) -> None:
    html = browse(signed_in(app, "admin"), "/admin/loanproduct/new/").get_data(as_text=True)
    for name, values in {
        "interest_method": ("declining", "flat"),
        "amortization": ("equal_installments", "equal_principal"),
        "frequency": ("monthly", "weekly"),
        "fee_type": ("none", "fixed", "percent"),
        "penalty_type": ("none", "fixed", "percent"),
    }.items():
        select_ = re.search(rf'<select[^>]*name="{name}"[^>]*>(.*?)</select>', html, re.S)
        assert select_, f"{name} is not a drop-down"
        assert re.findall(r'<option[^>]*value="([^"]+)"', select_.group(1)) == list(values)
    assert ">Declining balance<" in html and ">Fixed amount (KES)<" in html


def test_an_admin_creates_a_product_and_the_change_is_audited(app: Flask) -> None:
    client = signed_in(app, "admin")
    reply = create(client)
    assert reply.status_code == 200
    saved = product()
    assert saved is not None
    assert (saved.frequency, saved.interest_method, saved.penalty_type) == (
        "weekly",
        "flat",
        "fixed",
    )
    row = db.session.scalar(select(AuditLog).where(AuditLog.action == "product.create"))
    assert row.actor == "staff:admin@sacco.test" and row.object_id == "BIZ"
    assert row.after["frequency"] == "weekly"
    # The amounts (a column type Flask-Admin has no field for) are on the form and saved.
    assert (saved.min_amount, saved.max_amount, saved.fee_min, saved.fee_max) == (
        1000,
        100000,
        50,
        2000,
    )
    # The list reads the choices in words.
    listing = browse(client, "/admin/loanproduct/").get_data(as_text=True)
    assert "Flat rate" in listing and "Weekly" in listing


def test_fortnightly_is_refused_in_words_not_cut_short(app: Flask) -> None:
    # The schedule knows monthly and weekly only (and the column holds 8 characters): a
    # typed-in "fortnightly" is refused by the field, never stored as "fortnigh".
    reply = create(signed_in(app, "admin"), frequency="fortnightly")
    text = reply.get_data(as_text=True)
    assert reply.status_code == 200 and "Not a valid choice" in text
    assert product() is None


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        (
            {"default_term": "30"},
            "the default term (30) must be between the minimum (4) and the maximum (26)",
        ),
        ({"annual_rate": "150"}, "the annual rate must be a percentage from 0 to 100"),
        ({"max_rate": "120"}, "the maximum rate must be a percentage from 0 to 100"),
        ({"min_rate": "30"}, "the minimum rate is above the maximum rate"),
        (
            {"penalty_type": "percent", "penalty_value": "150"},
            "a percentage penalty must be from 0 to 100",
        ),
        ({"fee_type": "fixed", "fee_value": "-5"}, "fees and penalties cannot be negative"),
        ({"min_amount": ""}, "This field is required."),
        ({"code": "X" * 21}, "Field cannot be longer than 20 characters."),
        ({"fee_min": "3000"}, "the minimum fee is above the maximum fee"),
        ({"min_amount": "-1"}, "the min amount cannot be negative"),
        ({"grace_days": "-1"}, "the grace days cannot be negative"),
        ({"default_threshold_days": "0"}, "the days to default must be more than zero"),
    ],
)
def test_bad_settings_are_refused_in_words(app: Flask, changes: dict, words: str) -> None:
    reply = create(signed_in(app, "admin"), **changes)
    text = reply.get_data(as_text=True)
    assert reply.status_code == 200
    assert words in text
    assert "sqlite" not in text.lower() and "constraint" not in text.lower()
    assert product() is None
    assert (
        db.session.scalar(
            select(func.count()).select_from(AuditLog).where(AuditLog.action == "product.create")
        )
        == 0
    )


def test_a_second_product_with_the_same_code_is_refused_in_words(app: Flask) -> None:
    make_product("DEV", code="BIZ")
    reply = create(signed_in(app, "admin"), name="Another")
    text = reply.get_data(as_text=True)
    assert "Already exists." in text  # beside the code box
    assert "IntegrityError" not in text and "UNIQUE" not in text
    assert db.session.scalar(select(func.count()).select_from(LoanProduct)) == 1


def test_an_edit_is_audited_with_before_and_after(app: Flask) -> None:
    existing = make_product("DEV")
    client = signed_in(app, "admin")
    path = f"/admin/loanproduct/edit/?id={existing.id}"
    form = good_form(code=existing.code, name="Development Loan", annual_rate="14")
    reply = browse(
        client,
        path,
        "POST",
        data={"csrf_token": token(client, path), **form},
        follow_redirects=True,
    )
    assert reply.status_code == 200
    assert product(existing.code).annual_rate == 14
    row = db.session.scalar(select(AuditLog).where(AuditLog.action == "product.update"))
    assert row.before["annual_rate"] == "12.0000" and row.after["annual_rate"] == "14"


def test_an_edit_into_a_bad_state_is_refused_and_the_product_unchanged(app: Flask) -> None:
    existing = make_product("DEV")
    client = signed_in(app, "admin")
    path = f"/admin/loanproduct/edit/?id={existing.id}"
    form = good_form(code=existing.code, default_term="99")
    reply = browse(
        client,
        path,
        "POST",
        data={"csrf_token": token(client, path), **form},
        follow_redirects=True,
    )
    assert "the default term (99) must be between" in reply.get_data(as_text=True)
    assert product(existing.code).default_term == 12


@pytest.mark.parametrize("role", ["loan_officer", "branch_manager", "compliance", "auditor"])
def test_other_roles_read_products_but_cannot_change_them(app: Flask, role: str) -> None:
    existing = make_product("DEV")
    client = signed_in(app, role)
    listing = browse(client, "/admin/loanproduct/")
    assert listing.status_code == 200
    html = listing.get_data(as_text=True)
    assert "Development Loan" in html and "/admin/loanproduct/new/" not in html
    assert browse(client, "/admin/loanproduct/new/").status_code == 403
    edit = f"/admin/loanproduct/edit/?id={existing.id}"
    assert browse(client, edit).status_code == 403
    # A typed-in POST with a valid token is refused on the server too.
    login_token = CSRF.search(browse(client, "/admin/password").get_data(as_text=True)).group(1)
    reply = browse(
        client, "/admin/loanproduct/new/", "POST", data={"csrf_token": login_token, **good_form()}
    )
    assert reply.status_code == 403 and product() is None
    denied = db.session.scalar(select(AuditLog).where(AuditLog.action == "access.denied"))
    assert denied is not None and denied.after["needs"] == "product.manage"


def test_a_post_without_the_csrf_token_saves_nothing(app: Flask) -> None:
    client = signed_in(app, "admin")
    reply = browse(
        client, "/admin/loanproduct/new/", "POST", data=good_form(), follow_redirects=True
    )
    assert reply.status_code == 200
    assert product() is None
    assert "product.create" not in db.session.scalars(select(AuditLog.action)).all()
