"""The member page as staff use it: everything about a member in one place, its buttons
for the roles that may use them, and registering and editing members through services."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.cli.runtime import make_worker
from app.clock import business_today
from app.extensions import db
from app.models import AuditLog, LoanProduct, Member, MpesaRequest, SmsMessage, UssdEvent
from app.services.members import member_check_pin, member_set_pin
from tests.factories import make_member
from tests.helpers import Phone, c2b_body, login, sent_sms, staff
from tests.helpers import browse as _browse
from tests.loan_factories import make_borrower, make_loan, make_product

TOKEN = "dev-callback-token"  # noqa: S105 - the test settings' CALLBACK_TOKEN
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    # End the test's own transaction first: on SQLite it holds the write lock the
    # request's session needs.
    db.session.commit()
    return _browse(client, path, method, **kwargs)


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    db.session.commit()
    login(client, staff(role))
    return client


def member_page(client: FlaskClient, member_id: int) -> str:
    response = browse(client, f"/admin/member/details/?id={member_id}")
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def act(client: FlaskClient, member_id: int, action: str, **fields: str):  # noqa: ANN201
    """A button of the member page, posted as the browser posts it (the page's token)."""
    match = CSRF.search(member_page(client, member_id))
    assert match, "no CSRF token on the member page"
    return browse(
        client,
        f"/admin/member/act/{member_id}",
        "POST",
        data={"csrf_token": match.group(1), "action": action, **fields},
        follow_redirects=True,
    )


def audit(action: str) -> list[AuditLog]:
    db.session.expire_all()
    return list(
        db.session.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id))
    )


def prompts() -> list[MpesaRequest]:
    return list(db.session.scalars(select(MpesaRequest).where(MpesaRequest.kind == "stk")))


def interest_free_loan(member: Member, days_ago: int = 45):  # noqa: ANN201
    """12,000 over 12 months at 0%: 1,000 a month, so every figure is worked by hand."""
    product = db.session.scalar(select(LoanProduct).where(LoanProduct.code == "ZERO"))
    if product is None:
        product = make_product("V1", code="ZERO", annual_rate=Decimal("0"))
    on = business_today() - timedelta(days=days_ago)
    return make_loan(product=product, amount=12000, on=on, member=member)


def paybill(client: FlaskClient, account: str, amount: str, receipt: str) -> None:
    """Money in as Safaricom confirms it, processed by the payments worker."""
    db.session.commit()
    reply = client.post(
        f"/payments/{TOKEN}/c2b/confirmation",
        json=c2b_body(receipt, amount=amount, account=account),
    )
    assert reply.status_code == 200
    make_worker(("payments",)).work(burst=True)
    db.session.remove()


def test_the_member_page_shows_balances_loans_payments_sms_and_sessions(app: Flask) -> None:
    member = make_borrower(savings=5000, shares=2000)
    member_id, member_no, phone = member.id, member.member_no, member.phone
    loan = interest_free_loan(member)
    loan_id, loan_no = loan.id, loan.loan_no
    client = app.test_client()
    paybill(client, loan_no, "700", "RKT0000001")  # repays 700 of the first 1,000
    paybill(client, member_no, "250", "RKT0000002")  # a deposit to savings
    db.session.add(
        UssdEvent(
            session_id="ATUid_1",
            phone=f"+{phone}",
            status="Success",
            hops=3,
            duration_ms=12500,
            last_response="END Your balance",
            received_at=datetime(2026, 11, 21, 7, 5, tzinfo=UTC),
        )
    )
    db.session.commit()
    login(client, staff("loan_officer"))

    html = member_page(client, member_id)
    # Savings: 5,000 + 2,000 deposited, 2,000 bought shares, 250 deposited.
    assert "KES 5,250.00" in html
    assert "KES 2,000.00" in html
    # The loan: 12,000 owed, 700 repaid.
    assert "KES 11,300.00" in html
    loans = html[html.index('id="loans"') :]
    assert f'href="/admin/loan/details/?id={loan_id}"' in loans
    # The first installment fell due about two weeks ago: 300 of it is in arrears.
    assert "300.00 (1 due)" in loans
    assert "1,000.00" in loans  # the schedule's monthly installment
    payments = html[html.index('id="payments"') :]
    assert "RKT0000001" in payments and "RKT0000002" in payments and "700.00" in payments
    assert f">{loan_no}</a>" in payments  # the repayment names its loan
    sms = html[html.index('id="sms"') :]
    assert "repayment_received" in sms and "deposit_received" in sms
    ussd = html[html.index('id="ussd"') :]
    assert "2026-11-21 10:05" in ussd and "12.5" in ussd  # Kenyan time; seconds
    assert 'id="audit"' not in html  # the audit log is not a loan officer's to read


