"""Withdrawals to M-PESA from a withdrawable savings account, exactly once: the money leaves
the account when asked (amount to GL-WITHDRAWALS-PENDING, fee to income), the payout path
sends it, a result settles it; a certain failure puts amount and fee back once however
often it is delivered; a result that never comes is asked of Transaction Status, never
sent again. Refusals say why in words and write nothing. Daraja is faked at the HTTP
boundary (`responses`); jobs run in a real RQ worker; every test ends with the books
reconciled (the autouse fixture)."""

from __future__ import annotations

import json
import logging
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import requests
import responses
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update

from app.cli.runtime import make_worker
from app.clock import business_today
from app.extensions import db, queue
from app.models import (
    Account,
    Guarantee,
    JournalEntry,
    Loan,
    Member,
    MpesaCallback,
    MpesaRequest,
    Payment,
    SmsMessage,
)
from app.models.types import utcnow
from app.selectors.guarantees import member_deposits
from app.services.books import period_close
from app.services.guarantees import guarantee_accept, guarantee_request
from app.services.ledger import (
    account_close,
    credit,
    debit,
    gl_account,
    journal_post,
    ledger_check,
    member_account,
)
from app.services.loans import LoanError, loan_apply
from app.services.members import MemberError, member_buy_shares
from app.services.payments import callback_process, payments_reconcile, payments_send_payout
from app.services.payments.stk import payments_request_deposit_stk
from app.services.savings import (
    WithdrawalError,
    account_product,
    member_product_account,
    withdrawal_quote,
    withdrawal_request,
)
from app.services.savings.products import product_update
from app.services.savings.withdrawals import (
    payout_to_mpesa,
    withdrawal_amount_problem,
    withdrawal_key,
)
from tests.factories import make_member
from tests.helpers import (
    Worker,
    b2c_result_body,
    c2b_body,
    row_locked,
    sms_bodies,
    wait_until_blocked,
    work_until,
)
from tests.loan_factories import make_borrower, make_loan, make_product, make_staff

D = Decimal
TOKEN = "dev-callback-token"  # noqa: S105 - the test settings' CALLBACK_TOKEN
B2C_URL = "/mpesa/b2c/v3/paymentrequest"
STATUS_URL = "/mpesa/transactionstatus/v1/query"
DAY = date(2026, 3, 2)


@pytest.fixture
def b2c(mocked: responses.RequestsMock, base: str) -> responses.RequestsMock:
    mocked.get(f"{base}/oauth/v1/generate", json={"access_token": "tok", "expires_in": "3599"})
    mocked.post(f"{base}{B2C_URL}", json={"ConversationID": "AG_B2C_0001", "ResponseCode": "0"})
    mocked.post(
        f"{base}{STATUS_URL}",
        json={
            "ConversationID": "AG_STATUS_0001",
            "OriginatorConversationID": "status-0001",
            "ResponseCode": "0",
            "ResponseDescription": "Accept the service request successfully.",
        },
    )
    return mocked


def work() -> None:
    make_worker(("payments", "sms")).work(burst=True)
    db.session.remove()


def post(client: FlaskClient, path: str, body: object) -> None:
    reply = client.post(
        f"/payments/{TOKEN}/{path}", data=json.dumps(body), content_type="application/json"
    )
    assert reply.status_code == 200


def calls(mock: responses.RequestsMock, url: str) -> list[dict]:
    return [json.loads(c.request.body) for c in mock.calls if url in c.request.url]


def saver(savings: int = 5000, **kwargs: object) -> tuple[int, int]:
    """A member with `savings` in their ordinary (withdrawable) savings: (member, account)."""
    member = make_member(**kwargs)
    account = member_product_account(member, account_product("ORD"))
    journal_post(
        kind="deposit",
        lines=[debit(gl_account("GL-MPESA-CLEARING"), D(savings)), credit(account, D(savings))],
        value_date=DAY,
        idempotency_key=f"test-save:{member.member_no}",
        member_id=member.id,
    )
    db.session.commit()
    return member.id, account.id


def balance(code_or_id: str | int) -> Decimal:
    db.session.expire_all()
    if isinstance(code_or_id, int):
        account = db.session.get(Account, code_or_id)
    else:
        account = db.session.scalar(select(Account).where(Account.code == code_or_id))
    return account.display_balance if account is not None else D("0")


def gl(code: str) -> Decimal:
    """A GL account's balance as the journal has it (debit positive)."""
    db.session.expire_all()
    found = db.session.scalar(select(Account.balance).where(Account.code == code))
    return found if found is not None else D("0")


def written() -> tuple[int, int, int]:
    """What a refusal must not change: entries, M-PESA requests, SMS."""
    db.session.expire_all()
    return (
        db.session.scalar(select(func.count()).select_from(JournalEntry)),
        db.session.scalar(select(func.count()).select_from(MpesaRequest)),
        db.session.scalar(select(func.count()).select_from(SmsMessage)),
    )


def row(request_id: int) -> MpesaRequest:
    db.session.expire_all()
    found = db.session.get(MpesaRequest, request_id)
    assert found is not None
    return found


def entries(kind: str) -> int:
    return db.session.scalar(
        select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == kind)
    )


def sent_withdrawal(amount: int = 1000, savings: int = 5000) -> tuple[int, int, MpesaRequest]:
    """A withdrawal asked for and sent (the B2C request went): (member, account, request)."""
    member_id, account_id = saver(savings)
    request = withdrawal_request(member_id=member_id, account_id=account_id, amount=amount)
    request_id = request.id
    work()
    sent = row(request_id)
    assert sent.status == "sent"
    db.session.expunge(sent)
    return member_id, account_id, sent


# -- the happy path ------------------------------------------------------------------------


