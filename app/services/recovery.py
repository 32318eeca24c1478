"""Legal and recovery actions on a loan, and the write-off workflow.

Legal cases (court, case number, filing date, status) with their hearings; recovery
milestones (demand letter, auctioneer, foreclosure, dacion in payment) with due dates; and
a write-off recommended by a branch manager with the loan's recovery history attached,
decided by the board and recorded by a branch manager or compliance. Only an approved
decision calls loan_write_off (app/services/loans/), which moves the money; after it,
payments on the loan are recoveries (loan_repay books them as income and counts them in
Loan.recovered_amount).

Decisions where the issue is silent:

- Cases and milestones are for disbursed loans: active, restructured, or written off
  (recovery goes on after a write-off); an application or a closed loan has nothing to
  recover.
- Case statuses move forward only: filed -> hearing -> judgment -> settled / closed;
  filed or hearing may also be settled or withdrawn; settled and withdrawn may be closed.
  Open cases (filed, hearing, judgment) are the ones whose hearings count.
- The next hearing of a loan is the earliest hearing on or after the day (today's hearing
  is still the next one) among its open cases; a hearing's outcome is recorded only once
  its day has come, and a hearing with an outcome is not moved.
- One open milestone of each kind per loan (two demand letters at once would be one too
  many); a milestone's due date is not in the past when it is started.
- A milestone overdue is flagged once (overdue_flagged_on): a rerun of the scan for the
  same or a later day flags nothing again; replaying an earlier day flags only what was
  overdue then and not flagged yet.
- The write-off is booked on the day the decision is recorded (the books change then);
  the board's date is kept on the request. If the loan can no longer be written off (paid
  back into good standing meanwhile), nothing is recorded and the refusal says why.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from app.clock import business_date, business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import (
    Agreement,
    ContactLog,
    Hearing,
    LegalCase,
    Loan,
    PromiseToPay,
    RecoveryMilestone,
    StaffUser,
    WriteOffRequest,
)
from app.models.recovery import CASE_STATUSES, MILESTONE_KINDS
from app.selectors.loans import LIVE_STATUSES, current_installments, loan_debt
from app.services.audit import audit_record
from app.services.loans import loan_write_off
from app.services.locking import lock_row
from app.services.permissions import permission_require
from app.services.promises import paid_since

RECOVERABLE = (*LIVE_STATUSES, "written_off")
OPEN_CASE = ("filed", "hearing", "judgment")
CASE_MOVES: dict[str, tuple[str, ...]] = {
    "filed": ("hearing", "judgment", "settled", "withdrawn"),
    "hearing": ("judgment", "settled", "withdrawn"),
    "judgment": ("settled", "closed"),
    "settled": ("closed",),
    "withdrawn": ("closed",),
    "closed": (),
}
MILESTONE_WORDS = {
    "demand_letter": "demand letter",
    "auctioneer": "auctioneer",
    "foreclosure": "foreclosure",
    "dacion": "dacion in payment",
}
WRITE_OFF_DECISIONS = ("approve", "decline")


class RecoveryError(SaccoError):
    """A legal, recovery or write-off action refused; the message says why."""


def _actor(staff: StaffUser) -> str:
    return f"staff:{staff.email}"


def _optional(value: str | None, what: str, limit: int) -> str | None:
    cleaned = (value or "").strip()
    if len(cleaned) > limit:
        raise RecoveryError(f"the {what} is at most {limit} characters")
    return cleaned or None


def _required(value: str | None, what: str, limit: int) -> str:
    cleaned = _optional(value, what, limit)
    if cleaned is None:
        raise RecoveryError(f"the {what} is needed")
    return cleaned


def _recoverable_loan(loan_id: int) -> Loan:
    loan = db.session.get(Loan, loan_id)
    if loan is None:
        raise RecoveryError(f"no loan {loan_id}")
    if loan.status not in RECOVERABLE:
        raise RecoveryError(
            f"loan {loan} is {loan.status}; legal and recovery actions are for disbursed "
            "loans still owing or written off"
        )
    return loan


# -- legal cases and hearings ---------------------------------------------------------------


def legal_case_file(
    *,
    loan_id: int,
    staff: StaffUser,
    court: str,
    case_number: str,
    filing_date: date,
    note: str | None = None,
    as_of: date | None = None,
) -> LegalCase:
    """File a legal case on a loan; audited."""
    permission_require(staff, "legal.file")
    today = as_of or business_today()
    court_ = _required(court, "court", 120)
    number = _required(case_number, "case number", 60)
    note_ = _optional(note, "note", 2000)
    if filing_date > today:
        raise RecoveryError("the filing date cannot be in the future")
    loan = _recoverable_loan(loan_id)
    taken = db.session.scalar(
        select(LegalCase.loan_id).where(LegalCase.court == court_, LegalCase.case_number == number)
    )
    if taken is not None:
        raise RecoveryError(f"{court_} already has a case number {number}")
    case = LegalCase(
        loan_id=loan.id,
        court=court_,
        case_number=number,
        filing_date=filing_date,
        status="filed",
        filed_by_id=staff.id,
        note=note_,
    )
    db.session.add(case)
    try:
        db.session.flush()
    except IntegrityError:  # the same number filed at the same moment by someone else
        db.session.rollback()
        raise RecoveryError(f"{court_} already has a case number {number}") from None
    audit_record(
        actor=_actor(staff),
        action="legal.file",
        object_type="loan",
        object_id=loan,
        after={
            "case_id": case.id,
            "court": court_,
            "case_number": number,
            "filing_date": filing_date,
        },
        note=note_,
    )
    db.session.commit()
    return case


def _locked_case(case_id: int) -> LegalCase:
    case = lock_row(LegalCase, case_id)
    if case is None:
        db.session.rollback()
        raise RecoveryError(f"no legal case {case_id}")
    return case


def legal_case_update(
    *,
    case_id: int,
    staff: StaffUser,
    status: str,
    note: str | None = None,
    as_of: date | None = None,
) -> LegalCase:
    """Move a case to its next status (forward only, see CASE_MOVES); audited. A case
    that closes stops counting for the loan's next hearing."""
    permission_require(staff, "legal.file")
    if status not in CASE_STATUSES:
        raise RecoveryError(f"a case is {', '.join(CASE_STATUSES)}")
    note_ = _optional(note, "note", 2000)
    case = _locked_case(case_id)
    before = case.status
    if status not in CASE_MOVES[before]:
        db.session.rollback()
        allowed = ", ".join(CASE_MOVES[before]) or "nothing: it is closed"
        raise RecoveryError(
            f"case {case.case_number} is {before}; it can become {allowed}, not {status}"
        )
    case.status = status
    if note_:
        case.note = f"{case.note}\n{note_}" if case.note else note_
    audit_record(
        actor=_actor(staff),
        action="legal.status",
        object_type="legal_case",
        object_id=case.id,
        before={"status": before},
        after={"status": status, "case_number": case.case_number},
        note=note_,
    )
    _rollup([case.loan_id], as_of or business_today())
    db.session.commit()
    return case


