"""The SMS outbox. Every message is a row first; a worker sends it after the commit.

`sms_queue` adds the row to the caller's transaction, so a receipt commits with the
payment it reports (and vanishes with it on rollback). The send job is queued only after
the commit. The idempotency key is a unique column: asking twice for the same message
gives back the first row, and `sms_deliver` claims a row with one conditional UPDATE, so
two runs of the same job cannot both send it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, NamedTuple

from flask import current_app
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, SessionTransaction

from app.errors import SaccoError
from app.extensions import db, enqueue, enqueue_many
from app.metrics import SMS_FAILED, SMS_SENT
from app.models import Installment, Member, PromiseToPay, SmsMessage, SmsSuppression, StaffUser
from app.models.types import utcnow
from app.phone import PhoneError, e164
from app.selectors.sms import resend_key, sms_resent_as
from app.services.audit import audit_record
from app.services.bulk import insert_ignoring
from app.services.locking import claim_for_sending
from app.services.permissions import permission_require
from app.sms_templates import CODE_TEMPLATES

log = logging.getLogger(__name__)

MAX_TRIES = 3
BACKOFF_SECONDS = (60, 300)  # before the 2nd and 3rd try
QUIET_START, QUIET_END = time(20, 0), time(7, 0)
SENDABLE = ("queued", "retrying")
KINDS = ("transactional", "reminder")
_PENDING = "sms_pending_ids"


class SmsError(SaccoError):
    pass


def is_suppressed(phone: str) -> bool:
    return bool(
        db.session.scalar(select(SmsSuppression.active).where(SmsSuppression.phone == phone))
    )


def suppressed_phones(phones: Iterable[str]) -> set[str]:
    """`is_suppressed` for many numbers at once: the opted-out ones among `phones`, read in
    one query (a reminder chunk reads the opt-out list once, not once per member)."""
    wanted = sorted(set(phones))
    if not wanted:
        return set()
    return set(
        db.session.scalars(
            select(SmsSuppression.phone).where(
                SmsSuppression.phone.in_(wanted), SmsSuppression.active.is_(True)
            )
        )
    )


def quiet_hours_release(now: datetime) -> datetime | None:
    """The next 07:00 Kenyan time when `now` falls in quiet hours (20:00-07:00), else None."""
    tz = current_app.config["SETTINGS"].tz
    local = now.astimezone(tz)
    if QUIET_END <= local.time() < QUIET_START:
        return None
    day = local.date() if local.time() < QUIET_END else local.date() + timedelta(days=1)
    return datetime.combine(day, QUIET_END, tzinfo=tz)


def sms_check(*, kind: str, body: str) -> None:
    """What every outbox row must be, whichever way it is queued: SmsError if not."""
    if kind not in KINDS:
        raise SmsError(f"unknown SMS kind {kind!r}")
    if not body:
        raise SmsError("empty SMS body")


def sms_queue(
    *,
    template: str,
    body: str,
    phone: str,
    idempotency_key: str,
    kind: str = "transactional",
    member: Member | None = None,
    language: str = "en",
    context: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> SmsMessage:
    """Put a message in the outbox (in the caller's transaction); sent after commit.

    Reminders respect the opt-out list and quiet hours; transactional messages (OTP,
    receipts, disbursements) ignore both.
    """
    sms_check(kind=kind, body=body)
    existing = db.session.scalar(
        select(SmsMessage).where(SmsMessage.idempotency_key == idempotency_key)
    )
    if existing is not None:
        return existing
    now = now or utcnow()
    message = SmsMessage(
        member_id=member.id if member else None,
        phone=phone,
        template=template,
        language=language,
        body=body,
        kind=kind,
        idempotency_key=idempotency_key,
        context=context,
        status="queued",
    )
    if kind == "reminder":
        if is_suppressed(phone):
            message.status = "suppressed"
        else:
            message.not_before = quiet_hours_release(now)
    try:
        with db.session.begin_nested():
            db.session.add(message)
    except IntegrityError:
        # Another transaction queued the same message first: theirs is the one.
        found = db.session.scalar(
            select(SmsMessage).where(SmsMessage.idempotency_key == idempotency_key)
        )
        if found is None:
            raise
        return found
    if message.status == "queued":
        db.session.info.setdefault(_PENDING, []).append(message.id)
    return message


@dataclass(frozen=True)
class Outgoing:
    """One message for `sms_queue_many`: sms_queue's arguments but the kind and time."""

    template: str
    body: str
    phone: str
    idempotency_key: str
    member_id: int | None = None
    language: str = "en"
    context: dict[str, Any] | None = None


class Queued(NamedTuple):
    id: int
    idempotency_key: str
    status: str  # queued, or suppressed (an opted-out number's reminder)


def sms_queue_many(
    messages: Sequence[Outgoing], *, kind: str = "transactional", now: datetime | None = None
) -> list[Queued]:
    """`sms_queue` for many messages, for close of business: the same rules (reminders
    respect the opt-out list and quiet hours; the send jobs are queued after the commit),
    written in one INSERT ... ON CONFLICT (idempotency_key) DO NOTHING in the caller's
    transaction. A key already in the outbox (an earlier run, a racing one) is skipped,
    as sms_queue gives back the first row; returns only the rows written now.

    Every message is checked first (`sms_check`), so a bad one raises before anything is
    written: callers that must not lose the others check each message themselves."""
    for message in messages:
        sms_check(kind=kind, body=message.body)
    first: dict[str, Outgoing] = {}
    for message in messages:
        first.setdefault(message.idempotency_key, message)  # as sms_queue: the first wins
    unique = list(first.values())
    if not unique:
        return []
    now = now or utcnow()
    suppressed: set[str] = set()
    release = None
    if kind == "reminder":
        suppressed = suppressed_phones(m.phone for m in unique)
        release = quiet_hours_release(now)
    created = utcnow()
    rows = [
        dict(
            member_id=m.member_id,
            phone=m.phone,
            template=m.template,
            language=m.language,
            body=m.body,
            kind=kind,
            idempotency_key=m.idempotency_key,
            context=m.context,
            status="suppressed" if m.phone in suppressed else "queued",
            not_before=None if m.phone in suppressed else release,
            attempts=0,
            created_at=created,
        )
        for m in unique
    ]
    written = [
        Queued(row.id, row.idempotency_key, row.status)
        for row in db.session.execute(
            insert_ignoring(SmsMessage, ["idempotency_key"]).returning(
                SmsMessage.id, SmsMessage.idempotency_key, SmsMessage.status
            ),
            rows,
        )
    ]
    queued = [row.id for row in written if row.status == "queued"]
    if queued:
        db.session.info.setdefault(_PENDING, []).extend(queued)
    return written


@event.listens_for(Session, "after_commit")
def _enqueue_after_commit(session: Session) -> None:
    # Releasing a savepoint fires after_commit too, while the rows are still uncommitted:
    # only the outermost commit makes them visible to the worker.
    if session.in_nested_transaction():
        return
    pending = session.info.pop(_PENDING, [])
    if pending:
        sms_enqueue_many(pending)


@event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    # A savepoint rollback leaves the outer transaction (and its messages) alive. (During
    # "after_rollback" the session still reports the dying transaction as current, so a
    # check of in_transaction() there never fired and the next commit sent ghosts.)
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)


