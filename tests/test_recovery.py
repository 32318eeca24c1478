"""Legal cases, hearings, recovery milestones and the write-off workflow
(app/services/recovery.py): each transition and its guard, the next-hearing rollup, the
overdue flag set once, and a write-off booked only by an approved board decision."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import select

from app.errors import SaccoError
from app.extensions import db
from app.models import (
    AuditLog,
    ContactLog,
    Hearing,
    LegalCase,
    LoanProduct,
    PromiseToPay,
    RecoveryMilestone,
    StaffUser,
    WriteOffRequest,
)
from app.services.loans import loan_repay
from app.services.permissions import PermissionDenied
from app.services.recovery import (
    RecoveryError,
    hearing_add,
    hearing_update,
    legal_case_file,
    legal_case_update,
    legal_rollup,
    milestone_done,
    milestone_start,
    milestones_overdue,
    write_off_decide,
    write_off_recommend,
)
from tests.helpers import assert_books_reconcile
from tests.loan_factories import (
    balance,
    make_loan,
    make_product,
    make_staff,
    receivables,
    reload,
    run_job,
)

DISBURSED = date(2026, 1, 31)  # V1's first installment falls due on 2026-02-28
DEFAULTED = date(2026, 4, 5)  # 36 days past due: in default (threshold 30)
TODAY = date(2026, 4, 10)


def defaulted_loan(as_of: date = DEFAULTED, product_id: int | None = None) -> int:
    product = db.session.get(LoanProduct, product_id) if product_id else make_product()
    loan = make_loan(product=product, on=DISBURSED)
    loan_id = loan.id
    run_job("loan-arrears", as_of)
    return loan_id


def staff_of(role: str) -> StaffUser:
    return make_staff(role)


def actions(object_type: str | None = None) -> list[str]:
    query = select(AuditLog.action).order_by(AuditLog.id)
    if object_type:
        query = query.where(AuditLog.object_type == object_type)
    return list(db.session.scalars(query))


def file_case(loan_id: int, manager: StaffUser, number: str = "E123/2026") -> LegalCase:
    return legal_case_file(
        loan_id=loan_id,
        staff=manager,
        court="Milimani Commercial Court",
        case_number=number,
        filing_date=date(2026, 4, 6),
        as_of=TODAY,
    )


# -- legal cases --------------------------------------------------------------------------


def test_a_branch_manager_files_a_case_and_moves_it_forward(app):
    loan_id = defaulted_loan()
    manager = staff_of("branch_manager")
    case = file_case(loan_id, manager)
    assert (case.status, case.loan_id, case.filed_by_id) == ("filed", loan_id, manager.id)
    for status in ("hearing", "judgment", "settled", "closed"):
        legal_case_update(case_id=case.id, staff=manager, status=status, as_of=TODAY)
        assert db.session.get(LegalCase, case.id).status == status
    assert actions()[-5:] == ["legal.file", *["legal.status"] * 4]


@pytest.mark.parametrize(
    ("path", "to", "message"),
    [
        ((), "filed", "is filed; it can become hearing, judgment, settled, withdrawn"),
        (("withdrawn",), "hearing", "is withdrawn; it can become closed, not hearing"),
        (("withdrawn", "closed"), "settled", "is closed; it can become nothing"),
        (("judgment",), "withdrawn", "is judgment; it can become settled, closed"),
        ((), "appealed", "a case is filed, hearing"),
    ],
)
def test_a_case_moves_only_forward(app, path, to, message):
    loan_id = defaulted_loan()
    manager = staff_of("branch_manager")
    case = file_case(loan_id, manager)
    for status in path:
        legal_case_update(case_id=case.id, staff=manager, status=status, as_of=TODAY)
    before = len(actions())
    with pytest.raises(RecoveryError, match=message):
        legal_case_update(case_id=case.id, staff=manager, status=to, as_of=TODAY)
    assert len(actions()) == before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"court": " "}, "the court is needed"),
        ({"case_number": ""}, "the case number is needed"),
        ({"filing_date": date(2026, 4, 11)}, "cannot be in the future"),
    ],
)
def test_filing_a_case_is_refused_in_words(app, changes, message):
    loan_id = defaulted_loan()
    manager = staff_of("branch_manager")
    values = {
        "court": "Milimani",
        "case_number": "E1/2026",
        "filing_date": date(2026, 4, 6),
        **changes,
    }
    with pytest.raises(RecoveryError, match=message):
        legal_case_file(loan_id=loan_id, staff=manager, as_of=TODAY, **values)
    assert db.session.scalars(select(LegalCase)).all() == []


def test_one_case_number_per_court(app):
    product_id = make_product().id
    first = defaulted_loan(product_id=product_id)
    second = defaulted_loan(product_id=product_id)
    manager = staff_of("branch_manager")
    file_case(first, manager)
    with pytest.raises(RecoveryError, match="already has a case number E123/2026"):
        file_case(second, manager)


def test_no_case_on_a_loan_not_disbursed_or_closed(app):
    loan = make_loan(product=make_product(), on=DISBURSED)
    loan_id = loan.id
    manager = staff_of("branch_manager")
    loan_repay(loan_id=loan_id, amount="20000", reference="PAYALL", value_date=date(2026, 2, 1))
    assert reload(loan_id).status == "closed"
    with pytest.raises(RecoveryError, match="is closed; legal and recovery actions"):
        file_case(loan_id, manager)


@pytest.mark.parametrize("role", ["loan_officer", "compliance", "auditor", "admin"])
def test_only_a_branch_manager_files_cases_and_hearings(app, role):
    loan_id = defaulted_loan()
    case = file_case(loan_id, staff_of("branch_manager"))
    other = staff_of(role)
    with pytest.raises(PermissionDenied, match="cannot file legal cases"):
        file_case(loan_id, other, number="E9/2026")
    with pytest.raises(PermissionDenied):
        hearing_add(case_id=case.id, staff=other, held_on=date(2026, 5, 1), as_of=TODAY)
    with pytest.raises(PermissionDenied):
        legal_case_update(case_id=case.id, staff=other, status="withdrawn", as_of=TODAY)


# -- hearings and the next-hearing rollup -------------------------------------------------------


def test_the_next_hearing_is_rolled_up_when_hearings_are_added_and_moved(app):
    loan_id = defaulted_loan()
    manager = staff_of("branch_manager")
    case = file_case(loan_id, manager)
    hearing_add(case_id=case.id, staff=manager, held_on=date(2026, 6, 1), as_of=TODAY)
    assert reload(loan_id).next_hearing_on == date(2026, 6, 1)
    early = hearing_add(case_id=case.id, staff=manager, held_on=date(2026, 5, 4), as_of=TODAY)
    assert reload(loan_id).next_hearing_on == date(2026, 5, 4)
    # A past hearing with its outcome does not count as the next one.
    hearing_add(
        case_id=case.id,
        staff=manager,
        held_on=date(2026, 4, 8),
        outcome="Mention; defendant absent",
        as_of=TODAY,
    )
    assert reload(loan_id).next_hearing_on == date(2026, 5, 4)
    hearing_update(hearing_id=early.id, staff=manager, held_on=date(2026, 7, 1), as_of=TODAY)
    assert reload(loan_id).next_hearing_on == date(2026, 6, 1)
    # A second case's earlier hearing is the loan's next.
    other = file_case(loan_id, manager, number="E77/2026")
    hearing_add(case_id=other.id, staff=manager, held_on=date(2026, 5, 20), as_of=TODAY)
    assert reload(loan_id).next_hearing_on == date(2026, 5, 20)
    # A withdrawn case's hearings stop counting.
    legal_case_update(case_id=other.id, staff=manager, status="withdrawn", as_of=TODAY)
    assert reload(loan_id).next_hearing_on == date(2026, 6, 1)


def test_legal_rollup_is_idempotent_and_replays_a_day(app):
    loan_id = defaulted_loan()
    manager = staff_of("branch_manager")
    case = file_case(loan_id, manager)
    for day in (date(2026, 5, 4), date(2026, 6, 1)):
        hearing_add(case_id=case.id, staff=manager, held_on=day, as_of=TODAY)
    # The day after the first hearing: the next one is 1 June.
    assert legal_rollup(as_of=date(2026, 5, 5)) == 1
    assert reload(loan_id).next_hearing_on == date(2026, 6, 1)
    assert legal_rollup(as_of=date(2026, 5, 5)) == 0  # a rerun changes nothing
    # The day of the first hearing counts it still (today's hearing is the next one).
    assert legal_rollup(as_of=date(2026, 5, 4)) == 1
    assert reload(loan_id).next_hearing_on == date(2026, 5, 4)
    # After the last hearing there is none.
    assert legal_rollup(as_of=date(2026, 6, 2)) == 1
    assert reload(loan_id).next_hearing_on is None
    assert legal_rollup(as_of=date(2026, 6, 2)) == 0


@pytest.mark.parametrize(
    ("held_on", "outcome", "message"),
    [
        (date(2026, 5, 1), "Adjourned", "has not happened yet; no outcome until then"),
        (date(2026, 4, 1), None, "the case was filed on 2026-04-06; a hearing comes after"),
    ],
)
def test_hearing_guards(app, held_on, outcome, message):
    loan_id = defaulted_loan()
    manager = staff_of("branch_manager")
    case = file_case(loan_id, manager)
    with pytest.raises(RecoveryError, match=message):
        hearing_add(case_id=case.id, staff=manager, held_on=held_on, outcome=outcome, as_of=TODAY)
    assert db.session.scalars(select(Hearing)).all() == []


def test_hearing_outcome_only_once_its_day_came_and_then_it_is_not_moved(app):
    loan_id = defaulted_loan()
    manager = staff_of("branch_manager")
    case = file_case(loan_id, manager)
    hearing = hearing_add(case_id=case.id, staff=manager, held_on=date(2026, 4, 20), as_of=TODAY)
    with pytest.raises(RecoveryError, match="has not happened yet"):
        hearing_update(hearing_id=hearing.id, staff=manager, outcome="Judgment", as_of=TODAY)
    with pytest.raises(RecoveryError, match="already has a hearing on 2026-04-20"):
        hearing_add(case_id=case.id, staff=manager, held_on=date(2026, 4, 20), as_of=TODAY)
    later = date(2026, 4, 21)
    hearing_update(hearing_id=hearing.id, staff=manager, outcome="Judgment entered", as_of=later)
    assert db.session.get(Hearing, hearing.id).outcome == "Judgment entered"
    with pytest.raises(RecoveryError, match="with its outcome recorded is not moved"):
        hearing_update(hearing_id=hearing.id, staff=manager, held_on=date(2026, 5, 1), as_of=later)
    legal_case_update(case_id=case.id, staff=manager, status="withdrawn", as_of=later)
    with pytest.raises(RecoveryError, match="is withdrawn; it has no more hearings"):
        hearing_add(case_id=case.id, staff=manager, held_on=date(2026, 5, 1), as_of=later)


# -- recovery milestones ------------------------------------------------------------------------


def test_milestones_start_and_are_marked_done(app):
    loan_id = defaulted_loan()
    manager = staff_of("branch_manager")
    step = milestone_start(
        loan_id=loan_id,
        staff=manager,
        kind="demand_letter",
        due_date=date(2026, 4, 24),
        as_of=TODAY,
    )
    with pytest.raises(RecoveryError, match="a demand letter due 2026-04-24 is open"):
        milestone_start(
            loan_id=loan_id, staff=manager, kind="demand_letter", due_date=TODAY, as_of=TODAY
        )
    # Another kind may run beside it.
    milestone_start(
        loan_id=loan_id, staff=manager, kind="auctioneer", due_date=date(2026, 5, 30), as_of=TODAY
    )
    with pytest.raises(RecoveryError, match="cannot be in the future"):
        milestone_done(milestone_id=step.id, staff=manager, done_on=date(2026, 4, 11), as_of=TODAY)
    milestone_done(milestone_id=step.id, staff=manager, done_on=TODAY, as_of=TODAY)
    assert db.session.get(RecoveryMilestone, step.id).done_on == TODAY
    with pytest.raises(RecoveryError, match="was marked done on 2026-04-10"):
        milestone_done(milestone_id=step.id, staff=manager, done_on=TODAY, as_of=TODAY)
    # Done, the kind may start again.
    milestone_start(
        loan_id=loan_id, staff=manager, kind="demand_letter", due_date=TODAY, as_of=TODAY
    )
    assert actions()[-4:] == ["recovery.start", "recovery.start", "recovery.done", "recovery.start"]


@pytest.mark.parametrize(
    ("kind", "due", "message"),
    [
        ("bailiff", date(2026, 5, 1), "one of: demand letter, auctioneer, foreclosure, dacion"),
        ("foreclosure", date(2026, 4, 9), "the due date cannot be in the past"),
    ],
)
def test_milestone_guards(app, kind, due, message):
    loan_id = defaulted_loan()
    with pytest.raises(RecoveryError, match=message):
        milestone_start(
            loan_id=loan_id, staff=staff_of("branch_manager"), kind=kind, due_date=due, as_of=TODAY
        )


@pytest.mark.parametrize("role", ["loan_officer", "compliance", "auditor", "admin"])
def test_only_a_branch_manager_starts_recovery(app, role):
    loan_id = defaulted_loan()
    with pytest.raises(PermissionDenied, match="cannot start recovery actions"):
        milestone_start(
            loan_id=loan_id, staff=staff_of(role), kind="dacion", due_date=TODAY, as_of=TODAY
        )


def test_an_overdue_milestone_is_flagged_once(app):
    loan_id = defaulted_loan()
    manager = staff_of("branch_manager")
    due = [date(2026, 4, 15), date(2026, 4, 20)]
    late, later = (
        milestone_start(loan_id=loan_id, staff=manager, kind=kind, due_date=day, as_of=TODAY).id
        for kind, day in zip(("demand_letter", "auctioneer"), due, strict=True)
    )
    done = milestone_start(
        loan_id=loan_id, staff=manager, kind="foreclosure", due_date=date(2026, 4, 12), as_of=TODAY
    ).id
    milestone_done(milestone_id=done, staff=manager, done_on=TODAY, as_of=TODAY)

    assert milestones_overdue(as_of=date(2026, 4, 15)) == []  # due that day: not late yet
    assert milestones_overdue(as_of=date(2026, 4, 16)) == [late]
    assert milestones_overdue(as_of=date(2026, 4, 16)) == []  # a rerun flags nothing again
    assert milestones_overdue(as_of=date(2026, 4, 25)) == [later]
    assert milestones_overdue(as_of=date(2026, 4, 30)) == []
    flags = {m.id: m.overdue_flagged_on for m in db.session.scalars(select(RecoveryMilestone))}
    assert flags == {late: date(2026, 4, 16), later: date(2026, 4, 25), done: None}
    assert actions("recovery_milestone").count("recovery.overdue") == 2


# -- write-off ----------------------------------------------------------------------------------


def test_recommendation_attaches_the_recovery_history(app):
    loan_id = defaulted_loan()
    manager = staff_of("branch_manager")
    loan = reload(loan_id)
    db.session.add_all(
        [
            ContactLog(loan_id=loan_id, staff_id=manager.id, kind="call", outcome="no_answer"),
            ContactLog(loan_id=loan_id, staff_id=manager.id, kind="visit", outcome="promised"),
            PromiseToPay(
                member_id=loan.member_id,
                loan_id=loan_id,
                amount=Decimal("500"),
                promised_date=date(2026, 3, 20),
                status="broken",
            ),
        ]
    )
    db.session.commit()
    file_case(loan_id, manager)
    milestone_start(
        loan_id=loan_id, staff=manager, kind="demand_letter", due_date=TODAY, as_of=TODAY
    )

    request = write_off_recommend(
        loan_id=loan_id, staff=manager, reason="Member emigrated", as_of=TODAY
    )

    history = db.session.get(WriteOffRequest, request.id).history
    assert history["owed"] == "10661.86"  # V1: 10,000 principal + 661.86 interest
    assert history["late_since"] == "2026-02-28"
    assert history["default_since"] == "2026-03-31"  # 31 days late
    assert history["paid_since_default"] == "0.00"
    assert history["contacts"]["total"] == 2
    assert history["contacts"]["by_outcome"] == {"no_answer": 1, "promised": 1}
    assert history["promises"] == {"broken": 1}
    assert [c["case_number"] for c in history["cases"]] == ["E123/2026"]
    assert history["milestones"] == [
        {"kind": "demand_letter", "due_date": "2026-04-10", "done_on": None}
    ]
    assert request.status == "recommended" and reload(loan_id).status == "active"


def test_one_open_recommendation_per_loan(app):
    loan_id = defaulted_loan()
    manager = staff_of("branch_manager")
    write_off_recommend(loan_id=loan_id, staff=manager, reason="Cannot trace", as_of=TODAY)
    with pytest.raises(RecoveryError, match="waits for the board's decision"):
        write_off_recommend(loan_id=loan_id, staff=manager, reason="Again", as_of=TODAY)
    assert len(db.session.scalars(select(WriteOffRequest)).all()) == 1


@pytest.mark.parametrize(
    ("late_until", "reason", "message"),
    [
        (date(2026, 3, 20), "Cannot trace", "not in default; only a loan in default"),
        (DEFAULTED, "  ", "the reason is needed"),
    ],
)
def test_recommendation_guards(app, late_until, reason, message):
    loan_id = defaulted_loan(as_of=late_until)
    with pytest.raises(RecoveryError, match=message):
        write_off_recommend(
            loan_id=loan_id, staff=staff_of("branch_manager"), reason=reason, as_of=TODAY
        )
    assert db.session.scalars(select(WriteOffRequest)).all() == []


@pytest.mark.parametrize("role", ["compliance", "loan_officer", "auditor", "admin"])
def test_only_a_branch_manager_recommends(app, role):
    loan_id = defaulted_loan()
    with pytest.raises(PermissionDenied, match="cannot recommend write-offs"):
        write_off_recommend(loan_id=loan_id, staff=staff_of(role), reason="x", as_of=TODAY)


@pytest.mark.parametrize("role", ["branch_manager", "compliance"])
def test_an_approved_board_decision_writes_the_loan_off(app, role):
    loan_id = defaulted_loan()
    request = write_off_recommend(
        loan_id=loan_id, staff=staff_of("branch_manager"), reason="Emigrated", as_of=TODAY
    )
    decider = staff_of(role)

    write_off_decide(
        request_id=request.id,
        staff=decider,
        decision="approve",
        decision_date=TODAY,
        minute_ref="BOD/2026/04/7",
        as_of=TODAY,
    )

    done = db.session.get(WriteOffRequest, request.id)
    assert (done.status, done.decision_date, done.minute_ref, done.decided_by_id) == (
        "approved",
        TODAY,
        "BOD/2026/04/7",
        decider.id,
    )
    loan = reload(loan_id)
    assert loan.status == "written_off" and loan.closed_on == TODAY
    assert loan.written_off_amount == Decimal("10661.86")
    assert set(receivables(loan).values()) == {Decimal("0.00")}
    assert balance("GL-WRITE-OFF") == Decimal("10661.86")
    assert actions()[-2:] == ["write_off.approve", "loan.write_off"]

    # Money that comes in afterwards is a recovery, counted on the loan.
    loan_repay(loan_id=loan_id, amount="1500", reference="RECOV1", value_date=date(2026, 5, 2))
    loan = reload(loan_id)
    assert loan.recovered_amount == Decimal("1500.00")
    assert balance("GL-INCOME-RECOVERY") == Decimal("1500.00")

    # The decision is recorded once.
    with pytest.raises(RecoveryError, match="recorded already: approved on 2026-04-10"):
        write_off_decide(
            request_id=request.id,
            staff=decider,
            decision="decline",
            decision_date=TODAY,
            minute_ref="BOD/2",
            as_of=TODAY,
        )


def written_off_loan() -> int:
    """A defaulted loan the board wrote off today."""
    loan_id = defaulted_loan()
    request = write_off_recommend(
        loan_id=loan_id, staff=staff_of("branch_manager"), reason="Emigrated", as_of=TODAY
    )
    write_off_decide(
        request_id=request.id,
        staff=staff_of("compliance"),
        decision="approve",
        decision_date=TODAY,
        minute_ref="BOD/2026/04/8",
        as_of=TODAY,
    )
    return loan_id


def test_recoveries_stop_at_what_was_written_off_and_the_rest_is_the_members_savings(app):
    """Two recoveries that together pass the written-off amount: the second recovers only
    what is still unrecovered, the excess is the member's savings, and the books agree."""
    loan_id = written_off_loan()
    loan = reload(loan_id)
    written_off = loan.written_off_amount
    assert written_off == Decimal("10661.86")
    savings = f"SAV-{loan.member.member_no}"
    savings_before = balance(savings)

    first = loan_repay(loan_id=loan_id, amount="6000", reference="RECOV1", value_date=TODAY)
    assert (first.recovered, first.to_savings) == (Decimal("6000.00"), Decimal("0.00"))
    second = loan_repay(
        loan_id=loan_id, amount="6000", reference="RECOV2", value_date=date(2026, 5, 2)
    )

    unrecovered = written_off - Decimal("6000")
    assert (second.recovered, second.to_savings) == (unrecovered, Decimal("6000") - unrecovered)
    assert second.balance_left == Decimal("0.00")
    loan = reload(loan_id)
    assert loan.recovered_amount == written_off
    assert balance("GL-INCOME-RECOVERY") == written_off
    assert balance(savings) == savings_before + Decimal("12000") - written_off
    assert_books_reconcile()

    # Fully recovered: a later payment is all savings.
    third = loan_repay(
        loan_id=loan_id, amount="500", reference="RECOV3", value_date=date(2026, 5, 3)
    )
    assert (third.recovered, third.to_savings) == (Decimal("0.00"), Decimal("500.00"))
    assert reload(loan_id).recovered_amount == written_off
    assert balance(savings) == savings_before + Decimal("12500") - written_off


