"""Guarantees and collateral in the console, as a browser sends them: the loan page's
security block for every role, asking a guarantor for the member, recording and
discharging collateral (audited; refused for the wrong role with 403 and for bad input in
words, with nothing written), the member page's guarantees given and received, the
applications queue's cover, the desk's guarantors to call, the two reports on screen and
as CSV, and the product form's security settings."""

from __future__ import annotations

import csv
import html
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.clock import business_today
from app.extensions import db
from app.models import AuditLog, Collateral, Guarantee, Loan, LoanProduct, Member, SmsMessage
from app.services.guarantees import guarantee_accept, guarantee_request
from app.services.loans import loan_apply, loan_approve, loan_disburse, loan_update_arrears
from tests.helpers import browse as _browse
from tests.helpers import login, post_form, staff
from tests.loan_factories import make_borrower, make_product, make_staff

D = Decimal
EVERYONE = ["loan_officer", "branch_manager", "compliance", "auditor", "admin"]


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's read transaction would hold the write lock
    return _browse(client, path, method, **kwargs)


def post(client: FlaskClient, path: str, data: dict[str, object]):  # noqa: ANN201
    db.session.commit()
    return post_form(client, path, data)


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    db.session.commit()
    login(client, staff(role))
    return client


def text(reply: object) -> str:
    return html.unescape(reply.get_data(as_text=True))  # type: ignore[attr-defined]


def secured_product(**changes: object) -> LoanProduct:
    """Covered 100% above the borrower's own free deposits by at least one guarantor;
    collateral counts at a 40% haircut."""
    rule = dict(
        code="SEC",
        name="Development",
        min_guarantors=1,
        guarantee_cover=D("100"),
        collateral_allowed=True,
        collateral_haircut=D("40"),
        default_threshold_days=30,
    )
    return make_product("V1", **{**rule, **changes})


def application(product: LoanProduct | None = None, amount: int = 25000) -> Loan:
    """An application of 25,000 by a borrower with 10,000 of deposits: 15,000 to cover."""
    product = product or secured_product()
    borrower = make_borrower(savings=10000)
    return loan_apply(
        member_id=borrower.id, product_id=product.id, amount=amount, as_of=business_today()
    )


def pledged(loan: Loan, amount: int = 15000, savings: int = 20000) -> Member:
    """A guarantor who accepted `amount` of the loan."""
    guarantor = make_borrower(savings=savings)
    asked = guarantee_request(
        loan_id=loan.id, guarantor_id=guarantor.id, amount=amount, actor="member:test"
    )
    guarantee_accept(guarantee_id=asked.id, guarantor_id=guarantor.id, via="sms")
    return guarantor


def page(client: FlaskClient, loan_id: int) -> str:
    reply = browse(client, f"/admin/loan/details/?id={loan_id}")
    assert reply.status_code == 200
    return text(reply)


def count(model: type) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def audits(action: str) -> list[AuditLog]:
    return list(db.session.scalars(select(AuditLog).where(AuditLog.action == action)))


COLLATERAL = {
    "kind": "land_title",
    "description": "LR 209/1234 Kiambu",
    "owner_name": "Jane Wanjiru",
    "market_value": "900000",
    "forced_sale_value": "30000",
    "valuer": "Regent Valuers",
}


def collateral_form(**changes: str) -> dict[str, object]:
    return {
        **COLLATERAL,
        "valued_on": (business_today() - timedelta(days=2)).isoformat(),
        **changes,
    }


# -- the loan page ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", EVERYONE)
def test_the_security_block_shows_cover_guarantees_and_collateral_to_every_role(
    app: Flask, role: str
) -> None:
    loan = application()
    guarantor = pledged(loan, amount=9000)
    db.session.add(
        Collateral(
            loan_id=loan.id,
            kind="log_book",
            description="KDA 123X Probox",
            owner_name="Jane",
            market_value=D("500000"),
            forced_sale_value=D("5000"),
            valued_on=business_today(),
            valuer="Regent",
            recorded_by="staff:x",
        )
    )
    db.session.commit()
    shown = page(signed_in(app, role), loan.id)
    assert 'id="loan-security"' in shown
    # 15,000 required; 9,000 guaranteed and 3,000 of collateral (5,000 less 40%).
    assert "KES 15,000.00" in shown and "KES 12,000.00" in shown
    assert 'Shortfall</dt><dd class="col-sm-9 text-danger font-weight-bold">KES 3,000.00' in (shown)
    assert guarantor.name in shown and "by sms" in shown
    assert "KDA 123X Probox" in shown and "Vehicle log book" in shown
    may_manage = role in ("loan_officer", "branch_manager")
    assert ('id="ask-guarantor"' in shown) is may_manage
    assert ('id="record-collateral"' in shown) is may_manage
    # An application's lien may be let go, by a branch manager only.
    assert ("Discharge</button>" in shown) is (role == "branch_manager")


