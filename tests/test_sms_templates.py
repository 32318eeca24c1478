"""Every template in both languages, rendered with the longest data it can meet.

Run with `pytest -s` to see the table of characters and segments per template.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest

from app.sms_templates import (
    GSM7_BASIC,
    GSM7_EXTENDED,
    REMINDER_TEMPLATES,
    TEMPLATES,
    SmsTemplateError,
    gsm7_segments,
    is_gsm7,
    kes,
    render_sms,
    template_params,
)

BIG = Decimal("9999999.99")
# The longest value each parameter takes in practice.
WORST: dict[str, object] = {
    "amount": BIG,
    "savings_balance": BIG,
    "balance_left": BIG,
    "fee": BIG,
    "first_installment": BIG,
    "savings": BIG,
    "shares": BIG,
    "loan_balance": BIG,
    "receipt": "UAB1C2D3E4",  # M-PESA receipts are 10 characters
    "loan_no": "L999999 +9",  # one member, several loans in the same reminder
    "due_date": date(2026, 12, 31),
    "first_due_date": date(2026, 12, 31),
    "date": date(2026, 12, 31),
    "days": 999,
    "minutes": 1440,
    "otp": "12345678",
    "phone_tail": "3344",
    "applicant": "Wanjiku Nyambura Kamau-Odhiambo",  # a guarantee request names the applicant
    "guarantor": "W*** N*** K***",  # masked, as the applicant reads a guarantor
    "borrower": "Wanjiku Nyambura Kamau-Odhiambo",  # a default notice names the borrower
    "free": BIG,  # a guarantor's free deposits after pledging
    "ussd": "*384*96#",
    "paybill": "9999999",  # shortcodes are 5 to 7 digits
    "account": "M99999999999",  # member_no column is 12 characters
    "reason": "The M-PESA request was cancelled by the user",
    "year": 2026,  # a dividend run's year
    "dividend": BIG,
    "interest": BIG,
    "tax": BIG,
    "net": BIG,
    "moved": BIG,  # a standing order: what moved of what it asks
    "asked": BIG,
    "owed": BIG,  # a member's exit: what their loans took, and the refund
    "refund": BIG,
    "target": "mkopo L999999",  # a standing order's target, as the member reads it
    "lines": "\n".join(
        f"31/12 Repayment L999999 {kes(BIG)}" for _ in range(5)
    ),  # what a statement shows: a few short lines
}
LANGUAGES = ("en", "sw")


def render_worst(template: str, language: str) -> str:
    return render_sms(template, language, **{k: WORST[k] for k in template_params(template)})


def test_every_template_in_both_languages_is_gsm7_and_reminders_fit_one_segment() -> None:
    rows = []
    for template in TEMPLATES:
        assert set(TEMPLATES[template]) == set(LANGUAGES), template
        for language in LANGUAGES:
            body = render_worst(template, language)
            rows.append((template, language, len(body), gsm7_segments(body)))
            bad = sorted({ch for ch in body if ch not in GSM7_BASIC | GSM7_EXTENDED})
            assert is_gsm7(body), f"{template}/{language} has non-GSM-7 characters {bad}"
            if template in REMINDER_TEMPLATES:
                assert gsm7_segments(body) == 1, f"{template}/{language}: {len(body)} chars"
            else:
                assert gsm7_segments(body) <= 3, f"{template}/{language} is too long"
    print(f"\n{'template':24} {'lang':4} {'chars':>5} {'segments':>8}")
    for template, language, chars, segments in rows:
        print(f"{template:24} {language:4} {chars:5} {segments:8}")


def test_both_languages_need_the_same_parameters() -> None:
    from string import Formatter

    for template, texts in TEMPLATES.items():
        fields = [
            {name for _, name, _, _ in Formatter().parse(texts[lang]) if name} for lang in LANGUAGES
        ]
        assert fields[0] == fields[1], template


def test_reminders_are_the_ones_the_jobs_send() -> None:
    assert set(REMINDER_TEMPLATES) == {
        "reminder_due_3d",
        "reminder_due_today",
        "reminder_overdue_1d",
        "reminder_overdue_7d",
        "reminder_overdue_30d",
        "promise_due_tomorrow",
        "promise_broken",
        "reminder_agreement_due",
    }


def test_help_lists_the_keywords_in_each_language() -> None:
    english = render_sms("help", "en")
    swahili = render_sms("help", "sw")
    for word in ("BAL", "STMT", "HELP", "STOP", "START", "YES/NO"):
        assert word in english
    for word in ("SALIO", "TAARIFA", "MSAADA", "SIMAMA", "ANZA", "NDIO/HAPANA"):
        assert word in swahili


def test_money_and_dates_are_formatted_for_members() -> None:
    body = render_sms(
        "deposit_received",
        "sw",
        amount=Decimal("1234.5"),
        savings_balance=Decimal("1000000"),
        receipt="UAB1C2D3E4",
    )
    assert body == "Umeweka KES 1,234.50. Salio la akiba ni KES 1,000,000.00. Kumb. UAB1C2D3E4."
    assert kes(Decimal("0.005")) == "KES 0.00"  # half-even, the project's one rounding rule
    assert "31/12/2026" in render_sms(
        "promise_recorded", "en", amount=BIG, date=date(2026, 12, 31), loan_no="L1"
    )


def test_unknown_language_falls_back_to_english() -> None:
    assert render_sms("opted_in", "fr") == render_sms("opted_in", "en")


def test_a_missing_parameter_or_unknown_template_is_a_programming_error() -> None:
    with pytest.raises(SmsTemplateError, match="receipt"):
        render_sms("deposit_received", "en", amount=BIG, savings_balance=BIG)
    with pytest.raises(SmsTemplateError):
        render_sms("no_such_template", "en")
    with pytest.raises(SmsTemplateError):
        render_sms("pin_locked", "en", minutes=1.5)
    with pytest.raises(SmsTemplateError):
        render_sms("promise_recorded", "en", amount=BIG, date=datetime(2026, 1, 1), loan_no="L1")
    assert issubclass(SmsTemplateError, ValueError)


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # extended characters take two septets
        ("€" * 81, 2),
        ("a" * 152 + "€", 1),
        ("a" * 152 + "€" + "a" * 152, 3),  # 306 septets, but an escape pair is never split
        ("a" * 159 + "€", 2),
        ("a" * 70 + "\u2019", 2),  # one curly quote: UCS-2, 70 per segment
        ("a" * 69 + "\u2019", 1),
        ("a" * 134, 1),
        ("\u2019" * 134, 2),
        ("\u2019" * 135, 3),
    ],
)
def test_segment_counting(text: str, segments: int) -> None:
    assert gsm7_segments(text) == segments


def test_gsm7_detection() -> None:
    assert is_gsm7("Umeweka KES 1,000.00 @ 10% [ok] {x} ~ | ^ \\ €")
    assert not is_gsm7("Don\u2019t")  # curly apostrophe
    assert not is_gsm7("Asante \U0001f600")
    assert not is_gsm7("\x1b")  # ESC alone is not a character a member can send