def hearing_add(
    *,
    case_id: int,
    staff: StaffUser,
    held_on: date,
    outcome: str | None = None,
    as_of: date | None = None,
) -> Hearing:
    """Add a hearing to an open case (a future date, or a past one with its outcome);
    the loan's next hearing is rolled up at once; audited."""
    permission_require(staff, "legal.file")
    today = as_of or business_today()
    outcome_ = _optional(outcome, "outcome", 255)
    case = _locked_case(case_id)
    if case.status not in OPEN_CASE:
        db.session.rollback()
        raise RecoveryError(f"case {case.case_number} is {case.status}; it has no more hearings")
    if held_on < case.filing_date:
        db.session.rollback()
        raise RecoveryError(f"the case was filed on {case.filing_date}; a hearing comes after")
    if outcome_ and held_on > today:
        db.session.rollback()
        raise RecoveryError(f"the hearing on {held_on} has not happened yet; no outcome until then")
    same_day = db.session.scalar(
        select(Hearing.id).where(Hearing.case_id == case.id, Hearing.held_on == held_on)
    )
    if same_day is not None:
        db.session.rollback()
        raise RecoveryError(f"case {case.case_number} already has a hearing on {held_on}")
    hearing = Hearing(case_id=case.id, held_on=held_on, outcome=outcome_)
    db.session.add(hearing)
    db.session.flush()
    audit_record(
        actor=_actor(staff),
        action="legal.hearing",
        object_type="legal_case",
        object_id=case.id,
        after={"hearing_id": hearing.id, "held_on": held_on, "outcome": outcome_},
    )
    _rollup([case.loan_id], today)
    db.session.commit()
    return hearing