def test_a_withdrawal_takes_amount_and_fee_at_once_sends_once_and_settles_on_the_result(
    client: FlaskClient,
    b2c: responses.RequestsMock,
) -> None:
    member_id, account_id = saver(5000)
    member = db.session.get(Member, member_id)
    number, phone = f"{member.member_no}S", member.phone
    quote = withdrawal_quote(member_id=member_id, account_id=account_id)
    assert (quote.available, quote.fee, quote.daily_left, quote.min_balance) == (
        D("4870"),  # 5,000 less the KES 30 fee and the KES 100 minimum balance
        D("30"),
        D("70000"),
        D("100"),
    )
    assert quote.account_number == number

    request = withdrawal_request(member_id=member_id, account_id=account_id, amount="1000")
    assert (request.kind, request.purpose, request.status) == ("b2c", "withdrawal", "pending")
    assert (request.account_id, request.member_id, request.loan_id) == (account_id, member_id, None)
    assert (request.phone, request.amount, request.account_reference) == (
        phone,
        D("1000"),
        number,
    )
    request_id, ours = request.id, request.originator_conversation_id
    assert ours
    # The money left at once: the account pays amount and fee; the amount waits.
    assert balance(account_id) == D("3970")
    assert gl("GL-WITHDRAWALS-PENDING") == D("-1000")
    assert gl("GL-INCOME-FEES") == D("-30")
    assert withdrawal_quote(member_id=member_id, account_id=account_id).daily_left == D("69000")

    work()  # the send job
    (sent,) = calls(b2c, B2C_URL)
    assert sent["OriginatorConversationID"] == ours
    assert (sent["Amount"], sent["PartyB"], sent["CommandID"]) == (
        "1000",
        phone,
        "BusinessPayment",
    )
    assert sent["Remarks"] == f"Withdrawal {number}"
    assert row(request_id).status == "sent"

    body = b2c_result_body(ours, amount=1000, receipt="WDR0000001")
    post(client, "b2c/result", body)
    work()
    done = row(request_id)
    assert (done.status, done.receipt) == ("succeeded", "WDR0000001")
    assert (done.result_code, done.result_desc) == (
        "0",
        "The service request is processed successfully.",
    )
    payment = db.session.scalar(select(Payment).where(Payment.receipt == "WDR0000001"))
    assert (payment.channel, payment.direction, payment.amount) == ("b2c", "out", D("1000"))
    assert (payment.member_id, payment.loan_id, payment.request_id) == (member_id, None, done.id)
    callback_id = db.session.scalar(select(MpesaCallback.id))
    assert payment.callback_id == callback_id
    # M-PESA's completion time (21.11.2026 11:45:50 in Nairobi) is the payment's and dates it.
    assert payment.transacted_at.replace(tzinfo=None) == datetime(2026, 11, 21, 8, 45, 50)
    paid = db.session.get(JournalEntry, payment.journal_entry_id)
    assert (paid.kind, paid.member_id, paid.value_date) == (
        "withdrawal_paid",
        member_id,
        date(2026, 11, 21),
    )
    assert (paid.idempotency_key, paid.description) == (
        "withdrawal-paid:WDR0000001",
        f"Withdrawal {number} paid WDR0000001",
    )
    assert gl("GL-WITHDRAWALS-PENDING") == D("0")
    assert gl("GL-B2C-UTILITY") == D("-1000")
    assert balance(account_id) == D("3970")
    [text_] = sms_bodies("withdrawal_sent")
    assert text_ == (
        f"KES 1,000.00 sent to your M-PESA from account {number}, fee KES 30.00. "
        "Ref WDR0000001. Savings balance KES 3,970.00."
    )

    # The same result again posts nothing and texts nothing.
    post(client, "b2c/result", body)
    work()
    assert entries("withdrawal_paid") == 1
    assert len(sms_bodies("withdrawal_sent")) == 1
    assert len(calls(b2c, B2C_URL)) == 1


# -- refusals: in words, nothing written -----------------------------------------------------


def test_refusals_say_why_and_write_nothing(app: Flask) -> None:
    member_id, account_id = saver(5000)
    other_id, other_account = saver(5000)
    member = db.session.get(Member, member_id)
    deposits = db.session.scalar(
        select(Account.id).where(Account.code == f"SAV-{member.member_no}")
    )
    cases = [
        (dict(account_id=deposits, amount=500), "Deposits cannot be withdrawn; only savings can"),
        (dict(account_id=other_account, amount=500), "that account is not yours"),
        (
            dict(account_id=account_id, amount=4871),
            "you can withdraw at most KES 4,870 (fee KES 30, minimum balance KES 100)",
        ),
        (dict(account_id=account_id, amount="500.50"), "M-PESA takes whole shillings only"),
        (dict(account_id=account_id, amount=9), "M-PESA sends at least KES 10"),
        (dict(account_id=account_id, amount=250001), "M-PESA takes at most KES 250,000 at a time"),
        (dict(account_id=account_id, amount="ten"), "amount is not a number"),
    ]
    before = written()
    for kwargs, message in cases:
        with pytest.raises(WithdrawalError) as refused:
            withdrawal_request(member_id=member_id, **kwargs)  # type: ignore[arg-type]
        assert str(refused.value) == message
        assert written() == before, message
    assert balance(account_id) == balance(other_account) == D("5000")
    with pytest.raises(WithdrawalError, match="^Deposits cannot be withdrawn"):
        withdrawal_quote(member_id=member_id, account_id=deposits)
    with pytest.raises(WithdrawalError, match="^that account is not yours$"):
        withdrawal_quote(member_id=other_id, account_id=account_id)


def test_no_member_and_an_exited_one_are_refused_in_words(app: Flask) -> None:
    """(Mutation testing, issue 23.)"""
    member_id, account_id = saver(5000)
    before = written()
    with pytest.raises(WithdrawalError) as refused:
        withdrawal_request(member_id=999999, account_id=account_id, amount=500)
    assert str(refused.value) == "no such member"
    with pytest.raises(WithdrawalError) as refused:
        withdrawal_quote(member_id=999999, account_id=account_id)
    assert str(refused.value) == "no such member"
    db.session.get(Member, member_id).status = "exited"
    db.session.commit()
    with pytest.raises(WithdrawalError) as refused:
        withdrawal_request(member_id=member_id, account_id=account_id, amount=500)
    assert str(refused.value) == "your membership is exited; call the SACCO office"
    assert written() == before


def test_all_the_account_can_give_is_paid_to_the_shilling(app: Flask) -> None:
    """Amount and fee down to exactly the minimum balance is allowed (4,870 + 30 leaves
    100); a shilling more is refused (test_refusals_say_why_and_write_nothing). A member's
    own request is theirs on USSD unless a channel and a name say otherwise. (Mutation
    testing, issue 23.)"""
    member_id, account_id = saver(5000)
    request = withdrawal_request(member_id=member_id, account_id=account_id, amount=4870)
    member_no = db.session.get(Member, member_id).member_no
    assert (request.channel, request.requested_by) == ("ussd", f"member:{member_no}")
    assert balance(account_id) == D("100")
    # The entry is the member's: their statement and the books' member view find it.
    entry = db.session.scalar(select(JournalEntry).where(JournalEntry.kind == "withdrawal"))
    assert (entry.member_id, entry.idempotency_key) == (member_id, withdrawal_key(request.id))
    phone = db.session.get(Member, member_id).phone
    assert (entry.actor, entry.description) == (
        f"member:{member_no}",
        f"Withdrawal {member_no}S to M-PESA {phone}",
    )
    db.session.execute(update(MpesaRequest).values(status="failed"))
    db.session.commit()
    saver_id, saver_account = saver(5000)
    by_staff = withdrawal_request(
        member_id=saver_id,
        account_id=saver_account,
        amount=100,
        channel="console",
        requested_by="staff:teller1",
    )
    assert (by_staff.channel, by_staff.requested_by) == ("console", "staff:teller1")


