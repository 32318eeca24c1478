"""Africa's Talking callbacks: inbound texts, delivery reports, opt-outs (real DB, Redis).

The provider is faked only at the HTTP boundary (`responses`) when a message has to be
sent first; services run for real. Clocks are fixed where a service takes `now=`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import count

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from app.extensions import db
from app.models import Member, SmsInbound, SmsMessage, SmsSuppression
from app.selectors.statements import member_statement
from app.services.loans import loan_repay
from app.services.members import member_deposit
from app.services.sms import sms_deliver, sms_queue
from app.services.sms_inbound import (
    parse_keyword,
    sms_delivery_report,
    sms_opt_out,
    sms_receive,
)
from app.sms_templates import render_sms
from tests.factories import make_member
from tests.helpers import make_app
from tests.loan_factories import make_borrower, make_loan, make_product, receivables

NOW = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)  # 12:30 in Nairobi, outside quiet hours
SIMULATOR_URL = "http://127.0.0.1:5000/simulator/at/version1/messaging"
PHONE = "+254700000001"
_ids = count(1)


def text_in(client: FlaskClient, text: str, *, phone: str = PHONE, sms_id: str | None = None):
    form = {
        "from": phone,
        "to": "22384",
        "text": text,
        "id": sms_id or f"in-{next(_ids)}",
        "date": "2026-05-04 12:30:00",
        "networkCode": "63902",
        "linkId": "link-1",
        "cost": "KES 0.00",
        "someFieldAddedLater": "x",
    }
    return client.post("/sms/inbound", data=form)


def replies() -> list[SmsMessage]:
    """The outbox without the deposit receipts (keyed "deposit:<reference>") that setting
    up a member's savings queues: what is left is what the SACCO sent back."""
    db.session.expire_all()
    return (
        db.session.query(SmsMessage)
        .filter(SmsMessage.idempotency_key.not_like("deposit:%"))
        .order_by(SmsMessage.id)
        .all()
    )


def deposit_receipts() -> list[str]:
    db.session.expire_all()
    rows = db.session.query(SmsMessage).filter(SmsMessage.idempotency_key.like("deposit:%"))
    return sorted(row.idempotency_key for row in rows)


def callbacks(kind: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("sacco_callbacks_total", {"kind": kind, "outcome": outcome}) or 0
    )


# --- inbound keywords ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "keyword", "language"),
    [
        ("BAL", "BAL", "en"),
        ("bal", "BAL", "en"),
        ("  Bal. please", "BAL", "en"),
        ("SALIO", "BAL", "sw"),
        ("salio!", "BAL", "sw"),
        ("STMT", "STMT", "en"),
        ("Taarifa", "STMT", "sw"),
        ("help", "HELP", "en"),
        ("msaada", "HELP", "sw"),
        ("Stop", "STOP", "en"),
        ("SIMAMA", "STOP", "sw"),
        ("start", "START", "en"),
        ("anza", "START", "sw"),
        ("balance?", "BAL", "en"),
        ("hello there", "UNKNOWN", None),
        ("", "UNKNOWN", None),
        ("...", "UNKNOWN", None),
        ("BALBAL", "UNKNOWN", None),
    ],
)
def test_keywords_are_read_from_the_first_word(
    text: str, keyword: str, language: str | None
) -> None:
    parsed = parse_keyword(text)

    assert (parsed.keyword, parsed.language) == (keyword, language)


def test_bal_replies_with_balances_through_the_outbox(app: Flask, client: FlaskClient) -> None:
    member = make_member(phone="0700000001", savings=1500)
    before = callbacks("sms_inbound", "replied")
    receipts = deposit_receipts()
    assert len(receipts) == 1  # the savings deposit's own receipt, not a reply

    response = text_in(client, "bal", sms_id="ATid_1")

    assert response.status_code == 200
    inbound = db.session.query(SmsInbound).one()
    assert (inbound.provider_id, inbound.phone, inbound.keyword) == ("ATid_1", member.phone, "BAL")
    assert (inbound.member_id, inbound.to, inbound.link_id) == (member.id, "22384", "link-1")
    [reply] = replies()
    assert reply.template == "balance"
    assert reply.body == render_sms(
        "balance", "en", savings=Decimal("1500.00"), shares=Decimal(0), loan_balance=Decimal(0)
    )
    assert "KES 1,500.00" in reply.body
    assert (reply.kind, reply.status, reply.language) == ("transactional", "queued", "en")
    assert (reply.idempotency_key, reply.phone, reply.member_id) == (
        "reply:ATid_1",
        member.phone,
        member.id,
    )
    assert callbacks("sms_inbound", "replied") == before + 1
    assert deposit_receipts() == receipts  # the text queued only its reply


