"""The dividend run through the console, as a browser sends it: declare the AGM's rates, the
preview's totals and largest lines, a second staff member's approval (the declarer and a
loan officer are refused, in words or 403), cancel, post (queued, then run by a worker),
members' savings credited, the report downloads; refusals in words."""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openpyxl import load_workbook
from sqlalchemy import select

from admin.dividends import POST_JOB
from app.extensions import db
from app.models import AuditLog, DividendLine, DividendRun, Member
from app.selectors.member_accounts import member_accounts
from app.services.members import member_buy_shares, member_deposit
from app.services.staff import staff_add
from tests.factories import make_member
from tests.helpers import PASSWORD, login, post_form, staff, work_until
from tests.helpers import browse as _browse

YEAR = 2025
VALUE_DATE = "2026-01-31"


def browse(client: FlaskClient, path: str, method: str = "GET", **kwargs: object):  # noqa: ANN201
    db.session.commit()  # SQLite: the test's read transaction would hold the write lock
    return _browse(client, path, method, **kwargs)


def post(client: FlaskClient, path: str, data: dict[str, object]):  # noqa: ANN201
    db.session.commit()
    return post_form(client, path, data)


def signed_in(app: Flask, email: str) -> FlaskClient:
    client = app.test_client()
    db.session.commit()
    login(client, email)
    return client


def text_of(reply: object) -> str:
    return reply.get_data(as_text=True)  # type: ignore[attr-defined]


def flashes(client: FlaskClient, path: str) -> str:
    return text_of(browse(client, path))


def _members() -> list[Member]:
    """Three members with a year of money: shares bought from deposits, deposits left."""
    made = []
    for n, (deposits, shares) in enumerate([(60000, 20000), (30000, 10000), (5000, 0)], 1):
        member = make_member()
        member_deposit(
            member_id=member.id, amount=deposits, reference=f"DEP-{n}", value_date=date(YEAR, 1, 5)
        )
        if shares:
            member_buy_shares(
                member_id=member.id,
                amount=shares,
                reference=f"SHR-{n}",
                value_date=date(YEAR, 1, 6),
            )
        made.append(member)
    db.session.commit()
    return made


def _declare(client: FlaskClient, **changes: str):  # noqa: ANN201
    form = {
        "year": str(YEAR),
        "share_rate": "10",
        "deposit_rate": "6",
        "method": "simple",
        "payout": "savings",
        "resolution_ref": "AGM 2026 min. 7",
        **changes,
    }
    return post(client, "/admin/dividends/new", form)


def _run() -> DividendRun:
    db.session.expire_all()
    return db.session.scalars(
        select(DividendRun).where(DividendRun.year == YEAR).order_by(DividendRun.id.desc())
    ).first()


def _act(client: FlaskClient, run_id: int, action: str, **fields: str):  # noqa: ANN201
    return post(client, f"/admin/dividends/{run_id}/act", {"action": action, **fields})


def _savings_of(member_id: int) -> dict[str, Decimal]:
    return {a.product: a.balance for a in member_accounts(member_id=member_id)}


def test_the_post_job_resolves() -> None:
    import importlib

    module, name = POST_JOB.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name))