def test_the_sacco_s_payout_to_m_pesa_goes_by_the_withdrawal_s_path(app: Flask) -> None:
    """A dividend paid by M-PESA: whole shillings leave savings for pending in one entry of
    the member's, keyed as a withdrawal's so a failure returns it; the request is the
    system's, named by who asked; nothing while a withdrawal from the account is on its
    way. (Mutation testing, issue 23.)"""
    member_id, account_id = saver(5000)
    member = db.session.get(Member, member_id)
    member_no, phone = member.member_no, member.phone
    account = db.session.get(Account, account_id)
    request = payout_to_mpesa(
        member_id=member_id,
        member_no=member_no,
        phone=phone,
        account=account,
        amount=D("1234.56"),
        requested_by="dividend:2026",
        value_date=DAY,
    )
    db.session.commit()
    assert request is not None
    assert (request.kind, request.status, request.purpose, request.amount) == (
        "b2c",
        "pending",
        "withdrawal",
        D("1234"),
    )
    assert (request.channel, request.requested_by, request.account_reference) == (
        "system",
        "dividend:2026",
        f"{member_no}S",
    )
    assert balance(account_id) == D("3766")  # the cents stay
    entry = db.session.scalar(select(JournalEntry).where(JournalEntry.kind == "withdrawal"))
    assert (entry.idempotency_key, entry.member_id, entry.actor) == (
        withdrawal_key(request.id),
        member_id,
        "dividend:2026",
    )
    assert (entry.description, entry.value_date) == (f"dividend:2026 to M-PESA {phone}", DAY)
    again = payout_to_mpesa(
        member_id=member_id,
        member_no=member_no,
        phone=phone,
        account=db.session.get(Account, account_id),
        amount=D("500"),
        requested_by="dividend:2026",
        value_date=DAY,
    )
    assert again is None and balance(account_id) == D("3766")
    db.session.execute(update(MpesaRequest).values(status="failed"))
    db.session.commit()
    too_little = payout_to_mpesa(
        member_id=member_id,
        member_no=member_no,
        phone=phone,
        account=db.session.get(Account, account_id),
        amount=D("9.99"),  # M-PESA sends at least KES 10
        requested_by="dividend:2026",
        value_date=DAY,
    )
    assert too_little is None and balance(account_id) == D("3766")


@pytest.mark.parametrize(
    ("savings", "available"),
    [
        (5001, D("4871")),  # whole shillings, not steps of two
        ("5000.75", D("4870")),  # the cents stay
        (140, D("10")),  # M-PESA's least is offered
        (139, D("0")),  # under it: nothing is offered
    ],
)
def test_the_quote_offers_whole_shillings_m_pesa_can_send(
    app: Flask, savings: int | str, available: Decimal
) -> None:
    """What the USSD screen offers: balance less the fee (30) and the minimum balance
    (100), down to the shilling, and nothing below M-PESA's least (10); none of today's
    limit used yet. (Mutation testing, issue 23.)"""
    member_id, account_id = saver(savings)  # type: ignore[arg-type]
    quote = withdrawal_quote(member_id=member_id, account_id=account_id)
    assert (quote.available, quote.daily_left) == (available, D("70000"))
    assert withdrawal_amount_problem(D("10")) is None


