"""The nightly guarantee jobs, in the close-of-business shape (`app.batch`).

- `guarantee-expiry`: a request not answered by its `expires_on` becomes "expired" and
  the applicant is told (one SMS per guarantee, keyed by it, so a rerun sends nothing).
- `guarantor-notices`: each guarantor of a loan in default is told once, with what their
  deposits hold for it (one SMS per guarantee, keyed `guarantor-default:<id>`; a loan
  that cures and relapses is not announced twice).

Both text members, and texts about a member's own money ignore quiet hours, so the
scheduler runs them in the morning after `loan-arrears` has set the default flags
(workers/schedule.py), not at midnight.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import String, cast, exists, literal, select

from app.batch import Batch, ChunkStats, batch_run
from app.extensions import db
from app.models import Guarantee, Loan, Member, SmsMessage
from app.models.types import utcnow
from app.money import ZERO
from app.selectors.guarantees import guarantees_held
from app.selectors.loans import LIVE_STATUSES
from app.services.audit import audit_record
from app.services.guarantees.requests import mask_name
from app.services.notifications import notify_guarantee_answer, notify_guarantor_default

NOTICE_KEY = "guarantor-default:"  # + the guarantee's id (notify_guarantor_default's key)


def guarantees_expiring_ids(as_of: date) -> list[int]:
    """Requests still waiting whose last day to answer was before `as_of`."""
    return list(
        db.session.scalars(
            select(Guarantee.id)
            .where(Guarantee.status == "requested", Guarantee.expires_on < as_of)
            .order_by(Guarantee.id)  # pragma: no mutate: batch_run sorts the ids itself
        )
    )


def guarantees_expire(guarantee_ids: Sequence[int], *, as_of: date) -> int:
    """Expire these requests if still waiting and past their day, in the caller's
    transaction (rows locked in id order; one answered meanwhile is left alone); the
    applicants are texted. How many expired."""
    rows = list(
        db.session.scalars(
            select(Guarantee)
            .where(
                Guarantee.id.in_(list(guarantee_ids)),
                Guarantee.status == "requested",
                Guarantee.expires_on < as_of,
            )
            .order_by(Guarantee.id)  # pragma: no mutate: lock order; an answer locks one
            .with_for_update()
            # The WHERE is checked again under the lock; a request changes only its status.
            .execution_options(populate_existing=True)  # pragma: no mutate
        )
    )
    if not rows:
        return 0
    loans = {
        loan.id: loan
        for loan in db.session.scalars(select(Loan).where(Loan.id.in_({g.loan_id for g in rows})))
    }
    people = {loan.member_id for loan in loans.values()} | {g.guarantor_id for g in rows}
    members = {m.id: m for m in db.session.scalars(select(Member).where(Member.id.in_(people)))}
    now = utcnow()
    for guarantee in rows:
        loan = loans[guarantee.loan_id]
        guarantee.status = "expired"
        guarantee.ended_at = now
        audit_record(
            actor="system",
            action="guarantee.expire",
            object_type="loan",
            object_id=loan.loan_no,
            before={"guarantee": guarantee.id, "status": "requested"},
            after={"status": "expired", "expires_on": guarantee.expires_on.isoformat()},
        )
        notify_guarantee_answer(
            applicant=members[loan.member_id],
            guarantor=mask_name(members[guarantee.guarantor_id].name),
            amount=guarantee.amount,  # pragma: no mutate: an expiry's text names no amount
            loan_no=loan.loan_no or "",  # pragma: no mutate: numbered when applied for
            answer="expired",
            key=str(guarantee.id),
        )
    return len(rows)


def _expiry_chunk(guarantee_ids: Sequence[int], as_of: date, stats: ChunkStats) -> None:
    expired = guarantees_expire(guarantee_ids, as_of=as_of)
    # Each attempt's counts start at zero (app/batch.py): `=` would do as well as `+=`.
    stats.records_updated += expired  # pragma: no mutate
    stats.notifications_sent += expired  # pragma: no mutate


GUARANTEE_EXPIRY = Batch("guarantee-expiry", guarantees_expiring_ids, _expiry_chunk, "guarantee")


def _unannounced() -> Any:
    """No default notice queued yet for the guarantee (the outbox's key is the record)."""
    key = literal(NOTICE_KEY) + cast(Guarantee.id, String)
    return ~exists().where(SmsMessage.idempotency_key == key)


def _defaulted_guarantees() -> Any:
    return (
        select(Guarantee)
        .join(Guarantee.loan)
        .where(
            Loan.in_default.is_(True),
            # A loan leaving the live statuses ends its accepted guarantees in the same
            # transaction (loans/_common.py's _transition; the reconciliation checks it):
            # belt and braces only.
            Loan.status.in_(LIVE_STATUSES),  # pragma: no mutate
            Guarantee.status == "accepted",
            _unannounced(),
        )
    )


def defaulted_guaranteed_loan_ids(as_of: date) -> list[int]:
    """Loans in default (as `loan-arrears` last set it) with a guarantor not yet told."""
    found = _defaulted_guarantees().with_only_columns(Loan.id).distinct()
    found = found.order_by(Loan.id)  # pragma: no mutate: batch_run sorts the ids itself
    return list(db.session.scalars(found))


def guarantors_notify(loan_ids: Sequence[int]) -> int:
    """Text each guarantor of these loans, still in default, not yet told, what their
    deposits hold for it (the exposure USSD shows them); how many were texted. A pledge
    that holds nothing any more (the principal is repaid) is left untold."""
    found = _defaulted_guarantees().where(Loan.id.in_(list(loan_ids)))
    # The order only makes the outbox's order repeatable; nothing reads it.
    rows = list(db.session.scalars(found.order_by(Guarantee.id)))  # pragma: no mutate
    if not rows:
        return 0
    guarantor_ids = sorted({g.guarantor_id for g in rows})
    members = {
        m.id: m for m in db.session.scalars(select(Member).where(Member.id.in_(guarantor_ids)))
    }
    # The one exposure rule, as the guarantor's own "loans I guarantee" reads it.
    held = {h.guarantee_id: h for gid in guarantor_ids for h in guarantees_held(gid)}
    sent = 0
    for guarantee in rows:
        pledge = held.get(guarantee.id)
        # Unreachable today: the payment that clears the principal clears every
        # installment before it (SPEC's allocation order) and closes the loan. Kept for a
        # rule that would leave a loan in default owing no principal.
        if pledge is None or pledge.exposure <= ZERO:  # pragma: no mutate
            continue  # pragma: no mutate
        notify_guarantor_default(
            guarantor=members[guarantee.guarantor_id],
            borrower=pledge.borrower_name,
            loan_no=pledge.loan_no,
            exposure=pledge.exposure,
            guarantee_id=guarantee.id,
        )
        sent += 1
    return sent


def _notices_chunk(loan_ids: Sequence[int], as_of: date, stats: ChunkStats) -> None:
    sent = guarantors_notify(loan_ids)
    stats.records_updated += sent  # pragma: no mutate: as in _expiry_chunk
    stats.notifications_sent += sent  # pragma: no mutate


GUARANTOR_NOTICES = Batch("guarantor-notices", defaulted_guaranteed_loan_ids, _notices_chunk)


# `stats` is the runner's JobStats (workers.runner): app/ never imports workers/.
def guarantee_expiry_job(*, as_of: date, stats: Any) -> None:
    """Requests past their answer-by date expire; each applicant is told once.
    records_scanned counts the requests found, records_updated those expired."""
    batch_run(GUARANTEE_EXPIRY, as_of=as_of, stats=stats)


def guarantor_notices_job(*, as_of: date, stats: Any) -> None:
    """Guarantors of loans in default are told once each, with their exposure.
    records_scanned counts the loans found, notifications_sent the guarantors texted."""
    batch_run(GUARANTOR_NOTICES, as_of=as_of, stats=stats)
