"""Withdrawals to M-PESA from a withdrawable savings account (SPEC "Savings, shares and
dividends"), exactly once.

The request, under the member's lock, takes the money out at once: the account pays the
amount and the product's fee, the amount waits in GL-WITHDRAWALS-PENDING while the B2C
payment travels, the fee is income. The payout path (app/services/payments/b2c.py) sends
it and settles it: paid moves the pending amount to the B2C utility account; a failure
that is certain puts amount and fee back, once; no answer is asked of Transaction Status,
never sent again. A second withdrawal from the same account waits until the first is
settled (the partial unique index uq_mpesa_requests_open_per_account decides).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import ROUND_FLOOR, Decimal

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db, enqueue
from app.models import Account, AccountProduct, Member, MpesaRequest
from app.models.mpesa import OPEN_STATUSES
from app.money import ZERO, MoneyError, money_input, round_money
from app.services.ledger import LedgerError, credit, debit, gl_account, journal_post
from app.services.loans import SEND_PAYOUT_JOB
from app.services.locking import lock_row
from app.services.savings.products import account_number

log = logging.getLogger(__name__)

WITHDRAWAL = "withdrawal"  # MpesaRequest.purpose of a member's withdrawal
# M-PESA's smallest B2C payment (contracts/daraja.md: result code 2 below it); the largest
# and the whole-shillings rule are the STK prompt's, one rule for what M-PESA carries.
B2C_MIN_AMOUNT = Decimal("10")


class WithdrawalError(SaccoError):
    """A withdrawal that cannot be made; nothing was written. Short: a phone shows it."""


@dataclass(frozen=True)
class WithdrawalQuote:
    """What the USSD screen offers before the member types an amount."""

    available: Decimal  # the most that can be withdrawn now, whole shillings (0: nothing)
    fee: Decimal
    daily_left: Decimal | None  # None: the product sets no daily limit
    min_balance: Decimal
    balance: Decimal
    account_number: str


def withdrawal_amount_problem(value: Decimal) -> str | None:
    """Why M-PESA cannot pay `value` out (None when it can): the STK prompt's rule (whole
    shillings, at most M-PESA's ceiling) and B2C's own minimum."""
    # Imported here: the payments package imports the members service, which imports
    # this package (a cycle at import time only).
    from app.services.payments.stk import stk_amount_problem

    problem = stk_amount_problem(value)
    if problem is None and value < B2C_MIN_AMOUNT:
        problem = f"M-PESA sends at least KES {B2C_MIN_AMOUNT:,.0f}"
    return problem


def withdrawal_quote(*, member_id: int, account_id: int) -> WithdrawalQuote:
    """How much the member may withdraw from the account now, the fee and what is left of
    today's limit (WithdrawalError when the account cannot be withdrawn from at all)."""
    member = db.session.get(Member, member_id)
    if member is None:
        raise WithdrawalError("no such member")
    account, product = withdrawable_account(member, account_id)
    return _quote(member, account, product)