@pytest.mark.parametrize(
    ("member_language", "text", "template", "reply_language"),
    [
        ("en", "BAL", "balance", "en"),
        ("sw", "BAL", "balance", "sw"),  # an English keyword: the member's own language
        ("en", "SALIO", "balance", "sw"),  # a Kiswahili keyword: answered in Kiswahili
        ("sw", "salio", "balance", "sw"),
        ("en", "HELP", "help", "en"),
        ("en", "Msaada", "help", "sw"),
        ("sw", "help", "help", "sw"),
        ("en", "what is this", "help", "en"),  # unknown word: HELP in the member's language
        ("sw", "habari", "help", "sw"),
        ("en", "STMT", "statement", "en"),
        ("en", "taarifa", "statement", "sw"),
    ],
)
def test_reply_template_and_language(
    app: Flask,
    client: FlaskClient,
    member_language: str,
    text: str,
    template: str,
    reply_language: str,
) -> None:
    make_member(phone="0700000001", language=member_language)

    assert text_in(client, text).status_code == 200

    [reply] = replies()
    assert (reply.template, reply.language) == (template, reply_language)
    if template == "help":
        assert reply.body == render_sms("help", reply_language)
    # The member's saved language is a USSD setting; a text does not change it.
    assert db.session.query(Member).one().language == member_language


def test_stmt_lists_recent_movements_with_dates_and_signs(app: Flask, client: FlaskClient) -> None:
    member = make_member(phone="0700000001", savings=1000)  # deposited 01/01/2026
    member_deposit(
        member_id=member.id, amount="250.50", reference="R2", value_date=date(2026, 3, 2)
    )

    text_in(client, "STMT")

    receipts = deposit_receipts()
    assert len(receipts) == 2 and "deposit:R2" in receipts  # one per deposit, not replies
    [reply] = replies()
    assert reply.body.startswith("Statement:\n02/03/2026 Savings +KES 250.50\n")
    assert "01/01/2026 Savings +KES 1,000.00" in reply.body
    assert reply.body.endswith("Savings KES 1,250.50\nShares KES 0.00\nLoan KES 0.00")


def test_stmt_with_no_movements_says_so(app: Flask, client: FlaskClient) -> None:
    make_member(phone="0700000001", language="sw")

    text_in(client, "TAARIFA")

    assert "Hakuna miamala bado." in replies()[0].body


def test_a_number_that_is_not_a_member_is_told_how_to_join(app: Flask, client: FlaskClient) -> None:
    before = callbacks("sms_inbound", "not_member")

    assert text_in(client, "BAL", phone="+254799999999").status_code == 200

    inbound = db.session.query(SmsInbound).one()
    assert (inbound.member_id, inbound.phone) == (None, "254799999999")
    [reply] = replies()
    assert (reply.template, reply.phone, reply.member_id) == ("not_member", "254799999999", None)
    assert "join" in reply.body
    assert callbacks("sms_inbound", "not_member") == before + 1


def test_a_non_kenyan_or_garbage_number_is_stored_without_a_reply(
    app: Flask, client: FlaskClient
) -> None:
    assert text_in(client, "BAL", phone="+4479460000000000000000000").status_code == 200
    assert text_in(client, "BAL", phone="not a phone").status_code == 200

    stored = db.session.query(SmsInbound).order_by(SmsInbound.id).all()
    assert [row.phone for row in stored] == ["+447946000000000", "not a phone"]
    assert replies() == []


def test_a_retried_inbound_id_is_one_row_and_one_reply(app: Flask, client: FlaskClient) -> None:
    make_member(phone="0700000001")

    for _ in range(3):
        assert text_in(client, "BAL", sms_id="ATid_same").status_code == 200

    assert db.session.query(SmsInbound).count() == 1
    assert len(replies()) == 1


def test_sms_receive_twice_is_a_no_op(app: Flask) -> None:
    make_member(phone="0700000001")

    first = sms_receive(provider_id="A1", phone=PHONE, text="BAL", now=NOW)
    again = sms_receive(provider_id="A1", phone=PHONE, text="STMT", now=NOW)

    assert (first.outcome, again.outcome) == ("replied", "duplicate")
    assert again.inbound_id == first.inbound_id
    inbound = db.session.get(SmsInbound, first.inbound_id)
    assert inbound is not None
    assert (inbound.text, inbound.received_at) == ("BAL", NOW)


