"""Compromise agreements: a remedial settlement of a loan in default.

draft -> submitted -> approved -> active -> completed | defaulted, and a draft may be
deleted (soft). Staff write the schedule by hand (dates and amounts adding up to the
settlement); a branch manager who did not draft it approves it. Approved is "signed,
schedule not started"; the agreement becomes active when its first installment date
arrives (the daily scan) or a payment reaches it first, whichever is sooner.

Decisions written down here because the issue is silent:
- An officer's `accept_limit`: every agreement needs a branch manager's approval, so a
  settlement above the drafter's limit is never accepted by the drafter alone; it is
  recorded as needing a supervisor (in the audit rows of draft and submit, and shown on
  the page), and the approving manager's own limit, when they have one, must cover it.
- The money: payments still go to the loan as every repayment does (loan_repay); the
  agreement only counts them against its schedule. When its settlement is paid, the loan
  is settled by the loan service: what it still owes (the discount, and any penalty
  charged since the agreement was approved) is written off and the loan closes.
- Settlement + discount must equal what the loan owes when drafted and again when
  approved: a payment or a penalty in between sends the draft back for new figures.
- A submitted agreement that is edited goes back to draft: a manager never approves
  figures other than the ones submitted.

Every change to an agreement takes its loan's row lock first (lock_row), so approvals,
payments and the scan are serialised per loan; at most one approved or active agreement
per loan is also a partial unique index, the backstop for any path that forgets.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import Agreement, AgreementInstallment, Loan, StaffUser
from app.models.recovery import AGREEMENT_BINDING
from app.models.types import utcnow
from app.money import ZERO, MoneyError, money_input, to_decimal
from app.selectors.loans import LIVE_STATUSES, loan_debt
from app.services.audit import audit_record
from app.services.loans import loan_settle
from app.services.locking import lock_row
from app.services.permissions import permission_require, permitted

log = logging.getLogger(__name__)

DEFAULT_GRACE_DAYS = 3
DEFAULT_THRESHOLD_DAYS = 30
MAX_INSTALLMENTS = 60
EDITABLE = ("draft", "submitted")  # after approval only payments, notes and documents


class AgreementError(SaccoError):
    """An agreement action that must not happen; the message says why. Nothing written."""


@dataclass(frozen=True)
class ScheduleLine:
    due_date: date
    amount: Decimal


def _actor(staff: StaffUser | str | None) -> str:
    if staff is None:
        return "system"
    if isinstance(staff, StaffUser):
        return f"staff:{staff.email}"
    return staff


def _refuse(message: str) -> AgreementError:
    """Undo anything read or locked, and say why."""
    db.session.rollback()
    return AgreementError(message)


def _kes(value: Decimal) -> str:
    return f"KES {value:,.2f}"


# -- input ---------------------------------------------------------------------------------

_LINE = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})[\s,;]+([0-9][0-9,]*(?:\.[0-9]+)?)\s*$")


def agreement_schedule_parse(text: str) -> list[ScheduleLine]:
    """A schedule typed one installment a line, "2026-12-15 5000" (a comma or semicolon
    may separate them, thousands may carry commas); blank lines are skipped."""
    lines: list[ScheduleLine] = []
    for number, raw in enumerate((text or "").splitlines(), start=1):
        if not raw.strip():
            continue
        found = _LINE.match(raw)
        if found is None:
            raise AgreementError(
                f"schedule line {number} should read like 2026-12-15 5000, not {raw.strip()!r}"
            )
        try:
            due = date.fromisoformat(found.group(1))
        except ValueError:
            raise AgreementError(f"schedule line {number}: {found.group(1)} is no date") from None
        lines.append(ScheduleLine(due, _money(found.group(2), "an amount")))  # "4,000" too
    return lines


def _money(value: object, what: str) -> Decimal:
    try:
        return money_input(value, what)
    except MoneyError as exc:
        raise AgreementError(str(exc)) from None


def _discount(value: object) -> Decimal:
    """Zero is a discount too (a settlement of the whole debt on new dates)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ZERO
    try:
        if to_decimal(value) == 0:
            return ZERO
    except MoneyError:
        raise AgreementError("the discount is not a number") from None
    if to_decimal(value) < 0:
        raise AgreementError("the discount cannot be negative")
    return _money(value, "the discount")


def _days(value: object, what: str, minimum: int) -> int:
    try:
        days = int(str(value).strip())
    except (TypeError, ValueError):
        raise AgreementError(f"{what} must be a whole number of days") from None
    if days < minimum or days > 3650:
        raise AgreementError(f"{what} must be {minimum} to 3650 days")
    return days


