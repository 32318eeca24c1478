from __future__ import annotations

from decimal import Decimal

import pytest

from app.money import (
    MoneyError,
    is_whole_shillings,
    money_text,
    round_money,
    shillings_up,
    to_decimal,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0.125", "0.12"),  # half to even: 2 is even
        ("0.135", "0.14"),  # half to even: 4 is even
        ("0.145", "0.14"),
        ("-0.125", "-0.12"),
        ("-0.135", "-0.14"),
        ("1.005", "1.00"),
        ("1.0051", "1.01"),
        ("10", "10.00"),
        ("1,234.565", "1234.56"),
        (" 99.999 ", "100.00"),
        (7, "7.00"),
    ],
)
def test_round_money_rounds_half_even_to_the_cent(raw: object, expected: str) -> None:
    result = round_money(raw)

    assert result == Decimal(expected)
    assert result.as_tuple().exponent == -2  # always two places, ready to store or show


@pytest.mark.parametrize(
    ("raw", "multiple", "expected"),
    [
        ("2.5", "1", "2.00"),
        ("3.5", "1", "4.00"),
        ("888.49", "1", "888.00"),
        ("888.51", "1", "889.00"),
        ("12.5", "5", "10.00"),  # 2.5 fives -> 2 fives
        ("17.5", "5", "20.00"),  # 3.5 fives -> 4 fives
        ("149", "100", "100.00"),
        ("150", "100", "200.00"),
        ("250", "100", "200.00"),
        ("0.375", "0.05", "0.40"),
    ],
)
def test_round_money_to_a_multiple_is_half_even_in_units_of_that_multiple(
    raw: str, multiple: str, expected: str
) -> None:
    assert round_money(raw, Decimal(multiple)) == Decimal(expected)


def test_a_zero_multiple_means_cents() -> None:
    assert round_money("2.675", Decimal(0)) == Decimal("2.68")


def test_floats_are_read_through_their_shortest_repr_not_their_binary_value() -> None:
    # Decimal(0.1) would be 0.1000000000000000055511151231257827...
    assert to_decimal(0.1) == Decimal("0.1")
    # 2.675 is really 2.67499999... in binary; via repr it is the 2.675 the user typed.
    assert round_money(2.675) == Decimal("2.68")


@pytest.mark.parametrize(
    "bad", ["abc", "", "1.2.3", "NaN", "Infinity", "-inf", None, True, False, [1], object()]
)
def test_what_cannot_be_money_is_refused(bad: object) -> None:
    with pytest.raises(MoneyError):
        round_money(bad)


@pytest.mark.parametrize(
    ("value", "whole"),
    [("100", True), ("100.00", True), ("100.50", False), ("0.01", False), ("0", True)],
)
def test_whole_shillings(value: str, whole: bool) -> None:
    assert is_whole_shillings(Decimal(value)) is whole


@pytest.mark.parametrize(
    ("owed", "asked"),
    [
        ("2821.01", "2822"),  # one cent over a shilling still asks the next shilling
        ("2821.88", "2822"),
        ("2822.50", "2823"),  # not half-even (2822): paying it must leave nothing behind
        ("2821.00", "2821"),  # a whole amount is asked as it is
        ("0.01", "1"),
    ],
)
def test_what_a_member_pays_is_the_next_whole_shilling_up(owed: str, asked: str) -> None:
    assert shillings_up(Decimal(owed)) == Decimal(asked)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("1234.5"), "1,234.50"),  # cents always shown
        (Decimal("1234567"), "1,234,567.00"),
        (Decimal("12.3456"), "12.3456"),  # a rate's finer places are kept, not rounded away
        (3, "3.00"),
        (None, ""),  # no amount is a blank cell, not "0.00"
    ],
)
def test_money_text_is_how_staff_read_an_amount(value: Decimal | int | None, shown: str) -> None:
    assert money_text(value) == shown