def test_the_last_shilling_written_off_is_recovered_too(app):
    loan_id = written_off_loan()
    written_off = reload(loan_id).written_off_amount
    loan_repay(loan_id=loan_id, amount=written_off - 1, reference="RECOV1", value_date=TODAY)
    last = loan_repay(loan_id=loan_id, amount="500", reference="RECOV2", value_date=TODAY)
    assert (last.recovered, last.to_savings) == (Decimal("1.00"), Decimal("499.00"))
    assert reload(loan_id).recovered_amount == written_off
    assert balance("GL-INCOME-RECOVERY") == written_off
    assert_books_reconcile()


def test_a_declined_decision_leaves_the_loan_and_a_new_recommendation_may_follow(app):
    loan_id = defaulted_loan()
    manager = staff_of("branch_manager")
    request = write_off_recommend(loan_id=loan_id, staff=manager, reason="x", as_of=TODAY)
    write_off_decide(
        request_id=request.id,
        staff=staff_of("compliance"),
        decision="decline",
        decision_date=TODAY,
        minute_ref="BOD/9",
        as_of=TODAY,
    )
    assert db.session.get(WriteOffRequest, request.id).status == "declined"
    loan = reload(loan_id)
    assert (loan.status, loan.written_off_amount) == ("active", Decimal("0.00"))
    assert receivables(loan)["principal"] == Decimal("10000.00")
    assert balance("GL-WRITE-OFF") == Decimal("0.00")
    assert "loan.write_off" not in actions()
    again = write_off_recommend(loan_id=loan_id, staff=manager, reason="Later", as_of=TODAY)
    assert again.status == "recommended"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"decision": "defer"}, "the board approves or declines"),
        ({"minute_ref": " "}, "the board minute reference is needed"),
        ({"decision_date": date(2026, 4, 11)}, "the decision date cannot be in the future"),
        ({"decision_date": date(2026, 1, 1)}, "it was recommended on"),
    ],
)
def test_decision_guards_write_nothing(app, changes, message):
    loan_id = defaulted_loan()
    request = write_off_recommend(
        loan_id=loan_id, staff=staff_of("branch_manager"), reason="x", as_of=TODAY
    )
    values = {
        "decision": "approve",
        "decision_date": TODAY,
        "minute_ref": "BOD/1",
        **changes,
    }
    compliance = staff_of("compliance")
    before = actions()
    with pytest.raises(RecoveryError, match=message):
        write_off_decide(request_id=request.id, staff=compliance, as_of=TODAY, **values)
    assert actions() == before
    assert db.session.get(WriteOffRequest, request.id).status == "recommended"
    assert reload(loan_id).status == "active"


