"""The console as staff read it: who is signed in, Kenyan times, balances with the sign a
person expects, a member found by the phone as typed, an approval's note kept."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from flask import Flask
from sqlalchemy import select

from app.extensions import db
from app.models import JournalEntry, Loan
from app.services.loans import loan_apply
from tests.factories import make_member
from tests.helpers import browse, login, staff
from tests.loan_factories import make_borrower, make_product


def signed_in(app: Flask, role: str = "loan_officer"):  # noqa: ANN201
    client = app.test_client()
    db.session.commit()
    login(client, staff(role))
    return client


def page(client, path: str) -> str:  # noqa: ANN001
    db.session.commit()
    response = browse(client, path)
    assert response.status_code == 200, (path, response.status_code)
    return response.get_data(as_text=True)


def test_every_page_says_who_is_signed_in_and_offers_sign_out(app: Flask) -> None:
    client = signed_in(app, "branch_manager")
    for path in ("/admin/", "/admin/member/", "/admin/loan/"):
        html = page(client, path)
        assert "Signed in as branch.manager@sacco.test (branch manager)" in html
        assert 'action="/admin/logout"' in html


def test_a_member_is_found_by_the_phone_as_a_person_types_it(app: Flask) -> None:
    make_member(phone="0722334455", name="Otieno Ochieng")
    make_member(phone="0733445566", name="Akinyi Atieno")
    client = signed_in(app)
    for typed in ("0722334455", "+254722334455", "254722334455", "722334455"):
        html = page(client, f"/admin/member/?search={typed.replace('+', '%2B')}")
        assert "Otieno Ochieng" in html and "Akinyi Atieno" not in html, typed
    assert "Akinyi Atieno" in page(client, "/admin/member/?search=Akinyi")


def test_savings_read_positive_and_times_are_kenyan_to_the_minute(app: Flask) -> None:
    member = make_member(savings=Decimal("12345.5"))
    entry = db.session.scalar(select(JournalEntry))
    entry.posted_at = datetime(2026, 11, 21, 20, 15, 42, 123456, tzinfo=UTC)
    db.session.commit()
    client = signed_in(app)
    accounts = page(client, f"/admin/account/?search=SAV-{member.member_no}")
    assert "12,345.50" in accounts and "-12,345.50" not in accounts
    journal = page(client, "/admin/journalentry/")
    assert "2026-11-21 23:15" in journal  # 20:15 UTC is 23:15 in Nairobi
    assert "20:15:42.123456" not in journal


def test_the_approval_note_is_stored_as_the_decision_reason(app: Flask) -> None:
    import re

    member = make_borrower(savings=100000)
    product = make_product("DEV", min_membership_days=0, min_share_capital=Decimal("0"))
    loan_id = loan_apply(
        member_id=member.id, product_id=product.id, amount=50000, term=12, as_of=date(2026, 3, 2)
    ).id
    client = signed_in(app, "branch_manager")
    html = page(client, f"/admin/loan/details/?id={loan_id}")
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    db.session.commit()
    browse(
        client,
        f"/admin/loan/decide/{loan_id}",
        "POST",
        data={"csrf_token": token, "action": "approve", "reason": "good repayment history"},
    )
    db.session.expire_all()
    assert db.session.get(Loan, loan_id).decision_reason == "good repayment history"


def test_a_journal_entry_shows_its_lines_as_debit_and_credit(app: Flask) -> None:
    make_member(savings=Decimal("2500"))
    entry_id = db.session.scalar(select(JournalEntry.id))
    html = page(signed_in(app), f"/admin/journalentry/details/?id={entry_id}")
    assert "GL-MPESA-CLEARING" in html and "debit" in html and "credit" in html
    assert html.count("2,500.00") >= 2  # one debit, one credit


def test_the_sms_outbox_lists_readable_columns(app: Flask) -> None:
    make_member(savings=Decimal("100"))  # a deposit receipt SMS
    html = page(signed_in(app), "/admin/smsmessage/")
    assert "Deposit of KES 100.00" in html
    assert "idempotency" not in html.lower() and "provider_message_id" not in html.lower()


def test_a_product_with_a_default_term_above_the_maximum_is_refused_in_words(
    app: Flask,
) -> None:
    import re

    from app.models import LoanProduct

    client = signed_in(app, "admin")
    html = page(client, "/admin/loanproduct/new/")
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    form = {
        "csrf_token": token,
        "code": "BAD",
        "name": "Bad",
        "interest_method": "declining",
        "amortization": "equal_installments",
        "annual_rate": "12",
        "frequency": "monthly",
        "default_term": "40",
        "min_term": "1",
        "max_term": "36",
        "min_amount": "100",
        "fee_type": "none",
        "fee_value": "0",
        "penalty_type": "none",
        "penalty_value": "0",
        "grace_days": "3",
        "default_threshold_days": "30",
        "limit_multiple": "3",
        "min_share_capital": "0",
        "min_membership_days": "0",
        "active": "y",
    }
    db.session.commit()
    reply = browse(client, "/admin/loanproduct/new/", "POST", data=form, follow_redirects=True)
    text = reply.get_data(as_text=True)
    assert reply.status_code == 200
    assert "the default term (40) must be between the minimum (1) and the maximum (36)" in text
    assert db.session.scalar(select(LoanProduct).where(LoanProduct.code == "BAD")) is None
