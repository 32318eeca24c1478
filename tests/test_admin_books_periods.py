"""The Books pages a browser sends to: Periods (close, reopen with a reason, history),
Chart of accounts (balances today, add and remove a line) and Journal entry (a general
entry or a correction). Roles are checked (403 in words), every form carries the CSRF
token, and a refusal is shown in words with nothing changed."""

from __future__ import annotations

import html
import re
from datetime import date
from decimal import Decimal

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditLog, ChartAccount, JournalEntry, PeriodEvent
from app.services.books import journal_manual
from app.services.ledger import books_closed_through, gl_account
from app.services.members import member_deposit
from tests.factories import make_member
from tests.helpers import browse as _browse
from tests.helpers import login, post_form, staff
from tests.loan_factories import make_staff

D = Decimal
PERIODS, CHART, JOURNAL = "/admin/books/periods/", "/admin/books/chart/", "/admin/books/journal/"


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's read transaction would hold the write lock
    return _browse(client, path, method, **kwargs)


def post(client: FlaskClient, path: str, data: dict[str, object]):  # noqa: ANN201
    db.session.commit()
    return post_form(client, path, data)


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    db.session.commit()
    login(client, staff(role))
    return client


def page(client: FlaskClient, path: str) -> str:
    return html.unescape(browse(client, path).get_data(as_text=True))


def entries() -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(JournalEntry)) or 0


def row_of(text: str, row_id: str) -> str:
    found = re.search(rf'<tr id="{re.escape(row_id)}"[^>]*>(.*?)</tr>', text, re.S)
    assert found, f"no row {row_id}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()


# -- periods ------------------------------------------------------------------------------


def test_a_branch_manager_closes_the_next_month_and_an_admin_reopens_it_with_a_reason(
    app: Flask,
) -> None:
    member = make_member(savings=500)  # dated 1 January 2026: the first month to close
    member_id = member.id
    manager = signed_in(app, "branch_manager")

    text = page(manager, PERIODS)
    assert "nothing closed yet" in text and "Close January 2026" in text
    assert 'id="reopen-period"' not in text  # reopening is the admin's

    reply = post(manager, f"{PERIODS}close", {"month": "2026-01"})
    assert reply.status_code == 302
    text = page(manager, PERIODS)
    assert "January 2026 is closed." in text
    assert "31 January 2026" in text and "Close February 2026" in text
    assert "Closed" in row_of(text, f"event-{db.session.scalar(select(PeriodEvent.id))}")
    assert books_closed_through() == date(2026, 1, 31)

    # A month out of order is refused in words; nothing moves.
    post(manager, f"{PERIODS}close", {"month": "2026-03"})
    assert "Not done: close February 2026 first: months close in order." in page(manager, PERIODS)
    assert books_closed_through() == date(2026, 1, 31)
    # The branch manager may not reopen: 403, in words.
    refused = post(manager, f"{PERIODS}reopen", {"month": "2026-01", "reason": "a late slip"})
    assert refused.status_code == 403 and "reopen closed periods" in refused.get_data(as_text=True)

    admin = signed_in(app, "admin")
    assert 'id="reopen-period"' in page(admin, PERIODS)
    post(admin, f"{PERIODS}reopen", {"month": "2026-01", "reason": ""})
    assert "Not done: say why the period reopens" in page(admin, PERIODS)
    assert books_closed_through() == date(2026, 1, 31)

    post(admin, f"{PERIODS}reopen", {"month": "2026-01", "reason": "bank slip of 30 January"})
    text = page(admin, PERIODS)
    assert "January 2026 is open again" in text and "nothing closed yet" not in text
    assert books_closed_through() == date(2025, 12, 31)
    reopened = db.session.scalars(select(PeriodEvent).where(PeriodEvent.action == "reopen")).one()
    assert "bank slip of 30 January" in row_of(text, f"event-{reopened.id}")
    audit = db.session.scalars(select(AuditLog).where(AuditLog.action == "books.reopen")).one()
    assert audit.note == "bank slip of 30 January" and audit.actor == "staff:admin@sacco.test"
    # And the January posting goes through now.
    member_deposit(member_id=member_id, amount=100, reference="SLIP", value_date=date(2026, 1, 30))


def test_a_month_not_over_has_no_button_and_a_forged_close_is_refused(app: Flask) -> None:
    manager = signed_in(app, "branch_manager")
    admin = make_staff("admin")
    journal_manual(
        lines=[("GL-CASH", D("10.00")), ("GL-BANK", D("-10.00"))],
        value_date=date(2026, 12, 1),
        description="this month",
        actor=admin,
    )
    text = page(manager, PERIODS)
    assert "December 2026 closes once it is over: after 31 December 2026." in text
    assert 'id="close-period"' not in text
    post(manager, f"{PERIODS}close", {"month": "2026-12"})
    assert "Not done: December 2026 is not over yet" in page(manager, PERIODS)
    post(manager, f"{PERIODS}close", {"month": "soon"})
    assert "Not done: choose a month like 2026-10, not 'soon'." in page(manager, PERIODS)
    assert books_closed_through() is None
    assert db.session.scalar(select(func.count()).select_from(PeriodEvent)) == 0


