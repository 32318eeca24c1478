"""The member-owned side: account products, savings, shares, interest and dividends."""

from app.services.savings.dividends import (
    DividendError,
    dividend_approve,
    dividend_cancel,
    dividend_declare,
    dividend_post,
    dividend_report,
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
    "ProductError",
    "account_by_number",
    "account_number",
    "account_product",
    "dividend_approve",
    "dividend_cancel",
    "dividend_declare",
    "dividend_post",
    "dividend_report",
    "member_product_account",
    "product_update",
    "products_ensure",
    "WithdrawalError",
    "WithdrawalQuote",
    "withdrawal_quote",
    "withdrawal_request",
]
