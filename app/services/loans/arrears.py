"""A loan falling behind: the penalty rule and its charge and reversal, and the daily arrears
rule (days past due, aging bucket, default, penalties), for one loan or a chunk of the book."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import case, func, select, type_coerce
from sqlalchemy.orm import lazyload

from app.batch import Batch, ChunkStats
from app.extensions import db
from app.models import Account, Installment, Loan, LoanProduct, StaffUser
from app.models.types import Money
from app.money import ZERO, round_money
from app.selectors.loans import (
    LIVE_STATUSES,
    aging_bucket,
    current_installments,
    loans_in_arrears_ids,
)
from app.services.audit import audit_record
from app.services.bulk import update_rows
from app.services.ledger import (
    Draft,
    Line,
    accounts_get_or_create,
    credit,
    debit,
    gl_account,
    journal_post,
    journal_post_many,
    member_account,
)
from app.services.loans._common import (
    COMPONENTS,
    RECEIVABLE,
    LoanError,
    _actor_name,
    _get_loan,
    loan_account,
)
from app.services.permissions import permission_require
from app.services.webhooks import webhook_loans_overdue


def penalty_for(product: LoanProduct, row: Installment) -> Decimal:
    """The penalty one overdue installment earns under its product's rule (zero: none)."""
    if product.penalty_type == "fixed":
        return round_money(product.penalty_value)
    if product.penalty_type == "percent":
        overdue = sum(
            (getattr(row, f"{c}_due") - getattr(row, f"{c}_paid") for c in COMPONENTS[1:]),
            ZERO,
        )
        return round_money(overdue * product.penalty_value / 100)
    return ZERO


def loan_reverse_penalty(
    *, loan_id: int, installment_number: int, staff: StaffUser, reason: str, value_date: date
) -> Decimal:
    """Take back a penalty charged in error (a job run for the wrong date, say).

    One reversing entry: penalty income gives back the whole charge; what was still owed
    leaves the penalty receivable, and what the member had already paid of it goes to their
    savings. The installment owes no penalty after, and may be charged again if it is
    really late. Audited; returns the amount reversed.
    """
    permission_require(staff, "penalty.reverse")
    reason = (reason or "").strip()
    if not reason:
        raise LoanError("a penalty reversal needs a reason")
    loan = _get_loan(loan_id)
    row = next(
        (r for r in current_installments(loan.id, fresh=True) if r.number == installment_number),
        None,
    )
    if row is None:
        raise LoanError(f"loan {loan.loan_no} has no installment {installment_number}")
    charged, paid = row.penalty_due, row.penalty_paid
    if charged <= 0:
        raise LoanError(f"installment {installment_number} of {loan.loan_no} has no penalty")
    lines: list[Line] = [debit(gl_account("GL-INCOME-PENALTY"), charged)]
    if charged - paid > 0:
        lines.append(credit(loan_account(loan, "penalty"), charged - paid))
    if paid > 0:
        lines.append(credit(member_account(loan.member, "savings"), paid))
    journal_post(
        kind="penalty_reversal",
        lines=lines,
        value_date=value_date,
        description=f"Penalty reversed {loan.loan_no} #{row.number}: {reason}",
        idempotency_key=f"penalty-reversal:{row.id}:{row.penalty_reversals + 1}",
        actor=_actor_name(staff),
        member_id=loan.member_id,
        loan_id=loan.id,
    )
    before = {"penalty_due": charged, "penalty_paid": paid, "charged_on": row.last_penalty_on}
    row.penalty_due = row.penalty_paid = ZERO
    row.last_penalty_on = None
    row.penalty_reversals += 1
    audit_record(
        actor=_actor_name(staff),
        action="loan.penalty_reverse",
        object_type="loan",
        object_id=loan.loan_no,
        before={"installment": row.number, **before},
        after={"installment": row.number, "penalty_due": ZERO, "refunded": paid},
        note=reason,
    )
    db.session.commit()
    return charged


@dataclass(frozen=True)
class ArrearsDecision:
    """What the daily arrears rule says of one loan on one day."""

    penalties: list[tuple[Installment, Decimal]]  # rows to charge now, with the amount
    days_past_due: int
    aging_bucket: str
    in_default: bool

    @property
    def standing(self) -> tuple[int, str, bool]:
        return (self.days_past_due, self.aging_bucket, self.in_default)