def _check_schedule(
    schedule: Sequence[ScheduleLine | tuple[date, object]], settlement: Decimal, as_of: date
) -> list[ScheduleLine]:
    lines = [
        line
        if isinstance(line, ScheduleLine)
        else ScheduleLine(line[0], _money(line[1], "an amount"))
        for line in schedule
    ]
    if not lines:
        raise AgreementError("the schedule needs at least one installment")
    if len(lines) > MAX_INSTALLMENTS:
        raise AgreementError(f"the schedule has more than {MAX_INSTALLMENTS} installments")
    for number, line in enumerate(lines, start=1):
        if line.due_date <= as_of:
            raise AgreementError(
                f"installment {number} is due {line.due_date}: dates must be after today ({as_of})"
            )
        if number > 1 and line.due_date <= lines[number - 2].due_date:
            raise AgreementError(
                f"installment {number} ({line.due_date}) must fall after installment "
                f"{number - 1} ({lines[number - 2].due_date})"
            )
    total = sum((line.amount for line in lines), ZERO)
    if total != settlement:
        short = "short of" if total < settlement else "more than"
        raise AgreementError(
            f"the installments add up to {_kes(total)}, {_kes(abs(settlement - total))} "
            f"{short} the settlement of {_kes(settlement)}"
        )
    return lines


def _check_figures(loan: Loan, settlement: Decimal, discount: Decimal) -> Decimal:
    """Settlement + discount is what the loan owes now; returns that debt."""
    owed = loan_debt(loan_id=loan.id).total
    if settlement + discount != owed:
        raise AgreementError(
            f"loan {loan.loan_no} owes {_kes(owed)} now: the settlement ({_kes(settlement)}) "
            f"and the discount ({_kes(discount)}) must add up to it"
        )
    return owed


def _needs_supervisor(agreement: Agreement, drafter: StaffUser | None) -> bool:
    limit = drafter.accept_limit if drafter is not None else None
    return limit is not None and agreement.settlement_amount > limit


def agreement_needs_supervisor(agreement: Agreement) -> bool:
    """The settlement is above the drafter's own accept limit: a supervisor (the
    approving branch manager) accepts it, never the drafter."""
    return _needs_supervisor(agreement, db.session.get(StaffUser, agreement.drafted_by_id))


# -- locking -------------------------------------------------------------------------------


def _lock(agreement_id: int) -> tuple[Agreement, Loan]:
    """The agreement's loan under its lock, and the agreement re-read under it."""
    loan_id = db.session.scalar(select(Agreement.loan_id).where(Agreement.id == agreement_id))
    if loan_id is None:
        raise _refuse(f"no agreement {agreement_id}")
    loan = lock_row(Loan, loan_id)
    agreement = db.session.scalar(
        select(Agreement)
        .where(Agreement.id == agreement_id)
        .execution_options(populate_existing=True)
    )
    assert loan is not None and agreement is not None  # rows are never deleted
    return agreement, loan


def _installments(agreement: Agreement) -> list[AgreementInstallment]:
    return list(
        db.session.scalars(
            select(AgreementInstallment)
            .where(AgreementInstallment.agreement_id == agreement.id)
            .order_by(AgreementInstallment.number)
            .execution_options(populate_existing=True)
        )
    )


def _audit(
    agreement: Agreement,
    action: str,
    staff: StaffUser | str | None,
    *,
    before: dict[str, object] | None = None,
    after: dict[str, object] | None = None,
    note: str | None = None,
) -> None:
    audit_record(
        actor=_actor(staff),
        action=f"agreement.{action}",
        object_type="agreement",
        object_id=agreement.id,
        before=before,
        after=after,
        note=note,
    )


def _set_status(
    agreement: Agreement,
    target: str,
    allowed: str,
    staff: StaffUser | str | None,
    *,
    action: str,
    done: str,
    note: str | None = None,
    **after: object,
) -> None:
    """Move to `target` from the one status it is `allowed` from, audited as
    agreement.<action>; refused in words ("... can be <done>") from any other."""
    if agreement.status != allowed:
        raise _refuse(
            f"agreement {agreement.id} is {agreement.status}; only {allowed} agreements can "
            f"be {done}"
        )
    before = agreement.status
    agreement.status = target
    _audit(
        agreement,
        action,
        staff,
        before={"status": before},
        after={"status": target, **after},
        note=note,
    )