@pytest.mark.parametrize("text", ["", "x" * 2000, "BAL " + "y" * 1996, "\x00BAL"])
def test_empty_huge_and_odd_texts_are_stored_and_answered(
    app: Flask, client: FlaskClient, text: str
) -> None:
    make_member(phone="0700000001")

    assert text_in(client, text).status_code == 200

    inbound = db.session.query(SmsInbound).one()
    assert inbound.text == text.replace("\x00", "")
    [reply] = replies()
    assert reply.template == ("balance" if "BAL" in text else "help")


def test_a_missing_text_field_is_an_empty_text(app: Flask, client: FlaskClient) -> None:
    make_member(phone="0700000001")

    response = client.post("/sms/inbound", data={"from": PHONE, "id": "no-text"})

    assert response.status_code == 200
    assert db.session.query(SmsInbound).one().text == ""
    assert replies()[0].template == "help"


@pytest.mark.parametrize(
    "form",
    [{}, {"from": PHONE, "text": "BAL"}, {"id": "", "from": PHONE}, {"id": "x", "from": ""}],
)
def test_an_inbound_without_id_or_sender_is_acknowledged_and_logged(
    app: Flask, client: FlaskClient, form: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    before = callbacks("sms_inbound", "invalid")

    response = client.post("/sms/inbound", data=form)

    assert response.status_code == 200
    assert db.session.query(SmsInbound).count() == 0
    assert callbacks("sms_inbound", "invalid") == before + 1
    assert "bad fields" in caplog.text


def test_a_json_body_is_acknowledged(app: Flask, client: FlaskClient) -> None:
    response = client.post("/sms/inbound", json={"id": "1", "from": PHONE, "text": "BAL"})

    assert response.status_code == 200
    assert db.session.query(SmsInbound).count() == 0


def test_the_text_of_an_inbound_sms_is_not_logged(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    make_member(phone="0700000001")
    caplog.set_level("DEBUG")

    text_in(client, "my pin is 4711")

    assert "4711" not in caplog.text
    assert "700000001" not in caplog.text


# --- STOP / START and the opt-out callback --------------------------------------------------


def queue_both(phone: str, n: int) -> tuple[SmsMessage, SmsMessage]:
    reminder = sms_queue(
        template="reminder_due_today",
        body="Loan L1: KES 500.00 is due today.",
        phone=phone,
        idempotency_key=f"reminder:{n}",
        kind="reminder",
        now=NOW,
    )
    receipt = sms_queue(
        template="deposit_received",
        body="Deposit of KES 500.00 received.",
        phone=phone,
        idempotency_key=f"receipt:{n}",
        now=NOW,
    )
    db.session.commit()
    return reminder, receipt


def test_opt_out_callback_suppresses_reminders_but_not_receipts(
    app: Flask, client: FlaskClient
) -> None:
    member = make_member(phone="0700000001")

    response = client.post("/sms/opt-out", data={"senderId": "SACCO", "phoneNumber": PHONE})

    assert response.status_code == 200
    suppression = db.session.query(SmsSuppression).one()
    assert (suppression.phone, suppression.active, suppression.source) == (
        member.phone,
        True,
        "opt-out",
    )
    reminder, receipt = queue_both(member.phone, 1)
    assert (reminder.status, receipt.status) == ("suppressed", "queued")


def test_stop_then_start_by_keyword(app: Flask, client: FlaskClient) -> None:
    member = make_member(phone="0700000001")

    text_in(client, "STOP")
    suppression = db.session.query(SmsSuppression).one()
    assert (suppression.active, suppression.source) == (True, "keyword")
    reminder, receipt = queue_both(member.phone, 1)
    assert (reminder.status, receipt.status) == ("suppressed", "queued")

    text_in(client, "anza")
    db.session.expire_all()
    assert db.session.query(SmsSuppression).one().active is False
    reminder, _ = queue_both(member.phone, 2)
    assert reminder.status == "queued"

    templates = [(m.template, m.language) for m in replies() if m.template.startswith("opted")]
    assert templates == [("opted_out", "en"), ("opted_in", "sw")]


def test_start_re_enables_after_a_provider_opt_out(app: Flask, client: FlaskClient) -> None:
    member = make_member(phone="0700000001")
    sms_opt_out(phone=PHONE, sender_id="SACCO", now=NOW)

    text_in(client, "START")

    db.session.expire_all()
    assert db.session.query(SmsSuppression).one().active is False
    assert queue_both(member.phone, 1)[0].status == "queued"


def test_a_reminder_queued_before_stop_is_not_sent(app: Flask, client: FlaskClient) -> None:
    member = make_member(phone="0700000001")
    reminder, _ = queue_both(member.phone, 1)

    text_in(client, "STOP")

    # The send job checks again: no HTTP call is made (none is mocked).
    with responses.RequestsMock():
        assert sms_deliver(message_id=reminder.id, now=NOW) == "suppressed"


def test_a_non_member_may_stop_reminders_too(app: Flask, client: FlaskClient) -> None:
    text_in(client, "STOP", phone="0799999999")

    assert db.session.query(SmsSuppression).one().phone == "254799999999"
    assert replies()[0].template == "opted_out"


def test_sms_opt_out_is_idempotent_and_refuses_garbage(app: Flask) -> None:
    assert sms_opt_out(phone=PHONE, now=NOW) == "opted_out"
    assert sms_opt_out(phone="0700000001", now=NOW) == "opted_out"
    assert sms_opt_out(phone="garbage", now=NOW) == "bad_number"

    suppression = db.session.query(SmsSuppression).one()
    assert (suppression.phone, suppression.updated_at) == ("254700000001", NOW)


@pytest.mark.parametrize(
    "form", [{}, {"senderId": "SACCO"}, {"phoneNumber": "nonsense"}, {"phoneNumber": ""}]
)
def test_a_malformed_opt_out_is_acknowledged(
    app: Flask, client: FlaskClient, form: dict[str, str]
) -> None:
    assert client.post("/sms/opt-out", data=form).status_code == 200
    assert db.session.query(SmsSuppression).count() == 0


# --- delivery reports -----------------------------------------------------------------------


@pytest.fixture
def sent_message(app: Flask) -> Iterator[SmsMessage]:
    """A message the provider accepted as ATXid_1 (sent through the SDK, HTTP faked)."""
    member = make_member(phone="0700000001")
    message = sms_queue(
        template="deposit_received",
        body="Deposit of KES 500.00 received.",
        phone=member.phone,
        idempotency_key="receipt:dlr",
        member=member,
        now=NOW,
    )
    db.session.commit()
    reply = {
        "SMSMessageData": {
            "Message": "Sent to 1/1 Total Cost: KES 0.8000",
            "Recipients": [
                {
                    "statusCode": 101,
                    "number": PHONE,
                    "status": "Success",
                    "cost": "KES 0.8000",
                    "messageId": "ATXid_1",
                }
            ],
        }
    }
    with responses.RequestsMock() as rsps:
        rsps.post(SIMULATOR_URL, json=reply, status=201)
        assert sms_deliver(message_id=message.id, now=NOW) == "sent"
    yield message


def report(client: FlaskClient, status: str, message_id: str = "ATXid_1", **extra: str):
    form = {"id": message_id, "status": status, "phoneNumber": PHONE, "networkCode": "63902"}
    form.update(extra)
    return client.post("/sms/delivery-reports", data=form)


def state(message: SmsMessage) -> tuple[str, str | None]:
    db.session.expire_all()
    fresh = db.session.get(SmsMessage, message.id)
    assert fresh is not None
    return fresh.status, fresh.provider_status


def test_success_marks_the_message_delivered(
    app: Flask, client: FlaskClient, sent_message: SmsMessage
) -> None:
    before = callbacks("sms_delivery_report", "delivered")

    assert report(client, "Success").status_code == 200

    assert state(sent_message) == ("delivered", "Success")
    assert db.session.get(SmsMessage, sent_message.id).delivered_at is not None
    assert callbacks("sms_delivery_report", "delivered") == before + 1


def test_delivered_at_is_the_report_time(app: Flask, sent_message: SmsMessage) -> None:
    assert sms_delivery_report(provider_message_id="ATXid_1", status="Success", now=NOW) == (
        "delivered"
    )

    assert db.session.get(SmsMessage, sent_message.id).delivered_at == NOW


def test_a_late_sent_after_success_changes_nothing(
    app: Flask, client: FlaskClient, sent_message: SmsMessage
) -> None:
    report(client, "Success")
    report(client, "Sent")
    report(client, "Buffered")
    report(client, "Failed", failureReason="DeliveryFailure")

    assert state(sent_message) == ("delivered", "Success")


def test_reports_only_move_forward(app: Flask, sent_message: SmsMessage) -> None:
    def dlr(status: str) -> str:
        return sms_delivery_report(provider_message_id="ATXid_1", status=status, now=NOW)

    assert dlr("Sent") == "progressed"
    assert state(sent_message) == ("sent", "Sent")
    assert dlr("Buffered") == "progressed"
    assert dlr("Submitted") == "stale"
    assert dlr("Sent") == "stale"
    assert dlr("Buffered") == "stale"  # a duplicate
    assert state(sent_message) == ("sent", "Buffered")
    assert dlr("Success") == "delivered"
    assert dlr("Success") == "stale"  # a duplicate
    assert state(sent_message) == ("delivered", "Success")


def test_a_failure_is_final(app: Flask, client: FlaskClient, sent_message: SmsMessage) -> None:
    report(client, "Buffered")
    report(client, "Failed", failureReason="UserInBlackList")
    report(client, "Success")
    report(client, "Failed", failureReason="UserInBlackList")

    assert state(sent_message) == ("failed", "Failed")
    message = db.session.get(SmsMessage, sent_message.id)
    assert message.last_error == "Failed: UserInBlackList"
    assert message.delivered_at is None


@pytest.mark.parametrize("status", ["Rejected", "AbsentSubscriber", "Expired"])
def test_other_final_failures(
    app: Flask, client: FlaskClient, sent_message: SmsMessage, status: str
) -> None:
    report(client, status)

    assert state(sent_message) == ("failed", status)


@pytest.mark.parametrize(
    "form",
    [
        {},
        {"status": "Success"},
        {"id": "ATXid_1"},
        {"id": "", "status": "Success"},
        {"id": "ATXid_1", "status": ""},
        {"id": "ATXid_1", "status": "Delivered!"},
        {"id": "ATXid_1", "status": "x" * 500},
        {"id": "ATXid_unknown", "status": "Success"},
        {"id": "y" * 500, "status": "Success"},
    ],
)
def test_malformed_or_unknown_reports_are_acknowledged_and_change_nothing(
    app: Flask, client: FlaskClient, sent_message: SmsMessage, form: dict[str, str]
) -> None:
    response = client.post("/sms/delivery-reports", data=form)

    assert response.status_code == 200
    assert state(sent_message) == ("sent", "Success")  # "Success" is the send reply's word


def test_unknown_id_is_logged(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    before = callbacks("sms_delivery_report", "unknown_id")

    assert report(client, "Success", message_id="ATXid_nobody").status_code == 200

    assert "unknown message id ATXid_nobody" in caplog.text
    assert callbacks("sms_delivery_report", "unknown_id") == before + 1


def test_a_callback_we_cannot_store_asks_the_provider_to_retry(_urls: dict[str, str]) -> None:
    # The database is down: a 200 would make the provider drop the text for good.
    broken = make_app(_urls, DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        response = broken.test_client().post(
            "/sms/inbound", data={"id": "ATid_9", "from": PHONE, "text": "BAL"}
        )
    finally:
        with broken.app_context():
            db.engine.dispose()
        broken.extensions["redis"].close()

    assert response.status_code == 503


# --- the mini statement ---------------------------------------------------------------------


def test_statement_shows_loan_and_savings_movements_newest_first(app: Flask) -> None:
    borrower = make_borrower(savings=10000)  # deposited 01/01/2026
    loan = make_loan(product=make_product(), amount=10000, on=date(2026, 1, 15), member=borrower)
    lent = sum(receivables(loan).values())  # principal and the schedule's interest
    assert lent > 10000
    loan_repay(loan_id=loan.id, amount="1000", reference="RP1", value_date=date(2026, 2, 15))

    lines = member_statement(member_id=borrower.id)

    assert [(line.value_date, line.account, line.kind, line.amount) for line in lines] == [
        (date(2026, 2, 15), "loan", "repayment", Decimal("-1000.00")),
        (date(2026, 1, 15), "loan", "disbursement", lent),
        (date(2026, 1, 1), "savings", "deposit", Decimal("10000.00")),
    ]


def test_statement_keeps_the_newest_lines_only(app: Flask) -> None:
    member = make_member(savings=100)
    for day in range(2, 9):
        member_deposit(
            member_id=member.id, amount=day, reference=f"D{day}", value_date=date(2026, 2, day)
        )

    lines = member_statement(member_id=member.id, limit=5)

    assert [line.value_date.day for line in lines] == [8, 7, 6, 5, 4]
    assert [line.amount for line in lines] == [Decimal(d) for d in (8, 7, 6, 5, 4)]
    assert member_statement(member_id=member.id + 999) == []
