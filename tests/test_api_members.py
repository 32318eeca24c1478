"""Members through /api/v1, over HTTP: registering one with its KYC fields through the
console's service (member number, deposits and share accounts, audit with the client),
refusals as problems with nothing written, Idempotency-Key retries, and what the member
GET says of their standing (status, USSD PIN set or locked)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import Account, AuditLog, Member
from app.models.types import utcnow
from app.services.api_clients import api_client_register
from app.services.members import member_set_pin
from tests.factories import make_member
from tests.loan_factories import make_staff

API = "/api/v1"
_keys = itertools.count(1)
KYC = {"name": "Wanjiru  Kamau", "phone": "0722 000 111", "national_id": "29876543"}


def bearer(client: FlaskClient, *scopes: str) -> dict[str, str]:
    reg = api_client_register(name="Website", scopes=list(scopes), staff=make_staff("admin"))
    reply = client.post(
        f"{API}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(reg.client.client_id, reg.secret),
    )
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return {"Authorization": f"Bearer {reply.json['access_token']}"}


def register(
    client: FlaskClient, body: dict, headers: dict[str, str], idem: str | None = None
) -> Any:
    key = idem or f"member-{next(_keys)}"
    return client.post(f"{API}/members", json=body, headers={**headers, "Idempotency-Key": key})


def members() -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(Member)) or 0


def test_a_member_is_registered_with_accounts_and_an_audit_row_naming_the_client(
    client: FlaskClient, app: Flask
) -> None:
    headers = bearer(client, "members:write", "members:read")
    reply = register(client, {**KYC, "language": "sw"}, headers)
    assert reply.status_code == 201, reply.get_data(as_text=True)
    body = reply.json
    assert body["member_no"].startswith("M") and len(body["member_no"]) == 7
    assert reply.headers["Location"] == f"{API}/members/{body['member_no']}"
    assert (body["name"], body["phone"], body["language"]) == (
        "Wanjiru Kamau",
        "254722000111",
        "sw",
    )
    assert (body["status"], body["pin_set"], body["pin_locked_until"]) == ("active", False, None)
    assert (body["deposits"], body["share_capital"], body["loans_owed"]) == ("0.00", "0.00", "0.00")
    member = db.session.scalar(select(Member).where(Member.member_no == body["member_no"]))
    assert member.national_id == "29876543"
    codes = set(db.session.scalars(select(Account.code).where(Account.member_id == member.id)))
    assert {f"SAV-{member.member_no}", f"SHR-{member.member_no}"} <= codes
    added = db.session.scalar(select(AuditLog).where(AuditLog.action == "member.add"))
    assert added.actor.startswith("api:sacco_") and added.object_id == member.member_no
    # The GET says the same.
    got = client.get(reply.headers["Location"], headers=headers)
    assert got.get_data() == reply.get_data()


def test_a_retry_with_the_same_key_registers_once_and_another_body_is_refused(
    client: FlaskClient,
) -> None:
    headers = bearer(client, "members:write")
    first = register(client, KYC, headers, idem="signup-42")
    again = register(client, KYC, headers, idem="signup-42")
    assert first.status_code == again.status_code == 201
    assert again.get_data() == first.get_data() and again.headers["Idempotent-Replayed"] == "true"
    other = register(client, {**KYC, "name": "Someone Else"}, headers, idem="signup-42")
    assert (other.status_code, other.json["code"]) == (422, "idempotency_key_reused")
    assert members() == 1


@pytest.mark.parametrize(
    ("change", "code", "why"),
    [
        ({"phone": "0722000111"}, "member_refused", "phone exists already"),
        ({"phone": "0799999999", "national_id": "29876543"}, "member_refused", "national id"),
        ({"phone": "12345"}, "invalid", "Length"),
        ({"phone": "0800000000x"}, "member_refused", ""),
        ({"national_id": "29-876"}, "member_refused", "letters and digits"),
        ({"name": "   "}, "member_refused", "name is required"),
        ({"name": "x" * 121}, "invalid", "Length"),
        ({"language": "fr"}, "invalid", "Must be one of"),
        ({"extra": "field"}, "invalid", "Unknown field"),
    ],
)
def test_a_registration_the_rules_refuse_is_a_422_and_nothing_is_written(
    client: FlaskClient, change: dict, code: str, why: str
) -> None:
    make_member(phone="0722000111", national_id="29876543")
    before = members()
    headers = bearer(client, "members:write")
    body = {**KYC, "phone": "0733000222", "national_id": "11112222", **change}
    reply = register(client, body, headers)
    assert (reply.status_code, reply.json["code"]) == (422, code), reply.json
    assert why in (reply.json["detail"] + str(reply.json.get("errors", "")))
    assert members() == before


def test_register_needs_members_write(client: FlaskClient) -> None:
    nobody = client.post(f"{API}/members", json=KYC, headers={"Idempotency-Key": "a"})
    assert (nobody.status_code, nobody.json["code"]) == (401, "unauthorized")
    reader = register(client, KYC, bearer(client, "members:read", "payments:write"))
    assert (reader.status_code, reader.json["code"]) == (403, "insufficient_scope")
    missing_key = client.post(f"{API}/members", json=KYC, headers=bearer(client, "members:write"))
    assert (missing_key.status_code, missing_key.json["code"]) == (400, "idempotency_key_required")
    assert members() == 0


def test_the_member_get_says_whether_the_ussd_pin_is_set_or_locked(client: FlaskClient) -> None:
    member = make_member(phone="0711000333")
    member_no, member_id = member.member_no, member.id
    headers = bearer(client, "members:read")
    url = f"{API}/members/{member_no}"
    assert client.get(url, headers=headers).json["pin_set"] is False
    member_set_pin(member_id=member_id, pin="4826")
    status = client.get(url, headers=headers).json
    assert (status["pin_set"], status["pin_locked_until"], status["status"]) == (
        True,
        None,
        "active",
    )
    locked = db.session.get(Member, member_id)
    locked.locked_until = utcnow() + timedelta(minutes=30)
    locked.status = "suspended"
    db.session.commit()
    status = client.get(url, headers=headers).json
    assert status["pin_locked_until"] is not None and status["status"] == "suspended"
    by_phone = client.get(
        f"{API}/members/lookup", query_string={"phone": "0711000333"}, headers=headers
    )
    assert by_phone.json == status
    # A lock that has run out is no lock.
    locked = db.session.get(Member, member_id)
    locked.locked_until = utcnow() - timedelta(minutes=1)
    db.session.commit()
    assert client.get(url, headers=headers).json["pin_locked_until"] is None
