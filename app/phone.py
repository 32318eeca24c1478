"""Kenyan mobile numbers in the one form we store: 2547XXXXXXXX or 2541XXXXXXXX."""

from __future__ import annotations

import re

from app.errors import SaccoError

_DIGITS = re.compile(r"[\s\-()]")
_VALID = re.compile(r"^254[17]\d{8}$")


class PhoneError(SaccoError):
    pass


def normalise_phone(raw: str) -> str:
    """Accept 07…, 01…, 7…, 1…, +254…, 254… and return 254XXXXXXXXX, else PhoneError."""
    value = _DIGITS.sub("", raw or "")
    if value.startswith("+"):
        value = value[1:]
    if value.startswith("0") and len(value) == 10:
        value = "254" + value[1:]
    elif len(value) == 9 and value[0] in "17":
        value = "254" + value
    if not _VALID.match(value):
        raise PhoneError(f"not a Kenyan mobile number: {raw!r} (use 07XXXXXXXX or 2547XXXXXXXX)")
    return value


def e164(phone: str) -> str:
    """The +254… form Africa's Talking sends and expects."""
    return "+" + normalise_phone(phone)
