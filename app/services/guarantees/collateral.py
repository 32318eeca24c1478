"""The collateral register: recording a pledged asset on a loan and discharging its lien
(SPEC "Guarantees", issue 19).

A registered lien counts toward the loan's cover at the product's haircut of its
forced-sale value (`app.selectors.guarantees.loan_cover`), so recording or discharging one
takes the loan's row lock: an approval deciding on the cover sees it before or after, never
half. The valuation report is a document of the loan (the documents block), kind
`valuation_<collateral id>`, so each asset's reports are one version line of their own.

Decisions where the issue is silent:

- Collateral is recorded while the loan may still need it: waiting for a decision, approved,
  being paid out, or live. A loan that has ended has nothing left to secure.
- A lien is discharged (branch manager, `collateral.release`) when the loan has ended
  (closed, written off, rejected or withdrawn), or while the application still waits for a
  decision: nothing has been lent against it yet, so a lien recorded in error, or one the
  cover turned out not to need, is let go. Once the loan is approved or paid out the lien
  stays until the loan ends: the approval counted it.
- Both values are money as staff type it (more than zero, to the cent); the forced-sale
  value is at most the market value; a valuation is dated today or earlier.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import Loan, StaffUser
from app.models.security import COLLATERAL_KINDS, Collateral
from app.models.types import utcnow
from app.money import MoneyError, money_input
from app.services.audit import audit_record
from app.services.locking import lock_row
from app.services.permissions import permission_require

KIND_WORDS = {
    "land_title": "Land title",
    "log_book": "Vehicle log book",
    "chattel": "Chattel",
    "check_off": "Salary check-off",
    "fixed_deposit": "Fixed deposit",
}
RECORDING_STATUSES = (
    "submitted",
    "recommended",
    "approved",
    "disbursing",
    "active",
    "restructured",
)
ENDED_STATUSES = ("closed", "written_off", "rejected", "withdrawn")
# Still waiting for a decision: nothing lent against the lien yet.
UNDECIDED_STATUSES = ("submitted", "recommended")


class CollateralError(SaccoError):
    """A collateral action refused; the message says why. Nothing was written."""


def _text(value: object, what: str, limit: int) -> str:
    text = " ".join(str(value or "").split())
    if not text:
        raise CollateralError(f"{what} is needed")
    if len(text) > limit:
        raise CollateralError(f"{what} is at most {limit} characters")
    return text


def _money(value: object, what: str) -> Any:
    try:
        return money_input(value, what)
    except MoneyError as exc:
        raise CollateralError(str(exc)) from None


def collateral_record(
    *,
    loan_id: int,
    kind: str,
    description: str,
    owner_name: str,
    market_value: object,
    forced_sale_value: object,
    valued_on: date | None,
    valuer: str,
    staff: StaffUser,
    today: date | None = None,
) -> Collateral:
    """Register a lien on an asset pledged for the loan; audited. Commits."""
    permission_require(staff, "guarantee.manage")
    if kind not in COLLATERAL_KINDS:
        raise CollateralError(
            f"the kind is one of: {', '.join(KIND_WORDS[k].lower() for k in COLLATERAL_KINDS)}"
        )
    what = _text(description, "the description", 255)
    owner = _text(owner_name, "the owner's name", 120)
    by = _text(valuer, "the valuer", 120)
    market = _money(market_value, "the market value")
    forced = _money(forced_sale_value, "the forced-sale value")
    if forced > market:
        raise CollateralError(
            f"the forced-sale value (KES {forced:,.2f}) cannot be more than the market "
            f"value (KES {market:,.2f})"
        )
    if valued_on is None:
        raise CollateralError("the valuation date is needed")
    day = today or business_today()
    if valued_on > day:
        raise CollateralError(f"the valuation date {valued_on:%d/%m/%Y} is in the future")
    loan = lock_row(Loan, loan_id)
    if loan is None:
        db.session.rollback()
        raise CollateralError(f"no loan {loan_id}")
    if loan.status not in RECORDING_STATUSES:
        db.session.rollback()
        raise CollateralError(f"loan {loan.loan_no} is {loan.status}: it needs no security now")
    collateral = Collateral(
        loan_id=loan.id,
        kind=kind,
        description=what,
        owner_name=owner,
        market_value=market,
        forced_sale_value=forced,
        valued_on=valued_on,
        valuer=by,
        lien_status="registered",
        recorded_by=f"staff:{staff.email}",
    )
    db.session.add(collateral)
    db.session.flush()
    audit_record(
        actor=f"staff:{staff.email}",
        action="collateral.record",
        object_type="loan",
        object_id=loan.loan_no,
        after={
            "collateral": collateral.id,
            "kind": kind,
            "description": what,
            "owner": owner,
            "market_value": market,
            "forced_sale_value": forced,
            "valued_on": valued_on.isoformat(),
            "valuer": by,
        },
    )
    db.session.commit()
    return collateral


def collateral_discharge(*, collateral_id: int, staff: StaffUser, reason: str) -> Collateral:
    """Discharge a registered lien (module docstring: when); audited. Commits."""
    permission_require(staff, "collateral.release")
    why = _text(reason, "the reason", 500)
    found = db.session.get(Collateral, collateral_id)
    if found is None:
        raise CollateralError(f"no collateral {collateral_id}")
    # The loan's lock first (as recording takes it), then the row itself.
    loan = lock_row(Loan, found.loan_id)
    collateral = lock_row(Collateral, collateral_id)
    assert loan is not None and collateral is not None  # neither is ever deleted
    if collateral.lien_status != "registered":
        db.session.rollback()
        raise CollateralError("this lien was discharged already")
    if loan.status not in ENDED_STATUSES + UNDECIDED_STATUSES:
        db.session.rollback()
        raise CollateralError(
            f"loan {loan.loan_no} is {loan.status}: the lien stays until the loan ends"
        )
    collateral.lien_status = "discharged"
    collateral.discharged_by = f"staff:{staff.email}"
    collateral.discharged_at = utcnow()
    audit_record(
        actor=f"staff:{staff.email}",
        action="collateral.discharge",
        object_type="loan",
        object_id=loan.loan_no,
        before={"collateral": collateral.id, "lien_status": "registered"},
        after={"lien_status": "discharged", "loan_status": loan.status},
        note=why,
    )
    db.session.commit()
    return collateral
