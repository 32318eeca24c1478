"""Loan actions at their edges (survivors of mutation testing, issue 23): a penalty reversal's
refusals, journal entry, audit row and installment afterwards; a settlement's journal entry
and loan row; a payout retry. Real services on the real database, fixed dates."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import select, update

from app.extensions import db, queue
from app.models import AuditLog, Installment, JournalEntry, Loan, Member, MpesaRequest
from app.selectors.loans import current_installments
from app.services.ledger import member_account
from app.services.loans import (
    LoanError,
    loan_apply,
    loan_approve,
    loan_repay,
    loan_retry_payout,
    loan_reverse_penalty,
    loan_settle,
)
from tests.loan_factories import (
    audit_rows,
    balance,
    counts,
    make_borrower,
    make_loan,
    make_product,
    make_staff,
    receivables,
    reload,
    run_job,
    schedule_owed,
)

LATE = date(2026, 2, 10)  # installment 1 (due 2026-02-01) is past its grace: penalty charged


def _penalised_loan(penalty: str = "2") -> int:
    """A V1 loan disbursed 2026-01-01 whose first installment carries a fixed penalty."""
    loan = make_loan(
        product=make_product("V1", penalty_type="fixed", penalty_value=Decimal(penalty)),
        on=date(2026, 1, 1),
    )
    db.session.commit()
    loan_id = loan.id
    run_job("loan-arrears", LATE)
    assert receivables(reload(loan_id))["penalty"] == Decimal(penalty)
    return loan_id


def _entries(kind: str) -> list[JournalEntry]:
    return list(
        db.session.scalars(
            select(JournalEntry).where(JournalEntry.kind == kind).order_by(JournalEntry.id)
        )
    )


def _lines(entry: JournalEntry) -> dict[str, Decimal]:
    """Each account's line: debits positive, credits negative."""
    return {line.account.code: line.amount for line in entry.lines}


def _first_row(loan_id: int) -> Installment:
    row = db.session.scalar(
        select(Installment).where(
            Installment.loan_id == loan_id,
            Installment.number == 1,
            Installment.superseded.is_(False),
        )
    )
    assert row is not None
    return row


def _reverse(loan_id: int, reason: str = "charged for the wrong date", **kw: object) -> Decimal:
    args: dict[str, object] = dict(
        loan_id=loan_id, installment_number=1, reason=reason, value_date=date(2026, 2, 11)
    )
    args.update(kw)
    if "staff" not in args:
        args["staff"] = make_staff("branch_manager")
    return loan_reverse_penalty(**args)  # type: ignore[arg-type]


def test_reversing_a_partly_paid_penalty_splits_it_between_receivable_and_savings(
    app: Flask,
) -> None:
    """Penalty 2.00 of which the member paid 1.00: income gives back 2.00, the receivable
    loses the 1.00 still owed, savings gets the 1.00 paid. Both halves are a shilling, so
    neither leg can be skipped as 'too small'."""
    loan_id = _penalised_loan("2")
    loan_repay(loan_id=loan_id, amount="1", reference="PEN1", value_date=LATE)
    loan = reload(loan_id)
    member = db.session.get(Member, loan.member_id)
    assert member is not None
    savings_code = member_account(member, "savings").code
    savings_before = balance(savings_code)
    manager = make_staff("branch_manager")

    assert _reverse(loan_id, staff=manager) == Decimal("2.00")

    (entry,) = _entries("penalty_reversal")
    loan = reload(loan_id)
    row = _first_row(loan_id)
    assert _lines(entry) == {
        "GL-INCOME-PENALTY": Decimal("2.00"),
        f"LNX-{loan.loan_no}": Decimal("-1.00"),
        savings_code: Decimal("-1.00"),
    }
    assert entry.description == f"Penalty reversed {loan.loan_no} #1: charged for the wrong date"
    assert entry.idempotency_key == f"penalty-reversal:{row.id}:1"
    assert entry.actor == f"staff:{manager.email}"
    assert (entry.member_id, entry.loan_id) == (loan.member_id, loan.id)
    assert entry.value_date == date(2026, 2, 11)
    assert balance(savings_code) == savings_before + Decimal("1.00")
    assert receivables(loan)["penalty"] == 0

    assert (row.penalty_due, row.penalty_paid, row.last_penalty_on) == (0, 0, None)
    assert row.penalty_reversals == 1
    (audit,) = [
        a for a in db.session.scalars(select(AuditLog)) if a.action == "loan.penalty_reverse"
    ]
    assert audit.actor == f"staff:{manager.email}"
    assert (audit.object_type, audit.object_id) == ("loan", loan.loan_no)
    assert audit.note == "charged for the wrong date"
    assert set(audit.before) == {"installment", "penalty_due", "penalty_paid", "charged_on"}
    assert audit.before["installment"] == 1
    assert Decimal(str(audit.before["penalty_due"])) == Decimal("2.00")
    assert Decimal(str(audit.before["penalty_paid"])) == Decimal("1.00")
    assert audit.before["charged_on"] is not None
    assert set(audit.after) == {"installment", "penalty_due", "refunded"}
    assert audit.after["installment"] == 1
    assert Decimal(str(audit.after["penalty_due"])) == 0
    assert Decimal(str(audit.after["refunded"])) == Decimal("1.00")


