"""Standing orders: a member's monthly transfer from their withdrawable savings to a loan,
their deposits or their shares, run by the nightly `standing-orders` job."""

from __future__ import annotations

import threading
from datetime import date, timedelta
from decimal import Decimal

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from app.batch import ChunkStats
from app.extensions import db
from app.models import (
    Account,
    AuditLog,
    JournalEntry,
    Loan,
    Member,
    StandingOrder,
    StandingOrderRun,
)
from app.selectors.loans import loan_debt
from app.selectors.members import member_balances
from app.services.ledger import credit, debit, gl_account, journal_post
from app.services.loans import loan_repay
from app.services.savings import account_product, member_product_account
from app.services.savings.exits import exit_request, exit_settle
from app.services.savings.standing_orders import (
    MAX_ACTIVE_ORDERS,
    STANDING_ORDERS,
    StandingOrderError,
    standing_order_cancel,
    standing_order_create,
    standing_order_execute,
    standing_orders_due,
)
from tests.factories import make_member
from tests.helpers import (
    Worker,
    assert_not_held,
    row_locked,
    sms_bodies,
    wait_until_blocked,
)
from tests.loan_factories import make_borrower, make_loan, make_product, make_staff
from workers.schedule import JOBS, run_job

START = date(2026, 1, 1)  # orders set before the days the tests run the job


def _save(member: Member, amount: str, on: date = date(2026, 3, 1), ref: str = "S1") -> Account:
    """Money into the member's ordinary savings, as a Paybill payment to M...S posts it."""
    account = member_product_account(member, account_product("ORD"))
    journal_post(
        kind="deposit",
        lines=[
            debit(gl_account("GL-MPESA-CLEARING"), Decimal(amount)),
            credit(account, Decimal(amount)),
        ],
        value_date=on,
        idempotency_key=f"deposit:{ref}-{member.id}",
        member_id=member.id,
    )
    db.session.commit()
    return account


def _ordinary(member_id: int) -> Decimal:
    member = db.session.get(Member, member_id)
    return member_product_account(member, account_product("ORD")).display_balance


def _runs(order_id: int) -> list[tuple[date, str, Decimal]]:
    return [
        (run.due_on, run.status, run.moved)
        for run in db.session.scalars(
            select(StandingOrderRun)
            .where(StandingOrderRun.order_id == order_id)
            .order_by(StandingOrderRun.due_on)
        )
    ]


def _notes(order_id: int) -> list[str | None]:
    return list(
        db.session.scalars(
            select(StandingOrderRun.note)
            .where(StandingOrderRun.order_id == order_id)
            .order_by(StandingOrderRun.due_on)
        )
    )


def _order(member: Member, **terms: object) -> int:
    """A monthly order from the member's ordinary savings, set before the tests' days."""
    rule = dict(
        member_id=member.id,
        target="deposits",
        amount="1000",
        day_of_month=5,
        actor="x",
        starts_on=START,
    )
    return standing_order_create(**{**rule, **terms}).id  # type: ignore[arg-type]


def test_an_order_to_deposits_moves_once_a_month_on_its_day_and_catches_up_a_missed_day(
    app: Flask,
) -> None:
    member = make_member()
    _save(member, "5000")
    order = _order(
        member,
        target="deposits",
        amount="1000",
        day_of_month=5,
        actor="staff@x",
    )
    member_id = member.id
    assert run_job("standing-orders", date(2026, 3, 4)) == 0
    assert _runs(order) == []  # not its day yet
    assert run_job("standing-orders", date(2026, 3, 5)) == 0
    assert run_job("standing-orders", date(2026, 3, 5)) == 0  # a rerun moves nothing
    assert run_job("standing-orders", date(2026, 3, 20)) == 0  # nor later that month
    # April's 5th was missed (no run that day): the 7th catches it up, once.
    assert run_job("standing-orders", date(2026, 4, 7)) == 0
    assert _runs(order) == [
        (date(2026, 3, 5), "done", Decimal("1000.00")),
        (date(2026, 4, 5), "done", Decimal("1000.00")),
    ]
    assert member_balances(member_id=member_id).savings == Decimal("2000.00")  # deposits
    assert _ordinary(member_id) == Decimal("3000.00")
    assert (
        sms_bodies("standing_order_done")
        == ["Standing order: KES 1,000.00 of KES 1,000.00 moved from your savings to deposits."] * 2
    )


