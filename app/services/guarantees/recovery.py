"""Recovery from guarantors after a default, and replacing a guarantor (SPEC "Guarantees").

Recovery is board-style, like the write-off workflow (app/services/recovery.py): a branch
manager proposes recovering a defaulted loan from its guarantors (`guarantee_recovery_
propose`), and a branch manager or compliance officer who did not propose it records the
board's decision (`guarantee_recovery_decide`). Only an approval moves money.

Decisions where the issue is silent:

- What is recovered: the loan's principal receivable only, never interest, fees or
  penalty. A guarantee pledges principal (its exposure falls as principal is repaid), so
  each guarantor pays at most their exposure at the moment of the decision, and all of
  them together at most the principal still owed (exposures above it, when pledges add up
  to more than the loan, are cut in proportion, to the cent below). The rest of the debt
  stays the borrower's.
- How: one journal entry (kind `guarantee_recovery`, key `guarantee_recovery:<id>`):
  each guarantor's savings (their deposits) debited, the principal receivable credited,
  and the same amount marked as principal paid on the schedule, oldest installment first
  (as loan_repay allocates principal), so the loan's receivables still equal its
  schedule. Not through loan_repay: it takes money from one account and pays penalty and
  interest first, which a guarantee does not cover.
- A guarantor short of deposits pays what they have free at most, counting the hold of
  this very guarantee as theirs to pay (deposits less every other hold): never an
  overdraft, never money another loan's guarantee holds. A guarantee that paid something
  becomes `recovered` (recovered_amount says what) and holds nothing more; one that could
  pay nothing stays accepted, so a later proposal can recover from it. A decision that
  would take nothing at all is refused in words and the proposal stays open.
- The approval is booked on the day it is recorded; the board's date is kept. An
  approval needs the loan still live and in default (as a write-off does); a decline
  does not. Requests waiting to replace a guarantor of the loan are cancelled by an
  approval (there is nothing left for them to replace).
- Days late and the default flag follow from the schedule at the next arrears run; a
  recovery that leaves nothing owed closes the loan at once (and releases the rest).
- A compromise agreement in force does not count a recovery from guarantors as one of
  its payments (it is not the member's money).
- Locks: the guarantors (members, by id), then the loan, then the proposal: the member
  lock is what every change to what deposits hold takes first.

Replacing a guarantor: staff (guarantee.manage) or the borrower ask another member to
take an accepted guarantee's place (`guarantee_substitute_request`, a request with
`replaces_id`, texted like any guarantee request); the new guarantor accepts under their
own lock out of free deposits (`guarantee_substitute_accept`, or says no:
`guarantee_substitute_decline`; a live loan's requests are not answerable by
guarantee_accept, which is for applications); and a branch manager
approves (`guarantee_substitute_approve`, guarantee.substitute): the old guarantee becomes
`replaced`, only if the loan's cover stays complete without it. Until then both hold.
"""

from __future__ import annotations

from datetime import date
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.clock import business_today
from app.extensions import db
from app.models import (
    Account,
    Guarantee,
    GuaranteeRecovery,
    Loan,
    Member,
    StaffUser,
)
from app.models.types import utcnow
from app.money import ZERO, MoneyError, money_input, round_money
from app.selectors.guarantees import (
    HOLDING_STATUSES,
    guarantee_exposure,
    loan_cover,
    member_deposits,
    principal_owed,
)
from app.selectors.loans import LIVE_STATUSES, current_installments, loan_debt
from app.services.audit import audit_record
from app.services.guarantees.requests import GuaranteeError, guarantee_ask, mask_name
from app.services.ledger import Line, credit, debit, journal_post, member_account
from app.services.locking import lock_row
from app.services.notifications import (
    notify_guarantee_answer,
    notify_guarantee_recovered,
)
from app.services.permissions import permission_require

RECOVERY_DECISIONS = ("approve", "decline")


class GuaranteeRecoveryError(GuaranteeError):
    """A recovery or replacement refused; the message says why. Nothing was written."""


def _actor(staff: StaffUser) -> str:
    return f"staff:{staff.email}"


def _text(value: str | None, what: str, limit: int) -> str:
    cleaned = (value or "").strip()
    if not cleaned:
        raise GuaranteeRecoveryError(f"the {what} is needed")
    if len(cleaned) > limit:
        raise GuaranteeRecoveryError(f"the {what} is at most {limit} characters")
    return cleaned


