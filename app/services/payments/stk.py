"""STK push: loan repayments (USSD menu 3 and the console's "request payment") and
deposits into one of the member's accounts (USSD "Save").

A row is written first (our id, member, loan or account, amount); a job sends it and
stores the CheckoutRequestID. The callback, or the reconciliation job's STK query, settles
it: a repayment repays its loan, a deposit credits its account, each once (the receipt).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.integrations.daraja import (
    DarajaAuthError,
    DarajaError,
    DarajaInvalidRequest,
    daraja_client,
)
from app.models import Account, AccountProduct, Loan, Member, MpesaCallback, MpesaRequest, Payment
from app.models.mpesa import OPEN_STATUSES
from app.models.types import utcnow
from app.money import MoneyError, is_whole_shillings, money_input, round_money
from app.phone import PhoneError, normalise_phone
from app.schemas.mpesa import kenyan_time
from app.selectors.loans import LIVE_STATUSES
from app.services.loans import loan_repay
from app.services.locking import lock_existing, lock_row
from app.services.notifications import notify_payment_failed
from app.services.payments.common import (
    PROCESS_CALLBACK_JOB,
    SEND_STK_JOB,
    STK_FAILURES,
    PaymentError,
    finish,
    late_note,
    mpesa_value_date,
    payment_record,
    queue_job,
    settings,
    suspense_post,
)
from app.services.savings.money_in import account_deposit
from app.services.savings.products import ProductError, member_product_account
from app.services.webhooks import webhook_payment_received

MIN_STK_AMOUNT = Decimal("1")
MAX_STK_AMOUNT = Decimal("250000")  # M-PESA's ceiling for one transaction
# How long a prompt may hold back the next one for its loan: a member answers within a
# minute or two, and the reconciliation job asks after this long. A flagged prompt (its
# answer disagreed, or none came) never holds one back for longer.
PROMPT_WINDOW = timedelta(minutes=3)
REPEAT_GAP = timedelta(minutes=2)  # a second push of the same amount: result code 17
REPEAT_REFUSED = "M-PESA refuses the same amount twice within 2 minutes; wait a little"
DESCRIPTION = "Loan repay"  # TransactionDesc: at most 13 characters
# What the member reads on the prompt, by the request's purpose.
DESCRIPTIONS = {"repayment": DESCRIPTION, "deposit": "Save"}
# The accounts a prompt may pay into: deposits, withdrawable savings, share capital.
DEPOSIT_KINDS = ("savings", "member_savings", "target_savings", "share_capital")


def payments_request_stk(
    *,
    loan_id: int,
    amount: object,
    phone: str | None = None,
    channel: str = "ussd",
    actor: str | None = None,
) -> MpesaRequest:
    """Ask the member's phone for their M-PESA PIN to repay a loan.

    Refused with a clear message (PaymentError, nothing written) for an amount M-PESA
    cannot carry, a loan that takes no payment, or a prompt already on its way for this
    loan. The send happens in a job after commit.
    """
    try:
        value = money_input(amount)
    except MoneyError as exc:
        raise PaymentError(str(exc)) from None
    problem = stk_amount_problem(value)
    if problem is not None:
        raise PaymentError(problem)
    loan = lock_row(Loan, loan_id)  # serialises two requests for one loan
    if loan is None:
        db.session.rollback()
        raise PaymentError(f"no loan {loan_id}")
    # A rollback expires the loan: what a refusal says is read while the lock holds it.
    loan_no = loan.loan_no
    if loan.status not in (*LIVE_STATUSES, "written_off"):
        why = f"loan {loan_no} is {loan.status}; it takes no payment"
        db.session.rollback()
        raise PaymentError(why)
    member = db.session.get(Member, loan.member_id)
    assert member is not None  # a loan's member is a foreign key
    try:
        msisdn = normalise_phone(phone or member.phone)
    except PhoneError as exc:
        db.session.rollback()
        raise PaymentError(str(exc)) from None
    if _open_stk(loan.id):
        db.session.rollback()
        raise PaymentError(_already_waiting(loan_no))
    if _repeat(msisdn, value):
        db.session.rollback()
        raise PaymentError(REPEAT_REFUSED)
    request = MpesaRequest(
        kind="stk",
        status="pending",
        purpose="repayment",
        member_id=member.id,
        loan_id=loan.id,
        phone=msisdn,
        amount=value,
        account_reference=loan_no,
        channel=channel,
        requested_by=actor or f"member:{member.member_no}",
    )
    db.session.add(request)
    try:
        db.session.commit()
    except IntegrityError:
        # The partial unique index: another request for this loan won the race.
        db.session.rollback()
        raise PaymentError(_already_waiting(loan_no)) from None
    queue_job(SEND_STK_JOB, request.id, job_id=f"stk-{request.id}")
    return request


def payments_request_deposit_stk(
    *,
    member_id: int,
    amount: object,
    account_id: int | None = None,
    product_id: int | None = None,
    phone: str | None = None,
    channel: str = "ussd",
    actor: str | None = None,
    commit: bool = True,
) -> MpesaRequest:
    """Ask the member's phone for their M-PESA PIN to pay into one of their accounts
    (deposits, savings, shares): purpose "deposit", the account on the request, its number
    as the account reference. The callback credits that account once. `product_id`
    (which names the account when given, instead of `account_id`): the member's account
    of that product, opened now if it is their first (an open product only: a closed one
    takes money only into an account the member holds already).

    Refused (PaymentError, nothing written) for an amount M-PESA cannot carry, an account
    that is not the member's or takes no money, or a prompt for it already on its way.
    """
    try:
        value = money_input(amount)
    except MoneyError as exc:
        raise PaymentError(str(exc)) from None
    problem = stk_amount_problem(value)
    if problem is not None:
        raise PaymentError(problem)
    # The member's lock serialises two prompts for one account (no unique index holds an
    # open deposit prompt, as one holds a loan's).
    member = lock_row(Member, member_id)
    if member is None:
        _undo(commit)
        raise PaymentError(f"no member {member_id}")
    if product_id is not None:
        product = db.session.get(AccountProduct, product_id)
        if product is None:
            _undo(commit)
            raise PaymentError("that account takes no payment")
        # A closed product still takes money into an account the member holds, as by
        # Paybill; it opens no new one (ProductError says so).
        try:
            account_id = member_product_account(member, product).id
        except ProductError as exc:
            _undo(commit)
            raise PaymentError(str(exc)) from None
    account = db.session.get(Account, account_id) if account_id is not None else None
    if (
        account is None
        or account.member_id != member.id
        or account.kind not in DEPOSIT_KINDS
        or account.status != "open"
        or account.product is None
    ):
        _undo(commit)
        raise PaymentError("that account takes no payment")
    number = f"{member.member_no}{account.product.ref_suffix}"
    try:
        msisdn = normalise_phone(phone or member.phone)
    except PhoneError as exc:
        _undo(commit)
        raise PaymentError(str(exc)) from None
    if _open_deposit_stk(account.id):
        _undo(commit)
        raise PaymentError(_already_waiting_for(number))
    if _repeat(msisdn, value):
        _undo(commit)
        raise PaymentError(REPEAT_REFUSED)
    request = MpesaRequest(
        kind="stk",
        status="pending",
        purpose="deposit",
        member_id=member.id,
        account_id=account.id,
        phone=msisdn,
        amount=value,
        account_reference=number[:12],
        channel=channel,
        requested_by=actor or f"member:{member.member_no}",
    )
    db.session.add(request)
    if not commit:
        # A caller composing services (a payday order's nightly chunk) commits, then
        # queues the send itself (`stk_send_queue`); until then the row is the record.
        db.session.flush()
        return request
    db.session.commit()
    stk_send_queue(request.id)
    return request


def _undo(commit: bool) -> None:
    """A refusal undoes what this service began when it owns the transaction; a caller
    composing services (commit=False) owns it, and its savepoint undoes only this part."""
    if commit:
        db.session.rollback()


def stk_send_queue(request_id: int) -> None:
    """Queue the send of a prompt already committed (once: the send job claims it)."""
    queue_job(SEND_STK_JOB, request_id, job_id=f"stk-{request_id}")


def _repeat(msisdn: str, value: Decimal) -> bool:
    """A prompt of the same amount to the same phone within REPEAT_GAP (result code 17)."""
    recent = db.session.scalar(
        select(MpesaRequest.id).where(
            MpesaRequest.kind == "stk",
            MpesaRequest.phone == msisdn,
            MpesaRequest.amount == value,
            MpesaRequest.created_at > utcnow() - REPEAT_GAP,
        )
    )
    return recent is not None


def _open_deposit_stk(account_id: int) -> bool:
    """A deposit prompt for the account that may still be on the member's phone."""
    return _prompt_open(MpesaRequest.account_id == account_id)