def test_reversing_a_fully_paid_penalty_refunds_it_all_to_savings(app: Flask) -> None:
    loan_id = _penalised_loan("2")
    loan_repay(loan_id=loan_id, amount="2", reference="PEN2", value_date=LATE)
    loan = reload(loan_id)
    member = db.session.get(Member, loan.member_id)
    assert member is not None
    savings_code = member_account(member, "savings").code

    assert _reverse(loan_id) == Decimal("2.00")

    (entry,) = _entries("penalty_reversal")
    assert _lines(entry) == {
        "GL-INCOME-PENALTY": Decimal("2.00"),
        savings_code: Decimal("-2.00"),
    }


def test_an_unpaid_penalty_of_one_shilling_is_reversed_against_the_receivable(app: Flask) -> None:
    loan_id = _penalised_loan("1")
    assert _reverse(loan_id) == Decimal("1.00")
    loan = reload(loan_id)
    (entry,) = _entries("penalty_reversal")
    assert _lines(entry) == {
        "GL-INCOME-PENALTY": Decimal("1.00"),
        f"LNX-{loan.loan_no}": Decimal("-1.00"),
    }


def test_a_penalty_charged_again_is_reversed_again_with_its_own_entry(app: Flask) -> None:
    loan_id = _penalised_loan("2")
    _reverse(loan_id)
    run_job("loan-arrears", date(2026, 2, 12))  # still late: charged once more
    assert receivables(reload(loan_id))["penalty"] == Decimal("2.00")

    assert _reverse(loan_id, reason="still the wrong date") == Decimal("2.00")

    row = _first_row(loan_id)
    keys = [e.idempotency_key for e in _entries("penalty_reversal")]
    assert keys == [f"penalty-reversal:{row.id}:1", f"penalty-reversal:{row.id}:2"]
    assert row.penalty_reversals == 2
    assert receivables(reload(loan_id))["penalty"] == 0
    assert balance("GL-INCOME-PENALTY") == 0


def test_a_long_reason_is_cut_to_the_entry_descriptions_255_characters(app: Flask) -> None:
    loan_id = _penalised_loan("2")
    # The audit row keeps the whole reason (its note was 255 characters until 0016, and
    # PostgreSQL refused the reversal); the entry's description is cut to its 255.
    _reverse(loan_id, reason="x" * 400)
    (entry,) = _entries("penalty_reversal")
    assert len(entry.description) == 255
    assert entry.description.startswith(f"Penalty reversed {reload(loan_id).loan_no} #1: xxx")
    audit = db.session.scalar(
        select(AuditLog)
        .where(AuditLog.action == "loan.penalty_reverse")
        .order_by(AuditLog.id.desc())
    )
    assert audit is not None and audit.note == "x" * 400


