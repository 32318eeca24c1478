"""SMS in the console: the outbox with its filters and a resend for a failed message, the
texts members sent us, and the numbers that opted out."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db, queue
from app.models import AuditLog, SmsMessage
from app.services.notifications import notify_phone_change_otp
from app.services.sms_inbound import sms_opt_out, sms_receive
from tests.factories import make_member
from tests.helpers import browse as _browse
from tests.helpers import csrf_token as _csrf_token
from tests.helpers import login, staff

EVERYONE = ["loan_officer", "branch_manager", "compliance", "auditor", "admin"]
MESSENGERS = ["loan_officer", "branch_manager"]


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's read transaction would hold the write lock
    return _browse(client, path, method, **kwargs)


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    db.session.commit()
    login(client, staff(role))
    return client


def failed_receipt() -> SmsMessage:
    """A member's deposit receipt that the provider refused for good."""
    make_member(savings=Decimal("2500"), name="Achieng Odhiambo", phone="0722000111")
    message = db.session.scalar(select(SmsMessage).where(SmsMessage.template == "deposit_received"))
    message.status, message.attempts = "failed", 3
    message.last_error = "status 406 UserInBlacklist"
    db.session.commit()
    return message


def resend(client: FlaskClient, message_id: int, token: str | None = "fetch"):  # noqa: ANN201
    data = {} if token is None else {"csrf_token": _csrf(client)}
    return browse(
        client, f"/admin/smsmessage/resend/{message_id}", "POST", data=data, follow_redirects=True
    )


def _csrf(client: FlaskClient) -> str:
    db.session.commit()
    return _csrf_token(client)


def messages() -> list[SmsMessage]:
    db.session.expire_all()
    return db.session.scalars(select(SmsMessage).order_by(SmsMessage.id)).all()


@pytest.mark.parametrize("role", MESSENGERS)
def test_a_failed_message_is_sent_again_as_a_new_message(app: Flask, role: str) -> None:
    failed = failed_receipt()
    client = signed_in(app, role)
    page = browse(client, f"/admin/smsmessage/details/?id={failed.id}").get_data(as_text=True)
    assert "Resend to 254722000111" in page
    reply = resend(client, failed.id)
    text = reply.get_data(as_text=True)
    original, again = messages()
    assert f"Sent again as message {again.id} (queued)." in text
    # The failed row keeps its history; the new one carries the same words to the same phone.
    assert (original.status, original.attempts, original.last_error) == (
        "failed",
        3,
        "status 406 UserInBlacklist",
    )
    assert (again.status, again.attempts, again.phone, again.body, again.template) == (
        "queued",
        0,
        original.phone,
        original.body,
        "deposit_received",
    )
    assert again.member_id == original.member_id and again.context == {"resend_of": original.id}
    assert f"sms-{again.id}" in queue("sms").job_ids  # the worker sends it, as any message
    [row] = db.session.scalars(select(AuditLog).where(AuditLog.action == "sms.resend")).all()
    assert row.actor == f"staff:{role.replace('_', '.')}@sacco.test"
    assert row.object_id == str(original.id) and row.after["new_message_id"] == again.id
    # The old message's page now points at the new one, and offers no second resend.
    page = browse(client, f"/admin/smsmessage/details/?id={original.id}").get_data(as_text=True)
    assert (
        f'Sent again as <a href="/admin/smsmessage/details/?id={again.id}">' in page
        and "Resend to" not in page
    )


def test_a_message_is_sent_again_once(app: Flask) -> None:
    failed = failed_receipt()
    client = signed_in(app, "loan_officer")
    resend(client, failed.id)
    reply = resend(client, failed.id)  # a second click, or a second tab
    again = messages()[1]
    assert (
        f"Not sent again: this message was sent again already, as message {again.id}"
        in reply.get_data(as_text=True)
    )
    assert len(messages()) == 2
    assert (
        db.session.scalar(
            select(func.count()).select_from(AuditLog).where(AuditLog.action == "sms.resend")
        )
        == 1
    )


def test_only_a_failed_message_is_sent_again(app: Flask) -> None:
    make_member(savings=Decimal("100"))
    sent = messages()[0]
    assert sent.status == "queued"
    client = signed_in(app, "branch_manager")
    page = browse(client, f"/admin/smsmessage/details/?id={sent.id}").get_data(as_text=True)
    assert "Resend to" not in page
    reply = resend(client, sent.id)
    assert "Not sent again: only a failed message is sent again; this one is queued" in (
        reply.get_data(as_text=True)
    )
    assert len(messages()) == 1


@pytest.mark.parametrize("role", ["compliance", "auditor", "admin"])
def test_roles_that_do_not_message_members_cannot_resend(app: Flask, role: str) -> None:
    failed = failed_receipt()
    client = signed_in(app, role)
    page = browse(client, f"/admin/smsmessage/details/?id={failed.id}")
    assert page.status_code == 200 and "Resend to" not in page.get_data(as_text=True)
    assert resend(client, failed.id).status_code == 403
    assert len(messages()) == 1
    denied = db.session.scalar(select(AuditLog).where(AuditLog.action == "access.denied"))
    assert denied.after["needs"] == "member.message"