def _already_waiting_for(number: str) -> str:
    return _waiting(f"account {number}")


def stk_amount_problem(value: Decimal) -> str | None:
    """The one rule for what a prompt may ask (M-PESA's): whole shillings from
    MIN_STK_AMOUNT to MAX_STK_AMOUNT. None when it may; else why not. USSD checks it on the
    amount screen, before the member confirms; this service checks it again."""
    if not is_whole_shillings(value):
        return "M-PESA takes whole shillings only"
    if value < MIN_STK_AMOUNT:
        return f"M-PESA takes at least KES {MIN_STK_AMOUNT:,.0f}"
    if value > MAX_STK_AMOUNT:
        return f"M-PESA takes at most KES {MAX_STK_AMOUNT:,.0f} at a time"
    return None


def _already_waiting(loan_no: str | None) -> str:
    return _waiting(f"loan {loan_no}")


def _waiting(what: str) -> str:
    return f"a payment prompt for {what} is already on its way; answer it or try again in 3 minutes"


def _open_stk(loan_id: int) -> bool:
    """A prompt for the loan that may still be on the member's phone."""
    return _prompt_open(MpesaRequest.loan_id == loan_id)


def _prompt_open(for_what: Any) -> bool:
    """A prompt (for a loan, or into an account) that may still be on the member's phone.
    A flagged one older than PROMPT_WINDOW is not: it waits for its query or for staff, and
    the open-per-loan index leaves flagged prompts out, so it holds nobody back."""
    found = db.session.scalar(
        select(MpesaRequest.id).where(
            for_what,
            MpesaRequest.kind == "stk",
            MpesaRequest.status.in_(OPEN_STATUSES),
            MpesaRequest.flag.is_(None) | (MpesaRequest.created_at > utcnow() - PROMPT_WINDOW),
        )
    )
    return found is not None


