"""Each transactional notification puts one message in the outbox, in the member's
language, keyed by its event, inside the caller's transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import func, select

from app.extensions import db, queue
from app.models import Loan, Member, PromiseToPay, SmsMessage
from app.services import notifications as n
from app.sms_templates import render_sms
from tests.factories import make_member
from tests.loan_factories import make_borrower, make_loan, make_product

AMOUNT = Decimal("1500.00")
LOCKED_UNTIL = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)


def _promise(member: Member) -> PromiseToPay:
    """The member's promise (made, not yet flushed, on the first call; the same one on the
    second)."""
    found = db.session.scalar(select(PromiseToPay).where(PromiseToPay.member_id == member.id))
    if found is not None:
        return found
    loan = db.session.scalar(select(Loan).where(Loan.member_id == member.id))
    promise = PromiseToPay(
        member_id=member.id, loan_id=loan.id, amount=AMOUNT, promised_date=date(2026, 3, 5)
    )
    db.session.add(promise)
    return promise


def _member(case: str, language: str) -> Member:
    # A promise needs a loan, and a loan a borrower with savings and membership age. The
    # loan is made here, before the call under test: its own messages (the deposit receipt,
    # approval, disbursement) are not the notification being tested.
    member = make_borrower(savings=1000) if case == "promise" else make_member()
    member.language = language
    db.session.commit()
    if case == "promise":
        make_loan(product=make_product(), amount=1000, member=member, on=date(2026, 1, 5))
    return member


DISBURSED = dict(
    loan_no="L000004",
    amount=AMOUNT,
    fee=Decimal("37.50"),
    receipt="UAB1C2D3E6",
    first_due_date=date(2026, 4, 5),
    first_installment=Decimal("1560.00"),
)
STATEMENT = dict(
    lines="02/03 Deposit KES 1,500.00",
    savings=Decimal("9000"),
    shares=Decimal("2000"),
    loan_balance=Decimal("0"),
)

# name -> (call, template, expected key, the template's parameters)
Case = tuple[Callable[[Member], SmsMessage], str, Callable[[Member], str], dict[str, object]]
CASES: dict[str, Case] = {
    "deposit": (
        lambda m: n.notify_deposit_received(
            member=m, amount=AMOUNT, savings_balance=Decimal("9000"), receipt="UAB1C2D3E4"
        ),
        "deposit_received",
        lambda m: "deposit:UAB1C2D3E4",
        dict(amount=AMOUNT, savings_balance=Decimal("9000"), receipt="UAB1C2D3E4"),
    ),
    "repayment": (
        lambda m: n.notify_repayment_received(
            member=m,
            amount=AMOUNT,
            loan_no="L000001",
            balance_left=Decimal("8500"),
            receipt="UAB1C2D3E5",
        ),
        "repayment_received",
        lambda m: "repayment:UAB1C2D3E5:L000001",
        dict(amount=AMOUNT, loan_no="L000001", balance_left=Decimal("8500"), receipt="UAB1C2D3E5"),
    ),
    "payment_failed": (
        lambda m: n.notify_payment_failed(
            member=m, amount=AMOUNT, reason="you cancelled the prompt", reference="ws_CO_1"
        ),
        "payment_failed",
        lambda m: "payment-failed:ws_CO_1",
        dict(amount=AMOUNT, reason="you cancelled the prompt"),
    ),
    "approved": (
        lambda m: n.notify_loan_approved(member=m, loan_no="L000002", amount=AMOUNT),
        "loan_approved",
        lambda m: "loan-approved:L000002",
        dict(loan_no="L000002", amount=AMOUNT),
    ),
    "rejected": (
        lambda m: n.notify_loan_rejected(member=m, loan_no="L000003", reason="arrears"),
        "loan_rejected",
        lambda m: "loan-rejected:L000003",
        dict(loan_no="L000003", reason="arrears"),
    ),
    "disbursed": (
        lambda m: n.notify_loan_disbursed(member=m, **DISBURSED),  # type: ignore[arg-type]
        "loan_disbursed",
        lambda m: "loan-disbursed:L000004",
        DISBURSED,
    ),
    "pin_locked": (
        lambda m: n.notify_pin_locked(member=m, minutes=30, locked_until=LOCKED_UNTIL),
        "pin_locked",
        lambda m: f"pin-locked:{m.id}:2026-03-02T10:30:00+00:00",
        dict(minutes=30),
    ),
    "otp": (
        lambda m: n.notify_phone_change_otp(member=m, otp="483920", minutes=10, request_id="r1"),
        "phone_change_otp",
        lambda m: f"otp:{m.id}:r1",
        dict(otp="483920", minutes=10),
    ),
    "phone_changed": (
        lambda m: n.notify_phone_changed(member=m, request_id="r2")[0],
        "phone_changed",
        lambda m: f"phone-changed:{m.id}:r2",
        {},  # the tail is filled in per member below
    ),
    "statement": (
        lambda m: n.notify_statement(member=m, request_id="ATXid_1", **STATEMENT),  # type: ignore[arg-type]
        "statement",
        lambda m: f"statement:{m.id}:ATXid_1",
        STATEMENT,
    ),
    "promise": (
        lambda m: n.notify_promise_recorded(member=m, promise=_promise(m), loan_no="L000001"),
        "promise_recorded",
        lambda m: "promise-recorded:1",
        dict(amount=AMOUNT, date=date(2026, 3, 5), loan_no="L000001"),
    ),
}


def outbox() -> list[SmsMessage]:
    return list(db.session.scalars(select(SmsMessage).order_by(SmsMessage.id)))


@pytest.mark.parametrize("language", ["en", "sw"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_each_notification_queues_one_message_in_the_members_language(
    app: Flask, case: str, language: str
) -> None:
    call, template, key, params = CASES[case]
    member = _member(case, language)
    if case == "phone_changed":
        params = {"phone_tail": member.phone[-4:]}
    # Only the promise's member has messages already (from making the loan), and those
    # are exactly the loan's own: the receipt of the savings, approval, disbursement.
    already = {row.id for row in outbox()}
    expected_setup = (
        ["deposit_received", "loan_approved", "loan_disbursed"] if case == "promise" else []
    )
    assert [row.template for row in outbox()] == expected_setup

    first = call(member)
    again = call(member)  # a repeated callback or retried request
    db.session.commit()

    rows = [row for row in outbox() if row.id not in already]
    assert len(rows) == 1
    row = rows[0]
    assert again.id == first.id == row.id
    assert (row.template, row.language, row.kind) == (template, language, "transactional")
    assert row.idempotency_key == key(member)
    assert (row.phone, row.member_id, row.status) == (member.phone, member.id, "queued")
    assert row.context is None
    assert row.body == render_sms(template, language, **params)
    # Sent after the commit: the send job is on the sms queue.
    assert f"sms-{row.id}" in queue("sms").job_ids


def test_nothing_is_queued_when_the_caller_rolls_back(app: Flask) -> None:
    member = make_member()

    message = n.notify_deposit_received(
        member=member, amount=AMOUNT, savings_balance=AMOUNT, receipt="UAB1C2D3E7"
    )
    message_id = message.id
    db.session.rollback()  # the deposit failed: its receipt must not go out

    assert outbox() == []
    assert f"sms-{message_id}" not in queue("sms").job_ids
    db.session.commit()  # a later commit does not resurrect the forgotten send
    assert queue("sms").count == 0


def test_notifications_do_not_commit(app: Flask) -> None:
    member = make_member()

    n.notify_loan_approved(member=member, loan_no="L000009", amount=AMOUNT)
    # The second message's savepoint must not send the first before the commit: the
    # worker would not see the row yet.
    n.notify_loan_rejected(member=member, loan_no="L000010", reason="arrears")

    assert db.session().in_transaction()
    assert queue("sms").count == 0  # nothing is sent before the caller commits
    db.session.commit()
    assert queue("sms").count == 2


def test_the_otp_lives_only_in_the_body(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    member = make_member(language="sw")
    caplog.set_level(logging.DEBUG)

    message = n.notify_phone_change_otp(
        member=member, otp="917364", minutes=10, request_id="chg-7", phone="0722000999"
    )
    db.session.commit()

    assert "917364" in message.body
    assert message.phone == "0722000999"  # the new number proves the member holds it
    assert "917364" not in message.idempotency_key
    assert message.context is None
    assert "917364" not in caplog.text


def test_a_phone_change_is_confirmed_to_the_old_number_too(app: Flask) -> None:
    member = make_member()

    messages = n.notify_phone_changed(member=member, request_id="chg-8", old_phone="0711000111")
    db.session.commit()

    assert [m.phone for m in messages] == [member.phone, "0711000111"]
    assert all(member.phone[-4:] in m.body for m in messages)
    count = db.session.scalar(select(func.count()).select_from(SmsMessage))
    assert count == 2


def test_a_savepoint_rolled_back_elsewhere_keeps_the_message(app: Flask) -> None:
    member = make_member()

    message = n.notify_loan_rejected(member=member, loan_no="L000010", reason="arrears")
    savepoint = db.session.begin_nested()
    savepoint.rollback()  # e.g. one failed loan in a batch job
    db.session.commit()

    assert f"sms-{message.id}" in queue("sms").job_ids
