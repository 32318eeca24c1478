from __future__ import annotations

import json
from datetime import date

import pytest
from click.testing import CliRunner, Result
from flask import Flask

from app.cli.loan import loan_cli
from app.clock import business_today

V1_ARGS = [
    "schedule",
    "--principal",
    "10000",
    "--annual-rate",
    "12",
    "--installments",
    "12",
    "--interest-method",
    "declining",
    "--amortization",
    "equal-installments",
    "--start-date",
    "2026-01-31",
]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(loan_cli, list(args))


def test_json_output_is_the_contract_shape_for_v1() -> None:
    result = invoke(*V1_ARGS, "--json")

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    data = json.loads(result.stdout)
    assert set(data) == {"installments", "totals"}
    assert len(data["installments"]) == 12
    assert data["installments"][0] == {
        "number": 1,
        "due_date": "2026-02-28",
        "principal": "788.49",
        "interest": "100.00",
        "total": "888.49",
        "balance": "9211.51",
    }
    assert data["installments"][-1] == {
        "number": 12,
        "due_date": "2027-01-31",
        "principal": "879.67",
        "interest": "8.80",
        "total": "888.47",
        "balance": "0.00",
    }
    assert data["totals"] == {"principal": "10000.00", "interest": "661.86", "total": "10661.86"}


def test_json_output_is_a_single_line() -> None:
    result = invoke(*V1_ARGS, "--json")

    assert result.stdout.count("\n") == 1


def test_table_has_a_header_a_row_per_installment_and_totals() -> None:
    result = invoke(*V1_ARGS)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 14
    assert lines[0].split() == ["#", "due", "date", "principal", "interest", "total", "balance"]
    assert lines[1].split() == ["1", "2026-02-28", "788.49", "100.00", "888.49", "9211.51"]
    assert lines[12].split() == ["12", "2027-01-31", "879.67", "8.80", "888.47", "0.00"]
    assert lines[-1].split() == ["total", "10000.00", "661.86", "10661.86"]


def test_table_columns_are_aligned() -> None:
    lines = invoke(*V1_ARGS).stdout.splitlines()
    header, first, totals = lines[0], lines[1], lines[-1]

    # Amounts are right-aligned under their headings, the totals under the columns.
    assert header.index("principal") + len("principal") == first.index("788.49") + 6
    assert totals.index("10000.00") + 8 == first.index("788.49") + 6
    assert totals.index("10661.86") + 8 == first.index("888.49") + 6
    assert len({len(line) for line in lines[:-1]}) == 1


def test_flat_equal_principal_and_multiple_options() -> None:
    flat = json.loads(invoke(*V1_ARGS, "--interest-method", "flat", "--json").stdout)
    equal_principal = json.loads(
        invoke(*V1_ARGS, "--amortization", "equal-principal", "--json").stdout
    )
    whole_shillings = json.loads(invoke(*V1_ARGS, "--multiple-of", "1", "--json").stdout)

    assert flat["totals"]["interest"] == "1200.00"
    assert equal_principal["totals"]["interest"] == "650.00"
    assert whole_shillings["installments"][-1]["total"] == "894.18"
    assert whole_shillings["totals"]["interest"] == "662.18"


def test_weekly_frequency() -> None:
    data = json.loads(invoke(*V1_ARGS, "--frequency", "weekly", "--json").stdout)

    assert [row["due_date"] for row in data["installments"][:2]] == ["2026-02-07", "2026-02-14"]


def test_start_date_defaults_to_today(app: Flask) -> None:
    # Today is the business day in the SACCO's time zone, read from the app's settings: the
    # test needs the app, as `sacco loan schedule` has it, not one another test left open.
    args = [arg for arg in V1_ARGS if arg not in ("--start-date", "2026-01-31")]
    data = json.loads(invoke(*args, "--json").stdout)

    assert date.fromisoformat(data["installments"][0]["due_date"]) > business_today()


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("--principal", "-100", "principal"),
        ("--principal", "abc", "principal"),
        ("--annual-rate", "ten", "annual rate"),
        ("--annual-rate", "101", "annual rate"),
        ("--installments", "twelve", "--installments"),
        ("--installments", "0", "installments"),
        ("--interest-method", "compound", "--interest-method"),
        ("--amortization", "balloon", "--amortization"),
        ("--frequency", "daily", "--frequency"),
        ("--multiple-of", "0", "multiple"),
        ("--start-date", "31/01/2026", "--start-date"),
    ],
)
def test_bad_input_prints_one_error_line_and_exits_1(option: str, value: str, reason: str) -> None:
    result = invoke(*V1_ARGS, option, value)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert reason in result.stderr
    assert result.stderr.count("\n") == 1


def test_missing_required_option_is_an_error_line() -> None:
    result = invoke("schedule", "--annual-rate", "12", "--installments", "12")

    assert result.exit_code == 1
    assert result.stderr == "error: --principal is required\n"
