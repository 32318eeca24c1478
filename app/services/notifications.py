"""Transactional SMS: one function per event a member is told about.

Each builds the body in the member's language and puts it in the outbox
(`sms_queue`) inside the caller's transaction: the caller commits it together with the
money change it reports, and a rollback takes the message away too. Nothing here commits.

The idempotency key comes from the event (a receipt, a loan number, a request id), so
a repeated callback or a retried request gives back the message already queued instead
of a second SMS.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from app.extensions import db
from app.models import Member, PromiseToPay, SmsMessage
from app.services.sms import sms_queue
from app.sms_templates import render_sms


def _send(
    *, member: Member, template: str, key: str, phone: str | None = None, **params: object
) -> SmsMessage:
    body = render_sms(template, member.language, **params)
    return sms_queue(
        template=template,
        body=body,
        phone=phone or member.phone,
        idempotency_key=key,
        kind="transactional",
        member=member,
        language=member.language,
    )


def notify_deposit_received(
    *, member: Member, amount: Decimal, savings_balance: Decimal, receipt: str
) -> SmsMessage:
    return _send(
        member=member,
        template="deposit_received",
        key=f"deposit:{receipt}",
        amount=amount,
        savings_balance=savings_balance,
        receipt=receipt,
    )


def notify_account_deposit(
    *, member: Member, amount: Decimal, account: str, balance: Decimal, receipt: str
) -> SmsMessage:
    # The same key as a deposit's: one receipt is one SMS, whichever account it paid.
    return _send(
        member=member,
        template="account_deposit_received",
        key=f"deposit:{receipt}",
        amount=amount,
        account=account,
        savings_balance=balance,
        receipt=receipt,
    )


def notify_repayment_received(
    *, member: Member, amount: Decimal, loan_no: str, balance_left: Decimal, receipt: str
) -> SmsMessage:
    # Keyed by loan too: one receipt may be split over two loans, each gets its line.
    return _send(
        member=member,
        template="repayment_received",
        key=f"repayment:{receipt}:{loan_no}",
        amount=amount,
        loan_no=loan_no,
        balance_left=balance_left,
        receipt=receipt,
    )


def notify_payment_failed(
    *, member: Member, amount: Decimal, reason: str, reference: str
) -> SmsMessage:
    """`reason` in plain words (e.g. "you cancelled the M-PESA prompt"); `reference` is
    our request id (the CheckoutRequestID), so a repeated callback sends one SMS."""
    return _send(
        member=member,
        template="payment_failed",
        key=f"payment-failed:{reference}",
        amount=amount,
        reason=reason,
    )


def notify_loan_approved(*, member: Member, loan_no: str, amount: Decimal) -> SmsMessage:
    return _send(
        member=member,
        template="loan_approved",
        key=f"loan-approved:{loan_no}",
        loan_no=loan_no,
        amount=amount,
    )


def notify_guarantee_request(
    *,
    guarantor: Member,
    applicant: str,
    amount: Decimal,
    loan_no: str,
    until: date,
    ussd: str,
    guarantee_id: int,
) -> SmsMessage:
    return _send(
        member=guarantor,
        template="guarantee_request",
        key=f"guarantee-request:{guarantee_id}",
        applicant=applicant,
        amount=amount,
        loan_no=loan_no,
        date=until,
        ussd=ussd,
    )


def notify_guarantee_answer(
    *, applicant: Member, guarantor: str, amount: Decimal, loan_no: str, answer: str, key: str
) -> SmsMessage:
    """`answer`: accepted, declined or expired; `key` the guarantee's own (one SMS each)."""
    if answer == "accepted":
        return _send(
            member=applicant,
            template="guarantee_accepted",
            key=f"guarantee-accepted:{key}",
            guarantor=guarantor,
            loan_no=loan_no,
            amount=amount,
        )
    return _send(
        member=applicant,
        template=f"guarantee_{answer}",
        key=f"guarantee-{answer}:{key}",
        guarantor=guarantor,
        loan_no=loan_no,
    )


def notify_guarantor_default(
    *, guarantor: Member, borrower: str, loan_no: str, exposure: Decimal, guarantee_id: int
) -> SmsMessage:
    """A loan the member guarantees is in default: once per guarantee (a loan defaults
    once as far as its guarantors are concerned; the key outlives a cure and relapse)."""
    return _send(
        member=guarantor,
        template="guarantor_default",
        key=f"guarantor-default:{guarantee_id}",
        borrower=borrower,
        loan_no=loan_no,
        amount=exposure,
    )


def notify_guarantee_recovered(
    *, guarantor: Member, applicant: str, amount: Decimal, loan_no: str, key: str
) -> SmsMessage:
    """What a recovery decision took from a guarantor's deposits; `key` the guarantee's."""
    return _send(
        member=guarantor,
        template="guarantee_recovered",
        key=f"guarantee-recovered:{key}",
        applicant=applicant,
        amount=amount,
        loan_no=loan_no,
    )


def notify_loan_rejected(*, member: Member, loan_no: str, reason: str) -> SmsMessage:
    return _send(
        member=member,
        template="loan_rejected",
        key=f"loan-rejected:{loan_no}",
        loan_no=loan_no,
        reason=reason,
    )


