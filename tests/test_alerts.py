"""The dashboard's suspicious-activity alert: each rule against audit rows placed by hand
around its thresholds and its Kenyan-time edges, and the alert on the dashboard with its
links to the audit log, for the roles that see it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

import pytest
from flask import Flask, current_app
from flask.testing import FlaskClient
from sqlalchemy import select, text

from app.extensions import db
from app.models import AuditLog, StaffUser
from app.selectors.alerts import failed_logins, out_of_hours, risky_actions
from tests.helpers import browse as _browse
from tests.helpers import login, staff


def tz() -> tzinfo:
    return current_app.config["SETTINGS"].tz


def kenyan(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment of November 2026 in Kenyan time (21 Nov 2026 is a Saturday)."""
    return datetime(2026, 11, day, hour, minute, tzinfo=tz())


def row(at: datetime, actor: str, action: str, object_id: str = "L000001", **after: str) -> None:
    db.session.add(
        AuditLog(
            at=at.astimezone(UTC),
            actor=actor,
            action=action,
            object_type="loan",
            object_id=object_id,
            after=after or None,
        )
    )


@pytest.fixture
def now(app: Flask) -> datetime:
    return kenyan(21, 12)


def summary(alerts: list) -> list[tuple]:
    return [(a.rule, a.who, a.count) for a in alerts]


# -- failed sign-ins -----------------------------------------------------------------------


def test_five_failed_sign_ins_for_one_email_or_from_one_address_in_24_hours(
    now: datetime,
) -> None:
    for k in range(5):  # five for a@, each from its own address
        row(
            now - timedelta(hours=k),
            "staff:a@sacco.test",
            "staff.login_failed",
            "a@sacco.test",
            address=f"10.0.1.{k}",
            outcome="wrong password",
        )
    for k in range(4):  # four for b@: below the threshold
        row(
            now - timedelta(hours=k),
            "anonymous",
            "staff.login_failed",
            "b@sacco.test",
            address=f"10.0.2.{k}",
        )
    # Five for c@, but one of them 25 hours ago: four in the window.
    for hours in (1, 2, 3, 4, 25):
        row(
            now - timedelta(hours=hours),
            "anonymous",
            "staff.login_failed",
            "c@sacco.test",
            address=f"10.0.3.{hours}",
        )
    # Five emails tried once each, all from one address.
    for k in range(5):
        row(
            now - timedelta(minutes=k),
            "anonymous",
            "staff.login_failed",
            f"d{k}@sacco.test",
            address="10.0.0.9",
        )
    # Successful sign-ins are not failures.
    for k in range(6):
        row(
            now - timedelta(minutes=k),
            "staff:e@sacco.test",
            "staff.login",
            "e@sacco.test",
            address="10.0.0.5",
        )
    db.session.commit()
    assert summary(failed_logins(now=now)) == [
        ("failed_logins_email", "a@sacco.test", 5),
        ("failed_logins_address", "10.0.0.9", 5),
    ]


# -- write-offs and reversals ----------------------------------------------------------------


def test_three_write_off_or_reversal_actions_by_one_person_on_one_kenyan_day(
    now: datetime,
) -> None:
    m = "staff:m@sacco.test"
    row(kenyan(18, 10), m, "loan.write_off")
    row(kenyan(18, 11), m, "write_off.decide")
    row(kenyan(18, 12), m, "loan.penalty_reverse")
    n = "staff:n@sacco.test"  # two one day and one the next: never three in a day
    row(kenyan(18, 10), n, "loan.write_off")
    row(kenyan(18, 11), n, "loan.write_off")
    row(kenyan(19, 9), n, "loan.write_off")
    # 23:30 and 00:30 Kenyan time are the same UTC day (20:30, 21:30) but two Kenyan days.
    p = "staff:p@sacco.test"
    row(kenyan(19, 23, 30), p, "loan.write_off")
    row(kenyan(19, 23, 40), p, "loan.write_off")
    row(kenyan(20, 0, 30), p, "loan.penalty_reverse")
    for k in range(5):  # the system and members are not people at a desk
        row(kenyan(18, 10 + k), "system", "loan.write_off")
        row(kenyan(18, 10 + k), "member:M000001", "loan.penalty_reverse")
    q = "staff:q@sacco.test"  # eight days ago: outside the seven days
    for k in range(3):
        row(kenyan(14, 10 + k), q, "loan.write_off")
    r = "staff:r@sacco.test"  # busy, but not with write-offs or reversals
    for k in range(5):
        row(kenyan(18, 10 + k), r, "loan.approve")
    db.session.commit()
    found = risky_actions(today=now.date(), now=now, tz=tz())
    assert summary(found) == [("risky_actions", m, 3)]
    assert found[0].day == kenyan(18, 0).date() and found[0].actor == m


# -- out of hours -----------------------------------------------------------------------------


