"""Collections services and reads: the officer desk's order, contact logging, promises
taken by staff (the officer's limit), bulk promises, partly kept promises, daily targets,
the leaderboard and reassignment, with every figure worked out by hand here.

The loans are V1 (12% a year, declining) over one month, so each owes one installment:
the principal and 1% interest (10,000 -> 10,100), due a month after it is paid out.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.clock import business_today
from app.extensions import db
from app.models import AuditLog, Loan, LoanProduct, PromiseToPay, SmsMessage, StaffUser
from app.models.recovery import CollectionTarget, ContactLog
from app.selectors.collections import (
    BIGGEST,
    BROKEN,
    DUE_TODAY,
    NEWLY_LATE,
    loan_arrears,
    loan_timeline,
    officer_desk,
    target_progress,
    team_leaderboard,
)
from app.selectors.promises import (
    Fulfilment,
    member_promise_keeping,
    monthly_promise_keeping,
    officer_promise_keeping,
)
from app.services.collections import (
    CollectionError,
    collection_record,
    collection_target_set,
    portfolio_assign,
    promise_bulk_record,
)
from app.services.loans import loan_repay, loan_update_arrears
from app.services.permissions import PermissionDenied
from app.services.promises import promise_settle
from tests.loan_factories import make_loan, make_product, make_staff

AS_OF = date(2026, 6, 15)
LATE_3 = date(2026, 5, 12)  # due 12/06: 3 days late on 15/06
LATE_40 = date(2026, 4, 6)  # due 06/05: 40 days late on 15/06


@pytest.fixture
def product(app: object) -> LoanProduct:
    return make_product("V1")


def late_loan(
    product: LoanProduct, amount: int, on: date, officer: StaffUser, as_of: date = AS_OF
) -> Loan:
    loan = make_loan(product=product, amount=amount, on=on, term=1)
    loan.officer_id = officer.id
    db.session.commit()
    loan_update_arrears(loan_id=loan.id, as_of=as_of)
    return db.session.get(Loan, loan.id)


def promise_row(loan: Loan, amount: str, on: date, status: str, made: date) -> PromiseToPay:
    """A promise as a row: the service allows one open one per loan and only future dates."""
    row = PromiseToPay(
        member_id=loan.member_id,
        loan_id=loan.id,
        amount=Decimal(amount),
        promised_date=on,
        status=status,
        channel="ussd",
        created_at=datetime.combine(made, datetime.min.time(), tzinfo=UTC) + timedelta(hours=7),
    )
    db.session.add(row)
    db.session.commit()
    return row


def audits(action: str) -> list[AuditLog]:
    return list(db.session.scalars(select(AuditLog).where(AuditLog.action == action)))


def count(model: type) -> int:
    return db.session.scalar(select(func.count()).select_from(model)) or 0


# --- the desk ---------------------------------------------------------------------------------


def test_the_desk_lists_what_to_do_today_first(product: LoanProduct) -> None:
    officer, other = make_staff("loan_officer"), make_staff("loan_officer")
    newly_big = late_loan(product, 5000, LATE_3, officer)  # 5,050 owed, 3 days
    newly_small = late_loan(product, 2000, LATE_3, officer)  # 2,020 owed, 3 days
    biggest = late_loan(product, 20000, LATE_40, officer)  # 20,200 owed, 40 days
    due_today = late_loan(product, 8000, LATE_40, officer)
    broken = late_loan(product, 3000, LATE_40, officer)
    old_broken = late_loan(product, 1000, LATE_40, officer)  # 1,010 owed
    not_mine = late_loan(product, 9000, LATE_40, other)
    current = late_loan(product, 4000, date(2026, 6, 1), officer)  # due 01/07: not late
    promise_row(due_today, "8080", AS_OF, "open", made=date(2026, 6, 10))
    promise_row(broken, "1000", AS_OF - timedelta(days=1), "broken", made=date(2026, 6, 10))
    promise_row(old_broken, "500", AS_OF - timedelta(days=10), "broken", made=date(2026, 6, 1))
    assert (newly_big.days_past_due, biggest.days_past_due, current.days_past_due) == (3, 40, 0)

    rows, total = officer_desk(officer_id=officer.id, as_of=AS_OF, page=1, per_page=25)

    assert total == 6
    assert [r.loan_id for r in rows] == [
        due_today.id,
        broken.id,
        newly_big.id,
        newly_small.id,
        biggest.id,
        old_broken.id,
    ]
    assert [r.priority for r in rows] == [
        DUE_TODAY,
        BROKEN,
        NEWLY_LATE,
        NEWLY_LATE,
        BIGGEST,
        BIGGEST,
    ]
    assert [r.arrears for r in rows] == [
        Decimal(v) for v in ("8080.00", "3030.00", "5050.00", "2020.00", "20200.00", "1010.00")
    ]
    assert rows[0].reason == "promised KES 8,080.00 by today"
    assert rows[1].reason == "promise of KES 1,000.00 for 14/06 broken"
    assert rows[2].reason == "newly late: 3 days"
    assert rows[4].reason == "KES 20,200.00 in arrears, 40 days late"
    assert not_mine.id not in [r.loan_id for r in rows]
    # Page 2 of 4 a page: the last two, in the same order.
    second, _ = officer_desk(officer_id=officer.id, as_of=AS_OF, page=2, per_page=4)
    assert [r.loan_id for r in second] == [biggest.id, old_broken.id]


def test_a_promise_broken_yesterday_is_on_the_desk_this_morning_settled_or_not(
    product: LoanProduct,
) -> None:
    officer = make_staff("loan_officer")
    loan = late_loan(product, 20000, LATE_40, officer)
    newly = late_loan(product, 5000, LATE_3, officer)
    promise = promise_row(loan, "700", AS_OF - timedelta(days=1), "open", made=date(2026, 6, 8))
    # Before the morning job: still open, but its date has passed.
    rows, _ = officer_desk(officer_id=officer.id, as_of=AS_OF, page=1, per_page=25)
    assert [r.loan_id for r in rows] == [loan.id, newly.id]
    assert rows[0].reason == "promise of KES 700.00 for 14/06 passed unpaid"
    # The job settles it broken: still first, in words.
    assert promise_settle(promise, loan, as_of=AS_OF) == "broken"
    db.session.commit()
    rows, _ = officer_desk(officer_id=officer.id, as_of=AS_OF, page=1, per_page=25)
    assert rows[0].loan_id == loan.id and rows[0].reason.endswith("broken")
    # The day before its date it was just a big loan after the newly late one.
    earlier, _ = officer_desk(
        officer_id=officer.id, as_of=AS_OF - timedelta(days=2), page=1, per_page=25
    )
    assert [r.priority for r in earlier] == [NEWLY_LATE, BIGGEST]


def test_unassigned_loans_have_a_desk_of_their_own(product: LoanProduct) -> None:
    officer = make_staff("loan_officer")
    loan = late_loan(product, 5000, LATE_40, officer)
    loan.officer_id = None
    db.session.commit()
    rows, total = officer_desk(officer_id=None, as_of=AS_OF, page=1, per_page=25)
    assert total == 1 and rows[0].loan_id == loan.id
    assert loan_arrears(loan_id=loan.id, as_of=AS_OF) == Decimal("5050.00")


# --- contacts and promises ------------------------------------------------------------------


def test_a_call_is_logged_with_its_audit_row(product: LoanProduct) -> None:
    officer = make_staff("loan_officer")
    loan = late_loan(product, 5000, LATE_40, officer)
    log = collection_record(
        loan_id=loan.id,
        staff=officer,
        kind="call",
        outcome="no_answer",
        note="  rang twice  ",
        as_of=AS_OF,
    )
    assert (log.kind, log.outcome, log.note, log.promise_id) == (
        "call",
        "no_answer",
        "rang twice",
        None,
    )
    [row] = audits("collection.record")
    assert row.actor == f"staff:{officer.email}" and row.object_id == loan.loan_no
    assert row.after == {
        "contact_id": log.id,
        "kind": "call",
        "outcome": "no_answer",
        "promise_id": None,
    }
    events, more = loan_timeline(loan_id=loan.id, page=1, per_page=10)
    assert any(e.kind == "contact" and "no answer. rang twice" in e.text for e in events)
    assert not more


def test_a_promise_after_a_call_is_recorded_with_it(product: LoanProduct) -> None:
    officer = make_staff("loan_officer")
    loan = late_loan(product, 5000, LATE_40, officer)
    log = collection_record(
        loan_id=loan.id,
        staff=officer,
        kind="visit",
        outcome="promised",
        amount="2500",
        promised_date=AS_OF + timedelta(days=3),
        as_of=AS_OF,
    )
    promise = db.session.get(PromiseToPay, log.promise_id)
    assert (promise.amount, promise.promised_date, promise.status) == (
        Decimal("2500.00"),
        date(2026, 6, 18),
        "open",
    )
    assert (promise.channel, promise.recorded_by_id, promise.loan_id) == (
        "staff",
        officer.id,
        loan.id,
    )
    assert len(audits("promise.record")) == 1 and len(audits("collection.record")) == 1
    # The member is texted the promise, as on USSD.
    assert (
        db.session.scalar(select(func.count()).where(SmsMessage.template == "promise_recorded"))
        == 1
    )


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"outcome": "promised", "amount": "100"}, "needs the date"),
        ({"outcome": "promised", "promised_date": date(2026, 6, 18)}, "needs the amount"),
        ({"outcome": "contacted", "amount": "100"}, "with the outcome 'promised' only"),
        ({"outcome": "promised", "amount": "100", "promised_date": AS_OF}, "within 14 days"),
        ({"outcome": "sang"}, "the outcome is one of"),
        ({"outcome": "contacted", "kind": "fax"}, "the contact is one of"),
    ],
)
def test_a_contact_that_does_not_add_up_is_refused_and_nothing_written(
    product: LoanProduct, fields: dict, words: str
) -> None:
    officer = make_staff("loan_officer")
    loan = late_loan(product, 5000, LATE_40, officer)
    kwargs = {"kind": "call", **fields}
    with pytest.raises(CollectionError if "within" not in words else Exception, match=words):
        collection_record(loan_id=loan.id, staff=officer, as_of=AS_OF, **kwargs)
    db.session.rollback()
    assert (count(ContactLog), count(PromiseToPay)) == (0, 0)


def test_above_the_officers_limit_a_branch_manager_must_record_the_promise(
    product: LoanProduct,
) -> None:
    officer, manager = make_staff("loan_officer"), make_staff("branch_manager")
    officer.accept_limit = manager.accept_limit = Decimal("2000")
    db.session.commit()
    loan = late_loan(product, 5000, LATE_40, officer)
    ask = dict(kind="call", outcome="promised", promised_date=date(2026, 6, 20), as_of=AS_OF)

    with pytest.raises(PermissionDenied) as refused:
        collection_record(loan_id=loan.id, staff=officer, amount="2000.01", **ask)
    assert str(refused.value) == (
        "KES 2,000.01 is above your limit of KES 2,000.00: a branch manager must record it"
    )
    assert (count(ContactLog), count(PromiseToPay)) == (0, 0)
    # Up to the limit the officer records it alone; above it the supervisor does.
    log = collection_record(loan_id=loan.id, staff=manager, amount="4500", **ask)
    assert db.session.get(PromiseToPay, log.promise_id).recorded_by_id == manager.id


def test_roles_that_do_not_collect_cannot_log_a_call(product: LoanProduct) -> None:
    loan = late_loan(product, 5000, LATE_40, make_staff("loan_officer"))
    for role in ("compliance", "auditor", "admin"):
        with pytest.raises(PermissionDenied, match="cannot record collection calls"):
            collection_record(
                loan_id=loan.id,
                staff=make_staff(role),
                kind="call",
                outcome="contacted",
                as_of=AS_OF,
            )
    assert count(ContactLog) == 0


def test_a_loan_officer_works_only_their_own_book_whoever_calls_the_service(
    product: LoanProduct,
) -> None:
    """The desk refuses the page; the service refuses the write too (an API or a job that
    calls it gets the same answer), for another officer's loan and for nobody's."""
    mine, theirs = make_staff("loan_officer"), make_staff("loan_officer")
    loan = late_loan(product, 5000, LATE_40, theirs)
    unassigned = late_loan(product, 4000, LATE_40, theirs)
    unassigned.officer_id = None
    db.session.commit()
    for loan_id in (loan.id, unassigned.id):
        with pytest.raises(PermissionDenied, match="outside their own book"):
            collection_record(
                loan_id=loan_id,
                staff=mine,
                kind="call",
                outcome="promised",
                amount="1000",
                promised_date=AS_OF + timedelta(days=3),
                as_of=AS_OF,
            )
    assert count(ContactLog) == 0 and count(PromiseToPay) == 0
    manager = make_staff("branch_manager")
    collection_record(
        loan_id=unassigned.id, staff=manager, kind="call", outcome="contacted", as_of=AS_OF
    )
    assert count(ContactLog) == 1


def test_bulk_promises_each_for_what_the_loan_is_in_arrears(product: LoanProduct) -> None:
    officer = make_staff("loan_officer")
    first = late_loan(product, 5000, LATE_40, officer)  # 5,050 in arrears
    second = late_loan(product, 8000, LATE_3, officer)  # 8,080
    taken = late_loan(product, 3000, LATE_40, officer)
    current = late_loan(product, 4000, date(2026, 6, 1), officer)
    promise_row(taken, "100", date(2026, 6, 16), "open", made=date(2026, 6, 14))
    officer.accept_limit = Decimal("6000")
    db.session.commit()
    big = late_loan(product, 7000, LATE_40, officer)  # 7,070: above the officer's limit

    result = promise_bulk_record(
        loan_ids=[first.id, second.id, taken.id, current.id, big.id, first.id],
        staff=officer,
        promised_date=date(2026, 6, 22),
        as_of=AS_OF,
    )

    recorded = {p.loan_id: p.amount for p in result.recorded}
    assert recorded == {first.id: Decimal("5050.00")}
    refused = dict(result.refused)
    assert "open already" in refused[taken.loan_no]
    assert refused[current.loan_no] == "nothing is in arrears"
    assert "above your limit of KES 6,000.00" in refused[big.loan_no]
    assert "above your limit" in refused[second.loan_no]  # 8,080 > 6,000 too
    assert len(audits("promise.record")) == 1
    assert db.session.get(PromiseToPay, result.recorded[0].id).channel == "staff"


# --- settlement ----------------------------------------------------------------------------------


def test_promises_settle_kept_partly_or_broken_by_what_arrived(product: LoanProduct) -> None:
    officer = make_staff("loan_officer")
    loans = [late_loan(product, 5000, LATE_40, officer) for _ in range(3)]
    made, due = date(2026, 6, 10), date(2026, 6, 14)
    kept, partly, broken = (promise_row(loan, "1000", due, "open", made=made) for loan in loans)
    # Before the promise was made: not towards it.
    loan_repay(loan_id=loans[0].id, amount=300, reference="UEARLY0001", value_date=date(2026, 6, 9))
    loan_repay(
        loan_id=loans[0].id, amount=1200, reference="UKEPT00001", value_date=date(2026, 6, 11)
    )
    loan_repay(
        loan_id=loans[1].id, amount=400, reference="UPART00001", value_date=date(2026, 6, 13)
    )
    settled = []
    for promise, loan in zip((kept, partly, broken), loans, strict=True):
        assert promise_settle(promise, loan, as_of=due) in ("open", "kept")  # not decided yet
        settled.append((promise_settle(promise, loan, as_of=AS_OF), promise.paid_amount))
    db.session.commit()
    assert settled == [
        ("kept", Decimal("1000.00")),
        ("partly", Decimal("400.00")),
        ("broken", Decimal("0.00")),
    ]
    # One member each: 1 of 1 kept, 0 of 1, 0 of 1; the officer's month: 1 of 3 = 33.3%.
    assert member_promise_keeping(member_id=loans[0].member_id).rate == Decimal("100.0")
    assert member_promise_keeping(member_id=loans[1].member_id) == Fulfilment(0, 0, 0, 1)
    month = officer_promise_keeping(start=date(2026, 6, 1), end=date(2026, 7, 1))
    assert month[officer.id] == Fulfilment(kept=1, broken=1, open=0, partly=1)
    assert month[officer.id].rate == Decimal("33.3")
    by_month = monthly_promise_keeping(today=AS_OF, months=3, officer_id=officer.id)
    assert [m for m, _ in by_month] == [date(2026, 6, 1), date(2026, 5, 1), date(2026, 4, 1)]
    assert by_month[0][1].settled == 3 and by_month[1][1] == Fulfilment(0, 0, 0, 0)


# --- targets --------------------------------------------------------------------------------------


def test_targets_and_the_days_progress(product: LoanProduct) -> None:
    today = business_today()
    manager, officer, other = (
        make_staff("branch_manager"),
        make_staff("loan_officer"),
        make_staff("loan_officer"),
    )
    on = today - timedelta(days=45)
    mine = [late_loan(product, 5000, on, officer, as_of=today) for _ in range(2)]
    theirs = late_loan(product, 5000, on, other, as_of=today)
    collection_target_set(
        officer_id=officer.id, day=today, amount="9000", accounts=5, staff=manager, as_of=today
    )
    target = collection_target_set(
        officer_id=officer.id, day=today, amount="6000", accounts=4, staff=manager, as_of=today
    )
    assert count(CollectionTarget) == 1 and (target.amount, target.accounts) == (
        Decimal("6000.00"),
        4,
    )
    second = audits("collection.target")[1]
    assert second.before == {"amount": "9000.00", "accounts": 5}
    assert second.after == {"day": str(today), "amount": "6000.00", "accounts": 4}

    loan_repay(loan_id=mine[0].id, amount=700, reference="UTODAY0001", value_date=today)
    loan_repay(loan_id=mine[1].id, amount=300, reference="UTODAY0002", value_date=today)
    loan_repay(
        loan_id=mine[1].id, amount=50, reference="UYDAY00001", value_date=today - timedelta(days=1)
    )
    loan_repay(loan_id=theirs.id, amount=999, reference="UOTHER0001", value_date=today)
    for loan, outcome in ((mine[0], "no_answer"), (mine[0], "contacted"), (mine[1], "dispute")):
        collection_record(loan_id=loan.id, staff=officer, kind="call", outcome=outcome, as_of=today)
    collection_record(loan_id=theirs.id, staff=other, kind="call", outcome="contacted", as_of=today)

    progress = target_progress(officer_id=officer.id, day=today)
    # 700 + 300 today on the officer's loans; two distinct loans contacted (of 4 = 50%).
    assert (progress.collected, progress.contacted) == (Decimal("1000.00"), 2)
    assert (progress.collected_percent, progress.contacted_percent) == (16, 50)  # 1000/6000


def test_only_a_branch_manager_sets_targets_and_never_for_a_past_day(app: object) -> None:
    officer = make_staff("loan_officer")
    today = date(2026, 6, 15)
    with pytest.raises(PermissionDenied, match="assign loans and set targets"):
        collection_target_set(
            officer_id=officer.id, day=today, amount="1", accounts=1, staff=officer, as_of=today
        )
    with pytest.raises(CollectionError, match="today or a day ahead"):
        collection_target_set(
            officer_id=officer.id,
            day=today - timedelta(days=1),
            amount="1",
            accounts=1,
            staff=make_staff("branch_manager"),
            as_of=today,
        )
    assert count(CollectionTarget) == 0


# --- the leaderboard ------------------------------------------------------------------------------


def test_the_leaderboard_figures(product: LoanProduct) -> None:
    x, y, idle = make_staff("loan_officer"), make_staff("loan_officer"), make_staff("loan_officer")
    x.name = "Xavier"
    big = late_loan(product, 20000, LATE_40, x)  # principal 20,000, 40 days late
    small = late_loan(product, 5000, LATE_3, x)  # 5,000, 3 days
    fresh = late_loan(product, 15000, date(2026, 6, 1), x)  # 15,000, current
    theirs = late_loan(product, 8000, LATE_40, y)
    # 1,000 on the small loan: 50 interest, 950 principal -> 4,050 principal left.
    loan_repay(loan_id=small.id, amount=1000, reference="UJUNE00001", value_date=date(2026, 6, 3))
    loan_repay(loan_id=big.id, amount=200, reference="UJUNE00002", value_date=date(2026, 6, 14))
    loan_repay(loan_id=big.id, amount=500, reference="UMAY000001", value_date=date(2026, 5, 31))
    promise_row(big, "100", date(2026, 6, 2), "kept", made=date(2026, 5, 30))
    promise_row(small, "100", date(2026, 6, 8), "broken", made=date(2026, 6, 1))
    promise_row(fresh, "100", date(2026, 6, 9), "partly", made=date(2026, 6, 1))
    promise_row(theirs, "100", date(2026, 5, 9), "kept", made=date(2026, 5, 1))  # May

    rows = team_leaderboard(month=AS_OF)

    assert rows[0].officer_id == x.id  # the biggest collector first
    by_id = {r.officer_id: r for r in rows}
    mine = by_id[x.id]
    # 1,000 + 200 in June (the 500 was on 31 May).
    assert mine.collected == Decimal("1200.00") and mine.name == "Xavier"
    # The big loan: 500 on 31 May (200 interest, 300 principal), 200 in June (principal):
    # 19,500 left. Book: 19,500 + 4,050 + 15,000 = 38,550; PAR30 19,500 / 38,550 = 50.58%.
    assert (mine.book, mine.par30_principal, mine.par30) == (
        Decimal("38550.00"),
        Decimal("19500.00"),
        Decimal("50.6"),
    )
    assert mine.keeping == Fulfilment(kept=1, broken=1, open=0, partly=1)
    assert mine.keeping.rate == Decimal("33.3")
    assert (by_id[y.id].collected, by_id[y.id].par30, by_id[y.id].keeping.rate) == (
        Decimal("0"),
        Decimal("100.0"),
        None,  # its one promise fell due in May
    )
    assert (by_id[idle.id].book, by_id[idle.id].par30) == (Decimal("0"), None)
    may = {r.officer_id: r for r in team_leaderboard(month=date(2026, 5, 20))}
    assert may[x.id].collected == Decimal("500.00") and may[y.id].keeping.rate == Decimal("100.0")


# --- reassignment ---------------------------------------------------------------------------------


def test_a_branch_manager_reassigns_a_loan_audited(product: LoanProduct) -> None:
    manager, first, second = (
        make_staff("branch_manager"),
        make_staff("loan_officer"),
        make_staff("loan_officer"),
    )
    loan = late_loan(product, 5000, LATE_40, first)
    portfolio_assign(loan_id=loan.id, officer_id=second.id, staff=manager)
    assert db.session.get(Loan, loan.id).officer_id == second.id
    [row] = audits("portfolio.assign")
    assert (row.before, row.after) == ({"officer": first.email}, {"officer": second.email})
    assert row.actor == f"staff:{manager.email}" and row.object_id == loan.loan_no

    with pytest.raises(CollectionError, match="already"):
        portfolio_assign(loan_id=loan.id, officer_id=second.id, staff=manager)
    with pytest.raises(CollectionError, match="active loan officer or branch manager"):
        portfolio_assign(loan_id=loan.id, officer_id=make_staff("compliance").id, staff=manager)
    with pytest.raises(PermissionDenied, match="assign loans"):
        portfolio_assign(loan_id=loan.id, officer_id=first.id, staff=second)
    assert db.session.get(Loan, loan.id).officer_id == second.id
    assert len(audits("portfolio.assign")) == 1