def test_short_savings_move_what_is_above_the_minimum_or_nothing_as_the_order_says(
    app: Flask,
) -> None:
    partial, whole = make_member(), make_member(language="sw")
    for member in (partial, whole):
        _save(member, "600")  # ORD keeps a minimum balance of 100
    takes_part = _order(
        partial,
        target="shares",
        amount="1000",
        day_of_month=1,
        actor="x",
    )
    all_or_none = _order(
        whole,
        target="deposits",
        amount="1000",
        day_of_month=1,
        actor="x",
        partial=False,
    )
    partial_id, whole_id = partial.id, whole.id
    run_job("standing-orders", date(2026, 3, 1))
    assert _runs(takes_part) == [(date(2026, 3, 1), "partial", Decimal("500.00"))]
    assert member_balances(member_id=partial_id).share_capital == Decimal("500.00")
    assert _ordinary(partial_id) == Decimal("100.00")  # never below the product's minimum
    assert _runs(all_or_none) == [(date(2026, 3, 1), "short", Decimal("0.00"))]
    assert _ordinary(whole_id) == Decimal("600.00")
    assert sms_bodies("standing_order_short") == [
        "Agizo la kudumu la KES 1,000.00 kwenda akiba halikulipwa: akiba yako haitoshi. "
        "Weka akiba kwa Paybill au USSD."
    ]


def test_an_order_to_a_loan_repays_it_from_savings_and_never_pays_more_than_is_owed(
    app: Flask,
) -> None:
    product = make_product("V1")
    # Another member's loans, made before and after: the SMS names the order's own.
    make_loan(product=product, amount=2000, on=date(2026, 1, 10))
    loan = make_loan(product=product, amount=3000, on=date(2026, 1, 10))
    make_loan(product=product, amount=4000, on=date(2026, 1, 10))
    loan_no = loan.loan_no
    member = db.session.get(Member, loan.member_id)
    _save(member, "20000")
    owed = loan_debt(loan_id=loan.id).total
    order = _order(
        member,
        target="loan",
        loan_id=loan.id,
        amount="10000",
        day_of_month=10,
        actor="x",
    )
    member_id, loan_id = member.id, loan.id
    run_job("standing-orders", date(2026, 2, 10))
    assert _runs(order) == [(date(2026, 2, 10), "done", owed)]
    assert sms_bodies("standing_order_done") == [
        f"Standing order: KES {owed:,.2f} of KES {owed:,.2f} moved from your savings to "
        f"loan {loan_no}."
    ]
    # Posted once under the order's own key, by the job (not a person, not the member).
    [repaid] = db.session.scalars(
        select(JournalEntry).where(
            JournalEntry.loan_id == loan_id, JournalEntry.kind == "repayment"
        )
    )
    assert (repaid.idempotency_key, repaid.actor) == (f"repay:SO{order}-20260210", "standing-order")
    assert loan_debt(loan_id=loan_id).total == Decimal("0.00")
    assert db.session.get(Loan, loan_id).status == "closed"
    assert _ordinary(member_id) == Decimal("20000.00") - owed
    # The loan is closed: next month's run records it and moves nothing.
    run_job("standing-orders", date(2026, 3, 10))
    assert _runs(order)[-1] == (date(2026, 3, 10), "skipped", Decimal("0.00"))
    assert _notes(order)[-1] == "loan is not open"


