"""The collections desk in the console: an officer's desk and its call/visit form, the
officer's limit in words, a branch manager's desk picker, reassignment, targets and bulk
promises, the loan's timeline, the leaderboard, the promise list's filters, and the 403s.

Loans are V1 over one month (10,000 owes 10,100), paid out 45 days ago: each is late.
"""

from __future__ import annotations

import html as html_lib
import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.clock import business_today
from app.extensions import db
from app.models import AuditLog, Loan, LoanProduct, PromiseToPay, StaffUser
from app.models.recovery import CollectionTarget, ContactLog
from app.services.loans import loan_update_arrears
from tests.helpers import browse as _browse
from tests.helpers import login, post_form, staff
from tests.loan_factories import make_loan, make_product, make_staff

EVERYONE = ["loan_officer", "branch_manager", "compliance", "auditor", "admin"]


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


def staff_id(email: str) -> int:
    return db.session.scalar(select(StaffUser.id).where(StaffUser.email == email))


def late_loan(product: LoanProduct, officer_id: int, amount: int = 5000) -> Loan:
    today = business_today()
    loan = make_loan(product=product, amount=amount, on=today - timedelta(days=45), term=1)
    loan.officer_id = officer_id
    db.session.commit()
    loan_update_arrears(loan_id=loan.id, as_of=today)
    return db.session.get(Loan, loan.id)


def count(model: type, *where: object) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def text(response: object) -> str:
    return html_lib.unescape(response.get_data(as_text=True))  # type: ignore[attr-defined]


@pytest.fixture
def product(app: Flask) -> LoanProduct:
    return make_product("V1")


def test_an_officer_sees_their_loans_in_arrears_with_an_outcome_form_each(
    app: Flask, product: LoanProduct
) -> None:
    officer = staff("loan_officer")
    big = late_loan(product, staff_id(officer), 8000)
    small = late_loan(product, staff_id(officer), 2000)
    theirs = late_loan(product, make_staff("loan_officer").id, 9000)
    ids = (big.id, small.id, theirs.id)
    db.session.rollback()

    reply = browse(signed_in(app, officer), "/admin/desk/")

    assert reply.status_code == 200
    page = text(reply)
    assert page.index(f'id="desk-{ids[0]}"') < page.index(f'id="desk-{ids[1]}"')  # biggest first
    assert f'id="desk-{ids[2]}"' not in page
    assert "KES 8,080.00 in arrears" in page
    form = re.search(rf'<form id="contact-{ids[0]}".*?</form>', page, re.S).group(0)
    for element in (
        '<select class="form-control form-control-sm mr-1 mb-1" name="outcome"',
        'name="amount"',
        'name="promise_date" type="date"',
        'type="submit"',
        'name="csrf_token"',
    ):
        assert element in form, element
    assert 'id="target-progress"' in page and "No target set for today." in page
    assert 'id="set-target"' not in page and 'id="assign-' not in page  # a manager's forms


def test_an_officer_logs_a_call_and_a_promise(app: Flask, product: LoanProduct) -> None:
    officer = staff("loan_officer")
    loan_id = late_loan(product, staff_id(officer)).id
    due = business_today() + timedelta(days=3)
    client = signed_in(app, officer)

    reply = post(
        client,
        f"/admin/desk/contact/{loan_id}",
        {"kind": "call", "outcome": "promised", "amount": "1500", "promise_date": due.isoformat()},
    )

    assert reply.status_code == 302 and reply.headers["Location"].startswith("/admin/desk/")
    log = db.session.scalar(select(ContactLog))
    promise = db.session.get(PromiseToPay, log.promise_id)
    assert (log.outcome, promise.amount, promise.promised_date) == (
        "promised",
        Decimal("1500.00"),
        due,
    )
    assert promise.recorded_by_id == staff_id(officer) and promise.channel == "staff"
    assert count(AuditLog, AuditLog.action == "collection.record") == 1
    page = text(browse(client, "/admin/desk/"))
    assert f"with a promise for {due:%d/%m/%Y}" in page  # the flash
    # The loan's timeline shows the call and the promise; the loan page links to it.
    timeline = text(browse(client, f"/admin/desk/loan/{loan_id}"))
    assert "call: promised" in timeline and "promise of KES 1,500.00" in timeline
    assert f'id="contact-{loan_id}"' in timeline
    loan_page = text(browse(client, f"/admin/loan/details/?id={loan_id}"))
    assert f'href="/admin/desk/loan/{loan_id}"' in loan_page