def hearing_update(
    *,
    hearing_id: int,
    staff: StaffUser,
    held_on: date | None = None,
    outcome: str | None = None,
    as_of: date | None = None,
) -> Hearing:
    """Move a hearing not yet held to another date, or record its outcome once its day
    has come; the loan's next hearing is rolled up at once; audited."""
    permission_require(staff, "legal.file")
    today = as_of or business_today()
    outcome_ = _optional(outcome, "outcome", 255)
    found = db.session.get(Hearing, hearing_id)
    if found is None:
        raise RecoveryError(f"no hearing {hearing_id}")
    case = _locked_case(found.case_id)  # one change to a case and its hearings at a time
    hearing = db.session.get(Hearing, hearing_id, populate_existing=True)
    assert hearing is not None
    before = {"held_on": hearing.held_on, "outcome": hearing.outcome}
    if held_on is None and outcome_ is None:
        db.session.rollback()
        raise RecoveryError("give the new date or the outcome")
    if held_on is not None and held_on != hearing.held_on:
        if hearing.outcome:
            db.session.rollback()
            raise RecoveryError("a hearing with its outcome recorded is not moved")
        if case.status not in OPEN_CASE:
            db.session.rollback()
            raise RecoveryError(f"case {case.case_number} is {case.status}")
        if held_on < case.filing_date:
            db.session.rollback()
            raise RecoveryError(f"the case was filed on {case.filing_date}; a hearing comes after")
        clash = db.session.scalar(
            select(Hearing.id).where(
                Hearing.case_id == case.id, Hearing.held_on == held_on, Hearing.id != hearing.id
            )
        )
        if clash is not None:
            db.session.rollback()
            raise RecoveryError(f"case {case.case_number} already has a hearing on {held_on}")
        hearing.held_on = held_on
    if outcome_ is not None:
        if hearing.held_on > today:
            db.session.rollback()
            raise RecoveryError(
                f"the hearing on {hearing.held_on} has not happened yet; no outcome until then"
            )
        hearing.outcome = outcome_
    after = {"held_on": hearing.held_on, "outcome": hearing.outcome}
    if after == before:
        db.session.rollback()
        raise RecoveryError("nothing to change")
    audit_record(
        actor=_actor(staff),
        action="legal.hearing_update",
        object_type="legal_case",
        object_id=case.id,
        before={"hearing_id": hearing.id, **before},
        after={"hearing_id": hearing.id, **after},
    )
    _rollup([case.loan_id], today)
    db.session.commit()
    return hearing


def _next_hearings(as_of: date, loan_ids: Iterable[int] | None = None) -> dict[int, date]:
    query = (
        select(LegalCase.loan_id, func.min(Hearing.held_on))
        .join(Hearing, Hearing.case_id == LegalCase.id)
        .where(LegalCase.status.in_(OPEN_CASE), Hearing.held_on >= as_of)
        .group_by(LegalCase.loan_id)
    )
    if loan_ids is not None:
        query = query.where(LegalCase.loan_id.in_(list(loan_ids)))
    return {loan_id: day for loan_id, day in db.session.execute(query)}


def _rollup(loan_ids: Iterable[int] | None, as_of: date) -> int:
    """Set Loan.next_hearing_on for these loans (all when None); the caller commits.
    Returns how many loans changed. Reads ids and dates only (a loan row loads its
    schedule with it) and writes only the loans whose date changes."""
    ids = None if loan_ids is None else list(set(loan_ids))
    nexts = _next_hearings(as_of, ids)
    shown = select(Loan.id, Loan.next_hearing_on)
    if ids is not None:
        shown = shown.where(Loan.id.in_(ids))
    else:
        # The loans that may change: those with a next hearing and those still showing one.
        shown = shown.where(Loan.id.in_(list(nexts)) | Loan.next_hearing_on.is_not(None))
    changed = 0
    for loan_id, current in db.session.execute(shown).all():
        wanted = nexts.get(loan_id)
        if current != wanted:
            db.session.execute(
                update(Loan).where(Loan.id == loan_id).values(next_hearing_on=wanted)
            )
            changed += 1
    return changed