def test_every_block_is_capped_with_a_link_to_the_full_list(app: Flask) -> None:
    member = make_member()
    for n in range(23):
        db.session.add(
            SmsMessage(
                member_id=member.id,
                phone=member.phone,
                template="help",
                body=f"message number {n}",
                idempotency_key=f"cap-{n}",
            )
        )
    db.session.commit()
    client = signed_in(app, "compliance")
    html = member_page(client, member.id)
    sms = html[html.index('id="sms"') : html.index("<h4>USSD")]
    assert "message number 22" in sms and "message number 3" in sms
    assert "message number 2<" not in sms  # the 21st newest is left to the full list
    assert "Showing the latest 20." in sms
    assert re.search(r'<a href="/admin/smsmessage/\?[^"]+">All SMS', sms)
    # Compliance reads the audit log: the member's registration is there.
    trail = html[html.index('id="audit"') :]
    assert "member.add" in trail and member.member_no in trail


@pytest.mark.parametrize(
    "typed",
    ["0722334455", "+254722334455", "254722334455", "722334455", "+254 722 334 455"],
)
def test_a_member_is_found_by_phone_in_any_form(app: Flask, typed: str) -> None:
    make_member(phone="0722334455", name="Otieno Ochieng")
    make_member(phone="0733445566", name="Akinyi Atieno")
    client = signed_in(app, "auditor")
    html = browse(client, "/admin/member/", query_string={"search": typed}).get_data(as_text=True)
    assert "Otieno Ochieng" in html and "Akinyi Atieno" not in html


def test_a_member_is_found_by_name_number_and_national_id(app: Flask) -> None:
    wanted = make_member(name="Wanjiku Kamau", national_id="27182818")
    make_member(name="Baraka Mwangi", national_id="31415926")
    client = signed_in(app, "loan_officer")
    for typed in ("Wanjiku", wanted.member_no, "27182818"):
        html = browse(client, "/admin/member/", query_string={"search": typed}).get_data(
            as_text=True
        )
        assert "Wanjiku Kamau" in html and "Baraka Mwangi" not in html, typed


def test_request_payment_sends_a_prompt_and_is_audited(app: Flask) -> None:
    member = make_borrower(savings=5000)
    loan = interest_free_loan(member)
    member_id, loan_id, loan_no = member.id, loan.id, loan.loan_no
    client = signed_in(app, "loan_officer")
    html = member_page(client, member_id)
    assert 'id="request-payment"' in html

    page = act(client, member_id, "request_payment", loan_id=str(loan_id), amount="1000")
    assert "An M-PESA prompt for KES 1,000 is on its way" in page.get_data(as_text=True)
    assert [(p.loan_id, p.amount, p.channel) for p in prompts()] == [
        (loan_id, Decimal("1000.00"), "console")
    ]
    rows = audit("payment.request")
    assert [(r.actor, r.object_id) for r in rows] == [("staff:loan.officer@sacco.test", loan_no)]

    again = act(client, member_id, "request_payment", loan_id=str(loan_id), amount="12.5")
    assert "Not done: M-PESA takes whole shillings only" in again.get_data(as_text=True)
    assert len(audit("payment.request")) == 1  # a refusal leaves no audit row behind


def test_request_payment_refuses_another_members_loan(app: Flask) -> None:
    mine, theirs = make_borrower(savings=5000), make_borrower(savings=5000)
    loan_id = interest_free_loan(theirs).id
    interest_free_loan(mine)
    client = signed_in(app, "branch_manager")
    page = act(client, mine.id, "request_payment", loan_id=str(loan_id), amount="500")
    assert "that loan is not this member&#39;s" in page.get_data(as_text=True)
    assert not prompts()


def test_send_statement_queues_the_mini_statement_once_per_click(app: Flask) -> None:
    member = make_member(savings=Decimal("1500"))
    client = signed_in(app, "branch_manager")
    html = member_page(client, member.id)
    request_id = re.search(r'name="request_id" value="(\w+)"', html).group(1)
    for _ in range(2):  # a double-click posts the same form twice
        page = act(client, member.id, "send_statement", request_id=request_id)
        assert "The mini statement is queued by SMS" in page.get_data(as_text=True)
    sent = sent_sms("statement")
    assert len(sent) == 1 and "1,500.00" in sent[0].body
    assert sent[0].phone == member.phone
    assert [r.object_id for r in audit("member.statement_sms")] == [member.member_no] * 2


