"""Compromise agreements through their services: every transition and its guard, the
schedule that must add up, the one agreement in force per loan (sequentially and as a
PostgreSQL race), payments counted against the schedule, completion that settles the loan
(the discount written off, the books reconciled by the autouse fixture), and the default
scan with its as-of date."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import Agreement, AgreementInstallment, AuditLog, Loan, StaffUser
from app.selectors.loans import loan_debt
from app.services.agreements import (
    AgreementError,
    Allocation,
    ScheduleLine,
    agreement_add_note,
    agreement_allocate,
    agreement_approve,
    agreement_check_default,
    agreement_delete,
    agreement_draft,
    agreement_needs_supervisor,
    agreement_return,
    agreement_schedule_parse,
    agreement_submit,
    agreement_update,
    agreements_check_default,
    agreements_in_force_ids,
)
from app.services.ledger import DuplicatePosting
from app.services.loans import loan_repay, loan_write_off
from app.services.locking import lock_row
from app.services.permissions import PermissionDenied
from tests.helpers import Worker, wait_until_blocked
from tests.loan_factories import (
    balance,
    make_loan,
    make_loan_in_default,
    make_product,
    make_staff,
    receivables,
    reload,
    run_job,
)

D = Decimal
TODAY = date(2026, 4, 2)  # the day agreements are drafted and approved in these tests
SCHEDULE = [(date(2026, 5, 1), "4000"), (date(2026, 6, 1), "4000")]
SETTLEMENT = D("8000.00")


def _owed(loan_id: int) -> Decimal:
    return loan_debt(loan_id=loan_id).total


def _draft(loan_id: int, staff: StaffUser, **changes: object) -> Agreement:
    figures: dict[str, object] = {
        "settlement_amount": SETTLEMENT,
        "discount": _owed(loan_id) - SETTLEMENT,
        "schedule": SCHEDULE,
        "as_of": TODAY,
    }
    figures.update(changes)
    return agreement_draft(loan_id=loan_id, staff=staff, **figures)  # type: ignore[arg-type]


def _approved(loan_id: int) -> tuple[int, StaffUser, StaffUser]:
    officer, manager = make_staff("loan_officer"), make_staff("branch_manager")
    agreement = _draft(loan_id, officer)
    agreement_submit(agreement_id=agreement.id, staff=officer)
    agreement_approve(agreement_id=agreement.id, staff=manager, as_of=TODAY)
    return agreement.id, officer, manager


def _get(agreement_id: int) -> Agreement:
    db.session.expire_all()
    agreement = db.session.get(Agreement, agreement_id)
    assert agreement is not None
    return agreement


def _audit_of(agreement_id: int, action: str) -> tuple[str, dict | None, dict | None]:
    """Who did `action` to the agreement, and its before and after (the only such row)."""
    [row] = db.session.scalars(
        select(AuditLog).where(
            AuditLog.object_type == "agreement",
            AuditLog.object_id == str(agreement_id),
            AuditLog.action == action,
        )
    )
    return row.actor, row.before, row.after


def _approval(agreement_id: int, manager_id: int) -> Callable[[], Agreement]:
    """The manager's approval, for a thread of its own (its own session loads the staff)."""

    def run() -> Agreement:
        staff = db.session.get(StaffUser, manager_id)
        assert staff is not None
        return agreement_approve(agreement_id=agreement_id, staff=staff, as_of=TODAY)

    return run


def _actions(agreement_id: int) -> list[str]:
    return list(
        db.session.scalars(
            select(AuditLog.action)
            .where(AuditLog.object_type == "agreement", AuditLog.object_id == str(agreement_id))
            .order_by(AuditLog.id)
        )
    )


# -- draft -------------------------------------------------------------------------------


def test_a_draft_of_a_loan_in_default_keeps_its_figures_and_schedule(app: Flask) -> None:
    loan_id = make_loan_in_default()
    owed = _owed(loan_id)
    officer = make_staff("loan_officer")
    agreement = _draft(loan_id, officer, note="member lost his job")
    agreement = _get(agreement.id)
    assert agreement.status == "draft"
    assert agreement.settlement_amount == SETTLEMENT
    assert agreement.discount == owed - SETTLEMENT
    assert (agreement.grace_days, agreement.default_threshold_days) == (3, 30)
    assert [(r.number, r.due_date, r.amount, r.paid) for r in agreement.installments] == [
        (1, date(2026, 5, 1), D("4000.00"), D("0.00")),
        (2, date(2026, 6, 1), D("4000.00"), D("0.00")),
    ]
    assert (agreement.drafted_by_id, agreement.paid_amount) == (officer.id, D("0.00"))
    assert _actions(agreement.id) == ["agreement.draft"]
    # The trail keeps the figures as the drafter saw them.
    assert _audit_of(agreement.id, "agreement.draft") == (
        f"staff:{officer.email}",
        None,
        {
            "loan": reload(loan_id).loan_no,
            "owed": f"{owed:.2f}",
            "settlement": "8000.00",
            "discount": f"{owed - SETTLEMENT:.2f}",
            "installments": 2,
            "grace_days": 3,
            "default_threshold_days": 30,
            "needs_supervisor": False,
        },
    )