def test_declare_preview_approve_post_and_report_through_the_console(app: Flask) -> None:
    members = _members()
    ids = [m.id for m in members]
    maker = signed_in(app, staff("branch_manager"))
    # The form opens with last year offered and the choices in words.
    page = text_of(browse(maker, "/admin/dividends/new"))
    assert "Weighted: each month" in page and "Credited to the member" in page

    reply = _declare(maker)
    assert reply.status_code == 302
    run = _run()
    assert run.status == "draft" and run.resolution_ref == "AGM 2026 min. 7"
    run_id = run.id
    assert reply.headers["Location"].endswith(f"/admin/dividends/{run_id}")

    # The preview: dividend 10% of shares (30,000), interest 6% of deposits (65,000),
    # tax 5% of the dividend and 15% of the interest.
    preview = text_of(browse(maker, f"/admin/dividends/{run_id}"))
    totals = {
        key: " ".join(re.sub(r"<[^>]+>", " ", m).split())
        for key, m in re.findall(r'id="total-(\w+)">(.*?)</div></div></div>', preview, re.S)
    }
    assert totals["members"] == "Members 3"
    assert totals["dividend"] == "Gross dividend KES 3,000.00"
    assert totals["interest"] == "Gross interest KES 3,900.00"
    assert totals["tax"] == "Withholding tax KES 735.00"  # 150 + 585
    assert totals["net"] == "Net to members KES 6,165.00"
    top = re.search(r'id="run-top">(.*?)</table>', preview, re.S).group(1)
    order = re.findall(r">(M\d+)</a>", top)
    assert order == [members[0].member_no, members[1].member_no, members[2].member_no]
    # The declarer is told why they cannot approve; no approve button.
    assert "You declared this run" in preview and 'id="approve-form"' not in preview
    assert "AGM 2026 min. 7" in preview

    # The declarer approves anyway (a typed request): refused in words, still a draft.
    _act(maker, run_id, "approve")
    assert "approved by someone other than who declared it" in flashes(
        maker, f"/admin/dividends/{run_id}"
    )
    assert _run().status == "draft"

    # A second branch manager approves.
    checker_email = "second.manager@sacco.test"
    staff_add(email=checker_email, role="branch_manager", password=PASSWORD)
    checker = signed_in(app, checker_email)
    assert 'id="approve-form"' in text_of(browse(checker, f"/admin/dividends/{run_id}"))
    _act(checker, run_id, "approve")
    approved = _run()
    assert approved.status == "approved" and approved.approved_by.email == checker_email

    # A value date inside the year is refused in words before anything is queued.
    _act(checker, run_id, "post", value_date="2025-12-31")
    assert "the value date must be after the end of 2025" in flashes(
        checker, f"/admin/dividends/{run_id}"
    )
    assert _run().status == "approved"

    # Post: queued, then a worker pays every member.
    _act(checker, run_id, "post", value_date=VALUE_DATE)
    waiting = flashes(checker, f"/admin/dividends/{run_id}")
    assert "queued for posting" in waiting
    assert 'id="post-waiting"' in waiting
    assert 'id="post-form"' not in waiting  # one job pays the run: no second button
    _act(checker, run_id, "post", value_date=VALUE_DATE)  # a second click, typed
    assert "its posting is queued or under way already" in flashes(
        checker, f"/admin/dividends/{run_id}"
    )
    work_until(lambda: _run().status == "posted", "the dividend run to post")
    posted = _run()
    assert posted.value_date == date(2026, 1, 31)
    lines = db.session.scalars(select(DividendLine).where(DividendLine.run_id == run_id)).all()
    assert len(lines) == 3 and all(line.paid_at is not None for line in lines)
    by_member = {line.member_id: line for line in lines}
    for member_id in ids:
        assert _savings_of(member_id)["Ordinary savings"] == by_member[member_id].net
    assert sum(line.net for line in lines) == Decimal("6165.00")
    page = text_of(browse(checker, f"/admin/dividends/{run_id}"))
    assert 'data-status="posted"' in page and "Posted: every member" in page

    # The reports: CSV with the journal's totals equal to the run's, and XLSX.
    report = browse(checker, f"/admin/dividends/{run_id}/report.csv")
    assert report.status_code == 200 and report.mimetype == "text/csv"
    assert f"dividends-{YEAR}-run{run_id}.csv" in report.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(report.get_data(as_text=True).lstrip("\ufeff"))))
    total = next(r for r in rows if r[0] == "TOTAL")
    journal = next(r for r in rows if r[0] == "JOURNAL")
    assert total[4:8] == journal[4:8] == ["3000.00", "3900.00", "735.00", "6165.00"]
    xlsx = browse(checker, f"/admin/dividends/{run_id}/report.xlsx")
    assert xlsx.status_code == 200
    assert load_workbook(io.BytesIO(xlsx.get_data())).active.max_row >= 4
    pdf = browse(checker, f"/admin/dividends/{run_id}/report.pdf")
    assert pdf.status_code == 200 and pdf.get_data().startswith(b"%PDF")

    # Posting again is refused in words; nobody is paid twice.
    _act(checker, run_id, "post", value_date=VALUE_DATE)
    assert "only an approved run is posted" in flashes(checker, f"/admin/dividends/{run_id}")
    # The list shows the run.
    listing = text_of(browse(maker, "/admin/dividends/"))
    assert f'id="run-{run_id}"' in listing and "6,165.00" in listing
    actions = set(
        db.session.scalars(select(AuditLog.action).where(AuditLog.object_type == "dividend_run"))
    )
    assert {"dividend.declare", "dividend.approve", "dividend.post"} <= actions


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"share_rate": "ten"}, "the dividend rate must be a number"),
        ({"year": "2099"}, "the year must be between 2000 and"),
        ({"share_rate": "0", "deposit_rate": "0"}, "both rates are zero"),
        ({"payout": "cash"}, "Not a valid choice"),
        ({"method": "compound"}, "Not a valid choice"),
    ],
)
def test_a_bad_declaration_is_refused_in_words_and_nothing_is_declared(
    app: Flask, changes: dict[str, str], words: str
) -> None:
    _members()
    client = signed_in(app, staff("branch_manager"))
    reply = _declare(client, **changes)
    text = text_of(reply)
    assert reply.status_code == 200 and 'id="declare-error"' in text
    assert words in text
    assert (
        db.session.scalar(select(DividendRun.id).where(DividendRun.status != "cancelled")) is None
    )


