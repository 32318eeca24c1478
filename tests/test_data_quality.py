"""The weekly data-quality check: each rule finds what it should, in words, once per run."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from flask import Flask
from sqlalchemy import select, update

from app.extensions import db
from app.models import (
    Agreement,
    AgreementInstallment,
    DataQualityFinding,
    LegalCase,
    Loan,
    Member,
)
from tests.helpers import browse, login, staff
from tests.loan_factories import make_loan, make_product, make_staff
from workers.schedule import run_job

MONDAY = date(2026, 3, 2)


def findings() -> list[tuple[str, str, str]]:
    db.session.expire_all()
    return sorted(
        db.session.execute(
            select(
                DataQualityFinding.rule, DataQualityFinding.object_type, DataQualityFinding.detail
            )
        ).all()
    )


def test_each_rule_finds_its_records_and_a_replay_writes_nothing_new(app: Flask) -> None:
    manager = make_staff("branch_manager")
    product = make_product("V1")
    followed = make_loan(product=product, on=date(2026, 1, 1))
    orphan = make_loan(product=product, on=date(2026, 1, 1))
    db.session.execute(update(Loan).where(Loan.id == orphan.id).values(officer_id=None))
    silent = db.session.get(Member, orphan.member_id)
    silent.phone = ""
    agreement = Agreement(
        loan_id=followed.id,
        settlement_amount=Decimal("9000.00"),
        drafted_by_id=manager.id,
    )
    agreement.installments = [
        AgreementInstallment(number=1, due_date=date(2026, 4, 1), amount=Decimal("4000.00")),
        AgreementInstallment(number=2, due_date=date(2026, 5, 1), amount=Decimal("4500.00")),
    ]
    fine = Agreement(
        loan_id=orphan.id,
        status="deleted",  # a deleted draft is nobody's concern
        settlement_amount=Decimal("100.00"),
        drafted_by_id=manager.id,
    )
    case = LegalCase(
        loan_id=followed.id,
        court="Milimani Commercial Court",
        case_number="E123/2026",
        filing_date=date(2026, 2, 1),
        filed_by_id=manager.id,
    )
    db.session.add_all([agreement, fine, case])
    db.session.commit()
    loan_no, member_no = orphan.loan_no, silent.member_no

    assert run_job("data-quality", MONDAY) == 0
    expected = [
        ("agreement", "schedule adds up to 8,500.00, the settlement is 9,000.00"),
        ("case", "case E123/2026 at Milimani Commercial Court has no hearing date"),
        ("loan", f"loan {loan_no} has no officer to follow it up"),
        ("member", f"member {member_no} has no phone to reach"),
    ]
    assert [(t, d) for _, t, d in findings()] == expected
    assert run_job("data-quality", MONDAY) == 0  # the same week again: nothing new
    assert len(findings()) == 4

    # The console lists them for every role.
    client = app.test_client()
    login(client, staff("auditor"))
    page = browse(client, "/admin/dataqualityfinding/")
    assert page.status_code == 200
    assert "has no officer to follow it up" in page.get_data(as_text=True)


def test_a_clean_book_finds_nothing(app: Flask) -> None:
    make_loan(product=make_product("V1"), on=date(2026, 1, 1))
    assert run_job("data-quality", MONDAY) == 0
    assert findings() == []