def test_an_unsecured_loan_has_no_security_block(app: Flask) -> None:
    product = make_product("V1", code="INS", name="Instant")
    borrower = make_borrower(savings=10000)
    loan = loan_apply(
        member_id=borrower.id, product_id=product.id, amount=5000, as_of=business_today()
    )
    assert 'id="loan-security"' not in page(signed_in(app, "loan_officer"), loan.id)


def test_an_officer_asks_a_guarantor_for_the_member_by_number_or_phone(app: Flask) -> None:
    loan = application()
    first, second = make_borrower(savings=20000), make_borrower(savings=20000)
    client = signed_in(app, "loan_officer")
    reply = post(
        client,
        f"/admin/guarantees/ask/{loan.id}",
        {"guarantor": first.member_no, "amount": "10000"},
    )
    assert reply.status_code == 302 and reply.location.endswith("#loan-security")
    shown = page(client, loan.id)
    assert f"{first.name} ({first.member_no}) is asked by SMS to guarantee KES 10,000.00" in shown
    post(
        client,
        f"/admin/guarantees/ask/{loan.id}",
        {"guarantor": "0" + second.phone[3:], "amount": "5000"},
    )
    asked = db.session.scalars(select(Guarantee).order_by(Guarantee.id)).all()
    assert [(g.guarantor_id, g.amount, g.status) for g in asked] == [
        (first.id, D("10000.00"), "requested"),
        (second.id, D("5000.00"), "requested"),
    ]
    assert {g.requested_by for g in asked} == {"staff:loan.officer@sacco.test"}
    texted = db.session.scalars(
        select(SmsMessage.phone).where(SmsMessage.template == "guarantee_request")
    ).all()
    assert sorted(texted) == sorted([first.phone, second.phone])
    rows = audits("guarantee.request")
    assert len(rows) == 2 and rows[0].actor == "staff:loan.officer@sacco.test"


@pytest.mark.parametrize(
    ("form", "words"),
    [
        ({"guarantor": "M999999", "amount": "1000"}, "no active member with the number or phone"),
        ({"guarantor": "", "amount": "1000"}, "no active member with the number or phone"),
        ({"amount": "abc"}, "Guarantor not asked: amount is not a number."),
        ({"amount": "0"}, "Guarantor not asked: amount must be more than zero."),
        ({"amount": "30000"}, "a guarantee cannot be more than the loan (KES 25,000)"),
        ({"self": "1", "amount": "1000"}, "a member cannot guarantee their own loan"),
    ],
)
def test_a_bad_request_is_refused_in_words_and_nobody_is_asked(
    app: Flask, form: dict, words: str
) -> None:
    loan = application()
    guarantor = make_borrower(savings=20000)
    data = {"guarantor": guarantor.member_no, **form}
    if data.pop("self", None):
        data["guarantor"] = loan.member.member_no
    client = signed_in(app, "branch_manager")
    post(client, f"/admin/guarantees/ask/{loan.id}", data)
    assert words in page(client, loan.id)
    assert count(Guarantee) == 0 and audits("guarantee.request") == []