def test_a_second_run_for_the_year_is_refused_until_the_first_is_cancelled(app: Flask) -> None:
    _members()
    client = signed_in(app, staff("branch_manager"))
    _declare(client)
    first = _run().id
    text = text_of(_declare(client, share_rate="12"))
    assert f"2025 has a dividend run already (run {first})" in text
    _act(client, first, "cancel")
    assert _run().status == "cancelled"
    assert "cancelled" in flashes(client, f"/admin/dividends/{first}")
    assert _declare(client, share_rate="12").status_code == 302
    again = _run()
    assert again.id != first and again.share_rate == Decimal("12")


def test_roles_a_loan_officer_reads_but_cannot_declare_approve_or_post(app: Flask) -> None:
    _members()
    _declare(signed_in(app, staff("branch_manager")))
    run_id = _run().id
    officer = signed_in(app, staff("loan_officer"))
    page = text_of(browse(officer, f"/admin/dividends/{run_id}"))
    assert "Only a branch manager or an admin approves" in page
    assert 'id="cancel-form"' not in page
    assert browse(officer, "/admin/dividends/new").status_code == 403
    refused = _act(officer, run_id, "approve")
    assert refused.status_code == 403 and "approve or post dividend runs" in text_of(refused)
    assert _act(officer, run_id, "cancel").status_code == 403
    assert _run().status == "draft"
    listing = text_of(browse(officer, "/admin/dividends/"))
    assert 'id="declare-run"' not in listing and f'id="run-{run_id}"' in listing
    denied = db.session.scalars(select(AuditLog).where(AuditLog.action == "access.denied")).all()
    assert {row.after["needs"] for row in denied} == {
        "dividend.declare",
        "dividend.approve",
    }


def test_an_approved_run_cannot_be_cancelled_and_an_unknown_run_is_not_found(
    app: Flask,
) -> None:
    _members()
    _declare(signed_in(app, staff("branch_manager")))
    run_id = _run().id
    admin = signed_in(app, staff("admin"))
    _act(admin, run_id, "approve")
    assert _run().status == "approved"
    _act(admin, run_id, "cancel")
    assert "only a draft can be cancelled" in flashes(admin, f"/admin/dividends/{run_id}")
    assert _run().status == "approved"
    assert browse(admin, "/admin/dividends/999999").status_code == 404
    assert browse(admin, f"/admin/dividends/{run_id}/report.doc").status_code == 404