def test_staff_actions_before_seven_from_nineteen_or_on_a_sunday(now: datetime) -> None:
    early = "staff:early@sacco.test"
    row(kenyan(19, 6, 59), early, "member.update")  # Thursday, a minute early
    row(kenyan(20, 22, 0), early, "member.update")  # Friday night
    late = "staff:late@sacco.test"
    row(kenyan(18, 19, 0), late, "loan.approve")  # 19:00 is outside
    sunday = "staff:sunday@sacco.test"
    row(kenyan(15, 12, 0), sunday, "loan.approve")  # midday on Sunday 15 Nov
    inside = "staff:inside@sacco.test"
    for moment in (kenyan(16, 7, 0), kenyan(17, 18, 59), kenyan(21, 11, 0)):  # Mon, Tue, Sat
        row(moment, inside, "loan.approve")
    for actor in ("system", "member:M000001", "anonymous"):
        row(kenyan(19, 3, 0), actor, "loan.penalty")
    row(kenyan(14, 3, 0), "staff:old@sacco.test", "loan.approve")  # eight days ago
    db.session.commit()
    found = out_of_hours(today=now.date(), now=now, tz=tz())
    assert summary(found) == [
        ("out_of_hours", early, 2),
        ("out_of_hours", late, 1),
        ("out_of_hours", sunday, 1),
    ]


def test_in_hours_and_system_activity_raises_nothing(now: datetime) -> None:
    for k in range(3):
        row(kenyan(17, 9 + k), "system", "loan.write_off")
        row(kenyan(17, 2 + k), "system", "loan.penalty")
        row(kenyan(17, 9 + k), "staff:calm@sacco.test", "loan.approve")
    db.session.commit()
    assert failed_logins(now=now) == []
    assert risky_actions(today=now.date(), now=now, tz=tz()) == []
    assert out_of_hours(today=now.date(), now=now, tz=tz()) == []


# -- on the dashboard ----------------------------------------------------------------------------


def browse(client: FlaskClient, path: str, **kwargs: object):  # noqa: ANN201
    db.session.commit()
    return _browse(client, path, **kwargs)


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    email = f"{role.replace('_', '.')}@sacco.test"
    if db.session.scalar(select(StaffUser.id).where(StaffUser.email == email)) is None:
        staff(role)
    db.session.commit()
    assert login(client, email).status_code == 302
    return client


@pytest.fixture
def guessed(app: Flask) -> None:
    """Six wrong passwords for x@ in the last hour (real time), one for y@."""
    now = datetime.now(UTC)
    for k in range(6):
        row(
            now - timedelta(minutes=5 + k),
            "anonymous",
            "staff.login_failed",
            "x@sacco.test",
            address=f"10.9.0.{k}",
        )
    row(
        now - timedelta(minutes=5),
        "anonymous",
        "staff.login_failed",
        "y@sacco.test",
        address="10.9.1.1",
    )
    db.session.commit()


LINK = 'class="alert-failed_logins_email"><a href="'


def test_compliance_sees_the_alert_and_its_link_filters_the_audit_log(
    app: Flask, guessed: None
) -> None:
    client = signed_in(app, "compliance")
    page = browse(client, "/admin/").get_data(as_text=True)
    assert 'id="suspicious-activity"' in page
    assert "6 failed sign-ins for x@sacco.test" in page
    url = page.split(LINK)[1].split('"')[0].replace("&amp;", "&")
    assert url.startswith("/admin/auditlog/")
    audit = browse(client, url).get_data(as_text=True)
    assert audit.count("x@sacco.test") >= 6 and "y@sacco.test" not in audit


@pytest.mark.parametrize("role", ["auditor", "admin"])
def test_the_audit_roles_see_the_alert(app: Flask, guessed: None, role: str) -> None:
    page = browse(signed_in(app, role), "/admin/").get_data(as_text=True)
    assert LINK in page


def test_a_branch_manager_sees_the_alert_without_the_audit_link(app: Flask, guessed: None) -> None:
    page = browse(signed_in(app, "branch_manager"), "/admin/").get_data(as_text=True)
    assert "6 failed sign-ins for x@sacco.test" in page
    assert LINK not in page  # the audit log would answer 403


def test_a_loan_officer_sees_no_alert(app: Flask, guessed: None) -> None:
    page = browse(signed_in(app, "loan_officer"), "/admin/").get_data(as_text=True)
    assert "suspicious-activity" not in page and "x@sacco.test" not in page


def test_with_nothing_suspicious_the_dashboard_says_so(app: Flask) -> None:
    # The viewer's own sign-in is the only row; at night it is out of hours, so it is
    # dropped here to keep the check independent of the clock.
    client = signed_in(app, "auditor")
    # TRUNCATE, not DELETE: on PostgreSQL the audit log refuses row deletes (append-only).
    statement = (
        "TRUNCATE audit_log"
        if db.engine.dialect.name == "postgresql"
        else ("DELETE FROM audit_log")
    )
    db.session.execute(text(statement))
    db.session.commit()
    page = browse(client, "/admin/").get_data(as_text=True)
    assert "No suspicious activity in the audit log." in page
