"""How a loan is secured: guarantees by fellow members and collateral (SPEC "Guarantees").

A guarantee holds no money: it is a hold on the guarantor's deposits, counted wherever
free deposits are (`app.selectors.guarantees`), and it moves money only when a recorded
decision recovers a defaulted loan from its guarantors (a journal entry, like any other).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import Model
from app.models.loan import Loan
from app.models.member import Member
from app.models.types import Money, UTCDateTime, utcnow
from app.money import ZERO

GUARANTEE_STATUSES = (
    "requested",  # asked, waiting for the guarantor's answer
    "accepted",  # pledged: holds the guarantor's deposits
    "declined",
    "expired",  # not answered in the product's days
    "cancelled",  # the application ended (rejected, withdrawn) before it was answered
    "released",  # the loan closed, or was never paid out: nothing held any more
    "replaced",  # another guarantor took this one's place
    "recovered",  # the loan defaulted and the exposure was recovered from deposits
)
# A guarantee that holds (accepted) or may come to hold (requested): one per guarantor and
# loan, by a partial unique index, so a request cannot be sent twice at the same instant.
GUARANTEE_LIVE = ("requested", "accepted")
ANSWER_CHANNELS = ("ussd", "sms", "console")

COLLATERAL_KINDS = ("land_title", "log_book", "chattel", "check_off", "fixed_deposit")
LIEN_STATUSES = ("registered", "discharged")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Guarantee(Model):
    __tablename__ = "guarantees"
    __table_args__ = (
        CheckConstraint(_in("status", GUARANTEE_STATUSES), name="status"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("recovered_amount >= 0", name="recovered_not_negative"),
        Index(
            "uq_guarantees_one_live_per_guarantor",
            "loan_id",
            "guarantor_id",
            unique=True,
            sqlite_where=text(_in("status", GUARANTEE_LIVE)),
            postgresql_where=text(_in("status", GUARANTEE_LIVE)),
        ),
        Index("ix_guarantees_guarantor_status", "guarantor_id", "status"),
        Index("ix_guarantees_status_expires_on", "status", "expires_on"),  # the expiry scan
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id"), index=True)
    guarantor_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    # What the guarantor is asked to pledge and, once accepted, pledged: the hold starts
    # here and falls in proportion as the loan's principal is repaid (`exposure`).
    amount: Mapped[Decimal] = mapped_column(Money())
    status: Mapped[str] = mapped_column(String(10), default="requested")
    requested_by: Mapped[str] = mapped_column(String(120))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_on: Mapped[date] = mapped_column(Date)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    answered_via: Mapped[str | None] = mapped_column(String(8))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    recovered_amount: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    replaces_id: Mapped[int | None] = mapped_column(ForeignKey("guarantees.id"))
    note: Mapped[str | None] = mapped_column(Text)

    loan: Mapped[Loan] = relationship()
    guarantor: Mapped[Member] = relationship(foreign_keys=[guarantor_id])

    def __repr__(self) -> str:
        return f"<Guarantee {self.id} loan {self.loan_id} by {self.guarantor_id} {self.status}>"


class Collateral(Model):
    """A pledged asset in the register: what it is, whose, what it would fetch, and its
    lien. Counts toward a loan's cover at the product's haircut of its forced-sale value."""

    __tablename__ = "collateral"
    __table_args__ = (
        CheckConstraint(_in("kind", COLLATERAL_KINDS), name="kind"),
        CheckConstraint(_in("lien_status", LIEN_STATUSES), name="lien_status"),
        CheckConstraint("forced_sale_value >= 0", name="forced_sale_not_negative"),
        CheckConstraint("market_value >= forced_sale_value", name="forced_sale_within_market"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(255))
    owner_name: Mapped[str] = mapped_column(String(120))
    market_value: Mapped[Decimal] = mapped_column(Money())
    forced_sale_value: Mapped[Decimal] = mapped_column(Money())
    valued_on: Mapped[date] = mapped_column(Date)
    valuer: Mapped[str] = mapped_column(String(120))
    lien_status: Mapped[str] = mapped_column(String(12), default="registered")
    recorded_by: Mapped[str] = mapped_column(String(120))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    discharged_by: Mapped[str | None] = mapped_column(String(120))
    discharged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    loan: Mapped[Loan] = relationship()