def test_a_resend_without_the_csrf_token_sends_nothing(app: Flask) -> None:
    failed = failed_receipt()
    client = signed_in(app, "branch_manager")
    reply = resend(client, failed.id, token=None)
    assert "The form expired" in reply.get_data(as_text=True)
    assert len(messages()) == 1
    assert "sms.resend" not in db.session.scalars(select(AuditLog.action)).all()


def test_a_one_time_code_is_masked_and_never_sent_again(app: Flask) -> None:
    member = make_member()
    message = notify_phone_change_otp(member=member, otp="482913", minutes=10, request_id="r1")
    message.status = "failed"
    db.session.commit()
    client = signed_in(app, "branch_manager")
    for path in ("/admin/smsmessage/", f"/admin/smsmessage/details/?id={message.id}"):
        html = browse(client, path).get_data(as_text=True)
        assert "482913" not in html and "******" in html, path
    page = browse(client, f"/admin/smsmessage/details/?id={message.id}").get_data(as_text=True)
    assert "Not sent again from here: a one-time code is never sent again" in page
    assert "Resend to" not in page
    reply = resend(client, message.id)
    assert "a one-time code is never sent again" in reply.get_data(as_text=True)
    assert len(messages()) == 1


@pytest.mark.parametrize("role", EVERYONE)
def test_every_role_reads_the_outbox_inbound_and_opt_outs(app: Flask, role: str) -> None:
    client = signed_in(app, role)
    for path in ("/admin/smsmessage/", "/admin/smsinbound/", "/admin/optout/"):
        assert browse(client, path).status_code == 200, path


def filter_arg(html: str, group: str, operation: str) -> str:
    import json

    data = re.search(r'id="filter-groups-data" class="d-none">(.*?)</div>', html).group(1)
    groups = json.loads(data.replace("&#34;", '"').replace("&quot;", '"'))
    [found] = [f["arg"] for f in groups[group] if f["operation"] == operation]
    return f"flt0_{found}"


def test_the_outbox_filters_by_status_and_kenyan_day(app: Flask) -> None:
    failed = failed_receipt()
    make_member(savings=Decimal("700"), name="Kiprono Kibet")
    later = messages()[1]
    failed.created_at = datetime(2026, 11, 19, 22, 0, tzinfo=UTC)  # the 20th in Nairobi
    later.created_at = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    db.session.commit()
    client = signed_in(app, "loan_officer")
    html = browse(client, "/admin/smsmessage/").get_data(as_text=True)
    assert "2026-11-20 01:00" in html  # Kenyan time, to the minute

    def listed(arg: str, value: str) -> set[str]:
        page = browse(client, f"/admin/smsmessage/?{arg}={value}").get_data(as_text=True)
        return {amount for amount in ("2,500.00", "700.00") if f"KES {amount}" in page}

    assert listed(filter_arg(html, "Status", "equals"), "failed") == {"2,500.00"}
    assert listed(filter_arg(html, "Queued", "on (Kenyan date)"), "2026-11-20") == {"2,500.00"}
    assert listed(filter_arg(html, "Queued", "from (Kenyan date)"), "2026-11-21") == {"700.00"}


def test_inbound_texts_and_opt_outs_show_the_member(app: Flask) -> None:
    member = make_member(name="Njeri Wambui", phone="0733000222")
    sms_receive(provider_id="ATXid_1", phone="+254733000222", text="STOP please", to="22384")
    sms_receive(provider_id="ATXid_2", phone="+254799000333", text="hello", to="22384")
    sms_opt_out(phone="+254788000444")
    client = signed_in(app, "auditor")

    inbound = browse(client, "/admin/smsinbound/").get_data(as_text=True)
    assert "STOP please" in inbound and "hello" in inbound
    assert f'href="/admin/member/details/?id={member.id}"' in inbound
    assert f"{member.member_no} Njeri Wambui" in inbound
    assert inbound.index("hello") < inbound.index("STOP please")  # newest first

    opt_outs = browse(client, "/admin/optout/").get_data(as_text=True)
    assert "254733000222" in opt_outs and "254788000444" in opt_outs
    assert f"{member.member_no} Njeri Wambui" in opt_outs
    assert "keyword" in opt_outs and "opt-out" in opt_outs
    assert "254799000333" not in opt_outs  # "hello" opts no one out

    # START takes the number off: it stays listed, no longer opted out.
    sms_receive(provider_id="ATXid_3", phone="+254733000222", text="START")
    html = browse(client, "/admin/optout/").get_data(as_text=True)
    arg = filter_arg(html, "Opted out now", "equals")
    now_out = browse(client, f"/admin/optout/?{arg}=1").get_data(as_text=True)
    assert "254788000444" in now_out and "254733000222" not in now_out
