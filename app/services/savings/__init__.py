"""The member-owned side: account products, savings, shares, interest and dividends,
standing orders, fixed deposits and targets, withdrawals, share transfers and exits."""

from app.services.savings.branch import (
    BranchWithdrawalError,
    branch_withdrawal_decide,
    branch_withdrawal_record,
)
from app.services.savings.dividends import (
    DividendError,
    dividend_approve,
    dividend_cancel,
    dividend_declare,
    dividend_post,
    dividend_report,
)
from app.services.savings.exits import (
    ExitError,
    exit_cancel,
    exit_figures,
    exit_pay,
    exit_request,
    exit_settle,
)
from app.services.savings.fixed import (
    TermSavingsError,
    fixed_deposit_break,
    fixed_deposit_open,
    target_release,
    target_set,
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
from app.services.savings.shares import (
    ShareTransferError,
    share_transfer_decide,
    share_transfer_request,
)
from app.services.savings.standing_orders import (
    StandingOrderError,
    standing_order_cancel,
    standing_order_create,
)
from app.services.savings.withdrawals import (
    WithdrawalError,
    WithdrawalQuote,
    withdrawal_quote,
    withdrawal_request,
)

__all__ = [
    "BranchWithdrawalError",
    "ExitError",
    "ShareTransferError",
    "StandingOrderError",
    "TermSavingsError",
    "branch_withdrawal_decide",
    "branch_withdrawal_record",
    "exit_cancel",
    "exit_figures",
    "exit_pay",
    "exit_request",
    "exit_settle",
    "fixed_deposit_break",
    "fixed_deposit_open",
    "share_transfer_decide",
    "share_transfer_request",
    "standing_order_cancel",
    "standing_order_create",
    "target_release",
    "target_set",
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
