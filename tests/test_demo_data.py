from __future__ import annotations

import re
from decimal import Decimal

from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select

from app.cli.demo import DEMO_PASSWORD, MEMBERS, PRODUCTS
from app.extensions import db
from app.models import (
    Account,
    AuditLog,
    Installment,
    JournalEntry,
    JournalLine,
    Loan,
    LoanProduct,
    Member,
    StaffUser,
)
from app.models.member import STAFF_ROLES
from app.services.ledger import ledger_check
from app.services.staff import staff_authenticate
from tests.helpers import make_app

TABLES = (
    Member,
    Account,
    JournalEntry,
    JournalLine,
    StaffUser,
    LoanProduct,
    Loan,
    Installment,
    AuditLog,
)


def counts() -> dict[str, int]:
    db.session.rollback()  # read what is committed, nothing cached
    return {
        model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
        for model in TABLES
    }


def added_counts(stdout: str) -> dict[str, int]:
    """ "5 staff added, 2 products added, ..." -> {"staff": 5, "products": 2, ...}"""
    pairs = re.findall(r"(\d+) (\w+) added", stdout.splitlines()[0])
    return {what: int(n) for n, what in pairs}


def test_demo_data_loads_a_sacco_and_a_second_run_adds_nothing(
    app: Flask, runner: FlaskCliRunner
) -> None:
    first = runner.invoke(args=["demo-data"])
    assert first.exit_code == 0, first.output
    added = added_counts(first.stdout)
    assert (added["staff"], added["products"], added["members"]) == (
        len(STAFF_ROLES),
        len(PRODUCTS),
        len(MEMBERS),
    )
    after_first = counts()

    second = runner.invoke(args=["demo-data"])

    assert second.exit_code == 0, second.output
    assert set(added_counts(second.stdout)) == set(added)
    assert set(added_counts(second.stdout).values()) == {0}
    assert counts() == after_first
    assert ledger_check() == []
    assert runner.invoke(args=["ledger", "check"]).exit_code == 0


def test_demo_members_hold_the_savings_and_shares_listed(
    app: Flask, runner: FlaskCliRunner
) -> None:
    assert runner.invoke(args=["demo-data"]).exit_code == 0
    db.session.rollback()

    for name, _phone, national_id, _lang, savings, shares in MEMBERS:
        member = db.session.scalars(select(Member).where(Member.national_id == national_id)).one()
        assert member.name == name
        deposit = db.session.scalars(
            select(JournalEntry).where(
                JournalEntry.idempotency_key == f"deposit:DEMO-{member.member_no}"
            )
        ).one()
        assert max(line.amount for line in deposit.lines) == savings + shares
        share_capital = db.session.scalar(
            select(Account.balance).where(Account.code == f"SHR-{member.member_no}")
        )
        assert share_capital == -shares  # credit-normal: stored negative, shown positive
        ordinary = db.session.scalar(
            select(Account.balance).where(Account.code == f"ORD-{member.member_no}")
        )
        assert ordinary == -max(savings // 10, Decimal("500"))  # withdrawable savings too


def test_every_demo_role_can_log_in_with_the_demo_password(
    app: Flask, runner: FlaskCliRunner
) -> None:
    assert runner.invoke(args=["demo-data"]).exit_code == 0

    roles = {
        user.role
        for user in db.session.scalars(select(StaffUser))
        if staff_authenticate(email=user.email, password=DEMO_PASSWORD) is not None
    }
    assert roles == set(STAFF_ROLES)
    assert staff_authenticate(email="admin@sacco.test", password=DEMO_PASSWORD).role == "admin"


def test_demo_data_is_never_loaded_in_production(_urls: dict[str, str]) -> None:
    production = make_app(
        _urls,
        APP_ENV="production",
        DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/never-touched",
        SECRET_KEY="a-real-production-secret",
        CALLBACK_TOKEN="cb7f3e9a21d4",
        CALLBACK_BASE_URL="https://channels.example.co.ke",
        AT_API_KEY="k",
        AT_ALLOWED_IPS="any",
        MPESA_CONSUMER_KEY="k",
        MPESA_CONSUMER_SECRET="s",
        MPESA_PASSKEY="p",
        MPESA_INITIATOR_NAME="i",
        MPESA_SECURITY_CREDENTIAL="c",
    )
    try:
        with production.app_context():
            result = production.test_cli_runner().invoke(args=["demo-data"])
    finally:
        with production.app_context():
            db.engine.dispose()
        production.extensions["redis"].close()

    assert result.exit_code == 1
    assert "demo data is never loaded in production" in result.stderr
    assert result.stdout == ""