# -- writes --------------------------------------------------------------------------------


def agreement_draft(
    *,
    loan_id: int,
    staff: StaffUser,
    settlement_amount: object,
    discount: object = ZERO,
    schedule: Sequence[ScheduleLine | tuple[date, object]],
    grace_days: object = DEFAULT_GRACE_DAYS,
    default_threshold_days: object = DEFAULT_THRESHOLD_DAYS,
    note: str | None = None,
    as_of: date | None = None,
) -> Agreement:
    """Draft a compromise agreement for a loan in default. Refused in words unless the
    settlement and discount add up to what the loan owes now and the schedule's dates
    (after today, ascending) and amounts (above zero) add up to the settlement."""
    permission_require(staff, "agreement.draft")
    as_of = as_of or business_today()
    settlement = _money(settlement_amount, "the settlement")
    off = _discount(discount)
    grace = _days(grace_days, "grace days", 0)
    threshold = _days(default_threshold_days, "the default threshold", 1)
    lines = _check_schedule(schedule, settlement, as_of)
    loan = lock_row(Loan, loan_id)
    if loan is None:
        raise _refuse(f"no loan {loan_id}")
    if loan.status not in LIVE_STATUSES or not loan.in_default:
        raise _refuse(
            f"loan {loan.loan_no} is not in default; compromise agreements are for loans "
            "in default only"
        )
    try:
        owed = _check_figures(loan, settlement, off)
    except AgreementError:
        db.session.rollback()
        raise
    agreement = Agreement(
        loan_id=loan.id,
        settlement_amount=settlement,
        discount=off,
        grace_days=grace,
        default_threshold_days=threshold,
        note=(note or "").strip() or None,
        drafted_by_id=staff.id,
    )
    agreement.installments = [
        AgreementInstallment(number=n, due_date=line.due_date, amount=line.amount)
        for n, line in enumerate(lines, start=1)
    ]
    db.session.add(agreement)
    db.session.flush()
    _audit(
        agreement,
        "draft",
        staff,
        after={
            "loan": loan.loan_no,
            "owed": owed,
            "settlement": settlement,
            "discount": off,
            "installments": len(lines),
            "grace_days": grace,
            "default_threshold_days": threshold,
            "needs_supervisor": _needs_supervisor(agreement, staff),
        },
    )
    db.session.commit()
    return agreement


def agreement_update(
    *,
    agreement_id: int,
    staff: StaffUser,
    settlement_amount: object,
    discount: object = ZERO,
    schedule: Sequence[ScheduleLine | tuple[date, object]],
    grace_days: object = DEFAULT_GRACE_DAYS,
    default_threshold_days: object = DEFAULT_THRESHOLD_DAYS,
    as_of: date | None = None,
) -> Agreement:
    """Change a draft's (or a submitted agreement's) figures and schedule; a submitted one
    goes back to draft. Refused once approved: the signed schedule never changes."""
    permission_require(staff, "agreement.draft")
    as_of = as_of or business_today()
    settlement = _money(settlement_amount, "the settlement")
    off = _discount(discount)
    grace = _days(grace_days, "grace days", 0)
    threshold = _days(default_threshold_days, "the default threshold", 1)
    lines = _check_schedule(schedule, settlement, as_of)
    agreement, loan = _lock(agreement_id)
    if agreement.status not in EDITABLE:
        raise _refuse(
            f"agreement {agreement.id} is {agreement.status}: its figures and schedule can "
            "no longer change (only payments, notes and documents)"
        )
    if agreement.drafted_by_id != staff.id:
        raise _refuse("only the staff member who drafted an agreement changes it")
    try:
        _check_figures(loan, settlement, off)
    except AgreementError:
        db.session.rollback()
        raise
    before = {
        "status": agreement.status,
        "settlement": agreement.settlement_amount,
        "discount": agreement.discount,
        "schedule": _schedule_text(agreement.installments),
    }
    for row in list(agreement.installments):
        agreement.installments.remove(row)
    db.session.flush()  # the old numbers go before the new ones take them
    agreement.installments = [
        AgreementInstallment(number=n, due_date=line.due_date, amount=line.amount)
        for n, line in enumerate(lines, start=1)
    ]
    agreement.settlement_amount, agreement.discount = settlement, off
    agreement.grace_days, agreement.default_threshold_days = grace, threshold
    agreement.status, agreement.submitted_at = "draft", None
    _audit(
        agreement,
        "update",
        staff,
        before=before,
        after={
            "status": "draft",
            "settlement": settlement,
            "discount": off,
            "schedule": _schedule_text(agreement.installments),
            "grace_days": grace,
            "default_threshold_days": threshold,
        },
    )
    db.session.commit()
    return agreement


