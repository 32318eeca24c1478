from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select

from app.extensions import db
from app.models import Account, AuditLog, Member, StaffUser
from app.services.staff import StaffError, staff_authenticate


def counts() -> dict[str, int]:
    return {
        model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
        for model in (Member, Account, AuditLog, StaffUser)
    }


def assert_one_error_line(result, before: dict[str, int]) -> str:  # noqa: ANN001
    """Exit 1, one line on stderr starting "error:", nothing on stdout, nothing written."""
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    db.session.rollback()
    assert counts() == before
    return lines[0]


def member_add(runner: FlaskCliRunner, *args: str):  # noqa: ANN201
    return runner.invoke(args=["member", "add", *args])


def test_member_add_prints_the_member_number_alone_on_the_last_line(
    app: Flask, runner: FlaskCliRunner
) -> None:
    result = member_add(
        runner, "--name", "Akinyi Atieno", "--phone", "0733 445 566", "--national-id", "25678901"
    )

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    last = result.stdout.splitlines()[-1]
    member = db.session.scalars(select(Member)).one()
    assert last == member.member_no
    assert last == f"M{member.id:06d}"
    assert member.phone == "254733445566"
    assert member.national_id == "25678901"
    assert db.session.scalar(select(func.count()).where(Account.member_id == member.id)) == 2
    audit = db.session.scalars(select(AuditLog).order_by(AuditLog.id)).all()
    assert [(a.action, a.actor, a.object_id) for a in audit] == [
        ("member.add", "cli", last),
        ("member.activation_code", "cli", last),  # the code itself is never recorded
    ]


def test_member_add_without_a_national_id(app: Flask, runner: FlaskCliRunner) -> None:
    result = member_add(runner, "--name", "Chebet", "--phone", "+254744556677", "--language", "sw")

    assert result.exit_code == 0, result.output
    member = db.session.scalars(select(Member)).one()
    assert result.stdout.splitlines()[-1] == member.member_no
    assert (member.national_id, member.language) == (None, "sw")


def test_a_malformed_phone_is_one_error_line_and_writes_nothing(
    app: Flask, runner: FlaskCliRunner
) -> None:
    before = counts()

    line = assert_one_error_line(member_add(runner, "--name", "X", "--phone", "0812345678"), before)

    assert "0812345678" in line


def test_a_duplicate_phone_is_one_error_line_and_writes_nothing(
    app: Flask, runner: FlaskCliRunner
) -> None:
    first = member_add(runner, "--name", "First", "--phone", "0711223344", "--national-id", "1")
    assert first.exit_code == 0, first.output
    before = counts()

    line = assert_one_error_line(
        member_add(runner, "--name", "Second", "--phone", "254711223344", "--national-id", "2"),
        before,
    )

    assert "phone exists already" in line
    assert first.stdout.splitlines()[-1] in line  # names the member who has it


def test_a_duplicate_national_id_is_one_error_line_and_writes_nothing(
    app: Flask, runner: FlaskCliRunner
) -> None:
    first = member_add(runner, "--name", "First", "--phone", "0711223344", "--national-id", "777")
    assert first.exit_code == 0, first.output
    before = counts()

    line = assert_one_error_line(
        member_add(runner, "--name", "Second", "--phone", "0722334455", "--national-id", "777"),
        before,
    )

    assert "national id exists already" in line


def test_staff_add_with_password_creates_a_login(app: Flask, runner: FlaskCliRunner) -> None:
    password = "correct horse battery"

    result = runner.invoke(
        args=[
            "staff",
            "add",
            "--email",
            "Ops@Sacco.Test",
            "--role",
            "loan_officer",
            "--password",
            password,
        ]
    )

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "Added ops@sacco.test as loan_officer"
    assert password not in result.output
    user = db.session.scalars(select(StaffUser)).one()
    assert user.role == "loan_officer" and user.email == "ops@sacco.test"
    assert password not in user.password_hash
    assert staff_authenticate(email="ops@sacco.test", password=password) == user
    with pytest.raises(StaffError, match="Wrong email or password"):
        staff_authenticate(email="ops@sacco.test", password=password + "x")


def test_staff_add_reads_the_password_from_the_prompt(app: Flask, runner: FlaskCliRunner) -> None:
    result = runner.invoke(
        args=["staff", "add", "--email", "audit@sacco.test", "--role", "auditor"],
        input="prompted-password\nprompted-password\n",
    )

    assert result.exit_code == 0, result.output
    assert "prompted-password" not in result.output  # hidden input is not echoed
    assert staff_authenticate(email="audit@sacco.test", password="prompted-password") is not None


def test_staff_add_refuses_a_short_password(app: Flask, runner: FlaskCliRunner) -> None:
    before = counts()

    line = assert_one_error_line(
        runner.invoke(
            args=[
                "staff",
                "add",
                "--email",
                "a@sacco.test",
                "--role",
                "admin",
                "--password",
                "short",
            ]
        ),
        before,
    )

    assert "at least 10 characters" in line


def test_staff_add_refuses_a_bad_email_and_a_second_login_with_the_same_email(
    app: Flask, runner: FlaskCliRunner
) -> None:
    args = ["staff", "add", "--role", "admin", "--password", "long-enough-pw"]
    before = counts()
    assert "not an email address" in assert_one_error_line(
        runner.invoke(args=[*args, "--email", "not-an-email"]), before
    )

    assert runner.invoke(args=[*args, "--email", "a@sacco.test"]).exit_code == 0
    before = counts()
    assert "exists already" in assert_one_error_line(
        runner.invoke(args=[*args, "--email", "A@sacco.test"]), before
    )


def test_staff_add_refuses_an_unknown_role(app: Flask, runner: FlaskCliRunner) -> None:
    before = counts()

    result = runner.invoke(
        args=[
            "staff",
            "add",
            "--email",
            "a@sacco.test",
            "--role",
            "cashier",
            "--password",
            "long-enough-pw",
        ]
    )

    assert result.exit_code == 2  # click's usage error, before anything runs
    assert "Invalid value for '--role'" in result.stderr
    assert "loan_officer" in result.stderr  # lists the roles that exist
    assert counts() == before