def test_a_withdrawal_that_cannot_be_queued_waits_pending_and_says_why_in_the_log(
    app: Flask, redis_down: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis down: the money is out and the row waits, pending, for the payments sweep to
    queue it; the log names the row. Queued, its job is named after it. (Mutation testing,
    issue 23.)"""
    member_id, account_id = saver(5000)
    queued = withdrawal_request(member_id=member_id, account_id=account_id, amount=500)
    assert f"payout-{queued.id}" in queue("payments").job_ids
    db.session.execute(update(MpesaRequest).values(status="failed"))
    db.session.commit()
    caplog.set_level(logging.WARNING, logger="app.services.savings.withdrawals")
    with redis_down.app_context():
        waiting = withdrawal_request(member_id=member_id, account_id=account_id, amount=600).id
    assert db.session.get(MpesaRequest, waiting).status == "pending"
    logged = [r.getMessage() for r in caplog.records if r.name.endswith("withdrawals")]
    assert logged == [f"could not queue withdrawal {waiting}: ConnectionError"]


def test_a_save_prompt_on_its_way_holds_back_no_withdrawal_from_its_account(
    app: Flask,
) -> None:
    """Only a payout is a withdrawal on its way. (Mutation testing, issue 23.)"""
    member_id, account_id = saver(5000)
    prompt = payments_request_deposit_stk(member_id=member_id, account_id=account_id, amount=300)
    assert (prompt.kind, prompt.status) == ("stk", "pending")
    payout = withdrawal_request(member_id=member_id, account_id=account_id, amount=1000)
    assert (payout.kind, payout.status, payout.account_id) == ("b2c", "pending", account_id)


def test_an_account_that_cannot_be_withdrawn_is_named_as_the_member_reads_it(app: Flask) -> None:
    """A product's name in the member's language; a member's account of no product (a
    loan's) by its own name; an account closed since the screen showed it in words.
    (Mutation testing, issue 23.)"""
    member_id, account_id = saver(5000, language="sw")
    member = db.session.get(Member, member_id)
    deposits = member_account(member, "savings").id
    loan = make_loan(product=make_product(), on=DAY)
    principal = db.session.scalar(
        select(Account).where(Account.member_id == loan.member_id, Account.loan_id.is_not(None))
    )
    principal_id, principal_name = principal.id, principal.name
    emptied = member_product_account(make_member(), account_product("ORD"))
    emptied_id, emptied_owner = emptied.id, emptied.member_id
    db.session.commit()
    account_close(account_id=emptied_id, actor="staff:test")
    before = written()
    cases = [
        (member_id, deposits, "Akiba cannot be withdrawn; only savings can"),
        (loan.member_id, principal_id, f"{principal_name} cannot be withdrawn; only savings can"),
        (emptied_owner, emptied_id, "that account is closed"),
    ]
    for owner, account, message in cases:
        with pytest.raises(WithdrawalError) as refused:
            withdrawal_request(member_id=owner, account_id=account, amount=500)
        assert str(refused.value) == message
    product = account_product("ORD")
    product.active = False
    db.session.commit()
    with pytest.raises(WithdrawalError) as refused:
        withdrawal_quote(member_id=member_id, account_id=account_id)
    assert str(refused.value) == "Akiba ya kawaida is closed for withdrawals"
    assert written() == before


def test_a_product_without_a_daily_limit_leaves_the_balance_to_decide(app: Flask) -> None:
    """(Mutation testing, issue 23.)"""
    product = account_product("ORD")
    product_update(product_id=product.id, actor="staff:test", daily_withdrawal_limit=None)
    member_id, account_id = saver(100000)
    quote = withdrawal_quote(member_id=member_id, account_id=account_id)
    assert (quote.daily_left, quote.available) == (None, D("99870"))
    withdrawal_request(member_id=member_id, account_id=account_id, amount=99870)
    assert balance(account_id) == D("100")


def test_the_daily_limit_counts_this_account_s_withdrawals_since_midnight_in_kenya(
    app: Flask,
) -> None:
    """Today began at midnight in Nairobi (21:00 UTC the day before): a withdrawal at that
    instant is today's, one a second earlier yesterday's; another member's never counts.
    (Mutation testing, issue 23.)"""
    product = account_product("ORD")
    product.daily_withdrawal_limit = D("2000")
    db.session.commit()
    member_id, account_id = saver(10000)
    other_id, other_account = saver(10000)
    midnight = datetime.combine(business_today(), time.min, tzinfo=ZoneInfo("Africa/Nairobi"))
    paid = [
        (member_id, account_id, 500, midnight),
        (member_id, account_id, 700, midnight - timedelta(seconds=1)),
        (other_id, other_account, 900, midnight + timedelta(hours=1)),
    ]
    for owner, account, amount, at in paid:
        db.session.add(
            MpesaRequest(
                kind="b2c",
                status="succeeded",
                purpose="withdrawal",
                originator_conversation_id=f"paid-{amount}",
                member_id=owner,
                account_id=account,
                phone="254700000000",
                amount=D(amount),
                account_reference="paid",
                channel="ussd",
                created_at=at,
            )
        )
    db.session.commit()
    assert withdrawal_quote(member_id=member_id, account_id=account_id).daily_left == D("1500")
    assert withdrawal_quote(member_id=other_id, account_id=other_account).daily_left == D("1100")


def test_a_withdrawal_the_books_refuse_is_refused_whole_and_says_why(app: Flask) -> None:
    """The entry is posted after the payout row is written: when the books refuse it (here
    the pending-withdrawals account was closed by mistake), the member is told the books'
    reason and neither the row nor any money stays. (Mutation testing, issue 23.)"""
    member_id, account_id = saver(1000)
    pending = gl_account("GL-WITHDRAWALS-PENDING")
    db.session.commit()
    account_close(account_id=pending.id, actor="staff:test")
    before = written()
    with pytest.raises(WithdrawalError) as refused:
        withdrawal_request(member_id=member_id, account_id=account_id, amount=500)
    assert str(refused.value) == "account GL-WITHDRAWALS-PENDING is closed"
    assert written() == before
    assert balance(account_id) == D("1000")


def test_a_closed_product_and_a_suspended_member_are_refused(app: Flask) -> None:
    member_id, account_id = saver(5000)
    before = written()
    product = account_product("ORD")
    product.active = False
    db.session.commit()
    with pytest.raises(WithdrawalError, match="^Ordinary savings is closed for withdrawals$"):
        withdrawal_request(member_id=member_id, account_id=account_id, amount=500)
    product = account_product("ORD")
    product.active = True
    db.session.get(Member, member_id).status = "suspended"
    db.session.commit()
    with pytest.raises(WithdrawalError, match="^your membership is suspended; call the SACCO"):
        withdrawal_request(member_id=member_id, account_id=account_id, amount=500)
    assert written() == before


def test_a_second_withdrawal_waits_until_the_first_is_settled(
    client: FlaskClient,
    b2c: responses.RequestsMock,
) -> None:
    member_id, account_id, first = sent_withdrawal(1000)
    number = first.account_reference
    before = written()
    with pytest.raises(WithdrawalError) as refused:
        withdrawal_request(member_id=member_id, account_id=account_id, amount=500)
    assert str(refused.value) == f"a withdrawal from {number} is on its way; wait for its SMS"
    # Told to wait, not that the money is short, whatever the amount: the first may yet
    # fail and bring its money back. (Mutation testing, issue 23.)
    with pytest.raises(WithdrawalError) as refused:
        withdrawal_request(member_id=member_id, account_id=account_id, amount=4000)
    assert str(refused.value) == f"a withdrawal from {number} is on its way; wait for its SMS"
    assert written() == before
    assert balance(account_id) == D("3970")

    post(client, "b2c/result", b2c_result_body(first.originator_conversation_id, amount=1000))
    work()
    second = withdrawal_request(member_id=member_id, account_id=account_id, amount=500)
    assert second.status == "pending"
    assert balance(account_id) == D("3440")


def test_the_daily_limit_counts_todays_withdrawals_but_not_failed_ones(
    client: FlaskClient,
    b2c: responses.RequestsMock,
) -> None:
    product = account_product("ORD")
    product.daily_withdrawal_limit = D("2000")
    db.session.commit()
    member_id, account_id, first = sent_withdrawal(1500, savings=10000)
    post(client, "b2c/result", b2c_result_body(first.originator_conversation_id, amount=1500))
    work()
    assert withdrawal_quote(member_id=member_id, account_id=account_id).available == D("500")

    before = written()
    with pytest.raises(WithdrawalError) as refused:
        withdrawal_request(member_id=member_id, account_id=account_id, amount=600)
    assert str(refused.value) == "over the daily limit of KES 2,000: KES 500 left today"
    assert written() == before

    # A withdrawal that failed gave its money back: it does not count against the limit.
    second = withdrawal_request(member_id=member_id, account_id=account_id, amount=500)
    second_id, ours = second.id, second.originator_conversation_id
    work()
    post(client, "b2c/result", b2c_result_body(ours, 2040))
    work()
    assert row(second_id).status == "failed"
    assert withdrawal_quote(member_id=member_id, account_id=account_id).daily_left == D("500")
    # Yesterday's withdrawals do not count today.
    db.session.execute(
        update(MpesaRequest).values(created_at=utcnow() - timedelta(days=1, hours=1))
    )
    db.session.commit()
    assert withdrawal_quote(member_id=member_id, account_id=account_id).daily_left == D("2000")


# -- a failed payout returns the money once -------------------------------------------------


def test_a_failed_payout_returns_amount_and_fee_once_even_when_delivered_twice(
    client: FlaskClient,
    b2c: responses.RequestsMock,
) -> None:
    member_id, account_id, sent = sent_withdrawal(1000)
    number = sent.account_reference
    failure = b2c_result_body(
        sent.originator_conversation_id, 2040, desc="Initiator information is invalid"
    )
    labels = {"kind": "b2c_result", "outcome": "failed"}
    counted = REGISTRY.get_sample_value("sacco_callbacks_total", labels) or 0.0
    post(client, "b2c/result", failure)
    post(client, "b2c/result", failure)
    work()
    assert REGISTRY.get_sample_value("sacco_callbacks_total", labels) - counted == 1
    done = row(sent.id)
    assert (done.status, done.result_code) == ("failed", "2040")
    assert balance(account_id) == D("5000")  # amount and fee back
    assert gl("GL-WITHDRAWALS-PENDING") == D("0")
    assert gl("GL-INCOME-FEES") == D("0")
    assert entries("withdrawal_return") == 1
    assert db.session.scalar(
        select(JournalEntry.id).where(
            JournalEntry.idempotency_key == f"withdrawal-return:{sent.id}"
        )
    )
    returned = db.session.scalar(
        select(JournalEntry).where(JournalEntry.idempotency_key == f"withdrawal-return:{sent.id}")
    )
    assert (returned.kind, returned.member_id) == ("withdrawal_return", member_id)
    assert returned.description == f"Withdrawal {number} failed: money returned"
    [told] = sms_bodies("withdrawal_failed")
    assert told == (
        f"Your withdrawal of KES 1,000.00 from account {number} did not go through: the number "
        "is not registered for M-PESA. The money and the fee KES 30.00 are back in your savings."
    )
    assert db.session.scalar(select(func.count()).select_from(Payment)) == 0
    assert len(calls(b2c, B2C_URL)) == 1  # never sent again
    # A success arriving after the money was put back is flagged for staff, not posted.
    post(client, "b2c/result", b2c_result_body(sent.originator_conversation_id, amount=1000))
    work()
    late = row(sent.id)
    assert late.status == "failed"
    assert late.flag == "paid (NLJ41HAY6Q) after the money was put back in savings"
    last = db.session.scalar(select(MpesaCallback).order_by(MpesaCallback.id.desc()))
    assert (last.status, last.error) == ("flagged", "flagged")
    assert balance(account_id) == D("5000")
    assert entries("withdrawal_paid") == 0


@pytest.mark.parametrize("fee", [0, 1])
def test_a_failed_payout_returns_whatever_fee_was_charged_even_none(
    client: FlaskClient, b2c: responses.RequestsMock, fee: int
) -> None:
    """The fee comes back as it was charged: a product without a fee puts back only the
    amount (no line of zero in the books), and a fee of one shilling is still a fee."""
    ordinary = account_product("ORD")
    product_update(product_id=ordinary.id, actor="staff:test", withdrawal_fee=D(fee))
    db.session.commit()
    member_id, account_id, sent = sent_withdrawal(1000)
    assert balance(account_id) == D(5000 - 1000 - fee)
    post(client, "b2c/result", b2c_result_body(sent.originator_conversation_id, 2040, desc="no"))
    work()
    assert row(sent.id).status == "failed"
    assert balance(account_id) == D("5000")
    assert (gl("GL-WITHDRAWALS-PENDING"), gl("GL-INCOME-FEES")) == (D("0"), D("0"))
    returned = db.session.scalar(
        select(JournalEntry).where(JournalEntry.idempotency_key == f"withdrawal-return:{sent.id}")
    )
    assert len(returned.lines) == (3 if fee else 2)


def test_a_withdrawal_paid_in_a_month_since_closed_is_dated_the_first_open_day_and_says_so(
    client: FlaskClient, b2c: responses.RequestsMock
) -> None:
    """M-PESA paid it on 21 November; the result is heard after November closed: the money
    has left, so it posts on the first open day, and the entry says why."""
    member_id, account_id, sent = sent_withdrawal(1000)
    period_close(month=date(2026, 11, 1), actor=make_staff("branch_manager"))
    result = b2c_result_body(sent.originator_conversation_id, amount=1000, receipt="WDRLATE001")
    post(client, "b2c/result", result)
    work()
    assert row(sent.id).status == "succeeded"
    entry = db.session.scalar(select(JournalEntry).where(JournalEntry.kind == "withdrawal_paid"))
    assert entry.value_date == date(2026, 12, 1)
    assert entry.description.startswith(
        "Late: paid 2026-11-21 (books closed), dated 2026-12-01. Withdrawal"
    )


def test_a_swahili_speaking_member_is_told_in_swahili_and_the_text_is_theirs(
    client: FlaskClient, b2c: responses.RequestsMock
) -> None:
    member_id, account_id = saver(5000, language="sw")
    request = withdrawal_request(member_id=member_id, account_id=account_id, amount=1000)
    ours, number = request.originator_conversation_id, request.account_reference
    work()
    labels = {"kind": "b2c_result", "outcome": "processed"}
    processed = REGISTRY.get_sample_value("sacco_callbacks_total", labels) or 0.0
    post(client, "b2c/result", b2c_result_body(ours, amount=1000, receipt="WDRSW00001"))
    work()
    assert REGISTRY.get_sample_value("sacco_callbacks_total", labels) - processed == 1
    sms = db.session.scalar(select(SmsMessage).where(SmsMessage.template == "withdrawal_sent"))
    assert (sms.member_id, sms.language) == (member_id, "sw")
    assert sms.body == (
        f"KES 1,000.00 zimetumwa kwa M-PESA yako kutoka akaunti {number}, ada KES 30.00. "
        "Kumb. WDRSW00001. Salio la akiba KES 3,970.00."
    )


def test_a_failed_withdrawal_returns_the_fee_it_was_charged_not_todays_or_anothers(
    client: FlaskClient, b2c: responses.RequestsMock
) -> None:
    """The fee changed twice: before the second withdrawal and again before its failure.
    What comes back is that withdrawal's own fee, not the first one's, not today's."""
    ordinary = account_product("ORD").id
    member_id, account_id = saver(10000)
    first = withdrawal_request(member_id=member_id, account_id=account_id, amount=1000)
    first_id = first.originator_conversation_id
    work()
    post(client, "b2c/result", b2c_result_body(first_id, amount=1000, receipt="WDRFEE0001"))
    work()
    product_update(product_id=ordinary, actor="staff:test", withdrawal_fee=D(50))
    db.session.commit()
    second = withdrawal_request(member_id=member_id, account_id=account_id, amount=1000)
    second_id, request_id = second.originator_conversation_id, second.id
    work()
    assert balance(account_id) == D(10000 - 1030 - 1050)
    product_update(product_id=ordinary, actor="staff:test", withdrawal_fee=D(70))
    db.session.commit()
    post(client, "b2c/result", b2c_result_body(second_id, 2040, desc="no"))
    work()
    assert row(request_id).status == "failed"
    assert balance(account_id) == D(10000 - 1030)
    [told] = sms_bodies("withdrawal_failed")
    assert "The money and the fee KES 50.00 are back in your savings." in told


def test_a_result_whose_receipt_is_another_payments_is_flagged_and_posts_nothing(
    client: FlaskClient, b2c: responses.RequestsMock
) -> None:
    member_id, account_id, sent = sent_withdrawal(1000)
    member_no = db.session.get(Member, member_id).member_no
    post(client, "c2b/confirmation", c2b_body("WDRTWICE01", amount="200", account=member_no))
    work()
    result = b2c_result_body(sent.originator_conversation_id, amount=1000, receipt="WDRTWICE01")
    post(client, "b2c/result", result)
    work()
    flagged = row(sent.id)
    assert flagged.flag == "receipt WDRTWICE01 was recorded for another payment"
    assert entries("withdrawal_paid") == 0 and gl("GL-WITHDRAWALS-PENDING") == D("-1000")
    statuses = db.session.scalars(select(MpesaCallback.status).order_by(MpesaCallback.id))
    assert list(statuses) == ["processed", "flagged"]


def test_a_send_refused_before_processing_returns_the_money(
    app: Flask, mocked: responses.RequestsMock, base: str
) -> None:
    mocked.get(f"{base}/oauth/v1/generate", json={"access_token": "tok", "expires_in": "3599"})
    mocked.post(
        f"{base}{B2C_URL}",
        status=400,
        json={"requestId": "x", "errorCode": "400.002.02", "errorMessage": "Bad Request"},
    )
    member_id, account_id = saver(5000)
    request_id = withdrawal_request(member_id=member_id, account_id=account_id, amount=1000).id
    assert balance(account_id) == D("3970")
    work()
    assert row(request_id).status == "failed"
    assert balance(account_id) == D("5000")
    assert entries("withdrawal_return") == 1
    [told] = sms_bodies("withdrawal_failed")
    assert "did not go through: M-PESA refused the payment. The money" in told  # and why


# -- a result that never comes: asked, never resent ----------------------------------------


def status_answer(code: str = "0", *, receipt: str = "WDR0000009", amount: object = 1000) -> dict:
    result: dict = {
        "ResultType": 0,
        "ResultCode": code,
        "ResultDesc": "The service request is processed successfully."
        if code == "0"
        else "No such transaction",
        "ConversationID": "AG_STATUS_0001",
        "OriginatorConversationID": "status-0001",
    }
    if code == "0":
        result["ResultParameters"] = {
            "ResultParameter": [
                {"Key": "Amount", "Value": amount},
                {"Key": "FinalisedTime", "Value": 20260302114550},
                {"Key": "ReceiptNo", "Value": receipt},
                {"Key": "TransactionStatus", "Value": "Completed"},
            ]
        }
    return {"Result": result}


def _age(request_id: int, minutes: int = 11) -> None:
    db.session.execute(
        update(MpesaRequest)
        .where(MpesaRequest.id == request_id)
        .values(created_at=utcnow() - timedelta(minutes=minutes))
    )
    db.session.commit()


def test_a_result_that_never_comes_is_queried_never_resent_and_the_answer_settles_it(
    client: FlaskClient,
    b2c: responses.RequestsMock,
) -> None:
    member_id, account_id, sent = sent_withdrawal(1000)
    payments_reconcile()
    assert calls(b2c, STATUS_URL) == []  # not yet 10 minutes
    _age(sent.id)
    sweep = payments_reconcile()
    assert sweep.errors == []
    (asked,) = calls(b2c, STATUS_URL)
    assert asked["OriginalConversationID"] == sent.originator_conversation_id
    query = db.session.scalar(select(MpesaRequest).where(MpesaRequest.kind == "status"))
    assert (query.parent_id, query.member_id, query.loan_id) == (sent.id, member_id, None)
    payments_reconcile()  # asked a moment ago: not again yet
    work()
    assert len(calls(b2c, STATUS_URL)) == 1
    assert len(calls(b2c, B2C_URL)) == 1  # never sent again
    assert row(sent.id).status == "sent"
    assert balance(account_id) == D("3970")  # still out, waiting in pending
    assert gl("GL-WITHDRAWALS-PENDING") == D("-1000")

    post(client, "status/result", status_answer(receipt="WDR0000009"))
    work()
    done = row(sent.id)
    assert (done.status, done.receipt) == ("succeeded", "WDR0000009")
    assert gl("GL-WITHDRAWALS-PENDING") == D("0")
    assert gl("GL-B2C-UTILITY") == D("-1000")
    assert len(sms_bodies("withdrawal_sent")) == 1
    assert len(calls(b2c, B2C_URL)) == 1


def test_a_queue_timeout_asks_status_and_a_no_such_transaction_answer_returns_the_money(
    client: FlaskClient,
    b2c: responses.RequestsMock,
) -> None:
    member_id, account_id, sent = sent_withdrawal(1000)
    timeout = {
        "Result": {
            "ResultCode": 1,
            "ResultDesc": "timeout",
            "OriginatorConversationID": sent.originator_conversation_id,
        }
    }
    post(client, "b2c/timeout", timeout)
    work()
    assert row(sent.id).status == "unknown"
    assert len(calls(b2c, STATUS_URL)) == 1
    # A sweep in the meantime asks no more often and sends nothing.
    payments_reconcile()
    work()
    assert len(calls(b2c, B2C_URL)) == 1
    post(client, "status/result", status_answer("1"))
    post(client, "status/result", status_answer("1"))
    work()
    assert row(sent.id).status == "failed"
    assert balance(account_id) == D("5000")
    assert entries("withdrawal_return") == 1
    assert len(sms_bodies("withdrawal_failed")) == 1
    assert len(calls(b2c, B2C_URL)) == 1


def test_a_withdrawal_never_queued_is_sent_by_the_sweep_once(
    app: Flask, b2c: responses.RequestsMock
) -> None:
    member_id, account_id = saver(5000)
    request_id = withdrawal_request(member_id=member_id, account_id=account_id, amount=1000).id
    queue("payments").empty()  # Redis lost the job
    _age(request_id, minutes=2)
    payments_reconcile()
    work()
    payments_reconcile()
    work()
    assert row(request_id).status == "sent"
    assert len(calls(b2c, B2C_URL)) == 1


# -- races (PostgreSQL: row locks wait) ------------------------------------------------------


def _outcome(worker: Worker) -> object:
    try:
        return worker.outcome()
    except (WithdrawalError, MemberError, LoanError) as exc:
        return f"{type(exc).__name__}: {exc}"


def test_a_withdrawal_racing_a_standing_order_an_acceptance_a_loan_and_a_share_transfer(
    app: Flask, pg: None
) -> None:
    """All on one member, all waiting on the member's lock, each deciding on what the one
    before it left: no overdraft, no broken hold. The standing order (2,000 from savings
    to deposits, part-payments allowed) finds what the withdrawal left above the minimum."""
    from app.services.savings.standing_orders import (
        standing_order_create,
        standing_order_execute,
    )

    secured = make_product(
        "V1", code="SEC", name="Development", min_guarantors=1, guarantee_cover=D("100")
    )
    plain = make_product("V1")
    borrower = make_borrower(savings=10000)
    asking = loan_apply(member_id=borrower.id, product_id=secured.id, amount=25000, as_of=DAY)
    member = make_borrower(savings=10000)  # deposits 10,000
    member_id = member.id
    account = member_product_account(member, account_product("ORD"))
    journal_post(
        kind="deposit",
        lines=[debit(gl_account("GL-MPESA-CLEARING"), D(5000)), credit(account, D(5000))],
        value_date=DAY,
        idempotency_key="test-save:race",
        member_id=member_id,
    )
    ask = guarantee_request(
        loan_id=asking.id, guarantor_id=member_id, amount=8000, actor="member:test", today=DAY
    ).id
    order = standing_order_create(
        member_id=member_id,
        target="deposits",
        amount="2000",
        day_of_month=DAY.day,
        actor="member:test",
        starts_on=date(2026, 1, 1),
    ).id
    account_id, plain_id, number = account.id, plain.id, f"{member.member_no}S"
    db.session.commit()
    db.session.remove()

    def standing_order() -> tuple[str, D]:
        run = standing_order_execute(order, as_of=DAY)
        assert run is not None
        result = (run.status, run.moved)
        db.session.commit()
        return result

    racers = [
        lambda: withdrawal_request(member_id=member_id, account_id=account_id, amount=4000).id,
        standing_order,
        lambda: (
            guarantee_accept(guarantee_id=ask, guarantor_id=member_id, via="ussd", today=DAY).status
        ),
        lambda: member_buy_shares(
            member_id=member_id, amount="5000", reference="SH-RACE", value_date=DAY
        ),
        lambda: (
            loan_apply(member_id=member_id, product_id=plain_id, amount=20000, as_of=DAY).status
        ),
        lambda: withdrawal_request(member_id=member_id, account_id=account_id, amount=500).id,
    ]
    workers = []
    with row_locked(app, "members", member_id):
        for n, racer in enumerate(racers, start=1):
            worker = Worker(app, racer)
            worker.start()
            wait_until_blocked(n)  # each waits on the member's lock, in this order
            workers.append(worker)
    withdrawal, ordered, accepted, transfer, application, second = (_outcome(w) for w in workers)

    assert isinstance(withdrawal, int)
    # 5,000 less 4,000 and the fee leaves 970, 100 of it the minimum: 870 of the 2,000 move.
    assert ordered == ("partial", D("870.00"))
    assert accepted == "accepted"
    # The pledge holds 8,000 of the 10,870 deposits: the transfer may not take it...
    assert (
        transfer == "MemberError: only KES 2,870.00 of the savings is free: the rest secures loans"
    )
    # ...and the limit is three times the 2,870 left free.
    assert application == "LoanError: the most you can borrow now is KES 8,610"
    assert second == (
        f"WithdrawalError: a withdrawal from {number} is on its way; wait for its SMS"
    )
    assert balance(account_id) == D("100")  # never below the product's minimum
    held = member_deposits(member_id)
    assert (held.deposits, held.free) == (D("10870"), D("2870"))
    assert db.session.scalar(select(Guarantee.status).where(Guarantee.id == ask)) == "accepted"
    assert db.session.scalar(select(func.count()).select_from(Loan)) == 1
    assert ledger_check() == []


def test_two_deliveries_of_a_failure_processed_at_once_return_the_money_once(
    app: Flask,
    client: FlaskClient,
    b2c: responses.RequestsMock,
    pg: None,
) -> None:
    member_id, account_id, sent = sent_withdrawal(1000)
    failure = b2c_result_body(sent.originator_conversation_id, 2040, desc="Unregistered")
    post(client, "b2c/result", failure)
    post(client, "b2c/result", failure)
    queue("payments").empty()  # processed here, by two threads at once
    callbacks = list(db.session.scalars(select(MpesaCallback.id).order_by(MpesaCallback.id)))
    db.session.commit()
    assert len(callbacks) == 2
    with row_locked(app, "mpesa_requests", sent.id):
        racers = [
            Worker(app, lambda cid=cid: callback_process(callback_id=cid)) for cid in callbacks
        ]
        for racer in racers:
            racer.start()
        wait_until_blocked(2)  # both wait on the withdrawal's row
    assert sorted(racer.outcome() for racer in racers) == ["duplicate", "failed"]
    assert row(sent.id).status == "failed"
    assert balance(account_id) == D("5000")
    assert entries("withdrawal_return") == 1
    assert len(sms_bodies("withdrawal_failed")) == 1


def test_two_send_jobs_for_one_withdrawal_at_once_pay_it_out_once(
    app: Flask, b2c: responses.RequestsMock, pg: None
) -> None:
    """A withdrawal takes no loan's lock before its claim: the claim's "still pending" is
    what keeps a second run (an RQ retry) from paying the member twice. Both runs wait at
    the claim on the payout's row, then go one after the other. (Mutation testing,
    issue 23.)"""
    member_id, account_id = saver(5000)
    request_id = withdrawal_request(member_id=member_id, account_id=account_id, amount=1000).id
    queue("payments").empty()  # sent here, by two threads at once
    db.session.commit()
    with row_locked(app, "mpesa_requests", request_id):
        senders = [
            Worker(app, lambda: payments_send_payout(request_id=request_id)) for _ in range(2)
        ]
        for sender in senders:
            sender.start()
        wait_until_blocked(2)  # both at the claim
    outcomes = [sender.outcome() for sender in senders]  # the second: as the first left it
    assert "sent" in outcomes and set(outcomes) <= {"sending", "sent"}
    assert len([c for c in b2c.calls if "paymentrequest" in c.request.url]) == 1
    assert (row(request_id).status, row(request_id).attempts) == ("sent", 1)


# -- over real HTTP: the Daraja simulator, our callback routes, a real worker ---------------


def _simulated(over_http: str, phone: str, b2c: str) -> None:
    reply = requests.post(
        f"{over_http}/simulator/daraja/phones/{phone}/outcome", json={"b2c": b2c}, timeout=10
    )
    assert reply.status_code < 400


def _settled(request_id: int) -> MpesaRequest | None:
    found = db.session.get(MpesaRequest, request_id)
    return found if found is not None and found.status in ("succeeded", "failed") else None


@pytest.mark.parametrize("outcome", ["success", "unregistered", "lost"])
def test_withdrawals_through_the_daraja_simulator(over_http: str, outcome: str) -> None:
    """Paid; refused for certain (the money comes back); paid with the Result lost, which
    the sweep asks Transaction Status about, never sending again."""
    member_id, account_id = saver(5000)
    phone = db.session.get(Member, member_id).phone
    _simulated(over_http, phone, outcome)
    request_id = withdrawal_request(member_id=member_id, account_id=account_id, amount=1000).id
    if outcome == "lost":
        work_until(lambda: row(request_id).status == "sent", "the payout to go")
        _age(request_id)
        payments_reconcile()
    done = work_until(lambda: _settled(request_id), "the withdrawal's result")
    paid = outcome != "unregistered"
    assert done.status == ("succeeded" if paid else "failed")
    assert done.attempts == 1  # sent once, whatever happened after
    assert (
        db.session.scalar(
            select(func.count()).select_from(MpesaRequest).where(MpesaRequest.kind == "b2c")
        )
        == 1
    )
    assert balance(account_id) == (D("3970") if paid else D("5000"))
    assert gl("GL-WITHDRAWALS-PENDING") == D("0")
    assert gl("GL-B2C-UTILITY") == (D("-1000") if paid else D("0"))
    assert len(sms_bodies("withdrawal_sent" if paid else "withdrawal_failed")) == 1
    if outcome == "lost":
        assert (
            done.receipt
            and db.session.scalar(
                select(func.count()).select_from(MpesaRequest).where(MpesaRequest.kind == "status")
            )
            == 1
        )


def test_a_withdrawal_written_outside_the_member_s_lock_still_holds_back_a_second(
    app: Flask, pg: None
) -> None:
    """A withdrawal row written outside the member's lock (say, a future staff path) and not
    yet committed: its foreign key holds a share lock on the member's row, so the request's
    lock waits until the other commits; then its own check sees it and refuses in words
    with nothing written. (Mutation testing, issue 23, showed the unique index is a
    backstop no request reaches: its refusal's words can be anything and this passes.)"""
    member_id, account_id = saver(5000)
    member = db.session.get(Member, member_id)
    number, phone = f"{member.member_no}S", member.phone
    db.session.commit()
    before = written()
    db.session.add(
        MpesaRequest(
            kind="b2c",
            status="pending",
            purpose="withdrawal",
            originator_conversation_id="twin-0001",
            member_id=member_id,
            account_id=account_id,
            phone=phone,
            amount=D("100"),
            account_reference=number,
            channel="console",
        )
    )
    db.session.flush()  # written, not committed: invisible to the other session
    racer = Worker(
        app, lambda: withdrawal_request(member_id=member_id, account_id=account_id, amount=500)
    )
    racer.start()
    wait_until_blocked(1)  # its lock on the member waits on our row's key share
    db.session.commit()
    with pytest.raises(WithdrawalError) as refused:
        racer.outcome()
    assert str(refused.value) == f"a withdrawal from {number} is on its way; wait for its SMS"
    entries_, requests_, texts = written()
    assert (entries_, requests_, texts) == (before[0], before[1] + 1, before[2])
    assert balance(account_id) == D("5000")
    db.session.execute(update(MpesaRequest).values(status="failed"))  # nothing was paid
    db.session.commit()


def test_a_withdrawal_on_its_way_holds_back_no_save_prompt_into_its_account(app: Flask) -> None:
    """Only a prompt can be on the member's phone: a payout from the account is not one,
    so it does not keep the member from saving into it. (Mutation testing, issue 23.)"""
    member_id, account_id = saver(5000)
    payout = withdrawal_request(member_id=member_id, account_id=account_id, amount=1000)
    assert (payout.kind, payout.status, payout.account_id) == ("b2c", "pending", account_id)
    prompt = payments_request_deposit_stk(member_id=member_id, account_id=account_id, amount=300)
    assert (prompt.kind, prompt.status, prompt.account_id) == ("stk", "pending", account_id)


def test_a_withdrawal_checks_the_balance_as_it_is_under_the_member_s_lock(
    app: Flask, pg: None
) -> None:
    """The teller's screen holds the account it showed; before the request, another worker
    moved 4,000 of it to deposits. The request reads the balance again under the lock: 900
    would leave 70 (under the minimum of 100), so it is refused with what is left to take.
    (Mutation testing, issue 23.)"""
    member_id, account_id = saver(5000)
    shown = db.session.get(Account, account_id)  # held, as a view holds what it renders
    assert shown.display_balance == D("5000")

    def move() -> None:
        member = db.session.get(Member, member_id)
        ordinary = db.session.get(Account, account_id)
        journal_post(
            kind="transfer",
            lines=[debit(ordinary, D("4000")), credit(member_account(member, "savings"), D(4000))],
            value_date=DAY,
            idempotency_key="test-move",
            member_id=member_id,
        )
        db.session.commit()

    mover = Worker(app, move)
    mover.start()
    mover.outcome()
    with pytest.raises(WithdrawalError) as refused:
        withdrawal_request(member_id=member_id, account_id=account_id, amount=900)
    assert str(refused.value) == (
        "you can withdraw at most KES 870 (fee KES 30, minimum balance KES 100)"
    )
    assert balance(account_id) == shown.display_balance == D("1000")
