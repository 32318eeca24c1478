"""STK "Save" (issue 20, "Money in"): a prompt to pay into one of the member's accounts,
written first with its account, sent by the job with the account's number as the
reference, and credited to that account exactly once by the callback. Daraja is faked at
the HTTP boundary (`responses`), jobs run in a real RQ worker; the books reconcile after
each test (the autouse fixture)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from app.cli.runtime import make_worker
from app.extensions import db, queue
from app.models import (
    Account,
    JournalEntry,
    Member,
    MpesaCallback,
    MpesaRequest,
    Payment,
    SmsMessage,
)
from app.models.types import utcnow
from app.services.payments import PaymentError, callback_process
from app.services.payments.stk import REPEAT_GAP, payments_request_deposit_stk
from app.services.savings import account_product, products_ensure
from app.services.savings.products import product_update
from tests.factories import make_member
from tests.helpers import Worker, phone_error, stk_body
from tests.loan_factories import balance

TOKEN = "dev-callback-token"  # noqa: S105 - the test settings' CALLBACK_TOKEN
CHECKOUT = "ws_CO_191220191020363925"
D = Decimal


@pytest.fixture
def daraja(mocked: responses.RequestsMock, base: str) -> responses.RequestsMock:
    mocked.get(f"{base}/oauth/v1/generate", json={"access_token": "tok", "expires_in": "3599"})
    mocked.post(
        f"{base}/mpesa/stkpush/v1/processrequest",
        json={
            "MerchantRequestID": "29115-34620561-1",
            "CheckoutRequestID": CHECKOUT,
            "ResponseCode": "0",
            "ResponseDescription": "Success. Request accepted for processing",
            "CustomerMessage": "Success. Request accepted for processing",
        },
    )
    return mocked


@dataclass(frozen=True)
class Ref:
    id: int
    member_no: str
    deposits_id: int  # SAV-M...: the deposits account every member has
    shares_id: int


@pytest.fixture
def member(app: Flask) -> Ref:
    products_ensure()
    made = make_member(phone="0708374149", savings=1000)
    accounts = {
        a.kind: a.id
        for a in db.session.scalars(select(Account).where(Account.member_id == made.id))
    }
    return Ref(made.id, made.member_no, accounts["savings"], accounts["share_capital"])


def work() -> None:
    make_worker(("payments",)).work(burst=True)


def callback(client: FlaskClient, body: dict) -> None:
    reply = client.post(
        f"/payments/{TOKEN}/stk/callback", data=json.dumps(body), content_type="application/json"
    )
    assert reply.status_code == 200
    work()


def test_a_save_prompt_to_new_savings_opens_the_account_and_credits_it_once(
    client: FlaskClient, member: Ref, daraja: responses.RequestsMock
) -> None:
    ordinary = account_product("ORD")
    request = payments_request_deposit_stk(
        member_id=member.id, product_id=ordinary.id, amount=800, channel="ussd"
    )
    db.session.expire_all()
    row = db.session.get(MpesaRequest, request.id)
    account = db.session.scalar(select(Account).where(Account.code == f"ORD-{member.member_no}"))
    assert (row.purpose, row.account_id, row.loan_id) == ("deposit", account.id, None)
    assert (row.account_reference, row.phone, row.amount) == (
        f"{member.member_no}S",
        "254708374149",
        D("800"),
    )
    work()
    push = json.loads(next(c for c in daraja.calls if "stkpush" in c.request.url).request.body)
    assert push["AccountReference"] == f"{member.member_no}S" and push["TransactionDesc"] == "Save"

    callback(client, stk_body(CHECKOUT, amount=800, receipt="SAVE000001"))
    callback(client, stk_body(CHECKOUT, amount=800, receipt="SAVE000001"))  # resent
    assert balance(f"ORD-{member.member_no}") == D("800.00")
    assert balance(f"SAV-{member.member_no}") == D("1000.00")
    db.session.expire_all()
    row = db.session.get(MpesaRequest, request.id)
    assert (row.status, row.receipt) == ("succeeded", "SAVE000001")
    payment = db.session.scalar(select(Payment).where(Payment.receipt == "SAVE000001"))
    assert (payment.channel, payment.member_id, payment.loan_id) == ("stk", member.id, None)
    entries = db.session.scalar(
        select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == "deposit")
    )
    assert entries == 2  # the factory's deposit and this one
    body = db.session.scalar(
        select(SmsMessage.body).where(SmsMessage.template == "account_deposit_received")
    )
    assert body == (
        f"KES 800.00 received to account {member.member_no}S. Balance KES 800.00. Ref SAVE000001."
    )


def test_a_save_prompt_to_shares_buys_share_capital(
    client: FlaskClient, member: Ref, daraja: responses.RequestsMock
) -> None:
    payments_request_deposit_stk(member_id=member.id, account_id=member.shares_id, amount=1500)
    work()
    callback(client, stk_body(CHECKOUT, amount=1500, receipt="SHAR000001"))
    assert balance(f"SHR-{member.member_no}") == D("1500.00")
    assert balance(f"SAV-{member.member_no}") == D("1000.00")  # not bought from deposits


def test_a_save_prompt_to_deposits_is_a_deposit(
    client: FlaskClient, member: Ref, daraja: responses.RequestsMock
) -> None:
    payments_request_deposit_stk(member_id=member.id, account_id=member.deposits_id, amount=250)
    work()
    callback(client, stk_body(CHECKOUT, amount=250, receipt="DEPO000001"))
    assert balance(f"SAV-{member.member_no}") == D("1250.00")
    sms = db.session.scalars(
        select(SmsMessage.body).where(SmsMessage.template == "deposit_received")
    ).all()
    assert any("DEPO000001" in text and "KES 1,250.00" in text for text in sms)


def test_a_cancelled_save_prompt_posts_nothing_and_says_so(
    client: FlaskClient, member: Ref, daraja: responses.RequestsMock
) -> None:
    request = payments_request_deposit_stk(
        member_id=member.id, account_id=member.deposits_id, amount=300
    )
    work()
    callback(client, stk_body(CHECKOUT, 1032))
    db.session.expire_all()
    assert db.session.get(MpesaRequest, request.id).status == "failed"
    assert balance(f"SAV-{member.member_no}") == D("1000.00")
    assert db.session.scalar(select(func.count()).select_from(Payment)) == 0
    failed = db.session.scalars(
        select(SmsMessage.body).where(SmsMessage.template == "payment_failed")
    ).all()
    assert len(failed) == 1 and "cancelled" in failed[0]


def test_refusals_write_nothing(member: Ref, daraja: responses.RequestsMock) -> None:
    other = make_member(phone="0722000001")
    other_account = db.session.scalar(
        select(Account.id).where(Account.member_id == other.id, Account.kind == "savings")
    )
    with pytest.raises(PaymentError, match="takes no payment"):
        payments_request_deposit_stk(member_id=member.id, account_id=other_account, amount=100)
    with pytest.raises(PaymentError, match="whole shillings"):
        payments_request_deposit_stk(
            member_id=member.id, account_id=member.deposits_id, amount="1.5"
        )
    payments_request_deposit_stk(member_id=member.id, account_id=member.deposits_id, amount=100)
    with pytest.raises(PaymentError, match="already on its way"):
        payments_request_deposit_stk(member_id=member.id, account_id=member.deposits_id, amount=200)
    with pytest.raises(PaymentError, match="same amount twice"):
        payments_request_deposit_stk(member_id=member.id, account_id=member.shares_id, amount=100)
    count = db.session.scalar(select(func.count()).select_from(MpesaRequest))
    assert count == 1


def refused(**kwargs: object) -> str:
    """The PaymentError a prompt is refused with; the refusal must also leave the session
    with no transaction (the member's row lock let go) and no request written."""
    db.session.commit()
    with pytest.raises(PaymentError) as refusal:
        payments_request_deposit_stk(**kwargs)  # type: ignore[arg-type]
    assert not db.session().in_transaction()
    assert db.session.scalar(select(func.count()).select_from(MpesaRequest)) == 0
    return str(refusal.value)


def test_each_refusal_says_why_and_lets_the_member_go(app: Flask, member: Ref) -> None:
    """(Mutation testing, issue 23.)"""
    to_deposits = {"member_id": member.id, "account_id": member.deposits_id}
    assert refused(**to_deposits, amount="ten") == "amount is not a number"
    assert refused(member_id=999999, account_id=member.deposits_id, amount=100) == (
        "no member 999999"
    )
    assert refused(member_id=member.id, product_id=999999, amount=100) == (
        "that account takes no payment"
    )
    assert refused(member_id=member.id, amount=100) == "that account takes no payment"
    assert refused(**to_deposits, amount=100, phone="0708") == phone_error("0708")
    ordinary = account_product("ORD")
    product_update(product_id=ordinary.id, actor="staff:test", active=False)
    assert refused(member_id=member.id, product_id=ordinary.id, amount=100) == (
        f"{ordinary.name} is closed to new accounts"
    )


def test_an_account_closed_or_without_a_product_takes_no_prompt(app: Flask, member: Ref) -> None:
    """(Mutation testing, issue 23.)"""
    db.session.execute(
        update(Account).where(Account.id == member.shares_id).values(status="closed")
    )
    assert refused(member_id=member.id, account_id=member.shares_id, amount=100) == (
        "that account takes no payment"
    )
    db.session.execute(
        update(Account).where(Account.id == member.deposits_id).values(product_id=None)
    )
    assert refused(member_id=member.id, account_id=member.deposits_id, amount=100) == (
        "that account takes no payment"
    )


def test_a_long_account_number_is_cut_to_the_twelve_characters_mpesa_takes(
    member: Ref, daraja: responses.RequestsMock
) -> None:
    """AccountReference holds 12 characters; the prompt still names its account by id."""
    db.session.execute(
        update(Member).where(Member.id == member.id).values(member_no="M12345678901")
    )
    request = payments_request_deposit_stk(
        member_id=member.id, account_id=member.shares_id, amount=100
    )
    assert (request.account_reference, request.account_id) == ("M12345678901", member.shares_id)


def test_a_closed_product_takes_a_prompt_into_an_account_the_member_holds(
    member: Ref, daraja: responses.RequestsMock
) -> None:
    """As a Paybill payment to it would be (test_c2b_accounts)."""
    ordinary = account_product("ORD")
    opened = payments_request_deposit_stk(
        member_id=member.id, product_id=ordinary.id, amount=100, channel="ussd"
    )
    db.session.execute(update(MpesaRequest).values(status="failed"))
    product_update(product_id=ordinary.id, actor="staff:test", active=False)
    again = payments_request_deposit_stk(
        member_id=member.id, product_id=ordinary.id, amount=200, channel="api"
    )
    assert again.account_id == opened.account_id is not None
    assert again.account_reference == f"{member.member_no}S"


def test_a_prompt_names_its_channel_and_member_and_is_sent_by_one_job_of_its_own(
    member: Ref, daraja: responses.RequestsMock
) -> None:
    """A prompt asked without a channel is the member's own, on USSD; its send is one job
    named after it, which operators find by the row's id. (Mutation testing, issue 23.)"""
    request = payments_request_deposit_stk(
        member_id=member.id, account_id=member.deposits_id, amount=100
    )
    assert (request.channel, request.requested_by) == ("ussd", f"member:{member.member_no}")
    assert queue("payments").job_ids == [f"stk-{request.id}"]


def test_an_open_prompt_for_the_account_is_named_in_the_refusal(
    member: Ref, daraja: responses.RequestsMock
) -> None:
    payments_request_deposit_stk(member_id=member.id, account_id=member.shares_id, amount=100)
    assert refused_after_one(member_id=member.id, account_id=member.shares_id, amount=200) == (
        f"a payment prompt for account {member.member_no}SH is already on its way; "
        "answer it or try again in 3 minutes"
    )


def refused_after_one(**kwargs: object) -> str:
    """As `refused`, with the one request before it still the only one."""
    db.session.commit()
    with pytest.raises(PaymentError) as refusal:
        payments_request_deposit_stk(**kwargs)  # type: ignore[arg-type]
    assert not db.session().in_transaction()
    assert db.session.scalar(select(func.count()).select_from(MpesaRequest)) == 1
    return str(refusal.value)


def test_only_the_same_amount_to_the_same_phone_within_two_minutes_is_held_back(
    member: Ref, daraja: responses.RequestsMock
) -> None:
    """M-PESA refuses a second prompt of the same amount to the same phone within two
    minutes (result code 17), so we do not ask; anything else is asked. (Mutation
    testing, issue 23.)"""
    first = payments_request_deposit_stk(
        member_id=member.id, account_id=member.deposits_id, amount=100
    )
    assert refused_after_one(member_id=member.id, account_id=member.shares_id, amount=100) == (
        "M-PESA refuses the same amount twice within 2 minutes; wait a little"
    )
    # Another amount, or the same amount to another phone, is asked.
    asked = [
        payments_request_deposit_stk(member_id=member.id, account_id=member.shares_id, amount=150)
    ]
    db.session.execute(update(MpesaRequest).values(status="failed"))
    asked.append(
        payments_request_deposit_stk(
            member_id=member.id, account_id=member.shares_id, amount=100, phone="0722000002"
        )
    )
    db.session.execute(update(MpesaRequest).values(status="failed"))
    # A payout of that amount to that phone is not a prompt.
    db.session.execute(
        update(MpesaRequest)
        .where(MpesaRequest.id.in_([first.id, asked[0].id, asked[1].id]))
        .values(kind="b2c")
    )
    asked.append(
        payments_request_deposit_stk(member_id=member.id, account_id=member.shares_id, amount=100)
    )
    # A prompt of that amount to that phone over two minutes ago is no repeat.
    db.session.execute(update(MpesaRequest).values(status="failed", kind="stk"))
    db.session.execute(
        update(MpesaRequest).values(created_at=utcnow() - REPEAT_GAP - timedelta(seconds=1))
    )
    asked.append(
        payments_request_deposit_stk(member_id=member.id, account_id=member.shares_id, amount=100)
    )
    assert len({r.id for r in asked}) == 4


# -- races on PostgreSQL -----------------------------------------------------------------


@pytest.mark.usefixtures("pg")
def test_a_deposit_callback_from_many_threads_credits_the_account_once(
    app: Flask, client: FlaskClient, member: Ref, daraja: responses.RequestsMock
) -> None:
    payments_request_deposit_stk(member_id=member.id, account_id=member.shares_id, amount=600)
    work()
    for _ in range(6):
        client.post(
            f"/payments/{TOKEN}/stk/callback",
            data=json.dumps(stk_body(CHECKOUT, amount=600, receipt="RACE000001")),
            content_type="application/json",
        )
    ids = list(db.session.scalars(select(MpesaCallback.id)))
    queue("payments").empty()
    db.session.commit()
    workers = [Worker(app, lambda cid=cid: callback_process(callback_id=cid)) for cid in ids]
    for w in workers:
        w.start()
    outcomes = sorted(w.outcome() for w in workers)
    assert outcomes == ["duplicate"] * 5 + ["processed"]
    assert balance(f"SHR-{member.member_no}") == D("600.00")
    assert db.session.scalar(select(func.count()).select_from(Payment)) == 1


@pytest.mark.usefixtures("pg")
def test_two_save_prompts_for_one_account_at_once_leave_one(app: Flask, member: Ref) -> None:
    """The member's lock serialises them: the second sees the first's open prompt."""
    workers = [
        Worker(
            app,
            lambda amount=amount: (
                payments_request_deposit_stk(
                    member_id=member.id, account_id=member.deposits_id, amount=amount
                ).id
            ),
        )
        for amount in (100, 200)
    ]
    for w in workers:
        w.start()
    results = []
    for w in workers:
        try:
            results.append(w.outcome())
        except PaymentError as exc:
            results.append(str(exc))
    assert sum(isinstance(r, int) for r in results) == 1
    assert any(isinstance(r, str) and "already on its way" in r for r in results)
    assert db.session.scalar(select(func.count()).select_from(MpesaRequest)) == 1