def _refuse(message: str) -> GuaranteeRecoveryError:
    """Roll back what the locks read, then refuse: nothing is written."""
    db.session.rollback()
    return GuaranteeRecoveryError(message)


def _accepted(loan_id: int) -> list[Guarantee]:
    return list(
        db.session.scalars(
            select(Guarantee)
            .where(Guarantee.loan_id == loan_id, Guarantee.status == "accepted")
            .order_by(Guarantee.id)
            .execution_options(populate_existing=True)
        )
    )


def _exposures(loan: Loan, guarantees: list[Guarantee]) -> tuple[Decimal, dict[int, Decimal]]:
    """The principal still owed and each guarantee's exposure now (the one rule)."""
    owed = principal_owed(loan.id)
    return owed, {
        g.id: guarantee_exposure(
            amount=g.amount, loan_status=loan.status, principal=loan.principal, outstanding=owed
        )
        for g in guarantees
    }


def open_guarantee_recovery(loan_id: int) -> GuaranteeRecovery | None:
    """The proposal waiting for the board's decision on this loan, if any."""
    return db.session.scalar(
        select(GuaranteeRecovery).where(
            GuaranteeRecovery.loan_id == loan_id, GuaranteeRecovery.status == "proposed"
        )
    )


# -- recovery ---------------------------------------------------------------------------------


def guarantee_recovery_propose(
    *, loan_id: int, staff: StaffUser, reason: str, as_of: date | None = None
) -> GuaranteeRecovery:
    """A branch manager proposes recovering a defaulted loan from its guarantors, with
    each guarantor's exposure now attached for the board; one open per loan (a partial
    unique index backs the check); audited. It moves no money."""
    permission_require(staff, "guarantee.recover")
    today = as_of or business_today()
    reason_ = _text(reason, "reason", 2000)
    loan = lock_row(Loan, loan_id)
    if loan is None:
        raise _refuse(f"no loan {loan_id}")
    if loan.status not in LIVE_STATUSES or not loan.in_default:
        raise _refuse(
            f"loan {loan} is {loan.status}{'' if loan.in_default else ', not in default'}; "
            "only a loan in default is recovered from its guarantors"
        )
    waiting = open_guarantee_recovery(loan.id)
    if waiting is not None:
        raise _refuse(
            f"a recovery from the guarantors of loan {loan} proposed on {waiting.proposed_on} "
            "waits for the board's decision"
        )
    guarantees = _accepted(loan.id)
    if not guarantees:
        raise _refuse(f"loan {loan} has no guarantor to recover from")
    owed, exposure = _exposures(loan, guarantees)
    if owed <= 0:
        raise _refuse(f"loan {loan} owes no principal; guarantors cover principal only")
    snapshot = {
        "as_of": today.isoformat(),
        "principal_owed": str(owed),
        "guarantors": [
            {
                "guarantee_id": g.id,
                "member_no": g.guarantor.member_no,
                "name": g.guarantor.name,
                "amount": str(g.amount),
                "exposure": str(exposure[g.id]),
            }
            for g in guarantees
        ],
    }
    proposal = GuaranteeRecovery(
        loan_id=loan.id,
        status="proposed",
        reason=reason_,
        exposures=snapshot,
        proposed_by_id=staff.id,
        proposed_on=today,
    )
    db.session.add(proposal)
    try:
        db.session.flush()
    except IntegrityError:
        raise _refuse(
            f"a recovery from the guarantors of loan {loan} was proposed at the same moment; "
            "it waits for the board's decision"
        ) from None
    audit_record(
        actor=_actor(staff),
        action="guarantee.recovery_propose",
        object_type="loan",
        object_id=loan,
        after={
            "recovery_id": proposal.id,
            "principal_owed": owed,
            "exposure": sum(exposure.values(), ZERO),
        },
        note=reason_,
    )
    db.session.commit()
    return proposal


def _shares(
    loan: Loan, guarantees: list[Guarantee]
) -> tuple[Decimal, dict[int, Decimal], dict[int, Decimal]]:
    """Under the locks: the principal owed, each guarantee's exposure, and what each
    guarantor pays (its exposure, cut in proportion if they add up to more than the
    principal owed, and at most what the guarantor has free besides this hold)."""
    owed, exposure = _exposures(loan, guarantees)
    total = sum(exposure.values(), ZERO)  # pragma: no mutate: an int 0 compares the same
    take: dict[int, Decimal] = {}
    for g in guarantees:
        # Owing no principal, every exposure is nothing already (and the decision refuses).
        due = exposure[g.id]
        if total > owed > 0:
            due = round_money(due * owed / total, rounding=ROUND_FLOOR)
        held = member_deposits(g.guarantor_id)
        # This guarantee's own hold is what it pays from; every other hold stays.
        available = max(ZERO, held.deposits - (held.guaranteed - exposure[g.id]) - held.own)
        take[g.id] = min(due, available)
    return owed, exposure, take


