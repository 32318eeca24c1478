"""Paybill to any of a member's accounts (issue 20, "Money in"): the account reference is
the member number and the product's suffix ("M000123S" ordinary savings, "M000123SH" share
capital; the bare number is deposits as before), typed however a phone types it. Through
`POST /payments/<token>/c2b/...` as Daraja sends it, processed by the real worker; the
books reconcile after each test (the autouse fixture)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, func, select

from app.cli.runtime import make_worker
from app.extensions import db, queue
from app.models import Account, AccountProduct, JournalEntry, Loan, MpesaCallback, Payment
from app.services.payments import callback_process, match_account, payments_assign_suspense
from app.services.savings import ProductError, account_by_number, account_product, products_ensure
from app.services.savings.money_in import account_deposit
from app.services.savings.products import product_update
from tests.factories import make_member
from tests.helpers import Worker, c2b_body, holder_then_waiter, sms_bodies
from tests.loan_factories import (
    balance,
    make_application,
    make_borrower,
    make_loan,
    make_product,
    make_staff,
)

TOKEN = "dev-callback-token"  # noqa: S105 - the test settings' CALLBACK_TOKEN
D = Decimal
DAY = date(2026, 3, 2)


def post(client: FlaskClient, path: str, body: dict) -> dict:
    reply = client.post(
        f"/payments/{TOKEN}/{path}", data=json.dumps(body), content_type="application/json"
    )
    assert reply.status_code == 200
    return reply.json


def work() -> None:
    make_worker(("payments",)).work(burst=True)


def pay(client: FlaskClient, receipt: str, account: str, amount: str = "1000") -> None:
    assert post(client, "c2b/confirmation", c2b_body(receipt, amount=amount, account=account)) == {
        "ResultCode": 0,
        "ResultDesc": "Success",
    }
    work()


@dataclass(frozen=True)
class Ref:
    """A member as the tests keep it: requests end the session its row was loaded in."""

    id: int
    member_no: str


@pytest.fixture
def member(app: Flask) -> Ref:
    products_ensure()
    made = make_member(phone="0711223344", savings=500)
    db.session.commit()
    assert made.member_no == "M000001"
    return Ref(made.id, made.member_no)


@pytest.mark.parametrize(
    ("typed", "code"),
    [
        ("M000001S", "ORD"),
        (" m1s ", "ORD"),
        ("M-0001 S", "ORD"),
        ("M000001SH", "SHR"),
        ("m 1 sh", "SHR"),
        ("M000001", "DEP"),
        ("M1", "DEP"),
        ("0711223344", "DEP"),  # the member's phone is their member number
    ],
)
def test_one_parser_reads_an_account_however_it_is_typed(
    member: Ref, typed: str, code: str
) -> None:
    match = match_account(typed)
    assert match.member is not None and match.member.id == member.id
    assert match.loan is None and match.product is not None and match.product.code == code
    # products.account_by_number is the same reading (it delegates).
    ref = account_by_number(typed)
    assert ref is not None and (ref.member.id, ref.product.code) == (member.id, code)


@pytest.mark.parametrize(
    "typed",
    # A suffix nobody has, a member nobody is, a loan with a suffix, no number, a suffix too
    # long; a loan number no loan has; a phone no member has.
    ["M000001X", "M000002S", "L000001S", "MS", "M000001SHX", "L000099", "0799000111"],
)
def test_unknown_suffixes_members_and_shapes_match_nobody(member: Ref, typed: str) -> None:
    match = match_account(typed)
    assert (match.member, match.loan, match.product) == (None, None, None)
    assert account_by_number(typed) is None


def test_a_loan_number_is_a_loan_not_an_account(member: Ref) -> None:
    borrower = make_borrower(savings=10000)
    loan = make_loan(product=make_product("V1"), amount=1000, on=date(2026, 1, 1), member=borrower)
    match = match_account(loan.loan_no.lower())
    assert match.loan is not None and match.loan.id == loan.id and match.product is None
    assert account_by_number(loan.loan_no) is None


def test_paybill_to_a_loan_not_yet_disbursed_goes_to_the_members_deposits(
    client: FlaskClient, member: Ref
) -> None:
    """A member pays to an application's number before it is approved: that loan takes
    no payment yet, so the money is the member's, in deposits, as it always was."""
    borrower = make_borrower(savings=10000)
    applied = make_application(borrower, date(2026, 11, 20))
    loan_id, loan_no, status = applied.id, applied.loan_no, applied.status
    borrower_id, member_no = borrower.id, borrower.member_no
    pay(client, "RKTAPPLIED", loan_no, "700")
    payment = db.session.scalar(select(Payment).where(Payment.receipt == "RKTAPPLIED"))
    assert (payment.status, payment.member_id, payment.loan_id) == ("posted", borrower_id, None)
    assert (payment.channel, payment.direction) == ("c2b", "in")
    assert (payment.phone, payment.bill_ref) == ("25470****149", loan_no)
    assert balance(f"SAV-{member_no}") == D("10700.00")
    entry = db.session.get(JournalEntry, payment.journal_entry_id)
    assert entry.kind == "deposit" and entry.member_id == borrower_id
    assert db.session.get(Loan, loan_id).status == status  # the application is untouched
    repayments = select(func.count()).where(JournalEntry.kind == "repayment")
    assert db.session.scalar(repayments) == 0


