"""M-PESA payments: STK repayments, Paybill (C2B), loan payouts (B2C), callbacks and the
reconciliation sweep. Callers import from here; the modules are its parts."""

from __future__ import annotations

from app.services.payments.b2c import payments_query_payout, payments_send_payout
from app.services.payments.c2b import (
    match_account,
    payments_assign_suspense,
    payments_register_urls,
    suggest_member,
)
from app.services.payments.callbacks import (
    RAW_CAP,
    CallbackKept,
    Received,
    callback_enqueue,
    callback_process,
    callback_refused,
    callback_spool,
    callback_store,
    callback_unspool,
    callback_validate,
)
from app.services.payments.common import STK_FAILURES, PaymentError
from app.services.payments.reconcile import Sweep, payments_reconcile
from app.services.payments.stk import payments_request_stk, payments_send_stk

__all__ = [
    "RAW_CAP",
    "CallbackKept",
    "STK_FAILURES",
    "PaymentError",
    "Received",
    "Sweep",
    "callback_enqueue",
    "callback_process",
    "callback_refused",
    "callback_spool",
    "callback_unspool",
    "callback_store",
    "callback_validate",
    "match_account",
    "payments_assign_suspense",
    "payments_query_payout",
    "payments_reconcile",
    "payments_register_urls",
    "payments_request_stk",
    "payments_send_payout",
    "payments_send_stk",
    "suggest_member",
]
