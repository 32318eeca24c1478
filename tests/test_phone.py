from __future__ import annotations

import pytest

from app.phone import PhoneError, e164, normalise_phone


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0712345678", "254712345678"),
        ("0112345678", "254112345678"),
        ("+254712345678", "254712345678"),
        ("+254112345678", "254112345678"),
        ("254712345678", "254712345678"),
        ("254112345678", "254112345678"),
        ("712345678", "254712345678"),
        ("112345678", "254112345678"),
        ("0712 345 678", "254712345678"),
        (" 0712 345678 ", "254712345678"),
        ("+254 712 345 678", "254712345678"),
        ("+254-712-345-678", "254712345678"),
        ("(0712) 345-678", "254712345678"),
    ],
)
def test_every_usual_way_of_writing_a_kenyan_mobile_gives_one_stored_form(
    raw: str, expected: str
) -> None:
    assert normalise_phone(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        None,
        "abc",
        "071234567",  # one digit short
        "07123456789",  # one digit long
        "0812345678",  # not a mobile prefix
        "0212345678",  # landline
        "254812345678",
        "+255712345678",  # Tanzania
        "+1 212 555 0100",
        "0712345678x",
        "2547123456789",
        "612345678",
        "++254712345678",
    ],
)
def test_anything_else_is_refused_with_a_hint(raw: str | None) -> None:
    with pytest.raises(PhoneError, match="07XXXXXXXX"):
        normalise_phone(raw)  # type: ignore[arg-type]


def test_e164_adds_the_plus_that_africas_talking_uses() -> None:
    assert e164("0712345678") == "+254712345678"
    assert e164("+254112345678") == "+254112345678"
    with pytest.raises(PhoneError):
        e164("0812345678")