def test_orders_are_refused_in_words_and_nothing_is_written(app: Flask) -> None:
    member, other = make_member(), make_member()
    loan = make_loan(product=make_product("V1"), amount=3000, on=date(2026, 1, 10))
    cases = [
        (dict(target="deposits", amount="500", day_of_month=29), "the day must be 1 to 28"),
        (dict(target="deposits", amount="-5", day_of_month=3), "amount"),
        (dict(target="savings", amount="500", day_of_month=3), "pays a loan, deposits or shares"),
        (
            dict(target="loan", amount="500", day_of_month=3, loan_id=loan.id),
            "choose one of the member's own loans",
        ),
    ]
    for kwargs, words in cases:
        with pytest.raises(StandingOrderError, match=words):
            standing_order_create(member_id=member.id, actor="x", starts_on=START, **kwargs)  # type: ignore[arg-type]
    assert db.session.scalar(select(func.count(StandingOrder.id))) == 0
    for day in range(1, MAX_ACTIVE_ORDERS + 1):
        standing_order_create(
            starts_on=START,
            member_id=other.id,
            target="shares",
            amount="100",
            day_of_month=day,
            actor="x",
        )
    with pytest.raises(StandingOrderError, match="cancel one first"):
        standing_order_create(
            starts_on=START,
            member_id=other.id,
            target="shares",
            amount="100",
            day_of_month=9,
            actor="x",
        )
    first = db.session.scalar(select(StandingOrder).order_by(StandingOrder.id))
    with pytest.raises(StandingOrderError, match="no standing order"):
        standing_order_cancel(order_id=first.id, actor="x", member_id=member.id)  # not theirs
    standing_order_cancel(order_id=first.id, actor="x", member_id=other.id)
    assert first.id not in standing_orders_due(date(2026, 3, 28))
    with pytest.raises(StandingOrderError, match="cancelled already"):
        standing_order_cancel(order_id=first.id, actor="x")


def test_the_job_is_listed_and_counts_what_it_did(app: Flask) -> None:
    from workers.runner import JobStats

    member = make_member()
    _save(member, "1000")
    standing_order_create(
        starts_on=START,
        member_id=member.id,
        target="deposits",
        amount="300",
        day_of_month=2,
        actor="x",
    )
    stats = JobStats(run_id="t")
    JOBS["standing-orders"](as_of=date(2026, 3, 2), stats=stats)
    assert (stats.records_scanned, stats.records_updated, stats.notifications_sent) == (1, 1, 1)


def test_two_workers_running_one_order_at_once_move_it_once(app: Flask, pg: None) -> None:
    """Both wait on the member's row, held here; the second re-reads under the lock and
    finds the month's run written by the first."""
    member = make_member()
    _save(member, "5000")
    order = _order(
        member,
        target="shares",
        amount="700",
        day_of_month=3,
        actor="x",
    )
    member_id, order_id = member.id, order
    db.session.remove()
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        db.session.execute(
            text("SELECT id FROM members WHERE id = :m FOR UPDATE"), {"m": member_id}
        )
        locked.set()
        release.wait(20)
        db.session.commit()

    def execute() -> str | None:
        run = standing_order_execute(order_id, as_of=date(2026, 3, 3))
        status = run.status if run else None
        db.session.commit()
        return status

    holder = Worker(app, hold)
    holder.start()
    assert locked.wait(20)
    racers = [Worker(app, execute), Worker(app, execute)]
    racers[0].start()
    wait_until_blocked(1)
    racers[1].start()
    wait_until_blocked(2)
    release.set()
    holder.outcome()
    assert sorted(str(racer.outcome()) for racer in racers) == ["None", "done"]
    assert _runs(order_id) == [(date(2026, 3, 3), "done", Decimal("700.00"))]
    assert member_balances(member_id=member_id).share_capital == Decimal("700.00")
    assert _ordinary(member_id) == Decimal("4300.00")


