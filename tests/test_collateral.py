"""The collateral register through its services: a lien is recorded with its valuation and
counts toward cover at the product's haircut; bad input and the wrong role are refused in
words with nothing written; a lien is discharged only by a branch manager and only once
the loan no longer rests on it; both are audited."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import func, select

from app.clock import business_today
from app.extensions import db
from app.models import AuditLog, Collateral, Loan
from app.selectors.guarantees import loan_cover
from app.services.guarantees.collateral import (
    CollateralError,
    collateral_discharge,
    collateral_record,
)
from app.services.loans import loan_apply, loan_approve, loan_disburse, loan_reject
from app.services.permissions import PermissionDenied
from tests.loan_factories import make_borrower, make_product, make_staff, reload

D = Decimal
DAY = date(2026, 3, 2)


def _application(**product: object) -> Loan:
    """A 25,000 application on a product covered 100% above the borrower's own 10,000,
    by guarantors or collateral at a 40% haircut."""
    rule = dict(
        code="COL",
        name="Asset loan",
        min_guarantors=0,
        guarantee_cover=D("100"),
        collateral_allowed=True,
        collateral_haircut=D("40"),
    )
    product_id = make_product("V1", **{**rule, **product}).id
    borrower = make_borrower(savings=10000)
    return loan_apply(member_id=borrower.id, product_id=product_id, amount=25000, as_of=DAY)


def _record(loan: Loan, staff: object, **changes: object) -> Collateral:
    fields: dict[str, object] = dict(
        loan_id=loan.id,
        kind="log_book",
        description="KDA 123X Toyota Probox",
        owner_name="Jane Wanjiru",
        market_value="600000",
        forced_sale_value="20000",
        valued_on=business_today() - timedelta(days=3),
        valuer="Regent Valuers",
        staff=staff,
    )
    fields.update(changes)
    if fields["valued_on"] == "tomorrow":
        fields["valued_on"] = business_today() + timedelta(days=1)
    return collateral_record(**fields)  # type: ignore[arg-type]


def _count(action: str) -> int:
    return db.session.scalar(
        select(func.count()).select_from(AuditLog).where(AuditLog.action == action)
    )


def test_recorded_collateral_counts_toward_cover_at_the_haircut_and_is_audited(
    app: Flask,
) -> None:
    loan = _application()
    officer = make_staff("loan_officer")
    assert loan_cover(loan).required == D("15000")
    collateral = _record(loan, officer)
    assert collateral.lien_status == "registered" and collateral.recorded_by == (
        f"staff:{officer.email}"
    )
    cover = loan_cover(reload(loan.id))
    # 20,000 forced-sale value less 40%: 12,000 of the 15,000 asked.
    assert (cover.collateral, cover.shortfall, cover.complete) == (D("12000"), D("3000"), False)
    _record(loan, officer, kind="chattel", description="Posho mill", forced_sale_value="5000")
    assert loan_cover(reload(loan.id)).complete

    row = db.session.scalar(select(AuditLog).where(AuditLog.action == "collateral.record"))
    assert (row.actor, row.object_type, row.object_id) == (
        f"staff:{officer.email}",
        "loan",
        loan.loan_no,
    )
    assert row.after == {
        "collateral": collateral.id,
        "kind": "log_book",
        "description": "KDA 123X Toyota Probox",
        "owner": "Jane Wanjiru",
        "market_value": "600000.00",
        "forced_sale_value": "20000.00",
        "valued_on": (business_today() - timedelta(days=3)).isoformat(),
        "valuer": "Regent Valuers",
    }

    # The cover is complete: the manager approves a loan no guarantor stands behind.
    assert loan_approve(loan_id=loan.id, staff=make_staff("branch_manager")).status == "approved"


def test_collateral_at_the_limits_is_recorded_and_counts_to_the_shilling_below(
    app: Flask,
) -> None:
    """Valued today, sold at forced sale for all it is worth, with the longest words the
    register keeps: recorded. 40% off 20,001 is 12,000.60, counted as 12,000."""
    loan = _application()
    collateral = _record(
        loan,
        make_staff("loan_officer"),
        market_value="20001",
        forced_sale_value="20001",
        valued_on=business_today(),
        description="d" * 255,
        valuer="v" * 120,
    )
    assert collateral.lien_status == "registered"
    assert loan_cover(reload(loan.id)).collateral == D("12000")


def test_a_product_that_does_not_count_collateral_keeps_it_on_the_register(app: Flask) -> None:
    loan = _application(collateral_allowed=False, min_guarantors=1)
    _record(loan, make_staff("loan_officer"))
    assert loan_cover(reload(loan.id)).collateral == 0
    assert db.session.scalar(select(func.count()).select_from(Collateral)) == 1


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"kind": "cow"}, "the kind is one of: land title, vehicle log book"),
        ({"market_value": "abc"}, "the market value is not a number"),
        ({"forced_sale_value": "0"}, "the forced-sale value must be more than zero"),
        ({"market_value": "100.001"}, "the market value has fractions of a cent"),
        (
            {"market_value": "10000", "forced_sale_value": "20000"},
            "the forced-sale value (KES 20,000.00) cannot be more than the market value",
        ),
        ({"valued_on": "tomorrow"}, "is in the future"),
        ({"valued_on": None}, "the valuation date is needed"),
        ({"description": "   "}, "the description is needed"),
        ({"owner_name": "x" * 121}, "the owner's name is at most 120 characters"),
        ({"description": "d" * 256}, "the description is at most 255 characters"),
        ({"valuer": ""}, "the valuer is needed"),
        ({"valuer": "v" * 121}, "the valuer is at most 120 characters"),
        ({"loan_id": 999999}, "no loan 999999"),
    ],
)
def test_bad_input_is_refused_in_words_and_nothing_is_written(
    app: Flask, changes: dict, words: str
) -> None:
    loan = _application()
    with pytest.raises(CollateralError) as refused:
        _record(loan, make_staff("loan_officer"), **changes)
    assert words in str(refused.value)
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(Collateral)) == 0
    assert _count("collateral.record") == 0


@pytest.mark.parametrize("role", ["compliance", "auditor", "admin"])
def test_only_officers_and_managers_record_collateral(app: Flask, role: str) -> None:
    loan = _application()
    with pytest.raises(PermissionDenied, match="cannot record collateral or ask guarantors"):
        _record(loan, make_staff(role))
    assert db.session.scalar(select(func.count()).select_from(Collateral)) == 0


def test_an_ended_loan_takes_no_new_collateral(app: Flask) -> None:
    loan = _application()
    manager = make_staff("branch_manager")
    loan_reject(loan_id=loan.id, staff=manager, reason="no security offered")
    with pytest.raises(CollateralError, match="is rejected: it needs no security now"):
        _record(loan, manager)


def test_a_lien_is_discharged_by_a_branch_manager_once_the_loan_no_longer_rests_on_it(
    app: Flask,
) -> None:
    loan = _application()
    officer, manager = make_staff("loan_officer"), make_staff("branch_manager")
    collateral = _record(loan, officer, forced_sale_value="30000")
    with pytest.raises(PermissionDenied, match="cannot discharge collateral"):
        collateral_discharge(collateral_id=collateral.id, staff=officer, reason="paid")
    db.session.rollback()

    loan_approve(loan_id=loan.id, staff=manager)
    loan_disburse(loan_id=loan.id, reference="B2CCOL01", value_date=DAY)
    with pytest.raises(CollateralError, match="is active: the lien stays until the loan ends"):
        collateral_discharge(collateral_id=collateral.id, staff=manager, reason="member asked")
    db.session.rollback()
    with pytest.raises(CollateralError, match="the reason is needed"):
        collateral_discharge(collateral_id=collateral.id, staff=manager, reason=" ")
    with pytest.raises(CollateralError, match="^the reason is at most 500 characters$"):
        collateral_discharge(collateral_id=collateral.id, staff=manager, reason="r" * 501)
    assert db.session.get(Collateral, collateral.id).lien_status == "registered"
    assert _count("collateral.discharge") == 0

    # Paid off: the loan closes and the lien may go.
    from app.services.loans import loan_repay

    loan_repay(loan_id=loan.id, amount="40000", reference="REPAYCOL1", value_date=DAY)
    assert reload(loan.id).status == "closed"
    reason = "loan repaid; " + "x" * 487  # the longest reason kept: 500 characters
    done = collateral_discharge(collateral_id=collateral.id, staff=manager, reason=reason)
    assert done.lien_status == "discharged" and done.discharged_by == f"staff:{manager.email}"
    assert done.discharged_at is not None
    row = db.session.scalar(select(AuditLog).where(AuditLog.action == "collateral.discharge"))
    assert (row.actor, row.object_type, row.object_id) == (
        f"staff:{manager.email}",
        "loan",
        reload(loan.id).loan_no,
    )
    assert row.note == reason and row.before == {
        "collateral": collateral.id,
        "lien_status": "registered",
    }
    assert row.after == {"lien_status": "discharged", "loan_status": "closed"}
    with pytest.raises(CollateralError, match="^this lien was discharged already$"):
        collateral_discharge(collateral_id=collateral.id, staff=manager, reason="again")


def test_a_lien_on_an_application_may_be_let_go_before_the_decision(app: Flask) -> None:
    loan = _application()
    collateral = _record(loan, make_staff("loan_officer"), forced_sale_value="30000")
    assert loan_cover(reload(loan.id)).complete
    collateral_discharge(
        collateral_id=collateral.id, staff=make_staff("branch_manager"), reason="wrong vehicle"
    )
    # It no longer counts: the application is back to needing its cover.
    assert loan_cover(reload(loan.id)).collateral == 0
    with pytest.raises(CollateralError, match="no collateral 999"):
        collateral_discharge(collateral_id=999, staff=make_staff("branch_manager"), reason="x")
