"""The member-owned side (SPEC "Savings, shares and dividends"): account products, the
interest posted on savings, and the annual dividend run.

A member's money sits in ledger accounts (`Account`, one per member and product); these
tables say what each product allows and record the postings that must happen once per
account and period (interest) or per member and year (dividends), keyed by unique
constraints so a rerun or a second worker never pays twice.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import Model
from app.models.types import Money, UTCDateTime, utcnow
from app.money import ZERO

# deposits: non-withdrawable, the base of loan limits, refunded only on exit (ledger kind
# "savings", the member's first account since the first release); savings: withdrawable
# (ledger kind "member_savings"); shares: share capital, never withdrawable nor lent against.
# fixed: a sum locked for a term at a rate, paid with its interest at maturity (or rolled
# over), broken early at a penalty; target: savings locked until the member's date or
# amount (school fees, a holiday), then released to their withdrawable savings.
PRODUCT_KINDS = ("deposits", "savings", "shares", "fixed", "target")
LEDGER_KIND = {
    "deposits": "savings",
    "savings": "member_savings",
    "shares": "share_capital",
    "fixed": "fixed_deposit",
    "target": "target_savings",
}
INTEREST_PERIODS = ("none", "monthly", "quarterly", "yearly")
DIVIDEND_METHODS = ("simple", "weighted")
# What happens to a member's net dividend: credited to withdrawable savings, sent by
# M-PESA, or first used to clear arrears on their loans (the rest to savings).
DIVIDEND_PAYOUTS = ("savings", "mpesa", "arrears_first")
DIVIDEND_STATUSES = ("draft", "approved", "posting", "posted", "cancelled")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class AccountProduct(Model):
    """What a kind of member account allows: staff configure these in the console."""

    __tablename__ = "account_products"
    __table_args__ = (
        CheckConstraint(_in("kind", PRODUCT_KINDS), name="kind"),
        CheckConstraint(_in("interest_period", INTEREST_PERIODS), name="interest_period"),
        CheckConstraint("interest_rate >= 0", name="interest_rate"),
        CheckConstraint("min_balance >= 0 AND withdrawal_fee >= 0", name="limits"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(10), unique=True)  # the ledger code prefix
    name: Mapped[str] = mapped_column(String(60))
    name_sw: Mapped[str | None] = mapped_column(String(60))
    kind: Mapped[str] = mapped_column(String(10))
    # Appended to the member number to make the account's number, which is also its Paybill
    # account reference ("M000123" + "S"); empty for the deposits a bare number pays.
    ref_suffix: Mapped[str] = mapped_column(String(3), unique=True, default="")
    withdrawable: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Percent a year on the daily closing balance, posted at the end of each period.
    interest_rate: Mapped[Decimal] = mapped_column(Numeric(7, 4), default=ZERO, server_default="0")
    interest_period: Mapped[str] = mapped_column(String(10), default="none", server_default="none")
    min_balance: Mapped[Decimal] = mapped_column(Money(), default=ZERO, server_default="0")
    # Withdrawals to M-PESA: at most this much a member a day (None: no daily limit), and
    # this fee on each (to fee income).
    daily_withdrawal_limit: Mapped[Decimal | None] = mapped_column(Money())
    withdrawal_fee: Mapped[Decimal] = mapped_column(Money(), default=ZERO, server_default="0")
    # Fixed deposits: the term, and the share of the interest a member forfeits by
    # breaking one before it matures (percent; 100 pays no interest at all).
    term_months: Mapped[int | None] = mapped_column(Integer)
    break_penalty: Mapped[Decimal] = mapped_column(
        Numeric(5, 2), default=Decimal("50"), server_default="50"
    )
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @property
    def ledger_kind(self) -> str:
        return LEDGER_KIND[self.kind]

    def name_in(self, language: str) -> str:
        return (self.name_sw or self.name) if language == "sw" else self.name

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<AccountProduct {self.code} {self.kind}>"


class InterestPosting(Model):
    """Interest credited to one account for one period: at most once (the unique key)."""

    __tablename__ = "interest_postings"
    __table_args__ = (UniqueConstraint("account_id", "period_end", name="uq_interest_postings"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    # Sum of the daily closing balances over the period (the accrual base), then the result.
    balance_days: Mapped[Decimal] = mapped_column(Numeric(20, 2))
    gross: Mapped[Decimal] = mapped_column(Money())
    tax: Mapped[Decimal] = mapped_column(Money())
    net: Mapped[Decimal] = mapped_column(Money())
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DividendRun(Model):
    """One year's dividend on share capital and interest on deposits, as the AGM declared.

    draft (declared; preview computed) -> approved (a branch manager, not the maker) ->
    posting (the partitioned job is paying) -> posted; cancelled before approval only.
    """

    __tablename__ = "dividend_runs"
    __table_args__ = (
        CheckConstraint(_in("status", DIVIDEND_STATUSES), name="status"),
        CheckConstraint(_in("method", DIVIDEND_METHODS), name="method"),
        CheckConstraint(_in("payout", DIVIDEND_PAYOUTS), name="payout"),
        CheckConstraint("share_rate >= 0 AND deposit_rate >= 0", name="rates"),
        # One live run a year: a cancelled one may be declared again.
        Index(
            "uq_dividend_runs_year_live",
            "year",
            unique=True,
            postgresql_where=text("status <> 'cancelled'"),
            sqlite_where=text("status <> 'cancelled'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    year: Mapped[int] = mapped_column(Integer)
    share_rate: Mapped[Decimal] = mapped_column(Numeric(7, 4))  # percent, on share capital
    deposit_rate: Mapped[Decimal] = mapped_column(Numeric(7, 4))  # percent, on deposits
    method: Mapped[str] = mapped_column(String(10))
    payout: Mapped[str] = mapped_column(String(15), default="savings")
    # The withholding tax rates in force when it was declared (settings), kept with the run
    # so a preview, the posting and the report agree even if the settings change.
    dividend_tax_rate: Mapped[Decimal] = mapped_column(Numeric(7, 4))
    interest_tax_rate: Mapped[Decimal] = mapped_column(Numeric(7, 4))
    status: Mapped[str] = mapped_column(String(10), default="draft")
    resolution_ref: Mapped[str | None] = mapped_column(String(60))  # the AGM minute
    declared_by_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    declared_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    value_date: Mapped[date | None] = mapped_column(Date)  # the posting's value date
    # Totals of the preview (and, once posted, of what was paid), for the pages and report.
    members: Mapped[int] = mapped_column(Integer, default=0)
    dividend_gross: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    interest_gross: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    tax: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    net: Mapped[Decimal] = mapped_column(Money(), default=ZERO)
    note: Mapped[str | None] = mapped_column(Text)

    declared_by = relationship("StaffUser", foreign_keys=[declared_by_id], lazy="joined")
    approved_by = relationship("StaffUser", foreign_keys=[approved_by_id], lazy="joined")


class DividendLine(Model):
    """One member's figures in a run; paid at most once (unique run and member)."""

    __tablename__ = "dividend_lines"
    __table_args__ = (UniqueConstraint("run_id", "member_id", name="uq_dividend_lines"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("dividend_runs.id"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    share_basis: Mapped[Decimal] = mapped_column(Money())  # the balance the method weighs
    deposit_basis: Mapped[Decimal] = mapped_column(Money())
    dividend: Mapped[Decimal] = mapped_column(Money())  # gross, on share capital
    interest: Mapped[Decimal] = mapped_column(Money())  # gross, on deposits
    tax: Mapped[Decimal] = mapped_column(Money())
    net: Mapped[Decimal] = mapped_column(Money())
    # Set when paid: the entry, and where the net went (savings|mpesa|arrears).
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    paid_to: Mapped[str | None] = mapped_column(String(10))
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


STANDING_TARGETS = ("loan", "deposits", "shares", "savings")
# Where the money comes from: the member's withdrawable savings, or their M-PESA, asked for
# by a prompt on the day (a "payday" order the member opted into).
STANDING_SOURCES = ("savings", "mpesa")
STANDING_STATUSES = ("active", "cancelled")
STANDING_RUN_STATUSES = ("done", "partial", "short", "skipped", "prompted")


class StandingOrder(Model):
    """A member's monthly transfer from their withdrawable savings to a loan, their
    deposits or their shares, on a day of the month (SPEC "Savings, shares and dividends").
    """

    __tablename__ = "standing_orders"
    __table_args__ = (
        CheckConstraint(_in("target", STANDING_TARGETS), name="target"),
        CheckConstraint(_in("status", STANDING_STATUSES), name="status"),
        CheckConstraint("amount > 0", name="amount_positive"),
        # 28 at most: every month has the day, so an order never skips February.
        CheckConstraint("day_of_month BETWEEN 1 AND 28", name="day_of_month"),
        CheckConstraint("target <> 'loan' OR loan_id IS NOT NULL", name="loan_named"),
        CheckConstraint(_in("source", STANDING_SOURCES), name="source"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    source: Mapped[str] = mapped_column(String(10), default="savings", server_default="savings")
    # savings: the account paid from; mpesa: the account the prompt pays into.
    source_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    target: Mapped[str] = mapped_column(String(10))
    loan_id: Mapped[int | None] = mapped_column(ForeignKey("loans.id"))
    amount: Mapped[Decimal] = mapped_column(Money())
    day_of_month: Mapped[int] = mapped_column(Integer)
    # Short of the amount on the day: move what there is (True) or nothing (False).
    partial: Mapped[bool] = mapped_column(Boolean, default=True)
    starts_on: Mapped[date] = mapped_column(Date)
    ends_on: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(10), default="active", index=True)
    channel: Mapped[str] = mapped_column(String(10), default="console")  # ussd|console
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    cancelled_by: Mapped[str | None] = mapped_column(String(120))
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class StandingOrderRun(Model):
    """What one month's execution of an order did: at most one per order and due date."""

    __tablename__ = "standing_order_runs"
    __table_args__ = (
        UniqueConstraint("order_id", "due_on", name="uq_standing_order_runs"),
        CheckConstraint(_in("status", STANDING_RUN_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("standing_orders.id"), index=True)
    due_on: Mapped[date] = mapped_column(Date)
    run_on: Mapped[date] = mapped_column(Date)
    asked: Mapped[Decimal] = mapped_column(Money())
    moved: Mapped[Decimal] = mapped_column(Money())
    # done (all), partial (what the balance allowed), short (nothing: too little, or the
    # order moves all or nothing), skipped (the loan is no longer open).
    status: Mapped[str] = mapped_column(String(10))
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    # A payday order's prompt: the money arrives (or not) by its callback.
    request_id: Mapped[int | None] = mapped_column(ForeignKey("mpesa_requests.id"))
    note: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


SHARE_TRANSFER_STATUSES = ("requested", "approved", "rejected")


class ShareTransfer(Model):
    """Share capital sold by one member to another: entered by staff from the signed
    form, approved by a branch manager who did not enter it, then posted once."""

    __tablename__ = "share_transfers"
    __table_args__ = (
        CheckConstraint(_in("status", SHARE_TRANSFER_STATUSES), name="status"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("from_member_id <> to_member_id", name="two_members"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    from_member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    to_member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money())
    status: Mapped[str] = mapped_column(String(10), default="requested", index=True)
    form_ref: Mapped[str | None] = mapped_column(String(60))  # the signed transfer form
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reason: Mapped[str | None] = mapped_column(Text)  # why rejected
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))


EXIT_STATUSES = ("notice", "settled", "paid", "cancelled")


class MemberExit(Model):
    """A member leaving the SACCO: the notice, then the settlement (loans offset, shares
    redeemed, the rest owed to them), then the payout staff record."""

    __tablename__ = "member_exits"
    __table_args__ = (
        CheckConstraint(_in("status", EXIT_STATUSES), name="status"),
        # One exit in progress per member; a cancelled one may be followed by another.
        Index(
            "uq_member_exits_open",
            "member_id",
            unique=True,
            postgresql_where=text("status IN ('notice', 'settled')"),
            sqlite_where=text("status IN ('notice', 'settled')"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    status: Mapped[str] = mapped_column(String(10), default="notice")
    reason: Mapped[str] = mapped_column(Text)
    requested_on: Mapped[date] = mapped_column(Date)
    notice_ends_on: Mapped[date] = mapped_column(Date)
    requested_by: Mapped[str] = mapped_column(String(120))
    settled_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    settled_on: Mapped[date | None] = mapped_column(Date)
    # What the settlement did, figure by figure (the exit statement prints it).
    settlement: Mapped[dict | None] = mapped_column(JSON)
    refund: Mapped[Decimal | None] = mapped_column(Money())  # owed to the member
    paid_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    paid_on: Mapped[date | None] = mapped_column(Date)
    payment_method: Mapped[str | None] = mapped_column(String(10))  # bank|cash
    payment_ref: Mapped[str | None] = mapped_column(String(60))
    cancelled_by: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


FIXED_STATUSES = ("active", "matured", "broken")
ON_MATURITY = ("savings", "rollover")


class FixedDeposit(Model):
    """One fixed deposit: its own ledger account, the sum, rate and term agreed."""

    __tablename__ = "fixed_deposits"
    __table_args__ = (
        CheckConstraint(_in("status", FIXED_STATUSES), name="status"),
        CheckConstraint(_in("on_maturity", ON_MATURITY), name="on_maturity"),
        CheckConstraint("principal > 0 AND rate >= 0", name="terms"),
        Index("ix_fixed_deposits_status_maturity_on", "status", "maturity_on"),  # the scan
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("account_products.id"))
    principal: Mapped[Decimal] = mapped_column(Money())
    rate: Mapped[Decimal] = mapped_column(Numeric(7, 4))  # percent a year, fixed at opening
    start_on: Mapped[date] = mapped_column(Date)
    maturity_on: Mapped[date] = mapped_column(Date)
    on_maturity: Mapped[str] = mapped_column(String(10), default="savings")
    status: Mapped[str] = mapped_column(String(10), default="active")
    terms_run: Mapped[int] = mapped_column(Integer, default=1)  # 2 after one rollover, ...
    interest_paid: Mapped[Decimal] = mapped_column(Money(), default=ZERO)  # net, all terms
    closed_on: Mapped[date | None] = mapped_column(Date)
    opened_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


TARGET_STATUSES = ("active", "released")


class SavingsTarget(Model):
    """What locks a target savings account: a date, an amount, or both (whichever comes
    first releases it)."""

    __tablename__ = "savings_targets"
    __table_args__ = (
        CheckConstraint(_in("status", TARGET_STATUSES), name="status"),
        CheckConstraint("goal_amount IS NOT NULL OR unlock_on IS NOT NULL", name="a_lock"),
        # One target running per account; released ones stay as the account's history.
        Index(
            "uq_savings_targets_active",
            "account_id",
            unique=True,
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    name: Mapped[str] = mapped_column(String(40))  # "School fees", as the member calls it
    goal_amount: Mapped[Decimal | None] = mapped_column(Money())
    unlock_on: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(10), default="active")
    released_on: Mapped[date | None] = mapped_column(Date)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


BRANCH_WITHDRAWAL_STATUSES = ("pending", "paid", "rejected")


class BranchWithdrawal(Model):
    """A withdrawal staff pay at the branch, in cash or by bank transfer. Above the
    approval limit it waits, its money held, for a branch manager who did not enter it."""

    __tablename__ = "branch_withdrawals"
    __table_args__ = (
        CheckConstraint(_in("status", BRANCH_WITHDRAWAL_STATUSES), name="status"),
        CheckConstraint("method IN ('bank', 'cash')", name="method"),
        CheckConstraint("amount > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[Decimal] = mapped_column(Money())
    method: Mapped[str] = mapped_column(String(4))
    reference: Mapped[str] = mapped_column(String(60))  # the voucher or bank reference
    status: Mapped[str] = mapped_column(String(10), index=True)
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reason: Mapped[str | None] = mapped_column(Text)  # why rejected