def _schedule_text(rows: Iterable[AgreementInstallment]) -> str:
    return "; ".join(f"{r.due_date} {r.amount}" for r in rows)


def agreement_submit(*, agreement_id: int, staff: StaffUser) -> Agreement:
    """The drafter sends the draft to a branch manager."""
    permission_require(staff, "agreement.draft")
    agreement, _loan = _lock(agreement_id)
    if agreement.drafted_by_id != staff.id and agreement.status == "draft":
        raise _refuse("only the staff member who drafted an agreement submits it")
    _set_status(
        agreement,
        "submitted",
        "draft",
        staff,
        action="submit",
        done="submitted",
        needs_supervisor=_needs_supervisor(agreement, staff),
        accept_limit=staff.accept_limit,
    )
    agreement.submitted_at = utcnow()
    db.session.commit()
    return agreement


def agreement_return(*, agreement_id: int, staff: StaffUser, reason: str) -> Agreement:
    """A branch manager sends a submitted agreement back to its drafter, saying why."""
    permission_require(staff, "agreement.approve")
    reason = (reason or "").strip()
    if not reason:
        raise AgreementError("say why the agreement goes back to its drafter")
    agreement, _loan = _lock(agreement_id)
    _set_status(
        agreement,
        "draft",
        "submitted",
        staff,
        action="return",
        done="returned to draft",
        note=reason,
    )
    agreement.submitted_at = None
    db.session.commit()
    return agreement


def agreement_approve(
    *, agreement_id: int, staff: StaffUser, as_of: date | None = None
) -> Agreement:
    """A branch manager (never the drafter) approves a submitted agreement. Under the
    loan's lock: the loan must still owe exactly settlement + discount, and no other
    agreement of the loan may be approved or active (the unique index says so too)."""
    permission_require(staff, "agreement.approve")
    as_of = as_of or business_today()
    agreement, loan = _lock(agreement_id)
    if agreement.drafted_by_id == staff.id:
        raise _refuse("the staff member who drafted an agreement cannot also approve it")
    if agreement.status != "submitted":
        raise _refuse(
            f"agreement {agreement.id} is {agreement.status}; only submitted agreements "
            "are approved"
        )
    if staff.accept_limit is not None and agreement.settlement_amount > staff.accept_limit:
        raise _refuse(
            f"the settlement of {_kes(agreement.settlement_amount)} is above your limit of "
            f"{_kes(staff.accept_limit)}; a supervisor with a higher limit approves it"
        )
    if loan.status not in LIVE_STATUSES:
        raise _refuse(f"loan {loan.loan_no} is {loan.status}; there is nothing to settle")
    binding = _binding(loan.id)
    if binding is not None:
        raise _refuse(_one_binding(loan, binding))
    try:
        _check_figures(loan, agreement.settlement_amount, agreement.discount)
    except AgreementError as exc:
        db.session.rollback()
        raise AgreementError(f"{exc}; send it back to draft for new figures") from None
    first_due = min(r.due_date for r in agreement.installments)
    needs_supervisor = agreement_needs_supervisor(agreement)
    try:
        _set_status(
            agreement,
            "approved",
            "submitted",
            staff,
            action="approve",
            # Unreachable words: the status was checked above, so _set_status never refuses.
            done="approved",  # pragma: no mutate
            needs_supervisor=needs_supervisor,
        )
        agreement.approved_by_id = staff.id
        agreement.approved_at = utcnow()
        if first_due <= as_of:  # approved late: its schedule has started already
            _activate(agreement, first_due, staff)
        db.session.commit()
    except IntegrityError:
        # Another path approved an agreement of this loan without its lock: the partial
        # unique index refused this one.
        db.session.rollback()
        binding = _binding(loan.id)
        raise _refuse(_one_binding(loan, binding)) from None
    return agreement


def _binding(loan_id: int) -> Agreement | None:
    return db.session.scalar(
        select(Agreement)
        .where(Agreement.loan_id == loan_id, Agreement.status.in_(AGREEMENT_BINDING))
        .execution_options(populate_existing=True)
    )


