"""Double-entry journal. Amounts on lines are signed: debit positive, credit negative."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import Model
from app.models.types import Money, UTCDateTime, utcnow
from app.money import ZERO

# kind -> normal side. Credit-normal accounts (what the SACCO owes or earns) show their
# balance with the sign flipped, so a member's savings read as a positive number.
ACCOUNT_KINDS: dict[str, str] = {
    "savings": "credit",  # the member's deposits (non-withdrawable; the name is historical)
    "member_savings": "credit",  # withdrawable savings products
    "fixed_deposit": "credit",  # a fixed deposit, one account each
    "target_savings": "credit",  # savings locked until the member's date or amount
    "share_capital": "credit",
    "loan_principal": "debit",
    "loan_interest": "debit",
    "loan_fees": "debit",
    "loan_penalty": "debit",
    "mpesa_clearing": "debit",
    "b2c_utility": "debit",
    "suspense": "credit",
    "income_interest": "credit",
    "income_fees": "credit",
    "income_penalty": "credit",
    "income_recovery": "credit",
    "write_off_expense": "debit",
    "opening_balances": "credit",  # the other side of balances brought forward on import
    "interest_expense": "debit",  # interest paid on savings and deposits
    "dividends": "debit",  # dividends declared: the surplus appropriated to members
    "withholding_tax": "credit",  # tax withheld from members, owed to KRA
    "withdrawals_pending": "credit",  # members' withdrawals sent to M-PESA, result awaited
    "refunds_payable": "credit",  # what the SACCO owes members who have left
    "bank": "debit",  # the SACCO's bank account (refunds paid by transfer or cheque)
    "cash": "debit",  # cash at the branch
    # The books (issue 21): closing, provisioning and staff-added general accounts.
    "retained_earnings": "credit",  # each year's result, moved here at year-end close
    "statutory_reserve": "credit",  # institutional capital set aside from surpluses
    "loan_loss_provision": "credit",  # contra-asset: the provision on loans at risk
    "interest_suspense": "credit",  # contra-asset: interest on non-performing loans
    "provision_expense": "debit",  # the charge (or release) of the loan-loss provision
    "dividends_payable": "credit",  # dividends declared and not yet paid
    "general": "debit",  # an account staff added to the chart (its chart type says more)
}


class Account(Model):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    name: Mapped[str] = mapped_column(String(120))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    loan_id: Mapped[int | None] = mapped_column(ForeignKey("loans.id"), index=True)
    # A member's account: the product that says what it allows (SPEC "Savings, shares and
    # dividends"); None for loan and general-ledger accounts.
    product_id: Mapped[int | None] = mapped_column(ForeignKey("account_products.id"), index=True)
    status: Mapped[str] = mapped_column(String(8), default="open")
    # A cache of sum(lines.amount), debit-positive; `sacco ledger check` rebuilds it.
    balance: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    member = relationship("Member", lazy="joined")
    product = relationship("AccountProduct", lazy="joined")

    @property
    def normal_side(self) -> str:
        return ACCOUNT_KINDS[self.kind]

    @property
    def display_balance(self) -> Decimal:
        return -self.balance if self.normal_side == "credit" else self.balance

    def __repr__(self) -> str:
        return f"<Account {self.code} {self.balance}>"


class JournalEntry(Model):
    __tablename__ = "journal_entries"
    # Entries of one kind by value date: the dashboard's repayments per day.
    __table_args__ = (Index("ix_journal_entries_kind_value_date", "kind", "value_date"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Indexed by ix_journal_entries_kind_value_date, which starts with it.
    kind: Mapped[str] = mapped_column(String(30))
    description: Mapped[str] = mapped_column(String(255), default="")
    # Whatever makes this posting unique in the world (an M-PESA receipt, an import row):
    # the database refuses a second entry with the same key.
    idempotency_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    value_date: Mapped[date] = mapped_column(Date)
    posted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(60), default="system")
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    loan_id: Mapped[int | None] = mapped_column(ForeignKey("loans.id"), index=True)
    # A correction posted in an open period names the entry (in a closed one) it corrects.
    corrects_entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))

    lines: Mapped[list[JournalLine]] = relationship(
        back_populates="entry", cascade="all, delete-orphan", lazy="selectin"
    )


class JournalLine(Model):
    __tablename__ = "journal_lines"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="nonzero"),
        Index("ix_journal_lines_account_entry", "account_id", "entry_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("journal_entries.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[Decimal] = mapped_column(Money())

    entry: Mapped[JournalEntry] = relationship(back_populates="lines")
    account: Mapped[Account] = relationship(lazy="joined")
