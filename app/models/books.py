"""The books a SACCO closes and files: the chart of accounts, closed periods, loan-loss
provisions, the KPIs read off the books and the returns filed with SASRA."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.types import Money, UTCDateTime, utcnow
from app.money import ZERO

CHART_TYPES = ("asset", "liability", "equity", "income", "expense")


class ChartAccount(Model):
    """One line of the chart of accounts. A header groups lines; a leaf `maps` the ledger
    accounts it reports: a ledger kind ("savings"), the principal of one loan product
    ("loan_principal:3"), or a staff-added general account ("COA-5150")."""

    __tablename__ = "chart_accounts"
    __table_args__ = (
        CheckConstraint(
            "type IN ('asset','liability','equity','income','expense')", name="chart_type"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    type: Mapped[str] = mapped_column(String(10))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("chart_accounts.id"), index=True)
    header: Mapped[bool] = mapped_column(Boolean, default=False)
    maps: Mapped[str | None] = mapped_column(String(40), unique=True)
    # Seeded by the system (its mapping never changes) or added by staff.
    system: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(60), default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"<ChartAccount {self.code} {self.name}>"


class BooksState(Model):
    """One row: the last day of the last closed period. The ledger reads it (under a shared
    lock on PostgreSQL) before every posting; closing and reopening update it under an
    exclusive one, so no posting can slip into a period while it closes."""

    __tablename__ = "books_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    closed_through: Mapped[date | None] = mapped_column(Date)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PeriodEvent(Model):
    """The history of closing: each month closed, each reopening (with its reason) and each
    year-end close (with the entry that moved the year's result to retained earnings)."""

    __tablename__ = "period_events"
    __table_args__ = (
        CheckConstraint("action IN ('close','reopen','year_end')", name="period_action"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    action: Mapped[str] = mapped_column(String(10))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date, index=True)
    actor: Mapped[str] = mapped_column(String(60))
    reason: Mapped[str] = mapped_column(String(255), default="")
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LoanProvision(Model):
    """A loan's risk class at a month end and what it requires: the provision on its
    principal and the interest held in suspense instead of income."""

    __tablename__ = "loan_provisions"
    __table_args__ = (UniqueConstraint("loan_id", "as_of", name="uq_loan_provisions_loan_as_of"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id"), index=True)
    as_of: Mapped[date] = mapped_column(Date, index=True)
    days_in_arrears: Mapped[int] = mapped_column(Integer, default=0)
    risk_class: Mapped[str] = mapped_column(String(12))
    restructured: Mapped[bool] = mapped_column(Boolean, default=False)
    principal: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    rate: Mapped[Decimal] = mapped_column(Numeric(6, 2), default=ZERO)  # percent
    provision: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    interest_suspended: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    # The penalties' part of interest_suspended: its release goes back to penalty income.
    penalty_suspended: Mapped[Decimal] = mapped_column(Money(), default=ZERO, server_default="0")


class ProvisionRun(Model):
    """One month end's provisioning: the totals required and the entries that moved the
    books to them (only the difference from what they held)."""

    __tablename__ = "provision_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    as_of: Mapped[date] = mapped_column(Date, unique=True)
    required: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    suspended: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    provision_entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    suspense_entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class KpiSnapshot(Model):
    """A KPI's value on a day, computed from the books by the nightly run so the dashboard
    reads a few rows instead of a million journal lines."""

    __tablename__ = "kpi_snapshots"
    __table_args__ = (UniqueConstraint("as_of", "name", name="uq_kpi_snapshots_as_of_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    as_of: Mapped[date] = mapped_column(Date, index=True)
    name: Mapped[str] = mapped_column(String(40))
    value: Mapped[Decimal] = mapped_column(Numeric(20, 6))


class RegulatoryFiling(Model):
    """A return marked filed with SASRA for a month end (the console's last filed)."""

    __tablename__ = "regulatory_filings"
    __table_args__ = (UniqueConstraint("form", "period_end", name="uq_regulatory_filings_form"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    form: Mapped[str] = mapped_column(String(30))
    period_end: Mapped[date] = mapped_column(Date)
    filed_by: Mapped[str] = mapped_column(String(60))
    filed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class JournalMonthTotal(Model):
    """A closed month's journal lines summed by what places them on the chart (ledger kind,
    loan product, general account code) and by entry kind: statements read a closed
    month from these few rows instead of its lines. Exact because nothing posts into a
    closed month; built under one close (`event_id`), and read only while that close
    stands (app/services/books/totals.py)."""

    __tablename__ = "journal_month_totals"

    id: Mapped[int] = mapped_column(primary_key=True)
    month_end: Mapped[date] = mapped_column(Date, index=True)
    kind: Mapped[str] = mapped_column(String(20))
    product_id: Mapped[int | None] = mapped_column(Integer)
    general_code: Mapped[str | None] = mapped_column(String(40))
    entry_kind: Mapped[str] = mapped_column(String(30))
    amount: Mapped[Decimal] = mapped_column(Money())
    event_id: Mapped[int] = mapped_column(Integer)
