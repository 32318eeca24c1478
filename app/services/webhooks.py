"""Signed webhooks (issue 22): an API client subscribes a URL to events; the services that
make those events call `webhook_emit`, which writes one delivery row per subscriber in the
caller's transaction; the send job is queued after the commit (a rolled-back payment never
announces itself), and RQ retries a failed send with backoff.

Decisions:
- An event has a stable id (`payment.received:<receipt>`, `loan.approved:<loan no>`, ...)
  and the delivery row is unique per subscription and event id, so an event emitted twice
  (a callback replayed, a nightly job rerun) is delivered once.
- Subscribing to an event needs the scope that reads what it carries (payment.received
  needs payments:read, ...), checked on the token at subscription and on the client at
  every emission: webhooks:manage alone never leaks a payment.
- The body is fixed when the event happens; each attempt signs it again with the time of
  sending: `X-Sacco-Signature: v1=<hex HMAC-SHA256("<timestamp>.<body>", secret)>`, so a
  receiver can refuse an old replay by its timestamp.
- Payloads carry member and loan numbers and amounts, never a phone number, a name or an
  SMS body (an SMS may hold a one-time code).
- URLs are https; plain http only to this machine (localhost) outside production. No
  redirect is followed (a 3xx is a failure): a signed body goes where it was registered.
- A delivery whose retries are all spent counts one failure for its subscription; a
  success resets the count; WEBHOOK_DISABLE_AFTER failures in a row disable it, with the
  reason, and the dashboard tells the admins. Staff re-enable it and re-send deliveries
  from the console (api.manage).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from flask import current_app
from rq import Retry
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, SessionTransaction

from app.errors import SaccoError
from app.extensions import db, enqueue
from app.models import ApiClient, Loan, Member, WebhookDelivery, WebhookSubscription
from app.models.types import utcnow
from app.services.audit import audit_record
from app.services.bulk import insert_ignoring
from app.services.locking import claim_for_sending
from app.services.permissions import permission_require

if TYPE_CHECKING:
    from app.models import Guarantee, Payment, SmsMessage

log = logging.getLogger(__name__)

# Each event and the scope a client needs to receive it.
EVENTS: dict[str, str] = {
    "payment.received": "payments:read",
    "loan.approved": "loans:read",
    "loan.disbursed": "loans:read",
    "loan.overdue": "loans:read",
    "sms.delivered": "members:read",
    "guarantee.requested": "guarantees:read",
}
SEND_JOB = "workers.webhooks.send_webhook"  # by dotted path: services never import workers
QUEUE = "default"
SENDABLE = ("pending", "retrying")
DELETED = "deleted by the client"
MAX_SUBSCRIPTIONS = 10  # per client
RESPONSE_KEPT = 1000  # characters of a receiver's answer kept with the delivery
_PENDING = "webhook_pending_ids"


class WebhookError(SaccoError):
    """A subscription or delivery change that must not happen; nothing was written.
    `code` is the API problem's stable code, `status` its HTTP status."""

    def __init__(self, message: str, code: str = "invalid_webhook", status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class WebhookRetry(Exception):  # noqa: N818 - what the job raises so that RQ retries it
    """The receiver did not take the delivery; RQ's Retry sends it again later."""


# --- subscriptions ----------------------------------------------------------------------


def webhook_url_check(url: str) -> str:
    """The URL as kept, or WebhookError: https (http to localhost only outside production),
    a host, no credentials in it, not a link-local address (a cloud's metadata service)."""
    url = (url or "").strip()
    if not url or len(url) > 500:
        raise WebhookError("give the URL to post events to (up to 500 characters)")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise WebhookError("that is not a URL") from None
    if not host:
        raise WebhookError("the URL needs a host")
    if parts.username or parts.password:
        raise WebhookError("put no credentials in the URL: the signature proves the sender")
    local = host in ("localhost", "127.0.0.1", "::1")
    production = current_app.config["SETTINGS"].is_production
    if parts.scheme == "http" and local and not production:
        return url
    if parts.scheme != "https":
        raise WebhookError("the URL must be https (plain http only to localhost in testing)")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url
    if address.is_link_local or address.is_multicast or address.is_unspecified:
        raise WebhookError("that address cannot receive webhooks")
    return url


def _checked_events(events: Iterable[str], scopes: Iterable[str]) -> list[str]:
    chosen = sorted(set(events))
    if not chosen:
        raise WebhookError("choose at least one event")
    unknown = [e for e in chosen if e not in EVENTS]
    if unknown:
        raise WebhookError(f"unknown event {unknown[0]!r}; events: {', '.join(EVENTS)}")
    held = set(scopes)
    missing = [e for e in chosen if EVENTS[e] not in held]
    if missing:
        raise WebhookError(
            f"{missing[0]} needs the {EVENTS[missing[0]]} scope, which this token lacks",
            "insufficient_scope",
            403,
        )
    return chosen


def webhook_subscribe(
    *, client: ApiClient, url: str, events: Iterable[str], scopes: Iterable[str]
) -> tuple[WebhookSubscription, str]:
    """Subscribe `client`'s `url` to `events` (each needing its scope among `scopes`, the
    token's). Returns the subscription and its signing secret, shown this once. Audited;
    commits."""
    chosen = _checked_events(events, scopes)
    url = webhook_url_check(url)
    live = db.session.scalars(
        select(WebhookSubscription.id).where(
            WebhookSubscription.client_id == client.id,
            (WebhookSubscription.disabled_reason.is_(None))
            | (WebhookSubscription.disabled_reason != DELETED),
        )
    ).all()
    if len(live) >= MAX_SUBSCRIPTIONS:
        raise WebhookError(
            f"a client has at most {MAX_SUBSCRIPTIONS} subscriptions; delete one first",
            "too_many_subscriptions",
            409,
        )
    secret = f"whsec_{secrets.token_urlsafe(32)}"
    subscription = WebhookSubscription(
        client_id=client.id, url=url, events=chosen, secret=secret, active=True, failures=0
    )
    db.session.add(subscription)
    db.session.flush()
    audit_record(
        actor=f"api:{client.client_id}",
        action="webhook.subscribe",
        object_type="webhook_subscription",
        object_id=subscription.id,
        after={"url": url, "events": chosen},
    )
    db.session.commit()
    return subscription, secret


def webhook_subscriptions(*, client: ApiClient) -> Any:
    """The client's subscriptions (deleted ones left out), as a statement to paginate."""
    return select(WebhookSubscription).where(
        WebhookSubscription.client_id == client.id,
        (WebhookSubscription.disabled_reason.is_(None))
        | (WebhookSubscription.disabled_reason != DELETED),
    )


def webhook_subscription_get(*, client: ApiClient, subscription_id: int) -> WebhookSubscription:
    """One of the client's own subscriptions (another client's is as if it did not exist)."""
    if not 0 < subscription_id < 2**31:  # no such id, and no integer overflow to read one
        raise WebhookError(f"no subscription {subscription_id}", "subscription_not_found", 404)
    found = db.session.scalar(
        webhook_subscriptions(client=client).where(WebhookSubscription.id == subscription_id)
    )
    if found is None:
        raise WebhookError(f"no subscription {subscription_id}", "subscription_not_found", 404)
    return found


def webhook_unsubscribe(*, client: ApiClient, subscription_id: int) -> None:
    """Stop a subscription for good; its deliveries stay on record for the console, and
    queued ones are not sent. Audited; commits."""
    subscription = webhook_subscription_get(client=client, subscription_id=subscription_id)
    subscription.active = False
    subscription.disabled_at = utcnow()
    subscription.disabled_reason = DELETED
    audit_record(
        actor=f"api:{client.client_id}",
        action="webhook.delete",
        object_type="webhook_subscription",
        object_id=subscription.id,
        before={"url": subscription.url},
    )
    db.session.commit()


# --- emitting ---------------------------------------------------------------------------


def _subscribers(event_name: str) -> list[WebhookSubscription]:
    """The active subscriptions to `event_name` of active clients that still hold its scope
    (a handful of rows: read whole, matched here, the same on SQLite and PostgreSQL)."""
    rows = db.session.scalars(
        select(WebhookSubscription)
        .join(ApiClient, ApiClient.id == WebhookSubscription.client_id)
        .where(WebhookSubscription.active.is_(True), ApiClient.active.is_(True))
        .order_by(WebhookSubscription.id)
    ).unique()
    scope = EVENTS[event_name]
    return [s for s in rows if event_name in (s.events or []) and scope in (s.client.scopes or [])]


def _event_id(event_name: str, key: str | None) -> str:
    if key is None:
        return f"{event_name}:{uuid.uuid4().hex}"
    event_id = f"{event_name}:{key}"
    if len(event_id) <= 64:
        return event_id
    return f"{event_name}:{hashlib.sha256(key.encode()).hexdigest()[:40]}"


def _json(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    raise TypeError(f"{type(value).__name__} is not JSON")


def webhook_emit(event_name: str, payload: dict[str, Any], *, key: str | None = None) -> int:
    """Announce `event_name` with `payload` to its subscribers: one delivery row each, in the
    caller's transaction, sent after it commits. `key` makes the event's id (an event
    emitted again with the same key is not delivered again). Returns the rows written."""
    return webhook_emit_many(event_name, [(key, payload)])


def webhook_emit_many(event_name: str, events: Sequence[tuple[str | None, dict[str, Any]]]) -> int:
    """`webhook_emit` for many events of one kind (a nightly chunk): the subscribers read
    once, the rows written in one statement."""
    if event_name not in EVENTS:
        raise ValueError(f"unknown webhook event {event_name!r}")
    if not events:
        return 0
    subscribers = _subscribers(event_name)
    if not subscribers:
        return 0
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for key, payload in events:
        event_id = _event_id(event_name, key)
        body = json.dumps(
            {"id": event_id, "event": event_name, "created_at": now, "data": payload},
            default=_json,
            separators=(",", ":"),
        )
        rows.extend(
            dict(
                subscription_id=s.id,
                event_id=event_id,
                event=event_name,
                body=body,
                status="pending",
                attempts=0,
                created_at=now,
            )
            for s in subscribers
        )
    written = list(
        db.session.scalars(
            insert_ignoring(WebhookDelivery, ["subscription_id", "event_id"]).returning(
                WebhookDelivery.id
            ),
            rows,
        )
    )
    if written:
        db.session.info.setdefault(_PENDING, []).extend(written)
    return len(written)


@event.listens_for(Session, "after_commit")
def _enqueue_after_commit(session: Session) -> None:
    # As the SMS outbox does: only the outermost commit makes the rows visible to a worker.
    if session.in_nested_transaction():
        return
    for delivery_id in session.info.pop(_PENDING, []):
        webhook_enqueue(delivery_id)


@event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)


def webhook_enqueue(delivery_id: int) -> None:
    """Queue the send job with RQ's Retry (WEBHOOK_RETRY_SECONDS between attempts); if
    Redis is down the row stays pending and staff re-send it from the console."""
    waits = current_app.config["SETTINGS"].webhook_retry_seconds
    try:
        enqueue(
            QUEUE,
            SEND_JOB,
            delivery_id,
            # Its own id each time: a re-send must not reuse a finished or failed job's.
            job_id=f"webhook-{delivery_id}-{secrets.token_hex(4)}",
            retry=Retry(max=len(waits), interval=list(waits)) if waits else None,
        )
    except Exception as exc:  # noqa: BLE001 - the delivery row is the record
        log.warning("could not queue webhook delivery %s: %s", delivery_id, type(exc).__name__)


# Pending longer than this: its send job was lost (Redis down at the commit that wrote it).
SWEEP_AFTER = timedelta(minutes=5)


def webhook_sweep(now: datetime | None = None) -> int:
    """Queue again the deliveries still pending well after their commit, whose send job
    never reached Redis; how many. Queuing one twice is harmless: the send claims the row
    with a conditional update first."""
    cutoff = (now or utcnow()) - SWEEP_AFTER
    ids = list(
        db.session.scalars(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.created_at < cutoff)
            .order_by(WebhookDelivery.id)
            .limit(1000)
        )
    )
    db.session.rollback()
    for delivery_id in ids:
        webhook_enqueue(delivery_id)
    return len(ids)