def test_grace_and_threshold_days_are_editable_per_agreement(app: Flask) -> None:
    loan_id = make_loan_in_default()
    agreement = _draft(
        loan_id, make_staff("loan_officer"), grace_days="5", default_threshold_days=14
    )
    assert (_get(agreement.id).grace_days, _get(agreement.id).default_threshold_days) == (5, 14)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        (
            {"schedule": [(date(2026, 5, 1), "4000"), (date(2026, 6, 1), "3000")]},
            "the installments add up to KES 7,000.00, KES 1,000.00 short of the settlement of "
            "KES 8,000.00",
        ),
        (
            {"schedule": [(date(2026, 5, 1), "4000"), (date(2026, 6, 1), "4500")]},
            "the installments add up to KES 8,500.00, KES 500.00 more than the settlement of "
            "KES 8,000.00",
        ),
        (
            {"schedule": [(date(2026, 6, 1), "4000"), (date(2026, 5, 1), "4000")]},
            "installment 2 (2026-05-01) must fall after installment 1 (2026-06-01)",
        ),
        (
            {"schedule": [(date(2026, 5, 1), "4000"), (date(2026, 5, 1), "4000")]},
            "installment 2 (2026-05-01) must fall after installment 1 (2026-05-01)",
        ),
        (
            {"schedule": [(date(2026, 4, 2), "4000"), (date(2026, 6, 1), "4000")]},
            "installment 1 is due 2026-04-02: dates must be after today (2026-04-02)",
        ),
        (
            {"schedule": [(date(2026, 5, 1), "0"), (date(2026, 6, 1), "8000")]},
            "an amount must be more than zero",
        ),
        ({"schedule": []}, "the schedule needs at least one installment"),
        (
            {"schedule": [(date(2026, 5, 1) + timedelta(days=n), "100") for n in range(61)]},
            "the schedule has more than 60 installments",
        ),
        ({"discount": "a little"}, "the discount is not a number"),
        ({"discount": "-1"}, "the discount cannot be negative"),
        ({"discount": "0.005"}, "the discount has fractions of a cent"),
        (
            {"discount": "1"},
            "loan {loan_no} owes {owed} now: the settlement (KES 8,000.00) and the discount "
            "(KES 1.00) must add up to it",
        ),
        ({"settlement_amount": "0"}, "the settlement must be more than zero"),
        ({"grace_days": "-1"}, "grace days must be 0 to 3650 days"),
        ({"grace_days": "3651"}, "grace days must be 0 to 3650 days"),
        ({"default_threshold_days": "0"}, "the default threshold must be 1 to 3650 days"),
    ],
)
def test_a_draft_that_does_not_add_up_is_refused_in_words_and_nothing_is_kept(
    app: Flask, changes: dict[str, object], words: str
) -> None:
    loan_id = make_loan_in_default()
    loan_no, owed = reload(loan_id).loan_no, _owed(loan_id)
    with pytest.raises(AgreementError) as refused:
        _draft(loan_id, make_staff("loan_officer"), **changes)
    assert str(refused.value) == words.format(loan_no=loan_no, owed=f"KES {owed:,.2f}")
    db.session.rollback()
    assert db.session.scalars(select(Agreement)).all() == []


def test_a_draft_at_the_limits_is_kept(app: Flask) -> None:
    """Sixty installments, 3,650 days of grace, a blank discount (none: the settlement is
    the whole debt) are all allowed."""
    loan_id = make_loan_in_default()
    owed = _owed(loan_id)
    first = date(2026, 5, 1)
    schedule = [(first + timedelta(days=30 * n), "100") for n in range(59)]
    schedule.append((first + timedelta(days=30 * 59), owed - D("5900")))
    agreement = _draft(
        loan_id,
        make_staff("loan_officer"),
        settlement_amount=owed,
        discount="  ",
        schedule=schedule,
        grace_days="3650",
        default_threshold_days="3650",
    )
    agreement = _get(agreement.id)
    assert (agreement.discount, len(agreement.installments)) == (D("0.00"), 60)
    assert (agreement.grace_days, agreement.default_threshold_days) == (3650, 3650)


def test_a_discount_of_fifty_cents_is_a_discount(app: Flask) -> None:
    loan_id = make_loan_in_default()
    owed = _owed(loan_id)
    schedule = [(date(2026, 5, 1), owed - D("0.50"))]
    agreement = _draft(
        loan_id,
        make_staff("loan_officer"),
        settlement_amount=owed - D("0.50"),
        discount="0.50",
        schedule=schedule,
    )
    assert _get(agreement.id).discount == D("0.50")


def test_only_a_loan_in_default_gets_an_agreement(app: Flask) -> None:
    loan = make_loan(product=make_product("V1"), on=date(2026, 3, 1))
    loan_id, loan_no = loan.id, loan.loan_no
    officer = make_staff("loan_officer")
    with pytest.raises(AgreementError) as refused:
        _draft(loan_id, officer, discount="0")
    assert str(refused.value) == (
        f"loan {loan_no} is not in default; compromise agreements are for loans in default only"
    )
    with pytest.raises(AgreementError) as refused:
        agreement_draft(
            loan_id=loan_id + 100,
            staff=officer,
            settlement_amount=SETTLEMENT,
            schedule=SCHEDULE,
            as_of=TODAY,
        )
    assert str(refused.value) == f"no loan {loan_id + 100}"


def test_an_agreement_that_does_not_exist_is_named(app: Flask) -> None:
    with pytest.raises(AgreementError) as refused:
        agreement_submit(agreement_id=999999, staff=make_staff("loan_officer"))
    assert str(refused.value) == "no agreement 999999"


def test_roles_without_agreement_draft_are_refused(app: Flask) -> None:
    loan_id = make_loan_in_default()
    for role in ("compliance", "auditor", "admin"):
        with pytest.raises(PermissionDenied, match="cannot draft compromise agreements"):
            _draft(loan_id, make_staff(role))


def test_a_typed_schedule_is_read_line_by_line(app: Flask) -> None:
    assert agreement_schedule_parse("2026-05-01 4,000\n\n2026-06-01, 4000.50\n") == [
        ScheduleLine(date(2026, 5, 1), D("4000.00")),
        ScheduleLine(date(2026, 6, 1), D("4000.50")),
    ]
    with pytest.raises(AgreementError, match="schedule line 2 should read like"):
        agreement_schedule_parse("2026-05-01 4000\nnext month 4000")
    with pytest.raises(AgreementError, match="2026-02-30 is no date"):
        agreement_schedule_parse("2026-02-30 4000")
    with pytest.raises(AgreementError, match="^an amount must be more than zero$"):
        agreement_schedule_parse("2026-05-01 0")
    assert agreement_schedule_parse("") == []  # nothing typed: the draft says what is missing


# -- submit, approve, return -------------------------------------------------------------