def test_a_payday_order_prompts_the_phone_once_on_its_day_and_the_payment_lands_in_savings(
    client: FlaskClient, mocked: responses.RequestsMock, base: str
) -> None:
    """source "mpesa": no money moves at night; the member's phone is asked for the amount
    into the chosen account, once a month (a rerun asks nothing more), and the callback
    credits it as any Save prompt."""
    import json

    from app.cli.runtime import make_worker
    from app.models import MpesaRequest
    from tests.helpers import stk_body

    checkout = "ws_CO_PAYDAY_0001"
    mocked.get(f"{base}/oauth/v1/generate", json={"access_token": "tok", "expires_in": "3599"})
    mocked.post(
        f"{base}/mpesa/stkpush/v1/processrequest",
        json={
            "MerchantRequestID": "1-1-1",
            "CheckoutRequestID": checkout,
            "ResponseCode": "0",
            "ResponseDescription": "Success. Request accepted for processing",
            "CustomerMessage": "Success. Request accepted for processing",
        },
    )
    member = make_member(phone="0708374149")
    member_id, member_no = member.id, member.member_no
    with pytest.raises(StandingOrderError, match="payday prompt pays deposits, shares or savings"):
        standing_order_create(
            member_id=member_id,
            target="loan",
            amount="500",
            day_of_month=25,
            actor="x",
            source="mpesa",
            loan_id=1,
            starts_on=START,
        )
    with pytest.raises(StandingOrderError, match="an order from savings pays a loan"):
        standing_order_create(
            member_id=member_id,
            target="savings",
            amount="500",
            day_of_month=25,
            actor="x",
            starts_on=START,
        )
    order = standing_order_create(
        member_id=member_id,
        target="savings",
        amount="2500",
        day_of_month=25,
        actor="member:ussd",
        source="mpesa",
        starts_on=START,
    ).id

    def pushes() -> list:
        return [c for c in mocked.calls if "stkpush" in c.request.url]

    run_job("standing-orders", date(2026, 3, 25))
    make_worker(("payments",)).work(burst=True)  # the night queued the send after its commit
    assert len(pushes()) == 1  # that night, not the next
    run_job("standing-orders", date(2026, 3, 26))  # nothing more this month
    make_worker(("payments",)).work(burst=True)
    runs = db.session.scalars(
        select(StandingOrderRun).where(StandingOrderRun.order_id == order)
    ).all()
    assert [(r.status, r.moved) for r in runs] == [("prompted", Decimal("0.00"))]
    prompt = db.session.get(MpesaRequest, runs[0].request_id)
    assert (prompt.purpose, prompt.amount, prompt.account_reference) == (
        "deposit",
        Decimal("2500.00"),
        f"{member_no}S",
    )
    # Asked by the night's job, not by the member on their phone.
    assert (prompt.channel, prompt.requested_by) == ("system", f"standing-order:{order}")
    [push] = pushes()
    assert str(json.loads(push.request.body)["Amount"]) == "2500"
    reply = client.post(
        "/payments/dev-callback-token/stk/callback",
        data=json.dumps(stk_body(checkout, amount=2500, receipt="PAYDAY0001")),
        content_type="application/json",
    )
    assert reply.status_code == 200
    make_worker(("payments",)).work(burst=True)
    assert _ordinary(member_id) == Decimal("2500.00")


def test_an_order_set_after_its_day_first_runs_next_month(app: Flask) -> None:
    member = make_member()
    _save(member, "5000")
    order = _order(member, day_of_month=1, starts_on=date(2026, 3, 20))
    assert order not in standing_orders_due(date(2026, 3, 20))
    assert standing_order_execute(order, as_of=date(2026, 3, 20)) is None
    run_job("standing-orders", date(2026, 3, 31))
    assert _runs(order) == []
    run_job("standing-orders", date(2026, 4, 1))
    assert _runs(order) == [(date(2026, 4, 1), "done", Decimal("1000.00"))]


def test_a_payday_prompt_refused_in_a_chunk_leaves_the_other_orders_of_the_chunk_done(
    app: Flask,
) -> None:
    """A prompt for the account is still on the member's phone: that month's payday order
    is recorded as not sent, with why, and undoes only itself, not the prompt written for
    the order before it in the same chunk."""
    from app.services.payments.stk import payments_request_deposit_stk

    first, second = make_member(), make_member()
    orders = [
        standing_order_create(
            member_id=member.id,
            target="savings",
            amount="1000",
            day_of_month=25,
            actor="x",
            source="mpesa",
            starts_on=START,
        ).id
        for member in (first, second)
    ]
    waiting = member_product_account(db.session.get(Member, second.id), account_product("ORD"))
    payments_request_deposit_stk(member_id=second.id, account_id=waiting.id, amount=300)
    run_job("standing-orders", date(2026, 3, 25))
    runs = {
        run.order_id: run
        for run in db.session.scalars(
            select(StandingOrderRun).where(StandingOrderRun.order_id.in_(orders))
        )
    }
    assert runs[orders[0]].status == "prompted" and runs[orders[0]].request_id is not None
    assert runs[orders[1]].status == "skipped"
    assert "already on its way" in (runs[orders[1]].note or "")