def _pay_principal(loan: Loan, amount: Decimal, value_date: date) -> None:
    """Mark `amount` of principal paid on the live schedule, oldest installment first (the
    receivable is credited by the same amount in the caller's entry)."""
    remaining = amount
    # lock_row(Loan) has reloaded the installments already (selectin); this says so here.
    for row in current_installments(loan.id, fresh=True):  # pragma: no mutate
        owed = row.principal_due - row.principal_paid
        part = min(owed, remaining)
        if part > 0:
            row.principal_paid += part
            remaining -= part
        if row.outstanding == 0 and row.paid_on is None:
            row.paid_on = value_date
        if remaining == 0:
            break  # pragma: no mutate: `return` skips only the assert below
    assert remaining == 0, "the schedule owes less principal than its receivable"


def _lock_guarantors_then_loan(loan_id: int) -> tuple[Loan, list[Guarantee]]:
    """The guarantors' member locks (by id), then the loan's. The guarantors are read
    before their locks, so they are read again under the loan's: if they changed meanwhile
    (a replacement approved), the locks are taken again for the new set."""
    for _ in range(3):
        ids = sorted(
            set(
                db.session.scalars(
                    select(Guarantee.guarantor_id).where(
                        Guarantee.loan_id == loan_id, Guarantee.status == "accepted"
                    )
                )
            )
        )
        for member_id in ids:
            lock_row(Member, member_id)
        loan = lock_row(Loan, loan_id)
        if loan is None:
            raise _refuse(f"no loan {loan_id}")
        guarantees = _accepted(loan_id)
        if {g.guarantor_id for g in guarantees} <= set(ids):
            return loan, guarantees
        db.session.rollback()
    raise _refuse(f"the guarantors of loan {loan_id} keep changing; try again")


def guarantee_recovery_decide(
    *,
    recovery_id: int,
    staff: StaffUser,
    decision: str,
    decision_date: date,
    minute_ref: str,
    as_of: date | None = None,
) -> GuaranteeRecovery:
    """Record the board's decision on a proposal: approve or decline, with its date and
    minute reference, by someone other than who proposed it. Only an approval debits the
    guarantors' deposits (one journal entry, in proportion to their exposure now), ends
    their guarantees as recovered and texts each what was taken; audited. Commits."""
    permission_require(staff, "guarantee.recovery_decide")
    if decision not in RECOVERY_DECISIONS:
        raise GuaranteeRecoveryError("the board approves or declines")
    today = as_of or business_today()
    minute = _text(minute_ref, "board minute reference", 60)
    if decision_date > today:
        raise GuaranteeRecoveryError("the decision date cannot be in the future")
    found = db.session.get(GuaranteeRecovery, recovery_id)
    if found is None:
        raise GuaranteeRecoveryError(f"no recovery proposal {recovery_id}")
    loan, guarantees = _lock_guarantors_then_loan(found.loan_id)
    proposal = lock_row(GuaranteeRecovery, recovery_id)
    assert proposal is not None  # proposals are never deleted
    if proposal.status != "proposed":
        raise _refuse(
            f"the board's decision on this proposal is recorded already: {proposal.status} "
            f"on {proposal.decision_date}"
        )
    if proposal.proposed_by_id == staff.id:
        raise _refuse("the decision is recorded by someone other than who proposed it")
    if decision_date < proposal.proposed_on:
        raise _refuse(f"it was proposed on {proposal.proposed_on}; the board decided after that")
    proposal.decided_by_id = staff.id
    proposal.decided_at = utcnow()
    proposal.decision_date = decision_date
    proposal.minute_ref = minute
    if decision == "decline":
        proposal.status = "declined"
        _audit_decision(staff, loan, proposal)
        db.session.commit()
        return proposal
    if loan.status not in LIVE_STATUSES or not loan.in_default:
        raise _refuse(
            f"loan {loan} is {loan.status}{'' if loan.in_default else ', not in default'} "
            "now; only a loan in default is recovered from its guarantors"
        )
    owed, exposure, take = _shares(loan, guarantees)
    total = sum(take.values(), ZERO)
    if owed <= 0:
        raise _refuse(f"loan {loan} owes no principal now; guarantors cover principal only")
    if total <= 0:
        raise _refuse(
            f"nothing can be recovered: loan {loan} owes KES {owed:,.2f} of principal and its "
            "guarantors have no free deposits"
        )
    paying = [g for g in guarantees if take[g.id] > 0]
    lines: list[Line] = [debit(member_account(g.guarantor, "savings"), take[g.id]) for g in paying]
    receivable = db.session.scalar(
        select(Account).where(Account.loan_id == loan.id, Account.kind == "loan_principal")
    )
    assert receivable is not None  # owed > 0 means the loan was paid out
    lines.append(credit(receivable, total))
    entry = journal_post(
        kind="guarantee_recovery",
        lines=lines,
        value_date=today,
        description=f"Recovery from guarantors {loan.loan_no} (board minute {minute})",
        idempotency_key=f"guarantee_recovery:{proposal.id}",
        actor=_actor(staff),
        member_id=loan.member_id,
        loan_id=loan.id,
    )
    _pay_principal(loan, total, today)
    now = utcnow()
    for g in paying:
        g.status = "recovered"
        g.recovered_amount = take[g.id]
        g.ended_at = now
        notify_guarantee_recovered(
            guarantor=g.guarantor,
            applicant=loan.member.name,
            amount=take[g.id],
            loan_no=loan.loan_no or "",
            key=str(g.id),
        )
    proposal.status = "approved"
    proposal.entry_id = entry.id
    proposal.recovered_total = total
    proposal.recovered = {
        "principal_owed": str(owed),
        "guarantors": [
            {
                "guarantee_id": g.id,
                "member_no": g.guarantor.member_no,
                "exposure": str(exposure[g.id]),
                "recovered": str(take[g.id]),
            }
            for g in guarantees
        ],
    }
    _cancel_replacements(loan, staff)
    _audit_decision(staff, loan, proposal)
    if loan_debt(loan_id=loan.id).total == 0:
        _close(loan, staff, today, proposal)
    db.session.commit()
    return proposal