def test_paybill_to_the_savings_suffix_opens_and_credits_ordinary_savings_once(
    client: FlaskClient, member: Ref
) -> None:
    assert balance("ORD-M000001") == 0  # not opened yet
    pay(client, "RKTSAV0001", "m1s", "1500")
    pay(client, "RKTSAV0001", "M000001S", "1500")  # Daraja resends: posted once
    assert balance("ORD-M000001") == D("1500.00")
    assert balance("SAV-M000001") == D("500.00")  # deposits untouched
    account = db.session.scalar(select(Account).where(Account.code == "ORD-M000001"))
    assert account.kind == "member_savings" and account.product_id == account_product("ORD").id
    payment = db.session.scalar(select(Payment).where(Payment.receipt == "RKTSAV0001"))
    assert (payment.status, payment.member_id, payment.loan_id) == ("posted", member.id, None)
    entry = db.session.get(JournalEntry, payment.journal_entry_id)
    assert entry.kind == "deposit" and entry.idempotency_key == "deposit:RKTSAV0001"
    # The statement line names the account and the receipt; nobody on staff posted it.
    assert (entry.description, entry.actor, entry.member_id) == (
        "Deposit M000001S RKTSAV0001",
        "system",
        member.id,
    )
    assert sms_bodies("account_deposit_received") == [
        "KES 1,500.00 received to account M000001S. Balance KES 1,500.00. Ref RKTSAV0001."
    ]
    statuses = sorted(db.session.scalars(select(MpesaCallback.status)))
    assert statuses == ["duplicate", "processed"]
    # The payment names the callback that brought it (the first; the resend is a duplicate).
    first = select(MpesaCallback.id).where(MpesaCallback.status == "processed")
    assert payment.callback_id == db.session.scalar(first)


def test_paybill_to_the_shares_suffix_buys_share_capital_from_mpesa(
    client: FlaskClient, member: Ref
) -> None:
    clearing = balance("GL-MPESA-CLEARING")
    pay(client, "RKTSHR0001", "M 000001-SH", "2000")
    assert balance("SHR-M000001") == D("2000.00")
    assert balance("SAV-M000001") == D("500.00")  # not bought from deposits
    assert balance("GL-MPESA-CLEARING") - clearing == D("2000.00")
    entry = db.session.scalar(
        select(JournalEntry).where(JournalEntry.idempotency_key == "shares:RKTSHR0001")
    )
    assert entry is not None and entry.kind == "share_purchase" and entry.member_id == member.id
    assert (entry.description, entry.actor) == ("Shares M000001SH RKTSHR0001", "system")
    assert "account M000001SH. Balance KES 2,000.00" in sms_bodies("account_deposit_received")[0]


def test_the_bare_member_number_still_pays_deposits(client: FlaskClient, member: Ref) -> None:
    pay(client, "RKTDEP0001", "M000001", "700")
    assert balance("SAV-M000001") == D("1200.00")
    assert balance("ORD-M000001") == 0 and balance("SHR-M000001") == 0
    assert len(sms_bodies("deposit_received")) == 2  # the factory's deposit and this one


@pytest.mark.parametrize(
    ("account", "code"),
    [
        ("M000001S", "0"),
        ("m1sh", "0"),
        ("M000001", "0"),
        ("M000001X", "C2B00012"),  # no product has suffix X
        ("M000009S", "C2B00012"),  # no such member
    ],
)
def test_validation_accepts_each_account_and_refuses_unknown_ones(
    client: FlaskClient, member: Ref, account: str, code: str
) -> None:
    reply = post(client, "c2b/validation", c2b_body(account=account))
    assert reply["ResultCode"] == code


