"""A test year, end to end (issue 20, "Done when"): members pay deposits, savings and
shares by Paybill on varied days of 2025 (and some deposits recorded by staff), one buys
shares from deposits, interest on ordinary savings posts month by month, one member
withdraws to M-PESA; then the AGM's rates are declared, the run previewed, approved and
posted. Every member's figure matches a plain calculation written here to the cent, by
either method; withholding tax in the journal is the interest postings' and the run's;
the books reconcile (the autouse fixture, and ledger_check here).

Through the real paths: `POST /payments/<token>/c2b/confirmation` as Daraja sends it,
processed by the real worker (the value date is the payment's M-PESA time), the
`savings-interest` batch for each month's first day, the withdrawal through B2C with
Daraja faked at HTTP. STK "Save" too: the prompt written by the service, sent by the
worker to Daraja faked at HTTP, and the callback (`POST /payments/<token>/stk/callback`)
carrying that 2025 day as its TransactionDate, which is the deposit's value date (the
M-PESA time, as for Paybill), into deposits, shares and ordinary savings.
"""

from __future__ import annotations

import itertools
import json
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, type_coerce

from app.cli.runtime import make_worker
from app.extensions import db
from app.models import (
    Account,
    DividendLine,
    InterestPosting,
    JournalEntry,
    JournalLine,
    Member,
    MpesaCallback,
    MpesaRequest,
    Payment,
    SmsMessage,
    StaffUser,
)
from app.models.types import Money
from app.selectors.dividends import dividend_summary, member_dividends
from app.services.ledger import ledger_check
from app.services.members import member_buy_shares, member_deposit
from app.services.payments.stk import payments_request_deposit_stk
from app.services.savings import (
    account_product,
    dividend_approve,
    dividend_declare,
    dividend_post,
    member_product_account,
    withdrawal_request,
)
from app.services.savings.dividends import RunStats
from app.services.savings.interest import savings_interest_job
from app.services.staff import staff_add
from tests.factories import make_member
from tests.helpers import PASSWORD, b2c_result_body, c2b_body, stk_body

YEAR = 2025
TOKEN = "dev-callback-token"  # noqa: S105 - the test settings' CALLBACK_TOKEN
CENT = Decimal("0.01")
D = Decimal
SHARE_RATE, DEPOSIT_RATE = "11.5", "6.75"
ORD_RATE = D(3)  # the default ORD product: 3% a year, posted monthly


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def work(queues: tuple[str, ...] = ("payments",)) -> None:
    make_worker(queues).work(burst=True)
    db.session.remove()


def paybill(client: FlaskClient, receipt: str, account: str, amount: str, day: date) -> None:
    body = c2b_body(receipt, amount=amount, account=account)
    body["TransTime"] = f"{day:%Y%m%d}103000"  # mid-morning in Nairobi, that day
    reply = client.post(
        f"/payments/{TOKEN}/c2b/confirmation",
        data=json.dumps(body),
        content_type="application/json",
    )
    assert reply.status_code == 200 and reply.json["ResultCode"] == 0
    work()
    # Settled now, not by a retry later on (which would land after the interest ran).
    status, error = db.session.execute(
        select(MpesaCallback.status, MpesaCallback.error).order_by(MpesaCallback.id.desc())
    ).first()  # type: ignore[misc]
    assert status == "processed", f"{receipt}: {status} {error}"


def stk_save(
    client: FlaskClient, member_id: int, product: str, amount: int, day: date, receipt: str
) -> None:
    """A member's "Save" prompt into the account of `product`, paid on `day`: the request
    through the service, the push sent by the worker, then Safaricom's callback whose
    TransactionDate (Kenyan time) is that day."""
    request = payments_request_deposit_stk(
        member_id=member_id, product_id=account_product(product).id, amount=amount
    )
    work()  # the send job: Daraja (faked at HTTP) answers with a CheckoutRequestID
    db.session.expire_all()
    sent = db.session.get(MpesaRequest, request.id)
    assert sent is not None and sent.status == "sent" and sent.checkout_request_id
    body = stk_body(sent.checkout_request_id, amount=amount, receipt=receipt, phone=int(sent.phone))
    for item in body["Body"]["stkCallback"]["CallbackMetadata"]["Item"]:
        if item["Name"] == "TransactionDate":
            item["Value"] = int(f"{day:%Y%m%d}143000")  # mid-afternoon in Nairobi, that day
    reply = client.post(
        f"/payments/{TOKEN}/stk/callback", data=json.dumps(body), content_type="application/json"
    )
    assert reply.status_code == 200
    work()
    db.session.expire_all()
    done = db.session.get(MpesaRequest, request.id)
    assert done is not None and (done.status, done.receipt) == ("succeeded", receipt)
    # The deposit's journal entry carries the M-PESA day, not the day the test ran.
    value_date = db.session.scalar(
        select(JournalEntry.value_date)
        .join(Payment, Payment.journal_entry_id == JournalEntry.id)
        .where(Payment.receipt == receipt)
    )
    assert value_date == day, receipt


