"""The daily jobs; `workers.schedule.JOBS` names them. Later parts add theirs here too.

Each is idempotent per day: running a day twice changes nothing the second time.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select

from app.api.idempotency import idempotency_keys_expire
from app.batch import batch_run
from app.extensions import db
from app.models import PortfolioSnapshot
from app.selectors.loans import portfolio_at_risk
from app.services.ledger import ledger_check
from app.services.loans import ARREARS
from app.services.payments import payments_reconcile
from app.services.sms import sms_sweep
from app.services.webhooks import webhook_sweep
from workers.runner import JobStats


def sms_sweep_job(*, as_of: date, stats: JobStats) -> None:
    """Queue again outbox messages whose send job was lost (Redis down at commit)."""
    stats.records_updated = sms_sweep()
    stats.records_scanned = stats.records_updated


def webhook_sweep_job(*, as_of: date, stats: JobStats) -> None:
    """Queue again webhook deliveries whose send job was lost (Redis down at commit)."""
    stats.records_updated = webhook_sweep()
    stats.records_scanned = stats.records_updated


def api_idempotency_expire_job(*, as_of: date, stats: JobStats) -> None:
    """Delete the API's Idempotency-Keys past their keeping (hourly)."""
    stats.records_updated = idempotency_keys_expire()
    stats.records_scanned = stats.records_updated


def reconcile_payments_job(*, as_of: date, stats: JobStats) -> None:
    """Settle M-PESA requests and callbacks that no callback settled (every 2 minutes)."""
    sweep = payments_reconcile()
    stats.records_scanned = sweep.scanned
    stats.records_updated = sweep.updated
    for problem in sweep.errors:
        stats.error(problem)


def ledger_check_job(*, as_of: date, stats: JobStats) -> None:
    """Nightly proof that every cached balance equals its journal."""
    problems = ledger_check()
    stats.records_scanned = 1
    for problem in problems:
        stats.error(problem.detail)


def loan_arrears_job(*, as_of: date, stats: JobStats) -> None:
    """Days past due, aging bucket and default flag per loan; penalties after grace_days.

    Close-of-business shape (`app.batch`): chunks of loans locked in id order, decided by
    the loan service's rule, penalties posted in bulk, committed per chunk."""
    batch_run(ARREARS, as_of=as_of, stats=stats)


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