def test_draft_submitted_approved_by_a_manager_who_did_not_draft_it(app: Flask) -> None:
    loan_id = make_loan_in_default()
    agreement_id, officer, manager = _approved(loan_id)
    agreement = _get(agreement_id)
    assert agreement.status == "approved"  # its first date (1 May) has not come yet
    assert agreement.approved_by_id == manager.id and agreement.approved_at is not None
    assert agreement.submitted_at is not None and agreement.activated_on is None
    assert _actions(agreement_id) == ["agreement.draft", "agreement.submit", "agreement.approve"]


def test_only_the_drafter_submits(app: Flask) -> None:
    loan_id = make_loan_in_default()
    agreement = _draft(loan_id, make_staff("loan_officer"))
    with pytest.raises(
        AgreementError, match="^only the staff member who drafted an agreement submits it$"
    ):
        agreement_submit(agreement_id=agreement.id, staff=make_staff("loan_officer"))
    assert _get(agreement.id).status == "draft"


def test_the_drafter_cannot_approve_and_a_loan_officer_is_refused(app: Flask) -> None:
    loan_id = make_loan_in_default()
    drafter = make_staff("branch_manager")
    agreement = _draft(loan_id, drafter)
    agreement_submit(agreement_id=agreement.id, staff=drafter)
    with pytest.raises(
        AgreementError, match="^the staff member who drafted an agreement cannot also approve it$"
    ):
        agreement_approve(agreement_id=agreement.id, staff=drafter, as_of=TODAY)
    with pytest.raises(PermissionDenied, match="loan officer staff cannot approve compromise"):
        agreement_approve(agreement_id=agreement.id, staff=make_staff("loan_officer"))
    assert _get(agreement.id).status == "submitted"


def test_only_submitted_agreements_are_approved(app: Flask) -> None:
    loan_id = make_loan_in_default()
    agreement = _draft(loan_id, make_staff("loan_officer"))
    refused = f"^agreement {agreement.id} is draft; only submitted agreements are approved$"
    with pytest.raises(AgreementError, match=refused):
        agreement_approve(agreement_id=agreement.id, staff=make_staff(), as_of=TODAY)


def test_a_manager_returns_a_submitted_agreement_with_a_reason(app: Flask) -> None:
    loan_id = make_loan_in_default()
    officer, manager = make_staff("loan_officer"), make_staff("branch_manager")
    agreement = _draft(loan_id, officer)
    with pytest.raises(AgreementError, match="only submitted agreements can be returned"):
        agreement_return(agreement_id=agreement.id, staff=manager, reason="too long")
    agreement_submit(agreement_id=agreement.id, staff=officer)
    with pytest.raises(AgreementError, match="say why"):
        agreement_return(agreement_id=agreement.id, staff=manager, reason=" ")
    agreement_return(agreement_id=agreement.id, staff=manager, reason="ask for 9,000")
    assert _get(agreement.id).status == "draft" and _get(agreement.id).submitted_at is None


def test_a_return_names_the_manager_and_keeps_the_reason_for_the_drafter(app: Flask) -> None:
    """The drafter reads why in the agreement's history: the audit row names the manager
    who sent it back and carries the reason; no reason at all (None) is refused in the
    words the console shows. (Found by mutation testing, issue 23.)"""
    loan_id = make_loan_in_default()
    officer, manager = make_staff("loan_officer"), make_staff("branch_manager")
    agreement = _draft(loan_id, officer)
    agreement_submit(agreement_id=agreement.id, staff=officer)
    for blank in (None, "", "  "):
        with pytest.raises(AgreementError) as refused:
            agreement_return(agreement_id=agreement.id, staff=manager, reason=blank)  # type: ignore[arg-type]
        assert str(refused.value) == "say why the agreement goes back to its drafter"
    assert _get(agreement.id).status == "submitted"
    agreement_return(agreement_id=agreement.id, staff=manager, reason="  ask for 9,000 ")
    row = db.session.scalar(select(AuditLog).where(AuditLog.action == "agreement.return"))
    assert row is not None
    assert (row.actor, row.object_type, row.object_id, row.note) == (
        f"staff:{manager.email}",
        "agreement",
        str(agreement.id),
        "ask for 9,000",
    )
    assert (row.before, row.after) == ({"status": "submitted"}, {"status": "draft"})


def test_approval_refuses_figures_the_loan_no_longer_owes(app: Flask) -> None:
    loan_id = make_loan_in_default()
    officer = make_staff("loan_officer")
    agreement = _draft(loan_id, officer)
    agreement_submit(agreement_id=agreement.id, staff=officer)
    loan_repay(loan_id=loan_id, amount="100", reference="QKPART0001", value_date=TODAY)
    with pytest.raises(AgreementError, match="send it back to draft for new figures"):
        agreement_approve(agreement_id=agreement.id, staff=make_staff(), as_of=TODAY)
    assert _get(agreement.id).status == "submitted"


def test_approved_on_or_after_its_first_date_is_active_at_once(app: Flask) -> None:
    loan_id = make_loan_in_default()
    officer = make_staff("loan_officer")
    agreement = _draft(loan_id, officer)
    agreement_submit(agreement_id=agreement.id, staff=officer)
    manager = make_staff()
    agreement_approve(agreement_id=agreement.id, staff=manager, as_of=date(2026, 5, 1))
    agreement = _get(agreement.id)
    assert (agreement.status, agreement.activated_on) == ("active", date(2026, 5, 1))
    assert _audit_of(agreement.id, "agreement.activate") == (
        f"staff:{manager.email}",
        {"status": "approved"},
        {"status": "active"},
    )


# -- the officer's limit -----------------------------------------------------------------