def _one_binding(loan: Loan, binding: Agreement | None) -> str:
    which = f"agreement {binding.id} is {binding.status}" if binding else "another agreement"
    return (
        f"loan {loan.loan_no} has an agreement in force already ({which}); a loan has at "
        "most one approved or active agreement"
    )


def _activate(agreement: Agreement, on: date, staff: StaffUser | str | None) -> None:
    before = agreement.status
    agreement.status = "active"
    agreement.activated_on = on
    _audit(agreement, "activate", staff, before={"status": before}, after={"status": "active"})


def agreement_delete(*, agreement_id: int, staff: StaffUser) -> Agreement:
    """Only drafts are deleted, and softly: the row stays, marked deleted."""
    permission_require(staff, "agreement.draft")
    agreement, _loan = _lock(agreement_id)
    if agreement.drafted_by_id != staff.id and not permitted(staff, "agreement.approve"):
        raise _refuse("only the drafter or a branch manager deletes a draft")
    _set_status(agreement, "deleted", "draft", staff, action="delete", done="deleted")
    agreement.deleted_at = utcnow()
    db.session.commit()
    return agreement


def agreement_add_note(*, agreement_id: int, staff: StaffUser, note: str) -> Agreement:
    """A note, in any status but deleted: appended, never rewritten, with who and when."""
    permission_require(staff, "agreement.draft")
    note = (note or "").strip()
    if not note:
        raise AgreementError("the note is empty")
    if len(note) > 2000:
        raise AgreementError("a note is at most 2,000 characters")
    agreement, _loan = _lock(agreement_id)
    if agreement.status == "deleted":
        raise _refuse(f"agreement {agreement.id} is deleted")
    stamp = f"[{business_today()} {staff.email}] {note}"
    agreement.note = f"{agreement.note}\n{stamp}" if agreement.note else stamp
    _audit(agreement, "note", staff, note=note)
    db.session.commit()
    return agreement


@dataclass
class Allocation:
    agreement_id: int
    allocated: Decimal
    completed: bool = False
    written_off: Decimal = ZERO
    installments: list[int] = field(default_factory=list)  # numbers paid off


def agreement_allocate(
    *,
    loan_id: int,
    amount: Decimal,
    value_date: date,
    actor: StaffUser | str | None = None,
) -> Allocation | None:
    """Count money that reached the loan against its approved or active agreement: fill
    the installments in order (paid, paid_on), add to paid_amount. When the settlement is
    paid the agreement completes and the loan is settled (loan_settle: the rest written
    off, the loan closed). None when the loan has no agreement in force.

    Called by loan_repay under the loan's lock, inside its transaction: no commit here.
    """
    if amount <= 0:
        return None
    agreement = _binding(loan_id)
    if agreement is None:
        return None
    if agreement.status == "approved":
        _activate(agreement, value_date, actor)
    remaining = amount
    result = Allocation(agreement_id=agreement.id, allocated=ZERO)
    for row in _installments(agreement):
        take = min(row.amount - row.paid, remaining)
        if take <= 0:
            continue
        row.paid += take
        remaining -= take
        result.allocated += take
        if row.paid == row.amount:
            row.paid_on = value_date
            result.installments.append(row.number)
        if remaining == 0:
            break
    agreement.paid_amount += result.allocated
    _audit(
        agreement,
        "payment",
        actor,
        after={
            "amount": result.allocated,
            "paid_amount": agreement.paid_amount,
            "installments_paid": ",".join(map(str, result.installments)),
            "value_date": value_date,
        },
    )
    if agreement.paid_amount >= agreement.settlement_amount:
        result.completed = True
        result.written_off = _complete(agreement, value_date, actor)
    return result


def _complete(agreement: Agreement, on: date, actor: StaffUser | str | None) -> Decimal:
    """The settlement is paid: the agreement completes and the loan is settled through the
    loan service; returns what was written off."""
    before = agreement.status
    agreement.status = "completed"
    agreement.closed_on = on
    loan = db.session.get(Loan, agreement.loan_id)
    written_off = ZERO
    if loan is not None and loan.status in LIVE_STATUSES:
        # The branch manager's approval is the authority for the write-off, not whoever
        # posted the last payment (a loan officer assigning money from suspense, say).
        settled = loan_settle(
            loan_id=agreement.loan_id,
            actor="system",
            reason=f"compromise agreement {agreement.id} paid",
            value_date=on,
            commit=False,
        )
        written_off = settled.written_off_amount
    _audit(
        agreement,
        "complete",
        actor,
        before={"status": before},
        after={
            "status": "completed",
            "paid_amount": agreement.paid_amount,
            "discount_agreed": agreement.discount,
            "written_off": written_off,
        },
    )
    return written_off