def claim(request_id: int) -> bool:
    """pending -> sending in one conditional UPDATE: one job sends a request, once."""
    # An UPDATE gives a CursorResult (with rowcount); SQLAlchemy 2.1 types it as a Result.
    claimed = cast(
        CursorResult[Any],  # pragma: no mutate: cast() does nothing at run time
        db.session.execute(
            update(MpesaRequest)
            .where(MpesaRequest.id == request_id, MpesaRequest.status == "pending")
            .values(status="sending", attempts=MpesaRequest.attempts + 1)
        ),
    ).rowcount
    return bool(claimed)


def payments_send_stk(*, request_id: int) -> str:
    """Send a pending STK request. A refusal before processing fails it; no answer (or an
    error after submitting) leaves it unknown for the reconciliation job: never resent."""
    if not claim(request_id):
        db.session.rollback()
        row = db.session.get(MpesaRequest, request_id)
        return row.status if row else "missing"
    db.session.commit()
    request = db.session.get(MpesaRequest, request_id)
    assert request is not None  # claimed just above
    s = settings()
    try:
        reply = daraja_client().stk_push(
            phone=request.phone,
            amount=request.amount,
            account_reference=request.account_reference or "SACCO",
            description=DESCRIPTIONS.get(request.purpose, DESCRIPTION),
            callback_url=s.callback_url("stk/callback"),
            now=utcnow(),
        )
    except (DarajaInvalidRequest, DarajaAuthError) as exc:
        request = lock_existing(MpesaRequest, request_id)
        finish(request, "failed", exc.code, f"refused before processing: {exc}")
        notify_payment_failed(
            member=_prompt_member(request),
            amount=request.amount,
            reason="M-PESA could not send the prompt",
            reference=f"stk-{request.id}",
        )
        db.session.commit()
        return "failed"
    except DarajaError as exc:
        request = lock_existing(MpesaRequest, request_id)
        finish(request, "unknown", exc.code, f"no clear answer: {exc}")
        db.session.commit()
        return "unknown"
    request = lock_existing(MpesaRequest, request_id)
    checkout_id = str(reply["CheckoutRequestID"])
    request.checkout_request_id = checkout_id
    request.merchant_request_id = str(reply.get("MerchantRequestID") or "")[:64] or None
    request.sent_at = utcnow()
    if request.status == "sending":
        request.status = "sent"
    db.session.commit()
    _requeue_early_callbacks(checkout_id)
    return request.status


