"""Reminder jobs: installments coming due, installments overdue, promises to pay.

Each job reads only the rows that fall on its target dates (installments by the
`installments.due_date` index, promises by `promised_date`), so its cost follows what is
due that day, not the size of the loan book. Each is a close-of-business batch
(`app.batch`): the scan gives the members to remind, and each chunk of members reads their
rows with the scan's own query restricted to them, renders the messages and writes them
into the SMS outbox in one INSERT (`sms_queue_many`, kind "reminder"), committed per
chunk. A member's reminders all fall in one chunk, so grouping by member is the same
whatever the chunk size. The outbox owns the rest of the rules:

- one reminder per member per kind per day: the idempotency key is
  ``reminder:{kind}:{member_id}:{as_of}``, so a rerun (or a second scheduler) finds the
  row already there and sends nothing twice;
- opted-out numbers: the outbox marks the row "suppressed" (counted here as not sent);
- quiet hours (20:00-07:00 Kenyan time): the outbox holds the row until 07:00;
- a member who paid since the scan: the row carries ``{"installment_id": ...}`` (or the
  promise), and `sms_deliver` checks it again at send time and cancels the message.

A member with several loans in the same kind on the same day gets one message: the
amounts add up (the member pays one Paybill account, their member number) and the loan
number reads "L000123 +1" for the others. Its context names the first installment, so
paying that one cancels the message at send time; the others are caught by the next
stage's reminder if still unpaid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from flask import current_app
from sqlalchemy import Select, and_, exists, or_, select
from sqlalchemy.orm import aliased

from app.batch import Batch, ChunkStats, batch_run, chunk_size
from app.extensions import db
from app.models import (
    Installment,
    Loan,
    LoanProduct,
    Member,
    PromiseToPay,
    SmsMessage,
)
from app.money import ZERO
from app.selectors.loans import LIVE_STATUSES
from app.services.promises import promise_settle
from app.services.sms import Outgoing, SmsError, sms_check, sms_queue_many
from app.sms_templates import SmsTemplateError, render_sms
from workers.runner import JobStats

BATCH = 500  # loans per query when reading arrears

# kind -> (days before the due date, template)
DUE_KINDS: dict[str, tuple[int, str]] = {
    "due_3d": (3, "reminder_due_3d"),
    "due_today": (0, "reminder_due_today"),
}
# kind -> (days late beyond the product's grace_days, template)
OVERDUE_KINDS: dict[str, tuple[int, str]] = {
    "overdue_1d": (1, "reminder_overdue_1d"),
    "overdue_7d": (7, "reminder_overdue_7d"),
    "overdue_30d": (30, "reminder_overdue_30d"),
}

_AMOUNT_COLUMNS = (
    Installment.principal_due,
    Installment.interest_due,
    Installment.fees_due,
    Installment.penalty_due,
    Installment.principal_paid,
    Installment.interest_paid,
    Installment.fees_paid,
    Installment.penalty_paid,
)


def _outstanding(values: Sequence[Decimal]) -> Decimal:
    due, paid = values[:4], values[4:]
    return sum(due, ZERO) - sum(paid, ZERO)


@dataclass
class Reminder:
    """One thing to remind one member about, before grouping by member and kind.

    It holds the member's id, not the ORM object: each batch commit expires every loaded
    object, and touching 10,000 expired members would cost 10,000 SELECTs.
    """

    member_id: int
    kind: str
    template: str
    loan_no: str
    amount: Decimal
    params: dict[str, object]
    context: dict[str, Any]
    loan_nos: list[str] = field(default_factory=list)

    def key(self, as_of: date) -> str:
        return f"reminder:{self.kind}:{self.member_id}:{as_of.isoformat()}"


def _grouped(reminders: Iterable[Reminder]) -> list[Reminder]:
    """One reminder per member and kind: amounts added, other loans counted in the label."""
    groups: dict[tuple[int, str], Reminder] = {}
    for item in reminders:
        group = groups.get((item.member_id, item.kind))
        if group is None:
            item.loan_nos = [item.loan_no]
            groups[(item.member_id, item.kind)] = item
            continue
        group.amount += item.amount
        if item.loan_no not in group.loan_nos:
            group.loan_nos.append(item.loan_no)
    return list(groups.values())


def queue_reminders_chunk(
    reminders: Iterable[Reminder],
    *,
    as_of: date,
    stats: ChunkStats | JobStats,
    now: datetime | None,
) -> None:
    """Group the reminders (one per member and kind) and put them in the outbox in the
    caller's transaction, without committing: one query for what an earlier run of the
    day queued already (skipped before rendering, so a rerun costs a SELECT), one for the
    members, one INSERT for the messages. A message that cannot be rendered is one failure
    counted, and the others are still queued."""
    settings = current_app.config["SETTINGS"]
    grouped = _grouped(reminders)
    if not grouped:
        return
    keys = [item.key(as_of) for item in grouped]
    done = set(
        db.session.scalars(
            select(SmsMessage.idempotency_key).where(SmsMessage.idempotency_key.in_(keys))
        )
    )
    todo = [(item, key) for item, key in zip(grouped, keys, strict=True) if key not in done]
    if not todo:
        return
    # Columns, not Member objects: nothing loaded here outlives the chunk's commit.
    members = {
        row.id: row
        for row in db.session.execute(
            select(Member.id, Member.phone, Member.language, Member.member_no).where(
                Member.id.in_({item.member_id for item, _ in todo})
            )
        )
    }
    outgoing: list[Outgoing] = []
    for item, key in todo:
        member = members[item.member_id]
        label = item.loan_nos[0]
        if len(item.loan_nos) > 1:
            label = f"{label} +{len(item.loan_nos) - 1}"
        try:
            body = render_sms(
                item.template,
                member.language,
                loan_no=label,
                amount=item.amount,
                paybill=settings.MPESA_SHORTCODE,
                account=member.member_no or "",
                **item.params,
            )
            sms_check(kind="reminder", body=body)
        except (SmsError, SmsTemplateError) as exc:
            stats.notifications_failed += 1
            stats.error(f"member {item.member_id} {item.kind}: {exc}")
            continue
        outgoing.append(
            Outgoing(
                template=item.template,
                body=body,
                phone=member.phone,
                idempotency_key=key,
                member_id=member.id,
                language=member.language,
                context=item.context,
            )
        )
    written = sms_queue_many(outgoing, kind="reminder", now=now)
    # Suppressed (opted out) rows are kept as the record but were not sent.
    stats.notifications_sent += sum(row.status == "queued" for row in written)


def run_reminders(batch: Batch, *, as_of: date, stats: JobStats, now: datetime | None) -> None:
    """Run a batch; `now` (a test's fixed clock for quiet hours) goes to every chunk run
    here, whose function takes it. Partitions done by `cob` workers read the clock."""
    if now is not None:
        chunk: Any = batch.chunk  # ours all take now=; ChunkFn does not say so
        batch = replace(batch, chunk=partial(chunk, now=now))
    batch_run(batch, as_of=as_of, stats=stats)


def installments_query(*conditions: Any) -> Select[Any]:
    """Unpaid current installments of live loans matching `conditions` (by member)."""
    return (
        select(
            Installment.id,
            Installment.loan_id,
            Installment.due_date,
            *_AMOUNT_COLUMNS,
            Loan.loan_no,
            Loan.member_id,
            LoanProduct.grace_days,
        )
        .join(Loan, Installment.loan_id == Loan.id)
        .join(LoanProduct, Loan.product_id == LoanProduct.id)
        .where(
            Installment.paid_on.is_(None),
            Installment.superseded.is_(False),
            Loan.status.in_(LIVE_STATUSES),
            *conditions,
        )
        .order_by(Loan.member_id, Installment.due_date, Installment.loan_id, Installment.number)
    )


def due_dates(as_of: date) -> dict[date, str]:
    """The due dates the due-reminder scan reads for `as_of`, with their kind."""
    return {as_of + timedelta(days=days): kind for kind, (days, _) in DUE_KINDS.items()}


def _members_of(query: Select[Any]) -> list[int]:
    """The members a reminder query finds, in id order (a batch's ids)."""
    return list(
        db.session.scalars(
            query.with_only_columns(Loan.member_id)
            .distinct()
            .order_by(None)
            .order_by(Loan.member_id)
        )
    )


def _due_query(as_of: date, *conditions: Any) -> Select[Any]:
    return installments_query(Installment.due_date.in_(list(due_dates(as_of))), *conditions)


def due_reminders_members(as_of: date) -> list[int]:
    """The members with an installment due today or in 3 days (due-reminders' scan)."""
    return _members_of(_due_query(as_of))


def due_reminders_scan(*, as_of: date, member_ids: Sequence[int] | None = None) -> list[Reminder]:
    """Installments due today and in 3 days, one Reminder each (before grouping); of
    `member_ids` only when given (a chunk)."""
    targets = due_dates(as_of)
    found: list[Reminder] = []
    only = [] if member_ids is None else [Loan.member_id.in_(list(member_ids))]
    query = _due_query(as_of, *only)
    for row in db.session.execute(query):
        amount = _outstanding(row[3:11])
        if amount <= 0:
            continue
        kind = targets[row.due_date]
        found.append(
            Reminder(
                member_id=row.member_id,
                kind=kind,
                template=DUE_KINDS[kind][1],
                loan_no=row.loan_no or "",
                amount=amount,
                params={"due_date": row.due_date},
                context={"installment_id": row.id},
            )
        )
    return found


def _due_chunk(
    member_ids: Sequence[int], as_of: date, stats: ChunkStats, now: datetime | None = None
) -> None:
    found = due_reminders_scan(as_of=as_of, member_ids=member_ids)
    queue_reminders_chunk(found, as_of=as_of, stats=stats, now=now)


DUE = Batch("due-reminders", due_reminders_members, _due_chunk, noun="member")


def due_reminders_job(*, as_of: date, stats: JobStats, now: datetime | None = None) -> None:
    """SMS for installments due in 3 days and due today (09:00 EAT); records_scanned
    counts the members reminded about."""
    run_reminders(DUE, as_of=as_of, stats=stats, now=now)


def _overdue_query(as_of: date, *conditions: Any) -> tuple[Select[Any] | None, dict[Any, str]]:
    """The overdue scan's query (None when no product exists) and its stages:
    (grace_days, due_date) -> kind."""
    graces = db.session.scalars(select(LoanProduct.grace_days).distinct()).all()
    stages = {
        (grace, as_of - timedelta(days=grace + late)): kind
        for grace in graces
        for kind, (late, _) in OVERDUE_KINDS.items()
    }
    if not stages:
        return None, stages
    older = aliased(Installment)
    query = installments_query(
        # The IN list lets the database use the due_date index; the OR keeps each
        # product's own grace period.
        Installment.due_date.in_(sorted({day for _, day in stages})),
        or_(
            *(
                and_(LoanProduct.grace_days == grace, Installment.due_date == day)
                for grace, day in stages
            )
        ),
        ~exists().where(
            older.loan_id == Installment.loan_id,
            older.superseded.is_(False),
            older.paid_on.is_(None),
            older.due_date < Installment.due_date,
        ),
        *conditions,
    )
    return query, stages


def overdue_reminders_members(as_of: date) -> list[int]:
    """The members with a loan at an overdue stage today (overdue-reminders' scan)."""
    query, _ = _overdue_query(as_of)
    return [] if query is None else _members_of(query)


def overdue_reminders_scan(
    *, as_of: date, member_ids: Sequence[int] | None = None
) -> list[Reminder]:
    """Loans whose oldest unpaid installment is exactly grace_days + 1, + 7 or + 30 days
    late today.

    Counting from the oldest unpaid installment (as the arrears job counts days past due)
    means a loan gets each stage once, not once per late installment of a weekly loan.
    The amount is everything due and unpaid on the loan, which is what clears the arrears.
    Of `member_ids` only when given (a chunk).
    """
    only = [] if member_ids is None else [Loan.member_id.in_(list(member_ids))]
    query, stages = _overdue_query(as_of, *only)
    if query is None:
        return []
    rows = db.session.execute(query).all()
    arrears = _arrears({row.loan_id for row in rows}, as_of=as_of)
    found: list[Reminder] = []
    seen_loans: set[int] = set()
    for row in rows:
        if row.loan_id in seen_loans:  # two installments due the same day: one stage
            continue
        seen_loans.add(row.loan_id)
        amount = arrears.get(row.loan_id, ZERO)
        if amount <= 0:
            continue
        kind = stages[(row.grace_days, row.due_date)]
        found.append(
            Reminder(
                member_id=row.member_id,
                kind=kind,
                template=OVERDUE_KINDS[kind][1],
                loan_no=row.loan_no or "",
                amount=amount,
                params={"days": (as_of - row.due_date).days},
                context={"installment_id": row.id},
            )
        )
    return found


def _arrears(loan_ids: set[int], *, as_of: date) -> dict[int, Decimal]:
    """What each loan has due before `as_of` and unpaid, read for these loans only."""
    totals: dict[int, Decimal] = {}
    ids = sorted(loan_ids)
    for start in range(0, len(ids), BATCH):
        rows = db.session.execute(
            select(Installment.loan_id, *_AMOUNT_COLUMNS).where(
                Installment.loan_id.in_(ids[start : start + BATCH]),
                Installment.superseded.is_(False),
                Installment.paid_on.is_(None),
                Installment.due_date < as_of,
            )
        )
        for row in rows:
            totals[row.loan_id] = totals.get(row.loan_id, ZERO) + _outstanding(row[1:9])
    return totals


def _overdue_chunk(
    member_ids: Sequence[int], as_of: date, stats: ChunkStats, now: datetime | None = None
) -> None:
    found = overdue_reminders_scan(as_of=as_of, member_ids=member_ids)
    queue_reminders_chunk(found, as_of=as_of, stats=stats, now=now)


OVERDUE = Batch("overdue-reminders", overdue_reminders_members, _overdue_chunk, noun="member")


def overdue_reminders_job(*, as_of: date, stats: JobStats, now: datetime | None = None) -> None:
    """SMS for loans 1, 7 and 30 days late after grace_days (30: default, guarantors);
    records_scanned counts the members reminded about."""
    run_reminders(OVERDUE, as_of=as_of, stats=stats, now=now)


def _promise_reminder(promise: PromiseToPay, loan: Loan, kind: str) -> Reminder:
    template = "promise_due_tomorrow" if kind == "promise_due" else "promise_broken"
    return Reminder(
        member_id=promise.member_id,
        kind=kind,
        template=template,
        loan_no=loan.loan_no or "",
        amount=promise.amount,
        params={"date": promise.promised_date},
        # sms_deliver sends only while the promise is still in this state.
        context={"promise_id": promise.id, "promise_status": promise.status},
    )


def _open_promises(as_of: date, *conditions: Any) -> Select[Any]:
    return (
        select(PromiseToPay, Loan)
        .join(Loan, PromiseToPay.loan_id == Loan.id)
        .where(
            PromiseToPay.status == "open",
            # Every past date, not just yesterday: a day the job did not run is caught up.
            or_(
                PromiseToPay.promised_date < as_of,
                PromiseToPay.promised_date == as_of + timedelta(days=1),
            ),
            *conditions,
        )
        .order_by(PromiseToPay.member_id, PromiseToPay.promised_date, PromiseToPay.id)
    )


def promise_reminders_members(as_of: date) -> list[int]:
    """The members with an open promise due tomorrow or past (promise-reminders' scan)."""
    return list(
        db.session.scalars(
            _open_promises(as_of)
            .with_only_columns(PromiseToPay.member_id)
            .distinct()
            .order_by(None)
            .order_by(PromiseToPay.member_id)
        )
    )


def _promise_chunk(
    member_ids: Sequence[int], as_of: date, stats: ChunkStats, now: datetime | None = None
) -> None:
    """Settle the chunk's promises and queue their messages: the status changes commit
    with the messages that tell of them (a chunk redone finds them settled, and the
    idempotency keys find the messages)."""
    rows = db.session.execute(
        _open_promises(as_of, PromiseToPay.member_id.in_(list(member_ids)))
    ).all()
    found: list[Reminder] = []
    for promise, loan in rows:
        before = promise.status
        status = promise_settle(promise, loan, as_of=as_of)
        if status != before:
            stats.records_updated += 1
            # Partly kept is not kept: the member is told, as for a broken one.
            if status in ("broken", "partly"):
                found.append(_promise_reminder(promise, loan, "promise_broken"))
        elif promise.promised_date >= as_of:
            found.append(_promise_reminder(promise, loan, "promise_due"))
    queue_reminders_chunk(found, as_of=as_of, stats=stats, now=now)


PROMISES = Batch("promise-reminders", promise_reminders_members, _promise_chunk, noun="member")


def promise_reminders_job(*, as_of: date, stats: JobStats, now: datetime | None = None) -> None:
    """Promises due tomorrow get a reminder; promises whose date has passed are settled:
    kept when the loan got the promised amount since the promise was made, partly when
    some of it arrived, else broken (partly or broken: the member is told). records_scanned
    counts the members with such promises."""
    run_reminders(PROMISES, as_of=as_of, stats=stats, now=now)


def queue_reminders(
    reminders: Iterable[Reminder], *, as_of: date, stats: JobStats, now: datetime | None = None
) -> None:
    """Other scans' reminders through the same road: one per member and kind, quiet
    hours, opt-outs and the day's idempotency key, committed per chunk of members."""
    found = list(reminders)
    members = sorted({item.member_id for item in found})
    for start in range(0, len(members), chunk_size()):
        these = set(members[start : start + chunk_size()])
        counts = ChunkStats()
        queue_reminders_chunk(
            [item for item in found if item.member_id in these],
            as_of=as_of,
            stats=counts,
            now=now,
        )
        db.session.commit()
        counts.add_to(stats)