def test_above_the_limit_the_officer_is_told_and_a_manager_records_it(
    app: Flask, product: LoanProduct
) -> None:
    officer, manager = staff("loan_officer"), staff("branch_manager")
    for email in (officer, manager):
        db.session.get(StaffUser, staff_id(email)).accept_limit = Decimal("1000")
    loan_id = late_loan(product, staff_id(officer)).id
    form = {
        "kind": "visit",
        "outcome": "promised",
        "amount": "1500",
        "promise_date": (business_today() + timedelta(days=2)).isoformat(),
    }
    client = signed_in(app, officer)
    post(client, f"/admin/desk/contact/{loan_id}", form)
    page = text(browse(client, "/admin/desk/"))
    assert "above your limit of KES 1,000.00: a branch manager must record it" in page
    assert (count(ContactLog), count(PromiseToPay)) == (0, 0)

    post(signed_in(app, manager), f"/admin/desk/contact/{loan_id}", form)
    assert (count(ContactLog), count(PromiseToPay)) == (1, 1)


def test_a_branch_manager_picks_a_desk_reassigns_sets_a_target_and_bulk_promises(
    app: Flask, product: LoanProduct
) -> None:
    manager, officer = staff("branch_manager"), staff("loan_officer")
    other = make_staff("loan_officer")
    first = late_loan(product, staff_id(officer), 5000)
    second = late_loan(product, staff_id(officer), 3000)
    ids, other_id, officer_id = (first.id, second.id), other.id, staff_id(officer)
    client = signed_in(app, manager)

    page = text(browse(client, f"/admin/desk/?officer={officer_id}"))
    assert f'id="desk-{ids[0]}"' in page and 'id="set-target"' in page
    assert f'id="assign-{ids[0]}"' in page

    post(client, f"/admin/desk/assign/{ids[1]}", {"officer_id": other_id})
    assert db.session.get(Loan, ids[1]).officer_id == other_id
    audit = db.session.scalar(select(AuditLog).where(AuditLog.action == "portfolio.assign"))
    assert audit.before == {"officer": officer} and audit.after == {"officer": other.email}

    today = business_today()
    post(
        client,
        "/admin/desk/target",
        {"officer_id": officer_id, "day": today.isoformat(), "amount": "12000", "accounts": "8"},
    )
    target = db.session.scalar(select(CollectionTarget))
    assert (target.staff_id, target.day, target.amount, target.accounts) == (
        officer_id,
        today,
        Decimal("12000.00"),
        8,
    )
    page = text(browse(client, f"/admin/desk/?officer={officer_id}"))
    assert "of a target of KES 12,000.00 (0%)" in page and "of a target of 8 (0%)" in page

    due = today + timedelta(days=5)
    post(client, "/admin/desk/promises", {"loan_id": list(ids), "promise_date": due.isoformat()})
    made = {p.loan_id: p.amount for p in db.session.scalars(select(PromiseToPay))}
    assert made == {ids[0]: Decimal("5050.00"), ids[1]: Decimal("3030.00")}
    page = text(browse(client, f"/admin/desk/?officer={officer_id}"))
    assert f"2 promises for {due:%d/%m/%Y}, KES 8,080.00 in all." in page

    assert browse(client, "/admin/desk/?officer=99999").status_code == 302  # no such officer
    # Loans nobody follows up have a desk too.
    db.session.get(Loan, ids[0]).officer_id = None
    page = text(browse(client, "/admin/desk/?officer=none"))
    assert "loans nobody follows up" in page and f'id="desk-{ids[0]}"' in page


@pytest.mark.parametrize("role", ["compliance", "auditor", "admin"])
def test_roles_that_do_not_collect_have_no_desk(
    app: Flask, product: LoanProduct, role: str
) -> None:
    loan_id = late_loan(product, make_staff("loan_officer").id).id
    client = signed_in(app, staff(role))
    assert browse(client, "/admin/desk/").status_code == 403
    assert browse(client, f"/admin/desk/loan/{loan_id}").status_code == 403
    reply = post(client, f"/admin/desk/contact/{loan_id}", {"kind": "call", "outcome": "contacted"})
    assert reply.status_code == 403 and count(ContactLog) == 0