@pytest.mark.parametrize("role", ["compliance", "auditor", "admin"])
def test_roles_without_the_permission_cannot_ask_record_or_discharge(app: Flask, role: str) -> None:
    loan = application()
    guarantor = make_borrower(savings=20000)
    client = signed_in(app, role)
    reply = post(
        client,
        f"/admin/guarantees/ask/{loan.id}",
        {"guarantor": guarantor.member_no, "amount": "1000"},
    )
    assert reply.status_code == 403
    assert "record collateral or ask guarantors" in text(reply)
    assert (
        post(client, f"/admin/guarantees/collateral/{loan.id}", collateral_form()).status_code
        == 403
    )
    assert count(Guarantee) == 0 and count(Collateral) == 0
    denied = audits("access.denied")
    assert [row.after["needs"] for row in denied] == ["guarantee.manage", "guarantee.manage"]


def test_without_the_csrf_token_nothing_is_asked_or_recorded(app: Flask) -> None:
    loan = application()
    client = signed_in(app, "loan_officer")
    reply = browse(
        client, f"/admin/guarantees/collateral/{loan.id}", "POST", data=collateral_form()
    )
    assert reply.status_code == 302
    assert "The form expired" in page(client, loan.id)
    assert count(Collateral) == 0


def test_collateral_is_recorded_and_discharged_through_the_console_audited(app: Flask) -> None:
    loan = application()
    officer = signed_in(app, "loan_officer")
    reply = post(officer, f"/admin/guarantees/collateral/{loan.id}", collateral_form())
    assert reply.status_code == 302
    shown = page(officer, loan.id)
    assert "Recorded land title 'LR 209/1234 Kiambu', lien registered." in shown
    [collateral] = db.session.scalars(select(Collateral)).all()
    assert (collateral.forced_sale_value, collateral.lien_status) == (D("30000.00"), "registered")
    [row] = audits("collateral.record")
    assert row.actor == "staff:loan.officer@sacco.test" and row.object_id == loan.loan_no
    # 30,000 less 40% counts 18,000: the 15,000 asked is covered, but one guarantor is due.
    assert 'id="collateral-' in shown and "18,000.00" in shown
    assert f'id="valuation-upload-{collateral.id}"' in shown  # the report goes on its row

    # An officer may record but not discharge: 403 and the lien stays.
    reply = post(officer, f"/admin/guarantees/discharge/{collateral.id}", {"reason": "x"})
    assert reply.status_code == 403 and "discharge collateral" in text(reply)
    manager = signed_in(app, "branch_manager")
    post(manager, f"/admin/guarantees/discharge/{collateral.id}", {"reason": ""})
    assert "Lien not discharged: the reason is needed." in page(manager, loan.id)
    db.session.expire_all()
    assert db.session.get(Collateral, collateral.id).lien_status == "registered"

    post(manager, f"/admin/guarantees/discharge/{collateral.id}", {"reason": "wrong title"})
    shown = page(manager, loan.id)
    assert "The lien on 'LR 209/1234 Kiambu' is discharged." in shown
    db.session.expire_all()
    assert db.session.get(Collateral, collateral.id).lien_status == "discharged"
    [row] = audits("collateral.discharge")
    assert row.actor == "staff:branch.manager@sacco.test" and row.note == "wrong title"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"kind": "cow"}, "the kind is one of"),
        ({"market_value": "lots"}, "the market value is not a number"),
        (
            {"forced_sale_value": "950000"},
            "the forced-sale value (KES 950,000.00) cannot be more than the market value",
        ),
        ({"valued_on": "2026-02-30"}, "the valuation date must be a date like 2026-01-31"),
        ({"valued_on": ""}, "the valuation date is needed"),
        ({"valuer": "  "}, "the valuer is needed"),
    ],
)
def test_bad_collateral_is_refused_in_words_and_nothing_is_written(
    app: Flask, changes: dict, words: str
) -> None:
    loan = application()
    client = signed_in(app, "branch_manager")
    post(client, f"/admin/guarantees/collateral/{loan.id}", collateral_form(**changes))
    assert f"Collateral not recorded: {words}" in page(client, loan.id)
    assert count(Collateral) == 0 and audits("collateral.record") == []


