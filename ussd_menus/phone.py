"""Menu 5, Update Phone Number: its screens, and the first hop of a dial from the new
number (which completes the change with the OTP).

    main 5 -> phone_new -> phone_again -> phone_id -> phone_pin
        -> END (code sent by SMS to the new number)
    (dial from the new number, a change pending) -> phone_otp -> END (changed)

A member with no ID number on file is refused at main 5 in words and sent to a branch:
the PIN and the caller id would be all that moved the account. Refused on the same screen
with a short error: not a Kenyan mobile, the member's own number, another member's number
(phone_new); the two entries differing (phone_again); a wrong ID number (phone_id) or PIN
(phone_pin), both counted toward the login lockout. Session state holds the new number
and the session id the ID number was answered in: never the ID number or the PIN
(checked in the hop they arrive) nor the code (never seen here until the member types it;
app/services/phone_change.py keeps only its hash).

The words live here, not in ussd_menus/text.py, so this menu can change on its own; the
keys shared with the other menus (nav, pin_wrong, locked, inactive) come from there.
"""

from __future__ import annotations

from datetime import datetime

from flask import current_app

from app.extensions import db
from app.models import Member
from app.models.types import utcnow
from app.phone import PhoneError, normalise_phone
from app.services.members import (
    PIN_TRIES,
    PinLocked,
    member_check_pin,
    member_check_second_factor,
)
from app.services.phone_change import (
    OTP_DIGITS,
    OTP_MINUTES,
    OtpCancelled,
    OtpWrong,
    PhoneChangeError,
    phone_change_confirm,
    phone_change_pending,
    phone_change_request,
    phone_change_validate,
)
from app.ussd.engine import End, Goto, Hop, Invalid, Screen, Step
from ussd_menus.text import t

# GSM-7 only; every screen with its longest error and data fits 182 characters
# (tests/test_ussd_phone_change.py renders each one).
TEXT: dict[str, dict[str, str]] = {
    "phone_new": {
        "en": "Enter your new phone number (07XXXXXXXX):",
        "sw": "Weka nambari yako mpya ya simu (07XXXXXXXX):",
    },
    "phone_again": {
        "en": "Enter the new number again:",
        "sw": "Weka nambari mpya tena:",
    },
    "phone_id": {
        "en": "To change your SACCO number to {phone}, enter your ID number:",
        "sw": "Kubadilisha nambari yako ya SACCO kuwa {phone}, weka nambari ya kitambulisho chako:",
    },
    "phone_no_id": {
        "en": "We have no ID number on file for you. To change your number, visit a SACCO "
        "branch with your ID.",
        "sw": "Hatuna nambari ya kitambulisho chako. Kubadilisha nambari, tembelea tawi la "
        "SACCO na kitambulisho chako.",
    },
    "phone_pin": {
        "en": "Change your SACCO number to {phone}? Enter your PIN to confirm:",
        "sw": "Badilisha nambari yako ya SACCO kuwa {phone}? Weka PIN yako kuthibitisha:",
    },
    "phone_bad": {
        "en": "That is not a Kenyan mobile number.",
        "sw": "Hiyo si nambari ya simu ya Kenya.",
    },
    "phone_same": {
        "en": "That is your SACCO number already.",
        "sw": "Hiyo tayari ni nambari yako ya SACCO.",
    },
    "phone_taken": {
        "en": "That number belongs to another member.",
        "sw": "Nambari hiyo ni ya mwanachama mwingine.",
    },
    "phone_mismatch": {
        "en": "The numbers did not match.",
        "sw": "Nambari hazikulingana.",
    },
    "phone_code_sent": {
        "en": "We sent a code by SMS to {phone}. Within {minutes} minutes, dial {code} "
        "from that phone and enter the code to finish.",
        "sw": "Tumetuma nambari ya siri kwa SMS kwa {phone}. Ndani ya dakika {minutes}, "
        "piga {code} kutoka simu hiyo na uweke nambari hiyo kumaliza.",
    },
    "phone_otp": {
        "en": "SACCO: to make this phone your SACCO number, enter the {digits}-digit code "
        "we sent by SMS:",
        "sw": "SACCO: kufanya simu hii nambari yako ya SACCO, weka nambari ya siri ya "
        "tarakimu {digits} tuliyotuma kwa SMS:",
    },
    "otp_format": {
        "en": "The code is {digits} digits.",
        "sw": "Nambari ya siri ni tarakimu {digits}.",
    },
    "otp_wrong": {
        "en": "Wrong code. Tries left: {left}.",
        "sw": "Nambari ya siri si sahihi. Majaribio yaliyobaki: {left}.",
    },
    "otp_cancelled": {
        "en": "Too many wrong codes. The number change is cancelled. Dial from your old "
        "number to start again.",
        "sw": "Nambari za siri zisizo sahihi nyingi. Ubadilishaji umeghairiwa. Piga kutoka "
        "nambari yako ya zamani kuanza upya.",
    },
    "phone_expired": {
        "en": "The code has expired. Dial from your old number to start again.",
        "sw": "Nambari ya siri imeisha muda. Piga kutoka nambari yako ya zamani kuanza upya.",
    },
    "phone_done": {
        "en": "Done. This phone is now your SACCO number. Dial {code} again and enter "
        "your PIN to continue.",
        "sw": "Imekamilika. Simu hii sasa ni nambari yako ya SACCO. Piga {code} tena na "
        "uweke PIN yako kuendelea.",
    },
}


