from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import func, select

from app.extensions import db
from app.models import Account, AuditLog, JournalEntry, Member
from app.services.ledger import gl_account, member_account
from app.services.members import MemberError, member_add, member_buy_shares, member_deposit
from tests.factories import make_member

DAY = date(2026, 3, 2)


def counts() -> dict[str, int]:
    return {
        model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
        for model in (Member, Account, AuditLog, JournalEntry)
    }


def test_member_add_normalises_and_opens_savings_and_share_accounts(app: Flask) -> None:
    member = member_add(
        name="  Wanjiku   Kamau ",
        phone="0712 345 678",
        national_id=" 23456789 ",
        language="sw",
        actor="cli",
    )

    assert member.member_no == f"M{member.id:06d}"
    assert member.name == "Wanjiku Kamau"
    assert member.phone == "254712345678"
    assert member.national_id == "23456789"
    assert member.language == "sw"
    assert member.status == "active"
    accounts = db.session.scalars(
        select(Account).where(Account.member_id == member.id).order_by(Account.code)
    ).all()
    assert [(a.code, a.kind, a.balance) for a in accounts] == [
        (f"SAV-{member.member_no}", "savings", Decimal("0.00")),
        (f"SHR-{member.member_no}", "share_capital", Decimal("0.00")),
    ]
    audit = db.session.scalars(select(AuditLog).where(AuditLog.action == "member.add")).one()
    assert audit.actor == "cli"
    assert audit.object_id == member.member_no
    assert audit.after == {
        "name": "Wanjiku Kamau",
        "phone": "254712345678",
        "national_id": "23456789",
    }


def test_national_id_is_optional(app: Flask) -> None:
    member = member_add(name="No Id", phone="0110223344")
    assert member.national_id is None
    # Two members without an id do not clash with each other.
    assert member_add(name="No Id Either", phone="0110223345").national_id is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "   "}, "name is required"),
        ({"name": "x" * 121}, "name is required"),
        ({"phone": "0812345678"}, "not a Kenyan mobile number"),
        ({"phone": ""}, "not a Kenyan mobile number"),
        ({"national_id": "12-34"}, "national id must be letters and digits"),
        ({"national_id": "1" * 21}, "national id must be letters and digits"),
        ({"language": "fr"}, "language must be en or sw"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    app: Flask, kwargs: dict[str, str], message: str
) -> None:
    before = counts()
    args = {"name": "Jane Doe", "phone": "0712345678", "national_id": "11112222", **kwargs}

    with pytest.raises(MemberError, match=message):
        member_add(**args)
    db.session.commit()

    assert counts() == before


@pytest.mark.parametrize(
    ("phone", "national_id", "field"),
    [
        ("+254 711 223 344", "99999999", "phone"),  # same number, written differently
        ("0799000000", "23456789", "national id"),
    ],
)
def test_a_second_member_with_the_same_phone_or_national_id_is_refused(
    app: Flask, phone: str, national_id: str, field: str
) -> None:
    member_add(name="First", phone="0711223344", national_id="23456789")
    before = counts()

    with pytest.raises(MemberError, match=f"a member with this {field} exists already"):
        member_add(name="Second", phone=phone, national_id=national_id)
    db.session.commit()

    assert counts() == before
    assert db.session.scalars(select(Member.name)).all() == ["First"]


def test_commit_false_leaves_the_caller_to_commit_or_roll_back(app: Flask) -> None:
    before = counts()
    member_add(name="Pending", phone="0700111222", commit=False)
    db.session.rollback()

    assert counts() == before


@pytest.mark.parametrize("amount", [0, "-5", "abc", "NaN"])
def test_deposit_of_nothing_or_not_an_amount_is_refused(app: Flask, amount: object) -> None:
    member = make_member()
    with pytest.raises(MemberError):
        member_deposit(member_id=member.id, amount=amount, reference="R1", value_date=DAY)
    with pytest.raises(MemberError):
        member_buy_shares(member_id=member.id, amount=amount, reference="R1", value_date=DAY)


def test_postings_for_an_unknown_member_are_refused(app: Flask) -> None:
    with pytest.raises(MemberError, match="no member 424242"):
        member_deposit(member_id=424242, amount=10, reference="R1", value_date=DAY)
    with pytest.raises(MemberError, match="no member 424242"):
        member_buy_shares(member_id=424242, amount=10, reference="R1", value_date=DAY)
    assert db.session.scalar(select(func.count()).select_from(JournalEntry)) == 0


def test_shares_bought_with_fresh_mpesa_money_leave_savings_alone(app: Flask) -> None:
    member = make_member(savings=300)

    entry_id = member_buy_shares(
        member_id=member.id, amount=1000, reference="QK1", value_date=DAY, from_savings=False
    )

    entry = db.session.get(JournalEntry, entry_id)
    assert entry.kind == "share_purchase" and entry.idempotency_key == "shares:QK1"
    db.session.expire_all()
    assert member_account(member, "savings").display_balance == Decimal(300)
    assert member_account(member, "share_capital").display_balance == Decimal(1000)
    assert gl_account("GL-MPESA-CLEARING").display_balance == Decimal(1300)


def test_the_same_person_registered_from_several_threads_is_one_member(app: Flask) -> None:
    """Both may pass the friendly clash check; the unique constraint still lets one through."""
    threads = 6
    barrier = threading.Barrier(threads)
    db.session.commit()  # on SQLite an open read would hold the write lock

    def register(i: int) -> object:
        with app.app_context():
            barrier.wait(timeout=30)
            try:
                return member_add(name=f"Twin {i}", phone="0700555666", national_id=f"5550{i}").id
            except MemberError as exc:
                return exc

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(register, range(threads)))

    assert len([r for r in results if isinstance(r, int)]) == 1
    assert all("exists already" in str(r) for r in results if not isinstance(r, int))
    assert counts() == {"members": 1, "accounts": 2, "audit_log": 1, "journal_entries": 0}
