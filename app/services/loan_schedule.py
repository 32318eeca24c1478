"""Loan repayment schedules, computed the way Apache Fineract does by default.

Pure calculation: no database, no Flask. The conventions and reference vectors are in
shared/contracts/loan-schedules.md; every amount is rounded by `app.money.round_money`.

Decisions where the contract is silent:

- A schedule always has the requested number of rows. When a rounded installment
  (a large multiple, or a tiny loan over many periods) would pay the loan off early,
  the principal of the paying row is capped at the balance and later rows carry no
  principal (for flat loans they still carry their share of the flat interest, which is
  owed for the whole term). When the rounded installment is below the period's
  interest, principal is 0 rather than negative and the row is the interest alone.
  The last row always takes the remaining principal, so the balance ends at 0.00.
- Flat interest repays equal principal either way, so for flat loans the amortization
  only decides whether the installment multiple applies (equal principal ignores it).
- Even shares (equal principal, flat principal and flat interest) are a cent less
  when rounding up would make the first rows add up to more than the total: the rows
  stay equal and the last one is never negative.
- The principal must be in whole cents (rounding it silently would lend a different
  amount from the one asked for) and at most a trillion, far beyond any loan, so that
  a typo like 1e40 is an error rather than a decimal overflow.
- Computation runs at 34 significant digits (Java's DECIMAL128, as Fineract uses) so
  the result does not depend on the caller's decimal context.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, localcontext
from typing import Any

from app.errors import SaccoError
from app.money import CENT, MAX_MONEY, ZERO, MoneyError, money_input, round_money, to_decimal

INTEREST_METHODS = ("declining", "flat")
AMORTIZATIONS = ("equal_installments", "equal_principal")
FREQUENCIES = ("monthly", "weekly")
PERIODS_PER_YEAR = {"monthly": 12, "weekly": 52}
MAX_INSTALLMENTS = 600
MAX_ANNUAL_RATE = Decimal(100)
RATE_STEP = Decimal("0.0001")
PRECISION = 34

Amounts = list[tuple[Decimal, Decimal]]  # (principal, interest) per row


class ScheduleError(SaccoError):
    """Input that cannot make a loan schedule."""


@dataclass(frozen=True)
class ScheduleRow:
    number: int
    due_date: date
    principal: Decimal
    interest: Decimal
    total: Decimal
    balance: Decimal

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "due_date": self.due_date.isoformat(),
            "principal": _money_str(self.principal),
            "interest": _money_str(self.interest),
            "total": _money_str(self.total),
            "balance": _money_str(self.balance),
        }


@dataclass(frozen=True)
class Schedule:
    rows: tuple[ScheduleRow, ...]

    @property
    def total_principal(self) -> Decimal:
        return sum((row.principal for row in self.rows), ZERO)

    @property
    def total_interest(self) -> Decimal:
        return sum((row.interest for row in self.rows), ZERO)

    @property
    def total(self) -> Decimal:
        return sum((row.total for row in self.rows), ZERO)

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of the contract's CLI shape."""
        return {
            "installments": [row.as_dict() for row in self.rows],
            "totals": {
                "principal": _money_str(self.total_principal),
                "interest": _money_str(self.total_interest),
                "total": _money_str(self.total),
            },
        }


def schedule_build(
    *,
    principal: Decimal | int | str,
    annual_rate: Decimal | int | str,
    installments: int,
    interest_method: str = "declining",
    amortization: str = "equal_installments",
    frequency: str = "monthly",
    multiple_of: Decimal | int | str | None = None,
    start_date: date,
) -> Schedule:
    """Build the repayment schedule of a loan disbursed on `start_date`.

    `annual_rate` is a percentage (12 means 12% a year). `multiple_of` rounds the equal
    installment to a multiple (1 for whole shillings); equal principal ignores it.
    """
    amount = _parse_principal(principal)
    rate = _parse_rate(annual_rate)
    count = _parse_installments(installments)
    multiple = _parse_multiple(multiple_of)
    _check_choice("interest method", interest_method, INTEREST_METHODS)
    _check_choice("amortization", amortization, AMORTIZATIONS)
    _check_choice("frequency", frequency, FREQUENCIES)
    dates = due_dates(start_date=start_date, installments=count, frequency=frequency)

    with localcontext() as ctx:
        ctx.prec = PRECISION
        periodic_rate = rate / (PERIODS_PER_YEAR[frequency] * 100)
        if amortization == "equal_principal":
            multiple = None
        if interest_method == "flat":
            amounts = _flat(amount, periodic_rate, count, multiple)
        elif amortization == "equal_principal":
            amounts = _declining_equal_principal(amount, periodic_rate, count)
        else:
            amounts = _declining_equal_installments(amount, periodic_rate, count, multiple)

    if amount + sum((interest for _, interest in amounts), ZERO) > MAX_MONEY:
        raise ScheduleError("principal and interest together are more than the books can hold")
    rows = []
    balance = amount
    for number, (due, (paid, interest)) in enumerate(zip(dates, amounts, strict=True), 1):
        balance -= paid
        rows.append(
            ScheduleRow(
                number=number,
                due_date=due,
                principal=paid,
                interest=interest,
                total=paid + interest,
                balance=balance,
            )
        )
    return Schedule(rows=tuple(rows))


