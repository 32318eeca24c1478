"""The loan lifecycle: every allowed transition is audited, every other one is refused
with nothing written; approval rules (auto, staff, maker-checker); restructure and
write-off of loans in arrears."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import (
    Installment,
    JournalEntry,
    Loan,
    LoanProduct,
    Member,
    MpesaRequest,
    StaffUser,
)
from app.selectors.loans import current_installments, loan_debt, portfolio_at_risk
from app.services.ledger import ledger_check
from app.services.loan_schedule import schedule_build
from app.services.loans import (
    LoanError,
    loan_apply,
    loan_approve,
    loan_disburse,
    loan_payout_failed,
    loan_recommend,
    loan_reject,
    loan_repay,
    loan_restructure,
    loan_start_payout,
    loan_withdraw,
    loan_write_off,
)
from app.services.permissions import PermissionDenied
from tests.helpers import sms_bodies
from tests.loan_factories import (
    audit_rows,
    balance,
    count,
    counts,
    fee_booked_behind_the_session,
    make_borrower,
    make_loan,
    make_product,
    make_staff,
    receivables,
    reload,
    restructure,
    run_job,
    schedule_owed,
)

APPLY_ON = date(2026, 3, 2)
DISBURSED = date(2026, 1, 31)  # V1's first installment falls due on 2026-02-28


def trail(loan: Loan) -> list[tuple[str, str, str | None, str | None]]:
    """(action, actor, status before, status after) for each audit row of the loan."""
    return [
        (
            row.action,
            row.actor,
            (row.before or {}).get("status"),
            (row.after or {}).get("status"),
        )
        for row in audit_rows(loan)
    ]


def posted(kind: str) -> tuple[str, str | None, str, int | None, int | None]:
    """The one journal entry of `kind`: who posted it, its key, its words, member and loan."""
    entry = db.session.scalar(select(JournalEntry).where(JournalEntry.kind == kind))
    return entry.actor, entry.idempotency_key, entry.description, entry.member_id, entry.loan_id


def approved_sms(loan: Loan, amount: str) -> str:
    return (
        f"Your loan {loan.loan_no} of KES {amount} is approved. We will send the money to "
        "your M-PESA shortly."
    )


def payout_of(loan: Loan) -> MpesaRequest | None:
    return db.session.scalar(select(MpesaRequest).where(MpesaRequest.loan_id == loan.id))


def apply(product: LoanProduct, amount: int | str = 10000, member: Member | None = None) -> Loan:
    member = member or make_borrower(savings=10000)
    return loan_apply(member_id=member.id, product_id=product.id, amount=amount, as_of=APPLY_ON)


# -- approval ------------------------------------------------------------------------


def test_instant_loan_within_auto_approve_limit_is_approved_by_the_system(app):
    product = make_product("INSTANT")
    member = make_borrower(savings=5000)

    loan = apply(product, amount=3000, member=member)

    assert loan.status == "approved"
    assert loan.decided_at is not None
    assert loan.approved_by_id is None
    assert trail(loan) == [
        ("loan.submit", f"member:{member.member_no}", None, "submitted"),
        ("loan.approve", "system", "submitted", "approved"),
    ]
    assert audit_rows(loan)[-1].note == "auto-approved within the product limit"
    assert sms_bodies("loan_approved") == [approved_sms(loan, "3,000.00")]
    payout = payout_of(loan)
    assert (payout.requested_by, payout.amount) == ("system", Decimal("2925"))
    submitted = audit_rows(loan)[0]
    assert (submitted.object_type, submitted.after) == (
        "loan",
        {"status": "submitted", "principal": "3000.00", "term": 1, "product": "INSTANT"},
    )

    loan_disburse(loan_id=loan.id, reference="RCB1AUTO01", value_date=APPLY_ON)
    assert loan.status == "active"
    assert trail(loan)[-1] == ("loan.disburse", "system", "approved", "active")
    assert ledger_check() == []


def test_above_the_auto_approve_limit_a_staff_member_approves(app):
    product = make_product("INSTANT", auto_approve_limit=Decimal("2000"))
    officer = make_staff("branch_manager")

    loan = apply(product, amount=2400, member=make_borrower(savings=5000))
    assert loan.status == "submitted"

    loan_approve(loan_id=loan.id, staff=officer, note="known customer")

    assert loan.status == "approved"
    assert loan.approved_by_id == officer.id
    assert trail(loan)[-1] == ("loan.approve", f"staff:{officer.email}", "submitted", "approved")
    assert audit_rows(loan)[-1].note == "known customer"
    # The member is told which loan and how much; the payout is made in the approver's name.
    assert sms_bodies("loan_approved") == [approved_sms(loan, "2,400.00")]
    payout = payout_of(loan)
    assert (payout.requested_by, payout.amount) == (f"staff:{officer.email}", Decimal("2340"))
    assert ledger_check() == []


def test_an_approval_note_is_kept_to_its_column(app):
    """Staff read why a loan was approved; a long note keeps its first 255 characters.
    (Mutation testing, issue 23.)"""
    loan = apply(make_product(), amount=3000)
    note = "".join(f"{i % 10}" for i in range(300))

    loan_approve(loan_id=loan.id, staff=make_staff("branch_manager"), note=f"  {note}  ")

    assert reload(loan.id).decision_reason == note[:255]
    assert ledger_check() == []


def test_staff_path_from_submitted_to_closed_audits_every_step(app):
    product = make_product(maker_checker_threshold=Decimal("5000"))
    officer, manager = make_staff("loan_officer"), make_staff("branch_manager")
    member = make_borrower(savings=10000)
    loan = apply(product, amount=10000, member=member)

    loan_recommend(loan_id=loan.id, staff=officer, note="payslip seen")
    loan_approve(loan_id=loan.id, staff=manager)
    loan_start_payout(loan_id=loan.id)
    loan_payout_failed(loan_id=loan.id, reason="B2C timed out")
    loan_start_payout(loan_id=loan.id)
    loan_disburse(loan_id=loan.id, reference="RCD1PAY001", value_date=DISBURSED)
    result = loan_repay(
        loan_id=loan.id, amount="10661.86", reference="RCE1PAY001", value_date=date(2026, 2, 20)
    )

    assert result.closed and loan.status == "closed"
    assert (loan.recommended_by_id, loan.approved_by_id) == (officer.id, manager.id)
    assert loan.disbursed_on == DISBURSED and loan.closed_on == date(2026, 2, 20)
    assert trail(loan) == [
        ("loan.submit", f"member:{member.member_no}", None, "submitted"),
        ("loan.recommend", f"staff:{officer.email}", "submitted", "recommended"),
        ("loan.approve", f"staff:{manager.email}", "recommended", "approved"),
        ("loan.start_payout", "system", "approved", "disbursing"),
        ("loan.payout_failed", "system", "disbursing", "approved"),
        ("loan.start_payout", "system", "approved", "disbursing"),
        ("loan.disburse", "system", "disbursing", "active"),
        ("loan.close", "system", "active", "closed"),
    ]
    notes = [row.note for row in audit_rows(loan)]
    assert notes[1] == "payslip seen"
    assert notes[4] == "B2C timed out"
    assert notes[6] == "b2c RCD1PAY001"
    assert notes[7] == "paid in full by RCE1PAY001"
    assert ledger_check() == []


def test_staff_disbursement_is_audited_with_the_staff_member(app):
    product = make_product()
    officer, manager = make_staff("loan_officer"), make_staff("branch_manager")
    loan = apply(product)
    loan_recommend(loan_id=loan.id, staff=officer)
    loan_approve(loan_id=loan.id, staff=manager)

    loan_disburse(
        loan_id=loan.id, reference="EFT-0042", value_date=DISBURSED, channel="manual", actor=manager
    )

    assert trail(loan)[-1] == ("loan.disburse", f"staff:{manager.email}", "approved", "active")
    assert audit_rows(loan)[-1].note == "manual EFT-0042"
    assert ledger_check() == []


def test_maker_checker_above_the_threshold(app):
    product = make_product("DEV")  # maker_checker_threshold 100,000
    officer = make_staff("loan_officer")
    auditor = make_staff("auditor")
    manager = make_staff("branch_manager")
    member = make_borrower(savings=60000, shares=1000)
    loan = apply(product, amount=150000, member=member)
    assert loan.status == "submitted"

    needs = "^loans above KES 100,000 need a recommendation by another staff member first$"
    with pytest.raises(LoanError, match=needs):
        loan_approve(loan_id=loan.id, staff=manager)
    with pytest.raises(PermissionDenied, match="auditor staff cannot recommend"):
        loan_recommend(loan_id=loan.id, staff=auditor)

    loan_recommend(loan_id=loan.id, staff=officer)
    with pytest.raises(PermissionDenied, match="loan officer staff cannot approve"):
        loan_approve(loan_id=loan.id, staff=officer)
    with pytest.raises(PermissionDenied, match="auditor staff cannot approve"):
        loan_approve(loan_id=loan.id, staff=auditor)
    assert loan.status == "recommended"

    loan_approve(loan_id=loan.id, staff=manager)

    assert loan.status == "approved"
    assert (loan.recommended_by_id, loan.approved_by_id) == (officer.id, manager.id)
    # The refusals wrote nothing: only the three real steps are in the trail.
    assert trail(loan) == [
        ("loan.submit", f"member:{member.member_no}", None, "submitted"),
        ("loan.recommend", f"staff:{officer.email}", "submitted", "recommended"),
        ("loan.approve", f"staff:{manager.email}", "recommended", "approved"),
    ]
    assert ledger_check() == []


def test_a_manager_who_recommended_a_loan_cannot_also_approve_it(app):
    product = make_product("DEV")  # maker_checker_threshold 100,000
    first, second = make_staff("branch_manager"), make_staff("branch_manager")
    loan = apply(product, amount=150000, member=make_borrower(savings=60000, shares=1000))

    loan_recommend(loan_id=loan.id, staff=first)
    with pytest.raises(
        LoanError, match="^the staff member who recommended a loan cannot also approve it$"
    ):
        loan_approve(loan_id=loan.id, staff=first)
    loan_approve(loan_id=loan.id, staff=second)

    assert (loan.recommended_by_id, loan.approved_by_id) == (first.id, second.id)
    assert ledger_check() == []


def test_at_or_below_the_maker_checker_threshold_one_staff_member_approves(app):
    product = make_product("DEV")
    officer = make_staff("branch_manager")
    loan = apply(product, amount=100000, member=make_borrower(savings=60000, shares=1000))

    loan_approve(loan_id=loan.id, staff=officer)

    assert loan.status == "approved"
    assert trail(loan)[-1] == ("loan.approve", f"staff:{officer.email}", "submitted", "approved")
    assert ledger_check() == []


@pytest.mark.parametrize("recommended", [False, True])
def test_approval_checks_the_limit_the_member_has_now(app, recommended):
    """The limit at apply is not enough: staff approve days later, and what the member
    may borrow then is what counts (SPEC: checked again under the member's lock)."""
    product = make_product()
    officer, manager = make_staff("loan_officer"), make_staff("branch_manager")
    loan = apply(product, amount=10000)
    if recommended:
        loan_recommend(loan_id=loan.id, staff=officer)
    product.max_amount = Decimal("8000")
    db.session.commit()
    before = counts()

    refused = f"^loan {loan.loan_no} of KES 10,000 is above the member's limit now \\(KES 8,000\\)$"
    with pytest.raises(LoanError, match=refused):
        loan_approve(loan_id=loan.id, staff=manager)

    assert counts() == before
    assert reload(loan.id).status == ("recommended" if recommended else "submitted")
    assert ledger_check() == []


def test_who_follows_up_an_approved_loan(app):
    """The officer who recommended it; else the approver; an officer already named (an
    imported or reassigned loan) stays. The decision is dated."""
    product = make_product()
    officer, manager, named = (
        make_staff(r) for r in ("loan_officer", "branch_manager", "loan_officer")
    )
    recommended, direct, assigned = (apply(product, amount=3000) for _ in range(3))
    loan_recommend(loan_id=recommended.id, staff=officer)
    assigned.officer_id = named.id
    db.session.commit()

    for loan in (recommended, direct, assigned):
        assert loan.decided_at is None
        loan_approve(loan_id=loan.id, staff=manager)
        assert reload(loan.id).decided_at is not None

    assert [loan.officer_id for loan in (recommended, direct, assigned)] == [
        officer.id,
        manager.id,
        named.id,
    ]
    assert ledger_check() == []


@pytest.mark.parametrize("role", ["auditor", "compliance", "loan_officer", "admin"])
def test_a_role_that_may_not_approve_is_refused(app, role):
    staff = make_staff(role)
    loan = apply(make_product())
    before = counts()

    with pytest.raises(PermissionDenied, match=f"{role.replace('_', ' ')} staff cannot approve"):
        loan_approve(loan_id=loan.id, staff=staff)

    assert counts() == before
    assert reload(loan.id).status == "submitted"
    assert ledger_check() == []


# -- reject and withdraw ---------------------------------------------------------------


def _in_state(state: str, officer: StaffUser) -> Loan:
    """A loan still waiting for a decision: submitted, recommended or approved."""
    loan = apply(make_product())
    if state == "recommended":
        loan_recommend(loan_id=loan.id, staff=officer)
    if state == "approved":
        loan_approve(loan_id=loan.id, staff=make_staff("branch_manager"))
    return loan


def test_a_payout_start_and_failure_are_committed_and_the_reason_cut_to_its_column(app):
    """Each is its own decision, kept whatever the caller does next; M-PESA's words can be
    long, and staff read the first 255 characters. (Mutation testing, issue 23.)"""
    loan = _in_state("approved", make_staff("loan_officer"))
    loan_id = loan.id
    loan_start_payout(loan_id=loan_id)
    db.session.rollback()
    assert reload(loan_id).status == "disbursing"

    reason = "".join(f"{i % 10}" for i in range(300))
    loan_payout_failed(loan_id=loan_id, reason=reason)
    db.session.rollback()
    loan = reload(loan_id)
    assert (loan.status, loan.payout_error) == ("approved", reason[:255])
    assert trail(loan)[-2:] == [
        ("loan.start_payout", "system", "approved", "disbursing"),
        ("loan.payout_failed", "system", "disbursing", "approved"),
    ]
    assert ledger_check() == []


@pytest.mark.parametrize("state", ["submitted", "recommended", "approved"])
def test_reject_from_each_undecided_state(app, state):
    officer, manager = make_staff("loan_officer"), make_staff("branch_manager")
    loan = _in_state(state, officer)

    loan_reject(loan_id=loan.id, staff=manager, reason="  Income too low for the installment ")

    assert loan.status == "rejected"
    assert loan.decision_reason == "Income too low for the installment"
    assert trail(loan)[-1] == ("loan.reject", f"staff:{manager.email}", state, "rejected")
    assert audit_rows(loan)[-1].note == "Income too low for the installment"
    assert ledger_check() == []


@pytest.mark.parametrize("reason", ["", "   "])
def test_reject_needs_a_reason(app, reason):
    product = make_product()
    manager = make_staff("branch_manager")
    loan = apply(product)
    before = counts()

    with pytest.raises(LoanError, match="a rejection needs a reason the member can read"):
        loan_reject(loan_id=loan.id, staff=manager, reason=reason)

    assert counts() == before
    assert reload(loan.id).status == "submitted"
    assert ledger_check() == []


@pytest.mark.parametrize("state", ["submitted", "recommended", "approved"])
def test_member_withdraws_from_each_undecided_state(app, state):
    loan = _in_state(state, make_staff("loan_officer"))
    actor = f"member:{loan.member.member_no}"

    loan_withdraw(loan_id=loan.id, actor=actor)

    assert loan.status == "withdrawn"
    assert trail(loan)[-1] == ("loan.withdraw", actor, state, "withdrawn")
    assert ledger_check() == []


def test_staff_withdraws_on_the_members_behalf(app):
    product = make_product()
    officer = make_staff("loan_officer")
    loan = apply(product)

    loan_withdraw(loan_id=loan.id, actor=officer)

    assert trail(loan)[-1] == ("loan.withdraw", f"staff:{officer.email}", "submitted", "withdrawn")
    assert ledger_check() == []


# -- refused transitions -----------------------------------------------------------------


def _setup(state: str) -> tuple[Loan, StaffUser]:
    product = make_product()
    officer = make_staff("branch_manager")
    admin = make_staff("branch_manager")  # a role that may take every step: only state refuses
    if state == "active":
        return make_loan(product=product, on=DISBURSED), admin
    if state == "closed":
        loan = make_loan(product=product, on=DISBURSED)
        loan_repay(loan_id=loan.id, amount="10661.86", reference="RCL0SED001", value_date=APPLY_ON)
        assert loan.status == "closed"
        return loan, admin
    loan = apply(product)
    if state in ("approved", "disbursing"):
        loan_approve(loan_id=loan.id, staff=officer)
    if state == "disbursing":
        loan_start_payout(loan_id=loan.id)
    if state == "rejected":
        loan_reject(loan_id=loan.id, staff=officer, reason="Too many loans elsewhere")
    if state == "withdrawn":
        loan_withdraw(loan_id=loan.id, actor="member:test")
    return loan, admin


ACTIONS: dict[str, Callable[[Loan, StaffUser], object]] = {
    "approve": lambda loan, staff: loan_approve(loan_id=loan.id, staff=staff),
    "recommend": lambda loan, staff: loan_recommend(loan_id=loan.id, staff=staff),
    "reject": lambda loan, staff: loan_reject(loan_id=loan.id, staff=staff, reason="No"),
    "withdraw": lambda loan, staff: loan_withdraw(loan_id=loan.id, actor=staff),
    "start_payout": lambda loan, staff: loan_start_payout(loan_id=loan.id),
    "payout_failed": lambda loan, staff: loan_payout_failed(loan_id=loan.id, reason="No"),
    "disburse": lambda loan, staff: loan_disburse(
        loan_id=loan.id, reference="RCX0000001", value_date=APPLY_ON
    ),
    "restructure": lambda loan, staff: loan_restructure(
        loan_id=loan.id, staff=staff, term=6, start_date=APPLY_ON, reason="No"
    ),
    "write_off": lambda loan, staff: loan_write_off(
        loan_id=loan.id, staff=staff, reason="No", value_date=APPLY_ON
    ),
}

# (state the loan is in, action tried, why it is refused)
REFUSED = [
    ("rejected", "approve", "is rejected; cannot approve"),
    ("withdrawn", "approve", "is withdrawn; cannot approve"),
    ("rejected", "reject", "is rejected; cannot reject"),
    ("submitted", "disburse", "is submitted; cannot disburse"),
    ("rejected", "disburse", "is rejected; cannot disburse"),
    ("withdrawn", "disburse", "is withdrawn; cannot disburse"),
    ("approved", "recommend", "is approved; cannot recommend"),
    ("submitted", "start_payout", "is submitted; cannot start payout"),
    ("approved", "payout_failed", "is approved; cannot payout failed"),
    ("disbursing", "withdraw", "is disbursing; cannot withdraw"),
    ("active", "withdraw", "is active; cannot withdraw"),
    ("active", "reject", "is active; cannot reject"),
    ("active", "approve", "is active; cannot approve"),
    ("active", "disburse", "is active; cannot disburse"),
    ("closed", "disburse", "is closed; cannot disburse"),
    ("closed", "withdraw", "is closed; cannot withdraw"),
    ("closed", "restructure", "is not in arrears"),
    ("closed", "write_off", "is not in default"),
]


@pytest.mark.parametrize(
    ("state", "action", "message"), REFUSED, ids=[f"{s}-{a}" for s, a, _ in REFUSED]
)
def test_refused_transition_changes_and_writes_nothing(app, state, action, message):
    loan, staff = _setup(state)
    loan_id = loan.id
    status = loan.status
    before = counts()
    rows_before = count(Installment)

    with pytest.raises(LoanError, match=message):
        ACTIONS[action](loan, staff)

    # Nothing was written, even before the caller rolls back.
    assert counts() == before
    assert count(Installment) == rows_before
    db.session.rollback()
    assert reload(loan_id).status == status
    assert ledger_check() == []


# -- restructure ---------------------------------------------------------------------------


def _loan_in_arrears(as_of: date = date(2026, 4, 5)) -> int:
    """V1 disbursed 31 Jan with a 5% penalty; on 5 April rows 1 (due 28 Feb) and 2 (due
    31 Mar) are overdue, 36 days past due, each charged 5% of 888.49 = 44.42."""
    product = make_product(penalty_type="percent", penalty_value=Decimal("5"))
    loan = make_loan(product=product, on=DISBURSED)
    loan_id = loan.id
    run_job("loan-arrears", as_of)
    return loan_id


def test_restructure_of_a_loan_in_arrears(app):
    loan_id = _loan_in_arrears()
    manager = make_staff("branch_manager")
    loan = reload(loan_id)
    assert (loan.days_past_due, loan.in_default) == (36, True)
    assert receivables(loan)["penalty"] == Decimal("88.84")
    income_before = balance("GL-INCOME-INTEREST")
    assert income_before == Decimal("661.86")

    loan_restructure(
        loan_id=loan_id,
        staff=manager,
        term=12,
        start_date=date(2026, 4, 5),
        reason="Lost job; new employer from May",
    )

    loan = reload(loan_id)
    assert loan.status == "restructured"
    assert (loan.days_past_due, loan.aging_bucket, loan.in_default) == (0, "current", False)
    rows = sorted(loan.installments, key=lambda r: (r.version, r.number))
    old = [r for r in rows if r.version == 1]
    new = [r for r in rows if r.version == 2]
    # The old schedule stays for the record, marked superseded, unchanged.
    assert len(old) == 12 and all(r.superseded for r in old)
    assert [r.penalty_due for r in old[:3]] == [Decimal("44.42"), Decimal("44.42"), Decimal("0")]
    assert len(new) == 12 and not any(r.superseded for r in new)
    # New principal: 10,000.00 principal + 192.12 interest due (100.00 + 92.12)
    # + 88.84 penalties = 10,280.96. Interest of rows 3-12 (469.74) is reversed.
    assert sum((r.principal_due for r in new), Decimal(0)) == Decimal("10280.96")
    assert new[0].due_date == date(2026, 5, 5)
    assert new[0].interest_due == Decimal("102.81")  # 1% of 10,280.96
    new_interest = sum((r.interest_due for r in new), Decimal(0))
    assert receivables(loan) == {
        "principal": Decimal("10280.96"),
        "interest": new_interest,
        "fees": Decimal("0.00"),
        "penalty": Decimal("0.00"),
    }
    assert schedule_owed(loan) == receivables(loan)
    assert balance("GL-INCOME-INTEREST") == income_before - Decimal("469.74") + new_interest
    assert trail(loan)[-2:] == [
        ("loan.restructure", f"staff:{manager.email}", "active", "restructured"),
        ("loan.reschedule", f"staff:{manager.email}", None, None),
    ]
    assert audit_rows(loan)[-1].after["principal"] == "10280.96"
    change, reschedule = audit_rows(loan)[-2:]
    assert change.note == reschedule.note == "Lost job; new employer from May"
    assert reschedule.object_type == "loan"
    assert reschedule.before == {"principal": "10000.00", "term": 12, "rate": "12.0000"}
    assert reschedule.after == {
        "principal": "10280.96",
        "term": 12,
        "rate": "12.0000",
        "version": 2,
    }
    assert posted("restructure") == (
        f"staff:{manager.email}",
        f"restructure:{loan.loan_no}:v2",
        f"Restructure {loan.loan_no} v2",
        loan.member_id,
        loan_id,
    )

    # The next day nothing of the new schedule is due: the loan stays current.
    run_job("loan-arrears", date(2026, 4, 6))
    assert reload(loan_id).days_past_due == 0
    assert ledger_check() == []


def _late(product: LoanProduct, as_of: date, on: date = DISBURSED) -> int:
    loan_id = make_loan(product=product, on=on).id
    run_job("loan-arrears", as_of)
    return loan_id


def test_restructure_after_every_row_fell_due_at_a_rate_of_nought(app):
    """Past its last due date nothing of the old schedule's interest is still to come, and
    at 0% the new schedule charges none: no interest line is posted either way, and the
    loan carries its new rate. (Mutation testing, issue 23.)"""
    # Out on 31 Jan 2025: its last row was due 31 Jan 2026.
    loan_id = _late(make_product(), date(2026, 2, 5), on=date(2025, 1, 31))
    owed = loan_debt(loan_id=loan_id).total

    restructure(loan_id, start=date(2026, 2, 5), term=6, reason="Retired", annual_rate="0")

    loan = reload(loan_id)
    assert loan.annual_rate == 0
    new = current_installments(loan_id)
    assert sum((r.principal_due for r in new), Decimal(0)) == owed
    assert {r.interest_due for r in new} == {Decimal("0.00")}
    assert receivables(loan) == schedule_owed(loan)
    assert ledger_check() == []


def test_restructure_moves_amounts_of_a_shilling_and_less(app):
    """Two fixed penalties of 0.50 (1.00 in all) are capitalised, and a new schedule whose
    interest is a few cents posts it. (Mutation testing, issue 23.)"""
    product = make_product(penalty_type="fixed", penalty_value=Decimal("0.50"))
    loan_id = _late(product, date(2026, 4, 5))
    assert receivables(reload(loan_id))["penalty"] == Decimal("1.00")

    restructure(
        loan_id, start=date(2026, 4, 5), term=1, reason="One payment in May", annual_rate="0.01"
    )

    loan = reload(loan_id)
    (row,) = current_installments(loan_id)
    # 10,000.00 + 192.12 interest due + 1.00 penalties; 0.01% a year for a month.
    assert row.principal_due == Decimal("10193.12")
    assert Decimal(0) < row.interest_due < Decimal(1)
    assert receivables(loan) == schedule_owed(loan)
    assert ledger_check() == []


def test_restructure_on_a_due_date_capitalises_that_rows_interest(app):
    """The row falling due on the restructure's first day is owed, not to come: its
    interest is capitalised, not reversed. (Mutation testing, issue 23.)"""
    loan_id = _loan_in_arrears(as_of=date(2026, 3, 31))  # row 2 is due that very day

    restructure(loan_id, start=date(2026, 3, 31), reason="Lost job")

    new = current_installments(loan_id)
    # 10,000.00 + 100.00 and 92.12 interest of rows 1 and 2 + row 1's 44.42 penalty.
    assert sum((r.principal_due for r in new), Decimal(0)) == Decimal("10236.54")
    assert ledger_check() == []


def test_restructure_reverses_future_interest_of_under_a_shilling(app):
    """At 0.01% a year the rows still to come owe cents of interest: they are reversed
    all the same. (Mutation testing, issue 23.)"""
    product = make_product(annual_rate=Decimal("0.01"), penalty_type="none")
    loan_id = _late(product, date(2026, 4, 5))
    rows = current_installments(loan_id)
    future = sum((r.interest_due for r in rows if r.due_date > date(2026, 4, 5)), Decimal(0))
    assert Decimal(0) < future <= Decimal(1)
    income = balance("GL-INCOME-INTEREST")

    restructure(loan_id, start=date(2026, 4, 5), reason="Lost job")

    new = sum((r.interest_due for r in current_installments(loan_id)), Decimal(0))
    assert balance("GL-INCOME-INTEREST") == income - future + new
    assert ledger_check() == []


def test_restructure_never_reverses_interest_already_paid(app):
    """A schedule started back before an overdue row's due date counts that row as still
    to come: only the interest it still owes is reversed, not what was paid on it.
    (Mutation testing, issue 23.)"""
    loan_id = make_loan(product=make_product(), on=DISBURSED).id
    # Row 1 whole (888.49) and row 2's interest (92.12) and 10.00 of its principal.
    loan_repay(
        loan_id=loan_id, amount="990.61", reference="RCP0000002", value_date=date(2026, 2, 28)
    )
    run_job("loan-arrears", date(2026, 4, 5))  # row 2, due 31 Mar, 5 days late
    income = balance("GL-INCOME-INTEREST")
    rows = current_installments(loan_id)
    to_come = sum((r.interest_due - r.interest_paid for r in rows[1:]), Decimal(0))

    restructure(loan_id, start=date(2026, 3, 15), reason="Hours cut since March")

    new = sum((r.interest_due for r in current_installments(loan_id)), Decimal(0))
    assert balance("GL-INCOME-INTEREST") == income - to_come + new
    assert ledger_check() == []


def test_restructure_at_a_rate_the_schedule_refuses_changes_nothing(app):
    """The schedule's own words reach staff, and the loan keeps its rate and rows."""
    loan_id = _loan_in_arrears()
    manager = make_staff("branch_manager")
    before, rows_before = counts(), count(Installment)

    with pytest.raises(LoanError, match=r"^annual rate has more than 4 decimal places: 0\.00001$"):
        loan_restructure(
            loan_id=loan_id,
            staff=manager,
            term=12,
            start_date=date(2026, 4, 5),
            reason="Lost job",
            annual_rate="0.00001",
        )
    db.session.rollback()

    assert (counts(), count(Installment)) == (before, rows_before)
    loan = reload(loan_id)
    assert (loan.status, loan.annual_rate) == ("active", Decimal("12"))
    assert ledger_check() == []


def test_a_fee_of_one_shilling_is_booked_at_disbursement(app):
    """The smallest fee is income like any other. (Mutation testing, issue 23.)"""
    product = make_product(fee_type="fixed", fee_value=Decimal("1"))
    loan = make_loan(product=product, on=DISBURSED)
    assert balance("GL-INCOME-FEES") == Decimal("1.00")
    # The member is told what reached them and what the fee took.
    [body] = sms_bodies("loan_disbursed")
    assert body.startswith(
        f"Loan {loan.loan_no} of KES 9,999.00 sent to your M-PESA, fee KES 1.00. Ref B2C"
    )
    assert ledger_check() == []


def test_a_hand_payout_is_booked_in_the_staff_members_name(app):
    """The disbursement entry says who paid out, whose loan, and by which reference, and
    the loan keys it. (Mutation testing, issue 23.)"""
    loan = _in_state("approved", make_staff("loan_officer"))
    staff = make_staff("branch_manager")
    loan_disburse(
        loan_id=loan.id, reference="BANK-7", value_date=DISBURSED, channel="manual", actor=staff
    )
    assert posted("disbursement") == (
        f"staff:{staff.email}",
        f"disburse:{loan.loan_no}",
        f"Disbursement {loan.loan_no} BANK-7",
        loan.member_id,
        loan.id,
    )
    assert ledger_check() == []


@pytest.mark.parametrize("rate", ["0", "0.01"])
def test_interest_of_nothing_or_cents_is_booked_as_scheduled(app, rate):
    """At 0% no interest line is posted; at 0.01% a year its cents are. (Mutation
    testing, issue 23.)"""
    loan = make_loan(product=make_product(annual_rate=Decimal(rate)), on=DISBURSED)
    interest = sum((r.interest_due for r in current_installments(loan.id)), Decimal(0))
    assert interest < Decimal(1)
    assert balance("GL-INCOME-INTEREST") == interest
    assert receivables(reload(loan.id))["interest"] == interest
    assert ledger_check() == []


@pytest.mark.parametrize(
    "terms",
    [
        dict(interest_method="flat", frequency="weekly", installment_multiple=Decimal("50")),
        dict(amortization="equal_principal"),
    ],
    ids=["flat-weekly-in-fifties", "equal-principal"],
)
def test_disbursement_writes_the_schedule_of_the_loans_own_terms(app, terms):
    """The rows are the schedule of the loan's method, amortization, frequency and
    multiple, not of the defaults. (Mutation testing, issue 23.)"""
    loan = make_loan(product=make_product(**terms), on=DISBURSED)
    expected = schedule_build(
        principal=loan.principal,
        annual_rate=loan.annual_rate,
        installments=loan.term,
        interest_method=loan.interest_method,
        amortization=loan.amortization,
        frequency=loan.frequency,
        multiple_of=loan.installment_multiple,
        start_date=DISBURSED,
    )
    plain = schedule_build(
        principal=loan.principal,
        annual_rate=loan.annual_rate,
        installments=loan.term,
        start_date=DISBURSED,
    )
    assert expected.rows != plain.rows  # the terms matter

    rows = current_installments(loan.id)
    assert [(r.number, r.due_date, r.principal_due, r.interest_due) for r in rows] == [
        (x.number, x.due_date, x.principal, x.interest) for x in expected.rows
    ]
    assert ledger_check() == []


def test_restructure_after_a_part_payment_carries_only_what_is_unpaid(app):
    """What the member paid on the overdue rows is not capitalised again: the new principal
    is the whole debt less the interest of rows not yet due. (Mutation testing, issue 23.)"""
    loan_id = _loan_in_arrears()
    loan_repay(
        loan_id=loan_id, amount="150.00", reference="RCP0000001", value_date=date(2026, 4, 5)
    )
    owed = loan_debt(loan_id=loan_id).total

    restructure(loan_id, start=date(2026, 4, 5), reason="Lost job")

    new = current_installments(loan_id)
    # Rows 3-12 still owed their 469.74 of interest, reversed as in the restructure above.
    assert sum((r.principal_due for r in new), Decimal(0)) == owed - Decimal("469.74")
    assert receivables(reload(loan_id)) == schedule_owed(reload(loan_id))
    assert ledger_check() == []


def test_restructure_reads_the_schedule_afresh_under_the_loans_lock(app):
    """A fee booked on a row by another writer after this session read the schedule is
    capitalised with the rest: the restructure re-reads the rows under the loan's lock,
    not the session's copy. (Mutation testing, issue 23.)"""
    loan_id = _loan_in_arrears()
    manager = make_staff("branch_manager")  # it commits, which would expire the rows
    loan = reload(loan_id)
    row = current_installments(loan_id)[0]  # the session now holds the rows
    fee_booked_behind_the_session(loan, row, Decimal("100.00"), date(2026, 4, 5))

    loan_restructure(
        loan_id=loan_id,
        staff=manager,
        term=12,
        start_date=date(2026, 4, 5),
        reason="Lost job",
    )

    new = current_installments(loan_id)
    # 10,280.96 as in the restructure above, and the 100.00 fee.
    assert sum((r.principal_due for r in new), Decimal(0)) == Decimal("10380.96")
    assert receivables(reload(loan_id))["fees"] == Decimal("0.00")
    assert ledger_check() == []


def test_restructured_loan_can_be_paid_off_and_closes(app):
    loan_id = _loan_in_arrears()
    restructure(loan_id, start=date(2026, 4, 5), term=6, reason="Harvest failed")
    owed = loan_debt(loan_id=loan_id).total

    result = loan_repay(
        loan_id=loan_id, amount=owed, reference="RCR0000001", value_date=date(2026, 4, 20)
    )

    loan = reload(loan_id)
    assert result.closed and result.balance_left == 0
    assert loan.status == "closed"
    assert trail(loan)[-1] == ("loan.close", "system", "restructured", "closed")
    assert set(receivables(loan).values()) == {Decimal("0.00")}
    assert ledger_check() == []


def test_restructured_loan_late_again_is_restructured_again(app):
    loan_id = _loan_in_arrears()
    admin_id = make_staff("branch_manager").id
    loan_restructure(
        loan_id=loan_id,
        staff=db.session.get(StaffUser, admin_id),
        term=12,
        start_date=date(2026, 4, 5),
        reason="Lost job",
    )
    run_job("loan-arrears", date(2026, 5, 20))  # new row 1, due 5 May, unpaid
    assert reload(loan_id).days_past_due == 15

    loan_restructure(
        loan_id=loan_id,
        staff=db.session.get(StaffUser, admin_id),
        term=18,
        start_date=date(2026, 5, 20),
        reason="Still looking for work",
    )

    loan = reload(loan_id)
    versions = {(r.version, r.superseded) for r in loan.installments}
    assert versions == {(1, True), (2, True), (3, False)}
    assert len(current_installments(loan_id)) == 18
    assert trail(loan)[-2][2:] == ("restructured", "restructured")
    assert receivables(loan) == schedule_owed(loan)
    assert ledger_check() == []


def test_restructure_refused_for_a_loan_not_in_arrears(app):
    manager = make_staff("branch_manager")
    loan = make_loan(product=make_product(), on=DISBURSED)
    before, rows_before = counts(), count(Installment)

    with pytest.raises(LoanError, match="is not in arrears"):
        loan_restructure(
            loan_id=loan.id, staff=manager, term=12, start_date=APPLY_ON, reason="asked nicely"
        )

    assert (counts(), count(Installment)) == (before, rows_before)
    assert ledger_check() == []


@pytest.mark.parametrize(
    ("role", "reason", "message"),
    [
        ("loan_officer", "Lost job", "loan officer staff cannot restructure loans"),
        ("auditor", "Lost job", "auditor staff cannot restructure loans"),
        ("admin", "Lost job", "admin staff cannot restructure loans"),
        ("branch_manager", "  ", "^a restructure needs a reason$"),
        ("branch_manager", "", "^a restructure needs a reason$"),
    ],
)
def test_restructure_refused_for_the_wrong_role_or_without_reason(app, role, reason, message):
    loan_id = _loan_in_arrears()
    staff = make_staff(role)
    before, rows_before = counts(), count(Installment)

    with pytest.raises((LoanError, PermissionDenied), match=message):
        loan_restructure(
            loan_id=loan_id,
            staff=staff,
            term=12,
            start_date=date(2026, 4, 5),
            reason=reason,
        )

    assert (counts(), count(Installment)) == (before, rows_before)
    assert reload(loan_id).status == "active"
    assert ledger_check() == []


# -- write-off ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["compliance", "branch_manager"])
def test_write_off_of_a_defaulted_loan_zeroes_its_receivables(app, role):
    loan_id = _loan_in_arrears()
    staff = make_staff(role)
    email = staff.email

    loan_write_off(
        loan_id=loan_id,
        staff=staff,
        reason="Member emigrated",
        value_date=date(2026, 4, 6),
    )

    loan = reload(loan_id)
    assert loan.status == "written_off"
    assert loan.closed_on == date(2026, 4, 6)
    assert set(receivables(loan).values()) == {Decimal("0.00")}
    # 10,000.00 principal + 661.86 interest + 2 × 44.42 penalties.
    assert balance("GL-WRITE-OFF") == Decimal("10750.70")
    assert trail(loan)[-1] == ("loan.write_off", f"staff:{email}", "active", "written_off")
    assert audit_rows(loan)[-1].note == "Member emigrated"
    # The journal names who wrote it off and whose loan, and the loan keys it: it posts once.
    assert posted("write_off") == (
        f"staff:{email}",
        f"write_off:{loan.loan_no}",
        f"Write-off {loan.loan_no}: Member emigrated",
        loan.member_id,
        loan_id,
    )
    # Off the books: no longer in the portfolio, and the daily job leaves it alone.
    assert portfolio_at_risk(as_of=date(2026, 4, 6)).gross_principal == 0
    run_job("loan-arrears", date(2026, 5, 6))
    assert reload(loan_id).status == "written_off"
    assert ledger_check() == []


def test_write_off_takes_a_component_of_a_shilling(app):
    """Two fixed penalties of 0.50 (1.00 in all) go to the write-off with the rest.
    (Mutation testing, issue 23.)"""
    product = make_product(penalty_type="fixed", penalty_value=Decimal("0.50"))
    loan_id = _late(product, date(2026, 4, 5))
    assert receivables(reload(loan_id))["penalty"] == Decimal("1.00")

    loan_write_off(
        loan_id=loan_id,
        staff=make_staff("branch_manager"),
        reason="Member emigrated",
        value_date=date(2026, 4, 6),
    )

    assert set(receivables(reload(loan_id)).values()) == {Decimal("0.00")}
    # 10,000.00 principal + 661.86 interest + 1.00 penalties.
    assert balance("GL-WRITE-OFF") == Decimal("10662.86")
    assert ledger_check() == []


def test_write_off_of_a_restructured_loan_back_in_default(app):
    loan_id = _loan_in_arrears()
    admin_id = make_staff("branch_manager").id
    loan_restructure(
        loan_id=loan_id,
        staff=db.session.get(StaffUser, admin_id),
        term=6,
        start_date=date(2026, 4, 5),
        reason="One more chance",
    )
    run_job("loan-arrears", date(2026, 6, 10))  # first new row due 5 May: 36 days late
    assert reload(loan_id).in_default

    loan_write_off(
        loan_id=loan_id,
        staff=db.session.get(StaffUser, admin_id),
        reason="Stopped paying again",
        value_date=date(2026, 6, 10),
    )

    loan = reload(loan_id)
    assert trail(loan)[-1][2:] == ("restructured", "written_off")
    assert set(receivables(loan).values()) == {Decimal("0.00")}
    assert ledger_check() == []


@pytest.mark.parametrize(
    ("role", "late_until", "message"),
    [
        ("loan_officer", date(2026, 4, 5), "loan officer staff cannot write off loans"),
        ("admin", date(2026, 4, 5), "admin staff cannot write off loans"),
        ("branch_manager", date(2026, 3, 20), "is not in default"),  # 20 days late only
    ],
)
def test_write_off_refused(app, role, late_until, message):
    loan_id = _loan_in_arrears(as_of=late_until)
    staff = make_staff(role)
    before = counts()

    with pytest.raises((LoanError, PermissionDenied), match=message):
        loan_write_off(
            loan_id=loan_id,
            staff=staff,
            reason="Cannot trace member",
            value_date=late_until,
        )

    assert counts() == before
    loan = reload(loan_id)
    assert loan.status == "active"
    assert receivables(loan)["principal"] == Decimal("10000.00")
    assert ledger_check() == []