def test_an_officer_cannot_read_another_desk_nor_assign_nor_set_targets(
    app: Flask, product: LoanProduct
) -> None:
    officer = staff("loan_officer")
    other = make_staff("loan_officer")
    loan_id, other_id, officer_id = late_loan(product, other.id).id, other.id, staff_id(officer)
    client = signed_in(app, officer)
    assert browse(client, f"/admin/desk/?officer={other_id}").status_code == 403
    assert browse(client, "/admin/desk/?officer=none").status_code == 403
    assert (
        post(client, f"/admin/desk/assign/{loan_id}", {"officer_id": officer_id}).status_code == 403
    )
    today = business_today().isoformat()
    target = {"officer_id": officer_id, "day": today, "amount": "1", "accounts": "1"}
    assert post(client, "/admin/desk/target", target).status_code == 403
    assert db.session.get(Loan, loan_id).officer_id == other_id
    assert count(CollectionTarget) == 0
    denied = db.session.scalars(
        select(AuditLog.after).where(AuditLog.action == "access.denied")
    ).all()
    assert [d["needs"] for d in denied] == ["portfolio.assign"] * 4


def test_an_officers_desk_is_their_own_book(app: Flask, product: LoanProduct) -> None:
    """Issue 17, item 14: another officer's loan, or nobody's, is refused on its page, for a
    call and in bulk promises (403, audited), and nothing is recorded; a branch manager
    works every loan."""
    officer = staff("loan_officer")
    mine = late_loan(product, staff_id(officer)).id
    theirs = late_loan(product, make_staff("loan_officer").id).id
    nobodys = late_loan(product, staff_id(officer))
    nobodys.officer_id = None
    nobodys_id = nobodys.id
    db.session.commit()
    client = signed_in(app, officer)
    due = (business_today() + timedelta(days=3)).isoformat()

    for loan_id in (theirs, nobodys_id):
        page = browse(client, f"/admin/desk/loan/{loan_id}")
        assert page.status_code == 403
        assert "work loans outside their own book" in text(page)
        call = {"kind": "call", "outcome": "promised", "amount": "100", "promise_date": due}
        assert post(client, f"/admin/desk/contact/{loan_id}", call).status_code == 403
    bulk = post(client, "/admin/desk/promises", {"loan_id": [mine, theirs], "promise_date": due})
    assert bulk.status_code == 403

    assert count(ContactLog) == 0 and count(PromiseToPay) == 0
    denied = db.session.scalars(
        select(AuditLog).where(AuditLog.action == "access.denied").order_by(AuditLog.id)
    ).all()
    assert [(d.object_id, d.after["needs"]) for d in denied] == [
        (f"/admin/desk/loan/{theirs}", "portfolio.assign"),
        (f"/admin/desk/contact/{theirs}", "portfolio.assign"),
        (f"/admin/desk/loan/{nobodys_id}", "portfolio.assign"),
        (f"/admin/desk/contact/{nobodys_id}", "portfolio.assign"),
        ("/admin/desk/promises", "portfolio.assign"),
    ]
    assert browse(client, f"/admin/desk/loan/{mine}").status_code == 200
    manager = signed_in(app, staff("branch_manager"))
    assert browse(manager, f"/admin/desk/loan/{theirs}").status_code == 200
    call = {"kind": "call", "outcome": "no_answer"}
    assert post(manager, f"/admin/desk/contact/{theirs}", call).status_code == 302
    assert count(ContactLog) == 1


def test_a_branch_managers_desk_lists_late_loans_nobody_follows_up(
    app: Flask, product: LoanProduct
) -> None:
    """Issue 17, item 9 (the console's part): unassigned late loans head the branch
    manager's desk, each with a form that assigns it."""
    manager = staff("branch_manager")
    officer = staff("loan_officer")
    stray = late_loan(product, staff_id(officer))
    stray.officer_id = None
    stray_id = stray.id
    followed = late_loan(product, staff_id(officer)).id
    db.session.commit()
    client = signed_in(app, manager)

    page = text(browse(client, "/admin/desk/"))

    box = re.search(
        r'<div class="card border-warning mb-3" id="unassigned-late">.*?</table>', page, re.S
    )
    assert box is not None
    assert "1 late loan nobody follows up" in box.group(0)
    assert f'id="unassigned-{stray_id}"' in box.group(0)
    assert f'id="unassigned-{followed}"' not in box.group(0)
    reply = post(client, f"/admin/desk/assign/{stray_id}", {"officer_id": staff_id(officer)})
    assert reply.status_code == 302
    assert db.session.get(Loan, stray_id).officer_id == staff_id(officer)
    assert 'id="unassigned-late"' not in text(browse(client, "/admin/desk/"))
    officer_page = text(browse(signed_in(app, officer), "/admin/desk/"))
    assert 'id="unassigned-late"' not in officer_page