def _t(key: str, language: str, **params: object) -> str:
    entry = TEXT[key]
    return entry.get(language, entry["en"]).format(**params)


def _lang(hop: Hop) -> str:
    return hop.session.language


def _local(phone: str) -> str:
    """254712345678 -> 0712345678: how members write their numbers."""
    return "0" + phone[3:]


def _service_code() -> str:
    return current_app.config["SETTINGS"].USSD_SERVICE_CODE


def _with_nav(hop: Hop, body: str) -> str:
    return f"{body}\n{t('nav', _lang(hop))}"


def _locked_text(until: datetime, language: str) -> str:
    tz = current_app.config["SETTINGS"].tz
    return t("locked", language, time=until.astimezone(tz).strftime("%H:%M"))


def _refusal(error: PhoneChangeError, language: str) -> str:
    """A refusal in the member's words (the service's codes are this menu's keys)."""
    if error.code in TEXT:
        return _t(error.code, language)
    if error.code == "inactive":
        return t("inactive", language)
    if error.code == "no_id":
        return _t("phone_no_id", language)
    return t("failure", language)  # no such member: a bug or a deleted row, not input


# -- from the old phone: main 5 ----------------------------------------------------------


def phone_entry(hop: Hop) -> Step:
    """Main menu 5."""
    hop.session.data.pop("new_phone", None)
    hop.session.data.pop("id_session", None)
    member = db.session.get(Member, hop.session.member_id)
    if member is None or not member.national_id:
        return End(_t("phone_no_id", _lang(hop)))
    return Goto("phone_new")


def _phone_new(hop: Hop) -> Step:
    try:
        phone = phone_change_validate(member_id=hop.session.member_id, new_phone=hop.input)
    except PhoneChangeError as exc:
        return Invalid(_refusal(exc, _lang(hop)))
    hop.session.data["new_phone"] = phone  # a number, not a secret
    return Goto("phone_again")


def _phone_again(hop: Hop) -> Step:
    first = hop.session.data.get("new_phone")
    try:
        again = normalise_phone(hop.input)  # 07... and 2547... of one number match
    except PhoneError:
        again = None
    if first is None or again != first:
        # Same screen: 0 goes back to the first entry if that was the mistyped one.
        return Invalid(_t("phone_mismatch", _lang(hop)))
    return Goto("phone_id")


def _phone_id_render(hop: Hop) -> str:
    phone = _local(hop.session.data["new_phone"])
    return _with_nav(hop, _t("phone_id", _lang(hop), phone=phone))


