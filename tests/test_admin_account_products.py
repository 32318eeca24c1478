"""Account products in the console: every role reads them, only admins change them, every
change goes through the audited service, the code, kind and suffix never change, and
refusals read in words. The member page lists each of the member's accounts with its
number and balance."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db
from app.models import AccountProduct, AuditLog
from app.services.members import member_buy_shares, member_deposit
from app.services.savings import account_product, member_product_account
from app.services.savings.products import PRODUCT_FIELDS
from tests.factories import make_member
from tests.helpers import browse as _browse
from tests.helpers import login, staff

CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's read transaction would hold the write lock
    return _browse(client, path, method, **kwargs)


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    db.session.commit()
    login(client, staff(role))
    return client


def edit_path(product: AccountProduct) -> str:
    return f"/admin/accountproduct/edit/?id={product.id}"


def form_of(product: AccountProduct, **changes: str) -> dict[str, str]:
    form = {
        "name": product.name,
        "name_sw": product.name_sw or "",
        "interest_rate": str(product.interest_rate),
        "interest_period": product.interest_period,
        "min_balance": str(product.min_balance),
        "daily_withdrawal_limit": ""
        if product.daily_withdrawal_limit is None
        else str(product.daily_withdrawal_limit),
        "withdrawal_fee": str(product.withdrawal_fee),
        "term_months": "" if product.term_months is None else str(product.term_months),
        "break_penalty": str(product.break_penalty),
    }
    if product.active:
        form["active"] = "y"
    form.update(changes)
    return {k: v for k, v in form.items() if v is not None}


def save(client: FlaskClient, product: AccountProduct, **changes: str):  # noqa: ANN201
    path = edit_path(product)
    page = browse(client, path)
    assert page.status_code == 200
    token = CSRF.search(page.get_data(as_text=True)).group(1)
    data = {"csrf_token": token, **form_of(product, **changes)}
    return browse(client, path, "POST", data=data, follow_redirects=True)


def fresh(code: str) -> AccountProduct:
    db.session.expire_all()
    return db.session.scalars(select(AccountProduct).where(AccountProduct.code == code)).one()


def audit_rows() -> list[AuditLog]:
    return list(
        db.session.scalars(
            select(AuditLog)
            .where(AuditLog.action == "account_product.update")
            .order_by(AuditLog.id)
        )
    )


def test_the_form_offers_exactly_what_the_service_may_change(app: Flask) -> None:
    from admin.savings import AccountProductForm

    with app.test_request_context():
        fields = {name for name in AccountProductForm().data if name != "csrf_token"}
    assert fields == set(PRODUCT_FIELDS)


def test_every_role_reads_the_products_in_words(app: Flask) -> None:
    for code in ("DEP", "SHR", "ORD"):
        account_product(code)
    listing = browse(signed_in(app, "loan_officer"), "/admin/accountproduct/")
    text = listing.get_data(as_text=True)
    assert listing.status_code == 200
    for words in ("Deposits", "Share capital", "Ordinary savings", "M000123S", "M000123SH"):
        assert words in text, words
    assert "Savings (withdrawable)" in text and "Monthly" in text
    # A loan officer sees no edit button and cannot open the form.
    assert "/admin/accountproduct/edit/" not in text


def test_an_admin_changes_the_savings_terms_and_the_change_is_audited(app: Flask) -> None:
    ordinary = account_product("ORD")
    client = signed_in(app, "admin")
    page = browse(client, edit_path(ordinary)).get_data(as_text=True)
    # Code, kind and suffix are shown, not offered as boxes.
    assert 'id="product-fixed"' in page and "M000123S" in page
    for fixed in ("code", "kind", "ref_suffix", "withdrawable"):
        assert f'name="{fixed}"' not in page, fixed

    reply = save(
        client,
        ordinary,
        interest_rate="4.5",
        withdrawal_fee="25",
        daily_withdrawal_limit="",
        name_sw="  ",
    )
    assert reply.status_code == 200
    assert "Record was successfully saved." in reply.get_data(as_text=True)
    saved = fresh("ORD")
    assert saved.interest_rate == Decimal("4.5")
    assert saved.withdrawal_fee == Decimal("25")
    assert saved.daily_withdrawal_limit is None  # blank: no daily limit
    assert saved.name_sw is None  # blank: members read the name
    (row,) = audit_rows()
    assert row.actor == "staff:admin@sacco.test" and row.object_id == "ORD"
    # Only what changed is in the audit row.
    assert set(row.after) == {
        "interest_rate",
        "withdrawal_fee",
        "daily_withdrawal_limit",
        "name_sw",
    }
    assert row.before["interest_rate"] == "3.0000" and row.after["interest_rate"] == "4.5"
    assert row.before["daily_withdrawal_limit"] == "70000.00"


def test_a_typed_in_code_kind_or_suffix_is_ignored(app: Flask) -> None:
    ordinary = account_product("ORD")
    client = signed_in(app, "admin")
    reply = save(client, ordinary, code="XXX", kind="shares", ref_suffix="Q", name="Akiba Plus")
    assert reply.status_code == 200
    saved = fresh("ORD")
    assert (saved.code, saved.kind, saved.ref_suffix, saved.name) == (
        "ORD",
        "savings",
        "S",
        "Akiba Plus",
    )


def test_saving_nothing_changed_writes_no_audit_row(app: Flask) -> None:
    ordinary = account_product("ORD")
    reply = save(signed_in(app, "admin"), ordinary)
    assert "Nothing was changed." in reply.get_data(as_text=True)
    assert audit_rows() == []


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"interest_rate": "-1"}, "a percentage from 0 to 100"),
        ({"interest_rate": "250"}, "a percentage from 0 to 100"),
        ({"min_balance": "-5"}, "0 or more"),
        ({"withdrawal_fee": ""}, "This field is required."),
        ({"name": ""}, "This field is required."),
        ({"interest_period": "daily"}, "Not a valid choice"),
        ({"name": "N" * 61}, "Field cannot be longer than 60 characters."),
    ],
)
def test_bad_terms_are_refused_in_words_and_nothing_changes(
    app: Flask, changes: dict[str, str], words: str
) -> None:
    ordinary = account_product("ORD")
    before = (ordinary.name, ordinary.interest_rate, ordinary.min_balance, ordinary.withdrawal_fee)
    reply = save(signed_in(app, "admin"), ordinary, **changes)
    text = reply.get_data(as_text=True)
    assert reply.status_code == 200 and words in text
    assert "constraint" not in text.lower() and "sqlite" not in text.lower()
    saved = fresh("ORD")
    assert (saved.name, saved.interest_rate, saved.min_balance, saved.withdrawal_fee) == before
    assert audit_rows() == []


@pytest.mark.parametrize("role", ["branch_manager", "loan_officer", "compliance"])
def test_only_admins_change_products(app: Flask, role: str) -> None:
    ordinary = account_product("ORD")
    client = signed_in(app, role)
    page = browse(client, edit_path(ordinary))
    assert page.status_code == 403
    assert "change savings and share products" in page.get_data(as_text=True)
    token = CSRF.search(browse(client, "/admin/login").get_data(as_text=True))
    data = {"csrf_token": token.group(1) if token else "", **form_of(ordinary, interest_rate="9")}
    reply = browse(client, edit_path(ordinary), "POST", data=data)
    assert reply.status_code == 403
    assert fresh("ORD").interest_rate == Decimal("3")
    denied = db.session.scalars(select(AuditLog).where(AuditLog.action == "access.denied")).all()
    assert denied and all(row.after["needs"] == "account_product.manage" for row in denied)


def test_no_one_creates_or_deletes_products_here(app: Flask) -> None:
    ordinary = account_product("ORD")
    client = signed_in(app, "admin")
    assert browse(client, "/admin/accountproduct/new/").status_code == 403
    token = CSRF.search(browse(client, "/admin/login").get_data(as_text=True)).group(1)
    reply = browse(
        client,
        "/admin/accountproduct/delete/",
        "POST",
        data={"id": ordinary.id, "csrf_token": token},
    )
    assert reply.status_code == 403
    assert fresh("ORD") is not None


def test_the_member_page_lists_each_account_with_its_number_and_balance(app: Flask) -> None:
    member = make_member(savings=2500)
    member_buy_shares(
        member_id=member.id, amount=1000, reference="SH-1", value_date=date(2026, 1, 2)
    )
    ordinary = member_product_account(member, account_product("ORD"))
    db.session.commit()
    no, member_id, ordinary_code = member.member_no, member.id, ordinary.code
    page = browse(signed_in(app, "loan_officer"), f"/admin/member/details/?id={member_id}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    block = text[text.index('id="member-accounts"') :]
    block = block[: block.index("</section>")]
    rows = re.findall(r'<tr id="account-([^"]+)">(.*?)</tr>', block, re.S)
    cells = {
        number: [
            re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for number, row in rows
    }
    # Deposits first, then withdrawable savings, then share capital.
    assert [number for number, _ in rows] == [no, f"{no}S", f"{no}SH"]
    assert cells[no][:3] == ["Deposits", no, "1,500.00"]  # 2,500 less the 1,000 of shares
    assert cells[f"{no}S"][1:3] == [f"{no}S", "0.00"] and "withdrawable" in cells[f"{no}S"][0]
    assert cells[f"{no}SH"][:3] == ["Share capital", f"{no}SH", "1,000.00"]
    assert ordinary_code in block  # the ledger account, linked
    assert "format=pdf" in block  # the statement of every account


def test_a_deposit_shows_on_the_member_page_at_once(app: Flask) -> None:
    member = make_member()
    member_deposit(member_id=member.id, amount=700, reference="D-1", value_date=date(2026, 2, 1))
    db.session.commit()
    no, member_id = member.member_no, member.id
    text = browse(signed_in(app, "auditor"), f"/admin/member/details/?id={member_id}").get_data(
        as_text=True
    )
    assert re.search(rf'<tr id="account-{no}">.*?700\.00', text, re.S)


def test_the_dashboard_totals_deposits_savings_and_share_capital(app: Flask) -> None:
    from app.services.ledger import credit, debit, journal_post, money_in_account

    member = make_member(savings=5000)
    member_buy_shares(
        member_id=member.id, amount=1200, reference="SH-2", value_date=date(2026, 1, 2)
    )
    ordinary = member_product_account(member, account_product("ORD"))
    journal_post(
        kind="deposit",
        lines=[debit(money_in_account("mpesa"), Decimal(450)), credit(ordinary, Decimal(450))],
        value_date=date(2026, 1, 3),
        idempotency_key="test:ord-1",
        member_id=member.id,
    )
    db.session.commit()
    page = browse(signed_in(app, "auditor"), "/admin/").get_data(as_text=True)
    card = re.search(r'id="fig-savings">(.*?)</div>\s*</div>', page, re.S)
    assert card
    words = " ".join(re.sub(r"<[^>]+>", " ", card.group(1)).split())
    assert words == "Deposits KES 3,800.00 Savings KES 450.00 · share capital KES 1,200.00"


def test_a_fixed_deposit_products_term_and_penalty_are_changed_by_an_admin(
    app: Flask, client: FlaskClient
) -> None:
    account_product("FIX")
    db.session.commit()
    login(client, staff("admin"))
    page = save(client, fresh("FIX"), term_months="6", break_penalty="25")
    assert "Record was successfully saved." in page.get_data(as_text=True)
    saved = fresh("FIX")
    assert (saved.term_months, saved.break_penalty) == (6, Decimal("25.00"))
    bad = save(client, saved, break_penalty="120")
    assert "0 to 100" in bad.get_data(as_text=True)
    assert fresh("FIX").break_penalty == Decimal("25.00")