def test_reset_pin_clears_pin_and_lock_the_member_sets_a_new_one_with_their_id(
    app: Flask,
) -> None:
    member = make_member(phone="0711223344", national_id="23456789")
    member_set_pin(member_id=member.id, pin="4826")
    now = datetime.now(UTC)
    for _ in range(3):
        try:
            member_check_pin(member_id=member.id, pin="0000", now=now)
        except Exception:  # noqa: BLE001, S110 - the third wrong PIN locks: that is the point
            pass
    db.session.expire_all()
    assert db.session.get(Member, member.id).locked_until is not None
    client = signed_in(app, "loan_officer")
    html = member_page(client, member.id)
    assert "USSD is locked after wrong PINs" in html and 'id="reset-pin"' in html

    page = act(client, member.id, "reset_pin").get_data(as_text=True)
    assert "The PIN is reset" in page
    db.session.expire_all()
    reset = db.session.get(Member, member.id)
    assert reset.locked_until is None and reset.failed_pin_count == 0
    assert reset.pin_hash is None  # not the old PIN: a new one, after the ID number
    rows = audit("member.pin_reset")
    assert len(rows) == 1 and rows[0].actor == "staff:loan.officer@sacco.test"
    assert rows[0].before["locked_until"] is not None and rows[0].before["pin_set"] is True
    phone = Phone(app.test_client())
    assert "ID number" in phone.dial()
    assert "Create a 4-digit PIN" in phone.press("23456789")
    phone.press("3917")
    assert phone.press("3917").startswith("CON 1. Check Balance")
    assert member_check_pin(member_id=member.id, pin="3917", now=now) is True


@pytest.mark.parametrize(
    ("role", "action", "button"),
    [
        ("compliance", "request_payment", 'id="request-payment"'),
        ("auditor", "send_statement", 'id="send-statement"'),
        ("admin", "send_statement", 'id="send-statement"'),
        ("compliance", "reset_pin", 'id="reset-pin"'),
        ("auditor", "activation_code", 'id="activation-code"'),
    ],
)
def test_a_role_without_the_permission_sees_no_button_and_gets_403(
    app: Flask, role: str, action: str, button: str
) -> None:
    member = make_borrower(savings=5000)
    loan_id = interest_free_loan(member).id
    member.failed_pin_count = 2  # so the reset button would show to a role that may use it
    db.session.commit()
    client = signed_in(app, role)
    assert button not in member_page(client, member.id)
    response = act(client, member.id, action, loan_id=str(loan_id), amount="500")
    assert response.status_code == 403
    assert not prompts()
    assert not db.session.scalars(
        select(SmsMessage).where(SmsMessage.template == "statement")
    ).all()
    db.session.expire_all()
    assert db.session.get(Member, member.id).failed_pin_count == 2
    denied = audit("access.denied")
    assert denied and denied[-1].object_id == f"/admin/member/act/{member.id}"


def test_a_post_without_the_csrf_token_changes_nothing(app: Flask) -> None:
    member = make_borrower(savings=5000)
    loan_id = interest_free_loan(member).id
    member.failed_pin_count = 2
    db.session.commit()
    client = signed_in(app, "branch_manager")
    for action in ("request_payment", "send_statement", "reset_pin"):
        page = browse(
            client,
            f"/admin/member/act/{member.id}",
            "POST",
            data={"action": action, "loan_id": str(loan_id), "amount": "500"},
            follow_redirects=True,
        )
        assert "The form expired" in page.get_data(as_text=True)
    assert not prompts()
    assert not db.session.scalars(
        select(SmsMessage).where(SmsMessage.template == "statement")
    ).all()
    db.session.expire_all()
    assert db.session.get(Member, member.id).failed_pin_count == 2
    assert not audit("member.pin_reset") and not audit("payment.request")


# -- register and edit --------------------------------------------------------------------


def form_post(client: FlaskClient, path: str, data: dict[str, str]):  # noqa: ANN201
    match = CSRF.search(browse(client, path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return browse(client, path, "POST", data={"csrf_token": match.group(1), **data})


def test_staff_register_a_member_through_the_service(app: Flask) -> None:
    client = signed_in(app, "loan_officer")
    response = form_post(
        client,
        "/admin/member/new/",
        {
            "name": "  Achieng   Odhiambo ",
            "phone": "+254 711 000 111",
            "national_id": "22334455",
            "language": "sw",
        },
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:800]
    member = db.session.scalar(select(Member).where(Member.national_id == "22334455"))
    assert member is not None
    assert (member.name, member.phone, member.language) == (
        "Achieng Odhiambo",
        "254711000111",
        "sw",
    )
    # member_add opened the member's accounts and wrote its audit row.
    assert member.member_no and {a.action for a in audit("member.add")} == {"member.add"}
    assert audit("member.add")[0].actor == "staff:loan.officer@sacco.test"

    again = form_post(
        client,
        "/admin/member/new/",
        {"name": "Someone Else", "phone": "0711000111", "national_id": "", "language": "en"},
    )
    assert "a member with this phone exists already" in again.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Member)) == 1