def test_a_closed_product_takes_money_only_into_accounts_it_has(
    client: FlaskClient, member: Ref
) -> None:
    other = make_member(phone="0722000001").member_no
    pay(client, "RKTSAV0002", f"{other}S", "300")  # the other member opens one
    ordinary = account_product("ORD")
    product_update(product_id=ordinary.id, actor="staff:test", active=False)
    refused = post(client, "c2b/validation", c2b_body(account="M000001S"))
    assert refused["ResultCode"] == "C2B00012"
    accepted = post(client, "c2b/validation", c2b_body(account=f"{other}S"))
    assert accepted["ResultCode"] == "0"
    pay(client, "RKTSAV0003", f"{other}S", "200")
    assert balance(f"ORD-{other}") == D("500.00")
    # Money that came anyway (validation can be off) is suspense, the member suggested.
    pay(client, "RKTSAV0004", "M000001S", "100")
    payment = db.session.scalar(select(Payment).where(Payment.receipt == "RKTSAV0004"))
    assert (payment.status, payment.suggested_member_id) == ("suspense", member.id)
    assert balance("ORD-M000001") == 0 and balance("GL-SUSPENSE") == D("100.00")


def test_suspense_is_assigned_to_an_account_by_its_number(client: FlaskClient, member: Ref) -> None:
    pay(client, "RKTSUS0001", "WRONG", "400")
    payment = db.session.scalar(select(Payment).where(Payment.receipt == "RKTSUS0001"))
    assert payment.status == "suspense"
    staff = make_staff("branch_manager")
    payments_assign_suspense(payment_id=payment.id, staff=staff, account="M1SH")
    db.session.expire_all()
    assert balance("SHR-M000001") == D("400.00") and balance("GL-SUSPENSE") == 0
    assert db.session.get(Payment, payment.id).status == "assigned"
    entry = db.session.scalar(
        select(JournalEntry).where(JournalEntry.idempotency_key == "shares:assign:RKTSUS0001")
    )
    assert entry is not None and entry.actor == f"staff:{staff.email}"


def test_suspense_placed_in_deposits_is_booked_in_the_staff_members_name(
    client: FlaskClient, member: Ref
) -> None:
    pay(client, "RKTSUS0002", "WRONG", "250")
    payment = db.session.scalar(select(Payment).where(Payment.receipt == "RKTSUS0002"))
    staff = make_staff("branch_manager")
    payments_assign_suspense(payment_id=payment.id, staff=staff, account="M000001")
    db.session.expire_all()
    assert balance("SAV-M000001") == D("750.00") and balance("GL-SUSPENSE") == 0
    entry = db.session.get(JournalEntry, db.session.get(Payment, payment.id).journal_entry_id)
    assert (entry.kind, entry.actor, entry.member_id) == (
        "deposit",
        f"staff:{staff.email}",
        member.id,
    )


# -- the service every channel credits an account through ----------------------------------


@pytest.mark.parametrize(
    ("amount", "why"),
    [
        ("0", "amount must be more than zero"),
        ("-5", "amount must be more than zero"),
        ("ten", "amount is not a number"),
        ("1.005", "amount has fractions of a cent"),
    ],
)
@pytest.mark.parametrize("code", ["DEP", "ORD", "SHR"])
def test_a_deposit_the_books_cannot_take_is_refused_with_why_and_writes_nothing(
    member: Ref, amount: str, why: str, code: str
) -> None:
    entries = db.session.scalar(select(func.count()).select_from(JournalEntry))
    with pytest.raises(ProductError) as refused:
        account_deposit(
            member_id=member.id,
            product=account_product(code),
            amount=amount,
            reference="RKTBAD0001",
            value_date=DAY,
        )
    assert str(refused.value) == why
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(JournalEntry)) == entries


def test_a_deposit_to_nobody_is_refused_by_number(member: Ref) -> None:
    with pytest.raises(ProductError) as refused:
        account_deposit(
            member_id=member.id + 100,
            product=account_product("ORD"),
            amount="50",
            reference="RKTBAD0002",
            value_date=DAY,
        )
    assert str(refused.value) == f"no member {member.id + 100}"