SEND_JOB = "workers.sms.send_sms"


def sms_enqueue_many(message_ids: list[int]) -> None:
    """Queue send jobs for many messages in one Redis round trip (a reminder run queues
    thousands); quiet-hours messages are held back by `sms_deliver` itself."""
    try:
        enqueue_many("sms", SEND_JOB, [((mid,), f"sms-{mid}") for mid in message_ids])
    except Exception as exc:  # noqa: BLE001 - the outbox rows are the record; sweeper retries
        log.warning("could not queue %d sms: %s", len(message_ids), type(exc).__name__)


def sms_enqueue(message_id: int, at: datetime | None = None) -> None:
    """Queue the send job; if Redis is down the row stays queued for the sweeper."""
    try:
        if at is not None and at > utcnow():
            # Its own id: this is often called from inside the running job `sms-<id>`,
            # whose record RQ rewrites when it finishes.
            job_id = f"sms-{message_id}-at-{int(at.timestamp())}"
            enqueue("sms", SEND_JOB, message_id, job_id=job_id, at=at)
        else:
            enqueue("sms", SEND_JOB, message_id, job_id=f"sms-{message_id}")
    except Exception as exc:  # noqa: BLE001 - the outbox row is the record; sweeper retries
        log.warning("could not queue sms %s: %s", message_id, type(exc).__name__)


def _still_relevant(message: SmsMessage) -> bool:
    """A reminder about something already settled is not sent."""
    context = message.context or {}
    if "installment_id" in context:
        row = db.session.get(Installment, context["installment_id"])
        if row is None or row.paid_on is not None or row.superseded:
            return False
    if "promise_id" in context:
        promise = db.session.get(PromiseToPay, context["promise_id"])
        expected = context.get("promise_status", "open")
        if promise is None or promise.status != expected:
            return False
    return True