@dataclass
class AgreementScan:
    as_of: date
    activated: list[int] = field(default_factory=list)
    defaulted: list[int] = field(default_factory=list)


def agreement_default_date(agreement: Agreement, row: AgreementInstallment) -> date:
    """The first day an unpaid installment puts its agreement in default: more than
    default_threshold_days late, counted after its grace days."""
    return row.due_date + timedelta(
        days=agreement.grace_days + agreement.default_threshold_days + 1
    )


def agreements_in_force_ids(as_of: date) -> list[int]:
    """Agreements in force (approved or active) whose first date has come: the daily
    scan's ids, in id order."""
    first_due = (
        select(
            AgreementInstallment.agreement_id,
            func.min(AgreementInstallment.due_date).label("first_due"),
        )
        .group_by(AgreementInstallment.agreement_id)
        .subquery()
    )
    return list(
        db.session.scalars(
            select(Agreement.id)
            .join(first_due, first_due.c.agreement_id == Agreement.id)
            .where(Agreement.status.in_(AGREEMENT_BINDING), first_due.c.first_due <= as_of)
            .order_by(Agreement.id)
        )
    )


def agreements_check_default(agreement_ids: Sequence[int], *, as_of: date) -> AgreementScan:
    """The daily rule for a set of agreements, in the caller's transaction: their loans
    locked in id order (as every close-of-business chunk locks loans, so two jobs never
    wait on each other in a circle), the agreements and schedules re-read under the locks
    in one query each. An approved agreement whose first date has come becomes active; an
    active one with an installment unpaid more than its threshold (after grace) becomes
    defaulted, dated the day it crossed. A finished agreement is skipped, so running it
    again changes nothing."""
    scan = AgreementScan(as_of=as_of)
    ids = sorted(agreement_ids)
    loan_ids = db.session.scalars(
        select(Agreement.loan_id).where(Agreement.id.in_(ids)).distinct()
    ).all()
    db.session.execute(
        select(Loan.id).where(Loan.id.in_(sorted(loan_ids))).order_by(Loan.id).with_for_update()
    ).all()
    agreements = db.session.scalars(
        select(Agreement)
        .where(Agreement.id.in_(ids))
        .order_by(Agreement.id)
        .execution_options(populate_existing=True)
    ).all()
    schedules: dict[int, list[AgreementInstallment]] = {}
    for row in db.session.scalars(
        select(AgreementInstallment)
        .where(AgreementInstallment.agreement_id.in_(ids))
        .order_by(AgreementInstallment.agreement_id, AgreementInstallment.number)
        .execution_options(populate_existing=True)
    ):
        schedules.setdefault(row.agreement_id, []).append(row)
    for agreement in agreements:
        if agreement.status not in AGREEMENT_BINDING:
            continue
        rows = schedules.get(agreement.id, [])
        if agreement.status == "approved" and rows and rows[0].due_date <= as_of:
            _activate(agreement, rows[0].due_date, "system")
            scan.activated.append(agreement.id)
        late = [
            r for r in rows if r.paid < r.amount and agreement_default_date(agreement, r) <= as_of
        ]
        if agreement.status == "active" and late:
            row = late[0]
            crossed = agreement_default_date(agreement, row)
            agreement.status = "defaulted"
            agreement.closed_on = crossed
            _audit(
                agreement,
                "default",
                "system",
                before={"status": "active"},
                after={
                    "status": "defaulted",
                    "installment": row.number,
                    "due_date": row.due_date,
                    "unpaid": row.amount - row.paid,
                    "as_of": as_of,
                },
            )
            scan.defaulted.append(agreement.id)
    return scan


def agreement_check_default(*, as_of: date) -> AgreementScan:
    """The daily scan of agreements in force, for `as_of`, one agreement per transaction
    (the `agreement-scan` job does the same in chunks). Idempotent and replayable: a
    finished agreement is never looked at again, and the dates written come from the
    schedule, not from when the scan ran."""
    scan = AgreementScan(as_of=as_of)
    ids = agreements_in_force_ids(as_of)
    db.session.commit()
    for agreement_id in ids:
        one = agreements_check_default([agreement_id], as_of=as_of)
        db.session.commit()
        scan.activated += one.activated
        scan.defaulted += one.defaulted
    return scan