class Ledger:
    """What the test itself writes down: every member's movements by value date, per
    deposits, shares and ordinary savings. The expected figures come from these only."""

    def __init__(self) -> None:
        self.moves: dict[tuple[int, str], list[tuple[date, Decimal]]] = {}

    def add(self, member_id: int, kind: str, day: date, amount: Decimal) -> None:
        self.moves.setdefault((member_id, kind), []).append((day, amount))

    def of(self, member_id: int, kind: str) -> list[tuple[date, Decimal]]:
        return self.moves.get((member_id, kind), [])


def _earned(items: list[tuple[date, Decimal]], rate: Decimal, method: str) -> Decimal:
    """Simple: the year-end balance. Weighted: a shilling earns rate/12 for each month from
    the month it came in to December; one there before the year for all twelve."""
    counted = [(day, amount) for day, amount in items if day.year <= YEAR]
    if method == "simple":
        return cents(sum((a for _, a in counted), D(0)) * rate / 100)
    shilling_months = sum(
        (a * (12 if day.year < YEAR else 13 - day.month) for day, a in counted), D(0)
    )
    return cents(shilling_months * rate / 1200)


def _interest_months(items: list[tuple[date, Decimal]]) -> list[tuple[date, Decimal, Decimal]]:
    """Ordinary savings' interest month by month through 2025, worked out day by day: each
    day's closing balance x 3%/365, rounded once a month, less 15% tax, the net added on
    the month's last day. (period end, gross, tax) for each month with money."""
    moves = sorted(items)
    out = []
    for month in range(1, 13):
        start = date(YEAR, month, 1)
        end = (date(YEAR, month + 1, 1) if month < 12 else date(YEAR + 1, 1, 1)) - timedelta(1)
        if not any(day <= end for day, _ in moves):
            continue
        total, day = D(0), start
        while day <= end:
            closing = sum((a for d, a in moves if d <= day), D(0))
            total += max(closing, D(0)) * ORD_RATE / 100 / 365
            day += timedelta(1)
        gross = cents(total)
        tax = cents(gross * 15 / 100)
        out.append((end, gross, tax))
        if gross - tax > 0:
            moves.append((end, gross - tax))
    return out


def _journal(code: str) -> Decimal:
    total = db.session.scalar(
        select(type_coerce(func.sum(JournalLine.amount), Money()))
        .join(Account, Account.id == JournalLine.account_id)
        .where(Account.code == code)
    )
    return D(0) if total is None else D(total)


