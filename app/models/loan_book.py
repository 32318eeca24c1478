"""A loan book upload parsed once: its rows as read and what checking each one found.

The console's preview pages and its import read these rows, never the uploaded file
again: a page load costs a query of 100 rows, not a parse of the whole book, and every
web replica sees the same preview because it lives beside the books, not on one disk.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.types import UTCDateTime, utcnow

PREVIEW_OUTCOMES = ("ok", "imported", "bad")


class LoanBookPreview(Model):
    __tablename__ = "loan_book_previews"

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(22), unique=True)  # random, in the page's URL
    filename: Mapped[str] = mapped_column(String(120))
    as_of: Mapped[date] = mapped_column(Date)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    ok_count: Mapped[int] = mapped_column(Integer, default=0)
    imported_count: Mapped[int] = mapped_column(Integer, default=0)
    bad_count: Mapped[int] = mapped_column(Integer, default=0)


class LoanBookPreviewRow(Model):
    __tablename__ = "loan_book_preview_rows"
    __table_args__ = (
        Index("ix_loan_book_preview_rows_preview_line", "preview_id", "line", unique=True),
        Index("ix_loan_book_preview_rows_preview_outcome", "preview_id", "outcome", "line"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    preview_id: Mapped[int] = mapped_column(ForeignKey("loan_book_previews.id", ondelete="CASCADE"))
    line: Mapped[int] = mapped_column(Integer)
    cells: Mapped[dict[str, Any]] = mapped_column(JSON)  # column -> the cell as text
    outcome: Mapped[str] = mapped_column(String(10))  # ok | imported | bad
    reason: Mapped[str] = mapped_column(Text, default="")
