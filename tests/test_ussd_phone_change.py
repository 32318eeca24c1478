"""Menu 5, Update Phone Number, through `POST /ussd` with the gateway's real form fields,
against real Redis and the database: the number twice, the ID number and the PIN from the
old phone, a code by SMS to the new one, the code typed from the new phone."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.extensions import db, redis_client
from app.models import AuditLog, Member, SmsMessage
from app.models.types import utcnow
from app.services.members import member_set_pin
from app.services.phone_change import OTP_MINUTES, PENDING_PREFIX
from app.sms_templates import GSM7_BASIC
from app.ussd.engine import MAX_SCREEN
from tests.factories import make_member
from tests.helpers import Phone
from ussd_menus.phone import TEXT
from ussd_menus.text import t

OLD, OLD_MSISDN = "+254711223344", "254711223344"
NEW, NEW_MSISDN = "+254722334455", "254722334455"
PIN = "4826"
ID_NUMBER = "23456789"
PENDING_KEY = f"{PENDING_PREFIX}{NEW_MSISDN}"


@pytest.fixture
def member(app: Flask) -> Member:
    m = make_member(phone="0711223344", name="Wanjiku Achieng", national_id=ID_NUMBER)
    member_set_pin(member_id=m.id, pin=PIN)
    return m


def at_pin_screen(client: FlaskClient, new: str = "0722334455") -> Phone:
    """The old phone, logged in, through menu 5 to the PIN screen for `new`."""
    phone = Phone(client)
    phone.dial()
    assert phone.press(PIN).startswith("CON 1. Check Balance")
    assert "new phone number" in phone.press("5")
    assert "again" in phone.press(new)
    assert "enter your ID number" in phone.press(new)
    assert "Enter your PIN to confirm" in phone.press(ID_NUMBER)
    return phone


def request_change(client: FlaskClient) -> str:
    """Ask for the change from the old phone; the code that went by SMS to the new one."""
    reply = at_pin_screen(client).press(PIN)
    assert reply.startswith("END ") and "We sent a code by SMS to 0722334455" in reply
    return otp_sent()


def otp_sent() -> str:
    return otp_sent_to(NEW_MSISDN)


def wrong(otp: str) -> str:
    """A 6-digit code that is not `otp`."""
    return f"{(int(otp) + 1) % 1_000_000:06d}"


def member_phone(member_id: int) -> str:
    db.session.expire_all()
    return db.session.get(Member, member_id).phone


def said(secret: str, text: str) -> bool:
    """Whether `text` holds `secret` as a number of its own, not as digits of a longer one."""
    return re.search(rf"(?<!\d){re.escape(secret)}(?!\d)", text) is not None


def session_state() -> bytes:
    redis = redis_client()
    return b"".join(redis.get(k) or b"" for k in redis.keys("ussd:session:*"))


def test_the_whole_change_old_phone_asks_new_phone_proves_it(
    client: FlaskClient, member: Member
) -> None:
    otp = request_change(client)
    assert member_phone(member.id) == OLD_MSISDN  # nothing changes before the code
    assert 0 < redis_client().ttl(PENDING_KEY) <= OTP_MINUTES * 60

    new = Phone(client, NEW)
    assert "enter the 6-digit code" in new.dial()
    done = new.press(otp)
    assert done.startswith("END ") and "This phone is now your SACCO number" in done
    assert new.send(otp) == done  # the gateway resends the hop: same reply, no second go

    assert member_phone(member.id) == NEW_MSISDN
    assert redis_client().exists(PENDING_KEY) == 0  # the code was single-use
    changed = db.session.scalars(
        select(SmsMessage).where(SmsMessage.template == "phone_changed").order_by(SmsMessage.id)
    ).all()
    assert sorted(m.phone for m in changed) == [OLD_MSISDN, NEW_MSISDN]
    assert all("ending 4455" in m.body for m in changed)
    audit = db.session.scalars(
        select(AuditLog).where(AuditLog.action == "member.change_phone")
    ).all()
    assert [(a.object_id, a.before, a.after) for a in audit] == [
        (member.member_no, {"phone": OLD_MSISDN}, {"phone": NEW_MSISDN})
    ]
    # The new number now opens the PIN screen; the old one is nobody's.
    assert Phone(client, NEW).dial().startswith("CON SACCO: enter your PIN:")
    assert "not registered" in Phone(client, OLD).dial()


def test_the_code_and_the_pin_never_reach_session_state_the_audit_log_or_logs(
    client: FlaskClient, member: Member, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        otp = request_change(client)
        pending = redis_client().get(PENDING_KEY)
        assert pending is not None and otp.encode() not in pending  # a hash only
        new = Phone(client, NEW)
        new.dial()
        new.press(wrong(otp))
        assert "This phone is now" in new.press(otp)
    state = session_state()
    assert state  # the sessions were stored, and hold neither secret
    held = state.decode(errors="replace")
    assert not said(otp, held) and not said(PIN, held) and not said(wrong(otp), held)
    rows = db.session.scalars(select(AuditLog)).all()
    assert any(r.action == "member.change_phone" for r in rows)
    text = repr([(r.before, r.after, r.note, r.object_id) for r in rows])
    assert not said(otp, text) and not said(PIN, text)
    # Every field a record carries, less the clock and process numbers (a timing such as
    # 4826.1 ms is not the PIN), searched for each secret as a number of its own: digits
    # inside a longer number are not it (relativeCreated 358572.55482673645 once held 4826).
    noise = {"created", "msecs", "relativeCreated", "thread", "process", "lineno"}
    logged = "\n".join(
        f"{r.getMessage()} {r.args!r} { ({k: v for k, v in vars(r).items() if k not in noise})!r}"
        for r in caplog.records
    )
    assert not said(otp, logged) and not said(PIN, logged)


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ("0700123", "not a Kenyan mobile"),
        ("0812345678", "not a Kenyan mobile"),
        ("0711223344", "your SACCO number already"),
        ("254711223344", "your SACCO number already"),
        ("0733000111", "belongs to another member"),
    ],
)
def test_a_number_that_cannot_be_used_is_refused_on_the_same_screen(
    client: FlaskClient, member: Member, entry: str, error: str
) -> None:
    make_member(phone="0733000111")
    phone = Phone(client)
    phone.dial()
    phone.press(PIN)
    phone.press("5")
    refused = phone.press(entry)
    assert refused.startswith("CON ") and error in refused
    assert "Enter your new phone number" in refused  # the same screen, to try again
    assert "again" in phone.press("0722334455")  # and a good number goes on
    assert redis_client().keys(f"{PENDING_PREFIX}*") == []
    assert db.session.scalars(select(SmsMessage)).all() == []


def test_two_different_entries_are_refused_and_0_goes_back_to_the_first(
    client: FlaskClient, member: Member
) -> None:
    phone = Phone(client)
    phone.dial()
    phone.press(PIN)
    phone.press("5")
    phone.press("0722334455")
    mismatch = phone.press("0722334456")
    assert "did not match" in mismatch and "Enter the new number again" in mismatch
    assert "Enter your new phone number" in phone.press("0")  # back to the first entry
    phone.press("0722334455")
    # One number written two ways is one number.
    assert "To change your SACCO number to 0722334455," in phone.press("254722334455")
    assert "Change your SACCO number to 0722334455?" in phone.press(ID_NUMBER)
    assert "We sent a code" in phone.press(PIN)
    assert redis_client().exists(PENDING_KEY) == 1


def test_a_wrong_pin_here_counts_toward_the_same_lockout_as_the_login_pin(
    client: FlaskClient, member: Member
) -> None:
    phone = at_pin_screen(client)
    assert "Tries left: 2" in phone.press("1111")  # one wrong here...
    login = Phone(client)
    login.dial()
    assert "Tries left: 1" in login.press("2222")  # ...counts at the next login...
    locked = phone.press("3333")  # ...and the third, back here, locks USSD
    assert locked.startswith("END ") and "locked until" in locked
    db.session.expire_all()
    assert db.session.get(Member, member.id).locked_until > utcnow()
    templates = db.session.scalars(select(SmsMessage.template)).all()
    assert templates == ["pin_locked"]  # no code went anywhere
    assert redis_client().exists(PENDING_KEY) == 0
    assert "locked until" in Phone(client).dial()


def test_three_wrong_codes_across_dials_cancel_the_change(
    client: FlaskClient, member: Member
) -> None:
    otp = request_change(client)
    first = Phone(client, NEW)
    first.dial()
    assert "The code is 6 digits" in first.press("12345")  # a typo is not a try
    assert "Tries left: 2" in first.press(wrong(otp))
    second = Phone(client, NEW)  # the count is the change's, not the session's
    second.dial()
    assert "Tries left: 1" in second.press(wrong(otp))
    cancelled = second.press(wrong(otp))
    assert cancelled.startswith("END ") and "cancelled" in cancelled
    assert redis_client().exists(PENDING_KEY) == 0
    assert member_phone(member.id) == OLD_MSISDN
    assert "not registered" in Phone(client, NEW).dial()  # the right code is no use now
    assert db.session.scalars(select(AuditLog).where(AuditLog.action.like("%phone%"))).all() == []


def test_an_expired_change_makes_the_new_number_unknown_again(
    client: FlaskClient, member: Member
) -> None:
    request_change(client)
    redis_client().pexpire(PENDING_KEY, 1)
    time.sleep(0.05)
    reply = Phone(client, NEW).dial()
    assert reply.startswith("END ") and "not registered" in reply
    assert member_phone(member.id) == OLD_MSISDN


def test_a_change_that_expires_while_the_code_is_typed_ends_politely(
    client: FlaskClient, member: Member
) -> None:
    otp = request_change(client)
    new = Phone(client, NEW)
    new.dial()
    redis_client().delete(PENDING_KEY)
    reply = new.press(otp)
    assert reply.startswith("END ") and "expired" in reply
    assert member_phone(member.id) == OLD_MSISDN


def test_a_number_another_member_got_meanwhile_is_refused_at_the_code(
    client: FlaskClient, member: Member
) -> None:
    otp = request_change(client)
    new = Phone(client, NEW)
    new.dial()
    make_member(phone="0722334455")  # joined between the dial and the code
    reply = new.press(otp)
    assert reply.startswith("END ") and "belongs to another member" in reply
    assert member_phone(member.id) == OLD_MSISDN
    assert db.session.scalars(select(SmsMessage.template)).all() == ["phone_change_otp"]


@pytest.fixture
def rival_insert(app: Flask) -> Iterator[list[bool]]:
    """Another member takes the new number after the re-check, just before our UPDATE
    (what a concurrent commit looks like to us): written on the same connection, so the
    race is exact on SQLite and PostgreSQL alike. The list says whether it fired."""
    fired: list[bool] = []

    def insert_rival(session: Session, flush_context: object, instances: object) -> None:
        moving = [m for m in session.dirty if isinstance(m, Member) and m.phone == NEW_MSISDN]
        if moving and not fired:
            fired.append(True)
            session.connection().execute(
                Member.__table__.insert().values(name="Rival", phone=NEW_MSISDN)
            )

    event.listen(Session, "before_flush", insert_rival)
    try:
        yield fired
    finally:
        event.remove(Session, "before_flush", insert_rival)


def test_a_unique_violation_in_a_race_gives_a_clear_refusal(
    client: FlaskClient, member: Member, rival_insert: list[bool]
) -> None:
    otp = request_change(client)
    new = Phone(client, NEW)
    new.dial()
    reply = new.press(otp)
    assert rival_insert == [True]
    assert reply.startswith("END ") and "belongs to another member" in reply
    assert member_phone(member.id) == OLD_MSISDN
    assert db.session.scalar(select(Member).where(Member.phone == NEW_MSISDN)) is None
    assert db.session.scalars(select(AuditLog).where(AuditLog.action.like("%phone%"))).all() == []


@pytest.mark.parametrize("language", ["en", "sw"])
def test_every_screen_fits_182_gsm7_characters_in_both_languages(
    client: FlaskClient, language: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every screen, error and ending of this menu driven over HTTP: the Phone helper checks
    each reply's length and alphabet, and the engine logs any screen it had to cut."""
    member = make_member(
        phone="0711223344",
        name="Bartholomew-Nyambura Wanjiku",
        language=language,
        national_id=ID_NUMBER,
    )
    member_set_pin(member_id=member.id, pin=PIN)
    make_member(phone="0733000111")
    replies: list[str] = []
    with caplog.at_level(logging.ERROR, logger="app.ussd"):
        old = Phone(client)
        old.dial()
        for entry in (PIN, "5", "", "07", "0711223344", "0733000111", "0722334455"):
            replies.append(old.press(entry))
        for entry in ("", "0722334456", "0722334455", "", "XX1", ID_NUMBER, "", "1111", PIN):
            replies.append(old.press(entry))  # ends: the code is on its way
        otp = otp_sent_to(NEW_MSISDN)
        new = Phone(client, NEW)
        replies.append(new.dial())
        replies += [new.press(entry) for entry in ("", "12", wrong(otp), otp)]  # ends: done

        # Now from NEW: the endings the happy path does not reach.
        replies.append(at_pin_screen_from(client, NEW, "0733000222").press(PIN))
        cancel = Phone(client, "+254733000222")
        replies.append(cancel.dial())
        code = otp_sent_to("254733000222")
        replies += [cancel.press(wrong(code)) for _ in range(3)]  # ends: cancelled
        replies.append(at_pin_screen_from(client, NEW, "0733000333").press(PIN))
        expire = Phone(client, "+254733000333")
        expire.dial()
        redis_client().delete(f"{PENDING_PREFIX}254733000333")
        replies.append(expire.press(otp_sent_to("254733000333")))  # ends: expired
        lock = at_pin_screen_from(client, NEW, "0733000444")
        replies += [lock.press("1111"), lock.press("2222"), lock.press("3333")]  # ends: locked
    assert not [r for r in caplog.records if "ussd screen over" in r.getMessage()]
    ends = [r for r in replies if r.startswith("END ")]
    assert len(ends) == 7  # code sent three times, done, cancelled, expired, locked
    words = {
        "en": ("Enter your new phone number", "did not match", "Wrong code", "cancelled"),
        "sw": ("Weka nambari yako mpya", "hazikulingana", "si sahihi", "Ubadilishaji"),
    }[language]
    for word in words:
        assert any(word in r for r in replies), word
    if language == "sw":
        assert not [r for r in replies if "Enter" in r or "Wrong" in r]


