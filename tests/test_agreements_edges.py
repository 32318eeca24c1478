"""Compromise agreements at their edges (survivors of mutation testing, issue 23): an edit's
refusals in the words staff read and its audit row, deletion and notes as staff see them,
and what completing a paid settlement records. Real services on the real database."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import select

from app.extensions import db
from app.models import Agreement, AuditLog, JournalEntry, StaffUser
from app.selectors.loans import loan_debt
from app.services.agreements import (
    AgreementError,
    agreement_add_note,
    agreement_approve,
    agreement_delete,
    agreement_draft,
    agreement_submit,
    agreement_update,
)
from app.services.loans import loan_repay
from tests.loan_factories import make_loan_in_default, make_staff, reload

D = Decimal
TODAY = date(2026, 4, 2)
SCHEDULE = [(date(2026, 5, 1), "4000"), (date(2026, 6, 1), "4000")]
SETTLEMENT = D("8000.00")


def _owed(loan_id: int) -> Decimal:
    return loan_debt(loan_id=loan_id).total


def _draft(loan_id: int, staff: StaffUser) -> Agreement:
    return agreement_draft(
        loan_id=loan_id,
        staff=staff,
        settlement_amount=SETTLEMENT,
        discount=_owed(loan_id) - SETTLEMENT,
        schedule=SCHEDULE,
        as_of=TODAY,
    )


def _get(agreement_id: int) -> Agreement:
    db.session.expire_all()
    agreement = db.session.get(Agreement, agreement_id)
    assert agreement is not None
    return agreement


def _audits(agreement_id: int, action: str) -> list[AuditLog]:
    return list(
        db.session.scalars(
            select(AuditLog)
            .where(
                AuditLog.object_type == "agreement",
                AuditLog.object_id == str(agreement_id),
                AuditLog.action == action,
            )
            .order_by(AuditLog.id)
        )
    )


def _update(agreement_id: int, staff: StaffUser, loan_id: int, **changes: object) -> Agreement:
    figures: dict[str, object] = {
        "settlement_amount": "9000",
        "discount": _owed(loan_id) - D("9000"),
        "schedule": [
            (date(2026, 5, 1), "3000"),
            (date(2026, 6, 1), "3000"),
            (date(2026, 7, 1), "3000"),
        ],
        "as_of": TODAY,
    }
    figures.update(changes)
    return agreement_update(agreement_id=agreement_id, staff=staff, **figures)  # type: ignore[arg-type]


# -- update --------------------------------------------------------------------------------


def test_an_edit_renumbers_the_schedule_from_one_unpaid_and_audits_before_and_after(
    app: Flask,
) -> None:
    loan_id = make_loan_in_default()
    officer = make_staff("loan_officer")
    agreement = _draft(loan_id, officer)
    agreement_submit(agreement_id=agreement.id, staff=officer)
    old_discount = _get(agreement.id).discount
    discount = _owed(loan_id) - D("9000")

    _update(agreement.id, officer, loan_id, grace_days="0", default_threshold_days="1")

    agreement = _get(agreement.id)
    assert [(r.number, r.amount, r.paid) for r in agreement.installments] == [
        (1, D("3000.00"), D("0.00")),
        (2, D("3000.00"), D("0.00")),
        (3, D("3000.00"), D("0.00")),
    ]
    assert (agreement.grace_days, agreement.default_threshold_days) == (0, 1)
    (audit,) = _audits(agreement.id, "agreement.update")
    assert audit.actor == f"staff:{officer.email}"
    assert audit.before is not None and audit.after is not None
    assert audit.before["status"] == "submitted"
    assert D(str(audit.before["settlement"])) == SETTLEMENT
    assert D(str(audit.before["discount"])) == old_discount
    assert audit.before["schedule"] == "2026-05-01 4000.00; 2026-06-01 4000.00"
    assert set(audit.before) == {"status", "settlement", "discount", "schedule"}
    assert audit.after["status"] == "draft"
    assert D(str(audit.after["settlement"])) == D("9000.00")
    assert D(str(audit.after["discount"])) == discount
    assert audit.after["schedule"] == ("2026-05-01 3000.00; 2026-06-01 3000.00; 2026-07-01 3000.00")
    assert (audit.after["grace_days"], audit.after["default_threshold_days"]) == (0, 1)
    assert set(audit.after) == {
        "status",
        "settlement",
        "discount",
        "schedule",
        "grace_days",
        "default_threshold_days",
    }


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"settlement_amount": "lots"}, "the settlement is not a number"),
        ({"grace_days": "soon"}, "grace days must be a whole number of days"),
        ({"grace_days": "-1"}, "grace days must be 0 to 3650 days"),
        ({"default_threshold_days": "x"}, "the default threshold must be a whole number of days"),
        ({"default_threshold_days": "0"}, "the default threshold must be 1 to 3650 days"),
    ],
)
def test_an_edit_with_figures_staff_mistyped_is_refused_in_their_words(
    app: Flask, changes: dict[str, object], words: str
) -> None:
    loan_id = make_loan_in_default()
    officer = make_staff("loan_officer")
    agreement = _draft(loan_id, officer)
    with pytest.raises(AgreementError) as refused:
        _update(agreement.id, officer, loan_id, **changes)
    assert str(refused.value) == words
    assert _audits(agreement.id, "agreement.update") == []


def test_only_the_drafter_edits_a_draft(app: Flask) -> None:
    loan_id = make_loan_in_default()
    agreement = _draft(loan_id, make_staff("loan_officer"))
    with pytest.raises(AgreementError) as refused:
        _update(agreement.id, make_staff("loan_officer"), loan_id)
    assert str(refused.value) == "only the staff member who drafted an agreement changes it"
    assert _get(agreement.id).settlement_amount == SETTLEMENT


# -- delete and notes ----------------------------------------------------------------------


def test_a_deletion_is_refused_in_words_to_others_and_audited_for_the_drafter(
    app: Flask,
) -> None:
    loan_id = make_loan_in_default()
    officer = make_staff("loan_officer")
    agreement = _draft(loan_id, officer)
    with pytest.raises(AgreementError) as refused:
        agreement_delete(agreement_id=agreement.id, staff=make_staff("loan_officer"))
    assert str(refused.value) == "only the drafter or a branch manager deletes a draft"

    agreement_delete(agreement_id=agreement.id, staff=officer)

    (audit,) = _audits(agreement.id, "agreement.delete")
    assert audit.actor == f"staff:{officer.email}"
    assert (audit.before, audit.after) == ({"status": "draft"}, {"status": "deleted"})


def test_notes_are_appended_with_who_wrote_them_and_audited(app: Flask) -> None:
    loan_id = make_loan_in_default()
    officer = make_staff("loan_officer")
    agreement = _draft(loan_id, officer)
    assert agreement.note is None

    agreement_add_note(agreement_id=agreement.id, staff=officer, note="  member called  ")
    stamp = rf"\[\d{{4}}-\d{{2}}-\d{{2}} {re.escape(officer.email)}\]"
    assert re.fullmatch(f"{stamp} member called", _get(agreement.id).note or "")
    agreement_add_note(agreement_id=agreement.id, staff=officer, note="will pay Friday")
    assert re.fullmatch(
        f"{stamp} member called\n{stamp} will pay Friday", _get(agreement.id).note or ""
    )

    first, second = _audits(agreement.id, "agreement.note")
    assert (first.actor, first.note) == (f"staff:{officer.email}", "member called")
    assert (second.actor, second.note) == (f"staff:{officer.email}", "will pay Friday")


def test_a_note_of_2000_characters_is_kept_whole(app: Flask) -> None:
    loan_id = make_loan_in_default()
    officer = make_staff("loan_officer")
    agreement = _draft(loan_id, officer)
    agreement_add_note(agreement_id=agreement.id, staff=officer, note="n" * 2000)
    assert (_get(agreement.id).note or "").endswith("] " + "n" * 2000)


@pytest.mark.parametrize(
    ("note", "words"),
    [
        (None, "the note is empty"),
        ("   ", "the note is empty"),
        ("n" * 2001, "a note is at most 2,000 characters"),
    ],
)
def test_an_empty_or_overlong_note_is_refused_in_words(
    app: Flask, note: str | None, words: str
) -> None:
    loan_id = make_loan_in_default()
    officer = make_staff("loan_officer")
    agreement = _draft(loan_id, officer)
    with pytest.raises(AgreementError) as refused:
        agreement_add_note(agreement_id=agreement.id, staff=officer, note=note)  # type: ignore[arg-type]
    assert str(refused.value) == words
    assert _get(agreement.id).note is None


# -- completion ----------------------------------------------------------------------------


def test_completing_a_settlement_records_who_paid_and_the_write_off_in_the_systems_name(
    app: Flask,
) -> None:
    """The last payment is posted by a loan officer; the write-off is the system's (the
    manager's approval is its authority), the completion is audited in the officer's name."""
    loan_id = make_loan_in_default()
    discount = _owed(loan_id) - SETTLEMENT
    officer, manager = make_staff("loan_officer"), make_staff("branch_manager")
    agreement = _draft(loan_id, officer)
    agreement_submit(agreement_id=agreement.id, staff=officer)
    agreement_approve(agreement_id=agreement.id, staff=manager, as_of=TODAY)
    loan_repay(
        loan_id=loan_id,
        amount="8000",
        reference="QKEDGE0001",
        value_date=date(2026, 5, 1),
        actor=officer,
    )

    loan = reload(loan_id)
    assert loan.status == "closed" and loan.written_off_amount == discount
    entry = db.session.scalar(select(JournalEntry).where(JournalEntry.kind == "write_off"))
    assert entry is not None
    assert entry.actor == "system"
    assert entry.description == (
        f"Settlement discount {loan.loan_no}: compromise agreement {agreement.id} paid"
    )
    settle = db.session.scalar(select(AuditLog).where(AuditLog.action == "loan.settle"))
    assert settle is not None and settle.actor == "system"
    assert settle.note == f"compromise agreement {agreement.id} paid"

    # The officer's payment was the first: it put the agreement in force, in their name.
    (activated,) = _audits(agreement.id, "agreement.activate")
    (paid,) = _audits(agreement.id, "agreement.payment")
    assert activated.actor == paid.actor == f"staff:{officer.email}"
    (done,) = _audits(agreement.id, "agreement.complete")
    assert done.actor == f"staff:{officer.email}"
    assert done.before == {"status": "active"}
    assert done.after is not None
    assert set(done.after) == {"status", "paid_amount", "discount_agreed", "written_off"}
    assert done.after["status"] == "completed"
    assert D(str(done.after["paid_amount"])) == SETTLEMENT
    assert D(str(done.after["discount_agreed"])) == discount
    assert D(str(done.after["written_off"])) == discount


def test_paying_the_whole_debt_completes_the_agreement_recording_nothing_written_off(
    app: Flask,
) -> None:
    """The payment closes the loan itself; the completion still says 0 went, not nothing."""
    loan_id = make_loan_in_default()
    officer, manager = make_staff("loan_officer"), make_staff("branch_manager")
    agreement = _draft(loan_id, officer)
    agreement_submit(agreement_id=agreement.id, staff=officer)
    agreement_approve(agreement_id=agreement.id, staff=manager, as_of=TODAY)
    loan_repay(loan_id=loan_id, amount=_owed(loan_id), reference="QKEDGE0002", value_date=TODAY)

    (done,) = _audits(agreement.id, "agreement.complete")
    assert done.after is not None and done.after["written_off"] is not None
    assert D(str(done.after["written_off"])) == 0