def _audit_decision(staff: StaffUser, loan: Loan, proposal: GuaranteeRecovery) -> None:
    after: dict[str, Any] = {
        "recovery_id": proposal.id,
        "status": proposal.status,
        "decision_date": proposal.decision_date,
        "minute_ref": proposal.minute_ref,
    }
    if proposal.status == "approved":
        after["recovered"] = proposal.recovered_total
        after["by_guarantee"] = {
            row["guarantee_id"]: row["recovered"]
            for row in (proposal.recovered or {}).get("guarantors", [])
        }
    audit_record(
        actor=_actor(staff),
        action=f"guarantee.recovery_{'approve' if proposal.status == 'approved' else 'decline'}",
        object_type="loan",
        object_id=loan,
        before={"recovery_id": proposal.id, "status": "proposed"},
        after=after,
    )


def _cancel_replacements(loan: Loan, staff: StaffUser) -> None:
    """Requests to replace a guarantor of this loan end with the recovery. One being
    answered at this instant holds its row and waits for the loan's lock we hold: it is
    skipped, not waited for (that would deadlock), and its answer is refused once we
    commit (the guarantee it replaces has ended); the expiry job ends it."""
    for waiting in db.session.scalars(
        select(Guarantee)
        .where(
            Guarantee.loan_id == loan.id,
            Guarantee.status == "requested",
            Guarantee.replaces_id.is_not(None),
        )
        .with_for_update(skip_locked=True)
        # The WHERE is checked again under the lock, and a request changes only its status.
        .execution_options(populate_existing=True)  # pragma: no mutate
    ):
        waiting.status = "cancelled"
        waiting.ended_at = utcnow()
        audit_record(
            actor=_actor(staff),
            action="guarantee.cancel",
            object_type="loan",
            object_id=loan,
            before={"guarantee": waiting.id, "status": "requested"},
            after={"status": "cancelled"},
            note="the guarantors were recovered from",
        )


def _close(loan: Loan, staff: StaffUser, today: date, proposal: GuaranteeRecovery) -> None:
    """Nothing left owing: the loan closes as a paid loan does (its remaining guarantees
    released by the transition)."""
    # Imported here: the loans package imports the guarantees package at its import.
    from app.services.loans._common import _transition

    _transition(loan, "close", staff, f"paid in full by recovery {proposal.id} from guarantors")
    loan.closed_on = today
    loan.days_past_due, loan.aging_bucket, loan.in_default = 0, "current", False


# -- replacing a guarantor ---------------------------------------------------------------------


