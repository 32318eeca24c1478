"""The one place money is rounded.

Everything that turns an amount into something stored, shown or sent goes through
`round_money`, so a cent can only be rounded one way in this codebase.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, InvalidOperation

from app.errors import SaccoError

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
# What a Numeric(14, 2) column holds: the ceiling of every amount we accept.
MAX_MONEY = Decimal("999999999999.99")


class MoneyError(SaccoError):
    """An amount that cannot be money (not a number, NaN, infinite)."""


def to_decimal(value: object) -> Decimal:
    """Parse an amount exactly: floats go through str so 0.1 stays 0.1."""
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise MoneyError(f"not an amount: {value!r}")
    elif isinstance(value, (int, str)):
        try:
            result = Decimal(str(value).strip().replace(",", ""))
        except InvalidOperation as exc:
            raise MoneyError(f"not an amount: {value!r}") from exc
    elif isinstance(value, float):
        result = Decimal(repr(value))
    else:
        raise MoneyError(f"not an amount: {value!r}")
    if not result.is_finite():
        raise MoneyError(f"not an amount: {value!r}")
    return result


def money_input(value: object, what: str = "amount") -> Decimal:
    """The one rule for an amount someone gives us (member, staff, provider, file).

    A finite number, at most two decimals (a fraction of a cent is refused, never rounded
    away), more than zero and at most what the books can hold. The message says which.
    """
    try:
        amount = to_decimal(value)
    except MoneyError:
        raise MoneyError(f"{what} is not a number") from None
    if amount <= 0:
        raise MoneyError(f"{what} must be more than zero")
    # Compare before rounding: quantizing 1e26 to the cent exceeds Decimal's precision.
    if amount > MAX_MONEY:
        raise MoneyError(f"{what} is more than the books can hold (KES {MAX_MONEY:,})")
    if amount != amount.quantize(CENT):
        raise MoneyError(f"{what} has fractions of a cent")
    return amount.quantize(CENT)


def round_money(
    value: object, multiple: Decimal | None = None, rounding: str = ROUND_HALF_EVEN
) -> Decimal:
    """Round half-even to the cent, or to `multiple` (e.g. 1 for whole shillings).

    `rounding` is for the few places that must never round up (a limit offered to a
    member is floored to whole shillings).
    """
    amount = to_decimal(value)
    if multiple is None or multiple == 0:
        return _signless_zero(amount.quantize(CENT, rounding=rounding))
    multiple = to_decimal(multiple)
    units = (amount / multiple).quantize(Decimal(1), rounding=rounding)
    return _signless_zero((units * multiple).quantize(CENT, rounding=ROUND_HALF_EVEN))


def _signless_zero(value: Decimal) -> Decimal:
    """Decimal keeps the sign of a zero (0 * -1 is -0, -0.001 rounds to -0.00), and it
    would print as "-0.00" on a statement: no amount is ever a negative zero."""
    return value.copy_abs() if value.is_zero() else value


def shillings_up(value: object) -> Decimal:
    """What a member pays by M-PESA (whole shillings) to cover `value`: the next whole
    shilling up, never down, so paying it leaves nothing behind (2,821.88 -> 2,822)."""
    return round_money(value, Decimal(1), rounding=ROUND_CEILING)


def is_whole_shillings(value: Decimal) -> bool:
    """M-PESA moves whole shillings only."""
    return value == value.to_integral_value()


def money_text(value: Decimal | int | None) -> str:
    """An amount as staff read it: thousands separators, cents kept, finer places (a rate's
    4 decimals) too; nothing for no amount."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        value = _signless_zero(value)
    return f"{value:,.2f}" if value == round(value, 2) else f"{value:,}"
