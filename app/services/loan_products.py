"""The rules a loan product's settings must keep, in words staff can act on."""

from __future__ import annotations

from decimal import Decimal

from app.models import LoanProduct


def product_problem(product: LoanProduct) -> str | None:
    """Why these settings cannot be saved, or None. Checked before the database sees
    them, so staff read a sentence instead of a constraint error."""
    if not product.code or not product.name:
        return "a product needs a code and a name"
    if product.min_term is None or product.max_term is None or product.default_term is None:
        return "minimum, maximum and default term are required"
    if not 1 <= product.min_term <= product.max_term:
        return "the minimum term must be at least 1 and not above the maximum"
    if not product.min_term <= product.default_term <= product.max_term:
        return (
            f"the default term ({product.default_term}) must be between the minimum "
            f"({product.min_term}) and the maximum ({product.max_term})"
        )
    rate = product.annual_rate
    if rate is None or not Decimal(0) <= rate <= Decimal(100):
        return "the annual rate must be a percentage from 0 to 100"
    # The range an imported loan's rate must fall in (loan_import): each end a percentage,
    # the lower not above the upper.
    for label, value in (("minimum", product.min_rate), ("maximum", product.max_rate)):
        if value is not None and not Decimal(0) <= value <= Decimal(100):
            return f"the {label} rate must be a percentage from 0 to 100"
    if (
        product.min_rate is not None
        and product.max_rate is not None
        and product.min_rate > product.max_rate
    ):
        return "the minimum rate is above the maximum rate"
    amounts = (
        "min_amount",
        "max_amount",
        "installment_multiple",
        "fee_min",
        "fee_max",
        "min_share_capital",
        "auto_approve_limit",
        "maker_checker_threshold",
    )
    for name in amounts:
        value = getattr(product, name)
        if value is not None and value < 0:
            return f"the {name.replace('_', ' ')} cannot be negative"
    if product.fee_min is not None and product.fee_max is not None:
        if product.fee_min > product.fee_max:
            return "the minimum fee is above the maximum fee"
    if product.max_amount is not None and product.max_amount < (product.min_amount or 0):
        return "the maximum amount is below the minimum"
    if product.fee_type == "percent" and not Decimal(0) <= (product.fee_value or 0) <= 100:
        return "a percentage fee must be from 0 to 100"
    if product.penalty_type == "percent" and not Decimal(0) <= (product.penalty_value or 0) <= 100:
        return "a percentage penalty must be from 0 to 100"
    if (product.fee_value or 0) < 0 or (product.penalty_value or 0) < 0:
        return "fees and penalties cannot be negative"
    if product.limit_multiple is not None and product.limit_multiple <= 0:
        return "the limit multiple must be more than zero"
    # As a compromise agreement's days must be (ck_agreements_days): a negative grace
    # would charge a penalty on an installment before it falls due.
    if (product.grace_days or 0) < 0:
        return "the grace days cannot be negative"
    if product.default_threshold_days is not None and product.default_threshold_days <= 0:
        return "the days to default must be more than zero"
    return None