def test_a_settlement_above_the_officer_s_limit_needs_a_supervisor(app: Flask) -> None:
    loan_id = make_loan_in_default()
    officer = make_staff("loan_officer")
    officer.accept_limit = D("5000")
    db.session.commit()
    agreement = _draft(loan_id, officer)
    assert agreement_needs_supervisor(agreement)
    assert _audit_of(agreement.id, "agreement.draft")[2]["needs_supervisor"] is True
    agreement_submit(agreement_id=agreement.id, staff=officer)
    # The trail keeps the drafter's limit as it was when they sent it up.
    assert _audit_of(agreement.id, "agreement.submit") == (
        f"staff:{officer.email}",
        {"status": "draft"},
        {"status": "submitted", "needs_supervisor": True, "accept_limit": "5000.00"},
    )
    # A manager whose own limit is below the settlement cannot be that supervisor.
    low = make_staff("branch_manager")
    low.accept_limit = D("6000")
    db.session.commit()
    with pytest.raises(AgreementError, match="above your limit of KES 6,000.00"):
        agreement_approve(agreement_id=agreement.id, staff=low, as_of=TODAY)
    # One whose limit is the settlement exactly may accept it.
    exact = make_staff("branch_manager")
    exact.accept_limit = SETTLEMENT
    db.session.commit()
    agreement_approve(agreement_id=agreement.id, staff=exact, as_of=TODAY)
    assert _get(agreement.id).status == "approved"
    assert _audit_of(agreement.id, "agreement.approve") == (
        f"staff:{exact.email}",
        {"status": "submitted"},
        {"status": "approved", "needs_supervisor": True},
    )


def test_within_the_officer_s_limit_no_supervisor_is_flagged(app: Flask) -> None:
    loan_id = make_loan_in_default()
    officer = make_staff("loan_officer")
    officer.accept_limit = D("8000")
    db.session.commit()
    assert not agreement_needs_supervisor(_draft(loan_id, officer))


# -- immutability and deletion -----------------------------------------------------------


def test_a_draft_is_edited_and_a_submitted_one_goes_back_to_draft(app: Flask) -> None:
    loan_id = make_loan_in_default()
    officer = make_staff("loan_officer")
    agreement = _draft(loan_id, officer)
    agreement_submit(agreement_id=agreement.id, staff=officer)
    owed = _owed(loan_id)
    agreement_update(
        agreement_id=agreement.id,
        staff=officer,
        settlement_amount="9000",
        discount=owed - D("9000"),
        schedule=[
            (date(2026, 5, 1), "3000"),
            (date(2026, 6, 1), "3000"),
            (date(2026, 7, 1), "3000"),
        ],
        as_of=TODAY,
    )
    agreement = _get(agreement.id)
    assert agreement.status == "draft" and agreement.settlement_amount == D("9000.00")
    assert [r.amount for r in agreement.installments] == [D("3000.00")] * 3


def test_an_approved_agreement_is_immutable_but_takes_notes(app: Flask) -> None:
    loan_id = make_loan_in_default()
    agreement_id, officer, manager = _approved(loan_id)
    with pytest.raises(AgreementError, match="can no longer change"):
        agreement_update(
            agreement_id=agreement_id,
            staff=officer,
            settlement_amount=SETTLEMENT,
            discount=_owed(loan_id) - SETTLEMENT,
            schedule=[(date(2026, 5, 2), "8000")],
            as_of=TODAY,
        )
    with pytest.raises(AgreementError, match="only draft agreements can be deleted"):
        agreement_delete(agreement_id=agreement_id, staff=manager)
    with pytest.raises(AgreementError, match="only draft agreements can be submitted"):
        agreement_submit(agreement_id=agreement_id, staff=officer)
    agreement_add_note(agreement_id=agreement_id, staff=officer, note="member called")
    agreement = _get(agreement_id)
    assert agreement.status == "approved"
    assert [r.due_date for r in agreement.installments] == [d for d, _ in SCHEDULE]
    assert agreement.note is not None and agreement.note.endswith("member called")


def test_only_drafts_are_deleted_and_softly(app: Flask) -> None:
    loan_id = make_loan_in_default()
    officer = make_staff("loan_officer")
    kept = _draft(loan_id, officer)
    agreement_submit(agreement_id=kept.id, staff=officer)
    with pytest.raises(AgreementError, match="is submitted; only draft agreements"):
        agreement_delete(agreement_id=kept.id, staff=officer)
    gone = _draft(loan_id, officer)
    with pytest.raises(AgreementError, match="only the drafter or a branch manager"):
        agreement_delete(agreement_id=gone.id, staff=make_staff("loan_officer"))
    agreement_delete(agreement_id=gone.id, staff=officer)
    gone = _get(gone.id)
    assert gone.status == "deleted" and gone.deleted_at is not None
    assert len(gone.installments) == 2  # the row and its schedule stay
    with pytest.raises(AgreementError, match="is deleted"):
        agreement_add_note(agreement_id=gone.id, staff=officer, note="too late")


# -- one agreement in force per loan -----------------------------------------------------


def _two_submitted(loan_id: int) -> tuple[int, int]:
    officer = make_staff("loan_officer")
    ids = []
    for _ in range(2):
        agreement = _draft(loan_id, officer)
        agreement_submit(agreement_id=agreement.id, staff=officer)
        ids.append(agreement.id)
    return ids[0], ids[1]


def test_a_second_approval_on_the_same_loan_is_refused_in_words(app: Flask) -> None:
    loan_id = make_loan_in_default()
    first, second = _two_submitted(loan_id)
    agreement_approve(agreement_id=first, staff=make_staff(), as_of=TODAY)
    with pytest.raises(AgreementError, match=f"agreement {first} is approved.*at most one"):
        agreement_approve(agreement_id=second, staff=make_staff(), as_of=TODAY)
    assert (_get(first).status, _get(second).status) == ("approved", "submitted")
    # Once the first is being paid the second's figures are stale too, but the reason it
    # cannot be approved is still the agreement in force.
    loan_repay(loan_id=loan_id, amount="2500", reference="QKAGR00011", value_date=TODAY)
    with pytest.raises(AgreementError, match=f"agreement {first} is active.*at most one"):
        agreement_approve(agreement_id=second, staff=make_staff(), as_of=TODAY)


