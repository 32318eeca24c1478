"""Loan-loss provisioning: every live loan classed by days in arrears, the provision its
class requires, the interest of a non-performing loan held in suspense instead of income,
and the month end's one entry for each change.

The regulation: the Sacco Societies (Deposit-Taking Sacco Business) Regulations, 2010
(L.N. 95 of 2010), Part VII "Risk Classification of Assets and Provisioning", regs. 40-44
and Form 4 (the return): five classes, performing, watch, substandard, doubtful and loss,
with minimum provisions of 1, 5, 25, 50 and 100 percent. The class bands and rates are
settings (app.config PROVISION_*), those figures the defaults; see app.config for where
the day bands come from.

Decisions (SPEC "Books"):
- Days in arrears count from the oldest unpaid installment due before the day, the daily
  arrears rule's own count (`arrears_decide`), read from the schedule, so a month end is
  classed right whether or not that night's arrears job has run.
- The provision is on the principal outstanding (the schedule's, as PAR reads it).
- A restructured loan is classed no better than PROVISION_RESTRUCTURED_MIN_CLASS, nor
  better than it was at the last month end: a restructure never upgrades a loan by
  itself (Form 4 reports restructured loans apart, at their retained class).
- Interest is income in full at disbursement here (app.services.loans.disburse). For a
  non-performing loan (substandard, doubtful, loss) the interest and penalties still
  receivable are not income until paid: they are moved to interest in suspense
  (Dr GL-INCOME-INTEREST / GL-INCOME-PENALTY, Cr GL-INTEREST-SUSPENSE) and released back at
  a later month end when the loan performs again, pays, is restructured, closed or
  written off (the write-off expenses its receivables in full; the release puts back the
  income the suspense took, so the year's result loses only the principal).
- Each month end posts only the change: required provision minus the provision account's
  balance on that day, and the suspended interest (and penalties) minus what the suspense
  holds for each. Keyed by the day, so a rerun posts nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import Date, case, delete, func, insert, select, type_coerce

from app.batch import Batch, ChunkStats, batch_run
from app.errors import SaccoError
from app.extensions import db
from app.models import Installment, JournalEntry, JournalLine, Loan, LoanProduct, Member
from app.models.books import LoanProvision, ProvisionRun
from app.models.types import Money
from app.money import ZERO, round_money
from app.selectors.loans import LIVE_STATUSES
from app.services.ledger import (
    DuplicatePosting,
    Line,
    gl_account,
    journal_post,
    period_guard,
)

JOB_NAME = "loan-loss-provision"
# Best first: a class's index is how bad it is.
PROVISION_CLASSES = ("performing", "watch", "substandard", "doubtful", "loss")
NON_PERFORMING = frozenset({"substandard", "doubtful", "loss"})
PROVISION_KIND = "loan_loss_provision"
SUSPENSE_KIND = "interest_suspense"


class ProvisionError(SaccoError):
    pass


@dataclass(frozen=True)
class ClassBand:
    name: str
    from_days: int  # the first day in arrears of the class
    rate: Decimal  # percent of the principal outstanding


@dataclass(frozen=True)
class ProvisionRow:
    loan_id: int
    member_no: str | None
    product_code: str
    days_in_arrears: int
    risk_class: str
    restructured: bool
    principal: Decimal
    rate: Decimal
    provision: Decimal
    interest_suspended: Decimal  # interest and penalties: both, when non-performing
    penalty_suspended: Decimal  # the penalties' part of it


def provision_bands() -> list[ClassBand]:
    """The classes from the settings, best first (performing from day 0)."""
    s = current_app.config["SETTINGS"]
    days = [0] + [getattr(s, f"PROVISION_{c.upper()}_DAYS") for c in PROVISION_CLASSES[1:]]
    return [
        ClassBand(name, start, Decimal(getattr(s, f"PROVISION_{name.upper()}_PERCENT")))
        for name, start in zip(PROVISION_CLASSES, days, strict=True)
    ]


def risk_class_for(days_in_arrears: int, bands: Sequence[ClassBand]) -> str:
    """The class a loan this many days in arrears falls in."""
    found = bands[0].name
    for band in bands:
        if days_in_arrears >= band.from_days:
            found = band.name
    return found


def _worse(a: str, b: str) -> str:
    return max(a, b, key=PROVISION_CLASSES.index)


def _classify(loan_ids: Sequence[int], as_of: date) -> list[ProvisionRow]:
    """The rows of these loans (the live ones among them) for `as_of`: three set queries."""
    if not loan_ids:
        return []
    bands = provision_bands()
    rate_of = {band.name: band.rate for band in bands}
    floor = current_app.config["SETTINGS"].PROVISION_RESTRUCTURED_MIN_CLASS.lower()
    loans = db.session.execute(
        select(Loan.id, Loan.status, Member.member_no, LoanProduct.code)
        .join(Member, Member.id == Loan.member_id)
        .join(LoanProduct, LoanProduct.id == Loan.product_id)
        .where(Loan.id.in_(list(loan_ids)), Loan.status.in_(LIVE_STATUSES))
        .order_by(Loan.id)
    ).all()
    if not loans:
        return []
    ids = [loan.id for loan in loans]
    overdue = (Installment.paid_on.is_(None)) & (Installment.due_date < as_of)
    owed = {
        row.loan_id: row
        for row in db.session.execute(
            select(
                Installment.loan_id,
                type_coerce(
                    func.sum(Installment.principal_due - Installment.principal_paid), Money()
                ).label("principal"),
                type_coerce(
                    func.sum(Installment.interest_due - Installment.interest_paid), Money()
                ).label("interest"),
                type_coerce(
                    func.sum(Installment.penalty_due - Installment.penalty_paid), Money()
                ).label("penalty"),
                type_coerce(func.min(case((overdue, Installment.due_date))), Date()).label(
                    "oldest"
                ),
            )
            .where(Installment.loan_id.in_(ids), Installment.superseded.is_(False))
            .group_by(Installment.loan_id)
        )
    }
    # The class each restructured loan had at the last month end before this one.
    before: dict[int, str] = {}
    restructured = [loan.id for loan in loans if loan.status == "restructured"]
    if restructured:
        for loan_id, risk_class in db.session.execute(
            select(LoanProvision.loan_id, LoanProvision.risk_class)
            .where(LoanProvision.loan_id.in_(restructured), LoanProvision.as_of < as_of)
            .order_by(LoanProvision.as_of)
        ):
            before[loan_id] = risk_class
    rows = []
    for loan in loans:
        o = owed.get(loan.id)
        principal = (o.principal if o else None) or ZERO
        interest = (o.interest if o else None) or ZERO
        penalty = (o.penalty if o else None) or ZERO
        oldest = o.oldest if o else None
        dpd = (as_of - oldest).days if oldest is not None else 0
        risk = risk_class_for(dpd, bands)
        is_restructured = loan.status == "restructured"
        if is_restructured:
            risk = _worse(_worse(risk, floor), before.get(loan.id, "performing"))
        rate = rate_of[risk]
        suspended = risk in NON_PERFORMING
        rows.append(
            ProvisionRow(
                loan_id=loan.id,
                member_no=loan.member_no,
                product_code=loan.code,
                days_in_arrears=dpd,
                risk_class=risk,
                restructured=is_restructured,
                principal=principal,
                rate=rate,
                provision=round_money(max(principal, ZERO) * rate / 100),
                interest_suspended=max(interest, ZERO) + max(penalty, ZERO) if suspended else ZERO,
                penalty_suspended=max(penalty, ZERO) if suspended else ZERO,
            )
        )
    return rows


def live_loan_ids(as_of: date) -> list[int]:
    """The provisioning run's loans: every live loan (disbursed and still owing)."""
    return list(
        db.session.scalars(select(Loan.id).where(Loan.status.in_(LIVE_STATUSES)).order_by(Loan.id))
    )


