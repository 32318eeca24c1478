"""Collections and remedial recovery: who follows a loan up, what they did, the settlements
agreed, legal cases, recovery milestones, write-off decisions and the documents behind them.

None of these tables holds money: payments and write-offs are journal entries made by the
loan services; these rows say why and who.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import Model
from app.models.types import Money, UTCDateTime, utcnow

CONTACT_KINDS = ("call", "visit", "sms")
CONTACT_OUTCOMES = ("contacted", "no_answer", "promised", "dispute", "wrong_number")
AGREEMENT_STATUSES = (
    "draft",
    "submitted",
    "approved",
    "active",
    "completed",
    "defaulted",
    "deleted",
)
# The statuses in which an agreement binds the loan: at most one per loan (a partial
# unique index, so two managers approving two drafts at once cannot both succeed).
AGREEMENT_BINDING = ("approved", "active")
CASE_STATUSES = ("filed", "hearing", "judgment", "settled", "withdrawn", "closed")
MILESTONE_KINDS = ("demand_letter", "auctioneer", "foreclosure", "dacion")
WRITE_OFF_STATUSES = ("recommended", "approved", "declined")
DOCUMENT_OWNERS = ("loan", "agreement", "case", "member")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class ContactLog(Model):
    """One call, visit or message about a loan in arrears, and how it went."""

    __tablename__ = "contact_logs"
    __table_args__ = (
        CheckConstraint(_in("kind", CONTACT_KINDS), name="kind"),
        CheckConstraint(_in("outcome", CONTACT_OUTCOMES), name="outcome"),
        Index("ix_contact_logs_loan_at", "loan_id", "at"),
        Index("ix_contact_logs_staff_at", "staff_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id"))
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    kind: Mapped[str] = mapped_column(String(8))
    outcome: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(String(500))
    promise_id: Mapped[int | None] = mapped_column(ForeignKey("promises_to_pay.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CollectionTarget(Model):
    """A loan officer's target for one business day, set by a branch manager."""

    __tablename__ = "collection_targets"
    __table_args__ = (UniqueConstraint("staff_id", "day", name="one_per_day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    day: Mapped[date] = mapped_column(Date, index=True)
    amount: Mapped[Decimal] = mapped_column(Money())
    accounts: Mapped[int] = mapped_column(Integer)
    set_by_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Agreement(Model):
    """A compromise (remedial settlement) agreement on a loan in default."""

    __tablename__ = "agreements"
    __table_args__ = (
        CheckConstraint(_in("status", AGREEMENT_STATUSES), name="status"),
        CheckConstraint("settlement_amount > 0", name="settlement_positive"),
        CheckConstraint("discount >= 0", name="discount_not_negative"),
        CheckConstraint("grace_days >= 0 AND default_threshold_days > 0", name="days"),
        Index(
            "uq_agreements_one_binding_per_loan",
            "loan_id",
            unique=True,
            sqlite_where=text(f"{_in('status', AGREEMENT_BINDING)}"),
            postgresql_where=text(f"{_in('status', AGREEMENT_BINDING)}"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id"), index=True)
    status: Mapped[str] = mapped_column(String(10), default="draft", index=True)
    settlement_amount: Mapped[Decimal] = mapped_column(Money())
    discount: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0"))
    grace_days: Mapped[int] = mapped_column(Integer, default=3)
    default_threshold_days: Mapped[int] = mapped_column(Integer, default=30)
    paid_amount: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0"))
    note: Mapped[str | None] = mapped_column(Text)
    drafted_by_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    activated_on: Mapped[date | None] = mapped_column(Date)
    closed_on: Mapped[date | None] = mapped_column(Date)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    installments: Mapped[list[AgreementInstallment]] = relationship(
        back_populates="agreement",
        order_by="AgreementInstallment.number",
        cascade="all, delete-orphan",
    )


class AgreementInstallment(Model):
    """One date and amount of an agreement's manually entered schedule."""

    __tablename__ = "agreement_installments"
    __table_args__ = (
        UniqueConstraint("agreement_id", "number", name="one_number"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("paid >= 0 AND paid <= amount", name="paid_within_amount"),
        Index("ix_agreement_installments_due", "due_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    agreement_id: Mapped[int] = mapped_column(ForeignKey("agreements.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    due_date: Mapped[date] = mapped_column(Date)
    amount: Mapped[Decimal] = mapped_column(Money())
    paid: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0"))
    paid_on: Mapped[date | None] = mapped_column(Date)

    agreement: Mapped[Agreement] = relationship(back_populates="installments")


class LegalCase(Model):
    __tablename__ = "legal_cases"
    __table_args__ = (
        CheckConstraint(_in("status", CASE_STATUSES), name="status"),
        UniqueConstraint("court", "case_number", name="one_case_number_per_court"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id"), index=True)
    court: Mapped[str] = mapped_column(String(120))
    case_number: Mapped[str] = mapped_column(String(60))
    filing_date: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(10), default="filed", index=True)
    filed_by_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    hearings: Mapped[list[Hearing]] = relationship(
        back_populates="case", order_by="Hearing.held_on"
    )


class Hearing(Model):
    __tablename__ = "hearings"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("legal_cases.id"), index=True)
    held_on: Mapped[date] = mapped_column(Date, index=True)
    outcome: Mapped[str | None] = mapped_column(String(255))
    notified_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    case: Mapped[LegalCase] = relationship(back_populates="hearings")


class RecoveryMilestone(Model):
    """A step of recovery with a due date: demand letter, auctioneer, foreclosure, dacion."""

    __tablename__ = "recovery_milestones"
    __table_args__ = (CheckConstraint(_in("kind", MILESTONE_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    due_date: Mapped[date] = mapped_column(Date, index=True)
    done_on: Mapped[date | None] = mapped_column(Date)
    overdue_flagged_on: Mapped[date | None] = mapped_column(Date)
    started_by_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WriteOffRequest(Model):
    """A branch manager's write-off recommendation and the board's decision on it."""

    __tablename__ = "write_off_requests"
    __table_args__ = (
        CheckConstraint(_in("status", WRITE_OFF_STATUSES), name="status"),
        # One open recommendation per loan.
        Index(
            "uq_write_off_requests_one_open_per_loan",
            "loan_id",
            unique=True,
            sqlite_where=text("status = 'recommended'"),
            postgresql_where=text("status = 'recommended'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id"), index=True)
    status: Mapped[str] = mapped_column(String(12), default="recommended")
    reason: Mapped[str] = mapped_column(Text)
    history: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # recovery history attached
    recommended_by_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    recommended_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    decision_date: Mapped[date | None] = mapped_column(Date)
    minute_ref: Mapped[str | None] = mapped_column(String(60))


class Document(Model):
    """A file kept for a loan, agreement, case or member; a new upload of the same kind is
    a new version, the old ones stay."""

    __tablename__ = "documents"
    __table_args__ = (
        CheckConstraint(_in("owner_type", DOCUMENT_OWNERS), name="owner_type"),
        UniqueConstraint("owner_type", "owner_id", "kind", "version", name="one_version"),
        Index("ix_documents_owner", "owner_type", "owner_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_type: Mapped[str] = mapped_column(String(10))
    owner_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(40))
    version: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(40))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(255), unique=True)
    uploaded_by_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DataQualityFinding(Model):
    """What the weekly data-quality check found, listed in the console."""

    __tablename__ = "data_quality_findings"
    __table_args__ = (
        UniqueConstraint("run_date", "rule", "object_type", "object_id", name="one_per_run"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_date: Mapped[date] = mapped_column(Date, index=True)
    rule: Mapped[str] = mapped_column(String(40))  # which check found it
    object_type: Mapped[str] = mapped_column(String(20))
    object_id: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(String(255))