# --- what each event says ---------------------------------------------------------------


def _member_no(member_id: int | None) -> str | None:
    if member_id is None:
        return None
    return db.session.scalar(select(Member.member_no).where(Member.id == member_id))


def _loan_no(loan_id: int | None) -> str | None:
    if loan_id is None:
        return None
    return db.session.scalar(select(Loan.loan_no).where(Loan.id == loan_id))


def webhook_payment_received(payment: Payment) -> int:
    """payment.received: money in by M-PESA (Paybill or a prompt), once per receipt; posted
    to a member's account or loan, or to suspense for staff to place."""
    if not _subscribers("payment.received"):
        return 0
    return webhook_emit(
        "payment.received",
        {
            "receipt": payment.receipt,
            "amount": payment.amount,
            "channel": payment.channel,
            "account_reference": payment.bill_ref,
            "member_no": _member_no(payment.member_id),
            "loan_no": _loan_no(payment.loan_id),
            "status": "suspense" if payment.status == "suspense" else "posted",
            "paid_at": payment.transacted_at,
        },
        key=payment.receipt or f"payment-{payment.id}",
    )


def webhook_loan(event_name: str, loan: Loan) -> int:
    """loan.approved or loan.disbursed, once per loan."""
    if not _subscribers(event_name):
        return 0
    return webhook_emit(
        event_name,
        {
            "loan_no": loan.loan_no,
            "member_no": _member_no(loan.member_id),
            "principal": loan.principal,
            "fee": loan.fee_amount,
            "term": loan.term,
            "frequency": loan.frequency,
            "status": loan.status,
            "disbursed_on": loan.disbursed_on,
        },
        key=loan.loan_no,
    )