def guarantee_substitute_request(
    *,
    guarantee_id: int,
    guarantor_id: int,
    by: StaffUser | Member,
    amount: object | None = None,
    today: date | None = None,
) -> Guarantee:
    """Ask another member to take an accepted guarantee's place (for the same amount
    unless another is given); the rules of any guarantee request, on a loan paid out or
    waiting. `by`: staff (guarantee.manage) or the borrower. Texted like any request.
    Commits."""
    if isinstance(by, StaffUser):
        permission_require(by, "guarantee.manage")
        actor = _actor(by)
    else:
        actor = f"member:{by.member_no}"
    found = db.session.get(Guarantee, guarantee_id)
    if found is None:
        raise GuaranteeRecoveryError(f"no guarantee {guarantee_id}")
    loan = lock_row(Loan, found.loan_id)
    old = db.session.get(Guarantee, guarantee_id, populate_existing=True)
    assert loan is not None and old is not None  # pragma: no mutate: neither is ever deleted
    if isinstance(by, Member) and by.id != loan.member_id:
        raise _refuse("only the borrower or staff ask for a guarantor to be replaced")
    if old.status != "accepted":
        raise _refuse(f"this guarantee is {old.status}; only an accepted one is replaced")
    if loan.status not in HOLDING_STATUSES:
        raise _refuse(f"loan {loan} is {loan.status}: its guarantees hold nothing")
    if open_guarantee_recovery(loan.id) is not None:
        raise _refuse(f"a recovery from the guarantors of loan {loan} waits for the board")
    try:
        value = old.amount if amount in (None, "") else money_input(amount)
    except MoneyError as exc:
        raise _refuse(str(exc)) from None
    waiting = db.session.scalar(
        select(Guarantee.id).where(
            Guarantee.replaces_id == old.id, Guarantee.status.in_(("requested", "accepted"))
        )
    )
    if waiting is not None:
        raise _refuse("a replacement for this guarantor has been asked already")
    try:
        new = guarantee_ask(
            loan,
            guarantor_id,
            value,
            actor,
            today or business_today(),
            action="guarantee.substitute_request",
            replaces=old,
        )
    except GuaranteeError as exc:  # in the recovery's own kind of refusal
        raise _refuse(str(exc)) from None
    db.session.commit()
    return new


def _replacement_answered(
    guarantee_id: int, guarantor_id: int, today: date | None
) -> tuple[Member, Guarantee, Loan]:
    """A replacement request being answered, locked guarantor first, then the request and
    its loan: still the guarantor's to answer, and in time."""
    day = today or business_today()
    guarantor = lock_row(Member, guarantor_id)
    if guarantor is None:
        raise _refuse("no such member")
    guarantee = lock_row(Guarantee, guarantee_id)
    if guarantee is None or guarantee.guarantor_id != guarantor_id or guarantee.replaces_id is None:
        raise _refuse("no such request to replace a guarantor for you")
    if guarantee.status != "requested":
        raise _refuse(f"this request was {guarantee.status} already")
    if guarantee.expires_on < day:
        raise _refuse("this request has expired")
    loan = lock_row(Loan, guarantee.loan_id)
    assert loan is not None  # a guarantee's loan is never deleted
    return guarantor, guarantee, loan


def guarantee_substitute_accept(
    *, guarantee_id: int, guarantor_id: int, via: str, today: date | None = None
) -> Guarantee:
    """The new guarantor pledges in the old one's place: under their own lock, out of
    free deposits (what the pledge would hold now: its exposure on a paid-out loan),
    refused in words otherwise; the borrower is told. Commits."""
    guarantor, guarantee, loan = _replacement_answered(guarantee_id, guarantor_id, today)
    if loan.status not in HOLDING_STATUSES:
        raise _refuse(f"loan {loan.loan_no} is {loan.status}: nothing to guarantee")
    old = db.session.get(Guarantee, guarantee.replaces_id, populate_existing=True)
    if old is None or old.status != "accepted":
        raise _refuse("the guarantee this one replaces has ended: nothing to replace")
    hold = guarantee_exposure(
        amount=guarantee.amount,
        loan_status=loan.status,
        principal=loan.principal,
        outstanding=principal_owed(loan.id),
    )
    free = member_deposits(guarantor_id).free
    if hold > free:
        raise _refuse(
            f"your free deposits are KES {free:,.0f}, less than the KES {hold:,.0f} "
            "this guarantee would hold"
        )
    guarantee.status = "accepted"
    guarantee.answered_at = utcnow()
    guarantee.answered_via = via
    audit_record(
        actor=f"member:{guarantor.member_no}",
        action="guarantee.accept",
        object_type="loan",
        object_id=loan,
        after={
            "guarantee": guarantee.id,
            "status": "accepted",
            "amount": guarantee.amount,
            "replaces": old.id,
            "via": via,
        },
    )
    notify_guarantee_answer(
        applicant=loan.member,
        guarantor=mask_name(guarantor.name),
        amount=guarantee.amount,
        loan_no=loan.loan_no or "",  # pragma: no mutate: a loan is numbered when applied for
        answer="accepted",
        key=str(guarantee.id),
    )
    db.session.commit()
    return guarantee