def test_an_order_run_directly_runs_once_a_month_and_only_while_active(app: Flask) -> None:
    """standing_order_execute re-reads the order under the member's lock, whatever handed
    it the order (a chunk whose scan is older than a cancel or another worker's run).
    (Mutation testing, issue 23.)"""
    member = make_member()
    member_id, member_no = member.id, member.member_no
    _save(member, "10000")
    deposits, shares = _order(member), _order(member, target="shares", amount="500")
    # Starting on its first due day: it runs that day.
    starting = _order(member, amount="200", starts_on=date(2026, 3, 5))
    march, april = date(2026, 3, 5), date(2026, 4, 5)

    def run(order_id: int, day: date) -> object:
        done = standing_order_execute(order_id, as_of=day)
        db.session.commit()
        return done

    assert run(deposits, march) is not None
    assert run(deposits, march) is None  # ran already this month: nothing, no error
    assert run(shares, march) is not None  # another order of the same day still runs
    assert run(starting, march) is not None
    standing_order_cancel(order_id=shares, actor="officer@x")
    cancelled = db.session.get(StandingOrder, shares)
    assert (cancelled.status, cancelled.cancelled_by) == ("cancelled", "officer@x")
    assert cancelled.cancelled_at is not None
    [audit] = db.session.scalars(select(AuditLog).where(AuditLog.action == "standing_order.cancel"))
    assert (audit.actor, audit.object_type, audit.object_id) == (
        "officer@x",
        "standing_order",
        str(shares),
    )
    assert (audit.before, audit.after) == ({"status": "active"}, {"status": "cancelled"})
    assert run(shares, april) is None  # cancelled after the night's scan
    assert run(deposits, april) is not None  # last month's run does not stand for this one

    assert _runs(deposits) == [
        (march, "done", Decimal("1000.00")),
        (april, "done", Decimal("1000.00")),
    ]
    assert _runs(shares) == [(march, "done", Decimal("500.00"))]
    assert _runs(starting) == [(march, "done", Decimal("200.00"))]
    assert _notes(deposits) == [None, None]  # a run that moved all it asked has nothing to say
    # Each run names its entry, posted once under the order's key, by the job.
    runs = db.session.execute(
        select(StandingOrderRun.order_id, StandingOrderRun.due_on, JournalEntry)
        .join(JournalEntry, JournalEntry.id == StandingOrderRun.entry_id)
        .where(StandingOrderRun.order_id == shares)
    ).all()
    [(_, due, entry)] = runs
    assert (entry.kind, entry.idempotency_key, entry.actor, entry.member_id) == (
        "standing_order",
        f"standing-order:SO{shares}-{due:%Y%m%d}",
        "standing-order",
        member_id,
    )
    assert entry.description == f"Standing order {shares} to share capital {member_no}"


def test_what_is_free_decides_at_the_edges_and_a_short_run_says_how_much_was_free(
    app: Flask,
) -> None:
    """ORD keeps KES 100: exactly the amount free moves it all even for an all-or-nothing
    order; one shilling free moves one shilling; short, the run says what was free.
    (Mutation testing, issue 23.)"""
    exact, shilling, short = make_member(), make_member(), make_member()
    for member, amount in ((exact, "1100"), (shilling, "101"), (short, "150")):
        _save(member, amount)
    orders = (
        _order(exact, partial=False),
        _order(shilling, amount="500"),
        _order(short, amount="500", partial=False),
    )

    run_job("standing-orders", date(2026, 3, 5))

    assert [_runs(order) for order in orders] == [
        [(date(2026, 3, 5), "done", Decimal("1000.00"))],
        [(date(2026, 3, 5), "partial", Decimal("1.00"))],
        [(date(2026, 3, 5), "short", Decimal("0.00"))],
    ]
    assert _notes(orders[2]) == ["free KES 50.00"]


def test_a_loan_order_run_by_a_caller_that_rolls_back_leaves_no_payment(app: Flask) -> None:
    """The order runs in its caller's transaction: a chunk that fails after it takes the
    repayment back with its run, and the next night pays it. (Mutation testing, issue 23.)"""
    loan = make_loan(product=make_product("V1"), amount=3000, on=date(2026, 1, 10))
    member = db.session.get(Member, loan.member_id)
    _save(member, "20000")
    order = _order(member, target="loan", loan_id=loan.id, amount="500", day_of_month=10)
    loan_id, member_id = loan.id, member.id
    owed = loan_debt(loan_id=loan_id).total

    assert standing_order_execute(order, as_of=date(2026, 2, 10)) is not None
    db.session.rollback()

    assert _runs(order) == []
    assert loan_debt(loan_id=loan_id).total == owed
    assert _ordinary(member_id) == Decimal("20000.00")
    run_job("standing-orders", date(2026, 2, 11))
    assert _runs(order) == [(date(2026, 2, 10), "done", Decimal("500.00"))]