def notify_loan_disbursed(
    *,
    member: Member,
    loan_no: str,
    amount: Decimal,
    fee: Decimal,
    receipt: str,
    first_due_date: date,
    first_installment: Decimal,
) -> SmsMessage:
    return _send(
        member=member,
        template="loan_disbursed",
        key=f"loan-disbursed:{loan_no}",
        loan_no=loan_no,
        amount=amount,
        fee=fee,
        receipt=receipt,
        first_due_date=first_due_date,
        first_installment=first_installment,
    )


def notify_pin_locked(*, member: Member, minutes: int, locked_until: datetime) -> SmsMessage:
    # One SMS per lockout: a second failed try inside the same lock finds the same key.
    return _send(
        member=member,
        template="pin_locked",
        key=f"pin-locked:{member.id}:{locked_until.isoformat(timespec='seconds')}",
        minutes=minutes,
    )


def notify_phone_change_otp(
    *,
    member: Member,
    otp: str,
    minutes: int,
    request_id: str,
    phone: str | None = None,
) -> SmsMessage:
    """The one-time code for a phone-number change, sent to `phone` (the new number, to
    prove the member holds it; the member's current number when not given).

    The OTP appears only in the message body: the body column is the outbox's record of
    what was sent and the one place the code may live. It is never part of the key, the
    context, a log line or an exception message here, and must not be added to any.
    """
    return _send(
        member=member,
        template="phone_change_otp",
        key=f"otp:{member.id}:{request_id}",
        phone=phone,
        otp=otp,
        minutes=minutes,
    )


def notify_pin_reset_code(*, member: Member, otp: str, minutes: int, request_id: str) -> SmsMessage:
    """The code for a forgotten-PIN reset, to the member's registered number. As with the
    phone-change code, the code lives only in the body (masked for staff), never in the
    key, the context, a log line or an exception message."""
    return _send(
        member=member,
        template="pin_reset_code",
        key=f"pin-reset:{member.id}:{request_id}",
        otp=otp,
        minutes=minutes,
    )


def notify_pin_changed(*, member: Member, request_id: str) -> SmsMessage:
    """A PIN replaced from USSD: if it was not the member's doing, this is how they hear."""
    return _send(member=member, template="pin_changed", key=f"pin-changed:{member.id}:{request_id}")


def notify_phone_changed(
    *, member: Member, request_id: str, old_phone: str | None = None
) -> list[SmsMessage]:
    """Confirm a number change to the new number and, when given, to the old one: if the
    change was not the member's doing, the old number is where they will see it."""
    tail = member.phone[-4:]
    messages = [
        _send(
            member=member,
            template="phone_changed",
            key=f"phone-changed:{member.id}:{request_id}",
            phone_tail=tail,
        )
    ]
    if old_phone and old_phone != member.phone:
        messages.append(
            _send(
                member=member,
                template="phone_changed",
                key=f"phone-changed:{member.id}:{request_id}:old",
                phone=old_phone,
                phone_tail=tail,
            )
        )
    return messages


def notify_statement(
    *,
    member: Member,
    lines: str,
    savings: Decimal,
    shares: Decimal,
    loan_balance: Decimal,
    request_id: str,
) -> SmsMessage:
    """The statement a member asked for; `request_id` is the inbound SMS or USSD session,
    so the provider's retry of the same request sends one statement."""
    return _send(
        member=member,
        template="statement",
        key=f"statement:{member.id}:{request_id}",
        lines=lines,
        savings=savings,
        shares=shares,
        loan_balance=loan_balance,
    )


def promise_recorded_key(promise: PromiseToPay) -> str:
    """The confirmation's outbox key: one per promise (a texted promise's reply finds it)."""
    return f"promise-recorded:{promise.id}"


def notify_promise_recorded(*, member: Member, promise: PromiseToPay, loan_no: str) -> SmsMessage:
    if promise.id is None:
        db.session.flush()  # the key needs the promise's id
    return _send(
        member=member,
        template="promise_recorded",
        key=promise_recorded_key(promise),
        amount=promise.amount,
        date=promise.promised_date,
        loan_no=loan_no,
    )


def notify_standing_order(
    *, member: Member, run_id: int, moved: Decimal, asked: Decimal, target: str, loan_no: str
) -> SmsMessage:
    """What a standing order moved this month, or that the savings were too short (one
    SMS per run: the run is once per order and month)."""
    where = {"loan": f"loan {loan_no}", "deposits": "deposits", "shares": "shares"}[target]
    if member.language == "sw":
        where = {"loan": f"mkopo {loan_no}", "deposits": "akiba", "shares": "hisa"}[target]
    if moved <= 0:
        return _send(
            member=member,
            template="standing_order_short",
            key=f"standing-order:{run_id}",
            asked=asked,
            target=where,
        )
    return _send(
        member=member,
        template="standing_order_done",
        key=f"standing-order:{run_id}",
        moved=moved,
        asked=asked,
        target=where,
    )


def notify_exit_settled(
    *, member: Member, exit_id: int, refund: Decimal, owed: Decimal
) -> SmsMessage:
    """The member's exit is settled: what their loans took and what the SACCO owes them."""
    return _send(
        member=member,
        template="exit_settled",
        key=f"exit-settled:{exit_id}",
        owed=owed,
        refund=refund,
    )
