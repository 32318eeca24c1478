"""The member-owned side: account products, savings, shares, interest and dividends."""

from app.services.savings.dividends import (
    DividendError,
    dividend_approve,
    dividend_cancel,
    dividend_declare,
    dividend_post,
    dividend_report,
)
from app.services.savings.interest import (
    SAVINGS_INTEREST,
    interest_post,
    savings_interest_job,
)
from app.services.savings.products import (
    DEFAULT_PRODUCTS,
    ProductError,
    account_by_number,
    account_number,
    account_product,
    member_product_account,
    product_update,
    products_ensure,
)
from app.services.savings.withdrawals import (
    WithdrawalError,
    WithdrawalQuote,
    withdrawal_quote,
    withdrawal_request,
)

__all__ = [
    "DEFAULT_PRODUCTS",
    "DividendError",
    "SAVINGS_INTEREST",
    "ProductError",
    "account_by_number",
    "account_number",
    "account_product",
    "dividend_approve",
    "dividend_cancel",
    "dividend_declare",
    "dividend_post",
    "dividend_report",
    "interest_post",
    "member_product_account",
    "product_update",
    "products_ensure",
    "savings_interest_job",
    "WithdrawalError",
    "WithdrawalQuote",
    "withdrawal_quote",
    "withdrawal_request",
]