@pytest.mark.parametrize("role", ["loan_officer", "auditor", "admin"])
def test_other_roles_cannot_record_the_decision(app, role):
    loan_id = defaulted_loan()
    request = write_off_recommend(
        loan_id=loan_id, staff=staff_of("branch_manager"), reason="x", as_of=TODAY
    )
    with pytest.raises(PermissionDenied, match="cannot record board decisions"):
        write_off_decide(
            request_id=request.id,
            staff=staff_of(role),
            decision="approve",
            decision_date=TODAY,
            minute_ref="BOD/1",
            as_of=TODAY,
        )
    assert reload(loan_id).status == "active"


def test_an_approval_the_loan_no_longer_allows_records_nothing(app):
    """Paid back into good standing after the recommendation: the write-off service
    refuses, and the decision is not recorded either (one unit)."""
    loan_id = defaulted_loan()
    request_id = write_off_recommend(
        loan_id=loan_id, staff=staff_of("branch_manager"), reason="x", as_of=TODAY
    ).id
    loan_repay(loan_id=loan_id, amount="3000", reference="CATCHUP", value_date=TODAY)
    run_job("loan-arrears", TODAY)
    assert not reload(loan_id).in_default
    compliance = staff_of("compliance")
    before = actions()
    with pytest.raises(SaccoError, match="not in default"):
        write_off_decide(
            request_id=request_id,
            staff=compliance,
            decision="approve",
            decision_date=TODAY,
            minute_ref="BOD/1",
            as_of=TODAY,
        )
    assert actions() == before
    assert db.session.get(WriteOffRequest, request_id).status == "recommended"
    assert reload(loan_id).status == "active"