def test_a_reversal_of_an_installment_the_loan_does_not_have_is_refused_in_words(
    app: Flask,
) -> None:
    loan_id = _penalised_loan("2")
    loan_no = reload(loan_id).loan_no
    manager = make_staff("branch_manager")
    before = counts()
    with pytest.raises(LoanError) as refused:
        _reverse(loan_id, installment_number=99, staff=manager)
    assert str(refused.value) == f"loan {loan_no} has no installment 99"
    with pytest.raises(LoanError) as refused:
        _reverse(loan_id, installment_number=2, staff=manager)
    assert str(refused.value) == f"installment 2 of {loan_no} has no penalty"
    assert counts() == before


@pytest.mark.books_may_disagree  # the payment is written straight to the row, not journalled
def test_a_reversal_reads_the_installment_as_it_is_now_not_as_the_session_last_saw_it(
    app: Flask,
) -> None:
    """Another worker's repayment of the penalty lands after this session read the row:
    the reversal must refund what was paid, not take it off the receivable again."""
    loan_id = _penalised_loan("2")
    manager = make_staff("branch_manager")  # made now: making staff commits, which re-reads
    row = _first_row(loan_id)
    assert row.penalty_paid == 0  # the session now holds the row as unpaid
    db.session.execute(
        update(Installment)
        .where(Installment.id == row.id)
        .values(penalty_paid=Decimal("2.00"))
        .execution_options(synchronize_session=False)  # as another worker's write would
    )
    _reverse(loan_id, staff=manager)
    (entry,) = _entries("penalty_reversal")
    loan = reload(loan_id)
    assert f"LNX-{loan.loan_no}" not in _lines(entry)


# A payout retry ------------------------------------------------------------------------------


def _approved_loan(**product: object) -> tuple[Loan, MpesaRequest | None]:
    member = make_borrower(savings=10000)
    loan = loan_apply(
        member_id=member.id,
        product_id=make_product("V1", **product).id,
        amount=10000,
        term=None,
        as_of=date(2026, 1, 1),
    )
    loan = loan_approve(loan_id=loan.id, staff=make_staff("branch_manager"))
    payout = db.session.scalar(select(MpesaRequest).where(MpesaRequest.loan_id == loan.id))
    return loan, payout


def test_a_retried_payout_is_a_new_request_in_the_staff_members_name_and_is_audited(
    app: Flask,
) -> None:
    loan, payout = _approved_loan()
    assert payout is not None
    payout.status = "failed"  # Safaricom's result said no money left
    db.session.commit()
    manager = make_staff("branch_manager")

    retry = loan_retry_payout(loan_id=loan.id, staff=manager)

    member = db.session.get(Member, loan.member_id)
    assert member is not None
    assert retry.id != payout.id
    assert retry.requested_by == f"staff:{manager.email}"
    assert (retry.amount, retry.phone) == (Decimal("10000.00"), member.phone)
    (audit,) = [a for a in audit_rows(reload(loan.id)) if a.action == "loan.retry_payout"]
    assert audit.actor == f"staff:{manager.email}"
    assert (audit.object_type, audit.object_id) == ("loan", loan.loan_no)
    assert Decimal(str(audit.after["amount"])) == Decimal("10000.00")
    assert audit.after == {"amount": audit.after["amount"], "phone": member.phone}
    # and it is handed to a worker at once, as its own job
    assert f"payout-{retry.id}" in queue("payments").job_ids


def test_a_payout_retry_is_refused_in_words_unless_the_loan_waits_for_its_money(
    app: Flask,
) -> None:
    loan_id = make_loan(product=make_product("V1"), on=date(2026, 1, 1)).id
    loan = reload(loan_id)
    with pytest.raises(LoanError) as refused:
        loan_retry_payout(loan_id=loan_id, staff=make_staff("branch_manager"))
    assert str(refused.value) == f"loan {loan.loan_no} is active; only approved loans are paid out"


