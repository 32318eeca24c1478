from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.money import round_money
from app.services.loan_schedule import (
    AMORTIZATIONS,
    FREQUENCIES,
    INTEREST_METHODS,
    Schedule,
    ScheduleError,
    ScheduleRow,
    due_dates,
    schedule_build,
)

START = date(2026, 1, 15)

# The contract's reference vectors: (principal, interest, installment, balance) per row.
V1_ROWS = [
    ("788.49", "100.00", "888.49", "9211.51"),
    ("796.37", "92.12", "888.49", "8415.14"),
    ("804.34", "84.15", "888.49", "7610.80"),
    ("812.38", "76.11", "888.49", "6798.42"),
    ("820.51", "67.98", "888.49", "5977.91"),
    ("828.71", "59.78", "888.49", "5149.20"),
    ("837.00", "51.49", "888.49", "4312.20"),
    ("845.37", "43.12", "888.49", "3466.83"),
    ("853.82", "34.67", "888.49", "2613.01"),
    ("862.36", "26.13", "888.49", "1750.65"),
    ("870.98", "17.51", "888.49", "879.67"),
    ("879.67", "8.80", "888.47", "0.00"),
]
V1_TOTALS = ("10000.00", "661.86", "10661.86")

V2_ROWS = [
    ("833.33", "100.00", "933.33", "9166.67"),
    ("833.33", "100.00", "933.33", "8333.34"),
    ("833.33", "100.00", "933.33", "7500.01"),
    ("833.33", "100.00", "933.33", "6666.68"),
    ("833.33", "100.00", "933.33", "5833.35"),
    ("833.33", "100.00", "933.33", "5000.02"),
    ("833.33", "100.00", "933.33", "4166.69"),
    ("833.33", "100.00", "933.33", "3333.36"),
    ("833.33", "100.00", "933.33", "2500.03"),
    ("833.33", "100.00", "933.33", "1666.70"),
    ("833.33", "100.00", "933.33", "833.37"),
    ("833.37", "100.00", "933.37", "0.00"),
]
V2_TOTALS = ("10000.00", "1200.00", "11200.00")

V3_ROWS = [
    ("833.33", "100.00", "933.33", "9166.67"),
    ("833.33", "91.67", "925.00", "8333.34"),
    ("833.33", "83.33", "916.66", "7500.01"),
    ("833.33", "75.00", "908.33", "6666.68"),
    ("833.33", "66.67", "900.00", "5833.35"),
    ("833.33", "58.33", "891.66", "5000.02"),
    ("833.33", "50.00", "883.33", "4166.69"),
    ("833.33", "41.67", "875.00", "3333.36"),
    ("833.33", "33.33", "866.66", "2500.03"),
    ("833.33", "25.00", "858.33", "1666.70"),
    ("833.33", "16.67", "850.00", "833.37"),
    ("833.37", "8.33", "841.70", "0.00"),
]
V3_TOTALS = ("10000.00", "650.00", "10650.00")


def build_v(**overrides: object) -> Schedule:
    kwargs: dict[str, Any] = {
        "principal": "10000",
        "annual_rate": "12",
        "installments": 12,
        "start_date": START,
    }
    kwargs.update(overrides)
    return schedule_build(**kwargs)


def as_strings(row: ScheduleRow) -> tuple[str, str, str, str]:
    return (str(row.principal), str(row.interest), str(row.total), str(row.balance))


@pytest.mark.parametrize(
    ("overrides", "rows", "totals"),
    [
        pytest.param({}, V1_ROWS, V1_TOTALS, id="V1-declining-equal-installments"),
        pytest.param({"interest_method": "flat"}, V2_ROWS, V2_TOTALS, id="V2-flat"),
        pytest.param(
            {"amortization": "equal_principal"}, V3_ROWS, V3_TOTALS, id="V3-equal-principal"
        ),
    ],
)
def test_reference_vectors_to_the_cent(
    overrides: dict[str, Any],
    rows: list[tuple[str, str, str, str]],
    totals: tuple[str, str, str],
) -> None:
    schedule = build_v(**overrides)

    assert [as_strings(row) for row in schedule.rows] == rows
    assert [row.number for row in schedule.rows] == list(range(1, 13))
    assert (
        str(schedule.total_principal),
        str(schedule.total_interest),
        str(schedule.total),
    ) == totals


def test_v1_emi_matches_the_contract() -> None:
    schedule = build_v()

    assert {row.total for row in schedule.rows[:-1]} == {Decimal("888.49")}


