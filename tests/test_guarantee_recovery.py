"""Recovery from guarantors and replacing a guarantor, through the services: a branch
manager proposes, someone else records the board's decision, and only an approval debits
the guarantors' deposits (principal only, in proportion to exposure, never more than they
have free) in one entry that keeps the schedule reconciled; a guarantor is replaced only
once the new one accepts, a branch manager approves and the cover stays complete. Races
on PostgreSQL. Every test ends with the full reconciliation (the autouse fixture)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text, update

from app.clock import business_today
from app.extensions import db
from app.models import (
    AuditLog,
    Guarantee,
    GuaranteeRecovery,
    JournalEntry,
    JournalLine,
    Loan,
    Member,
    SmsMessage,
    StaffUser,
)
from app.selectors.guarantees import (
    guarantees_held,
    member_deposits,
    recovery_problems,
)
from app.selectors.loans import current_installments
from app.services.guarantees import guarantee_accept, guarantee_decline, guarantee_request
from app.services.guarantees.recovery import (
    GuaranteeRecoveryError,
    guarantee_recovery_decide,
    guarantee_recovery_propose,
    guarantee_substitute_accept,
    guarantee_substitute_approve,
    guarantee_substitute_decline,
    guarantee_substitute_request,
)
from app.services.ledger import credit, debit, gl_account, journal_post, member_account
from app.services.loans import loan_apply, loan_approve, loan_disburse, loan_repay
from app.services.members import member_deposit
from app.services.permissions import PermissionDenied
from tests.helpers import Worker, sms_in, wait_until_blocked
from tests.loan_factories import (
    balance,
    make_borrower,
    make_product,
    make_staff,
    receivables,
    reload,
    run_job,
)

D = Decimal
PAID_OUT = date(2026, 1, 1)
DEFAULTED = date(2026, 4, 1)  # the first installment 59 days late: in default
DECIDED = date(2026, 4, 2)


def _defaulted(
    pledges: tuple[int, ...] = (4000, 2000),
    savings: tuple[int, ...] | None = None,
    *,
    amount: int = 10000,
    repaid: int = 0,
    code: str = "SEC",
) -> tuple[int, list[Member]]:
    """A loan of `amount` secured by one guarantor per pledge (each with `savings`, else
    their pledge), paid out on 1 January, `repaid` on 2 January, in default by April."""
    product = make_product(
        "V1",
        code=code,
        name="Development",
        min_guarantors=len(pledges),
        guarantee_cover=D("100"),
        default_threshold_days=30,
    )
    borrower = make_borrower(savings=5000)
    loan = loan_apply(member_id=borrower.id, product_id=product.id, amount=amount, as_of=PAID_OUT)
    guarantors = []
    for pledge, saved in zip(pledges, savings or pledges, strict=True):
        guarantor = make_borrower(savings=saved)
        asked = guarantee_request(
            loan_id=loan.id,
            guarantor_id=guarantor.id,
            amount=pledge,
            actor="staff:t",
            today=PAID_OUT,
        )
        guarantee_accept(
            guarantee_id=asked.id, guarantor_id=guarantor.id, via="ussd", today=PAID_OUT
        )
        guarantors.append(guarantor)
    loan_approve(loan_id=loan.id, staff=make_staff("branch_manager"))
    loan_disburse(loan_id=loan.id, reference=f"B2C{loan.id:05d}", value_date=PAID_OUT)
    if repaid:
        loan_repay(loan_id=loan.id, amount=repaid, reference="REPAID1", value_date=date(2026, 1, 2))
    loan_id, ids = loan.id, [g.id for g in guarantors]
    run_job("loan-arrears", DEFAULTED)  # ends the session: reload what is returned
    assert reload(loan_id).in_default
    return loan_id, [db.session.get(Member, member_id) for member_id in ids]


def _propose(loan_id: int, manager=None) -> GuaranteeRecovery:  # noqa: ANN001
    return guarantee_recovery_propose(
        loan_id=loan_id,
        staff=manager or make_staff("branch_manager"),
        reason="Borrower left the county; demand letters unanswered",
        as_of=DEFAULTED,
    )


def _decide(recovery_id: int, staff, decision: str = "approve") -> GuaranteeRecovery:  # noqa: ANN001
    return guarantee_recovery_decide(
        recovery_id=recovery_id,
        staff=staff,
        decision=decision,
        decision_date=DECIDED,
        minute_ref="BM/2026/04/7",
        as_of=DECIDED,
    )


def _take_savings(member: Member, amount: int) -> None:
    """Savings moved out behind the holds: every service refuses that now (free deposits
    only), so the ledger's own posting stands for data from before holds existed, the
    state a recovery must still handle without an overdraft."""
    journal_post(
        kind="adjustment",
        lines=[
            debit(member_account(member, "savings"), D(amount)),
            credit(gl_account("GL-SUSPENSE"), D(amount)),
        ],
        value_date=PAID_OUT,
        description=f"Correction {member.member_no}",
        idempotency_key=f"test-correction:{member.id}",
        actor="test",
        member_id=member.id,
    )
    db.session.commit()


def _savings(member: Member) -> D:
    return balance(f"SAV-{member.member_no}")


def _statuses(loan_id: int) -> dict[int, tuple[str, D]]:
    return {
        g.guarantor_id: (g.status, g.recovered_amount)
        for g in db.session.scalars(
            select(Guarantee)
            .where(Guarantee.loan_id == loan_id)
            .execution_options(populate_existing=True)
        )
    }


def _id_of(loan_id: int, member: Member) -> int:
    return db.session.scalar(
        select(Guarantee.id).where(
            Guarantee.loan_id == loan_id, Guarantee.guarantor_id == member.id
        )
    )


def _texts(member: Member) -> list[str]:
    return list(
        db.session.scalars(
            select(SmsMessage.body).where(
                SmsMessage.phone == member.phone, SmsMessage.template == "guarantee_recovered"
            )
        )
    )


@pytest.mark.books_may_disagree  # it plants a mismatch the reconciliation must find
def test_an_approved_recovery_debits_each_guarantor_their_exposure_in_one_entry(
    app: Flask,
) -> None:
    loan_id, (first, second) = _defaulted()
    manager = make_staff("branch_manager")
    proposal = _propose(loan_id, manager)
    assert proposal.status == "proposed"
    assert [(g["member_no"], g["exposure"]) for g in proposal.exposures["guarantors"]] == [
        (first.member_no, "4000.00"),
        (second.member_no, "2000.00"),
    ]
    assert proposal.exposures["principal_owed"] == "10000.00"
    # Nothing moves on a proposal.
    assert (_savings(first), _savings(second)) == (D("4000"), D("2000"))

    with pytest.raises(GuaranteeRecoveryError, match="someone other than who proposed it"):
        _decide(proposal.id, manager)
    assert db.session.get(GuaranteeRecovery, proposal.id).status == "proposed"

    compliance = make_staff("compliance")
    decided = _decide(proposal.id, compliance)
    assert (decided.status, decided.recovered_total, decided.minute_ref) == (
        "approved",
        D("6000.00"),
        "BM/2026/04/7",
    )
    loan = reload(loan_id)
    # One entry: both guarantors' savings debited, the principal receivable credited.
    [entry] = db.session.scalars(
        select(JournalEntry).where(JournalEntry.kind == "guarantee_recovery")
    ).all()
    assert entry.id == decided.entry_id and entry.loan_id == loan_id
    assert entry.idempotency_key == f"guarantee_recovery:{proposal.id}"
    assert (
        db.session.scalar(
            select(func.count()).select_from(JournalLine).where(JournalLine.entry_id == entry.id)
        )
        == 3
    )
    assert (_savings(first), _savings(second)) == (D("0.00"), D("0.00"))
    assert receivables(loan)["principal"] == D("4000.00")
    assert receivables(loan)["interest"] > 0  # interest and penalty stay the borrower's
    # The schedule's principal is paid oldest first, as a repayment pays it.
    left = D("6000.00")
    for row in current_installments(loan_id):
        assert row.principal_paid == min(row.principal_due, left)
        left -= row.principal_paid
    assert left == 0

    assert _statuses(loan_id) == {
        first.id: ("recovered", D("4000.00")),
        second.id: ("recovered", D("2000.00")),
    }
    assert guarantees_held(first.id) == [] and member_deposits(first.id).free == D("0")
    [sms] = _texts(first)
    assert f"KES 4,000.00 was taken from your deposits for loan {loan.loan_no}" in sms
    assert len(_texts(second)) == 1
    actions = db.session.scalars(
        select(AuditLog.action).where(AuditLog.object_id == loan.loan_no).order_by(AuditLog.id)
    ).all()
    assert actions[-2:] == ["guarantee.recovery_propose", "guarantee.recovery_approve"]
    assert loan.status == "active"  # interest is still owed

    with pytest.raises(GuaranteeRecoveryError, match="recorded already: approved"):
        _decide(proposal.id, make_staff("branch_manager"))

    # The reconciliation of recoveries finds the entry and the guarantees agreeing, and
    # says so when a guarantee's record drifts from what its guarantor was debited.
    assert recovery_problems() == []
    db.session.execute(
        update(Guarantee)
        .where(Guarantee.guarantor_id == second.id)
        .values(recovered_amount=D("1999.99"))
    )
    db.session.commit()
    assert recovery_problems() == [
        f"recovery {proposal.id}: guarantee {_id_of(loan_id, second)} records 1999.99, "
        "the decision 2000.00"
    ]


def test_a_declined_proposal_moves_nothing_and_another_may_follow(app: Flask) -> None:
    loan_id, (first, second) = _defaulted()
    proposal = _propose(loan_id)
    with pytest.raises(GuaranteeRecoveryError, match="waits for the board's decision"):
        _propose(loan_id)
    declined = _decide(proposal.id, make_staff("compliance"), "decline")
    assert (declined.status, declined.entry_id, declined.recovered_total) == (
        "declined",
        None,
        None,
    )
    assert _savings(first) == D("4000")
    assert _statuses(loan_id)[first.id] == ("accepted", D("0.00"))
    again = _propose(loan_id)
    assert again.status == "proposed"

    # Each decision is audited on the loan in the decider's name, the approval with what
    # it took from each guarantee.
    approver = make_staff("compliance")
    _decide(again.id, approver)
    loan_no = reload(loan_id).loan_no
    decisions = db.session.scalars(
        select(AuditLog)
        .where(AuditLog.action.in_(("guarantee.recovery_approve", "guarantee.recovery_decline")))
        .order_by(AuditLog.id)
    ).all()
    assert [(a.action, a.object_type, a.object_id) for a in decisions] == [
        ("guarantee.recovery_decline", "loan", loan_no),
        ("guarantee.recovery_approve", "loan", loan_no),
    ]
    assert decisions[1].actor == f"staff:{approver.email}"
    assert [a.before for a in decisions] == [
        {"recovery_id": proposal.id, "status": "proposed"},
        {"recovery_id": again.id, "status": "proposed"},
    ]
    assert decisions[0].after == {
        "recovery_id": proposal.id,
        "status": "declined",
        "decision_date": DECIDED.isoformat(),
        "minute_ref": "BM/2026/04/7",
    }
    assert decisions[1].after == {
        "recovery_id": again.id,
        "status": "approved",
        "decision_date": DECIDED.isoformat(),
        "minute_ref": "BM/2026/04/7",
        "recovered": "6000.00",
        "by_guarantee": {
            str(_id_of(loan_id, first)): "4000.00",
            str(_id_of(loan_id, second)): "2000.00",
        },
    }


def test_proposals_and_decisions_are_refused_in_words(app: Flask) -> None:
    loan_id, _ = _defaulted()
    with pytest.raises(PermissionDenied, match="cannot propose recovery from guarantors"):
        _propose(loan_id, make_staff("loan_officer"))
    with pytest.raises(GuaranteeRecoveryError, match="the reason is needed"):
        guarantee_recovery_propose(
            loan_id=loan_id, staff=make_staff("branch_manager"), reason=" ", as_of=DEFAULTED
        )
    proposal = _propose(loan_id)
    compliance = make_staff("compliance")
    with pytest.raises(PermissionDenied):
        _decide(proposal.id, make_staff("loan_officer"))
    with pytest.raises(GuaranteeRecoveryError, match="approves or declines"):
        _decide(proposal.id, compliance, "maybe")
    with pytest.raises(GuaranteeRecoveryError, match="minute reference is needed"):
        guarantee_recovery_decide(
            recovery_id=proposal.id,
            staff=compliance,
            decision="approve",
            decision_date=DECIDED,
            minute_ref="",
            as_of=DECIDED,
        )
    with pytest.raises(GuaranteeRecoveryError, match="cannot be in the future"):
        guarantee_recovery_decide(
            recovery_id=proposal.id,
            staff=compliance,
            decision="approve",
            decision_date=date(2026, 4, 3),
            minute_ref="BM/1",
            as_of=DECIDED,
        )
    with pytest.raises(GuaranteeRecoveryError, match="proposed on 2026-04-01; the board"):
        guarantee_recovery_decide(
            recovery_id=proposal.id,
            staff=compliance,
            decision="approve",
            decision_date=date(2026, 3, 31),
            minute_ref="BM/1",
            as_of=DECIDED,
        )
    assert db.session.get(GuaranteeRecovery, proposal.id).status == "proposed"

    # A loan not in default, and one with no guarantors, are not recovered from.
    plain = make_product("V1", code="PLN", name="Plain")
    borrower = make_borrower(savings=10000)
    other = loan_apply(member_id=borrower.id, product_id=plain.id, amount=5000, as_of=PAID_OUT)
    loan_approve(loan_id=other.id, staff=make_staff("branch_manager"))
    loan_disburse(loan_id=other.id, reference="B2CPLAIN", value_date=PAID_OUT)
    other_id = other.id
    with pytest.raises(GuaranteeRecoveryError, match="not in default; only a loan in default"):
        _propose(other_id)
    run_job("loan-arrears", DEFAULTED)
    with pytest.raises(GuaranteeRecoveryError, match="has no guarantor to recover from"):
        _propose(other_id)


def test_pledges_above_the_principal_owed_are_cut_in_proportion(app: Flask) -> None:
    # 14,000 pledged on a 10,000 loan; 1,000 repaid (some of it principal).
    loan_id, (first, second) = _defaulted((8000, 6000), repaid=1000)
    owed = receivables(reload(loan_id))["principal"]
    assert D("9000") < owed < D("10000")
    exposures = [(D(pledge) * owed / D("10000")).quantize(D("0.01")) for pledge in (8000, 6000)]
    assert sum(exposures) > owed
    proposal = _propose(loan_id)
    decided = _decide(proposal.id, make_staff("compliance"))
    taken = [
        (exposure * owed / sum(exposures)).quantize(D("0.01"), rounding="ROUND_FLOOR")
        for exposure in exposures
    ]
    assert _statuses(loan_id) == {
        first.id: ("recovered", taken[0]),
        second.id: ("recovered", taken[1]),
    }
    assert decided.recovered_total == sum(taken) <= owed
    assert receivables(reload(loan_id))["principal"] == owed - sum(taken)
    assert recovery_problems() == []


def test_a_guarantor_short_of_deposits_pays_what_is_free_never_an_overdraft(
    app: Flask,
) -> None:
    # The second guarantor pledges 2,000 of 2,600 and then 1,000 leaves their savings
    # (a correction posted before holds existed): 1,600 is left, all of it this
    # guarantee's to pay.
    loan_id, (first, second) = _defaulted(savings=(4000, 2600))
    _take_savings(second, 1000)
    assert _savings(second) == D("1600")
    proposal = _propose(loan_id)
    decided = _decide(proposal.id, make_staff("compliance"))
    assert _statuses(loan_id) == {
        first.id: ("recovered", D("4000.00")),
        second.id: ("recovered", D("1600.00")),
    }
    assert decided.recovered_total == D("5600.00")
    assert _savings(second) == D("0.00")
    row = {g["member_no"]: g for g in decided.recovered["guarantors"]}[second.member_no]
    assert (row["exposure"], row["recovered"]) == ("2000.00", "1600.00")
    assert recovery_problems() == []


def test_a_guarantor_pays_only_what_their_other_holds_and_own_loans_leave_free(
    app: Flask,
) -> None:
    """The second guarantor pledged 2,000 here, 3,000 on a loan still being applied for,
    and applies for 1,000 of their own; then 1,500 leaves their savings. Of the 4,500 left,
    the other pledge holds 3,000 and their own application 1,000: 500 is this guarantee's
    to pay, not its whole exposure."""
    loan_id, (first, second) = _defaulted(savings=(4000, 6000))
    product = reload(loan_id).product
    other = loan_apply(
        member_id=make_borrower(savings=5000).id,
        product_id=product.id,
        amount=10000,
        as_of=DEFAULTED,
    )
    asked = guarantee_request(
        loan_id=other.id, guarantor_id=second.id, amount=3000, actor="staff:t", today=DEFAULTED
    )
    guarantee_accept(guarantee_id=asked.id, guarantor_id=second.id, via="sms", today=DEFAULTED)
    loan_apply(member_id=second.id, product_id=product.id, amount=1000, as_of=DEFAULTED)
    _take_savings(second, 1500)
    held = member_deposits(second.id)
    assert (held.deposits, held.guaranteed, held.own) == (D("4500"), D("5000"), D("1000"))

    decided = _decide(_propose(loan_id).id, make_staff("compliance"))

    assert _statuses(loan_id) == {
        first.id: ("recovered", D("4000.00")),
        second.id: ("recovered", D("500.00")),
    }
    assert decided.recovered_total == D("4500.00")
    assert _savings(second) == D("4000.00")


def test_a_partial_recovery_pays_principal_oldest_first_up_to_what_each_installment_owes(
    app: Flask,
) -> None:
    """500 repaid early went to the first installment, 400 of it principal. The 5,760 the
    guarantors pay (their pledges' share of the 9,600 owed) is principal only: each
    installment takes what it still owes, oldest first; only those it clears are marked
    paid, and the rest still wait."""
    loan_id, _ = _defaulted(repaid=500)
    before = {row.number: row.principal_paid for row in current_installments(loan_id)}
    assert D("0") < before[1] < current_installments(loan_id)[0].principal_due

    decided = _decide(_propose(loan_id).id, make_staff("compliance"))

    rows = current_installments(loan_id)
    paid_now = sum((row.principal_paid - before[row.number] for row in rows), D("0"))
    assert paid_now == decided.recovered_total == D("5760.00")
    assert all(row.principal_paid <= row.principal_due for row in rows)
    cleared = [row.principal_paid == row.principal_due for row in rows]
    assert cleared == sorted(cleared, reverse=True)  # a run of cleared ones, oldest first
    assert 0 < cleared.count(True) < len(rows)
    assert [row.paid_on is None for row in rows] == [row.outstanding > 0 for row in rows]
    assert receivables(reload(loan_id))["principal"] == sum(
        (row.principal_due - row.principal_paid for row in rows), D("0")
    )


def test_nothing_to_take_is_refused_and_the_proposal_waits(app: Flask) -> None:
    # All the guarantor's savings left (a correction posted before holds existed).
    loan_id, (guarantor,) = _defaulted((5000,), savings=(10000,))
    _take_savings(guarantor, 10000)
    proposal = _propose(loan_id)
    with pytest.raises(GuaranteeRecoveryError, match="guarantors have no free deposits"):
        _decide(proposal.id, make_staff("compliance"))
    assert db.session.get(GuaranteeRecovery, proposal.id).status == "proposed"
    assert _statuses(loan_id)[guarantor.id] == ("accepted", D("0.00"))
    # Once they have saved again, the same proposal is decided and takes what is there.
    member_deposit(member_id=guarantor.id, amount=3000, reference="SAVEAGAIN", value_date=DECIDED)
    assert _decide(proposal.id, make_staff("compliance")).recovered_total == D("3000.00")
    assert _statuses(loan_id)[guarantor.id] == ("recovered", D("3000.00"))


# -- replacing a guarantor -------------------------------------------------------------------


def _guarantee_of(loan_id: int, member: Member) -> Guarantee:
    return db.session.scalars(
        select(Guarantee).where(
            Guarantee.loan_id == loan_id,
            Guarantee.guarantor_id == member.id,
            Guarantee.status == "accepted",
        )
    ).one()


def test_a_guarantor_is_replaced_once_the_new_one_accepts_and_a_manager_approves(
    app: Flask,
) -> None:
    loan_id, (first, second) = _defaulted()
    old = _guarantee_of(loan_id, first)
    newcomer = make_borrower(savings=6000)
    officer, manager = make_staff("loan_officer"), make_staff("branch_manager")
    asked = guarantee_substitute_request(
        guarantee_id=old.id, guarantor_id=newcomer.id, by=officer, today=DEFAULTED
    )
    assert (asked.status, asked.amount, asked.replaces_id) == ("requested", D("4000"), old.id)
    [sms] = db.session.scalars(
        select(SmsMessage.body).where(
            SmsMessage.phone == newcomer.phone, SmsMessage.template == "guarantee_request"
        )
    ).all()
    assert f"guarantee KES 4,000.00 of loan {reload(loan_id).loan_no}" in sms
    with pytest.raises(GuaranteeRecoveryError, match="a replacement for this guarantor"):
        guarantee_substitute_request(
            guarantee_id=old.id, guarantor_id=make_borrower(savings=1).id, by=officer
        )
    with pytest.raises(
        GuaranteeRecoveryError,
        match=r"^the new guarantor has not accepted \(the request is requested\); "
        "a replacement is approved once they have$",
    ):
        guarantee_substitute_approve(guarantee_id=asked.id, staff=manager)
    # Only a replacement is approved: not an ordinary guarantee, not an unknown id.
    for not_one in (old.id, 999999):
        with pytest.raises(GuaranteeRecoveryError, match=f"^no replacement guarantee {not_one}$"):
            guarantee_substitute_approve(guarantee_id=not_one, staff=manager)
    with pytest.raises(PermissionDenied):
        guarantee_substitute_approve(guarantee_id=asked.id, staff=officer)

    guarantee_substitute_accept(
        guarantee_id=asked.id, guarantor_id=newcomer.id, via="sms", today=DEFAULTED
    )
    # Both hold until the replacement is approved.
    assert member_deposits(newcomer.id).free == D("2000")
    assert member_deposits(first.id).free == D("0")
    replaced = guarantee_substitute_approve(guarantee_id=asked.id, staff=manager)
    assert (replaced.id, replaced.status) == (old.id, "replaced")
    assert replaced.ended_at is not None
    assert member_deposits(first.id).free == D("4000")
    assert _statuses(loan_id)[newcomer.id] == ("accepted", D("0.00"))
    audit = db.session.scalars(select(AuditLog).where(AuditLog.action == "guarantee.replace")).one()
    assert (audit.actor, audit.object_type, audit.object_id) == (
        f"staff:{manager.email}",
        "loan",
        reload(loan_id).loan_no,
    )
    assert audit.before == {
        "guarantee": old.id,
        "status": "accepted",
        "guarantor": first.member_no,
    }
    assert audit.after == {
        "status": "replaced",
        "replaced_by": asked.id,
        "guarantor": newcomer.member_no,
        "amount": "4000.00",
    }
    with pytest.raises(
        GuaranteeRecoveryError, match="^the guarantee it replaces is replaced already$"
    ):
        guarantee_substitute_approve(guarantee_id=asked.id, staff=manager)

    # The new guarantor is the one a recovery then takes from.
    proposal = _propose(loan_id)
    _decide(proposal.id, make_staff("compliance"))
    statuses = _statuses(loan_id)
    assert statuses[newcomer.id] == ("recovered", D("4000.00"))
    assert statuses[first.id] == ("replaced", D("0.00"))
    assert _savings(first) == D("4000")


def test_a_replacement_leaving_the_cover_short_is_refused(app: Flask) -> None:
    loan_id, (first, _) = _defaulted()
    old = _guarantee_of(loan_id, first)
    newcomer = make_borrower(savings=6000)
    borrower = reload(loan_id).member
    # The borrower asks too; another member may not.
    with pytest.raises(GuaranteeRecoveryError, match="only the borrower or staff"):
        guarantee_substitute_request(guarantee_id=old.id, guarantor_id=newcomer.id, by=newcomer)
    asked = guarantee_substitute_request(
        guarantee_id=old.id, guarantor_id=newcomer.id, by=borrower, amount="1000"
    )
    guarantee_substitute_accept(
        guarantee_id=asked.id, guarantor_id=newcomer.id, via="ussd", today=DEFAULTED
    )
    with pytest.raises(
        GuaranteeRecoveryError, match="would not be secured: KES 3,000 of KES 5,000"
    ):
        guarantee_substitute_approve(guarantee_id=asked.id, staff=make_staff("branch_manager"))
    assert _guarantee_of(loan_id, first).status == "accepted"


def test_a_replacement_meeting_the_cover_exactly_is_approved_unless_guarantors_fall_short(
    app: Flask,
) -> None:
    """The cover is 5,000 (the 10,000 loan above the borrower's own 5,000): the 2,000
    pledge that stays and a 3,000 replacement meet it to the shilling. The guarantor count
    is the product's as it stands when the manager approves."""
    loan_id, (first, second) = _defaulted()
    manager = make_staff("branch_manager")
    old = _guarantee_of(loan_id, first)
    newcomer = make_borrower(savings=3000)
    asked = guarantee_substitute_request(
        guarantee_id=old.id, guarantor_id=newcomer.id, by=manager, amount="3000", today=DEFAULTED
    )
    guarantee_substitute_accept(
        guarantee_id=asked.id, guarantor_id=newcomer.id, via="ussd", today=DEFAULTED
    )
    product = reload(loan_id).product
    product.min_guarantors = 3
    db.session.commit()
    with pytest.raises(
        GuaranteeRecoveryError,
        match=r"would not be secured: KES 5,000 of KES 5,000 covered, 2 of 3 guarantors$",
    ):
        guarantee_substitute_approve(guarantee_id=asked.id, staff=manager)
    product = reload(loan_id).product
    product.min_guarantors = 2
    db.session.commit()
    replaced = guarantee_substitute_approve(guarantee_id=asked.id, staff=manager)
    assert (replaced.id, replaced.status) == (old.id, "replaced")
    assert _guarantee_of(loan_id, second).status == "accepted"


def test_a_replacement_is_accepted_out_of_free_deposits_only(app: Flask) -> None:
    # Another loan in default, with a replacement of its own waiting: not this recovery's.
    other_loan, (other_first, _) = _defaulted(code="SEC2")
    other_asked = guarantee_substitute_request(
        guarantee_id=_guarantee_of(other_loan, other_first).id,
        guarantor_id=make_borrower(savings=9000).id,
        by=make_staff("branch_manager"),
    ).id
    loan_id, (first, _) = _defaulted()
    old = _guarantee_of(loan_id, first)
    poor = make_borrower(savings=3000)
    asked = guarantee_substitute_request(
        guarantee_id=old.id, guarantor_id=poor.id, by=make_staff("branch_manager")
    )
    with pytest.raises(GuaranteeRecoveryError, match="KES 3,000, less than the KES 4,000"):
        guarantee_substitute_accept(
            guarantee_id=asked.id, guarantor_id=poor.id, via="ussd", today=DEFAULTED
        )
    assert db.session.get(Guarantee, asked.id).status == "requested"
    # A recovery ends the request: there is nothing left for it to replace.
    proposal = _propose(loan_id)
    with pytest.raises(GuaranteeRecoveryError, match="waits for the board"):
        guarantee_substitute_request(
            guarantee_id=old.id, guarantor_id=make_borrower(savings=1).id, by=reload(loan_id).member
        )
    decider = make_staff("compliance")
    _decide(proposal.id, decider)
    cancelled = db.session.get(Guarantee, asked.id)
    assert cancelled.status == "cancelled" and cancelled.ended_at is not None
    assert db.session.get(Guarantee, other_asked).status == "requested"
    audit = db.session.scalars(select(AuditLog).where(AuditLog.action == "guarantee.cancel")).one()
    assert (audit.actor, audit.object_type, audit.object_id, audit.note) == (
        f"staff:{decider.email}",
        "loan",
        reload(loan_id).loan_no,
        "the guarantors were recovered from",
    )
    assert (audit.before, audit.after) == (
        {"guarantee": asked.id, "status": "requested"},
        {"status": "cancelled"},
    )


def test_a_member_asked_to_replace_a_guarantor_may_say_no(app: Flask) -> None:
    loan_id, (first, _) = _defaulted()
    old = _guarantee_of(loan_id, first)
    other = make_borrower(savings=9000)
    asked = guarantee_substitute_request(
        guarantee_id=old.id, guarantor_id=other.id, by=reload(loan_id).member
    )
    with pytest.raises(GuaranteeRecoveryError, match="no such request to replace"):
        guarantee_substitute_decline(
            guarantee_id=asked.id, guarantor_id=first.id, via="sms", today=DEFAULTED
        )
    guarantee_substitute_decline(
        guarantee_id=asked.id, guarantor_id=other.id, via="sms", today=DEFAULTED
    )
    assert db.session.get(Guarantee, asked.id).status == "declined"
    assert _guarantee_of(loan_id, first).status == "accepted"
    borrower = reload(loan_id).member
    assert db.session.scalar(
        select(SmsMessage.body).where(
            SmsMessage.phone == borrower.phone, SmsMessage.template == "guarantee_declined"
        )
    )
    with pytest.raises(GuaranteeRecoveryError, match="was declined already"):
        guarantee_substitute_accept(
            guarantee_id=asked.id, guarantor_id=other.id, via="sms", today=DEFAULTED
        )


@pytest.mark.parametrize(
    "decline",
    [guarantee_substitute_decline, guarantee_decline],
    ids=["replacement decline", "ordinary decline (SMS NO, USSD)"],
)
def test_a_declined_replacement_is_recorded_audited_and_told_to_the_borrower(
    app: Flask, decline: Callable[..., Guarantee]
) -> None:
    """Whichever surface the answer comes from, a request to replace a guarantor is
    declined by the replacement's own rules: its expiry, its guarantor, its audit."""
    loan_id, (first, _) = _defaulted()
    old = _guarantee_of(loan_id, first)
    other = make_borrower(savings=9000)
    asked = guarantee_substitute_request(
        guarantee_id=old.id, guarantor_id=other.id, by=reload(loan_id).member, today=DEFAULTED
    )
    # The request runs a week from the day it was asked: an answer dated after that is
    # refused however the clock reads, and changes nothing.
    with pytest.raises(GuaranteeRecoveryError, match="this request has expired"):
        decline(guarantee_id=asked.id, guarantor_id=other.id, via="sms", today=date(2026, 4, 30))
    with pytest.raises(GuaranteeRecoveryError, match="no such request to replace"):
        decline(guarantee_id=asked.id, guarantor_id=first.id, via="sms", today=DEFAULTED)
    assert db.session.get(Guarantee, asked.id).status == "requested"

    decline(guarantee_id=asked.id, guarantor_id=other.id, via="ussd", today=DEFAULTED)
    row = db.session.get(Guarantee, asked.id)
    assert (row.status, row.answered_via) == ("declined", "ussd")
    assert row.answered_at is not None and row.ended_at == row.answered_at
    assert _guarantee_of(loan_id, first).status == "accepted"
    audit = db.session.scalars(select(AuditLog).where(AuditLog.action == "guarantee.decline")).one()
    loan = reload(loan_id)
    assert (audit.actor, audit.object_type, audit.object_id) == (
        f"member:{other.member_no}",
        "loan",
        loan.loan_no,
    )
    assert audit.after == {"guarantee": asked.id, "status": "declined", "replaces": old.id}
    sms = db.session.scalars(
        select(SmsMessage).where(SmsMessage.template == "guarantee_declined")
    ).one()
    assert sms.phone == loan.member.phone
    assert sms.idempotency_key == f"guarantee-declined:{asked.id}"
    masked = " ".join(f"{part[0]}***" for part in other.name.split())
    assert masked in sms.body and loan.loan_no in sms.body and other.name not in sms.body


# -- races (PostgreSQL: row locks wait) --------------------------------------------------------


def _hold_loan(app: Flask, loan_id: int) -> tuple[Worker, threading.Event]:
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        db.session.execute(text("SELECT id FROM loans WHERE id = :id FOR UPDATE"), {"id": loan_id})
        locked.set()
        release.wait(20)
        db.session.commit()

    holder = Worker(app, hold)
    holder.start()
    assert locked.wait(20)
    return holder, release


def _repayment(app: Flask, loan_id: int, reference: str) -> Worker:
    """3,000 repaid on the decision day in a session of its own; its outcome is the
    allocation."""
    return Worker(
        app,
        lambda: (
            loan_repay(
                loan_id=loan_id, amount="3000", reference=reference, value_date=DECIDED
            ).allocated
        ),
    )


def test_two_deciders_at_once_post_the_recovery_once(app: Flask, pg: None) -> None:
    loan_id, (first, second) = _defaulted()
    proposal_id = _propose(loan_id).id
    deciders = [make_staff("compliance").id, make_staff("branch_manager").id]
    savings = [f"SAV-{first.member_no}", f"SAV-{second.member_no}"]
    db.session.remove()

    holder, release = _hold_loan(app, loan_id)
    racers = [
        Worker(
            app,
            lambda staff_id=staff_id: (
                _decide(proposal_id, db.session.get(StaffUser, staff_id)).status
            ),
        )
        for staff_id in deciders
    ]
    for racer in racers:
        racer.start()
    wait_until_blocked(2)
    release.set()
    holder.outcome()
    outcomes = []
    for racer in racers:
        try:
            outcomes.append(racer.outcome())
        except GuaranteeRecoveryError as exc:
            outcomes.append(str(exc))
    assert sorted(outcomes, key=len) == [
        "approved",
        "the board's decision on this proposal is recorded already: approved on 2026-04-02",
    ]
    entries = db.session.scalar(
        select(func.count())
        .select_from(JournalEntry)
        .where(JournalEntry.kind == "guarantee_recovery")
    )
    assert entries == 1
    assert [balance(code) for code in savings] == [D("0.00"), D("0.00")]


@pytest.mark.parametrize("first", ["decision", "repayment"])
def test_a_decision_racing_a_repayment_keeps_the_books_exact(
    app: Flask, pg: None, first: str
) -> None:
    loan_id, guarantors = _defaulted()
    proposal_id = _propose(loan_id).id
    compliance_id = make_staff("compliance").id
    savings = [f"SAV-{g.member_no}" for g in guarantors]
    db.session.remove()

    holder, release = _hold_loan(app, loan_id)
    decide = Worker(
        app, lambda: _decide(proposal_id, db.session.get(StaffUser, compliance_id)).status
    )
    repay = _repayment(app, loan_id, "RACE1")
    # Whoever waits first on the loan's lock goes first.
    racers = [decide, repay] if first == "decision" else [repay, decide]
    racers[0].start()
    wait_until_blocked(1)
    racers[1].start()
    wait_until_blocked(2)
    release.set()
    holder.outcome()
    assert decide.outcome() == "approved"
    repaid = repay.outcome().get("principal", D(0))
    proposal = db.session.get(GuaranteeRecovery, proposal_id)
    # Recovered at the exposures of the moment it held the lock.
    owed = D("10000.00") if first == "decision" else D("10000.00") - repaid
    assert D(proposal.recovered["principal_owed"]) == owed
    taken = [(D(pledge) * owed / D("10000")).quantize(D("0.01")) for pledge in (4000, 2000)]
    assert proposal.recovered_total == sum(taken)
    assert receivables(reload(loan_id))["principal"] == D("10000.00") - repaid - sum(taken)
    assert [balance(code) for code in savings] == [D(4000) - taken[0], D(2000) - taken[1]]


def test_a_decision_reads_the_schedule_again_after_a_repayment_in_another_session(
    app: Flask, pg: None
) -> None:
    """The deciding session may hold the installments as it read them before a repayment
    committed in another (a worker's session outlives its jobs): the principal it pays is
    added to what the schedule says under the loan's lock, not to that old reading."""
    loan_id, _ = _defaulted()
    proposal_id = _propose(loan_id).id
    compliance = make_staff("compliance")
    # Read, and held: the session's identity map keeps only rows someone still refers to.
    schedule = current_installments(loan_id)
    assert schedule[0].principal_paid == D("0")

    repay = _repayment(app, loan_id, "RACE2")
    repay.start()
    repaid = repay.outcome()["principal"]
    assert repaid > 0
    decided = _decide(proposal_id, compliance)

    rows = current_installments(loan_id)
    assert rows == schedule  # the same objects, brought up to date
    assert sum((row.principal_paid for row in rows), D("0")) == repaid + decided.recovered_total
    assert receivables(reload(loan_id))["principal"] == sum(
        (row.principal_due - row.principal_paid for row in rows), D("0")
    )


def test_a_recovery_that_clears_the_debt_closes_the_loan(app: Flask) -> None:
    # No interest and no penalty: principal is all the loan owes, and the pledges cover it.
    product = make_product(
        "V1",
        code="ZERO",
        name="Welfare",
        annual_rate=D("0"),
        min_guarantors=2,
        guarantee_cover=D("100"),
        default_threshold_days=30,
    )
    borrower = make_borrower(savings=5000)
    loan = loan_apply(member_id=borrower.id, product_id=product.id, amount=10000, as_of=PAID_OUT)
    ids = []
    for pledge in (6000, 4000):
        guarantor = make_borrower(savings=pledge)
        asked = guarantee_request(
            loan_id=loan.id, guarantor_id=guarantor.id, amount=pledge, actor="t", today=PAID_OUT
        )
        guarantee_accept(
            guarantee_id=asked.id, guarantor_id=guarantor.id, via="sms", today=PAID_OUT
        )
        ids.append(guarantor.id)
    loan_approve(loan_id=loan.id, staff=make_staff("branch_manager"))
    loan_disburse(loan_id=loan.id, reference="B2CZERO", value_date=PAID_OUT)
    loan_id = loan.id
    run_job("loan-arrears", DEFAULTED)
    decider = make_staff("compliance")
    decided = _decide(_propose(loan_id).id, decider)
    assert decided.recovered_total == D("10000.00")
    loan = reload(loan_id)
    assert (loan.status, loan.closed_on, loan.in_default) == ("closed", DECIDED, False)
    assert (loan.days_past_due, loan.aging_bucket) == (0, "current")
    closing = db.session.scalars(select(AuditLog).where(AuditLog.action == "loan.close")).one()
    assert (closing.actor, closing.object_id, closing.before, closing.after) == (
        f"staff:{decider.email}",
        loan.loan_no,
        {"status": "active"},
        {"status": "closed"},
    )
    assert closing.note == f"paid in full by recovery {decided.id} from guarantors"
    assert receivables(loan)["principal"] == D("0.00")
    assert all(r.paid_on == DECIDED for r in current_installments(loan_id))
    assert {status for status, _ in _statuses(loan_id).values()} == {"recovered"}
    assert [member_deposits(member_id).free for member_id in ids] == [D("0"), D("0")]


@pytest.mark.parametrize("door", ["request", "answer"])
def test_a_session_that_read_the_old_pledge_before_another_ended_it_reads_it_again(
    app: Flask, pg: None, door: str
) -> None:
    """The asking or answering session may hold the old guarantee as it read it before
    another transaction ended it (a worker's session outlives its jobs): under the locks it
    is read again, and the replacement is refused."""
    loan_id, (first, _) = _defaulted()
    newcomer, staff = make_borrower(savings=9000), make_staff()
    asked_id = 0
    if door == "answer":
        asked_id = guarantee_substitute_request(
            guarantee_id=_guarantee_of(loan_id, first).id,
            guarantor_id=newcomer.id,
            by=staff,
            today=DEFAULTED,
        ).id
    old = _guarantee_of(loan_id, first)  # read as accepted, the transaction left open
    old_id = old.id

    def end_it() -> None:
        db.session.execute(
            update(Guarantee).where(Guarantee.id == old_id).values(status="released")
        )
        db.session.commit()

    ender = Worker(app, end_it)
    ender.start()
    ender.outcome()
    assert old.status == "accepted"  # this session has not seen it end
    if door == "request":
        with pytest.raises(
            GuaranteeRecoveryError,
            match="^this guarantee is released; only an accepted one is replaced$",
        ):
            guarantee_substitute_request(guarantee_id=old_id, guarantor_id=newcomer.id, by=staff)
        db.session.rollback()
        assert _replacement_asks(loan_id) == 0
    else:
        with pytest.raises(
            GuaranteeRecoveryError,
            match="^the guarantee this one replaces has ended: nothing to replace$",
        ):
            guarantee_substitute_accept(
                guarantee_id=asked_id, guarantor_id=newcomer.id, via="sms", today=DEFAULTED
            )
        db.session.rollback()
        assert db.session.get(Guarantee, asked_id).status == "requested"


@pytest.mark.parametrize("first", ["decision", "acceptance"])
def test_a_decision_racing_a_replacement_acceptance_never_deadlocks(
    app: Flask, pg: None, first: str
) -> None:
    loan_id, (old_guarantor, second) = _defaulted()
    newcomer = make_borrower(savings=4000)
    old_id = _id_of(loan_id, old_guarantor)
    new_id = guarantee_substitute_request(
        guarantee_id=old_id, guarantor_id=newcomer.id, by=make_staff("branch_manager")
    ).id
    proposal_id = _propose(loan_id).id
    compliance_id, newcomer_id = make_staff("compliance").id, newcomer.id
    db.session.remove()

    holder, release = _hold_loan(app, loan_id)
    decide = Worker(
        app, lambda: _decide(proposal_id, db.session.get(StaffUser, compliance_id)).status
    )
    accept = Worker(
        app,
        lambda: (
            guarantee_substitute_accept(
                guarantee_id=new_id, guarantor_id=newcomer_id, via="ussd", today=DEFAULTED
            ).status
        ),
    )
    racers = [decide, accept] if first == "decision" else [accept, decide]
    racers[0].start()
    wait_until_blocked(1)
    racers[1].start()
    wait_until_blocked(2)
    release.set()
    holder.outcome()
    assert decide.outcome() == "approved"
    statuses = {
        gid: (status, got)
        for gid, status, got in db.session.execute(
            select(Guarantee.id, Guarantee.status, Guarantee.recovered_amount).where(
                Guarantee.loan_id == loan_id
            )
        )
    }
    if first == "decision":
        # The acceptance waited behind the decision and finds nothing left to replace.
        with pytest.raises(GuaranteeRecoveryError, match="has ended: nothing to replace"):
            accept.outcome()
        assert statuses[new_id] == ("requested", D("0.00"))
        assert statuses[old_id] == ("recovered", D("4000.00"))
    else:
        # Accepted first, the newcomer holds too until a replacement is approved: the
        # decision takes the locks again for the new set and recovers from all three.
        assert accept.outcome() == "accepted"
        assert statuses[new_id] == ("recovered", D("4000.00"))
        assert statuses[old_id] == ("recovered", D("4000.00"))
    assert recovery_problems() == []


def test_a_replacement_request_is_answered_by_sms_like_any_other(
    client: FlaskClient, app: Flask
) -> None:
    """The SMS YES (and the USSD menu) answer through guarantee_accept, which hands a
    replacement to the substitution's own rules: on a loan already paid out, too."""
    loan_id, (first, _) = _defaulted()
    old = _guarantee_of(loan_id, first)
    newcomer = make_borrower(savings=6000)
    asked = guarantee_substitute_request(
        guarantee_id=old.id, guarantor_id=newcomer.id, by=make_staff("loan_officer")
    )
    reply = sms_in(client, newcomer.phone, f"YES {reload(loan_id).loan_no}")
    db.session.expire_all()
    assert db.session.get(Guarantee, asked.id).status == "accepted"
    assert db.session.get(Guarantee, old.id).status == "accepted"  # until a manager approves
    assert "4,000" in reply.body


def _replacement_asks(loan_id: int) -> int:
    return db.session.scalar(
        select(func.count()).select_from(Guarantee).where(Guarantee.replaces_id.is_not(None))
    )


def _accept_audits() -> int:
    return db.session.scalar(
        select(func.count()).select_from(AuditLog).where(AuditLog.action == "guarantee.accept")
    )


@pytest.mark.parametrize("asker", ["borrower", "loan_officer"])
def test_a_replacement_is_asked_by_the_borrower_or_a_maker_refused_in_words_otherwise(
    app: Flask, asker: str
) -> None:
    """Anyone else is refused, and so is a request the ordinary rules would refuse; each
    refusal leaves no request, no audit and no text. The request is audited in the asker's
    name, for the old pledge's amount unless another is given, and runs the product's week
    from today."""
    loan_id, (first, _) = _defaulted()
    old = _guarantee_of(loan_id, first)
    newcomer = make_borrower(savings=6000)
    borrower = reload(loan_id).member
    by = borrower if asker == "borrower" else make_staff("loan_officer")

    def ask(**given: object) -> Guarantee:
        return guarantee_substitute_request(
            **{"guarantee_id": old.id, "guarantor_id": newcomer.id, "by": by, **given}
        )

    with pytest.raises(PermissionDenied):
        ask(by=make_staff("compliance"))
    refused = [
        ({"by": first}, r"only the borrower or staff ask for a guarantor to be replaced"),
        ({"guarantee_id": 999999}, r"no guarantee 999999"),
        ({"amount": "abc"}, r"amount is not a number"),
        ({"amount": "-5"}, r"amount must be more than zero"),
        ({"amount": "10000.01"}, r"a guarantee cannot be more than the loan \(KES 10,000\)"),
        ({"guarantor_id": borrower.id}, r"a member cannot guarantee their own loan"),
        ({"guarantor_id": 999999}, r"the guarantor must be an active member"),
    ]
    for given, words in refused:
        with pytest.raises(GuaranteeRecoveryError, match=f"^{words}$"):
            ask(**given)
    assert _replacement_asks(loan_id) == 0
    assert not db.session.scalar(
        select(AuditLog.id).where(AuditLog.action == "guarantee.substitute_request")
    )
    assert not db.session.scalar(
        select(SmsMessage.id).where(
            SmsMessage.phone == newcomer.phone, SmsMessage.template == "guarantee_request"
        )
    )

    asked = ask(amount="")
    assert (asked.status, asked.amount, asked.replaces_id) == ("requested", D("4000.00"), old.id)
    assert asked.expires_on == business_today() + timedelta(days=7)
    audit = db.session.scalars(
        select(AuditLog).where(AuditLog.action == "guarantee.substitute_request")
    ).one()
    actor = f"member:{borrower.member_no}" if asker == "borrower" else f"staff:{by.email}"
    assert (audit.actor, audit.object_type, audit.object_id) == (
        actor,
        "loan",
        reload(loan_id).loan_no,
    )
    assert audit.after == {
        "guarantee": asked.id,
        "guarantor": newcomer.member_no,
        "amount": "4000.00",
        "replaces": old.id,
    }
    # Only an accepted guarantee is replaced: not the request just made.
    with pytest.raises(
        GuaranteeRecoveryError,
        match="^this guarantee is requested; only an accepted one is replaced$",
    ):
        ask(guarantee_id=asked.id, guarantor_id=make_borrower(savings=9000).id)
    assert _replacement_asks(loan_id) == 1


def test_a_replacement_is_accepted_to_its_last_day_out_of_free_deposits_to_the_shilling(
    app: Flask,
) -> None:
    """A member with exactly the pledge free may take it, one shilling short may not; the
    request is open all of its last day. The acceptance is recorded, audited and texted to
    the borrower."""
    loan_id, (first, _) = _defaulted()
    old = _guarantee_of(loan_id, first)
    short, exact = make_borrower(savings=3999), make_borrower(savings=4000)
    manager = make_staff("branch_manager")
    asked = guarantee_substitute_request(
        guarantee_id=old.id, guarantor_id=short.id, by=manager, today=DEFAULTED
    )
    with pytest.raises(
        GuaranteeRecoveryError,
        match="^your free deposits are KES 3,999, less than the KES 4,000 this guarantee "
        "would hold$",
    ):
        guarantee_substitute_accept(
            guarantee_id=asked.id, guarantor_id=short.id, via="sms", today=DEFAULTED
        )
    guarantee_substitute_decline(
        guarantee_id=asked.id, guarantor_id=short.id, via="sms", today=DEFAULTED
    )
    asked = guarantee_substitute_request(
        guarantee_id=old.id, guarantor_id=exact.id, by=manager, today=DEFAULTED
    )
    assert asked.expires_on == date(2026, 4, 8)
    refused = [
        ({"guarantor_id": 999999}, "no such member"),
        ({"guarantee_id": 999999}, "no such request to replace a guarantor for you"),
        # An ordinary guarantee is not a replacement request, even its own guarantor's.
        ({"guarantee_id": old.id, "guarantor_id": first.id}, "no such request to replace"),
        ({"today": date(2026, 4, 9)}, "this request has expired"),
    ]
    for given, words in refused:
        with pytest.raises(GuaranteeRecoveryError, match=f"^{words}"):
            guarantee_substitute_accept(
                **{
                    "guarantee_id": asked.id,
                    "guarantor_id": exact.id,
                    "via": "sms",
                    "today": DEFAULTED,
                    **given,
                }
            )
    assert db.session.get(Guarantee, asked.id).status == "requested"
    assert _accept_audits() == 2  # the two original guarantors' only

    guarantee_substitute_accept(
        guarantee_id=asked.id, guarantor_id=exact.id, via="ussd", today=date(2026, 4, 8)
    )
    row = db.session.get(Guarantee, asked.id)
    assert (row.status, row.answered_via, row.ended_at) == ("accepted", "ussd", None)
    assert row.answered_at is not None
    assert member_deposits(exact.id).free == D("0")
    assert _guarantee_of(loan_id, first).status == "accepted"  # until a manager approves
    # Accepted and waiting for the manager, it still stands in the way of another.
    with pytest.raises(
        GuaranteeRecoveryError, match="^a replacement for this guarantor has been asked already$"
    ):
        guarantee_substitute_request(
            guarantee_id=old.id, guarantor_id=make_borrower(savings=9000).id, by=manager
        )
    assert _accept_audits() == 3
    audit = db.session.scalars(
        select(AuditLog).where(AuditLog.action == "guarantee.accept").order_by(AuditLog.id.desc())
    ).first()
    loan = reload(loan_id)
    assert (audit.actor, audit.object_type, audit.object_id) == (
        f"member:{exact.member_no}",
        "loan",
        loan.loan_no,
    )
    assert audit.after == {
        "guarantee": asked.id,
        "status": "accepted",
        "amount": "4000.00",
        "replaces": old.id,
        "via": "ussd",
    }
    sms = db.session.scalars(
        select(SmsMessage).where(SmsMessage.idempotency_key == f"guarantee-accepted:{asked.id}")
    ).one()
    assert (sms.phone, sms.template) == (loan.member.phone, "guarantee_accepted")
    masked = " ".join(f"{part[0]}***" for part in exact.name.split())
    assert f"{masked} has guaranteed KES 4,000.00 of your loan {loan.loan_no}" in sms.body


@pytest.mark.parametrize("ended", ["loan", "guarantee"])
def test_a_replacement_answered_after_its_loan_or_the_old_guarantee_ended_is_refused(
    app: Flask, ended: str
) -> None:
    """The ends that would cancel the request (a close, a recovery) are covered elsewhere;
    this is the state itself, however it came about: nothing left to take the place of."""
    loan_id, (first, second) = _defaulted()
    old = _guarantee_of(loan_id, first)
    newcomer = make_borrower(savings=9000)
    asked = guarantee_substitute_request(
        guarantee_id=old.id, guarantor_id=newcomer.id, by=make_staff(), today=DEFAULTED
    )
    if ended == "loan":
        db.session.execute(update(Loan).where(Loan.id == loan_id).values(status="written_off"))
        loan_no = reload(loan_id).loan_no
        words = f"^loan {loan_no} is written_off: nothing to guarantee$"
        with pytest.raises(
            GuaranteeRecoveryError,
            match=f"^loan {loan_no} is written_off: its guarantees hold nothing$",
        ):
            guarantee_substitute_request(
                guarantee_id=_guarantee_of(loan_id, second).id,
                guarantor_id=make_borrower(savings=9000).id,
                by=make_staff(),
            )
    else:
        db.session.execute(
            update(Guarantee).where(Guarantee.id == old.id).values(status="released")
        )
        words = "^the guarantee this one replaces has ended: nothing to replace$"
    db.session.commit()
    with pytest.raises(GuaranteeRecoveryError, match=words):
        guarantee_substitute_accept(
            guarantee_id=asked.id, guarantor_id=newcomer.id, via="sms", today=DEFAULTED
        )
    assert db.session.get(Guarantee, asked.id).status == "requested"
    assert member_deposits(newcomer.id).guaranteed == D("0")
    if ended == "loan":  # back as it was: a write-off's books were never posted here
        db.session.execute(update(Loan).where(Loan.id == loan_id).values(status="active"))
        db.session.commit()
