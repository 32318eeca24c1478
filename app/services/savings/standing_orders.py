"""Standing orders: a member's monthly transfer from their withdrawable savings to a loan,
their deposits or their shares (SPEC "Savings, shares and dividends").

The nightly `standing-orders` job (close-of-business shape) executes each active order
due this month on or after its day: under the member's lock it moves what the order asks,
or what the balance allows above the product's minimum when the order takes part-payments,
never more (savings are never overdrawn, and deposits a guarantee holds are never the
source). One run row per order and due date (a unique key) makes a rerun, a catch-up or a
second worker move nothing twice; the member is texted what moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, exists, func, select

from app.batch import Batch, ChunkStats, batch_run
from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import Account, Loan, Member, MpesaRequest, StandingOrder, StandingOrderRun
from app.models.types import utcnow
from app.money import ZERO, MoneyError, money_input
from app.selectors.loans import LIVE_STATUSES
from app.services.audit import audit_record
from app.services.ledger import credit, debit, journal_post, member_account
from app.services.locking import lock_row
from app.services.savings.products import account_product, member_product_account

# A member may keep this many orders at once: enough for a loan, deposits and shares with
# room to spare, few enough that a mistaken loop of USSD sessions cannot pile them up.
MAX_ACTIVE_ORDERS = 5
TARGETS = {
    "loan": "a loan",
    "deposits": "deposits",
    "shares": "share capital",
    "savings": "savings",
}
# A payday order (source "mpesa") prompts the member's phone to pay into this account.
PROMPT_INTO = {"deposits": "DEP", "shares": "SHR", "savings": "ORD"}


class StandingOrderError(SaccoError):
    """An order that cannot be set or changed; nothing was written."""


def standing_order_create(
    *,
    member_id: int,
    target: str,
    amount: object,
    day_of_month: int,
    actor: str,
    loan_id: int | None = None,
    partial: bool = True,
    starts_on: date | None = None,
    ends_on: date | None = None,
    channel: str = "console",
    source_product: str = "ORD",
    source: str = "savings",
) -> StandingOrder:
    """Set a monthly transfer from the member's savings account of `source_product`, or
    (`source` "mpesa", a payday order) a monthly M-PESA prompt into deposits, shares or
    savings."""
    if target not in TARGETS:
        raise StandingOrderError(
            f"a standing order pays a loan, deposits or shares, not {target!r}"
        )
    if source not in ("savings", "mpesa"):
        raise StandingOrderError("a standing order is paid from savings or by M-PESA")
    if source == "savings" and target == "savings":
        raise StandingOrderError("an order from savings pays a loan, deposits or shares")
    if source == "mpesa" and target not in PROMPT_INTO:
        raise StandingOrderError("a payday prompt pays deposits, shares or savings")
    try:
        value = money_input(amount)
    except MoneyError as exc:
        raise StandingOrderError(str(exc)) from None
    if not 1 <= day_of_month <= 28:
        raise StandingOrderError("the day must be 1 to 28, a day every month has")
    member = lock_row(Member, member_id)  # serialises two orders set at once
    if member is None:
        raise StandingOrderError(f"no member {member_id}")
    if member.status != "active":
        db.session.rollback()
        raise StandingOrderError(f"member {member.member_no} is {member.status}")
    if target == "loan":
        loan = db.session.get(Loan, loan_id) if loan_id is not None else None
        if loan is None or loan.member_id != member.id:
            db.session.rollback()
            raise StandingOrderError("choose one of the member's own loans")
        if loan.status not in LIVE_STATUSES:
            db.session.rollback()
            raise StandingOrderError(f"loan {loan.loan_no} is {loan.status}: nothing to pay")
    else:
        loan_id = None
    start = starts_on or business_today()
    if ends_on is not None and ends_on < start:
        db.session.rollback()
        raise StandingOrderError("the order would end before it starts")
    active = db.session.scalar(
        select(func.count(StandingOrder.id)).where(
            StandingOrder.member_id == member.id, StandingOrder.status == "active"
        )
    )
    if (active or 0) >= MAX_ACTIVE_ORDERS:
        db.session.rollback()
        raise StandingOrderError(
            f"a member may keep {MAX_ACTIVE_ORDERS} standing orders; cancel one first"
        )
    if source == "mpesa":
        account = member_product_account(member, account_product(PROMPT_INTO[target]))
    else:
        product = account_product(source_product)
        if product.kind != "savings":
            db.session.rollback()
            raise StandingOrderError(f"{product.name} is not a savings account to pay from")
        account = member_product_account(member, product)
    order = StandingOrder(
        member_id=member.id,
        source=source,
        source_account_id=account.id,
        target=target,
        loan_id=loan_id,
        amount=value,
        day_of_month=day_of_month,
        partial=partial,
        starts_on=start,
        ends_on=ends_on,
        channel=channel,
        created_by=actor,
    )
    db.session.add(order)
    db.session.flush()
    audit_record(
        actor=actor,
        action="standing_order.create",
        object_type="member",
        object_id=member.member_no,
        after={
            "order": order.id,
            "target": target,
            "loan_id": loan_id,
            "amount": str(value),
            "day": day_of_month,
            "partial": partial,
            "source": source,
        },
    )
    db.session.commit()
    return order


def standing_order_cancel(
    *, order_id: int, actor: str, member_id: int | None = None
) -> StandingOrder:
    """Stop an order (its past runs stay). `member_id`: the member cancelling their own."""
    order = lock_row(StandingOrder, order_id)
    if order is None or (member_id is not None and order.member_id != member_id):
        db.session.rollback()
        raise StandingOrderError(f"no standing order {order_id}")
    if order.status == "cancelled":
        db.session.rollback()
        raise StandingOrderError(f"standing order {order_id} is cancelled already")
    order.status = "cancelled"
    order.cancelled_by = actor
    order.cancelled_at = utcnow()
    audit_record(
        actor=actor,
        action="standing_order.cancel",
        object_type="standing_order",
        object_id=order.id,
        before={"status": "active"},
        after={"status": "cancelled"},
    )
    db.session.commit()
    return order


def due_date(order_day: int, as_of: date) -> date:
    """This month's due date of an order paid on `order_day`."""
    return as_of.replace(day=order_day)