def arrears_decide(
    product: LoanProduct, rows: Sequence[Installment], as_of: date
) -> ArrearsDecision:
    """The one arrears rule, for one loan or a chunk of the book: `rows` are the loan's
    live schedule (in any order), read under the loan's lock. Days past due count
    from the oldest unpaid row due before `as_of`; a row more than grace_days late earns
    its product's penalty once; default is more than default_threshold_days late. The
    penalties come oldest installment first, the order the in duplum cap serves them."""
    overdue = sorted(
        (row for row in rows if row.paid_on is None and row.due_date < as_of),
        key=lambda row: row.number,
    )
    penalties = []
    for row in overdue:
        if (as_of - row.due_date).days > product.grace_days and row.last_penalty_on is None:
            amount = penalty_for(product, row)
            if amount > 0:
                penalties.append((row, amount))
    dpd = (as_of - overdue[0].due_date).days if overdue else 0
    return ArrearsDecision(penalties, dpd, aging_bucket(dpd), dpd > product.default_threshold_days)


def loan_update_arrears(*, loan_id: int, as_of: date) -> bool:
    """Days past due, aging bucket, default flag and penalties of one loan for `as_of`:
    the nightly chunk (`loans_update_arrears`) for this loan alone, so one rule serves
    both. Commits; True if it changed."""
    changed = loans_update_arrears([loan_id], as_of=as_of)
    db.session.commit()
    return changed > 0


def _penalty_draft(
    loan: Loan, row: Installment, amount: Decimal, as_of: date, account: Account, income: Account
) -> Draft:
    """One overdue installment's penalty entry. Keyed by the installment (and by how many
    times staff reversed its penalty, so one wrongly charged and reversed can still be
    charged when it is really late)."""
    reversals = row.penalty_reversals
    return Draft(
        kind="penalty",
        lines=[debit(account, amount), credit(income, amount)],
        value_date=as_of,
        description=f"Late penalty {loan.loan_no} #{row.number}",
        idempotency_key=f"penalty:{row.id}" + (f":{reversals}" if reversals else ""),
        member_id=loan.member_id,
        loan_id=loan.id,
    )


def in_duplum_room(loan_ids: Sequence[int], as_of: date) -> dict[int, Decimal]:
    """How much more in penalties each loan may still be charged under the in duplum rule:
    its principal outstanding less the interest and fees already due and unpaid and the
    penalties unpaid (never below zero).

    The Sacco Societies (Deposit-Taking Sacco Business) Regulations, 2010, reg. 31 limits
    the interest recoverable on a delinquent loan to the principal owing when it became
    delinquent, as the Banking Act (Cap. 488) s.44A does for banks (interest and charges
    on a non-performing loan never beyond that principal). Repayments only lower the
    principal outstanding, so capping at tonight's keeps within the rule; a restructured
    loan counts from its new principal (the arrears it capitalised included), as a new
    loan would. Interest not yet due is left out: it is not owed until its day."""
    due = Installment.due_date < as_of
    rows = db.session.execute(
        select(
            Installment.loan_id,
            type_coerce(func.sum(Installment.principal_due - Installment.principal_paid), Money()),
            type_coerce(
                func.sum(
                    case(
                        (
                            due,
                            Installment.interest_due
                            - Installment.interest_paid
                            + Installment.fees_due
                            - Installment.fees_paid,
                        ),
                        else_=0,
                    )
                    + Installment.penalty_due
                    - Installment.penalty_paid
                ),
                Money(),
            ),
        )
        .where(Installment.loan_id.in_(list(loan_ids)), Installment.superseded.is_(False))
        .group_by(Installment.loan_id)
    )
    return {
        loan_id: max((principal or ZERO) - (charges or ZERO), ZERO)
        for loan_id, principal, charges in rows
    }


def in_duplum_cap(
    penalties: Sequence[tuple[Installment, Decimal]], room: Decimal
) -> list[tuple[Installment, Decimal]]:
    """Tonight's penalties of one loan cut to the room the in duplum rule leaves, oldest
    installment first; a row that gets nothing stays uncharged (charged on a later night
    if payments make room)."""
    kept = []
    for row, amount in penalties:
        amount = min(amount, room)
        if amount <= 0:
            break
        kept.append((row, amount))
        room -= amount
    return kept