def _phone_id(hop: Hop) -> Step:
    language = _lang(hop)
    try:
        # The ID number only (no activation code): the code sets up a first PIN, nothing more.
        ok = member_check_second_factor(
            member_id=hop.session.member_id, answer=hop.input, now=utcnow(), codes=False
        )
    except PinLocked as exc:
        return End(_locked_text(exc.until, language))
    if not ok:
        member = db.session.get(Member, hop.session.member_id)
        left = PIN_TRIES - (member.failed_pin_count if member else 0)
        return Invalid(t("factor_wrong", language, left=left))
    # Which session answered it: a session resumed later at the PIN screen has another id
    # and is sent back here.
    hop.session.data["id_session"] = hop.request.session_id
    return Goto("phone_pin")


def _phone_pin_render(hop: Hop) -> str:
    phone = _local(hop.session.data["new_phone"])
    return _with_nav(hop, _t("phone_pin", _lang(hop), phone=phone))


def _phone_pin(hop: Hop) -> Step:
    language = _lang(hop)
    member_id = hop.session.member_id
    if hop.session.data.get("id_session") != hop.request.session_id:
        return Goto("phone_id", push=False)
    try:
        # The same check and counter as the login PIN: three wrong here lock USSD too.
        ok = member_check_pin(member_id=member_id, pin=hop.input, now=utcnow())
    except PinLocked as exc:
        return End(_locked_text(exc.until, language))
    if not ok:
        member = db.session.get(Member, member_id)
        left = PIN_TRIES - (member.failed_pin_count if member else 0)
        return Invalid(t("pin_wrong", language, left=left))
    try:
        phone = phone_change_request(member_id=member_id, new_phone=hop.session.data["new_phone"])
    except PhoneChangeError as exc:  # the number was taken between the hops
        return End(_refusal(exc, language))
    return End(
        _t(
            "phone_code_sent",
            language,
            phone=_local(phone),
            minutes=OTP_MINUTES,
            code=_service_code(),
        )
    )


# -- from the new phone: the code --------------------------------------------------------


def phone_change_start(hop: Hop) -> Step | None:
    """A dial from a number that is no member's: a pending change to it? (None: no.)"""
    pending = phone_change_pending(new_phone=hop.request.phone)
    if pending is None:
        return None
    member = db.session.get(Member, pending.member_id)
    if member is None:
        return None
    session = hop.session
    session.member_id = member.id
    session.language = member.language
    session.authed = False  # the code proves the phone, not the member: no menu after it
    if member.status != "active":
        return End(t("inactive", member.language))
    return Goto("phone_otp", push=False)


def _phone_otp(hop: Hop) -> Step:
    language = _lang(hop)
    code = hop.input
    if len(code) != OTP_DIGITS or not code.isdigit():
        return Invalid(_t("otp_format", language, digits=OTP_DIGITS))  # not counted as a try
    try:
        phone_change_confirm(
            member_id=hop.session.member_id,
            new_phone=hop.request.phone,
            otp=code,
            request_id=f"ussd:{hop.request.session_id}",
        )
    except OtpWrong as exc:
        return Invalid(_t("otp_wrong", language, left=exc.left))
    except OtpCancelled:
        return End(_t("otp_cancelled", language))
    except PhoneChangeError as exc:
        if exc.code == "no_pending":  # expired (or replaced) between the dial and now
            return End(_t("phone_expired", language))
        return End(_refusal(exc, language))
    return End(_t("phone_done", language, code=_service_code()))


PHONE_SCREENS: dict[str, Screen] = {
    s.name: s
    for s in (
        Screen(
            "phone_new",
            lambda h: _with_nav(h, _t("phone_new", _lang(h))),
            _phone_new,
            resumable=True,
        ),
        Screen(
            "phone_again",
            lambda h: _with_nav(h, _t("phone_again", _lang(h))),
            _phone_again,
            resumable=True,
        ),
        Screen("phone_id", _phone_id_render, _phone_id),
        Screen("phone_pin", _phone_pin_render, _phone_pin, resumable=True),
        Screen(
            "phone_otp",
            lambda h: _t("phone_otp", _lang(h), digits=OTP_DIGITS),
            _phone_otp,
            authed=False,
            navigable=False,
        ),
    )
}