def _requeue_early_callbacks(reference: str) -> None:
    """A callback that beat our write of its CheckoutRequestID was kept as unmatched:
    now that the id is stored, process it."""
    early = db.session.scalars(
        select(MpesaCallback.id).where(
            MpesaCallback.reference == reference, MpesaCallback.status == "unmatched"
        )
    ).all()
    db.session.commit()
    for callback_id in early:
        queue_job(PROCESS_CALLBACK_JOB, callback_id)


def find_stk(data: dict[str, Any]) -> MpesaRequest | None:
    """The request a callback answers: by CheckoutRequestID; else a push whose submit got
    no answer (so no id was stored) to the same phone for the same amount, within a day."""
    found = db.session.scalar(
        select(MpesaRequest).where(MpesaRequest.checkout_request_id == data["checkout_request_id"])
    )
    if found is not None or data.get("amount") is None or not data.get("phone"):
        return found
    candidates = db.session.scalars(
        select(MpesaRequest).where(
            MpesaRequest.kind == "stk",
            MpesaRequest.status == "unknown",
            MpesaRequest.checkout_request_id.is_(None),
            MpesaRequest.phone == data["phone"],
            MpesaRequest.amount == data["amount"],
            MpesaRequest.created_at > utcnow() - timedelta(days=1),
        )
    ).all()
    if len(candidates) != 1:
        return None
    candidates[0].checkout_request_id = data["checkout_request_id"]
    return candidates[0]


def stk_mismatch(request: MpesaRequest, data: dict[str, Any]) -> str | None:
    """What in a callback disagrees with the request we made (amount, phone)."""
    amount = data.get("amount")
    if amount is not None and Decimal(amount) != request.amount:
        return f"amount {amount} differs from the KES {request.amount} requested"
    phone = data.get("phone")
    if phone and phone.isdigit() and phone != request.phone:
        return f"phone {phone} differs from {request.phone} prompted"
    return None


def stk_apply(
    request: MpesaRequest,
    *,
    code: str,
    desc: str,
    receipt: str | None,
    paid_at: datetime | None,
    callback_id: int | None,
    mismatch: str | None = None,
    paid_amount: Decimal | None = None,
) -> str:
    """Settle a locked STK request from its result code (callback or query): post the
    repayment once on success, tell the member in plain words on a failure, leave it
    unknown on a code we do not know. Returns the outcome; the caller commits.

    A success that carries a receipt never posted is money that moved: it is posted
    whatever the request's state. On a request already failed (a cancel or a query that
    came before the member paid after all) it repays the loan as usual; when the request
    cannot take it (its answer disagrees with what we asked, or it was paid already under
    another receipt) it goes to suspense for staff, at the amount the receipt carries. The
    unique receipt keeps every path to once. `mismatch` (what a callback's amount or phone
    says against the request) flags an open request for its query instead of posting it.
    """
    if code == "0" and request.status == "failed" and receipt:
        if mismatch:
            return _to_suspense(request, receipt, paid_at, callback_id, paid_amount, mismatch)
        return _post_repayment(request, desc, receipt, paid_at, callback_id)
    if request.status in ("succeeded", "failed"):
        if receipt and request.status == "succeeded" and not request.receipt:
            # Settled by a query (no receipt); the late callback brings the receipt.
            request.receipt = receipt
            db.session.execute(
                update(Payment)
                .where(Payment.request_id == request.id, Payment.receipt.is_(None))
                .values(receipt=receipt)
            )
        elif code == "0" and receipt and receipt != request.receipt:
            why = f"paid already under receipt {request.receipt}"
            return _to_suspense(request, receipt, paid_at, callback_id, paid_amount, why)
        return "duplicate"
    if code == "0" and mismatch:
        request.flag = mismatch[:255]
        return "flagged"
    if code != "0" and code not in STK_FAILURES:
        finish(request, "unknown", code, desc or "unknown result code: to be queried")
        return "unknown"
    if request.flag:
        # Safaricom's own word (a query, or a callback that agrees) settles a flagged
        # prompt: the flag is resolved, and what it said is kept with the result.
        desc = f"{desc} (was flagged: {request.flag})"
    if code == "0":
        outcome = _post_repayment(request, desc, receipt, paid_at, callback_id)
    else:
        finish(request, "failed", code, desc)
        notify_payment_failed(
            member=_prompt_member(request),
            amount=request.amount,
            reason=STK_FAILURES[code],
            reference=request.checkout_request_id or f"stk-{request.id}",
        )
        outcome = "failed"
    # Only once settled: an open prompt without a flag counts in the open-per-loan index,
    # and a newer prompt for the loan may be open by now.
    request.flag = None
    return outcome