def test_a_live_loans_lien_cannot_be_discharged(app: Flask) -> None:
    loan = application()
    pledged(loan)
    collateral = Collateral(
        loan_id=loan.id,
        kind="chattel",
        description="Posho mill",
        owner_name="J",
        market_value=D("1000"),
        forced_sale_value=D("500"),
        valued_on=business_today(),
        valuer="V",
        recorded_by="staff:x",
    )
    db.session.add(collateral)
    db.session.commit()
    loan_approve(loan_id=loan.id, staff=make_staff("branch_manager"))
    loan_disburse(loan_id=loan.id, reference="B2CSEC77", value_date=business_today())
    client = signed_in(app, "branch_manager")
    shown = page(client, loan.id)
    assert f'id="discharge-{collateral.id}"' not in shown  # no button for a live loan
    post(client, f"/admin/guarantees/discharge/{collateral.id}", {"reason": "asked"})
    assert "the lien stays until the loan ends" in page(client, loan.id)
    assert audits("collateral.discharge") == []


# -- the member page, the queue, the desk ----------------------------------------------------


@pytest.mark.parametrize("role", EVERYONE)
def test_the_member_page_shows_guarantees_given_and_received_and_free_deposits(
    app: Flask, role: str
) -> None:
    loan = application()
    guarantor = pledged(loan, amount=15000, savings=20000)
    other = application(loan.product, amount=20000)
    guarantee_request(loan_id=other.id, guarantor_id=guarantor.id, amount=4000, actor="member:x")
    client = signed_in(app, role)
    reply = browse(client, f"/admin/member/details/?id={guarantor.id}")
    assert reply.status_code == 200
    shown = text(reply)
    assert "Guarantees given" in shown and loan.loan_no in shown
    assert "waiting for their answer" in shown and other.loan_no in shown
    # 20,000 of deposits, 15,000 held for the loan they guarantee: 5,000 free.
    assert "held for loans they guarantee 15,000.00" in shown
    assert "free KES 5,000.00" in shown

    borrower = text(browse(client, f"/admin/member/details/?id={loan.member_id}"))
    received = borrower.split("Guarantees received")[1]
    assert guarantor.name in received and "accepted" in received and "15,000.00" in received


@pytest.mark.parametrize("role", EVERYONE)
def test_the_queue_shows_cover_each_answer_and_free_deposits(app: Flask, role: str) -> None:
    loan = application()
    guarantor = pledged(loan, amount=9000, savings=20000)
    waiting = make_borrower(savings=3000)
    guarantee_request(loan_id=loan.id, guarantor_id=waiting.id, amount=6000, actor="member:x")
    shown = text(browse(signed_in(app, role), "/admin/applications/"))
    block = shown.split(f'id="security-{loan.id}"')[1].split("</div>")[0]
    assert "cover 9,000.00 of 15,000.00, 1 of 1 guarantors" in block
    assert f"{guarantor.name}: accepted by sms, 9,000.00; free deposits 11,000.00" in block
    assert f"{waiting.name}: requested, 6,000.00; free deposits 3,000.00" in block


def test_the_desk_shows_a_defaulted_loans_guarantors_to_call(app: Flask) -> None:
    start = business_today() - timedelta(days=75)
    product = secured_product(code="SED")
    borrower = make_borrower(savings=10000)
    loan = loan_apply(
        member_id=borrower.id, product_id=product.id, amount=25000, term=1, as_of=start
    )
    guarantor = pledged(loan, amount=15000)
    loan_approve(loan_id=loan.id, staff=make_staff("branch_manager"))
    loan_disburse(loan_id=loan.id, reference="B2CSED01", value_date=start)
    loan_update_arrears(loan_id=loan.id, as_of=business_today())
    db.session.expire_all()
    assert db.session.get(Loan, loan.id).in_default
    shown = text(browse(signed_in(app, "branch_manager"), f"/admin/desk/loan/{loan.id}"))
    block = shown.split('id="desk-guarantors"')[1].split("</section>")[0]
    assert guarantor.name in block and guarantor.phone in block
    assert "15,000.00" in block  # nothing repaid: the whole pledge is exposed


def test_a_loan_not_in_default_lists_no_guarantors_to_call_on_the_desk(app: Flask) -> None:
    loan = application()
    pledged(loan)
    loan_approve(loan_id=loan.id, staff=make_staff("branch_manager"))
    loan_disburse(loan_id=loan.id, reference="B2CSEC09", value_date=business_today())
    shown = text(browse(signed_in(app, "branch_manager"), f"/admin/desk/loan/{loan.id}"))
    assert 'id="desk-guarantors"' not in shown and "collections" in shown