def test_a_loan_no_longer_owing_is_not_settled_by_an_agreement(app: Flask) -> None:
    loan_id = make_loan_in_default()
    officer = make_staff("loan_officer")
    agreement = _draft(loan_id, officer)
    agreement_submit(agreement_id=agreement.id, staff=officer)
    loan_repay(loan_id=loan_id, amount=_owed(loan_id), reference="QKAGR00012", value_date=TODAY)
    loan_no = reload(loan_id).loan_no
    with pytest.raises(
        AgreementError, match=f"^loan {loan_no} is closed; there is nothing to settle$"
    ):
        agreement_approve(agreement_id=agreement.id, staff=make_staff(), as_of=TODAY)
    assert _get(agreement.id).status == "submitted"


def test_the_database_itself_holds_one_binding_agreement_per_loan(app: Flask) -> None:
    loan_id = make_loan_in_default()
    first, second = _two_submitted(loan_id)
    _get(first).status = "approved"
    db.session.commit()
    _get(second).status = "active"
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()


def test_two_managers_approving_two_drafts_at_once_one_wins(app: Flask, pg: None) -> None:
    loan_id = make_loan_in_default()
    first, second = _two_submitted(loan_id)
    managers = [make_staff("branch_manager").id, make_staff("branch_manager").id]
    db.session.remove()
    holding, release = threading.Event(), threading.Event()

    def hold_the_loan() -> None:
        # Both approvals queue behind this lock and are let go at the same instant.
        lock_row(Loan, loan_id)
        holding.set()
        release.wait(20)
        db.session.rollback()

    holder = Worker(app, hold_the_loan)
    holder.start()
    assert holding.wait(20)
    approvers = [
        Worker(app, _approval(agreement_id, manager_id))
        for agreement_id, manager_id in zip((first, second), managers, strict=True)
    ]
    for w in approvers:
        w.start()
    wait_until_blocked(2)
    release.set()
    holder.outcome()
    errors = []
    for w in approvers:
        w.join(30)
        assert not w.is_alive()
        errors.append(w.error)
    assert sum(e is None for e in errors) == 1, errors
    (refused,) = [e for e in errors if e is not None]
    assert isinstance(refused, AgreementError) and "at most one" in str(refused)
    statuses = sorted(_get(i).status for i in (first, second))
    assert statuses == ["approved", "submitted"]


def test_an_agreement_put_in_force_around_the_loans_lock_is_refused_by_the_index(
    app: Flask, pg: None
) -> None:
    """Only agreement_approve puts an agreement in force, under the loan's lock. Should
    anything else ever do it (a script, a hand edit in the database), the partial unique
    index refuses the second one and the manager is told which agreement is in force."""
    loan_id = make_loan_in_default()
    loan_no = reload(loan_id).loan_no
    first, second = _two_submitted(loan_id)
    manager_id = make_staff("branch_manager").id
    db.session.commit()
    db.session.execute(
        text("UPDATE agreements SET status = 'approved' WHERE id = :id"), {"id": second}
    )  # not committed yet: the approval below passes its own check, then meets the index

    approver = Worker(app, _approval(first, manager_id))
    approver.start()
    wait_until_blocked()
    db.session.commit()
    with pytest.raises(AgreementError) as refused:
        approver.outcome()
    assert str(refused.value) == (
        f"loan {loan_no} has an agreement in force already (agreement {second} is approved); "
        "a loan has at most one approved or active agreement"
    )
    assert (_get(first).status, _get(second).status) == ("submitted", "approved")


# -- payments and completion -------------------------------------------------------------


def test_payments_fill_the_schedule_in_order_and_activate_it(app: Flask) -> None:
    loan_id = make_loan_in_default()
    agreement_id, *_ = _approved(loan_id)
    loan_repay(loan_id=loan_id, amount="2500", reference="QKAGR00001", value_date=TODAY)
    loan_repay(loan_id=loan_id, amount="2500", reference="QKAGR00002", value_date=date(2026, 4, 20))
    agreement = _get(agreement_id)
    assert agreement.status == "active" and agreement.activated_on == TODAY
    assert agreement.paid_amount == D("5000.00")
    assert [(r.paid, r.paid_on) for r in agreement.installments] == [
        (D("4000.00"), date(2026, 4, 20)),
        (D("1000.00"), None),
    ]
    assert reload(loan_id).status == "active"


def test_each_payment_is_audited_with_what_it_paid_off_and_a_paid_installment_keeps_its_date(
    app: Flask,
) -> None:
    loan_id = make_loan_in_default()
    agreement_id, *_ = _approved(loan_id)
    loan_repay(loan_id=loan_id, amount="4001", reference="QKAGR00005", value_date=TODAY)
    loan_repay(loan_id=loan_id, amount="999", reference="QKAGR00006", value_date=date(2026, 5, 5))
    agreement = _get(agreement_id)
    assert [(r.paid, r.paid_on) for r in agreement.installments] == [
        (D("4000.00"), TODAY),  # the later payment leaves its date alone
        (D("1000.00"), None),  # the shilling over the first installment reached the second
    ]
    payments = db.session.scalars(
        select(AuditLog)
        .where(AuditLog.action == "agreement.payment", AuditLog.object_id == str(agreement_id))
        .order_by(AuditLog.id)
    ).all()
    assert [(a.actor, a.after) for a in payments] == [
        (
            "system",
            {
                "amount": "4001.00",
                "paid_amount": "4001.00",
                "installments_paid": "1",
                "value_date": "2026-04-02",
            },
        ),
        (
            "system",
            {
                "amount": "999.00",
                "paid_amount": "5000.00",
                "installments_paid": "",
                "value_date": "2026-05-05",
            },
        ),
    ]


def test_a_shilling_paid_counts_against_the_agreement(app: Flask) -> None:
    """The smallest payment is counted like any other. (Mutation testing, issue 23.)"""
    loan_id = make_loan_in_default()
    agreement_id, *_ = _approved(loan_id)
    loan_repay(loan_id=loan_id, amount="1", reference="QKAGR00003", value_date=TODAY)
    assert _get(agreement_id).paid_amount == D("1.00")