def webhook_loans_overdue(overdue: Sequence[tuple[Loan, int]], as_of: date) -> int:
    """loan.overdue for loans that were up to date and have now an installment past due
    (`overdue`: each loan with its days past due). Once per loan and first missed due
    date: a loan that catches up and falls behind again is announced again."""
    if not overdue or not _subscribers("loan.overdue"):
        return 0
    numbers = dict(
        db.session.execute(
            select(Member.id, Member.member_no).where(
                Member.id.in_({loan.member_id for loan, _ in overdue})
            )
        ).all()
    )
    events = []
    for loan, days in overdue:
        since = as_of - timedelta(days=days)
        events.append(
            (
                f"{loan.loan_no}:{since.isoformat()}",
                {
                    "loan_no": loan.loan_no,
                    "member_no": numbers.get(loan.member_id),
                    "days_past_due": days,
                    "overdue_since": since,
                    "as_of": as_of,
                },
            )
        )
    return webhook_emit_many("loan.overdue", events)


def webhook_sms_delivered(message: SmsMessage, delivered_at: datetime) -> int:
    """sms.delivered: the network's report that a message reached the phone (the message's
    template, never its body: it may hold a one-time code)."""
    if not _subscribers("sms.delivered"):
        return 0
    return webhook_emit(
        "sms.delivered",
        {
            "sms_id": message.id,
            "template": message.template,
            "member_no": _member_no(message.member_id),
            "delivered_at": delivered_at,
        },
        key=str(message.id),
    )