def standing_orders_due(as_of: date) -> list[int]:
    """Active orders whose day this month has come and that have not run for it: a day the
    job did not run (a holiday, a stopped server) is caught up later in the month."""
    ran = exists().where(
        and_(
            StandingOrderRun.order_id == StandingOrder.id,
            StandingOrderRun.due_on >= as_of.replace(day=1),
            StandingOrderRun.due_on <= as_of,
        )
    )
    rows = db.session.execute(
        select(StandingOrder.id, StandingOrder.day_of_month, StandingOrder.starts_on)
        .where(
            StandingOrder.status == "active",
            StandingOrder.day_of_month <= as_of.day,
            StandingOrder.starts_on <= as_of,
            (StandingOrder.ends_on.is_(None)) | (StandingOrder.ends_on >= as_of),
            ~ran,
        )
        .order_by(StandingOrder.id)
    )
    # This month's day must fall on or after the order's start: one set on the 20th for
    # the 1st first runs next month, not at once for a day before it existed.
    return [order_id for order_id, day, start in rows if due_date(day, as_of) >= start]


def _free(source: Account) -> Decimal:
    """What may leave the account: its balance above the product's minimum."""
    floor = source.product.min_balance if source.product is not None else ZERO
    return max(ZERO, source.display_balance - floor)


def standing_order_execute(order_id: int, *, as_of: date) -> StandingOrderRun | None:
    """Run one order for this month in the caller's transaction (the caller holds, or this
    takes, the member's lock before anything of theirs moves). None: nothing due."""
    order = db.session.get(StandingOrder, order_id)
    if order is None:
        return None
    member = lock_row(Member, order.member_id)
    assert member is not None  # an order's member is a foreign key
    order = lock_row(StandingOrder, order_id)
    assert order is not None
    due = due_date(order.day_of_month, as_of)
    if order.status != "active" or due > as_of or due < order.starts_on:
        return None
    if db.session.scalar(
        select(StandingOrderRun.id).where(
            StandingOrderRun.order_id == order.id, StandingOrderRun.due_on == due
        )
    ):
        return None  # ran already (a rerun, or another worker got there first)
    if order.source == "mpesa":
        return _prompt(member, order, due, as_of)
    source = lock_row(Account, order.source_account_id)
    assert source is not None
    free = _free(source)
    asked = order.amount
    status = "done"
    if order.target == "loan":
        loan = db.session.get(Loan, order.loan_id)
        if loan is None or loan.status not in LIVE_STATUSES:
            return _record(order, due, as_of, asked, ZERO, "skipped", None, "loan is not open")
        from app.selectors.loans import loan_debt  # the loans package imports savings

        asked = min(asked, loan_debt(loan_id=loan.id).total)
    move = asked if free >= asked else (free if order.partial else ZERO)
    if move <= 0:
        run = _record(order, due, as_of, asked, ZERO, "short", None, f"free KES {free:,.2f}")
        _tell(member, order, run)
        return run
    if move < asked:
        status = "partial"
    reference = f"SO{order.id}-{due:%Y%m%d}"
    if order.target == "loan":
        from app.services.loans import loan_repay  # the loans package imports savings

        result = loan_repay(
            loan_id=order.loan_id or 0,
            amount=move,
            reference=reference,
            value_date=as_of,
            source="member_savings",
            source_account_id=source.id,
            actor="standing-order",
            commit=False,
        )
        entry_id = result.entry_id
    else:
        target = member_account(
            member, "savings" if order.target == "deposits" else "share_capital"
        )
        entry = journal_post(
            kind="standing_order",
            lines=[debit(source, move), credit(target, move)],
            value_date=as_of,
            description=f"Standing order {order.id} to {TARGETS[order.target]} {member.member_no}",
            idempotency_key=f"standing-order:{reference}",
            actor="standing-order",
            member_id=member.id,
        )
        entry_id = entry.id
    run = _record(order, due, as_of, asked, move, status, entry_id, None)
    _tell(member, order, run)
    return run