@pytest.fixture
def year(
    client: FlaskClient, app: Flask, mocked: responses.RequestsMock, base: str
) -> tuple[Ledger, dict[str, int]]:
    """2025 as it happened, and who is who."""
    book = Ledger()
    mocked.get(f"{base}/oauth/v1/generate", json={"access_token": "tok", "expires_in": "3599"})
    checkouts = itertools.count(1)
    mocked.add_callback(
        responses.POST,
        f"{base}/mpesa/stkpush/v1/processrequest",
        callback=lambda _: (
            200,
            {},
            json.dumps(
                {
                    "MerchantRequestID": "29115-34620561-1",
                    "CheckoutRequestID": f"ws_CO_2025{next(checkouts):04d}",
                    "ResponseCode": "0",
                    "ResponseDescription": "Success. Request accepted for processing",
                    "CustomerMessage": "Success. Request accepted for processing",
                }
            ),
        ),
        content_type="application/json",
    )
    people = {name: make_member(name=f"Member {name}").id for name in ("Amina", "Baraka", "Chebet")}
    numbers = {
        name: db.session.get(Member, mid).member_no  # type: ignore[union-attr]
        for name, mid in people.items()
    }
    a, b = people["Amina"], people["Baraka"]
    # Deposits by Paybill (the bare member number) on varied days, one before the year.
    for n, (who, day, amount) in enumerate(
        [
            ("Amina", date(2024, 11, 20), "15000"),
            ("Amina", date(2025, 1, 31), "2000"),
            ("Amina", date(2025, 6, 1), "2000.50"),
            ("Baraka", date(2025, 3, 14), "7300"),
            ("Baraka", date(2025, 9, 30), "455.55"),
            ("Chebet", date(2025, 12, 31), "10000"),
            ("Chebet", date(2026, 1, 1), "999"),  # the next year: never counted
        ]
    ):
        paybill(client, f"DEP{n:07d}", numbers[who], amount, day)
        book.add(people[who], "deposits", day, D(amount))
    # Staff record a deposit with its value date (money brought to the office).
    member_deposit(member_id=b, amount="1200", reference="CASH-B1", value_date=date(2025, 5, 5))
    book.add(b, "deposits", date(2025, 5, 5), D(1200))
    # Shares: Baraka by Paybill to his shares account; Amina from her deposits.
    paybill(client, "SHR0000001", f"{numbers['Baraka']}SH", "5000", date(2025, 2, 10))
    book.add(b, "shares", date(2025, 2, 10), D(5000))
    member_buy_shares(member_id=a, amount="3000", reference="SH-A1", value_date=date(2025, 8, 19))
    book.add(a, "shares", date(2025, 8, 19), D(3000))
    book.add(a, "deposits", date(2025, 8, 19), D(-3000))
    # Ordinary savings by Paybill ("S"): they earn interest monthly, not a dividend.
    for n, (who, day, amount) in enumerate(
        [
            ("Chebet", date(2025, 1, 10), "20000"),
            ("Chebet", date(2025, 7, 4), "5000.25"),
            ("Amina", date(2025, 4, 22), "8000"),
        ]
    ):
        paybill(client, f"ORD{n:07d}", f"{numbers[who]}S", amount, day)
        book.add(people[who], "savings", day, D(amount))
    # STK "Save" from USSD on 2025 days: Baraka to his deposits, Amina to her shares,
    # Chebet to her ordinary savings (so it earns the monthly interest from that day).
    c = people["Chebet"]
    stk_save(client, b, "DEP", 2500, date(2025, 10, 17), "STK0000001")
    book.add(b, "deposits", date(2025, 10, 17), D(2500))
    stk_save(client, a, "SHR", 1000, date(2025, 11, 3), "STK0000002")
    book.add(a, "shares", date(2025, 11, 3), D(1000))
    stk_save(client, c, "ORD", 1500, date(2025, 3, 3), "STK0000003")
    book.add(c, "savings", date(2025, 3, 3), D(1500))
    # Interest on savings, posted each month by the nightly batch on the 1st.
    for month in range(2, 14):
        as_of = date(YEAR + (month > 12), (month - 1) % 12 + 1, 1)
        stats = RunStats()
        savings_interest_job(as_of=as_of, stats=stats)
        assert not stats.errors
    db.session.commit()
    return book, people


def _staff(role: str, email: str) -> StaffUser:
    return staff_add(email=email, role=role, password=PASSWORD)