def test_v1_with_an_installment_multiple_of_one() -> None:
    schedule = build_v(multiple_of=1)

    assert {row.total for row in schedule.rows[:-1]} == {Decimal("888.00")}
    assert schedule.rows[-1].total == Decimal("894.18")
    assert schedule.total_interest == Decimal("662.18")
    assert schedule.total_principal == Decimal("10000.00")
    assert schedule.rows[-1].balance == Decimal("0.00")


def test_equal_principal_ignores_the_multiple() -> None:
    assert build_v(amortization="equal_principal", multiple_of=50) == build_v(
        amortization="equal_principal"
    )


def test_as_dict_is_the_cli_shape() -> None:
    data = build_v().as_dict()

    assert data["installments"][0] == {
        "number": 1,
        "due_date": "2026-02-15",
        "principal": "788.49",
        "interest": "100.00",
        "total": "888.49",
        "balance": "9211.51",
    }
    assert len(data["installments"]) == 12
    assert data["totals"] == {"principal": "10000.00", "interest": "661.86", "total": "10661.86"}


def test_amounts_given_as_int_str_or_decimal_agree() -> None:
    expected = build_v()

    assert build_v(principal=10000, annual_rate=12) == expected
    assert build_v(principal=Decimal("10000.00"), annual_rate=Decimal("12.0")) == expected


def test_monthly_due_dates_clamp_to_month_end_without_drifting() -> None:
    assert due_dates(start_date=date(2026, 1, 31), installments=4, frequency="monthly") == [
        date(2026, 2, 28),
        date(2026, 3, 31),
        date(2026, 4, 30),
        date(2026, 5, 31),
    ]


def test_monthly_due_dates_in_a_leap_year() -> None:
    assert due_dates(start_date=date(2028, 1, 31), installments=2, frequency="monthly") == [
        date(2028, 2, 29),
        date(2028, 3, 31),
    ]


def test_monthly_due_dates_cross_the_year() -> None:
    dates = due_dates(start_date=date(2026, 11, 30), installments=15, frequency="monthly")

    assert dates[0] == date(2026, 12, 30)
    assert dates[1] == date(2027, 1, 30)
    assert dates[2] == date(2027, 2, 28)
    assert dates[-1] == date(2028, 2, 29)


def test_schedule_rows_carry_the_due_dates() -> None:
    schedule = build_v(start_date=date(2026, 1, 31))

    assert [row.due_date for row in schedule.rows[:3]] == [
        date(2026, 2, 28),
        date(2026, 3, 31),
        date(2026, 4, 30),
    ]
    assert schedule.rows[-1].due_date == date(2027, 1, 31)


def test_weekly_schedule() -> None:
    schedule = build_v(principal="5200", annual_rate="52", installments=4, frequency="weekly")

    assert [row.due_date for row in schedule.rows] == [
        date(2026, 1, 22),
        date(2026, 1, 29),
        date(2026, 2, 5),
        date(2026, 2, 12),
    ]
    # 52% a year is 1% a week: the first week's interest is 1% of 5,200.
    assert schedule.rows[0].interest == Decimal("52.00")
    assert schedule.total_principal == Decimal("5200.00")
    assert schedule.rows[-1].balance == Decimal("0.00")


def test_weekly_flat_interest_uses_the_weekly_rate() -> None:
    schedule = build_v(
        principal="5200",
        annual_rate="52",
        installments=10,
        frequency="weekly",
        interest_method="flat",
    )

    assert schedule.total_interest == Decimal("520.00")
    assert {row.interest for row in schedule.rows} == {Decimal("52.00")}


@pytest.mark.parametrize("interest_method", INTEREST_METHODS)
@pytest.mark.parametrize("amortization", AMORTIZATIONS)
def test_zero_rate_repays_principal_only(interest_method: str, amortization: str) -> None:
    schedule = build_v(annual_rate=0, interest_method=interest_method, amortization=amortization)

    assert schedule.total_interest == Decimal("0.00")
    assert [row.principal for row in schedule.rows] == [Decimal("833.33")] * 11 + [
        Decimal("833.37")
    ]
    assert schedule.rows[-1].balance == Decimal("0.00")


def test_single_installment_repays_everything() -> None:
    schedule = build_v(installments=1)

    assert as_strings(schedule.rows[0]) == ("10000.00", "100.00", "10100.00", "0.00")


def test_large_multiple_never_overpays_or_goes_negative() -> None:
    # 110 over 4 months at 0%: 27.50 rounds to 50, so the loan is repaid by row 3.
    schedule = build_v(principal="110", annual_rate=0, installments=4, multiple_of=50)

    assert [row.principal for row in schedule.rows] == [
        Decimal("50.00"),
        Decimal("50.00"),
        Decimal("10.00"),
        Decimal("0.00"),
    ]
    assert schedule.rows[-1].balance == Decimal("0.00")