def legal_rollup(*, as_of: date, loan_ids: Iterable[int] | None = None) -> int:
    """Roll the next hearing of every loan with a case (or these loans) up onto
    Loan.next_hearing_on for `as_of`; idempotent: a rerun for the same day changes
    nothing. Commits; returns how many loans changed. A derived date, not audited: the
    job's log line records the run."""
    changed = _rollup(loan_ids, as_of)
    db.session.commit()
    return changed


# -- recovery milestones ----------------------------------------------------------------------


def milestone_start(
    *,
    loan_id: int,
    staff: StaffUser,
    kind: str,
    due_date: date,
    note: str | None = None,
    as_of: date | None = None,
) -> RecoveryMilestone:
    """Start a recovery step on a loan with the date it is due by; audited."""
    permission_require(staff, "recovery.start")
    today = as_of or business_today()
    if kind not in MILESTONE_KINDS:
        raise RecoveryError(f"a recovery step is one of: {', '.join(MILESTONE_WORDS.values())}")
    note_ = _optional(note, "note", 2000)
    if due_date < today:
        raise RecoveryError("the due date cannot be in the past")
    loan = lock_row(Loan, loan_id)  # one start per loan at a time: the open-kind check holds
    if loan is None:
        db.session.rollback()
        raise RecoveryError(f"no loan {loan_id}")
    try:
        _recoverable_loan(loan_id)
        open_one = db.session.scalar(
            select(RecoveryMilestone).where(
                RecoveryMilestone.loan_id == loan_id,
                RecoveryMilestone.kind == kind,
                RecoveryMilestone.done_on.is_(None),
            )
        )
        if open_one is not None:
            raise RecoveryError(
                f"a {MILESTONE_WORDS[kind]} due {open_one.due_date} is open on loan {loan}"
            )
    except RecoveryError:
        db.session.rollback()
        raise
    milestone = RecoveryMilestone(
        loan_id=loan_id, kind=kind, due_date=due_date, started_by_id=staff.id, note=note_
    )
    db.session.add(milestone)
    db.session.flush()
    audit_record(
        actor=_actor(staff),
        action="recovery.start",
        object_type="loan",
        object_id=loan,
        after={"milestone_id": milestone.id, "kind": kind, "due_date": due_date},
        note=note_,
    )
    db.session.commit()
    return milestone


def milestone_done(
    *,
    milestone_id: int,
    staff: StaffUser,
    done_on: date,
    note: str | None = None,
    as_of: date | None = None,
) -> RecoveryMilestone:
    """Mark a recovery step done on a day (not in the future); audited."""
    permission_require(staff, "recovery.start")
    today = as_of or business_today()
    note_ = _optional(note, "note", 2000)
    if done_on > today:
        raise RecoveryError("the day it was done cannot be in the future")
    milestone = lock_row(RecoveryMilestone, milestone_id)
    if milestone is None:
        db.session.rollback()
        raise RecoveryError(f"no recovery step {milestone_id}")
    if milestone.done_on is not None:
        db.session.rollback()
        raise RecoveryError(
            f"the {MILESTONE_WORDS[milestone.kind]} was marked done on {milestone.done_on}"
        )
    milestone.done_on = done_on
    if note_:
        milestone.note = f"{milestone.note}\n{note_}" if milestone.note else note_
    audit_record(
        actor=_actor(staff),
        action="recovery.done",
        object_type="recovery_milestone",
        object_id=milestone.id,
        before={"done_on": None},
        after={"done_on": done_on, "kind": milestone.kind, "loan_id": milestone.loan_id},
        note=note_,
    )
    db.session.commit()
    return milestone


