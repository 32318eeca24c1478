"""M-PESA: requests we send, callbacks we receive (raw first), and payments we post.

Exactly once is enforced by the database, not by a read-then-write: a CheckoutRequestID
and an OriginatorConversationID belong to one request, a receipt (STK receipt, C2B TransID,
B2C TransactionID) to one payment whatever the channel, and a loan has at most one STK
prompt and one payout open at a time (partial unique indexes, on PostgreSQL and SQLite).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.types import Money, UTCDateTime, utcnow

# A request in one of these states may still move money: a second one for the same loan
# would risk paying (or asking the member) twice.
OPEN_STATUSES = ("pending", "sending", "sent", "unknown")
# A flagged prompt waits for its query or for staff and holds no new prompt back (a
# flagged payout still does: money out is never risked twice).
_OPEN_SQL = "status IN ('pending', 'sending', 'sent', 'unknown') AND (kind = 'b2c' OR flag IS NULL)"


class MpesaRequest(Model):
    """An STK push, B2C payment or status query, stored before it is sent."""

    __tablename__ = "mpesa_requests"
    __table_args__ = (
        Index(
            "uq_mpesa_requests_open_per_loan",
            "loan_id",
            "kind",
            unique=True,
            postgresql_where=text(f"kind IN ('stk', 'b2c') AND {_OPEN_SQL}"),
            sqlite_where=text(f"kind IN ('stk', 'b2c') AND {_OPEN_SQL}"),
        ),
        # A member's withdrawal: one open at a time per account, as a loan's payout.
        Index(
            "uq_mpesa_requests_open_per_account",
            "account_id",
            "kind",
            unique=True,
            postgresql_where=text(f"kind = 'b2c' AND status IN {OPEN_STATUSES}"),
            sqlite_where=text(f"kind = 'b2c' AND status IN {OPEN_STATUSES}"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), index=True)  # stk|b2c|status
    # pending (written) -> sending (claimed by one job) -> sent (Daraja took it) ->
    # succeeded | failed; unknown when the outcome is not known (no answer, timeout,
    # unknown result code): a query settles it, never a resend.
    status: Mapped[str] = mapped_column(String(10), default="pending", index=True)
    originator_conversation_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    conversation_id: Mapped[str | None] = mapped_column(String(64), index=True)
    merchant_request_id: Mapped[str | None] = mapped_column(String(64))
    checkout_request_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    loan_id: Mapped[int | None] = mapped_column(ForeignKey("loans.id"), index=True)
    # A withdrawal (purpose "withdrawal"): the savings account the money came from.
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    # A status query points at the payment it asks about.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("mpesa_requests.id"), index=True)
    phone: Mapped[str] = mapped_column(String(12))
    amount: Mapped[Decimal] = mapped_column(Money())
    account_reference: Mapped[str | None] = mapped_column(String(12))
    purpose: Mapped[str] = mapped_column(String(20), default="repayment")
    channel: Mapped[str | None] = mapped_column(String(10))  # ussd|console|system
    requested_by: Mapped[str | None] = mapped_column(String(120))
    result_code: Mapped[str | None] = mapped_column(String(16))
    result_desc: Mapped[str | None] = mapped_column(String(255))
    receipt: Mapped[str | None] = mapped_column(String(20))
    # Set when staff must look: a callback that disagrees with the request, or no final
    # answer after a day. Nothing is posted while it is set.
    flag: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"<MpesaRequest {self.id} {self.kind} {self.status} {self.amount}>"


class MpesaCallback(Model):
    """Every callback body exactly as received (size-capped), written before any processing."""

    __tablename__ = "mpesa_callbacks"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    raw_body: Mapped[str] = mapped_column(Text)
    body_size: Mapped[int | None] = mapped_column(Integer)  # bytes received, before the cap
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    reference: Mapped[str | None] = mapped_column(String(64), index=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("mpesa_requests.id"), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # received -> processed | duplicate | unmatched | flagged | invalid | failed;
    # refused (source address not allowed). Staff see every status but processed.
    status: Mapped[str] = mapped_column(String(12), default="received", index=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)


class Payment(Model):
    """Money that moved through M-PESA. One row per receipt, whatever the channel."""

    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Unique across channels; NULL only while an STK payment settled by a query (which
    # carries no receipt) waits for its late callback.
    receipt: Mapped[str | None] = mapped_column(String(20), unique=True)
    channel: Mapped[str] = mapped_column(String(4))  # stk|c2b|b2c
    direction: Mapped[str] = mapped_column(String(3))  # in|out
    amount: Mapped[Decimal] = mapped_column(Money())
    phone: Mapped[str | None] = mapped_column(String(80))  # may be masked or hashed (C2B)
    bill_ref: Mapped[str | None] = mapped_column(String(40))
    payer_name: Mapped[str | None] = mapped_column(String(120))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    loan_id: Mapped[int | None] = mapped_column(ForeignKey("loans.id"), index=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("mpesa_requests.id"))
    callback_id: Mapped[int | None] = mapped_column(ForeignKey("mpesa_callbacks.id"))
    # posted | suspense (matched no member) | assigned (suspense money staff placed)
    status: Mapped[str] = mapped_column(String(10), default="posted", index=True)
    # Suspense only: the member whose phone the (hashed or masked) MSISDN matches.
    suggested_member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    assigned_by: Mapped[str | None] = mapped_column(String(120))
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    journal_entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    transacted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
