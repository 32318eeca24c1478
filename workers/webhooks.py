"""RQ job for webhooks: takes a delivery id and calls the service."""

from __future__ import annotations

from rq import get_current_job

from app.services.webhooks import WebhookRetry, webhook_deliver


def send_webhook(delivery_id: int) -> str:
    """Send one delivery (safe to run twice: the service claims the row first). A failed
    attempt raises, so RQ's Retry (queued with the job) sends it again after its wait; on
    the last retry a failure is final and counts against the subscription."""
    job = get_current_job()
    last = job is None or not job.retries_left
    outcome = webhook_deliver(delivery_id=delivery_id, last_attempt=last)
    if outcome == "retrying":
        raise WebhookRetry(f"webhook delivery {delivery_id} failed; RQ retries it")
    return outcome