def test_the_allocation_reports_what_it_counted_and_counts_no_money_as_nothing(
    app: Flask,
) -> None:
    loan_id = make_loan_in_default()
    agreement_id, *_ = _approved(loan_id)
    lock_row(Loan, loan_id)  # as loan_repay calls it: under the loan's lock
    assert agreement_allocate(loan_id=loan_id, amount=D("0"), value_date=TODAY) is None
    assert _get(agreement_id).status == "approved"  # no payment, so not activated
    assert "agreement.payment" not in _actions(agreement_id)
    counted = agreement_allocate(loan_id=loan_id, amount=D("4000"), value_date=TODAY)
    assert counted == Allocation(agreement_id=agreement_id, allocated=D("4000"), installments=[1])
    db.session.rollback()  # no money reached the loan's books here: nothing stands


def test_a_recovery_after_a_write_off_counts_against_the_agreement(app: Flask) -> None:
    """A loan written off while its agreement is in force: what the member pays is a
    recovery, and it is still what they agreed to pay. (Mutation testing, issue 23.)"""
    loan_id = make_loan_in_default()
    agreement_id, _officer, manager = _approved(loan_id)
    loan_write_off(loan_id=loan_id, staff=manager, reason="no contact", value_date=TODAY)

    paid = loan_repay(loan_id=loan_id, amount="2500", reference="QKAGR00004", value_date=TODAY)

    assert (paid.recovered, paid.to_savings) == (D("2500.00"), D("0.00"))
    assert _get(agreement_id).paid_amount == D("2500.00")


def test_a_receipt_posted_twice_counts_once_against_the_agreement(app: Flask) -> None:
    """Safaricom retries callbacks: the second posting of a receipt is refused by the
    ledger before the agreement sees it, so the schedule is filled once."""
    loan_id = make_loan_in_default()
    agreement_id, *_ = _approved(loan_id)
    loan_repay(loan_id=loan_id, amount="2500", reference="QKAGRDUP01", value_date=TODAY)
    with pytest.raises(DuplicatePosting):
        loan_repay(loan_id=loan_id, amount="2500", reference="QKAGRDUP01", value_date=TODAY)
    db.session.rollback()
    agreement = _get(agreement_id)
    assert agreement.paid_amount == D("2500.00")
    assert [r.paid for r in agreement.installments] == [D("2500.00"), D("0.00")]


def test_a_payment_on_a_loan_with_only_a_draft_is_not_counted(app: Flask) -> None:
    loan_id = make_loan_in_default()
    agreement = _draft(loan_id, make_staff("loan_officer"))
    loan_repay(loan_id=loan_id, amount="100", reference="QKAGR00009", value_date=TODAY)
    assert _get(agreement.id).paid_amount == 0


def test_paying_the_settlement_completes_it_and_writes_off_the_discount(app: Flask) -> None:
    loan_id = make_loan_in_default()
    discount = _owed(loan_id) - SETTLEMENT
    agreement_id, *_ = _approved(loan_id)
    loan_repay(loan_id=loan_id, amount="4000", reference="QKAGR00011", value_date=date(2026, 5, 1))
    result = loan_repay(
        loan_id=loan_id, amount="4000", reference="QKAGR00012", value_date=date(2026, 6, 1)
    )
    assert result.closed and result.balance_left == 0
    agreement = _get(agreement_id)
    assert (agreement.status, agreement.closed_on) == ("completed", date(2026, 6, 1))
    assert agreement.paid_amount == SETTLEMENT
    loan = reload(loan_id)
    assert loan.status == "closed" and loan.closed_on == date(2026, 6, 1)
    assert loan.written_off_amount == discount and not loan.in_default
    assert set(receivables(loan).values()) == {D("0.00")}
    assert _owed(loan_id) == 0
    assert balance("GL-WRITE-OFF") == discount
    settle = db.session.scalar(select(AuditLog).where(AuditLog.action == "loan.settle"))
    assert settle is not None and D(settle.after["written_off"]) == discount
    assert _actions(agreement_id)[-1] == "agreement.complete"
    # Money after settlement is the member's: the loan takes nothing more.
    after = loan_repay(
        loan_id=loan_id, amount="50", reference="QKAGR00013", value_date=date(2026, 6, 2)
    )
    assert after.to_savings == D("50.00")


def test_a_settlement_a_shilling_short_of_the_debt_writes_off_that_shilling(app: Flask) -> None:
    """The smallest discount is written off like any other: the loan closes owing
    nothing. (Mutation testing, issue 23.)"""
    loan_id = make_loan_in_default()
    settlement = _owed(loan_id) - D("1.00")
    officer, manager = make_staff("loan_officer"), make_staff("branch_manager")
    agreement = _draft(
        loan_id,
        officer,
        settlement_amount=settlement,
        discount=D("1.00"),
        schedule=[(date(2026, 5, 1), str(settlement))],
    )
    agreement_submit(agreement_id=agreement.id, staff=officer)
    agreement_approve(agreement_id=agreement.id, staff=manager, as_of=TODAY)

    loan_repay(loan_id=loan_id, amount=settlement, reference="QKAGR00015", value_date=TODAY)

    loan = reload(loan_id)
    assert (loan.status, loan.written_off_amount) == ("closed", D("1.00"))
    assert set(receivables(loan).values()) == {D("0.00")}
    assert balance("GL-WRITE-OFF") == D("1.00")


def test_one_payment_of_the_whole_settlement_completes_at_once(app: Flask) -> None:
    loan_id = make_loan_in_default()
    agreement_id, *_ = _approved(loan_id)
    loan_repay(loan_id=loan_id, amount="8000", reference="QKAGR00021", value_date=TODAY)
    agreement = _get(agreement_id)
    assert agreement.status == "completed"
    assert [r.paid_on for r in agreement.installments] == [TODAY, TODAY]
    assert reload(loan_id).status == "closed"
    assert _audit_of(agreement_id, "agreement.payment")[2] == {
        "amount": "8000.00",
        "paid_amount": "8000.00",
        "installments_paid": "1,2",
        "value_date": "2026-04-02",
    }


