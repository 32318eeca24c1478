"""The loan lifecycle: every state change of a loan happens here, guarded and audited.

submitted -> [recommended] -> approved -> [disbursing] -> active -> closed
and the side exits: rejected, withdrawn, written_off, restructured (still repayable).

Ledger, at disbursement: the principal and the whole scheduled interest become
receivables (interest is charged per the schedule, as Fineract does by default, so an
early payoff still owes it); fees deducted at disbursement go straight to income and the
member receives the principal less fees. Penalties become receivables when the daily job
charges them. Repayments credit the receivables in the SPEC's order; anything beyond the
whole debt goes to savings.

Callers import from here; the modules are its parts, by what happens to a loan (apply,
disburse, repay, arrears, end), with what they share in _common.
"""

from __future__ import annotations

from app.services.loans._common import (
    COMPONENTS,
    RECEIVABLE,
    SEND_PAYOUT_JOB,
    TRANSITIONS,
    LoanError,
    loan_account,
)
from app.services.loans.apply import (
    loan_apply,
    loan_approve,
    loan_default_officer,
    loan_fee,
    loan_recommend,
    loan_reject,
    loan_withdraw,
)
from app.services.loans.arrears import (
    ARREARS,
    ArrearsDecision,
    arrears_decide,
    loan_reverse_penalty,
    loan_update_arrears,
    loans_update_arrears,
    penalty_for,
)
from app.services.loans.disburse import (
    loan_disburse,
    loan_payout_failed,
    loan_retry_payout,
    loan_start_payout,
)
from app.services.loans.end import loan_restructure, loan_settle, loan_write_off
from app.services.loans.repay import RepaymentResult, loan_repay

__all__ = [
    "ARREARS",
    "COMPONENTS",
    "RECEIVABLE",
    "SEND_PAYOUT_JOB",
    "TRANSITIONS",
    "ArrearsDecision",
    "LoanError",
    "RepaymentResult",
    "arrears_decide",
    "loan_account",
    "loan_apply",
    "loan_approve",
    "loan_default_officer",
    "loan_disburse",
    "loan_fee",
    "loan_payout_failed",
    "loan_recommend",
    "loan_reject",
    "loan_repay",
    "loan_restructure",
    "loan_retry_payout",
    "loan_reverse_penalty",
    "loan_settle",
    "loan_start_payout",
    "loan_update_arrears",
    "loan_withdraw",
    "loan_write_off",
    "loans_update_arrears",
    "penalty_for",
]