def milestones_overdue(*, as_of: date) -> list[int]:
    """Flag, once, every recovery step not done by its due date (due before `as_of`);
    returns the ids flagged by this run (none on a rerun). Each flag is audited as the
    system's; commits."""
    rows = list(
        db.session.scalars(
            select(RecoveryMilestone)
            .where(
                RecoveryMilestone.done_on.is_(None),
                RecoveryMilestone.overdue_flagged_on.is_(None),
                RecoveryMilestone.due_date < as_of,
            )
            .order_by(RecoveryMilestone.id)
            .with_for_update(skip_locked=True)  # a step being marked done is left to it
        )
    )
    for milestone in rows:
        milestone.overdue_flagged_on = as_of
        audit_record(
            actor="system",
            action="recovery.overdue",
            object_type="recovery_milestone",
            object_id=milestone.id,
            after={
                "kind": milestone.kind,
                "loan_id": milestone.loan_id,
                "due_date": milestone.due_date,
                "flagged_on": as_of,
            },
        )
    db.session.commit()
    return [m.id for m in rows]


# -- write-off ------------------------------------------------------------------------------


def recovery_history(*, loan_id: int, as_of: date) -> dict[str, Any]:
    """What was done to recover the loan, as plain JSON for the write-off request:
    the debt, how late, payments since default, contacts, promises, agreements, cases and
    recovery steps (whatever exists)."""
    loan = db.session.get(Loan, loan_id)
    if loan is None:
        raise RecoveryError(f"no loan {loan_id}")
    debt = loan_debt(loan_id=loan.id)
    unpaid = [r for r in current_installments(loan.id) if r.paid_on is None and r.due_date < as_of]
    late_since = unpaid[0].due_date if unpaid else None
    # In default once more than default_threshold_days late (arrears_decide's rule).
    default_since = (
        late_since + timedelta(days=loan.product.default_threshold_days + 1)
        if late_since is not None
        else None
    )

    def counts(model: Any, column: Any) -> dict[str, int]:
        rows = db.session.execute(
            select(column, func.count()).where(model.loan_id == loan.id).group_by(column)
        )
        return {str(key): int(n) for key, n in rows}

    contacts = counts(ContactLog, ContactLog.outcome)
    last_contact = db.session.scalar(
        select(func.max(ContactLog.at)).where(ContactLog.loan_id == loan.id)
    )
    cases = db.session.scalars(
        select(LegalCase).where(LegalCase.loan_id == loan.id).order_by(LegalCase.id)
    )
    milestones = db.session.scalars(
        select(RecoveryMilestone)
        .where(RecoveryMilestone.loan_id == loan.id)
        .order_by(RecoveryMilestone.id)
    )
    return {
        "as_of": as_of.isoformat(),
        "status": loan.status,
        "owed": str(debt.total),
        "days_past_due": loan.days_past_due,
        "late_since": late_since.isoformat() if late_since else None,
        "default_since": default_since.isoformat() if default_since else None,
        "paid_since_default": (
            str(paid_since(loan_id=loan.id, since=default_since)) if default_since else "0.00"
        ),
        "contacts": {
            "total": sum(contacts.values()),
            "by_outcome": contacts,
            "last_at": business_date(last_contact).isoformat() if last_contact else None,
        },
        "promises": counts(PromiseToPay, PromiseToPay.status),
        "agreements": counts(Agreement, Agreement.status),
        "cases": [
            {
                "court": c.court,
                "case_number": c.case_number,
                "status": c.status,
                "filing_date": c.filing_date.isoformat(),
                "hearings": len(c.hearings),
            }
            for c in cases
        ],
        "milestones": [
            {
                "kind": m.kind,
                "due_date": m.due_date.isoformat(),
                "done_on": m.done_on.isoformat() if m.done_on else None,
            }
            for m in milestones
        ],
    }


def _open_request(loan_id: int) -> WriteOffRequest | None:
    return db.session.scalar(
        select(WriteOffRequest).where(
            WriteOffRequest.loan_id == loan_id, WriteOffRequest.status == "recommended"
        )
    )


