"""What a USSD hop costs the database (issue 18): the statements each common hop sends, and
a dead pooled connection that must not cost a member the hop.

The counts are a behaviour guard, not a timing: a change that reads the schedule once per
loan again, or the whole member row on every dial, fails here."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select
from sqlalchemy.engine import make_url

from app.extensions import db
from app.models import Member
from app.money import shillings_up
from app.selectors.loans import current_installments, loan_debt
from app.services.members import member_set_pin
from tests.factories import make_member
from tests.helpers import Phone
from tests.loan_factories import JOINED, make_loan, make_product

# The most statements each hop may send (BEGIN aside: SQLite's is a statement, PostgreSQL's
# is not sent at all for these reads).
FIRST_HOP = 1  # the member by phone
BALANCE_HOP = 2  # the balances; the live loans with their unpaid installments
MENU_HOP = 1  # back to the main menu: is any loan late (option 6)?


@pytest.fixture
def member(app: Flask) -> Member:
    m = make_member(phone="0711223344", savings=2500, name="Wanjiku Achieng")
    m.created_at = JOINED
    db.session.commit()
    member_set_pin(member_id=m.id, pin="4826")
    return m


class Statements:
    """Every statement the app's engine sends while counting, BEGINs left out."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if not statement.lstrip().upper().startswith("BEGIN"):
            self.sent.append(statement)


@pytest.fixture
def statements(app: Flask) -> Iterator[Statements]:
    counter = Statements()
    event.listen(db.engine, "before_cursor_execute", counter)
    try:
        yield counter
    finally:
        event.remove(db.engine, "before_cursor_execute", counter)


def hop(phone: Phone, statements: Statements, entry: str | None) -> tuple[str, list[str]]:
    """One hop as production runs it, on a session of its own (a request's session ends
    with the request; the tests' app context would otherwise keep one across hops)."""
    db.session.remove()
    statements.sent.clear()
    reply = phone.dial() if entry is None else phone.press(entry)
    return reply, list(statements.sent)


def test_first_hop_is_one_statement_of_the_columns_it_needs(
    client: FlaskClient, member: Member, statements: Statements
) -> None:
    reply, sent = hop(Phone(client), statements, None)
    assert reply == "CON SACCO: enter your PIN:\n9. Forgot PIN"
    assert len(sent) <= FIRST_HOP, sent
    # Not the PIN hash, the name or the ID number: only what picks the door.
    assert "members.national_id" not in sent[0] and "members.name" not in sent[0]


def test_balance_hop_with_three_loans_is_two_statements_and_shows_each_loan(
    client: FlaskClient, member: Member, statements: Statements
) -> None:
    product = make_product("V1", limit_multiple=Decimal("20"))
    loans = [
        (loan.id, loan.loan_no)
        for loan in (
            make_loan(product=product, amount=1000, on=date(2026, 11, 1), member=member)
            for _ in range(3)
        )
    ]
    phone = Phone(client)
    hop(phone, statements, None)
    main, _ = hop(phone, statements, "4826")
    assert main.startswith("CON 1. Check Balance")
    screen, sent = hop(phone, statements, "1")
    assert len(sent) <= BALANCE_HOP, sent
    assert "Deposits KES 2,500.00" in screen and "98 More" in screen
    for loan_id, loan_no in loans[:2]:  # two a page; each with all it owes, as paid
        assert _expected_line(loan_id, loan_no) in screen, screen
    second, sent = hop(phone, statements, "98")
    assert len(sent) <= BALANCE_HOP, sent  # the handler counts the loans, the page shows them
    assert loans[2][1] in second and "Deposits" not in second
    back, sent = hop(phone, statements, "00")
    assert back.startswith("CON 1. Check Balance") and len(sent) <= MENU_HOP, sent


def _expected_line(loan_id: int, loan_no: str) -> str:
    """The balance line from the schedule as the services read it (the oracle): all owed;
    the arrears and their oldest date, else the next installment and its date."""
    from app.clock import business_today

    today = business_today()
    unpaid = [r for r in current_installments(loan_id) if r.outstanding > 0]
    owed = f"KES {shillings_up(loan_debt(loan_id=loan_id).total):,.0f}"
    late = [r for r in unpaid if r.due_date <= today]
    due = sum((r.outstanding for r in late), Decimal(0)) if late else unpaid[0].outstanding
    when = (late or unpaid)[0].due_date
    words = "{due} overdue since {date}" if when < today else "pay {due} by {date}"
    return f"{loan_no}: {owed}, " + words.format(
        due=f"KES {shillings_up(due):,.0f}", date=f"{when:%d/%m}"
    )


def test_a_late_loan_still_offers_a_promise_on_the_cheaper_main_menu(
    client: FlaskClient, member: Member, statements: Statements
) -> None:
    from app.clock import business_today
    from app.services.loans import loan_update_arrears

    loan = make_loan(product=make_product("V1"), amount=5000, on=date(2026, 6, 1), member=member)
    loan_id, loan_no = loan.id, loan.loan_no
    loan_update_arrears(loan_id=loan_id, as_of=business_today())
    phone = Phone(client)
    hop(phone, statements, None)
    main, _ = hop(phone, statements, "4826")
    assert "6." in main
    screen, sent = hop(phone, statements, "1")
    assert len(sent) <= BALANCE_HOP and f"{loan_no}: KES" in screen and "overdue" in screen


def _kill_app_connections(app: Flask) -> int:
    """Terminate, from a connection of our own, every other backend on the test database:
    the pooled connections the next hop would take."""
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"]).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        ).fetchall()
    return len(rows)


@pytest.mark.parametrize("killed_before", ["dial", "pin", "balance"])
def test_a_dead_pooled_connection_does_not_cost_the_member_the_hop(
    app: Flask,
    client: FlaskClient,
    member: Member,
    caplog: pytest.LogCaptureFixture,
    killed_before: str,
) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no server to drop a connection")
    member_id = member.id
    phone = Phone(client)
    steps = [("dial", None, "PIN"), ("pin", "4826", "1. Check Balance"), ("balance", "1", "Dep")]
    for name, entry, shows in steps:
        if name == killed_before:
            # Warm first, so the pool holds connections, then kill them all between hops.
            db.session.execute(select(Member.id)).all()
            db.session.remove()
            assert _kill_app_connections(app) >= 1
            caplog.clear()
        db.session.remove()
        with caplog.at_level(logging.WARNING, logger="app.ussd"):
            reply = phone.dial() if entry is None else phone.press(entry)
        assert reply.startswith("CON ") and shows in reply, reply
    assert "trying once more" in caplog.text  # the retry answered it, not luck
    assert "ussd hop failed" not in caplog.text
    # And the member's state is what one PIN check leaves: no wrong try counted.
    db.session.remove()
    assert db.session.get(Member, member_id).failed_pin_count == 0