def test_the_period_forms_need_the_csrf_token_and_the_role(app: Flask) -> None:
    officer = signed_in(app, "loan_officer")
    assert browse(officer, PERIODS).status_code == 403
    refused = post(officer, f"{PERIODS}close", {"month": "2026-01"})
    assert refused.status_code == 403
    manager = signed_in(app, "branch_manager")
    db.session.commit()
    forged = browse(manager, f"{PERIODS}close", "POST", data={"month": "2026-01"})
    assert forged.status_code == 302
    assert "The form expired; please try again." in page(manager, PERIODS)
    assert books_closed_through() is None
    # The roles that read finance see the page, without its buttons.
    auditor = signed_in(app, "auditor")
    text = page(auditor, PERIODS)
    assert "Closed through" in text and 'id="close-period"' not in text


# -- the chart of accounts ----------------------------------------------------------------


def test_the_chart_shows_each_lines_balance_today_and_its_headers_totals(app: Flask) -> None:
    member = make_member(savings=1500)  # M-PESA clearing 1,500 Dr; member deposits 1,500 Cr
    assert member.id
    admin = make_staff("admin")
    journal_manual(
        lines=[("GL-BANK", D("400.00")), ("GL-MPESA-CLEARING", D("-400.00"))],
        value_date=date(2026, 2, 1),
        description="Float swept to the bank",
        actor=admin,
    )
    auditor = signed_in(app, "auditor")

    text = page(auditor, CHART)

    assert row_of(text, "line-1120").endswith("asset 400.00")  # bank
    assert row_of(text, "line-1130").endswith("asset 1,100.00")  # M-PESA clearing
    assert row_of(text, "line-1100").endswith("asset (header) 1,500.00")  # cash & equivalents
    assert row_of(text, "line-1000").endswith("asset (header) 1,500.00")
    assert row_of(text, "line-2110").endswith("liability 1,500.00")  # member deposits
    assert row_of(text, "line-2000").endswith("liability (header) 1,500.00")
    assert 'id="chart-add"' not in text and "Remove" not in text  # the admin's


def test_an_admin_adds_an_account_posts_to_it_and_cannot_remove_it_once_used(
    app: Flask,
) -> None:
    admin = signed_in(app, "admin")
    page(admin, CHART)  # seeds the chart
    post(
        admin,
        f"{CHART}add",
        {"code": "5400", "name": "Office rent", "type": "expense", "parent": "5000"},
    )
    text = page(admin, CHART)
    assert "5400 Office rent is in the chart." in text
    assert row_of(text, "line-5400").startswith("5400 Office rent expense 0.00")
    # A bad line is refused in words; the chart is as it was.
    lines = db.session.scalar(select(func.count()).select_from(ChartAccount))
    post(admin, f"{CHART}add", {"code": "5400", "name": "Again", "type": "expense"})
    assert "Not done: code 5400 is taken." in page(admin, CHART)
    post(admin, f"{CHART}add", {"code": "5500", "name": "Rent", "type": "income", "parent": "5000"})
    assert "Not done: 5000 groups expense accounts, not income." in page(admin, CHART)
    post(admin, f"{CHART}delete", {"code": "1120"})
    assert "is part of the SACCO's chart and stays" in page(admin, CHART)
    assert db.session.scalar(select(func.count()).select_from(ChartAccount)) == lines

    # The new account takes a journal entry, and then stays.
    post(
        admin,
        JOURNAL,
        {
            "value_date": "2026-11-30",
            "description": "November rent",
            "account-0": "COA-5400",
            "debit-0": "12,000",
            "account-1": "GL-BANK",
            "credit-1": "12000.00",
        },
    )
    assert row_of(page(admin, CHART), "line-5400").endswith("expense 12,000.00 Remove")
    post(admin, f"{CHART}delete", {"code": "5400"})
    assert "Not done:" in page(admin, CHART)
    assert db.session.scalar(select(ChartAccount.id).where(ChartAccount.code == "5400"))

    # An unused one goes.
    post(
        admin, f"{CHART}add", {"code": "5410", "name": "Water", "type": "expense", "parent": "5000"}
    )
    post(admin, f"{CHART}delete", {"code": "5410"})
    assert "5410 is out of the chart." in page(admin, CHART)
    assert db.session.scalar(select(ChartAccount.id).where(ChartAccount.code == "5410")) is None


def test_only_an_admin_changes_the_chart(app: Flask) -> None:
    manager = signed_in(app, "branch_manager")
    assert browse(manager, CHART).status_code == 200
    refused = post(manager, f"{CHART}add", {"code": "5400", "name": "Rent", "type": "expense"})
    assert refused.status_code == 403
    assert "change the chart of accounts" in refused.get_data(as_text=True)
    assert browse(signed_in(app, "loan_officer"), CHART).status_code == 403


# -- the journal entry --------------------------------------------------------------------