def test_a_product_code_that_is_not_ours_is_refused_by_name_and_makes_nothing(app: Flask) -> None:
    """(Mutation testing, issue 23.)"""
    with pytest.raises(ProductError) as refused:
        account_product("XMAS")
    assert str(refused.value) == "no account product 'XMAS'"
    assert db.session.scalar(select(func.count()).where(AccountProduct.code == "XMAS")) == 0


@pytest.mark.parametrize("code", ["DEP", "ORD", "SHR"])
def test_one_shilling_is_a_deposit_and_the_caller_decides_whether_it_stands(
    member: Ref, code: str
) -> None:
    """The smallest amount is money like any other; the service never commits, so a caller
    whose own work fails afterwards (a suspense assignment, a callback) rolls it back."""
    product = account_product(code)
    db.session.commit()
    entry_id = account_deposit(
        member_id=member.id, product=product, amount="1", reference="RKTONE0002", value_date=DAY
    )
    entry = db.session.get(JournalEntry, entry_id)
    assert entry is not None and entry.member_id == member.id and entry.actor == "system"
    assert sorted(line.amount for line in entry.lines) == [D("-1.00"), D("1.00")]
    db.session.rollback()
    assert db.session.get(JournalEntry, entry_id) is None
    assert balance("SAV-M000001") == D("500.00")
    assert balance("ORD-M000001") == 0 and balance("SHR-M000001") == 0


def test_one_receipt_never_pays_two_accounts(client: FlaskClient, member: Ref) -> None:
    pay(client, "RKTONE0001", "M000001S", "900")
    pay(client, "RKTONE0001", "M000001SH", "900")  # the same TransID to another account
    assert balance("ORD-M000001") == D("900.00") and balance("SHR-M000001") == 0
    count = db.session.scalar(select(func.count()).select_from(Payment))
    assert count == 1


# -- races on PostgreSQL -----------------------------------------------------------------


def _process_at_once(app: Flask) -> list[str]:
    """Every stored confirmation processed by its own thread at the same time."""
    ids = list(db.session.scalars(select(MpesaCallback.id)))
    queue("payments").empty()
    db.session.commit()
    workers = [Worker(app, lambda cid=cid: callback_process(callback_id=cid)) for cid in ids]
    for w in workers:
        w.start()
    return sorted(w.outcome() for w in workers)


@pytest.mark.usefixtures("pg")
def test_one_transid_to_a_savings_account_from_many_threads_posts_once(
    app: Flask, client: FlaskClient, member: Ref
) -> None:
    for _ in range(6):
        post(client, "c2b/confirmation", c2b_body("RKTRACE002", amount="400", account="M1S"))
    assert _process_at_once(app) == ["duplicate"] * 5 + ["processed"]
    assert balance("ORD-M000001") == D("400.00")


@pytest.mark.usefixtures("pg")
def test_first_payments_to_a_new_account_at_once_open_it_once_and_credit_each(
    app: Flask, client: FlaskClient, member: Ref
) -> None:
    for i in range(6):
        post(client, "c2b/confirmation", c2b_body(f"RKTOPEN00{i}", amount="100", account="M1S"))
    assert _process_at_once(app) == ["processed"] * 6
    assert balance("ORD-M000001") == D("600.00")
    opened = db.session.scalar(
        select(func.count()).select_from(Account).where(Account.code == "ORD-M000001")
    )
    assert opened == 1


def test_two_first_uses_of_a_default_product_at_once_make_one_product(app: Flask, pg: None) -> None:
    """A default product is made on its first use (an empty or upgraded database). Two
    first uses at once, say two payments to its suffix, make one row, and the one that
    lost the race uses that row instead of failing. (Mutation testing, issue 23.)"""
    account_product("ORD")  # another product is there already
    db.session.execute(delete(AccountProduct).where(AccountProduct.code == "TGT"))
    db.session.commit()
    held, release = threading.Event(), threading.Event()

    def first() -> int:
        product = account_product("TGT")
        held.set()
        assert release.wait(10)  # made, not committed: the second's insert waits on it
        db.session.commit()
        return product.id

    def second() -> int:
        product = account_product("TGT")
        db.session.commit()
        return product.id

    one, two = holder_then_waiter(app, first, held, second)
    release.set()

    made = one.outcome()
    assert two.outcome() == made
    assert db.session.scalars(
        select(AccountProduct.id).where(AccountProduct.code == "TGT")
    ).all() == [made]