# -- the reports ------------------------------------------------------------------------------


def test_exposure_by_guarantor_on_screen_and_as_csv(app: Flask) -> None:
    one = application()
    two = application(one.product, amount=20000)
    guarantor = pledged(one, amount=15000, savings=40000)
    asked = guarantee_request(loan_id=two.id, guarantor_id=guarantor.id, amount=10000, actor="m")
    guarantee_accept(guarantee_id=asked.id, guarantor_id=guarantor.id, via="ussd")
    small = pledged(two, amount=1000, savings=5000)
    client = signed_in(app, "auditor")
    shown = text(browse(client, "/admin/reports/guarantor-exposure"))
    assert "Exposure by guarantor" in shown
    assert shown.index(guarantor.name) < shown.index(small.name)  # largest first
    assert "25,000.00" in shown and "26,000.00" in shown  # the guarantor's and the total
    reply = browse(client, "/admin/reports/guarantor-exposure?format=csv")
    assert reply.status_code == 200 and reply.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(reply.get_data(as_text=True).lstrip("\ufeff"))))
    assert [guarantor.member_no, guarantor.name, guarantor.phone, "2", "25000.00", "25000.00"] == (
        rows[5][:6]
    )
    assert rows[-1][:6] == ["Total", "", "", "3", "26000.00", "26000.00"]


def test_loans_below_cover_on_screen_and_as_csv(app: Flask) -> None:
    short = application()
    pledged(short, amount=9000)
    covered = application(short.product)
    pledged(covered, amount=15000)
    client = signed_in(app, "compliance")
    shown = text(browse(client, "/admin/reports/below-cover"))
    assert short.loan_no in shown and covered.loan_no not in shown
    reply = browse(client, "/admin/reports/below-cover?format=csv")
    rows = list(csv.reader(io.StringIO(reply.get_data(as_text=True).lstrip("\ufeff"))))
    [row] = [r for r in rows if r and r[0] == short.loan_no]
    assert row[1:] == [
        "submitted",
        short.member.name,
        "Development",
        "25000.00",
        "15000.00",
        "9000.00",
        "6000.00",
        "1 of 1",
        "0",
    ]
    assert "Exposure by guarantor" in text(browse(client, "/admin/reports/"))


# -- the product form -------------------------------------------------------------------------


def _product_form(existing: LoanProduct, **changes: str) -> dict[str, str]:
    form = {
        "code": existing.code,
        "name": existing.name,
        "interest_method": existing.interest_method,
        "amortization": existing.amortization,
        "annual_rate": "12",
        "frequency": existing.frequency,
        "default_term": str(existing.default_term),
        "min_term": str(existing.min_term),
        "max_term": str(existing.max_term),
        "min_amount": "1000",
        "max_amount": "500000",
        "fee_type": "none",
        "penalty_type": "none",
        "grace_days": "3",
        "default_threshold_days": "30",
        "limit_multiple": "3",
        "min_share_capital": "0",
        "min_membership_days": "0",
        "active": "y",
        "min_guarantors": "2",
        "guarantee_cover": "100",
        "collateral_allowed": "y",
        "collateral_haircut": "35",
        "guarantee_days": "10",
    }
    form.update(changes)
    return form


def _edit(client: FlaskClient, existing: LoanProduct, **changes: str) -> str:
    path = f"/admin/loanproduct/edit/?id={existing.id}"
    token = text(browse(client, path)).split('name="csrf_token" type="hidden" value="')[1]
    data = {"csrf_token": token.split('"')[0], **_product_form(existing, **changes)}
    return text(browse(client, path, "POST", data=data, follow_redirects=True))