def loans_update_arrears(loan_ids: Sequence[int], *, as_of: date) -> int:
    """`loan_update_arrears` for a chunk of the book, in the caller's transaction, which
    commits (or rolls back) next, before reading the loans again: the close-of-business
    chunk does (`app.batch`). The loans locked in id order and re-read
    under the locks, their schedules and products in one query each, the same rule
    (`arrears_decide`), the penalties posted in bulk. Returns how many loans changed."""
    loans = list(
        db.session.scalars(
            select(Loan)
            .where(Loan.id.in_(sorted(loan_ids)), Loan.status.in_(LIVE_STATUSES))
            .order_by(Loan.id)
            .with_for_update(of=Loan)  # pragma: no mutate: no join: FOR UPDATE locks the same
            # Not the loan's eager loads (member, product, the whole schedule): the rows
            # the rule reads come in one query below, the products in another.
            .options(lazyload("*"))
            .execution_options(populate_existing=True)
        )
    )
    if not loans:
        return 0
    rows: dict[int, list[Installment]] = {loan.id: [] for loan in loans}
    # Only what arrears_decide looks at: the live rows due before as_of and unpaid. The
    # rule itself leaves paid and not yet late rows out and puts the rest in installment
    # order, so those two conditions and the ORDER BY only spare it work: not mutated.
    for row in db.session.scalars(
        select(Installment)
        .where(
            Installment.loan_id.in_(list(rows)),
            Installment.superseded.is_(False),
            Installment.paid_on.is_(None),  # pragma: no mutate
            Installment.due_date < as_of,  # pragma: no mutate
        )
        .order_by(Installment.loan_id, Installment.number)  # pragma: no mutate
        .options(lazyload("*"))
        .execution_options(populate_existing=True)
    ):
        rows[row.loan_id].append(row)
    products = {
        p.id: p
        for p in db.session.scalars(
            select(LoanProduct).where(LoanProduct.id.in_({loan.product_id for loan in loans}))
        )
    }
    decisions = {
        loan.id: arrears_decide(products[loan.product_id], rows[loan.id], as_of) for loan in loans
    }
    charging = [loan for loan in loans if decisions[loan.id].penalties]
    if charging:
        # The in duplum cap: one more set query, for the loans charged tonight only (each
        # has live rows, so each is in `room`).
        room = in_duplum_room([loan.id for loan in charging], as_of)
        capped = {
            loan.id: in_duplum_cap(decisions[loan.id].penalties, room[loan.id]) for loan in charging
        }
        charging = [loan for loan in charging if capped[loan.id]]
    charged: list[tuple[Installment, Decimal]] = []
    if charging:
        drafts: list[tuple[Installment, Decimal, Draft]] = []
        prefix, kind, label = RECEIVABLE["penalty"]
        accounts = accounts_get_or_create(
            [
                dict(
                    code=f"{prefix}-{loan.loan_no}",
                    kind=kind,
                    name=f"{label} {loan.loan_no}",
                    member_id=loan.member_id,
                    loan_id=loan.id,
                )
                for loan in charging
            ]
        )
        income = gl_account("GL-INCOME-PENALTY")
        for loan in charging:
            account = accounts[f"{prefix}-{loan.loan_no}"]
            for row, amount in capped[loan.id]:
                drafts.append(
                    (row, amount, _penalty_draft(loan, row, amount, as_of, account, income))
                )
        posted = journal_post_many([draft for _, _, draft in drafts])
        charged = [
            (row, amount) for row, amount, draft in drafts if draft.idempotency_key in posted
        ]
    # Written as two bulk UPDATEs (app.services.bulk): the ORM's flush sends one per row.
    moved = [
        dict(id=loan.id, days_past_due=dpd, aging_bucket=bucket, in_default=default)
        for loan in loans
        for dpd, bucket, default in [decisions[loan.id].standing]
        if (loan.days_past_due, loan.aging_bucket, loan.in_default) != (dpd, bucket, default)
    ]
    changed = {row.loan_id for row, _ in charged} | {m["id"] for m in moved}
    webhook_loans_overdue(
        [
            (loan, decisions[loan.id].days_past_due)
            for loan in loans
            if not loan.days_past_due and decisions[loan.id].days_past_due
        ],
        as_of,
    )
    update_rows(
        Installment.__table__,
        [dict(id=row.id, penalty_due=amount, last_penalty_on=as_of) for row, amount in charged],
        # A row is charged once (last_penalty_on) and owes no penalty before (a reversal
        # zeroes it): adding and setting agree, so not mutated; adding keeps the ledger's
        # figure should that ever change.
        add=["penalty_due"],  # pragma: no mutate
    )
    update_rows(Loan.__table__, moved)
    # The loans and rows the session holds are stale now: the caller commits next (the
    # batch's chunk does), and the commit expires them. Expiring them one by one here cost
    # a fifth of a chunk's CPU (20,000 penalised rows on an imported book's first night).
    return len(changed)


def _arrears_chunk(loan_ids: Sequence[int], as_of: date, stats: ChunkStats) -> None:
    stats.records_updated += loans_update_arrears(loan_ids, as_of=as_of)


# The nightly `loan-arrears` run (workers.jobs) and the import's catch-up share it.
ARREARS = Batch("loan-arrears", loans_in_arrears_ids, _arrears_chunk)