def provision_classify(as_of: date) -> list[ProvisionRow]:
    """Every live loan's class, provision and interest suspended for `as_of`; writes
    nothing (the run's preview, and what the risk classification return reads)."""
    ids = live_loan_ids(as_of)
    size = 500
    rows: list[ProvisionRow] = []
    for start in range(0, len(ids), size):
        rows += _classify(ids[start : start + size], as_of)
    return rows


def _provision_chunk(loan_ids: Sequence[int], as_of: date, stats: ChunkStats) -> None:
    """Compute and store the chunk's LoanProvision rows for `as_of` (replacing any)."""
    rows = _classify(loan_ids, as_of)
    db.session.execute(
        delete(LoanProvision).where(
            LoanProvision.loan_id.in_(list(loan_ids)), LoanProvision.as_of == as_of
        )
    )
    if rows:
        db.session.execute(
            insert(LoanProvision),
            [
                dict(
                    loan_id=r.loan_id,
                    as_of=as_of,
                    days_in_arrears=r.days_in_arrears,
                    risk_class=r.risk_class,
                    restructured=r.restructured,
                    principal=r.principal,
                    rate=r.rate,
                    provision=r.provision,
                    interest_suspended=r.interest_suspended,
                    penalty_suspended=r.penalty_suspended,
                )
                for r in rows
            ],
        )
    stats.records_updated += len(rows)


PROVISION = Batch(JOB_NAME, live_loan_ids, _provision_chunk)


def _gl_movement(code: str, as_of: date, *, kind: str | None = None) -> Decimal:
    """Debit-positive sum of an account's lines with value dates up to `as_of`, optionally
    only those of entries of `kind`."""
    stmt = (
        select(type_coerce(func.sum(JournalLine.amount), Money()))
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .where(JournalLine.account_id == gl_account(code).id, JournalEntry.value_date <= as_of)
    )
    if kind is not None:
        stmt = stmt.where(JournalEntry.kind == kind)
    return db.session.scalar(stmt) or ZERO


