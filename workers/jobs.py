"""The daily jobs; `workers.schedule.JOBS` names them. Later parts add theirs here too.

Each is idempotent per day: running a day twice changes nothing the second time.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from sqlalchemy import select, update

from app.extensions import db
from app.models import Installment, Loan, LoanProduct, PortfolioSnapshot
from app.money import round_money
from app.selectors.loans import LIVE_STATUSES, aging_bucket, portfolio_at_risk
from app.services.ledger import ledger_check
from app.services.loans import loan_charge_penalty
from app.services.sms import sms_sweep
from workers.runner import JobStats

BATCH = 500


def sms_sweep_job(*, as_of: date, stats: JobStats) -> None:
    """Queue again outbox messages whose send job was lost (Redis down at commit)."""
    stats.records_updated = sms_sweep()
    stats.records_scanned = stats.records_updated


def ledger_check_job(*, as_of: date, stats: JobStats) -> None:
    """Nightly proof that every cached balance equals its journal."""
    problems = ledger_check()
    stats.records_scanned = 1
    for problem in problems:
        stats.error(problem.detail)


def _penalty_for(product: LoanProduct, row: Installment) -> object:
    if product.penalty_type == "fixed":
        return round_money(product.penalty_value)
    if product.penalty_type == "percent":
        overdue = (
            row.principal_due
            - row.principal_paid
            + row.interest_due
            - row.interest_paid
            + row.fees_due
            - row.fees_paid
        )
        return round_money(overdue * product.penalty_value / 100)
    return None


def loan_arrears_job(*, as_of: date, stats: JobStats) -> None:
    """Days past due, aging bucket and default flag per loan; penalties after grace_days.

    Reads only installments already due and unpaid, so its cost follows the arrears,
    not the size of the book. A penalty is charged once per installment (keyed by it).
    """
    overdue = db.session.execute(
        select(Installment, Loan, LoanProduct)
        .join(Loan, Installment.loan_id == Loan.id)
        .join(LoanProduct, Loan.product_id == LoanProduct.id)
        .where(
            Loan.status.in_(LIVE_STATUSES),
            Installment.superseded.is_(False),
            Installment.paid_on.is_(None),
            Installment.due_date < as_of,
        )
        .order_by(Loan.id, Installment.number)
    ).all()
    by_loan: dict[int, list[tuple[Installment, Loan, LoanProduct]]] = defaultdict(list)
    for row, loan, product in overdue:
        by_loan[row.loan_id].append((row, loan, product))
    stats.records_scanned = len(by_loan)

    done = 0
    for loan_id, rows in by_loan.items():
        loan, product = rows[0][1], rows[0][2]
        try:
            with db.session.begin_nested():
                changed = False
                for row, _, _ in rows:
                    late = (as_of - row.due_date).days
                    if late > product.grace_days and row.last_penalty_on is None:
                        amount = _penalty_for(product, row)
                        if amount and amount > 0:
                            changed |= loan_charge_penalty(
                                installment=row, amount=amount, as_of=as_of
                            )
                dpd = (as_of - rows[0][0].due_date).days
                new = (dpd, aging_bucket(dpd), dpd > product.default_threshold_days)
                if (loan.days_past_due, loan.aging_bucket, loan.in_default) != new:
                    loan.days_past_due, loan.aging_bucket, loan.in_default = new
                    changed = True
            stats.records_updated += int(changed)
        except Exception as exc:  # noqa: BLE001 - one bad loan must not stop the run
            stats.error(f"loan {loan_id}: {type(exc).__name__}: {exc}")
        done += 1
        if done % BATCH == 0:
            db.session.commit()
    db.session.commit()

    # Loans that were late and are not any more (paid, restructured) go back to current.
    was_late = db.session.scalars(
        select(Loan.id).where(Loan.status.in_(LIVE_STATUSES), Loan.days_past_due > 0)
    ).all()
    cleared = sorted(set(was_late) - set(by_loan))
    for start in range(0, len(cleared), BATCH):
        db.session.execute(
            update(Loan)
            .where(Loan.id.in_(cleared[start : start + BATCH]))
            .values(days_past_due=0, aging_bucket="current", in_default=False)
            .execution_options(synchronize_session=False)
        )
    stats.records_updated += len(cleared)
    db.session.commit()


def portfolio_snapshot_job(*, as_of: date, stats: JobStats) -> None:
    """Aging buckets and PAR30 for the day (run after loan-arrears)."""
    p = portfolio_at_risk(as_of=as_of)
    values = dict(
        loans=p.loans,
        gross_principal=p.gross_principal,
        par30_principal=p.par30_principal,
        par30=p.par30,
        current=p.buckets["current"],
        dpd_1_30=p.buckets["1-30"],
        dpd_31_60=p.buckets["31-60"],
        dpd_61_90=p.buckets["61-90"],
        dpd_90_plus=p.buckets["90+"],
    )
    snapshot = db.session.scalar(select(PortfolioSnapshot).where(PortfolioSnapshot.as_of == as_of))
    if snapshot is None:
        db.session.add(PortfolioSnapshot(as_of=as_of, **values))
    else:
        for key, value in values.items():
            setattr(snapshot, key, value)
    db.session.commit()
    stats.records_scanned = p.loans
    stats.records_updated = 1