def test_paying_the_whole_debt_completes_it_with_nothing_written_off(app: Flask) -> None:
    loan_id = make_loan_in_default()
    owed = _owed(loan_id)
    agreement_id, *_ = _approved(loan_id)
    loan_repay(loan_id=loan_id, amount=owed, reference="QKAGR00031", value_date=TODAY)
    assert _get(agreement_id).status == "completed"
    loan = reload(loan_id)
    assert loan.status == "closed" and loan.written_off_amount == 0
    assert balance("GL-WRITE-OFF") == 0


# -- default -----------------------------------------------------------------------------


def test_the_scan_activates_on_the_first_date_and_defaults_after_the_threshold(
    app: Flask,
) -> None:
    loan_id = make_loan_in_default()
    agreement_id, *_ = _approved(loan_id)
    # 1 May is due; grace 3 + threshold 30: still in force on 3 June, defaulted on 4 June.
    scan = agreement_check_default(as_of=date(2026, 5, 1))
    assert (scan.as_of, scan.activated, scan.defaulted) == (date(2026, 5, 1), [agreement_id], [])
    agreement = _get(agreement_id)
    assert (agreement.status, agreement.activated_on) == ("active", date(2026, 5, 1))
    assert _audit_of(agreement_id, "agreement.activate") == (
        "system",
        {"status": "approved"},
        {"status": "active"},
    )
    # A part-payment of installment 1 does not keep it in force: it is still unpaid.
    loan_repay(loan_id=loan_id, amount="1000", reference="QKAGR00010", value_date=date(2026, 5, 2))
    assert agreement_check_default(as_of=date(2026, 6, 3)).defaulted == []
    scan = agreement_check_default(as_of=date(2026, 6, 4))
    assert scan.defaulted == [agreement_id]
    agreement = _get(agreement_id)
    assert (agreement.status, agreement.closed_on) == ("defaulted", date(2026, 6, 4))
    # The trail says which installment broke it, by how much, and on which day's scan.
    assert _audit_of(agreement_id, "agreement.default") == (
        "system",
        {"status": "active"},
        {
            "status": "defaulted",
            "installment": 1,
            "due_date": "2026-05-01",
            "unpaid": "3000.00",
            "as_of": "2026-06-04",
        },
    )
    # Idempotent, and a replay of an earlier day changes nothing either.
    assert agreement_check_default(as_of=date(2026, 6, 10)).defaulted == []
    assert agreement_check_default(as_of=date(2026, 5, 1)).activated == []
    assert _actions(agreement_id).count("agreement.default") == 1
    assert _actions(agreement_id).count("agreement.activate") == 1  # active stays active
    # The loan keeps its whole debt: a defaulted agreement forgives nothing.
    assert reload(loan_id).status == "active" and _owed(loan_id) > SETTLEMENT


def test_a_paid_installment_never_defaults_and_a_late_scan_dates_the_default(
    app: Flask,
) -> None:
    loan_id = make_loan_in_default()
    agreement_id, *_ = _approved(loan_id)
    loan_repay(loan_id=loan_id, amount="4000", reference="QKAGR00041", value_date=date(2026, 5, 2))
    assert agreement_check_default(as_of=date(2026, 7, 1)).defaulted == []
    # Installment 2 (1 June) unpaid: the scan of 1 August dates the default 5 July.
    assert agreement_check_default(as_of=date(2026, 8, 1)).defaulted == [agreement_id]
    assert _get(agreement_id).closed_on == date(2026, 7, 5)


def test_the_scan_lists_agreements_from_their_first_date_and_skips_one_finished_since(
    app: Flask,
) -> None:
    """The nightly job lists the agreements in force, then scans them in chunks: one that
    completes in between is left as it is and the rest of its chunk is still scanned."""
    product = make_product("V1", default_threshold_days=30)
    on = date(2026, 1, 1)
    finished_loan = make_loan(product=product, on=on).id
    in_force_loan = make_loan(product=product, on=on).id
    run_job("loan-arrears", date(2026, 4, 1))  # both in default, as make_loan_in_default
    finished, *_ = _approved(finished_loan)
    in_force, *_ = _approved(in_force_loan)
    assert agreements_in_force_ids(date(2026, 4, 30)) == []  # the first date is 1 May
    assert agreements_check_default([in_force], as_of=date(2026, 4, 30)).activated == []
    assert _get(in_force).status == "approved"
    listed = agreements_in_force_ids(date(2026, 5, 1))
    assert listed == [finished, in_force]
    loan_repay(loan_id=finished_loan, amount="8000", reference="QKAGR00061", value_date=TODAY)
    assert _get(finished).status == "completed"
    scan = agreements_check_default(listed, as_of=date(2026, 5, 1))
    db.session.commit()
    assert (scan.as_of, scan.activated, scan.defaulted) == (date(2026, 5, 1), [in_force], [])
    assert (_get(finished).status, _get(in_force).status) == ("completed", "active")
    assert agreements_in_force_ids(date(2026, 5, 1)) == [in_force]


def _held(agreement_id: int) -> Agreement:
    """The agreement and its schedule as this session read them, in a transaction left
    open: what a scan's chunk may hold while another worker commits."""
    db.session.commit()
    agreement = db.session.get(Agreement, agreement_id)
    assert agreement is not None and agreement.installments
    return agreement


def test_the_scan_reads_a_payment_committed_while_it_held_the_schedule(
    app: Flask, pg: None
) -> None:
    loan_id = make_loan_in_default()
    agreement_id, *_ = _approved(loan_id)
    agreement_check_default(as_of=date(2026, 5, 1))
    schedule = list(_held(agreement_id).installments)  # held in this transaction
    assert schedule[0].paid == 0
    payment = Worker(
        app,
        lambda: loan_repay(
            loan_id=loan_id, amount="4000", reference="QKAGR00071", value_date=date(2026, 5, 2)
        ),
    )
    payment.start()
    payment.outcome()
    assert agreements_check_default([agreement_id], as_of=date(2026, 6, 4)).defaulted == []
    assert schedule[0].paid == D("4000.00")  # read again under the loan's lock
    db.session.commit()
    assert _get(agreement_id).status == "active"