def guarantee_substitute_decline(
    *, guarantee_id: int, guarantor_id: int, via: str, today: date | None = None
) -> Guarantee:
    """The member asked to replace a guarantor says no; the borrower is told, the old
    guarantee stands. Commits."""
    guarantor, guarantee, loan = _replacement_answered(guarantee_id, guarantor_id, today)
    guarantee.status = "declined"
    guarantee.answered_at = guarantee.ended_at = utcnow()
    guarantee.answered_via = via
    audit_record(
        actor=f"member:{guarantor.member_no}",
        action="guarantee.decline",
        object_type="loan",
        object_id=loan,
        after={"guarantee": guarantee.id, "status": "declined", "replaces": guarantee.replaces_id},
    )
    notify_guarantee_answer(
        applicant=loan.member,
        guarantor=mask_name(guarantor.name),
        amount=guarantee.amount,  # pragma: no mutate: a decline's text names no amount
        loan_no=loan.loan_no or "",  # pragma: no mutate: a loan is numbered when applied for
        answer="declined",
        key=str(guarantee.id),
    )
    db.session.commit()
    return guarantee


def guarantee_substitute_approve(*, guarantee_id: int, staff: StaffUser) -> Guarantee:
    """A branch manager approves an accepted replacement: the guarantee it replaces
    becomes `replaced` and holds nothing more, only if the loan's cover stays complete
    without it. Under the loan's lock; audited. Commits; returns the replaced guarantee."""
    permission_require(staff, "guarantee.substitute")
    found = db.session.get(Guarantee, guarantee_id)
    if found is None or found.replaces_id is None:
        raise GuaranteeRecoveryError(f"no replacement guarantee {guarantee_id}")
    loan = lock_row(Loan, found.loan_id)
    # Re-read under the loan's lock: what another worker changed before it is seen here
    # (the PostgreSQL races in tests/test_guarantee_recovery.py); one session cannot show
    # it, and the asserts only narrow types.
    new = db.session.get(Guarantee, guarantee_id, populate_existing=True)  # pragma: no mutate
    assert loan is not None and new is not None and new.replaces_id is not None  # pragma: no mutate
    old = db.session.get(Guarantee, new.replaces_id, populate_existing=True)  # pragma: no mutate
    assert old is not None
    if new.status != "accepted":
        raise _refuse(
            f"the new guarantor has not accepted (the request is {new.status}); "
            "a replacement is approved once they have"
        )
    if old.status != "accepted":
        raise _refuse(f"the guarantee it replaces is {old.status} already")
    if loan.status not in HOLDING_STATUSES:
        # Unreachable while both are accepted (a loan that ends releases its guarantees in
        # the same transaction); kept against a status added without that.
        raise _refuse(
            f"loan {loan} is {loan.status}: its guarantees hold nothing"  # pragma: no mutate
        )
    cover = loan_cover(loan)
    covered = cover.covered - old.amount
    guarantors = cover.guarantors - 1
    if covered < cover.required or guarantors < cover.min_guarantors:
        raise _refuse(
            f"without this guarantor loan {loan} would not be secured: KES {covered:,.0f} "
            f"of KES {cover.required:,.0f} covered, {guarantors} of "
            f"{cover.min_guarantors} guarantors"
        )
    old.status = "replaced"
    old.ended_at = utcnow()
    audit_record(
        actor=_actor(staff),
        action="guarantee.replace",
        object_type="loan",
        object_id=loan,
        before={"guarantee": old.id, "status": "accepted", "guarantor": old.guarantor.member_no},
        after={
            "status": "replaced",
            "replaced_by": new.id,
            "guarantor": new.guarantor.member_no,
            "amount": new.amount,
        },
    )
    db.session.commit()
    return old


# -- reconciliation ----------------------------------------------------------------------------