def test_the_scan_leaves_out_only_orders_that_ran_this_month(app: Flask) -> None:
    """An order that ran last month is due again; another order's run this month is not
    this one's. (Mutation testing, issue 23.)"""
    early, late = make_member(), make_member()
    for member in (early, late):
        _save(member, "10000")
    on_5th, on_10th = _order(early), _order(late, day_of_month=10)
    run_job("standing-orders", date(2026, 2, 28))  # both ran in February
    run_job("standing-orders", date(2026, 3, 5))  # the 5th's ran in March

    assert standing_orders_due(date(2026, 3, 12)) == [on_10th]
    assert standing_orders_due(date(2026, 4, 12)) == [on_5th, on_10th]


def test_the_scan_takes_an_order_from_its_first_due_day_to_its_last(app: Flask) -> None:
    """Due on its day (not before), from the day it starts (even when that is its day)
    to the day it ends (that day too); once run, not again that month, even the same day.
    (Mutation testing, issue 23.)"""
    member = make_member()
    _save(member, "10000")
    plain = _order(member, amount="100")
    on_the_1st = _order(member, amount="100", day_of_month=1)
    starting = _order(member, amount="100", starts_on=date(2026, 3, 5))
    ending = _order(member, amount="100", ends_on=date(2026, 3, 5))
    _order(member, amount="100", ends_on=date(2026, 2, 28))  # ended: never due in March

    assert standing_orders_due(date(2026, 3, 3)) == [on_the_1st]
    run_job("standing-orders", date(2026, 3, 1))
    assert standing_orders_due(date(2026, 3, 5)) == [plain, starting, ending]
    run_job("standing-orders", date(2026, 3, 5))
    assert standing_orders_due(date(2026, 3, 5)) == []
    assert _runs(ending) == [(date(2026, 3, 5), "done", Decimal("100.00"))]


def test_a_chunk_goes_on_past_an_order_that_ran_already_and_counts_what_it_did(
    app: Flask,
) -> None:
    """A chunk handed an order another worker has run since the scan skips it and runs
    the rest. It counts an order that moved money (one shilling too) as updated, and each
    member texted (moved or short), not a skipped run. (Mutation testing, issue 23.)"""
    members = [make_member() for _ in range(5)]
    for member, saved in zip(members, ("5000", "101", "150", "20000", "5000"), strict=True):
        _save(member, saved)
    loan = make_loan(product=make_product("V1"), amount=3000, on=date(2026, 1, 10))
    borrower = db.session.get(Member, loan.member_id)
    _save(borrower, "5000")
    ran = _order(members[0])
    one_shilling = _order(members[1], amount="500")
    short = _order(members[2], amount="500", partial=False)
    to_closed_loan = _order(borrower, target="loan", loan_id=loan.id, amount="500")
    moved = _order(members[4], amount="300")
    loan_repay(
        loan_id=loan.id,
        amount=loan_debt(loan_id=loan.id).total,
        reference="ALL",
        value_date=date(2026, 2, 1),
    )
    day = date(2026, 3, 5)
    assert standing_order_execute(ran, as_of=day) is not None
    db.session.commit()

    stats = ChunkStats()
    STANDING_ORDERS.chunk([ran, one_shilling, short, to_closed_loan, moved], day, stats)
    db.session.commit()

    assert [_runs(order)[0][1:] for order in (one_shilling, short, to_closed_loan, moved)] == [
        ("partial", Decimal("1.00")),
        ("short", Decimal("0.00")),
        ("skipped", Decimal("0.00")),
        ("done", Decimal("300.00")),
    ]
    assert (stats.records_updated, stats.notifications_sent) == (2, 3)


def _orders_of_two_members() -> tuple[int, int]:
    """Two members with an order each; the higher member's order is the chunk's first."""
    low, high = make_member(), make_member()
    for member in (low, high):
        _save(member, "5000")
    _order(high)
    _order(low)
    return low.id, high.id