def _prompt_member(request: MpesaRequest) -> Member:
    """Whom a prompt was for: stk_request writes every prompt with its member."""
    # A row without one is a hand edit or an old import; get(None) would only warn.
    member = db.session.get(Member, request.member_id) if request.member_id else None
    if member is None:
        raise LookupError(f"STK request {request.id} has no member")
    return member


def _post_repayment(
    request: MpesaRequest,
    desc: str,
    receipt: str | None,
    paid_at: datetime | None,
    callback_id: int | None,
) -> str:
    payment = payment_record(
        request=request,
        callback_id=callback_id,
        receipt=receipt,
        channel="stk",
        direction="in",
        transacted_at=paid_at,
    )
    if payment is None:
        # This receipt was posted already through another channel (a C2B confirmation):
        # the money is in, once.
        finish(request, "succeeded", "0", f"{desc} (receipt {receipt} posted before)")
        request.receipt = receipt
        return "duplicate"
    # Without a receipt (settled by a query) the CheckoutRequestID keys the posting.
    reference = receipt or request.checkout_request_id or f"stk-{request.id}"
    if request.purpose == "deposit":
        payment.journal_entry_id = _post_deposit(request, reference, mpesa_value_date(paid_at))
    else:
        assert request.loan_id is not None  # a repayment prompt is written with its loan
        result = loan_repay(
            loan_id=request.loan_id,
            amount=request.amount,
            reference=reference,
            value_date=mpesa_value_date(paid_at),
            source="mpesa",
            commit=False,
        )
        payment.journal_entry_id = result.entry_id
    late_note(payment.journal_entry_id, paid_at)
    webhook_payment_received(payment)
    request.receipt = receipt
    finish(request, "succeeded", "0", desc)
    return "processed"


def _post_deposit(request: MpesaRequest, reference: str, value_date: date) -> int:
    """A deposit prompt's money into the account it named (its product's rules: a closed
    product still takes money into an account the member holds)."""
    account = db.session.get(Account, request.account_id)
    # Both checked when the prompt was written.
    assert account is not None
    assert account.product is not None
    assert request.member_id is not None
    return account_deposit(
        member_id=request.member_id,
        product=account.product,
        amount=request.amount,
        reference=reference,
        value_date=value_date,
    )


def _to_suspense(
    request: MpesaRequest,
    receipt: str,
    paid_at: datetime | None,
    callback_id: int | None,
    paid_amount: Decimal | None,
    why: str,
) -> str:
    """Money a receipt says moved for a prompt that cannot take it: into suspense, where
    staff see it (the prompt's member suggested) and place it; the prompt is flagged with
    where the money went."""
    amount = request.amount  # a receipt carrying no amount, or nothing: staff check it
    if paid_amount is not None and paid_amount > 0:
        amount = round_money(paid_amount)
    payment = payment_record(
        callback_id=callback_id,
        receipt=receipt,
        channel="stk",
        direction="in",
        amount=amount,
        phone=request.phone,
        bill_ref=request.account_reference,
        request_id=request.id,
        transacted_at=paid_at,
    )
    if payment is None:
        return "duplicate"  # this receipt is in already, through this or another channel
    suspense_post(
        payment,
        suggested_member_id=request.member_id,
        description=f"STK {receipt} for {request.account_reference}: {why}",
        value_date=mpesa_value_date(paid_at),
    )
    late_note(payment.journal_entry_id, paid_at)
    webhook_payment_received(payment)
    request.flag = f"KES {amount:,.2f} paid ({receipt}) is in suspense: {why}"[:255]
    return "suspense"


def stk_paid_at(value: object) -> datetime | None:
    return kenyan_time(value, settings().tz, ("%Y%m%d%H%M%S",))