def webhook_guarantee_requested(guarantee: Guarantee, loan: Loan) -> int:
    """guarantee.requested: a member was asked to guarantee part of a loan."""
    if not _subscribers("guarantee.requested"):
        return 0
    return webhook_emit(
        "guarantee.requested",
        {
            "guarantee_id": guarantee.id,
            "loan_no": loan.loan_no,
            "borrower_member_no": _member_no(loan.member_id),
            "guarantor_member_no": _member_no(guarantee.guarantor_id),
            "amount": guarantee.amount,
            "expires_on": guarantee.expires_on,
        },
        key=str(guarantee.id),
    )


# --- sending ----------------------------------------------------------------------------


def webhook_sign(secret: str, timestamp: str, body: str) -> str:
    """The X-Sacco-Signature value: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">."""
    message = f"{timestamp}.{body}".encode()
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _post(
    subscription: WebhookSubscription, delivery: WebhookDelivery, now: datetime
) -> tuple[int | None, str | None, str | None]:
    """POST the delivery: (status code, the answer's start, error) - never raises."""
    timestamp = str(int(now.timestamp()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "sacco-webhooks/1",
        "X-Sacco-Event": delivery.event,
        "X-Sacco-Delivery": str(delivery.id),
        "X-Sacco-Timestamp": timestamp,
        "X-Sacco-Signature": webhook_sign(subscription.secret, timestamp, delivery.body),
    }
    timeout = current_app.config["SETTINGS"].WEBHOOK_TIMEOUT_SECONDS
    try:
        with requests.post(
            subscription.url,
            data=delivery.body.encode(),
            headers=headers,
            timeout=(min(5, timeout), timeout),
            allow_redirects=False,
            stream=True,
        ) as response:
            start = next(response.iter_content(RESPONSE_KEPT * 4), b"")
            text = start.decode("utf-8", "replace")[:RESPONSE_KEPT]
            status = response.status_code
    except requests.RequestException as exc:
        return None, None, f"{type(exc).__name__}: {exc}"[:255]
    if 200 <= status < 300:
        return status, text, None
    return status, text, f"the receiver answered HTTP {status}"


def webhook_deliver(*, delivery_id: int, last_attempt: bool, now: datetime | None = None) -> str:
    """Send one delivery if it is still to send; returns what became of it: sent, retrying
    (the job raises so RQ tries again), failed (retries spent), cancelled (its subscription
    is off) or nothing to do. The row is claimed with one conditional UPDATE committed
    before the POST, so two runs of the job cannot both send it."""
    now = now or utcnow()
    delivery = db.session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.status not in SENDABLE:
        db.session.rollback()
        return "nothing to do"
    subscription = db.session.get(WebhookSubscription, delivery.subscription_id)
    if subscription is None or not subscription.active or not subscription.client.active:
        delivery.status = "failed"
        delivery.last_error = "not sent: the subscription is disabled or deleted"
        db.session.commit()
        return "cancelled"
    if not claim_for_sending(delivery, SENDABLE):
        return "nothing to do"
    status, text, error = _post(subscription, delivery, now)
    delivery.response_status = status
    delivery.response_body = text
    delivery.last_error = error
    if error is None:
        delivery.status = "sent"
        delivery.sent_at = now
        db.session.execute(
            update(WebhookSubscription)
            .where(WebhookSubscription.id == subscription.id)
            .values(failures=0)
            .execution_options(synchronize_session=False)
        )
    elif not last_attempt:
        delivery.status = "retrying"
    else:
        delivery.status = "failed"
        _count_failure(subscription.id, now)
    db.session.commit()
    return delivery.status


def _count_failure(subscription_id: int, now: datetime) -> None:
    """One more delivery failed for good; at WEBHOOK_DISABLE_AFTER in a row, disable."""
    limit = current_app.config["SETTINGS"].WEBHOOK_DISABLE_AFTER
    db.session.execute(
        update(WebhookSubscription)
        .where(WebhookSubscription.id == subscription_id)
        .values(failures=WebhookSubscription.failures + 1)
        .execution_options(synchronize_session=False)
    )
    subscription = db.session.get(WebhookSubscription, subscription_id, populate_existing=True)
    if subscription is None or not subscription.active or subscription.failures < limit:
        return
    subscription.active = False
    subscription.disabled_at = now
    subscription.disabled_reason = (
        f"{subscription.failures} deliveries in a row failed after every retry"
    )
    audit_record(
        actor="system",
        action="webhook.disable",
        object_type="webhook_subscription",
        object_id=subscription.id,
        after={"failures": subscription.failures, "url": subscription.url},
    )
    log.warning("webhook subscription %s disabled after %s failures", subscription.id, limit)


# --- the console ------------------------------------------------------------------------


def webhook_resend(*, delivery_id: int, staff: Any) -> WebhookDelivery:
    """Send a delivery again (the same event id and body, signed anew), as a fresh round of
    retries. Not while it is on its way, nor for a subscription that is off. Audited;
    commits, and the job is queued after the commit."""
    permission_require(staff, "api.manage")
    delivery = db.session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise WebhookError(f"no webhook delivery {delivery_id}")
    if delivery.status not in ("sent", "failed"):
        raise WebhookError(f"delivery {delivery_id} is {delivery.status}: it is on its way")
    subscription = db.session.get(WebhookSubscription, delivery.subscription_id)
    if subscription is None or not subscription.active:
        raise WebhookError("its subscription is disabled: enable it first")
    before = {"status": delivery.status, "attempts": delivery.attempts}
    delivery.status = "pending"
    audit_record(
        actor=f"staff:{staff.email}",
        action="webhook.resend",
        object_type="webhook_delivery",
        object_id=delivery.id,
        before=before,
        after={"status": "pending", "event_id": delivery.event_id},
    )
    db.session.info.setdefault(_PENDING, []).append(delivery.id)
    db.session.commit()
    return delivery


def webhook_enable(*, subscription_id: int, staff: Any) -> WebhookSubscription:
    """Turn a disabled subscription back on (its receiver is fixed), its failures at zero.
    A subscription its client deleted stays deleted. Audited; commits."""
    permission_require(staff, "api.manage")
    subscription = db.session.get(WebhookSubscription, subscription_id)
    if subscription is None:
        raise WebhookError(f"no webhook subscription {subscription_id}")
    if subscription.disabled_reason == DELETED:
        raise WebhookError("its client deleted this subscription")
    if subscription.active:
        raise WebhookError(f"subscription {subscription_id} is enabled already")
    before = {"reason": subscription.disabled_reason, "failures": subscription.failures}
    subscription.active = True
    subscription.failures = 0
    subscription.disabled_at = None
    subscription.disabled_reason = None
    audit_record(
        actor=f"staff:{staff.email}",
        action="webhook.enable",
        object_type="webhook_subscription",
        object_id=subscription.id,
        before=before,
        after={"active": True},
    )
    db.session.commit()
    return subscription


def webhooks_disabled() -> list[WebhookSubscription]:
    """Subscriptions disabled for failing (not the ones their clients deleted), newest first:
    the dashboard's notice."""
    return list(
        db.session.scalars(
            select(WebhookSubscription)
            .where(
                WebhookSubscription.active.is_(False),
                WebhookSubscription.disabled_reason.is_not(None),
                WebhookSubscription.disabled_reason != DELETED,
            )
            .order_by(WebhookSubscription.disabled_at.desc())
        ).unique()
    )