def test_an_admin_sets_how_a_product_is_secured(app: Flask) -> None:
    existing = make_product("V1", code="DEV2", name="Development")
    client = signed_in(app, "admin")
    form = text(browse(client, f"/admin/loanproduct/edit/?id={existing.id}"))
    assert "Days a guarantor has to answer a request" in form
    _edit(client, existing)
    db.session.expire_all()
    saved = db.session.get(LoanProduct, existing.id)
    assert (
        saved.min_guarantors,
        saved.guarantee_cover,
        saved.collateral_allowed,
        saved.collateral_haircut,
        saved.guarantee_days,
    ) == (2, D("100"), True, D("35"), 10)
    row = db.session.scalar(select(AuditLog).where(AuditLog.action == "product.update"))
    assert row.after["min_guarantors"] == 2 and row.after["guarantee_days"] == 10


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        (
            {"min_guarantors": "-1"},
            "the minimum number of guarantors is a whole number from 0 to 20",
        ),
        ({"guarantee_cover": "120"}, "the guarantee cover is a percentage from 0 to 100"),
        ({"collateral_haircut": "-5"}, "the guarantee haircut is a percentage from 0 to 100"),
        ({"guarantee_days": "0"}, "guarantors are given from 1 to 90 days to answer"),
        ({"guarantee_days": "365"}, "guarantors are given from 1 to 90 days to answer"),
    ],
)
def test_bad_security_settings_are_refused_in_words(app: Flask, changes: dict, words: str) -> None:
    existing = make_product("V1", code="DEV3", name="Development")
    shown = _edit(signed_in(app, "admin"), existing, **changes)
    assert words in shown and "constraint" not in shown.lower()
    db.session.expire_all()
    saved = db.session.get(LoanProduct, existing.id)
    assert (saved.min_guarantors, saved.guarantee_days) == (0, 7)


@pytest.fixture
def store(app: Flask, tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> object:
    """Documents in the test's own folder (the app's storage interface takes any store)."""
    from pathlib import Path

    from app.services.storage import LocalStorage

    local = LocalStorage(Path(str(tmp_path)) / "documents")
    monkeypatch.setitem(app.extensions, "document_storage", local)
    return local


def test_the_valuation_report_is_kept_on_its_assets_row(app: Flask, store: object) -> None:
    from app.models import Document

    loan = application()
    client = signed_in(app, "loan_officer")
    post(client, f"/admin/guarantees/collateral/{loan.id}", collateral_form())
    [collateral] = db.session.scalars(select(Collateral)).all()
    shown = page(client, loan.id)
    form = shown.split(f'id="valuation-upload-{collateral.id}"')[1].split("</form>")[0]
    assert f'name="kind" value="valuation_{collateral.id}"' in form
    reply = post(
        client,
        "/admin/documents/upload",
        {
            "owner_type": "loan",
            "owner_id": str(loan.id),
            "kind": f"valuation_{collateral.id}",
            "next": f"/admin/loan/details/?id={loan.id}",
            "file": (io.BytesIO(b"%PDF-1.4 valuation"), "valuation.pdf", "application/pdf"),
        },
    )
    assert reply.status_code == 302
    [document] = db.session.scalars(select(Document)).all()
    assert (document.owner_type, document.kind) == ("loan", f"valuation_{collateral.id}")
    row = page(client, loan.id).split(f'id="collateral-{collateral.id}"')[1].split("</tr>")[0]
    assert "valuation.pdf" in row and "v1" in row
    assert audits("document.upload")[0].after["kind"] == f"valuation_{collateral.id}"


def test_a_guarantor_who_left_or_defaulted_is_flagged_on_the_loans_they_guarantee(
    app: Flask,
) -> None:
    loan = application()
    leaving, defaulting = pledged(loan, 8000), pledged(loan, 7000)
    # One leaves the SACCO; the other's own loan falls into default.
    leaving.status = "exited"
    own = loan_apply(
        member_id=defaulting.id,
        product_id=make_product("V1", code="INS", name="Instant").id,
        amount=1000,
        as_of=business_today() - timedelta(days=90),
    )
    loan_approve(loan_id=own.id, staff=make_staff("branch_manager"))
    loan_disburse(
        loan_id=own.id, reference="B2COWNDEF", value_date=business_today() - timedelta(days=90)
    )
    loan_update_arrears(loan_id=own.id, as_of=business_today())
    db.session.commit()
    assert db.session.get(Loan, own.id).in_default

    shown = page(signed_in(app, "loan_officer"), loan.id)
    assert "membership exited" in shown
    assert f"own loan {own.loan_no} in default" in shown
    assert shown.count("guarantor-standing") == 2
