"""Recovery from guarantors: a branch manager's proposal and the board's decision on it.

Like the write-off workflow (`WriteOffRequest`), this row holds no money: only an approved
decision moves the guarantors' deposits, in one journal entry (`entry_id`), and says here
who decided, on which board minute, and what each guarantor paid (`recovered`).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Date, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.types import Money, UTCDateTime, utcnow

RECOVERY_STATUSES = ("proposed", "approved", "declined")


class GuaranteeRecovery(Model):
    __tablename__ = "guarantee_recoveries"
    __table_args__ = (
        CheckConstraint(
            "status IN ({})".format(", ".join(repr(s) for s in RECOVERY_STATUSES)), name="status"
        ),
        # One open proposal per loan: two managers proposing at once cannot both succeed.
        Index(
            "uq_guarantee_recoveries_one_open_per_loan",
            "loan_id",
            unique=True,
            sqlite_where=text("status = 'proposed'"),
            postgresql_where=text("status = 'proposed'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loans.id"), index=True)
    status: Mapped[str] = mapped_column(String(10), default="proposed")
    reason: Mapped[str] = mapped_column(Text)
    # Each guarantor's exposure when proposed (what the board is shown), as plain JSON.
    exposures: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    proposed_by_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    proposed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    proposed_on: Mapped[date] = mapped_column(Date)  # the business day it was proposed
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decision_date: Mapped[date | None] = mapped_column(Date)  # the board's date
    minute_ref: Mapped[str | None] = mapped_column(String(60))
    # What the approval took, per guarantee, and in all (the journal entry's amount).
    recovered: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    recovered_total: Mapped[Decimal | None] = mapped_column(Money())
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
