"""A caller id alone is never enough to act as a member (issue 17, item 1): the first PIN
needs the member's ID number or a one-time activation code, a forgotten PIN is replaced
with the ID number and a code sent by SMS to the registered phone, and every wrong answer
counts on the one PIN lock. Through `POST /ussd` as Africa's Talking posts it, the CLI and
the console; codes are read from the outbox, their one home."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db, redis_client
from app.models import AuditLog, Member, SmsMessage
from app.models.types import utcnow
from app.services.members import (
    RESET_CODES_PER_HOUR,
    RESET_PREFIX,
    member_check_pin,
    member_set_pin,
)
from tests.factories import make_member
from tests.helpers import Phone, sent_sms, staff
from tests.helpers import browse as _browse
from tests.helpers import login as _login
from tests.helpers import post_form as _post_form

PIN, NEW_PIN = "4826", "3917"
ID_NUMBER = "AB123456"


@pytest.fixture
def newcomer(app: Flask) -> Member:
    """A member registered at a branch who has never dialled."""
    return make_member(phone="0711223344", name="Wanjiku Achieng", national_id=ID_NUMBER)


# On SQLite an open transaction of the test holds the write lock a request needs: every
# read here ends its transaction (rows detached, their loaded values kept), and every
# console request starts after a commit.


def _done(rows: list) -> list:  # type: ignore[type-arg]
    for row in rows:
        db.session.expunge(row)
    db.session.commit()
    return rows


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    db.session.commit()
    return _browse(client, path, method, **kwargs)


def post_form(client: FlaskClient, path: str, data: dict[str, object]):  # noqa: ANN201
    db.session.commit()
    return _post_form(client, path, data)


def login(client: FlaskClient, email: str) -> None:
    db.session.commit()
    _login(client, email)


def fresh(member_id: int) -> Member:
    db.session.expire_all()
    member = db.session.get(Member, member_id)
    assert member is not None
    return _done([member])[0]


def session_state() -> bytes:
    redis = redis_client()
    return b"".join(redis.get(k) or b"" for k in redis.keys("ussd:session:*"))


def sms(template: str) -> list[SmsMessage]:
    return _done(sent_sms(template))


def code_in(message: SmsMessage, digits: int = 6) -> str:
    found = re.search(rf"\b(\d{{{digits}}})\b", message.body)
    assert found, message.body
    return found.group(1)


def audit_text() -> str:
    """The audit log, less the registration row (which records the ID number on file)."""
    db.session.expire_all()
    rows = db.session.scalars(select(AuditLog).where(AuditLog.action != "member.add")).all()
    text = repr([(r.action, r.before, r.after, r.note, r.object_id) for r in rows])
    db.session.commit()
    return text


# -- the first PIN: ID number -----------------------------------------------------------


def test_a_member_who_never_dialled_cannot_be_set_up_from_the_caller_id_alone(
    client: FlaskClient, newcomer: Member
) -> None:
    """The spoof of the issue: the gateway's form with a member's number. Without the ID
    number no PIN is chosen; three wrong answers lock like wrong PINs."""
    phone = Phone(client)
    first = phone.dial()
    assert "Welcome Wanjiku" in first and "ID number or the activation code" in first
    assert "Create" not in first  # no PIN screen from the caller id
    assert "Tries left: 2" in phone.press("12345678")
    assert "Tries left: 1" in phone.press(PIN)  # a PIN is no answer here either
    locked = phone.press("AB123457")
    assert locked.startswith("END ") and "locked until" in locked
    member = fresh(newcomer.id)
    assert member.pin_hash is None and member.locked_until > utcnow() + timedelta(minutes=29)
    assert len(sms("pin_locked")) == 1  # the same lock, the same SMS as wrong PINs
    again = Phone(client)
    assert "locked until" in again.dial()  # even the right ID number waits
    assert fresh(newcomer.id).pin_hash is None


def test_the_right_id_number_then_a_pin_entered_twice_opens_the_menu(
    client: FlaskClient, newcomer: Member, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        phone = Phone(client)
        phone.dial()
        assert "Tries left: 2" in phone.press("AB12345")
        chosen = phone.press(" ab 123 456 ")  # spaces and case are not the member's mistake
        assert "Create a 4-digit PIN" in chosen
        assert "too easy" in phone.press("1234")
        assert "again" in phone.press(PIN)
        assert phone.press(PIN).startswith("CON 1. Check Balance")
    member = fresh(newcomer.id)
    assert member.pin_hash and member.failed_pin_count == 0  # a PIN saved clears the count
    assert member_check_pin(member_id=member.id, pin=PIN, now=utcnow()) is True
    # Nothing typed is kept or told: not the ID number, not the PIN.
    state = session_state()
    assert state and b"123456" not in state and PIN.encode() not in state
    logged = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert "123456" not in logged and PIN not in logged
    assert "123456" not in audit_text() and PIN not in audit_text()
    # From now on the PIN screen, never the second factor again.
    later = Phone(client).dial()
    assert later.startswith("CON SACCO: enter your PIN:") and "9. Forgot PIN" in later


def test_the_helper_sets_up_a_member_with_their_id(client: FlaskClient, newcomer: Member) -> None:
    assert "Check Balance" in Phone(client).set_up_pin(ID_NUMBER)
    assert fresh(newcomer.id).pin_hash


# -- the first PIN: activation code -----------------------------------------------------


def add_member_by_cli(runner: object, *args: str) -> tuple[str, str]:
    """`sacco member add`: the activation code line and the member number (last line)."""
    result = runner.invoke(args=["member", "add", *args])  # type: ignore[attr-defined]
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    code = re.search(r"Activation code for the first dial: (\d{8})", result.stdout)
    assert code, result.stdout
    return code.group(1), lines[-1]


def test_a_member_without_an_id_number_sets_up_with_the_activation_code_once(
    client: FlaskClient, runner: object, app: Flask
) -> None:
    code, member_no = add_member_by_cli(runner, "--name", "Chebet Kiprono", "--phone", "0744556677")
    assert re.fullmatch(r"M\d{6}", member_no)  # SPEC: the member number alone, last
    member = db.session.scalar(select(Member).where(Member.member_no == member_no))
    assert member.national_id is None
    assert member.activation_code_hash and code not in member.activation_code_hash
    assert code not in audit_text()

    phone = Phone(client, "+254744556677")
    first = phone.dial()
    assert "activation code the SACCO gave you" in first and "ID number" not in first
    assert "Tries left: 2" in phone.press(f"{(int(code) + 1) % 10**8:08d}")
    assert "Create a 4-digit PIN" in phone.press(code)
    phone.press(PIN)
    assert phone.press(PIN).startswith("CON 1. Check Balance")
    member = fresh(member.id)
    assert member.activation_code_hash is None  # spent with the PIN it opened

    # Used once: after a staff reset the same code opens nothing.
    officer = app.test_client()
    login(officer, staff("loan_officer"))
    post_form(officer, f"/admin/member/act/{member.id}", {"action": "reset_pin"})
    assert fresh(member.id).pin_hash is None
    reuse = Phone(client, "+254744556677")
    reuse.dial()
    assert "does not match" in reuse.press(code)
    assert fresh(member.id).pin_hash is None


def test_an_expired_activation_code_is_refused_in_words_and_counted(
    client: FlaskClient, runner: object
) -> None:
    code, member_no = add_member_by_cli(runner, "--name", "Chebet", "--phone", "0744556677")
    member = db.session.scalar(select(Member).where(Member.member_no == member_no))
    assert member.activation_code_expires > utcnow() + timedelta(days=29)
    member.activation_code_expires = utcnow() - timedelta(minutes=1)  # 30 days on
    db.session.commit()
    phone = Phone(client, "+254744556677")
    phone.dial()
    reply = phone.press(code)
    assert reply.startswith("END ") and "expired" in reply and "new one" in reply
    member = fresh(member.id)
    assert member.pin_hash is None and member.failed_pin_count == 1


def test_staff_issue_a_new_code_from_the_member_page_shown_once_and_audited(
    app: Flask, client: FlaskClient
) -> None:
    member = make_member(phone="0744556677", national_id=None)
    officer = app.test_client()
    login(officer, staff("loan_officer"))
    db.session.commit()
    page = browse(officer, f"/admin/member/details/?id={member.id}").get_data(as_text=True)
    assert 'id="activation-code"' in page and "No PIN yet" in page
    shown = post_form(officer, f"/admin/member/act/{member.id}", {"action": "activation_code"})
    assert shown.status_code == 302
    flashed = browse(officer, f"/admin/member/details/?id={member.id}").get_data(as_text=True)
    code = re.search(r"Activation code for M\d+: (\d{8})", flashed)
    assert code, flashed[:2000]
    again = browse(officer, f"/admin/member/details/?id={member.id}").get_data(as_text=True)
    assert code.group(1) not in again  # once
    rows = db.session.scalars(
        select(AuditLog).where(AuditLog.action == "member.activation_code")
    ).all()
    assert [r.actor for r in rows] == ["staff:loan.officer@sacco.test"]
    assert code.group(1) not in audit_text()

    phone = Phone(client, "+254744556677")
    phone.dial()
    assert "Create a 4-digit PIN" in phone.press(code.group(1))


def test_the_console_register_form_shows_the_code_once(app: Flask, client: FlaskClient) -> None:
    officer = app.test_client()
    login(officer, staff("branch_manager"))
    response = post_form(
        officer,
        "/admin/member/new/",
        {"name": "Juma Hamisi", "phone": "0755111222", "national_id": "", "language": "en"},
    )
    assert response.status_code == 302
    member = db.session.scalar(select(Member).where(Member.phone == "254755111222"))
    assert member is not None and member.activation_code_hash
    page = browse(officer, response.headers["Location"]).get_data(as_text=True)
    code = re.search(r"Activation code for M\d+: (\d{8})", page)
    assert code, page[:2000]
    assert db.session.scalars(select(SmsMessage)).all() == []  # handed over, not texted
    db.session.commit()
    phone = Phone(client, "+254755111222")
    phone.dial()
    assert "Create a 4-digit PIN" in phone.press(code.group(1))


# -- forgotten PIN -----------------------------------------------------------------------


@pytest.fixture
def member(newcomer: Member) -> Member:
    member_set_pin(member_id=newcomer.id, pin=PIN)
    return newcomer


def test_a_forgotten_pin_is_reset_from_ussd_with_the_id_and_a_code_by_sms(
    client: FlaskClient, member: Member, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        phone = Phone(client)
        assert "9. Forgot PIN" in phone.dial()
        assert "enter your ID number" in phone.press("9")
        assert "Tries left: 2" in phone.press("AB000000")  # counted like a wrong PIN
        asked = phone.press(ID_NUMBER)
        assert "code by SMS to your phone ending 3344" in asked
        [message] = sms("pin_reset_code")
        assert message.phone == "254711223344"  # the registered phone, not any caller
        code = code_in(message)
        assert "6 digits" in phone.press("123")  # a typo costs no try
        assert "Tries left: 1" in phone.press(f"{(int(code) + 1) % 10**6:06d}")
        assert "Choose a new 4-digit PIN" in phone.press(code)
        assert "again" in phone.press(NEW_PIN)
        assert phone.press(NEW_PIN).startswith("CON 1. Check Balance")
    assert redis_client().keys(f"{RESET_PREFIX}*") == []  # single use
    assert member_check_pin(member_id=member.id, pin=NEW_PIN, now=utcnow()) is True
    assert fresh(member.id).failed_pin_count == 0
    assert len(sms("pin_changed")) == 1  # if it was not them, they hear of it
    reset = db.session.scalars(select(AuditLog).where(AuditLog.action == "member.pin_reset")).all()
    assert [r.actor for r in reset] == [f"member:{member.member_no}"]
    # The code and the PINs live nowhere but the SMS body.
    state = session_state()
    for secret in (code, PIN, NEW_PIN, "AB000000"):
        assert secret.encode() not in state
        assert secret not in audit_text()
        assert secret not in "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    old = Phone(client)
    old.dial()
    assert "Wrong PIN" in old.press(PIN)


def test_the_reset_code_works_only_in_the_session_it_was_sent_for(
    client: FlaskClient, member: Member
) -> None:
    first = Phone(client)
    first.dial()
    first.press("9")
    first.press(ID_NUMBER)
    second = Phone(client)  # another session asks too (the member again, or a spoofer)
    second.dial()
    second.press("9")
    second.press(ID_NUMBER)
    newest = code_in(sms("pin_reset_code")[-1])
    # The live code belongs to the second session: typed in the first it opens nothing.
    ended = first.press(newest)
    assert ended.startswith("END ") and "expired" in ended
    thief = Phone(client)
    thief.dial()
    assert "Wrong PIN" in thief.press(newest[:4])  # nor is any of it a PIN
    assert member_check_pin(member_id=member.id, pin=PIN, now=utcnow()) is True
    assert "Choose a new 4-digit PIN" in second.press(newest)


def test_wrong_ids_and_codes_count_on_the_same_lock_as_pins(
    client: FlaskClient, member: Member
) -> None:
    phone = Phone(client)
    phone.dial()
    assert "Tries left: 2" in phone.press("1111")  # a wrong PIN
    phone.press("9")
    assert "Tries left: 1" in phone.press("XY999999")  # a wrong ID number
    phone.press(ID_NUMBER)  # right: the count is not cleared by it
    code = code_in(sms("pin_reset_code")[0])
    locked = phone.press(f"{(int(code) + 1) % 10**6:06d}")  # a wrong code: the third
    assert locked.startswith("END ") and "locked until" in locked
    assert len(sms("pin_locked")) == 1
    assert redis_client().keys(f"{RESET_PREFIX}*") == []  # the lock ends the reset
    assert member_check_pin(member_id=member.id, pin=PIN, now=utcnow() + timedelta(hours=1))


def test_forgot_pin_without_an_id_number_points_to_the_office(client: FlaskClient) -> None:
    member = make_member(phone="0711223344", national_id=None)
    member_set_pin(member_id=member.id, pin=PIN)
    phone = Phone(client)
    phone.dial()
    reply = phone.press("9")
    assert reply.startswith("END ") and "activation code" in reply
    assert not sms("pin_reset_code")


def test_reset_codes_are_limited_per_hour(client: FlaskClient, member: Member) -> None:
    for _ in range(RESET_CODES_PER_HOUR):
        phone = Phone(client)
        phone.dial()
        phone.press("9")
        assert "code by SMS" in phone.press(ID_NUMBER)
    phone = Phone(client)
    phone.dial()
    phone.press("9")
    assert "Too many codes" in phone.press(ID_NUMBER)
    assert len(sms("pin_reset_code")) == RESET_CODES_PER_HOUR


def test_a_staff_reset_sends_the_member_through_the_id_number_on_the_next_dial(
    app: Flask, client: FlaskClient, member: Member
) -> None:
    officer = app.test_client()
    login(officer, staff("loan_officer"))
    db.session.commit()
    page = post_form(officer, f"/admin/member/act/{member.id}", {"action": "reset_pin"})
    assert page.status_code == 302
    assert fresh(member.id).pin_hash is None
    rows = db.session.scalars(select(AuditLog).where(AuditLog.action == "member.pin_reset")).all()
    assert [(r.actor, r.before["pin_set"], r.after["pin_set"]) for r in rows] == [
        ("staff:loan.officer@sacco.test", True, False)
    ]
    db.session.commit()
    phone = Phone(client)
    assert "ID number" in phone.dial()
    assert "Check Balance" in Phone(client).set_up_pin(ID_NUMBER, NEW_PIN)


# -- menu 5 and the outbox ---------------------------------------------------------------


def test_menu_5_asks_the_id_number_before_the_pin(client: FlaskClient, member: Member) -> None:
    phone = Phone(client)
    phone.dial()
    phone.press(PIN)
    phone.press("5")
    phone.press("0722334455")
    asked = phone.press("0722334455")
    assert "enter your ID number" in asked
    assert "Tries left: 2" in phone.press("AB000001")  # counted on the PIN lock
    assert fresh(member.id).failed_pin_count == 1
    assert "Enter your PIN to confirm" in phone.press(ID_NUMBER)
    assert "We sent a code" in phone.press(PIN)
    assert len(sms("phone_change_otp")) == 1


def test_menu_5_for_a_member_without_an_id_number_points_to_a_branch(client: FlaskClient) -> None:
    member = make_member(phone="0711223344", national_id=None)
    member_set_pin(member_id=member.id, pin=PIN)
    phone = Phone(client)
    phone.dial()
    phone.press(PIN)
    reply = phone.press("5")
    assert reply.startswith("END ") and "visit a SACCO branch" in reply


@pytest.mark.parametrize("role", ["auditor", "admin"])
def test_codes_are_masked_in_the_outbox_for_every_role(
    app: Flask, client: FlaskClient, member: Member, role: str
) -> None:
    # A live phone-change code and a live PIN-reset code in the outbox.
    change = Phone(client)
    change.dial()
    for entry in (PIN, "5", "0722334455", "0722334455", ID_NUMBER):
        change.press(entry)
    assert "We sent a code" in change.press(PIN)
    change_code = code_in(sms("phone_change_otp")[0])
    reset = Phone(client)
    reset.dial()
    reset.press("9")
    reset.press(ID_NUMBER)
    reset_code = code_in(sms("pin_reset_code")[0])
    db.session.commit()

    reader = app.test_client()
    login(reader, staff(role))
    db.session.commit()
    pages = {
        "list": browse(reader, "/admin/smsmessage/").get_data(as_text=True),
        "member page": browse(reader, f"/admin/member/details/?id={member.id}").get_data(
            as_text=True
        ),
    }
    for message in (*sms("pin_reset_code"), *sms("phone_change_otp")):
        pages[f"details {message.template}"] = browse(
            reader, f"/admin/smsmessage/details/?id={message.id}"
        ).get_data(as_text=True)
    for where, html in pages.items():
        assert "*" * 6 in html, where
        assert reset_code not in html and change_code not in html, where
    # Searching the bodies cannot find a code digit by digit either ("123456." is in the
    # reset SMS: "...PIN is 123456. Enter it...").
    for term in (f"{reset_code}.", f"{reset_code[:3]}%25."):
        found = browse(reader, f"/admin/smsmessage/?search={term}").get_data(as_text=True)
        assert "pin_reset_code" not in found.split("<tbody", 1)[-1], term
    listed = browse(reader, "/admin/smsmessage/?search=pin_reset").get_data(as_text=True)
    assert "pin_reset_code" in listed.split("<tbody", 1)[-1]  # the template still is


def test_a_newcomer_dials_a_demo_member_as_the_readme_says(
    client: FlaskClient, runner: object
) -> None:
    from app.cli.demo import DEMO_DIAL_HINT

    result = runner.invoke(args=["demo-data"])  # type: ignore[attr-defined]
    assert result.exit_code == 0, result.output
    assert DEMO_DIAL_HINT in result.stdout
    phone, id_number = re.search(r"--phone (\d+) .*ID number (\d+)", DEMO_DIAL_HINT).groups()
    db.session.commit()
    assert Phone(client, phone).set_up_pin(id_number).startswith("CON 1. Salio")  # Kiswahili


def test_codes_are_masked_on_the_loan_timeline_of_the_officer_desk(
    app: Flask, client: FlaskClient
) -> None:
    from datetime import date

    from tests.loan_factories import make_borrower, make_loan, make_product

    borrower = make_borrower(savings=20000)
    member_set_pin(member_id=borrower.id, pin=PIN)
    loan = make_loan(product=make_product("V1"), amount=5000, on=date(2026, 11, 1), member=borrower)
    phone = Phone(client, f"+{borrower.phone}")
    phone.dial()
    phone.press("9")
    assert "code by SMS" in phone.press(str(borrower.national_id))
    code = code_in(sms("pin_reset_code")[0])
    manager = app.test_client()
    login(manager, staff("branch_manager"))
    page = browse(manager, f"/admin/desk/loan/{loan.id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "pin reset code" in html
    assert code not in html and "*" * 6 in html