def due_dates(*, start_date: date, installments: int, frequency: str) -> list[date]:
    """Due dates after `start_date` (the disbursement date), one per installment.

    Monthly dates count months from the start rather than from the previous due date,
    so a loan started on the 31st falls due on the last day of short months and goes
    back to the 31st afterwards.
    """
    if isinstance(start_date, dt.datetime):
        start_date = start_date.date()
    if not isinstance(start_date, date):
        raise ScheduleError(f"start date must be a date, not {start_date!r}")
    count = _parse_installments(installments)
    _check_choice("frequency", frequency, FREQUENCIES)
    if frequency == "weekly":
        try:
            return [start_date + timedelta(weeks=n) for n in range(1, count + 1)]
        except OverflowError as exc:
            raise ScheduleError("due dates run past the year 9999") from exc
    return [_add_months(start_date, n) for n in range(1, count + 1)]


def _add_months(start: date, months: int) -> date:
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    if year > dt.MAXYEAR:
        raise ScheduleError("due dates run past the year 9999")
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def _declining_equal_installments(
    amount: Decimal, periodic_rate: Decimal, count: int, multiple: Decimal | None
) -> Amounts:
    if periodic_rate == 0:
        raw = amount / count
    else:
        growth = (1 + periodic_rate) ** count
        raw = amount * periodic_rate * growth / (growth - 1)
    installment = round_money(raw, multiple)
    amounts = []
    balance = amount
    for number in range(1, count + 1):
        interest = round_money(balance * periodic_rate)
        if number == count:
            paid = balance
        else:
            paid = min(max(installment - interest, ZERO), balance)
        amounts.append((paid, interest))
        balance -= paid
    return amounts


def _declining_equal_principal(amount: Decimal, periodic_rate: Decimal, count: int) -> Amounts:
    share = _even_share(amount, count)
    amounts = []
    balance = amount
    for number in range(1, count + 1):
        interest = round_money(balance * periodic_rate)
        paid = balance if number == count else min(share, balance)
        amounts.append((paid, interest))
        balance -= paid
    return amounts


def _flat(amount: Decimal, periodic_rate: Decimal, count: int, multiple: Decimal | None) -> Amounts:
    total_interest = round_money(amount * periodic_rate * count)
    interest_share = _even_share(total_interest, count)
    if multiple is None:
        share = _even_share(amount, count)
    else:
        installment = round_money((amount + total_interest) / count, multiple)
        share = max(installment - interest_share, ZERO)
    amounts = []
    balance, interest_left = amount, total_interest
    for number in range(1, count + 1):
        if number == count:
            paid, interest = balance, interest_left
        else:
            paid, interest = min(share, balance), min(interest_share, interest_left)
        amounts.append((paid, interest))
        balance -= paid
        interest_left -= interest
    return amounts


def _even_share(total: Decimal, count: int) -> Decimal:
    """`total / count` to the cent, a cent less if the first `count - 1` shares would
    exceed the total (tiny totals over many rows), so the last row is never negative."""
    share = round_money(total / count)
    if share * (count - 1) > total:
        share -= CENT
    return share


def _parse_principal(value: object) -> Decimal:
    try:
        return money_input(value, "principal")
    except MoneyError as exc:
        raise ScheduleError(str(exc)) from None


def _parse_rate(value: object) -> Decimal:
    rate = _parse_decimal("annual rate", value)
    if rate < 0 or rate > MAX_ANNUAL_RATE:
        raise ScheduleError(f"annual rate must be between 0 and {MAX_ANNUAL_RATE}, not {value}")
    # What the rate columns hold (Numeric(7, 4)); a finer rate, like 1e-400, is a typo.
    if rate != rate.quantize(RATE_STEP):
        raise ScheduleError(f"annual rate has more than 4 decimal places: {value}")
    return rate.quantize(RATE_STEP)


def _parse_installments(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScheduleError(f"installments must be a whole number, not {value!r}")
    if value < 1 or value > MAX_INSTALLMENTS:
        raise ScheduleError(f"installments must be between 1 and {MAX_INSTALLMENTS}, not {value}")
    return value


def _parse_multiple(value: object) -> Decimal | None:
    if value is None:
        return None
    multiple = _parse_decimal("installment multiple", value)
    if multiple <= 0:
        raise ScheduleError(f"installment multiple must be more than 0, not {value}")
    return multiple


def _parse_decimal(name: str, value: object) -> Decimal:
    try:
        return to_decimal(value)
    except MoneyError:
        raise ScheduleError(f"{name} is not a number: {value!r}") from None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ScheduleError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")


def _money_str(value: Decimal) -> str:
    return f"{round_money(value):f}"
