from __future__ import annotations

import json
import os
import socket
from datetime import date

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import text

from app.extensions import db, redis_client
from tests.factories import make_member
from tests.helpers import make_app

LOCK = "sacco:lock:job:ledger-check"
RUN_LINE_FIELDS = {
    "ts",
    "level",
    "job",
    "run_id",
    "as_of_date",
    "status",
    "duration_ms",
    "records_scanned",
    "records_updated",
    "notifications_sent",
    "notifications_failed",
    "errors_count",
    "host",
    "pid",
}


def run_line(result) -> dict[str, object]:  # noqa: ANN001
    """The run's one JSON line: it must be the only thing on stdout."""
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.output
    return json.loads(lines[0])


def tamper_a_balance() -> None:
    member = make_member(savings=100)
    db.session.execute(
        text("UPDATE accounts SET balance = balance + 1 WHERE code = :c"),
        {"c": f"SAV-{member.member_no}"},
    )
    db.session.commit()


def test_a_clean_run_prints_one_json_line_with_every_field_and_exits_0(
    app: Flask, runner: FlaskCliRunner
) -> None:
    make_member(savings=100)

    result = runner.invoke(args=["jobs", "run", "ledger-check", "--as-of-date", "2026-03-31"])

    assert result.exit_code == 0, result.output
    line = run_line(result)
    assert set(line) == RUN_LINE_FIELDS
    assert line["job"] == "ledger-check"
    assert line["status"] == "success"
    assert line["level"] == "info"
    assert line["as_of_date"] == "2026-03-31"
    assert line["errors_count"] == 0
    assert line["records_scanned"] == 1
    assert line["records_updated"] == 0
    assert line["notifications_sent"] == line["notifications_failed"] == 0
    assert isinstance(line["duration_ms"], int) and line["duration_ms"] >= 0
    assert isinstance(line["run_id"], str) and len(line["run_id"]) == 12
    assert line["host"] == socket.gethostname()
    assert line["pid"] == os.getpid()
    assert isinstance(line["ts"], str) and line["ts"].endswith("+00:00")
    assert redis_client().get(LOCK) is None  # released after the run


def test_without_as_of_date_the_run_is_for_a_real_calendar_day(
    app: Flask, runner: FlaskCliRunner
) -> None:
    result = runner.invoke(args=["jobs", "run", "ledger-check"])

    assert result.exit_code == 0, result.output
    assert isinstance(date.fromisoformat(run_line(result)["as_of_date"]), date)


def test_each_run_has_its_own_id(app: Flask, runner: FlaskCliRunner) -> None:
    ids = {
        run_line(runner.invoke(args=["jobs", "run", "ledger-check"]))["run_id"] for _ in range(3)
    }
    assert len(ids) == 3


def test_a_run_while_another_holds_the_lock_is_skipped_with_exit_0(
    app: Flask, runner: FlaskCliRunner
) -> None:
    redis_client().set(LOCK, "other-scheduler-run", ex=60)

    result = runner.invoke(args=["jobs", "run", "ledger-check", "--as-of-date", "2026-03-31"])

    assert result.exit_code == 0, result.output
    line = run_line(result)
    assert line["status"] == "skipped"
    assert line["records_scanned"] == 0
    assert line["errors_count"] == 0
    assert redis_client().get(LOCK) == b"other-scheduler-run"  # someone else's lock: left alone


@pytest.mark.books_may_disagree
def test_a_tampered_balance_makes_the_run_partial_with_exit_2(
    app: Flask, runner: FlaskCliRunner
) -> None:
    tamper_a_balance()

    result = runner.invoke(args=["jobs", "run", "ledger-check", "--as-of-date", "2026-03-31"])

    assert result.exit_code == 2, result.output
    line = run_line(result)
    assert line["status"] == "partial"
    assert line["level"] == "warning"
    assert line["errors_count"] == 1
    assert redis_client().get(LOCK) is None


def test_no_lock_means_no_run_and_exit_1(
    app: Flask, _urls: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # `app`: the schema is there, so the lock is the only thing that can fail.
    broken = make_app(_urls, REDIS_URL="redis://127.0.0.1:1/0")
    try:
        with broken.app_context():
            result = broken.test_cli_runner().invoke(args=["jobs", "run", "ledger-check"])
    finally:
        with broken.app_context():
            db.engine.dispose()
        broken.extensions["redis"].close()

    assert result.exit_code == 1, result.output
    line = run_line(result)
    assert line["status"] == "fatal"
    assert line["level"] == "error"
    assert line["errors_count"] == 1
    assert "job ledger-check did not run: lock: ConnectionError" in caplog.text


DATABASE_DOWN = "postgresql+psycopg://nobody@127.0.0.1:1/none"


def run_with_the_database_down(_urls: dict[str, str], *args: str):  # noqa: ANN201
    broken = make_app(_urls, DATABASE_URL=DATABASE_DOWN)
    try:
        with broken.app_context():
            return broken.test_cli_runner().invoke(args=["jobs", "run", "ledger-check", *args])
    finally:
        with broken.app_context():
            db.engine.dispose()
        broken.extensions["redis"].close()


def test_with_the_database_down_a_run_is_one_fatal_line_and_exit_1(
    app: Flask, _urls: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    result = run_with_the_database_down(_urls)

    assert result.exit_code == 1, result.output
    line = run_line(result)
    assert (line["status"], line["level"], line["errors_count"]) == ("fatal", "error", 1)
    assert redis_client().get(LOCK) is None  # refused before the lock was taken
    # The operator is told why; the database's address stays out of the log.
    assert "job ledger-check did not run: books: OperationalError" in caplog.text
    assert "nobody" not in caplog.text


def test_a_replayed_day_with_the_database_down_is_one_error_line_and_exit_1(
    app: Flask, _urls: dict[str, str]
) -> None:
    result = run_with_the_database_down(_urls, "--as-of-date", "2026-03-31")

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the books cannot be read")
    assert redis_client().get(LOCK) is None


def test_a_malformed_as_of_date_is_one_error_line_and_exit_1(
    app: Flask, runner: FlaskCliRunner
) -> None:
    result = runner.invoke(args=["jobs", "run", "ledger-check", "--as-of-date", "31/03/2026"])

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "YYYY-MM-DD" in lines[0]
    assert redis_client().get(LOCK) is None  # nothing ran


def test_an_impossible_date_is_refused_too(app: Flask, runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["jobs", "run", "ledger-check", "--as-of-date", "2026-02-30"])

    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")


def test_an_unknown_job_is_one_error_line_naming_the_known_jobs_and_exit_1(
    app: Flask, runner: FlaskCliRunner
) -> None:
    result = runner.invoke(args=["jobs", "run", "no-such-job"])

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no job 'no-such-job'")
    assert "ledger-check" in lines[0]


def test_jobs_list_names_the_jobs(app: Flask, runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["jobs", "list"])

    assert result.exit_code == 0
    assert any(line.startswith("ledger-check ") for line in result.stdout.splitlines())