def test_a_payout_m_pesa_cannot_carry_is_refused_with_the_reason_staff_read(app: Flask) -> None:
    loan, payout = _approved_loan(fee_type="fixed", fee_value=Decimal("0.50"))
    assert payout is None
    manager = make_staff("branch_manager")
    before = counts()
    with pytest.raises(LoanError) as refused:
        loan_retry_payout(loan_id=loan.id, staff=manager)
    assert str(refused.value) == (
        "KES 9,999.50 is not whole shillings: M-PESA cannot send it; pay by bank"
    )
    assert counts() == before


# A settlement --------------------------------------------------------------------------------


def test_a_settlement_writes_off_the_rest_closes_the_loan_and_says_so(app: Flask) -> None:
    loan_id = make_loan(
        product=make_product("V1", default_threshold_days=30), on=date(2026, 1, 1)
    ).id
    run_job("loan-arrears", date(2026, 4, 1))  # three installments late: in default
    loan = reload(loan_id)
    assert loan.in_default and loan.days_past_due > 0
    owed = schedule_owed(loan)
    total = sum(owed.values(), Decimal("0"))
    manager = make_staff("branch_manager")

    loan_settle(
        loan_id=loan_id,
        actor=manager,
        reason="compromise agreement 7 paid",
        value_date=date(2026, 4, 2),
    )
    db.session.rollback()  # what loan_settle committed stays

    loan = reload(loan_id)
    assert loan.status == "closed" and loan.closed_on == date(2026, 4, 2)
    assert (loan.days_past_due, loan.aging_bucket, loan.in_default) == (0, "current", False)
    assert loan.written_off_amount == total
    (entry,) = _entries("write_off")
    assert entry.idempotency_key == f"settle:{loan.loan_no}"
    assert entry.description == f"Settlement discount {loan.loan_no}: compromise agreement 7 paid"
    assert entry.actor == f"staff:{manager.email}"
    assert _lines(entry)["GL-WRITE-OFF"] == total
    assert receivables(loan) == {c: 0 for c in ("principal", "interest", "fees", "penalty")}

    audits = {a.action: a for a in audit_rows(loan)}
    close = audits["loan.close"]
    assert close.actor == f"staff:{manager.email}"
    assert close.note == "compromise agreement 7 paid"
    assert close.after == {"status": "closed"}
    settle = audits["loan.settle"]
    assert settle.actor == f"staff:{manager.email}"
    assert (settle.object_type, settle.note) == ("loan", "compromise agreement 7 paid")
    assert {k: Decimal(str(v)) for k, v in settle.before.items()} == owed
    assert settle.after["status"] == "closed"
    assert Decimal(str(settle.after["written_off"])) == total
    assert set(settle.after) == {"status", "written_off"}


def test_a_closed_loan_cannot_be_settled_and_says_why(app: Flask) -> None:
    loan_id = make_loan(
        product=make_product("V1", default_threshold_days=30), on=date(2026, 1, 1)
    ).id
    manager = make_staff("branch_manager")
    loan_settle(loan_id=loan_id, actor=manager, reason="paid", value_date=date(2026, 4, 2))
    loan_no = reload(loan_id).loan_no
    with pytest.raises(LoanError) as refused:
        loan_settle(loan_id=loan_id, actor=manager, reason="again", value_date=date(2026, 4, 3))
    assert str(refused.value) == f"loan {loan_no} is closed; there is nothing to settle"


def test_a_fresh_read_of_the_schedule_sees_what_was_written_past_the_sessions_copy(
    app: Flask,
) -> None:
    """A service that has just taken the loan's lock reads the schedule `fresh`: a row the
    session read before (here: before another writer charged it) is read again, not
    served from the session's copy."""
    loan = make_loan(product=make_product(), on=date(2026, 1, 31))
    first = current_installments(loan.id)[0]  # the session now holds the rows
    db.session.execute(
        update(Installment)
        .where(Installment.id == first.id)
        .values(penalty_due=Decimal("50.00"))
        .execution_options(synchronize_session=False)  # as another worker's write would
    )

    assert current_installments(loan.id)[0].penalty_due == Decimal("0.00")  # the old copy
    assert current_installments(loan.id, fresh=True)[0].penalty_due == Decimal("50.00")
    db.session.rollback()
