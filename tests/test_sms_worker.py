"""The send job run by a real RQ worker (in burst mode) against Redis, with Africa's
Talking faked at the HTTP boundary: what RQ does with the job ids matters here."""

from __future__ import annotations

import pytest
from flask import Flask
from rq.registry import ScheduledJobRegistry

from app.cli.runtime import make_worker
from app.extensions import db, queue
from app.models import SmsMessage
from app.services.sms import sms_queue
from tests.factories import make_member
from tests.helpers import at_reply

URL = "https://api.africastalking.com/version1/messaging"


def queued_message() -> int:
    member = make_member(phone="0700000001")
    message = sms_queue(
        template="deposit_received",
        body="Deposit of KES 500.00 received.",
        phone=member.phone,
        idempotency_key="receipt:worker",
        member=member,
    )
    db.session.commit()  # the after-commit hook puts the send job on the sms queue
    return message.id


def work() -> None:
    make_worker(("sms",)).work(burst=True)


@pytest.mark.usefixtures("at_credentials")
def test_the_worker_sends_a_committed_message_once(app: Flask, mocked) -> None:  # noqa: ANN001
    mocked.post(URL, json=at_reply(101))
    message_id = queued_message()
    assert queue("sms").count == 1
    work()
    assert len(mocked.calls) == 1
    db.session.expire_all()
    assert db.session.get(SmsMessage, message_id).status == "sent"
    # The sweeper (or a duplicate job) finds nothing left to send.
    queue("sms").enqueue("workers.sms.send_sms", message_id)
    work()
    assert len(mocked.calls) == 1


@pytest.mark.usefixtures("at_credentials")
def test_a_retry_is_scheduled_and_survives_the_job_that_scheduled_it(app: Flask, mocked) -> None:  # noqa: ANN001
    mocked.post(URL, json=at_reply(500, status="InternalServerError"))
    message_id = queued_message()
    work()
    db.session.expire_all()
    message = db.session.get(SmsMessage, message_id)
    assert (message.status, message.attempts) == ("retrying", 1)
    scheduled = ScheduledJobRegistry(queue=queue("sms")).get_job_ids()
    assert len(scheduled) == 1
    job = queue("sms").fetch_job(scheduled[0])
    # The finished first job must not have overwritten the retry it scheduled.
    assert job is not None and job.get_status() == "scheduled"
    assert job.args == (message_id,)