@pytest.mark.parametrize("method", ["simple", "weighted"])
def test_a_year_of_savings_ends_in_a_dividend_run_that_matches_a_plain_calculation(
    client: FlaskClient,
    mocked: responses.RequestsMock,
    base: str,
    year: tuple[Ledger, dict[str, int]],
    method: str,
) -> None:
    book, people = year
    # Interest on ordinary savings: every month to the cent.
    for who in ("Amina", "Chebet"):
        account = member_product_account(
            db.session.get(Member, people[who]),
            account_product("ORD"),  # type: ignore[arg-type]
        )
        posted = [
            (p.period_end, p.gross, p.tax)
            for p in db.session.scalars(
                select(InterestPosting)
                .where(InterestPosting.account_id == account.id, InterestPosting.gross > 0)
                .order_by(InterestPosting.period_end)
            )
        ]
        assert len(posted) >= 8 and posted == _interest_months(book.of(people[who], "savings")), who

    # One member withdraws to M-PESA (today: after the year, so no figure changes).
    mocked.post(  # the token's route is faked already (the year fixture's STK prompts)
        f"{base}/mpesa/b2c/v3/paymentrequest",
        json={"ConversationID": "AG_B2C_0001", "ResponseCode": "0"},
    )
    chebet = db.session.get(Member, people["Chebet"])
    savings = member_product_account(chebet, account_product("ORD"))  # type: ignore[arg-type]
    request = withdrawal_request(member_id=people["Chebet"], account_id=savings.id, amount="2500")
    ours = request.originator_conversation_id
    db.session.commit()
    work(("payments", "sms"))
    reply = client.post(
        f"/payments/{TOKEN}/b2c/result",
        data=json.dumps(b2c_result_body(ours, amount=2500, receipt="WDR2025001")),
        content_type="application/json",
    )
    assert reply.status_code == 200
    work(("payments", "sms"))
    assert (
        db.session.scalar(select(MpesaRequest.status).where(MpesaRequest.purpose == "withdrawal"))
        == "succeeded"
    )

    # The AGM declares; the run is previewed, approved by another, posted.
    maker = _staff("branch_manager", "maker@sacco.test")
    checker = _staff("admin", "checker@sacco.test")
    run = dividend_declare(
        year=YEAR,
        share_rate=SHARE_RATE,
        deposit_rate=DEPOSIT_RATE,
        method=method,
        payout="savings",
        staff=maker,
        resolution_ref="AGM 2026 min. 7",
    )
    summary, top = dividend_summary(run.id)
    assert summary.status == "draft" and len(top) == 3
    expected = {}
    for member_id in people.values():
        dividend = _earned(book.of(member_id, "shares"), D(SHARE_RATE), method)
        interest = _earned(book.of(member_id, "deposits"), D(DEPOSIT_RATE), method)
        tax = cents(dividend * 5 / 100) + cents(interest * 15 / 100)
        expected[member_id] = (dividend, interest, tax, dividend + interest - tax)
    got = {line.member_id: (line.dividend, line.interest, line.tax, line.net) for line in top}
    assert got == expected
    assert summary.net == sum((e[3] for e in expected.values()), D(0))
    dividend_approve(run_id=run.id, staff=checker)
    ord_before = {
        mid: -(
            db.session.scalar(
                select(Account.balance).where(
                    Account.code == f"ORD-{db.session.get(Member, mid).member_no}"
                )  # type: ignore[union-attr]
            )
            or D(0)
        )
        for mid in people.values()
    }
    done = dividend_post(run_id=run.id, value_date=date(2026, 2, 15))
    assert done.status == "posted"
    db.session.expire_all()
    for member_id, figures in expected.items():
        code = f"ORD-{db.session.get(Member, member_id).member_no}"  # type: ignore[union-attr]
        after = -db.session.scalar(select(Account.balance).where(Account.code == code))
        assert after - ord_before[member_id] == figures[3]
        [mine] = member_dividends(member_id, [YEAR, YEAR - 1])
        assert (mine.year, mine.status, mine.net, mine.paid) == (YEAR, "posted", figures[3], True)

    # Withholding tax: what the journal owes is the savings interest's and the run's.
    interest_tax = db.session.scalar(
        select(type_coerce(func.sum(InterestPosting.tax), Money()))
    ) or D(0)
    assert interest_tax > 0
    assert -_journal("GL-WHT-PAYABLE") == interest_tax + done.tax
    assert done.tax == sum((e[2] for e in expected.values()), D(0))
    assert (
        db.session.scalar(
            select(func.count())
            .select_from(SmsMessage)
            .where(SmsMessage.template == "dividend_paid")
        )
        == 3
    )
    assert (
        db.session.scalar(
            select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == "dividend")
        )
        == 1
    )
    assert db.session.scalar(select(func.count()).select_from(DividendLine)) == 3
    assert ledger_check() == []