def withdrawal_request(
    *,
    member_id: int,
    account_id: int,
    amount: object,
    channel: str = "ussd",
    requested_by: str | None = None,
) -> MpesaRequest:
    """Send `amount` from the member's withdrawable account to their M-PESA.

    Under the member's lock (the guarantees, loan applications and share transfers that
    touch this member wait on it too): the account is the member's and its product lets
    money out; the amount plus the fee leaves at least the product's minimum balance;
    today's withdrawals stay within the daily limit; no other withdrawal from the account
    is on its way. Then one entry moves the money out (amount to pending, fee to income)
    and the payout request is written, both committed together; the send is queued after
    commit. WithdrawalError, nothing written, otherwise.
    """
    try:
        value = money_input(amount)
    except MoneyError as exc:
        raise WithdrawalError(str(exc)) from None
    problem = withdrawal_amount_problem(value)
    if problem is not None:
        raise WithdrawalError(problem)
    member = lock_row(Member, member_id)
    try:
        if member is None:
            raise WithdrawalError("no such member")
        if member.status in ("suspended", "exited"):
            raise WithdrawalError(f"your membership is {member.status}; call the SACCO office")
        # Read under the lock: the balance every other debit of this member waits behind.
        account, product = withdrawable_account(member, account_id)
        number = account_number(member.member_no or "", product)
        if _open_withdrawal(account.id) is not None:
            raise WithdrawalError(_on_its_way(number))
        quote = _quote(member, account, product)
        if quote.daily_left is not None and value > quote.daily_left:
            raise WithdrawalError(
                f"over the daily limit of KES {product.daily_withdrawal_limit:,.0f}: "
                f"KES {quote.daily_left:,.0f} left today"
            )
        if value + quote.fee > quote.balance - quote.min_balance:
            raise WithdrawalError(
                f"you can withdraw at most KES {quote.available:,.0f} "
                f"(fee KES {quote.fee:,.0f}, minimum balance KES {quote.min_balance:,.0f})"
            )
        actor = requested_by or f"member:{member.member_no}"
        request = MpesaRequest(
            kind="b2c",
            status="pending",
            purpose=WITHDRAWAL,
            # Ours, stored before anything is sent: a retry reuses it, Safaricom refuses a twin.
            originator_conversation_id=str(uuid.uuid4()),
            member_id=member.id,
            account_id=account.id,
            phone=member.phone,
            amount=value,
            account_reference=number,
            channel=channel,
            requested_by=actor,
        )
        try:
            with db.session.begin_nested():
                db.session.add(request)
                db.session.flush()
        except IntegrityError:
            # The partial unique index: another withdrawal from this account is open.
            raise WithdrawalError(_on_its_way(number)) from None
        lines = [debit(account, value + quote.fee), credit(gl_account(PENDING), value)]
        if quote.fee > 0:
            lines.append(credit(gl_account("GL-INCOME-FEES"), quote.fee))
        try:
            journal_post(
                kind="withdrawal",
                lines=lines,
                value_date=business_today(),
                description=f"Withdrawal {number} to M-PESA {member.phone}",
                idempotency_key=withdrawal_key(request.id),
                actor=actor,
                member_id=member.id,
            )
        except LedgerError as exc:
            # The ledger's own guard (no overdraft) behind the checks above.
            raise WithdrawalError(str(exc)) from None
    except WithdrawalError:
        db.session.rollback()
        raise
    db.session.commit()
    _queue_send(request.id)
    return request


PENDING = "GL-WITHDRAWALS-PENDING"


def withdrawal_key(request_id: int) -> str:
    """The idempotency key of the entry that took a withdrawal's money out: the payout path
    reads the fee back from it when the money returns."""
    return f"withdrawal:{request_id}"


def withdrawable_account(member: Member, account_id: int) -> tuple[Account, AccountProduct]:
    """The member's account and its product, when money may be taken out of it (M-PESA or
    the branch): WithdrawalError in the member's words otherwise."""
    account = db.session.get(Account, account_id, populate_existing=True)
    if account is None or account.member_id != member.id:
        raise WithdrawalError("that account is not yours")
    product = db.session.get(AccountProduct, account.product_id) if account.product_id else None
    if product is None or not product.withdrawable:
        name = product.name_in(member.language) if product is not None else account.name
        raise WithdrawalError(f"{name} cannot be withdrawn; only savings can")
    if not product.active:
        raise WithdrawalError(f"{product.name_in(member.language)} is closed for withdrawals")
    if account.status != "open":
        raise WithdrawalError("that account is closed")
    return account, product


def _quote(member: Member, account: Account, product: AccountProduct) -> WithdrawalQuote:
    from app.services.payments.stk import MAX_STK_AMOUNT  # a cycle at import time only

    balance = account.display_balance
    fee = product.withdrawal_fee or ZERO
    daily_left = None
    if product.daily_withdrawal_limit is not None:
        daily_left = max(product.daily_withdrawal_limit - _withdrawn_today(account.id), ZERO)
    room = min(balance - fee - product.min_balance, MAX_STK_AMOUNT)
    if daily_left is not None:
        room = min(room, daily_left)
    available = round_money(max(room, ZERO), Decimal(1), rounding=ROUND_FLOOR)
    return WithdrawalQuote(
        available=available if available >= B2C_MIN_AMOUNT else ZERO,
        fee=fee,
        daily_left=daily_left,
        min_balance=product.min_balance,
        balance=balance,
        account_number=account_number(member.member_no or "", product),
    )


