"""RQ jobs for M-PESA: they take ids and call the payments service."""

from __future__ import annotations

from app.services.payments import (
    callback_process,
    payments_query_payout,
    payments_register_urls,
    payments_send_payout,
    payments_send_stk,
)


def send_stk(request_id: int) -> str:
    return payments_send_stk(request_id=request_id)


def send_payout(request_id: int) -> str:
    return payments_send_payout(request_id=request_id)


def query_payout(request_id: int) -> str:
    return payments_query_payout(request_id=request_id)


def process_callback(callback_id: int) -> str:
    return callback_process(callback_id=callback_id)


def register_urls() -> str:
    """Queued by `sacco up` against the local simulator, retried until the web is up."""
    return str(payments_register_urls().get("ResponseDescription", "registered"))