def test_installment_rounded_below_the_interest_pays_interest_only() -> None:
    # 100 at 60% over 10 months: the 14.24 installment rounds to 0 at a multiple of 50.
    schedule = build_v(principal="100", annual_rate=60, installments=10, multiple_of=50)

    assert all(row.principal == 0 for row in schedule.rows[:-1])
    assert all(row.interest == Decimal("5.00") for row in schedule.rows)
    assert schedule.rows[-1].principal == Decimal("100.00")
    assert schedule.rows[-1].balance == Decimal("0.00")


def test_tiny_flat_interest_spread_without_a_negative_last_row() -> None:
    # 0.90 of interest over 120 rows: 0.0075 a row would round to 0.01 and overshoot.
    schedule = build_v(principal="1.00", annual_rate=9, installments=120, interest_method="flat")

    assert schedule.total_interest == Decimal("0.90")
    assert all(row.interest >= 0 and row.principal >= 0 for row in schedule.rows)
    assert len({row.total for row in schedule.rows[:-1]}) == 1


def test_schedule_is_immutable() -> None:
    schedule = build_v()

    with pytest.raises(AttributeError):
        schedule.rows[0].principal = Decimal(0)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"principal": "0"}, "principal"),
        ({"principal": "-5"}, "principal"),
        ({"principal": "abc"}, "principal"),
        ({"principal": "10.005"}, "fractions of a cent"),
        ({"principal": "NaN"}, "principal"),
        ({"principal": "1e40"}, "more than the books can hold"),
        ({"principal": "1e-40"}, "fractions of a cent"),
        ({"annual_rate": "-1"}, "annual rate"),
        ({"annual_rate": "100.01"}, "annual rate"),
        ({"annual_rate": "twelve"}, "annual rate"),
        ({"installments": 0}, "installments"),
        ({"installments": 601}, "installments"),
        ({"installments": "12"}, "installments"),
        ({"installments": True}, "installments"),
        ({"interest_method": "compound"}, "interest method"),
        ({"amortization": "balloon"}, "amortization"),
        ({"frequency": "daily"}, "frequency"),
        ({"multiple_of": 0}, "multiple"),
        ({"multiple_of": "-1"}, "multiple"),
        ({"start_date": "2026-01-01"}, "start date"),
    ],
)
def test_bad_input_raises_schedule_error(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        build_v(**overrides)


def test_schedule_error_is_a_value_error() -> None:
    assert issubclass(ScheduleError, ValueError)


def test_boundaries_are_accepted() -> None:
    assert len(build_v(annual_rate=100, installments=600).rows) == 600
    assert build_v(principal="0.01", installments=1).rows[0].principal == Decimal("0.01")


def test_due_dates_past_year_9999_are_an_error() -> None:
    with pytest.raises(ScheduleError, match=r"^due dates run past the year 9999$"):
        due_dates(start_date=date(9999, 6, 1), installments=12, frequency="monthly")
    with pytest.raises(ScheduleError, match=r"^due dates run past the year 9999$"):
        due_dates(start_date=date(9999, 12, 1), installments=10, frequency="weekly")


# Properties over random loans.

cents = st.integers(min_value=100, max_value=500_000_000).map(lambda c: Decimal(c).scaleb(-2))
rates = st.integers(min_value=0, max_value=6_000).map(lambda b: Decimal(b).scaleb(-2))
terms = st.integers(min_value=1, max_value=120)
multiples = st.sampled_from([None, Decimal(1), Decimal(5), Decimal(10), Decimal(50)])
loans = st.fixed_dictionaries(
    {
        "principal": cents,
        "annual_rate": rates,
        "installments": terms,
        "interest_method": st.sampled_from(INTEREST_METHODS),
        "amortization": st.sampled_from(AMORTIZATIONS),
        "frequency": st.sampled_from(FREQUENCIES),
        "multiple_of": multiples,
    }
)


def level_until_paid_off(values: list[Decimal], balances: list[Decimal]) -> bool:
    """Equal values, except that the row which pays the loan off early may be smaller
    and the rows after it zero."""
    if not values:
        return True
    level = values[0]
    for index, value in enumerate(values):
        if value != level:
            return (
                value < level and balances[index] == 0 and all(v == 0 for v in values[index + 1 :])
            )
    return True


@settings(max_examples=300, deadline=None)
@given(loan=loans)
def test_schedule_invariants(loan: dict[str, Any]) -> None:
    schedule = schedule_build(start_date=START, **loan)
    rows = schedule.rows
    principals = [row.principal for row in rows]
    interests = [row.interest for row in rows]
    totals = [row.total for row in rows]
    balances = [row.balance for row in rows]

    assert len(rows) == loan["installments"]
    assert sum(principals) == loan["principal"]
    assert schedule.total_principal == loan["principal"]
    assert balances[-1] == Decimal("0.00")
    for row in rows:
        assert row.principal >= 0
        assert row.interest >= 0
        assert row.total >= 0
        assert row.total == row.principal + row.interest
        for amount in (row.principal, row.interest, row.total, row.balance):
            assert amount == round_money(amount)
            assert amount.as_tuple().exponent == -2
    opening = [loan["principal"], *balances[:-1]]
    assert all(b == o - p for o, p, b in zip(opening, principals, balances, strict=True))
    assert all(later <= earlier for earlier, later in zip(opening, balances, strict=True))
    assert schedule.total == schedule.total_principal + schedule.total_interest

    if loan["interest_method"] == "flat":
        periods = 12 if loan["frequency"] == "monthly" else 52
        rate = loan["annual_rate"] / periods / 100
        assert schedule.total_interest == round_money(loan["principal"] * rate * len(rows))
        assert len(set(interests[:-1])) <= 1
        assert level_until_paid_off(principals[:-1], balances)
    elif loan["amortization"] == "equal_installments":
        assert level_until_paid_off(totals[:-1], balances)
    else:
        assert level_until_paid_off(principals[:-1], balances)


@settings(max_examples=300, deadline=None)
@given(loan=loans)
def test_large_loans_have_equal_installments_and_a_falling_balance(
    loan: dict[str, Any],
) -> None:
    # Large enough that rounding the installment (by at most half the multiple a row,
    # compounding at the periodic rate) cannot repay the loan before the last row.
    multiple = loan["multiple_of"] or Decimal("0.01")
    count = loan["installments"]
    periods = 12 if loan["frequency"] == "monthly" else 52
    rate = loan["annual_rate"] / periods / 100
    accrued = Decimal(count) if rate == 0 else ((1 + rate) ** count - 1) / rate
    floor = round_money((multiple + Decimal("0.01")) * count * accrued * (1 + rate))
    loan = {**loan, "principal": max(loan["principal"], floor)}
    schedule = schedule_build(start_date=START, **loan)
    rows = schedule.rows
    balances = [loan["principal"], *(row.balance for row in rows)]

    assert all(later < earlier for earlier, later in pairwise(balances))
    if loan["amortization"] == "equal_installments" or loan["interest_method"] == "flat":
        assert len({row.total for row in rows[:-1]}) <= 1
    if loan["amortization"] == "equal_principal":
        assert len({row.principal for row in rows[:-1]}) <= 1


def test_flat_interest_with_an_installment_multiple_rounds_each_installment_to_it() -> None:
    # 10,000 at 12% flat over 12 months: 1,200 interest, 11,200 / 12 = 933.33 a month,
    # which a multiple of 50 makes 950 (principal 850 + interest 100); the last row ends it.
    schedule = build_v(interest_method="flat", multiple_of=50)

    assert {row.total for row in schedule.rows[:-1]} == {Decimal("950.00")}
    assert {row.interest for row in schedule.rows} == {Decimal("100.00")}
    assert schedule.rows[-1].total == Decimal("750.00")
    assert schedule.total_principal == Decimal("10000.00")
    assert schedule.rows[-1].balance == Decimal("0.00")


def test_due_dates_up_to_the_last_month_of_year_9999_are_fine() -> None:
    dates = due_dates(start_date=date(9999, 1, 1), installments=11, frequency="monthly")

    assert dates[-1] == date(9999, 12, 1)


def test_due_dates_from_a_timestamp_count_from_its_day() -> None:
    # A disbursement time (as a payout callback records it) is its day: the same dates.
    stamp = datetime(2026, 1, 31, 23, 59, tzinfo=UTC)
    assert due_dates(start_date=stamp, installments=2, frequency="monthly") == [
        date(2026, 2, 28),
        date(2026, 3, 31),
    ]


def test_due_dates_refuse_an_unknown_frequency_by_name() -> None:
    with pytest.raises(
        ScheduleError, match=r"^unknown frequency 'daily'; expected one of monthly, weekly$"
    ):
        due_dates(start_date=date(2026, 1, 1), installments=2, frequency="daily")