def test_every_text_is_gsm7_in_both_languages_and_fits_with_its_longest_error() -> None:
    """The same bound computed from the words themselves, with worst-case data, so a
    screen the HTTP walk above does not reach cannot grow past 182 unnoticed."""
    worst = {"phone": "0799999999", "minutes": OTP_MINUTES, "code": "*384*96#", "digits": 6}
    worst |= {"left": 2, "time": "23:59"}

    def fmt(text: str) -> str:
        return text.format(**worst)

    screens = {  # body, whether it has the nav line, the errors that can show above it
        "phone_new": (True, ["phone_bad", "phone_same", "phone_taken", "error_empty"]),
        "phone_again": (True, ["phone_mismatch", "error_empty"]),
        "phone_id": (True, ["factor_wrong", "error_empty"]),
        "phone_pin": (True, ["pin_wrong", "error_empty"]),
        "phone_otp": (False, ["otp_format", "otp_wrong", "error_empty"]),
    }
    for language in ("en", "sw"):
        for key, entry in TEXT.items():
            assert set(entry) == {"en", "sw"}, key
            assert set(fmt(entry[language])) <= GSM7_BASIC, (key, language)
            assert len(fmt(entry[language])) <= MAX_SCREEN, (key, language)
        for key, (nav, errors) in screens.items():
            body = fmt(TEXT[key][language]) + (f"\n{t('nav', language)}" if nav else "")
            for error in errors:
                shown = fmt(TEXT[error][language]) if error in TEXT else t(error, language, **worst)
                assert len(f"{shown}\n{body}") <= MAX_SCREEN, (key, error, language)