def sms_deliver(*, message_id: int, now: datetime | None = None) -> str:
    """Send one outbox message if it is still due; returns what became of it.

    Claiming the row (queued/retrying -> sending) is one conditional UPDATE committed
    before the provider is called: a second run of the job finds nothing to claim.
    """
    from app.integrations.sms import SendOutcome, sms_gateway

    now = now or utcnow()
    message = db.session.get(SmsMessage, message_id)
    if message is None or message.status not in SENDABLE:
        return "nothing to do"
    if message.not_before and message.not_before > now:
        sms_enqueue(message.id, at=message.not_before)
        return "not yet"
    if message.kind == "reminder":
        if is_suppressed(message.phone):
            message.status = "suppressed"
            db.session.commit()
            return "suppressed"
        if not _still_relevant(message):
            message.status = "cancelled"
            db.session.commit()
            return "cancelled"
    if not claim_for_sending(message, SENDABLE):
        return "nothing to do"

    try:
        phone = e164(message.phone)
    except PhoneError as exc:
        # Not a number we can send to: fail it now rather than leave it "sending".
        result = SendOutcome("failed", error=str(exc)[:200])
    else:
        result = sms_gateway().send(phone=phone, message=message.body)
    message.status_code = result.status_code
    message.provider_status = result.status
    if result.outcome == "accepted":
        message.status = "sent"
        message.sent_at = now
        message.provider_message_id = result.message_id
        message.cost = result.cost
        message.cost_amount = result.cost_amount
        message.last_error = None
        SMS_SENT.labels(message.template).inc()
    elif result.outcome == "retry" and message.attempts < MAX_TRIES:
        message.status = "retrying"
        message.last_error = result.error or f"status {result.status_code}"
        delay = BACKOFF_SECONDS[min(message.attempts, len(BACKOFF_SECONDS)) - 1]
        message.not_before = now + timedelta(seconds=delay)
    else:
        message.status = "failed"
        message.last_error = result.error or f"status {result.status_code} {result.status or ''}"
        SMS_FAILED.labels(message.template).inc()
    db.session.commit()
    if message.status == "retrying":
        sms_enqueue(message.id, at=message.not_before)
    return message.status


def sms_sweep(*, older_than: timedelta = timedelta(minutes=2)) -> int:
    """Queue again the messages whose send job was lost (Redis down at commit, a crash)."""
    cutoff = utcnow() - older_than
    ids = db.session.scalars(
        select(SmsMessage.id).where(
            SmsMessage.status.in_(SENDABLE),
            SmsMessage.created_at < cutoff,
            (SmsMessage.not_before.is_(None)) | (SmsMessage.not_before < utcnow()),
        )
    ).all()
    for message_id in ids:
        sms_enqueue(message_id)
    return len(ids)


# Never sent again from the console: an old one-time code is useless or, worse, valid.
NOT_RESENT = {
    name: "a one-time code is never sent again; the member asks for a new one"
    for name in CODE_TEMPLATES
}


def sms_resend(*, message_id: int, staff: StaffUser) -> SmsMessage:
    """Send a failed message again as a new outbox row (same phone, body and kind); the
    failed row keeps its history. One resend per failed message, so a double click sends
    one SMS; if the resend fails too, that row is the one to resend. A reminder goes
    through the opt-out list, quiet hours and the still-relevant check again. Audited;
    commits, and the send job is queued after the commit as for every message."""
    permission_require(staff, "member.message")
    original = db.session.get(SmsMessage, message_id)
    if original is None:
        raise SmsError("no such message")
    if original.status != "failed":
        raise SmsError(f"only a failed message is sent again; this one is {original.status}")
    if original.template in NOT_RESENT:
        raise SmsError(NOT_RESENT[original.template])
    earlier = sms_resent_as(message_id=original.id)
    if earlier is not None:
        raise SmsError(f"this message was sent again already, as message {earlier.id}")
    message = sms_queue(
        template=original.template,
        body=original.body,
        phone=original.phone,
        idempotency_key=resend_key(original.id),
        kind=original.kind,
        member=db.session.get(Member, original.member_id) if original.member_id else None,
        language=original.language,
        context={**(original.context or {}), "resend_of": original.id},
    )
    audit_record(
        actor=f"staff:{staff.email}",
        action="sms.resend",
        object_type="sms",
        object_id=original.id,
        before={"status": original.status, "last_error": original.last_error},
        after={"new_message_id": message.id, "status": message.status},
    )
    db.session.commit()
    return message