def write_off_recommend(
    *, loan_id: int, staff: StaffUser, reason: str, as_of: date | None = None
) -> WriteOffRequest:
    """A branch manager's recommendation to write a defaulted loan off, with its recovery
    history attached; one open per loan (a partial unique index backs the check);
    audited. It moves no money: the board decides (write_off_decide)."""
    permission_require(staff, "write_off.recommend")
    today = as_of or business_today()
    reason_ = _required(reason, "reason", 2000)
    loan = lock_row(Loan, loan_id)
    if loan is None:
        db.session.rollback()
        raise RecoveryError(f"no loan {loan_id}")
    if loan.status not in LIVE_STATUSES or not loan.in_default:
        db.session.rollback()
        raise RecoveryError(
            f"loan {loan} is {loan.status}{'' if loan.in_default else ', not in default'}; "
            "only a loan in default is recommended for write-off"
        )
    waiting = _open_request(loan.id)
    if waiting is not None:
        db.session.rollback()
        raise RecoveryError(
            f"a write-off of loan {loan} recommended on "
            f"{business_date(waiting.recommended_at)} waits for the board's decision"
        )
    history = recovery_history(loan_id=loan.id, as_of=today)
    request = WriteOffRequest(
        loan_id=loan.id,
        status="recommended",
        reason=reason_,
        history=history,
        recommended_by_id=staff.id,
    )
    db.session.add(request)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise RecoveryError(
            f"a write-off of loan {loan_id} was recommended at the same moment; "
            "it waits for the board's decision"
        ) from None
    audit_record(
        actor=_actor(staff),
        action="write_off.recommend",
        object_type="loan",
        object_id=loan,
        after={"request_id": request.id, "owed": history["owed"]},
        note=reason_,
    )
    db.session.commit()
    return request


def write_off_decide(
    *,
    request_id: int,
    staff: StaffUser,
    decision: str,
    decision_date: date,
    minute_ref: str,
    as_of: date | None = None,
) -> WriteOffRequest:
    """Record the board's decision on a recommendation: approve or decline, its date and
    minute reference. Only an approval calls loan_write_off, in the same transaction: the
    decision and the write-off are recorded together or not at all; audited."""
    permission_require(staff, "write_off.decide")
    if decision not in WRITE_OFF_DECISIONS:
        raise RecoveryError("the board approves or declines")
    if decision == "approve":
        permission_require(staff, "loan.write_off")
    today = as_of or business_today()
    minute = _required(minute_ref, "board minute reference", 60)
    if decision_date > today:
        raise RecoveryError("the decision date cannot be in the future")
    found = db.session.get(WriteOffRequest, request_id)
    if found is None:
        raise RecoveryError(f"no write-off request {request_id}")
    # The loan's lock first, then the request's: the order write_off_recommend takes them.
    loan = lock_row(Loan, found.loan_id)
    request = lock_row(WriteOffRequest, request_id)
    assert loan is not None and request is not None
    if request.status != "recommended":
        db.session.rollback()
        raise RecoveryError(
            f"the board's decision on this request is recorded already: {request.status} "
            f"on {request.decision_date}"
        )
    # The business day the recommendation was made for (its history's date).
    recommended_on = date.fromisoformat((request.history or {}).get("as_of") or "1900-01-01")
    if decision_date < recommended_on:
        db.session.rollback()
        raise RecoveryError(f"it was recommended on {recommended_on}; the board decided after that")
    request.status = "approved" if decision == "approve" else "declined"
    request.decided_by_id = staff.id
    request.decision_date = decision_date
    request.minute_ref = minute
    audit_record(
        actor=_actor(staff),
        action=f"write_off.{decision}",
        object_type="loan",
        object_id=loan,
        before={"request_id": request.id, "status": "recommended"},
        after={
            "request_id": request.id,
            "status": request.status,
            "decision_date": decision_date,
            "minute_ref": minute,
        },
    )
    if decision == "decline":
        db.session.commit()
        return request
    try:
        # loan_write_off re-reads the loan under its lock, books the write-off and commits
        # the decision with it.
        loan_write_off(
            loan_id=loan.id,
            staff=staff,
            reason=f"{request.reason} (board minute {minute}, {decision_date})",
            value_date=today,
        )
    except SaccoError:
        db.session.rollback()
        raise
    return request