def test_a_journal_entry_and_a_correction_of_an_entry_in_a_closed_month(app: Flask) -> None:
    manager = signed_in(app, "branch_manager")
    form = {
        "value_date": "2026-10-05",
        "description": "Cash banked",
        "account-0": "gl-bank",
        "debit-0": "2,500",
        "account-1": "GL-CASH",
        "credit-1": "2500",
    }
    reply = post(manager, JOURNAL, form)
    assert reply.status_code == 302
    entry = db.session.scalars(select(JournalEntry)).one()
    assert "Entry #1 posted, dated 2026-10-05." in page(manager, JOURNAL).replace(
        f"#{entry.id}", "#1"
    )
    assert gl_account("GL-BANK").balance == D("2500.00")
    post(manager, f"{PERIODS}close", {"month": "2026-10"})
    assert books_closed_through() == date(2026, 10, 31)
    before = entries()

    # Dated in the closed month: refused in words, the form kept as typed.
    reply = post(manager, JOURNAL, {**form, "description": "Banked twice", "corrects": ""})
    assert reply.status_code == 400
    text = html.unescape(reply.get_data(as_text=True))
    assert "Not posted: the books are closed through 2026-10-31" in text
    assert 'value="Banked twice"' in text and 'value="2,500"' in text
    assert entries() == before

    # The correction posts in the open period and names the entry.
    reversal = {
        "value_date": "2026-11-02",
        "description": "banked twice",
        "corrects": str(entry.id),
        "account-0": "GL-CASH",
        "debit-0": "2500",
        "account-1": "GL-BANK",
        "credit-1": "2500",
    }
    assert f"Correcting entry #{entry.id}: Cash banked" in page(
        manager, f"{JOURNAL}?corrects={entry.id}"
    )
    post(manager, JOURNAL, reversal)
    fixed = db.session.scalars(select(JournalEntry).where(JournalEntry.id != entry.id)).one()
    assert (fixed.corrects_entry_id, fixed.value_date) == (entry.id, date(2026, 11, 2))
    assert fixed.description == f"Correction of #{entry.id}: banked twice"
    assert f"correcting #{entry.id}." in page(manager, JOURNAL)
    assert gl_account("GL-BANK").balance == 0


def test_a_bad_journal_entry_is_refused_in_words_and_posts_nothing(app: Flask) -> None:
    member = make_member(savings=100)
    manager = signed_in(app, "branch_manager")
    base = {"value_date": "2026-11-02", "description": "x"}
    cases = [
        ({"account-0": "GL-BANK", "debit-0": "10"}, "two lines at least"),
        (
            {"account-0": "GL-BANK", "debit-0": "10", "account-1": "GL-CASH", "credit-1": "9"},
            "entry does not balance",
        ),
        (
            {"account-0": "GL-BANK", "debit-0": "10", "credit-0": "10", "account-1": "GL-CASH"},
            "line 1 (GL-BANK): give a debit or a credit, one of them",
        ),
        (
            {"account-0": "GL-BANK", "debit-0": "ten", "account-1": "GL-CASH", "credit-1": "10"},
            "line 1's debit",
        ),
        (
            {"account-0": "GL-NOPE", "debit-0": "10", "account-1": "GL-CASH", "credit-1": "10"},
            "no account GL-NOPE",
        ),
        (
            {
                "account-0": f"SAV-{member.member_no}",
                "debit-0": "10",
                "account-1": "GL-CASH",
                "credit-1": "10",
            },
            "is a member's or a loan's account: use its own service",
        ),
        (
            {
                "account-0": "GL-BANK",
                "debit-0": "10",
                "account-1": "GL-CASH",
                "credit-1": "10",
                "value_date": "02/11/2026",
            },
            "the value date must be a date like 2026-11-02",
        ),  # fmt: skip
        (
            {
                "account-0": "GL-BANK",
                "debit-0": "10",
                "account-1": "GL-CASH",
                "credit-1": "10",
                "corrects": "999",
            },
            "no journal entry #999 to correct",
        ),  # fmt: skip
        (
            {
                "account-0": "GL-BANK",
                "debit-0": "10",
                "account-1": "GL-CASH",
                "credit-1": "10",
                "description": "  ",
            },
            "a journal entry needs a description",
        ),  # fmt: skip
    ]
    before = entries()
    for fields, words in cases:
        reply = post(manager, JOURNAL, {**base, **fields})
        text = html.unescape(reply.get_data(as_text=True))
        assert reply.status_code == 400, words
        assert words in text, (words, re.findall(r'id="journal-error">([^<]*)', text))
        assert entries() == before, words


def test_the_journal_form_is_for_branch_managers_and_admins_with_the_token(app: Flask) -> None:
    auditor = signed_in(app, "auditor")
    assert browse(auditor, JOURNAL).status_code == 403
    lines = {"account-0": "GL-BANK", "debit-0": "10", "account-1": "GL-CASH", "credit-1": "10"}
    data = {"value_date": "2026-11-02", "description": "x", **lines}
    assert post(auditor, JOURNAL, data).status_code == 403
    admin = signed_in(app, "admin")
    db.session.commit()
    forged = browse(admin, JOURNAL, "POST", data=data)
    assert forged.status_code == 302
    assert "The form expired; please try again." in page(admin, JOURNAL)
    assert entries() == 0