def at_pin_screen_from(client: FlaskClient, current: str, new: str) -> Phone:
    """Through menu 5 to the PIN screen, from the member's `current` number, any language."""
    phone = Phone(client, current)
    phone.dial()
    phone.press(PIN)
    phone.press("5")
    phone.press(new)
    assert phone.press(new).startswith("CON ")
    assert phone.press(ID_NUMBER).startswith("CON ")
    return phone


def otp_sent_to(msisdn: str) -> str:
    """The code in the newest OTP SMS to `msisdn` (the outbox body: its one home)."""
    body = db.session.scalars(
        select(SmsMessage.body)
        .where(SmsMessage.template == "phone_change_otp", SmsMessage.phone == msisdn)
        .order_by(SmsMessage.id.desc())
    ).first()
    assert body is not None, f"no code went to {msisdn}"
    found = re.search(r"\b(\d{6})\b", body)
    assert found, body
    return found.group(1)


def test_a_wrong_id_number_here_counts_toward_the_same_lockout(
    client: FlaskClient, member: Member
) -> None:
    phone = Phone(client)
    phone.dial()
    phone.press(PIN)
    for entry in ("5", "0722334455", "0722334455"):
        phone.press(entry)
    assert "Tries left: 2" in phone.press("11111111")
    assert "Tries left: 1" in phone.press("23456780")
    locked = phone.press("2345678")
    assert locked.startswith("END ") and "locked until" in locked
    templates = db.session.scalars(select(SmsMessage.template)).all()
    assert templates == ["pin_locked"]  # no code went anywhere
    assert redis_client().keys(f"{PENDING_PREFIX}*") == []


def test_a_session_resumed_at_the_pin_screen_is_asked_the_id_number_again(
    client: FlaskClient, member: Member
) -> None:
    """The ID number answered in a session that dropped does not carry over: the next
    dial's "Continue" lands on the PIN screen, and the PIN there leads back to the ID."""
    at_pin_screen(client)  # then the session drops
    again = Phone(client)
    again.dial()
    assert "cut off" in again.press(PIN)
    assert "Enter your PIN to confirm" in again.press("1")  # continue
    assert "enter your ID number" in again.press(PIN)
    assert redis_client().keys(f"{PENDING_PREFIX}*") == []
    assert "Enter your PIN to confirm" in again.press(ID_NUMBER)
    assert "We sent a code" in again.press(PIN)


def test_a_member_without_an_id_number_is_sent_to_a_branch(client: FlaskClient) -> None:
    member = make_member(phone="0711223344", national_id=None)
    member_set_pin(member_id=member.id, pin=PIN)
    phone = Phone(client)
    phone.dial()
    phone.press(PIN)
    reply = phone.press("5")
    assert reply.startswith("END ") and "visit a SACCO branch with your ID" in reply
    assert redis_client().keys(f"{PENDING_PREFIX}*") == []
