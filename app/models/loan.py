"""Loan products, loans and their installments."""

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
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import Model
from app.models.types import Money, UTCDateTime, utcnow
from app.money import ZERO

LOAN_STATUSES = (
    "submitted",
    "recommended",
    "approved",
    "disbursing",
    "active",
    "closed",
    "rejected",
    "withdrawn",
    "overpaid",
    "written_off",
    "restructured",
)


class LoanProduct(Model):
    __tablename__ = "loan_products"
    __table_args__ = (
        CheckConstraint("interest_method IN ('declining','flat')", name="interest_method"),
        CheckConstraint(
            "amortization IN ('equal_installments','equal_principal')", name="amortization"
        ),
        CheckConstraint("frequency IN ('monthly','weekly')", name="frequency"),
        CheckConstraint("guarantee_cover BETWEEN 0 AND 100", name="guarantee_cover"),
        CheckConstraint("collateral_haircut BETWEEN 0 AND 100", name="collateral_haircut"),
        CheckConstraint("min_guarantors >= 0 AND guarantee_days >= 1", name="guarantors"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(80))
    # What Kiswahili-speaking members read on USSD and SMS; `name` when not set.
    name_sw: Mapped[str | None] = mapped_column(String(80))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    interest_method: Mapped[str] = mapped_column(String(12), default="declining")
    amortization: Mapped[str] = mapped_column(String(20), default="equal_installments")
    annual_rate: Mapped[Decimal] = mapped_column(Numeric(7, 4))  # percent a year
    min_rate: Mapped[Decimal | None] = mapped_column(Numeric(7, 4))
    max_rate: Mapped[Decimal | None] = mapped_column(Numeric(7, 4))
    frequency: Mapped[str] = mapped_column(String(8), default="monthly")
    default_term: Mapped[int] = mapped_column(Integer)
    min_term: Mapped[int] = mapped_column(Integer, default=1)
    max_term: Mapped[int] = mapped_column(Integer)
    installment_multiple: Mapped[Decimal | None] = mapped_column(Money())
    min_amount: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    max_amount: Mapped[Decimal | None] = mapped_column(Money())
    fee_type: Mapped[str] = mapped_column(String(8), default="none")  # none|fixed|percent
    fee_value: Mapped[Decimal] = mapped_column(Numeric(10, 4), default=ZERO)
    fee_min: Mapped[Decimal | None] = mapped_column(Money())
    fee_max: Mapped[Decimal | None] = mapped_column(Money())
    penalty_type: Mapped[str] = mapped_column(String(8), default="none")  # none|fixed|percent
    penalty_value: Mapped[Decimal] = mapped_column(Numeric(10, 4), default=ZERO)
    grace_days: Mapped[int] = mapped_column(Integer, default=3)
    default_threshold_days: Mapped[int] = mapped_column(Integer, default=30)
    limit_multiple: Mapped[Decimal] = mapped_column(Numeric(6, 2), default=Decimal("3"))
    min_share_capital: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    min_membership_days: Mapped[int] = mapped_column(Integer, default=0)
    # How a loan of this product is secured (SPEC "Guarantees"). Guarantors (and collateral,
    # where allowed) must cover `guarantee_cover` percent of the amount above the member's
    # own free deposits, with at least `min_guarantors` of them; all zero (the instant
    # products) needs none. A guarantor has `guarantee_days` to answer a request.
    min_guarantors: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    guarantee_cover: Mapped[Decimal] = mapped_column(
        Numeric(5, 2), default=ZERO, server_default="0"
    )
    collateral_allowed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Percent cut from collateral's forced-sale value before it counts toward cover.
    collateral_haircut: Mapped[Decimal] = mapped_column(
        Numeric(5, 2), default=Decimal("50"), server_default="50"
    )
    guarantee_days: Mapped[int] = mapped_column(Integer, default=7, server_default="7")
    auto_approve_limit: Mapped[Decimal | None] = mapped_column(Money())
    maker_checker_threshold: Mapped[Decimal | None] = mapped_column(Money())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"<LoanProduct {self.code}>"

    def __str__(self) -> str:
        return self.name

    def name_in(self, language: str) -> str:
        """The product's name as a member reads it in their language."""
        return (self.name_sw or self.name) if language == "sw" else self.name


class Loan(Model):
    __tablename__ = "loans"

    id: Mapped[int] = mapped_column(primary_key=True)
    loan_no: Mapped[str | None] = mapped_column(String(12), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("loan_products.id"))
    status: Mapped[str] = mapped_column(String(14), default="submitted", index=True)
    channel: Mapped[str] = mapped_column(String(10), default="ussd")
    # Terms are copied from the product at application so a later product edit
    # never changes a running loan.
    principal: Mapped[Decimal] = mapped_column(Money())
    annual_rate: Mapped[Decimal] = mapped_column(Numeric(7, 4))
    term: Mapped[int] = mapped_column(Integer)
    frequency: Mapped[str] = mapped_column(String(8))
    interest_method: Mapped[str] = mapped_column(String(12))
    amortization: Mapped[str] = mapped_column(String(20))
    installment_multiple: Mapped[Decimal | None] = mapped_column(Money())
    fee_amount: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    # Indexed for the dashboard's "this month" and "today" figures: a range of days is a
    # small slice of the book, read from the index rather than by scanning every loan.
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    disbursed_on: Mapped[date | None] = mapped_column(Date, index=True)
    closed_on: Mapped[date | None] = mapped_column(Date)
    recommended_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    # The staff member who follows the loan up (set at approval, reassigned by a manager).
    officer_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"), index=True)
    next_hearing_on: Mapped[date | None] = mapped_column(Date)  # rolled up from its cases
    decision_reason: Mapped[str | None] = mapped_column(String(255))
    days_past_due: Mapped[int] = mapped_column(Integer, default=0)
    aging_bucket: Mapped[str] = mapped_column(String(8), default="current")
    in_default: Mapped[bool] = mapped_column(Boolean, default=False)
    # What a write-off took off the books, and what has come back since (recovery income).
    written_off_amount: Mapped[Decimal] = mapped_column(Money(), default=ZERO, server_default="0")
    recovered_amount: Mapped[Decimal] = mapped_column(Money(), default=ZERO, server_default="0")
    external_ref: Mapped[str | None] = mapped_column(String(60), unique=True)
    # Why the last M-PESA payout failed, shown to staff until a retry succeeds.
    payout_error: Mapped[str | None] = mapped_column(String(255))

    member = relationship("Member", lazy="joined")
    product: Mapped[LoanProduct] = relationship(lazy="joined")
    installments: Mapped[list[Installment]] = relationship(
        back_populates="loan", order_by="Installment.number", lazy="selectin"
    )

    def __repr__(self) -> str:
        return f"<Loan {self.loan_no} {self.status} {self.principal}>"

    def __str__(self) -> str:
        return self.loan_no or f"loan {self.id}"


class Installment(Model):
    __tablename__ = "installments"
    __table_args__ = (UniqueConstraint("loan_id", "version", "number", name="loan_version_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # No index of its own: the unique (loan_id, version, number) index starts with it and
    # serves every lookup by loan; a second one only cost each inserted installment.
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id"))
    # A restructure writes a new version; superseded rows stay for the record.
    version: Mapped[int] = mapped_column(Integer, default=1)
    superseded: Mapped[bool] = mapped_column(Boolean, default=False)
    number: Mapped[int] = mapped_column(Integer)
    due_date: Mapped[date] = mapped_column(Date, index=True)
    principal_due: Mapped[Decimal] = mapped_column(Money())
    interest_due: Mapped[Decimal] = mapped_column(Money())
    fees_due: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    penalty_due: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    principal_paid: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    interest_paid: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    fees_paid: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    penalty_paid: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    paid_on: Mapped[date | None] = mapped_column(Date)
    last_penalty_on: Mapped[date | None] = mapped_column(Date)
    # Staff reversals of this installment's penalty: part of the next charge's key, so a
    # penalty reversed in error can be charged again, still once per charge.
    penalty_reversals: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    loan: Mapped[Loan] = relationship(back_populates="installments")

    @property
    def total_due(self) -> Decimal:
        return self.principal_due + self.interest_due + self.fees_due + self.penalty_due

    @property
    def total_paid(self) -> Decimal:
        return self.principal_paid + self.interest_paid + self.fees_paid + self.penalty_paid

    @property
    def outstanding(self) -> Decimal:
        return self.total_due - self.total_paid


class PortfolioSnapshot(Model):
    """The daily aging / PAR30 picture, one row per day (a rerun replaces its own day)."""

    __tablename__ = "portfolio_snapshots"

    id: Mapped[int] = mapped_column(primary_key=True)
    as_of: Mapped[date] = mapped_column(Date, unique=True)
    loans: Mapped[int] = mapped_column(Integer)
    gross_principal: Mapped[Decimal] = mapped_column(Money())
    par30_principal: Mapped[Decimal] = mapped_column(Money())
    par30: Mapped[Decimal] = mapped_column(Numeric(6, 4))
    current: Mapped[Decimal] = mapped_column(Money())
    dpd_1_30: Mapped[Decimal] = mapped_column(Money())
    dpd_31_60: Mapped[Decimal] = mapped_column(Money())
    dpd_61_90: Mapped[Decimal] = mapped_column(Money())
    dpd_90_plus: Mapped[Decimal] = mapped_column(Money())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