def _prompt(member: Member, order: StandingOrder, due: date, as_of: date) -> StandingOrderRun:
    """A payday order: an M-PESA prompt into its account, sent once the chunk commits (the
    job queues it, and the payments sweep sends any whose queueing was lost)."""
    from app.services.payments import PaymentError  # payments imports the members service
    from app.services.payments.stk import payments_request_deposit_stk

    try:
        with db.session.begin_nested():
            request = payments_request_deposit_stk(
                member_id=member.id,
                amount=order.amount,
                account_id=order.source_account_id,
                channel="system",
                actor=f"standing-order:{order.id}",
                commit=False,
            )
    except PaymentError as exc:
        # A prompt already waiting for the account, say: this month's is recorded as not
        # sent, with why, and not retried (the member pays by Paybill).
        return _record(order, due, as_of, order.amount, ZERO, "skipped", None, str(exc)[:255])
    run = _record(order, due, as_of, order.amount, ZERO, "prompted", None, None)
    run.request_id = request.id
    return run


def _record(
    order: StandingOrder,
    due: date,
    as_of: date,
    asked: Decimal,
    moved: Decimal,
    status: str,
    entry_id: int | None,
    note: str | None,
) -> StandingOrderRun:
    run = StandingOrderRun(
        order_id=order.id,
        due_on=due,
        run_on=as_of,
        asked=asked,
        moved=moved,
        status=status,
        entry_id=entry_id,
        note=note,
    )
    db.session.add(run)
    db.session.flush()
    return run


def _tell(member: Member, order: StandingOrder, run: StandingOrderRun) -> None:
    from app.services.notifications import notify_standing_order

    loan_no = ""
    if order.loan_id is not None:
        loan_no = db.session.scalar(select(Loan.loan_no).where(Loan.id == order.loan_id)) or ""
    notify_standing_order(
        member=member,
        run_id=run.id,
        moved=run.moved,
        asked=run.asked,
        target=order.target,
        loan_no=loan_no,
    )


def _chunk(order_ids: Sequence[int], as_of: date, stats: ChunkStats) -> None:
    # Members in id order first (as every service takes them), then each order under its
    # member's lock: two chunks, or a chunk and a withdrawal, never wait on each other in
    # a circle.
    members = sorted(
        set(
            db.session.scalars(
                select(StandingOrder.member_id).where(StandingOrder.id.in_(list(order_ids)))
            )
        )
    )
    for member_id in members:
        lock_row(Member, member_id)
    for order_id in order_ids:
        run = standing_order_execute(order_id, as_of=as_of)
        if run is None:
            continue
        if run.moved > 0:
            stats.records_updated += 1
        if run.status != "skipped":
            stats.notifications_sent += 1


STANDING_ORDERS = Batch("standing-orders", standing_orders_due, _chunk, "standing order")


# `stats` is the runner's JobStats (workers.runner): app/ never imports workers/.
def standing_orders_job(*, as_of: date, stats: Any) -> None:
    """Orders due this month and not yet run: what the savings allow moves, the member is
    told. records_scanned counts the orders found, records_updated those that moved money."""
    batch_run(STANDING_ORDERS, as_of=as_of, stats=stats)
    from app.services.payments.stk import stk_send_queue  # payments imports members

    waiting = db.session.scalars(
        select(StandingOrderRun.request_id)
        .join(MpesaRequest, MpesaRequest.id == StandingOrderRun.request_id)
        .where(
            StandingOrderRun.run_on == as_of,
            StandingOrderRun.status == "prompted",
            MpesaRequest.status == "pending",
        )
    ).all()
    db.session.commit()
    for request_id in waiting:
        if request_id is not None:
            stk_send_queue(request_id)