def _withdrawn_today(account_id: int) -> Decimal:
    """What left the account for M-PESA since the start of today (the business date in
    Kenya): every withdrawal not failed, whether paid or still on its way."""
    tz = current_app.config["SETTINGS"].tz
    since = datetime.combine(business_today(), time.min, tzinfo=tz).astimezone(UTC)
    total = db.session.scalar(
        select(func.coalesce(func.sum(MpesaRequest.amount), 0)).where(
            MpesaRequest.kind == "b2c",
            MpesaRequest.purpose == WITHDRAWAL,
            MpesaRequest.account_id == account_id,
            MpesaRequest.status != "failed",
            MpesaRequest.created_at >= since,
        )
    )
    return round_money(total or 0)


def _open_withdrawal(account_id: int) -> int | None:
    return db.session.scalar(
        select(MpesaRequest.id).where(
            MpesaRequest.kind == "b2c",
            MpesaRequest.account_id == account_id,
            MpesaRequest.status.in_(OPEN_STATUSES),
        )
    )


def _on_its_way(number: str) -> str:
    return f"a withdrawal from {number} is on its way; wait for its SMS"


def payout_to_mpesa(
    *,
    member_id: int,
    member_no: str,
    phone: str,
    account: Account,
    amount: Decimal,
    requested_by: str,
    value_date: date,
) -> MpesaRequest | None:
    """Send `amount` of the member's savings to their M-PESA as a payout of the SACCO's (a
    dividend the member asked to be paid by M-PESA), by the withdrawal's own path: the money
    waits in GL-WITHDRAWALS-PENDING, the payout path sends it once, and a certain failure
    puts it back in savings and says so. No fee and none of the member's own limits (the
    SACCO pays, the member did not ask to withdraw); whole shillings only, the cents stay.

    The caller holds the member's lock and commits, then queues the send
    (`withdrawal_send_queue`; the payments sweep sends any whose queueing was lost). None,
    with the money left in savings, when M-PESA cannot carry the amount or a withdrawal from
    the account is already on its way."""
    whole = round_money(amount, Decimal(1), rounding=ROUND_FLOOR)
    if withdrawal_amount_problem(whole) is not None or _open_withdrawal(account.id) is not None:
        return None
    request = MpesaRequest(
        kind="b2c",
        status="pending",
        purpose=WITHDRAWAL,
        originator_conversation_id=str(uuid.uuid4()),
        member_id=member_id,
        account_id=account.id,
        phone=phone,
        amount=whole,
        account_reference=account_number(member_no, account.product),
        channel="system",
        requested_by=requested_by,
    )
    try:
        with db.session.begin_nested():
            db.session.add(request)
            db.session.flush()
    except IntegrityError:
        return None  # a withdrawal from the account opened meanwhile: it stays in savings
    journal_post(
        kind="withdrawal",
        lines=[debit(account, whole), credit(gl_account(PENDING), whole)],
        value_date=value_date,
        description=f"{requested_by} to M-PESA {phone}",
        idempotency_key=withdrawal_key(request.id),
        actor=requested_by,
        member_id=member_id,
    )
    return request


def withdrawal_send_queue(request_id: int) -> None:
    """Queue the send of a payout already committed (the send job claims it, once)."""
    _queue_send(request_id)


def _queue_send(request_id: int) -> None:
    """After commit: a worker sends it. If Redis is down the row stays pending and the
    reconciliation sweep queues it (never sent, so sending is safe)."""
    try:
        enqueue("payments", SEND_PAYOUT_JOB, request_id, job_id=f"payout-{request_id}")
    except Exception as exc:  # noqa: BLE001 - the pending row is the record
        log.warning("could not queue withdrawal %s: %s", request_id, type(exc).__name__)