def test_a_post_without_the_csrf_token_changes_nothing(app: Flask, product: LoanProduct) -> None:
    officer = staff("loan_officer")
    loan_id = late_loan(product, staff_id(officer)).id
    client = signed_in(app, officer)
    reply = browse(
        client,
        f"/admin/desk/contact/{loan_id}",
        "POST",
        data={"kind": "call", "outcome": "contacted"},
    )
    assert reply.status_code == 302 and count(ContactLog) == 0
    assert "The form expired" in text(browse(client, "/admin/desk/"))


@pytest.mark.parametrize("role", EVERYONE)
def test_everyone_reads_the_leaderboard(app: Flask, product: LoanProduct, role: str) -> None:
    officer = make_staff("loan_officer")
    late_loan(product, officer.id, 5000)
    email = officer.email
    reply = browse(signed_in(app, staff(role)), "/admin/desk/leaderboard/")
    assert reply.status_code == 200
    page = text(reply)
    table = re.search(
        r'<table class="table table-sm table-bordered" id="leaderboard">.*?</table>', page, re.S
    )
    assert table is not None and email in table.group(0)
    # Principal 5,000, all of it under 30 days late: PAR30 0.0%.
    assert "5,000.00" in table.group(0) and "0.0%" in table.group(0)


def test_the_member_page_shows_how_the_member_keeps_promises(
    app: Flask, product: LoanProduct
) -> None:
    loan = late_loan(product, make_staff("loan_officer").id)
    today = business_today()
    for status in ("kept", "kept", "broken", "partly"):
        db.session.add(
            PromiseToPay(
                member_id=loan.member_id,
                loan_id=loan.id,
                amount=Decimal("100"),
                promised_date=today - timedelta(days=3),
                status=status,
            )
        )
    member_id = loan.member_id
    page = text(browse(signed_in(app, staff("auditor")), f"/admin/member/details/?id={member_id}"))
    # 2 kept of 4 settled.
    assert "Promises kept: <strong>50.0%</strong>" in page
    assert "2 kept, 1 partly kept, 1 broken, 0 open" in page


def filter_arg(page: str, group: str, operation: str) -> str:
    data = re.search(r'id="filter-groups-data" class="d-none">(.*?)</div>', page).group(1)
    groups = json.loads(data)
    [found] = [f["arg"] for f in groups[group] if f["operation"] == operation]
    return f"flt0_{found}"


def test_the_promise_list_filters_by_officer_and_amount_with_badges(
    app: Flask, product: LoanProduct
) -> None:
    officer, other = make_staff("loan_officer"), make_staff("loan_officer")
    mine, theirs = late_loan(product, officer.id), late_loan(product, other.id)
    due = business_today() + timedelta(days=2)
    for loan, amount, status in ((mine, "1111", "open"), (theirs, "2222", "partly")):
        db.session.add(
            PromiseToPay(
                member_id=loan.member_id,
                loan_id=loan.id,
                amount=Decimal(amount),
                promised_date=due,
                status=status,
            )
        )
    email = officer.email
    client = signed_in(app, staff("branch_manager"))
    page = text(browse(client, "/admin/promisetopay/"))
    assert '<span class="badge badge-warning">partly kept</span>' in page

    def listed(arg: str, value: str) -> set[str]:
        found = text(browse(client, "/admin/promisetopay/", query_string={arg: value}))
        return {a for a in ("1,111.00", "2,222.00") if a in found}

    assert listed(filter_arg(page, "Officer", "email is"), email) == {"1,111.00"}
    assert listed(filter_arg(page, "Officer", "email is"), "none") == set()
    assert listed(filter_arg(page, "Amount", "at least (KES)"), "1500") == {"2,222.00"}
    assert listed(filter_arg(page, "Amount", "at most (KES)"), "1111") == {"1,111.00"}