def test_staff_edit_name_id_and_language_but_not_the_phone(app: Flask) -> None:
    member = make_member(name="Juma Hamisi", national_id="11112222")
    other = make_member(national_id="99998888")
    member_id, phone = member.id, member.phone
    client = signed_in(app, "branch_manager")
    path = f"/admin/member/edit/?id={member_id}"
    html = browse(client, path).get_data(as_text=True)
    assert 'name="phone"' not in html
    response = form_post(
        client,
        path,
        {
            "name": "Juma Hamisi Bakari",
            "national_id": "11112223",
            "language": "sw",
            "phone": "0799999999",
        },
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:800]
    db.session.expire_all()
    edited = db.session.get(Member, member_id)
    assert (edited.name, edited.national_id, edited.language, edited.phone) == (
        "Juma Hamisi Bakari",
        "11112223",
        "sw",
        phone,
    )
    row = audit("member.update")[-1]
    assert row.before == {"name": "Juma Hamisi", "national_id": "11112222", "language": "en"}
    assert row.after["national_id"] == "11112223"

    clash = form_post(
        client, path, {"name": "Juma", "national_id": other.national_id, "language": "en"}
    )
    assert "a member with this national id exists already" in clash.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Member, member_id).national_id == "11112223"


@pytest.mark.parametrize("role", ["compliance", "auditor"])
def test_roles_that_may_not_edit_members_get_403_on_the_forms(app: Flask, role: str) -> None:
    member = make_member(name="Juma Hamisi")
    client = signed_in(app, role)
    assert browse(client, "/admin/member/new/").status_code == 403
    assert browse(client, f"/admin/member/edit/?id={member.id}").status_code == 403
    post = browse(
        client,
        f"/admin/member/edit/?id={member.id}",
        "POST",
        data={"name": "Changed", "language": "en"},
    )
    assert post.status_code == 403
    db.session.expire_all()
    assert db.session.get(Member, member.id).name == "Juma Hamisi"
    assert "/admin/member/edit/" not in member_page(client, member.id)


def found(client: FlaskClient, typed: str) -> str:
    response = browse(client, "/admin/member/", query_string={"search": typed})
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


@pytest.mark.parametrize("typed", ["0733", "0733 44", "+25473", "25473344", "733445566"])
def test_a_member_is_found_by_the_start_of_their_phone(app: Flask, typed: str) -> None:
    """Staff type the start of a number as the member reads it out; we store 2547…. A
    number with 0733 in its middle (0710 733 999) is someone else."""
    make_member(phone="0733445566", name="Akinyi Atieno")
    make_member(phone="0722334455", name="Otieno Ochieng")
    make_member(phone="0710733999", name="Chebet Kiprono")
    html = found(signed_in(app, "auditor"), typed)
    assert "Akinyi Atieno" in html, typed
    assert "Otieno Ochieng" not in html and "Chebet Kiprono" not in html, typed


def test_a_member_is_found_by_their_number_without_its_zeros(app: Flask) -> None:
    wanted = make_member(name="Wanjiru Njeri")
    others = [make_member(name=f"Other Member {n}") for n in range(10)]
    n = int(wanted.member_no[1:])
    # M000003 must not bring M000013 or M000030 with it.
    lookalikes = [m.name for m in others if str(n) in m.member_no.lstrip("M0")]
    client = signed_in(app, "loan_officer")
    for typed in (f"m{n}", f"M{n}", f"m0{n}", wanted.member_no, wanted.member_no.lower()):
        html = found(client, typed)
        assert "Wanjiru Njeri" in html, typed
        assert not any(name in html for name in lookalikes), typed
    assert "Wanjiru Njeri" not in found(client, f"m{n + 100}")


def test_a_search_with_like_wildcards_finds_only_what_was_typed(app: Flask) -> None:
    make_member(name="Baraka Mwangi")
    html = found(signed_in(app, "auditor"), "%")
    assert "Baraka Mwangi" not in html