def test_a_chunk_locks_its_members_in_id_order(app: Flask, pg: None) -> None:
    """While the night's chunk waits for a lower member, it holds no higher one: two
    lockers never wait on each other in a circle. (Mutation testing, issue 23.)"""
    low, high = _orders_of_two_members()

    with row_locked(app, "members", low):
        job = Worker(app, lambda: run_job("standing-orders", date(2026, 3, 5)))
        job.start()
        wait_until_blocked()
        assert_not_held("members", high)
    assert job.outcome() == 0
    assert db.session.scalar(select(func.count(StandingOrderRun.id))) == 2


def test_a_chunk_locks_only_its_own_members(app: Flask, pg: None) -> None:
    """A member with no order due is not waited for (a teller's withdrawal holding them
    does not hold up the night). (Mutation testing, issue 23.)"""
    bystander = make_member().id
    _orders_of_two_members()

    with row_locked(app, "members", bystander):
        job = Worker(app, lambda: run_job("standing-orders", date(2026, 3, 5)))
        job.start()
        assert job.outcome(timeout=60) == 0  # did not wait for the bystander's lock
    assert db.session.scalar(select(func.count(StandingOrderRun.id))) == 2


def test_an_order_set_is_recorded_and_each_refusal_says_why_in_words(app: Flask) -> None:
    """(Mutation testing, issue 23.)"""
    member, other, gone = make_borrower(savings=5000), make_member(), make_member()
    member_id, member_no = member.id, member.member_no
    # Another member's five orders leave this member room; a cancelled one leaves its
    # member room for another.
    others = [
        _order(other, target="shares", amount="100", day_of_month=day)
        for day in range(1, MAX_ACTIVE_ORDERS + 1)
    ]
    standing_order_cancel(order_id=others[0], actor="x")
    _order(other, target="shares", amount="100", day_of_month=9)
    # An order may end the day it starts.
    order = _order(
        member,
        target="shares",
        amount="250.5",
        day_of_month=7,
        actor="officer@x",
        ends_on=START,
        partial=False,
    )

    stored = db.session.get(StandingOrder, order)
    assert (stored.channel, stored.source, stored.ends_on) == ("console", "savings", START)
    [audit] = db.session.scalars(
        select(AuditLog).where(
            AuditLog.action == "standing_order.create", AuditLog.actor == "officer@x"
        )
    )
    assert (audit.object_type, audit.object_id) == ("member", member_no)
    assert audit.after == {
        "order": order,
        "target": "shares",
        "loan_id": None,
        "amount": "250.50",
        "day": 7,
        "partial": False,
        "source": "savings",
    }

    manager = make_staff()
    leaving = exit_request(member_id=gone.id, reason="leaving", actor=manager, today=START)
    exit_settle(exit_id=leaving.id, actor=manager, today=START + timedelta(days=60))
    theirs = make_loan(product=make_product("V1"), amount=3000, on=date(2026, 1, 10))
    repaid = make_loan(
        product=make_product("V1", code="V2"),
        amount=3000,
        on=date(2026, 1, 10),
        member=db.session.get(Member, member_id),
    )
    loan_repay(
        loan_id=repaid.id,
        amount=loan_debt(loan_id=repaid.id).total,
        reference="ALLPAID",
        value_date=date(2026, 1, 20),
    )
    cases = [
        (dict(source="cheque"), "a standing order is paid from savings or by M-PESA"),
        (dict(target="savings"), "an order from savings pays a loan, deposits or shares"),
        (dict(source="mpesa", target="loan"), "a payday prompt pays deposits, shares or savings"),
        (dict(day_of_month=0), "the day must be 1 to 28, a day every month has"),
        (dict(member_id=999999), "no member 999999"),
        (dict(member_id=gone.id), f"member {gone.member_no} is exited"),
        (dict(target="loan", loan_id=theirs.id), "choose one of the member's own loans"),
        (
            dict(target="loan", loan_id=repaid.id),
            f"loan {repaid.loan_no} is closed: nothing to pay",
        ),
        (dict(ends_on=date(2025, 12, 31)), "the order would end before it starts"),
        (dict(source_product="FIX"), "Fixed deposit is not a savings account to pay from"),
    ]
    for changed, words in cases:
        with pytest.raises(StandingOrderError) as refused:
            _order(db.session.get(Member, member_id), **changed)
        assert str(refused.value) == words