def _post(
    kind: str, key: str, as_of: date, actor: str, lines: list[Line], words: str
) -> int | None:
    lines = [line for line in lines if line.amount != 0]
    if not lines:
        return None
    return journal_post(
        kind=kind,
        lines=lines,
        value_date=as_of,
        description=words,
        idempotency_key=key,
        actor=actor,
    ).id


def provision_run(as_of: date, actor: str = "system", *, stats: Any = None) -> ProvisionRun:
    """The month end's provisioning for `as_of`: every live loan's LoanProvision row (chunks
    in the close-of-business shape), then one entry for the change in required provision
    and one for the change in interest suspended, and the ProvisionRun. Run it again for
    the same day: the run already made comes back and nothing is posted. Refused
    (PeriodClosed) when `as_of` is in a closed period, before anything is written."""
    done = db.session.scalar(select(ProvisionRun).where(ProvisionRun.as_of == as_of))
    if done is not None:
        return done
    period_guard([as_of])
    db.session.commit()  # end the guard's read: the chunks commit one by one
    counts = stats if stats is not None else ChunkStats()
    errors_before = len(getattr(counts, "errors", []))
    # Rows left by an attempt that failed before posting are recomputed, never summed.
    db.session.execute(delete(LoanProvision).where(LoanProvision.as_of == as_of))
    db.session.commit()
    batch_run(PROVISION, as_of=as_of, stats=counts)
    errors = getattr(counts, "errors", [])[errors_before:]
    if errors:
        # A loan left out would understate the provision: post nothing until all are in.
        raise ProvisionError(f"provisioning for {as_of} not posted: {'; '.join(errors[:5])}")
    required, suspended, penalties = db.session.execute(
        select(
            type_coerce(func.coalesce(func.sum(LoanProvision.provision), 0), Money()),
            type_coerce(func.coalesce(func.sum(LoanProvision.interest_suspended), 0), Money()),
            type_coerce(func.coalesce(func.sum(LoanProvision.penalty_suspended), 0), Money()),
        ).where(LoanProvision.as_of == as_of)
    ).one()
    required, suspended, penalties = required or ZERO, suspended or ZERO, penalties or ZERO
    day = as_of.isoformat()
    try:
        # The provision account is credit-normal: its balance is minus its movement.
        held = -_gl_movement("GL-LOAN-LOSS-PROVISION", as_of)
        change = required - held
        provision_entry = _post(
            PROVISION_KIND,
            f"loan-loss-provision:{day}",
            as_of,
            actor,
            [
                Line(gl_account("GL-PROVISION-EXPENSE"), change),
                Line(gl_account("GL-LOAN-LOSS-PROVISION"), -change),
            ],
            f"Loan-loss provision to {day}: required {required}",
        )
        # What the suspense holds of each income, from its own entries' lines.
        held_interest = _gl_movement("GL-INCOME-INTEREST", as_of, kind=SUSPENSE_KIND)
        held_penalty = _gl_movement("GL-INCOME-PENALTY", as_of, kind=SUSPENSE_KIND)
        to_interest = (suspended - penalties) - held_interest
        to_penalty = penalties - held_penalty
        suspense_entry = _post(
            SUSPENSE_KIND,
            f"interest-suspense:{day}",
            as_of,
            actor,
            [
                Line(gl_account("GL-INCOME-INTEREST"), to_interest),
                Line(gl_account("GL-INCOME-PENALTY"), to_penalty),
                Line(gl_account("GL-INTEREST-SUSPENSE"), -(to_interest + to_penalty)),
            ],
            f"Interest on non-performing loans in suspense to {day}: {suspended}",
        )
        run = ProvisionRun(
            as_of=as_of,
            required=required,
            suspended=suspended,
            provision_entry_id=provision_entry,
            suspense_entry_id=suspense_entry,
        )
        db.session.add(run)
        db.session.commit()
    except DuplicatePosting:
        # Another run for the same day posted first: its run is the answer.
        db.session.rollback()
        done = db.session.scalar(select(ProvisionRun).where(ProvisionRun.as_of == as_of))
        if done is None:
            raise
        return done
    return run


def month_end_for(as_of: date) -> date | None:
    """The month end a nightly run for `as_of` provisions: the day before when `as_of` is
    the 1st (the scheduler runs at 01:20 of the new day, so the month's last day is whole:
    its payments in, its arrears counted); None on any other day, the last one included,
    whose run would come before that day's payments."""
    if as_of.day == 1:
        return as_of - timedelta(days=1)
    return None


# `stats` is the runner's JobStats (workers.runner): app/ never imports workers/.
def loan_loss_provision_job(*, as_of: date, stats: Any) -> None:
    """Nightly; acts on the 1st, for the month that ended the day before, and only once a
    month end: records_scanned counts the live loans, records_updated their
    rows; nothing on other days."""
    month_end = month_end_for(as_of)
    if month_end is None:
        return
    if db.session.scalar(select(ProvisionRun.id).where(ProvisionRun.as_of == month_end)):
        return
    try:
        provision_run(month_end, "system", stats=stats)
    except SaccoError as exc:  # ProvisionError, or PeriodClosed: the month is closed
        db.session.rollback()
        stats.error(str(exc))