def test_the_daily_scan_reports_every_agreement_it_changed(app: Flask) -> None:
    product = make_product("V1", default_threshold_days=30)
    loans = [make_loan(product=product, on=date(2026, 1, 1)).id for _ in range(2)]
    run_job("loan-arrears", date(2026, 4, 1))
    agreements = [_approved(loan_id)[0] for loan_id in loans]
    scan = agreement_check_default(as_of=date(2026, 5, 1))
    assert (scan.activated, scan.defaulted) == (agreements, [])
    scan = agreement_check_default(as_of=date(2026, 6, 4))
    assert (scan.activated, scan.defaulted) == ([], agreements)
    # Nothing paid: a new installment's paid is the column's default.
    assert [(r.number, r.paid) for r in _get(agreements[0]).installments] == [
        (1, D("0.00")),
        (2, D("0.00")),
    ]


def test_a_repayment_waits_while_a_scan_chunk_holds_the_loan(app: Flask, pg: None) -> None:
    """The chunk locks its loans before it reads the schedules, as every close-of-business
    chunk does: a payment arriving meanwhile waits, then counts."""
    loan_id = make_loan_in_default()
    agreement_id, *_ = _approved(loan_id)
    agreement_check_default(as_of=date(2026, 5, 1))
    db.session.commit()
    assert agreements_check_default([agreement_id], as_of=date(2026, 6, 3)).defaulted == []
    payment = Worker(
        app,
        lambda: loan_repay(
            loan_id=loan_id, amount="4000", reference="QKAGR00081", value_date=date(2026, 6, 3)
        ),
    )
    payment.start()
    wait_until_blocked()
    db.session.commit()  # the chunk ends
    payment.outcome()
    agreement = _get(agreement_id)
    assert (agreement.status, agreement.paid_amount) == ("active", D("4000.00"))


def test_a_payment_counts_on_the_agreement_as_it_stands_not_as_last_read(
    app: Flask, pg: None
) -> None:
    """A session that read the agreement before another payment committed (a console page,
    a callback worker) must not add its payment to the old total."""
    loan_id = make_loan_in_default()
    agreement_id, *_ = _approved(loan_id)
    held = _held(agreement_id)
    schedule = list(held.installments)
    assert (held.paid_amount, schedule[0].paid) == (0, 0)
    other = Worker(
        app,
        lambda: loan_repay(
            loan_id=loan_id, amount="2500", reference="QKAGR00091", value_date=TODAY
        ),
    )
    other.start()
    other.outcome()
    loan_repay(loan_id=loan_id, amount="2500", reference="QKAGR00092", value_date=TODAY)
    agreement = _get(agreement_id)
    assert agreement.paid_amount == D("5000.00")
    assert [r.paid for r in agreement.installments] == [D("4000.00"), D("1000.00")]


def test_an_approval_reads_the_agreement_afresh_under_the_loans_lock(app: Flask, pg: None) -> None:
    """A manager whose page (session) still shows the agreement submitted, after another
    approved it, is told it is approved already, not that a second one is in force."""
    loan_id = make_loan_in_default()
    officer = make_staff("loan_officer")
    agreement_id = _draft(loan_id, officer).id
    agreement_submit(agreement_id=agreement_id, staff=officer)
    first, second = make_staff().id, make_staff().id
    held = _held(agreement_id)  # this session's copy, kept while the other approves
    assert held.status == "submitted"

    other = Worker(app, _approval(agreement_id, first))
    other.start()
    other.outcome()
    me = db.session.get(StaffUser, second)
    assert me is not None
    with pytest.raises(AgreementError) as refused:
        agreement_approve(agreement_id=agreement_id, staff=me, as_of=TODAY)
    assert str(refused.value) == (
        f"agreement {agreement_id} is approved; only submitted agreements are approved"
    )


def test_two_scans_of_one_day_default_an_agreement_once(app: Flask, pg: None) -> None:
    loan_id = make_loan_in_default()
    agreement_id, *_ = _approved(loan_id)
    agreement_check_default(as_of=date(2026, 5, 1))
    held = _held(agreement_id)
    assert held.status == "active"
    other = Worker(app, lambda: agreement_check_default(as_of=date(2026, 6, 4)))
    other.start()
    assert other.outcome().defaulted == [agreement_id]
    assert agreements_check_default([agreement_id], as_of=date(2026, 6, 4)).defaulted == []
    db.session.commit()
    assert _actions(agreement_id).count("agreement.default") == 1


def test_an_approved_agreement_never_activated_defaults_in_one_scan(app: Flask) -> None:
    loan_id = make_loan_in_default()
    agreement_id, *_ = _approved(loan_id)
    scan = agreement_check_default(as_of=date(2026, 9, 1))
    assert scan.activated == [agreement_id] and scan.defaulted == [agreement_id]
    assert db.session.scalars(select(AgreementInstallment)).all()  # schedule kept


def test_penalties_charged_after_approval_are_written_off_with_the_discount(
    app: Flask,
) -> None:
    loan = make_loan(
        product=make_product(
            "V1", default_threshold_days=30, penalty_type="fixed", penalty_value=D("100")
        ),
        on=date(2026, 1, 1),
    )
    loan_id = loan.id
    run_job("loan-arrears", date(2026, 4, 1))
    discount = _owed(loan_id) - SETTLEMENT
    agreement_id, *_ = _approved(loan_id)
    run_job("loan-arrears", date(2026, 4, 10))  # April's installment of the loan is late
    loan_repay(loan_id=loan_id, amount="4000", reference="QKAGR00051", value_date=date(2026, 5, 1))
    owed_before = _owed(loan_id)
    assert owed_before == discount + D("4000") + D("100")  # the penalty since approval
    loan_repay(loan_id=loan_id, amount="4000", reference="QKAGR00052", value_date=date(2026, 6, 1))
    assert _get(agreement_id).status == "completed"
    loan = reload(loan_id)
    assert loan.status == "closed" and loan.written_off_amount == owed_before - D("4000")
    assert balance("GL-WRITE-OFF") == loan.written_off_amount
    assert set(receivables(loan).values()) == {D("0.00")}
