"""The chart of accounts and the balances the statements are built from.

The ledger keeps one account per member, loan and purpose; the chart groups them for the
books. A chart line maps a ledger kind ("savings": every member's deposits), the principal
of one loan product ("loan_principal:3") or a general account staff added ("COA-5150");
headers group lines. The mapping is read when a statement is built, so every posting ever
made, and every one to come, lands on a line of the chart without the ledger knowing it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, literal, or_, select

from app.errors import SaccoError
from app.extensions import db
from app.models import (
    ACCOUNT_KINDS,
    Account,
    ChartAccount,
    JournalEntry,
    JournalLine,
    Loan,
    LoanProduct,
)
from app.models.books import CHART_TYPES
from app.models.types import utcnow
from app.money import ZERO
from app.services.audit import audit_record
from app.services.books.totals import journal_totals
from app.services.bulk import insert_ignoring
from app.services.ledger import account_get_or_create
from app.services.permissions import permission_require

# The kinds whose sign is the SACCO's result: their lines make the income statement.
RESULT_TYPES = ("income", "expense")

# Journal entries that close a year: the income statement leaves them out (they move the
# year's result to retained earnings; they are not income or expense).
YEAR_END_KIND = "year_end_close"

# (code, name, type, parent code, maps). A None map is a header. Codes: 1 assets,
# 2 liabilities, 3 equity, 4 income, 5 expenses, as SACCO charts in Kenya number them.
DEFAULT_CHART: tuple[tuple[str, str, str, str | None, str | None], ...] = (
    ("1000", "Assets", "asset", None, None),
    ("1100", "Cash and cash equivalents", "asset", "1000", None),
    ("1110", "Cash at branch", "asset", "1100", "cash"),
    ("1120", "Bank", "asset", "1100", "bank"),
    ("1130", "M-PESA Paybill clearing", "asset", "1100", "mpesa_clearing"),
    ("1140", "M-PESA B2C utility float", "asset", "1100", "b2c_utility"),
    ("1200", "Loans to members", "asset", "1000", None),
    ("1210", "Loans receivable", "asset", "1200", None),
    ("1219", "Loans receivable, other products", "asset", "1210", "loan_principal"),
    ("1220", "Interest receivable", "asset", "1200", "loan_interest"),
    ("1230", "Fees receivable", "asset", "1200", "loan_fees"),
    ("1240", "Penalties receivable", "asset", "1200", "loan_penalty"),
    ("1250", "Loan-loss provision", "asset", "1200", "loan_loss_provision"),
    ("1260", "Interest in suspense", "asset", "1200", "interest_suspense"),
    ("2000", "Liabilities", "liability", None, None),
    ("2100", "Member deposits and savings", "liability", "2000", None),
    ("2110", "Member deposits", "liability", "2100", "savings"),
    ("2120", "Ordinary savings", "liability", "2100", "member_savings"),
    ("2130", "Fixed deposits", "liability", "2100", "fixed_deposit"),
    ("2140", "Target savings", "liability", "2100", "target_savings"),
    ("2200", "Payables", "liability", "2000", None),
    ("2210", "Withdrawals in transit to M-PESA", "liability", "2200", "withdrawals_pending"),
    ("2220", "Refunds payable to former members", "liability", "2200", "refunds_payable"),
    ("2230", "Withholding tax payable", "liability", "2200", "withholding_tax"),
    ("2240", "Dividends payable", "liability", "2200", "dividends_payable"),
    ("2250", "Suspense: unmatched M-PESA payments", "liability", "2200", "suspense"),
    ("3000", "Equity", "equity", None, None),
    ("3100", "Share capital", "equity", "3000", "share_capital"),
    ("3200", "Institutional capital", "equity", "3000", None),
    ("3210", "Statutory reserve", "equity", "3200", "statutory_reserve"),
    ("3220", "Retained earnings", "equity", "3200", "retained_earnings"),
    ("3230", "Balances brought forward", "equity", "3200", "opening_balances"),
    ("3300", "Dividends declared", "equity", "3000", "dividends"),
    ("4000", "Income", "income", None, None),
    ("4100", "Interest on loans", "income", "4000", "income_interest"),
    ("4200", "Fees and commissions", "income", "4000", "income_fees"),
    ("4300", "Penalties", "income", "4000", "income_penalty"),
    ("4400", "Recoveries on loans written off", "income", "4000", "income_recovery"),
    ("5000", "Expenses", "expense", None, None),
    ("5100", "Interest on deposits and savings", "expense", "5000", "interest_expense"),
    ("5200", "Loans written off", "expense", "5000", "write_off_expense"),
    ("5300", "Loan-loss provision charge", "expense", "5000", "provision_expense"),
)

# A loan product's own line under "Loans receivable": 1210-<product code>.
LOANS_RECEIVABLE = "1210"
GENERAL_PREFIX = "COA-"


class ChartError(SaccoError):
    """A change to the chart that must not happen; nothing was written."""


def chart_ensure() -> None:
    """The default chart and a line per loan product, whatever is missing added (safe when
    two callers race: the code's unique constraint decides). Commits nothing."""
    rows = [
        dict(code=code, name=name, type=kind, header=maps is None, maps=maps, system=True)
        for code, name, kind, _parent, maps in DEFAULT_CHART
    ]
    have = set(db.session.scalars(select(ChartAccount.code)))
    products = db.session.execute(select(LoanProduct.id, LoanProduct.code, LoanProduct.name)).all()
    for product_id, code, name in products:
        rows.append(
            dict(
                code=f"{LOANS_RECEIVABLE}-{code}"[:20],
                name=f"Loans receivable: {name}"[:120],
                type="asset",
                header=False,
                maps=f"loan_principal:{product_id}",
                system=True,
            )
        )
    missing = [row for row in rows if row["code"] not in have]
    if not missing:
        return
    now = utcnow()
    db.session.execute(
        insert_ignoring(ChartAccount, ["code"]),
        [{**row, "created_by": "system", "created_at": now, "parent_id": None} for row in missing],
    )
    ids = dict(db.session.execute(select(ChartAccount.code, ChartAccount.id)).all())
    parents = {code: parent for code, _n, _k, parent, _m in DEFAULT_CHART}
    for row in missing:
        parent = parents.get(str(row["code"]), LOANS_RECEIVABLE)
        if parent is not None:
            db.session.execute(
                ChartAccount.__table__.update()
                .where(ChartAccount.code == row["code"], ChartAccount.parent_id.is_(None))
                .values(parent_id=ids[parent])
            )
    db.session.expire_all()


def chart_accounts() -> list[ChartAccount]:
    """The whole chart in code order (seeded first if anything is missing)."""
    chart_ensure()
    return list(db.session.scalars(select(ChartAccount).order_by(ChartAccount.code)))


def chart_add(
    *, code: str, name: str, type: str, parent_code: str | None, actor: Any, header: bool = False
) -> ChartAccount:
    """Staff add a line to the chart: a header to group lines, or a general account that
    journal entries can post to. Audited; commits."""
    permission_require(actor, "books.chart")
    chart_ensure()
    code, name = code.strip(), name.strip()
    if not code or not code.replace("-", "").isalnum() or len(code) > 20:
        raise ChartError("a code is 1 to 20 letters, digits or dashes")
    if not name:
        raise ChartError("the account needs a name")
    if type not in CHART_TYPES:
        raise ChartError(f"the type is one of {', '.join(CHART_TYPES)}")
    if db.session.scalar(select(ChartAccount.id).where(ChartAccount.code == code)):
        raise ChartError(f"code {code} is taken")
    parent = None
    if parent_code:
        parent = db.session.scalar(select(ChartAccount).where(ChartAccount.code == parent_code))
        if parent is None:
            raise ChartError(f"no account {parent_code} to put it under")
        if not parent.header:
            raise ChartError(f"{parent.code} {parent.name} posts; only a header groups accounts")
        if parent.type != type:
            raise ChartError(f"{parent.code} groups {parent.type} accounts, not {type}")
    line = ChartAccount(
        code=code,
        name=name[:120],
        type=type,
        parent_id=parent.id if parent else None,
        header=header,
        maps=None if header else f"{GENERAL_PREFIX}{code}",
        system=False,
        created_by=_actor(actor),
    )
    db.session.add(line)
    db.session.flush()
    if not header:
        account_get_or_create(code=f"{GENERAL_PREFIX}{code}", kind="general", name=name[:120])
    audit_record(
        actor=_actor(actor),
        action="chart.add",
        object_type="chart_account",
        object_id=code,
        before=None,
        after={"name": name, "type": type, "parent": parent_code, "header": header},
    )
    db.session.commit()
    return line


def chart_delete(*, code: str, actor: Any) -> None:
    """Remove a staff-added line nothing ever used: no postings, no lines under it."""
    permission_require(actor, "books.chart")
    line = db.session.scalar(select(ChartAccount).where(ChartAccount.code == code))
    if line is None:
        raise ChartError(f"no account {code}")
    if line.system:
        raise ChartError(f"{code} {line.name} is part of the SACCO's chart and stays")
    if db.session.scalar(select(ChartAccount.id).where(ChartAccount.parent_id == line.id)):
        raise ChartError(f"{code} {line.name} still groups other accounts")
    ledger = db.session.scalar(select(Account).where(Account.code == line.maps))
    if ledger is not None:
        used = db.session.scalar(
            select(JournalLine.id).where(JournalLine.account_id == ledger.id).limit(1)
        )
        if used is not None:
            raise ChartError(f"{code} {line.name} has postings: a used account is never deleted")
        db.session.delete(ledger)
    db.session.delete(line)
    audit_record(
        actor=_actor(actor),
        action="chart.delete",
        object_type="chart_account",
        object_id=code,
        before={"name": line.name, "type": line.type},
        after=None,
    )
    db.session.commit()


def _actor(actor: Any) -> str:
    email = getattr(actor, "email", None)
    return f"staff:{email}" if email else str(actor)


# -- balances ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mapping:
    """How ledger accounts find their chart line: by kind, by loan product, by code."""

    by_key: dict[str, ChartAccount]

    def line_for(self, kind: str, product_id: int | None, code: str | None) -> ChartAccount:
        if kind == "general" and code is not None and code in self.by_key:
            return self.by_key[code]
        if kind == "loan_principal" and product_id is not None:
            own = self.by_key.get(f"loan_principal:{product_id}")
            if own is not None:
                return own
        try:
            return self.by_key[kind]
        except KeyError:
            raise ChartError(f"no line of the chart maps ledger kind {kind!r}") from None


def chart_mapping() -> Mapping:
    chart_ensure()
    lines = db.session.scalars(select(ChartAccount).where(ChartAccount.maps.is_not(None)))
    return Mapping({line.maps: line for line in lines if line.maps})


def _group_columns() -> tuple[Any, ...]:
    general_code = case((Account.kind == "general", Account.code), else_=literal(None))
    product = case((Account.kind == "loan_principal", Loan.product_id), else_=literal(None))
    return Account.kind, product.label("product_id"), general_code.label("general_code")


def chart_balances(
    *,
    as_of: date,
    since: date | None = None,
    exclude_kinds: Iterable[str] = (),
) -> dict[int, Decimal]:
    """Each chart line's movement, debit positive, over the journal lines with a value date
    after `since` (None: from the beginning) up to and including `as_of`; headers not
    included (`chart_rollup` adds them up). Entries of `exclude_kinds` are left out."""
    # Closed months from their monthly totals, the other days from the lines (totals.py):
    # the same sums, without reading a closed month's lines again.
    mapping = chart_mapping()
    totals: dict[int, Decimal] = {}
    rows = journal_totals(as_of=as_of, since=since, exclude_kinds=exclude_kinds)
    for row_kind, product_id, code, amount in rows:
        line = mapping.line_for(row_kind, product_id, code)
        totals[line.id] = totals.get(line.id, ZERO) + Decimal(amount or 0)
    return totals


def chart_rollup(leaves: dict[int, Decimal]) -> dict[int, Decimal]:
    """Leaf movements with every header's total added (a header: the sum of its lines)."""
    parents = dict(db.session.execute(select(ChartAccount.id, ChartAccount.parent_id)).all())
    totals = dict(leaves)
    for line_id, amount in leaves.items():
        parent = parents.get(line_id)
        while parent is not None:
            totals[parent] = totals.get(parent, ZERO) + amount
            parent = parents.get(parent)
    return totals


def chart_line_filter(line: ChartAccount, mapping: Mapping | None = None) -> ColumnElement[bool]:
    """Which ledger accounts a chart line reports (for drill-down): join Loan on
    Account.loan_id (outer) before using it. A header reports its lines' accounts."""
    mapping = mapping or chart_mapping()
    if line.header:
        children = db.session.scalars(
            select(ChartAccount).where(ChartAccount.parent_id == line.id)
        ).all()
        return or_(false_(), *[chart_line_filter(child, mapping) for child in children])
    maps = line.maps or ""
    if maps.startswith(GENERAL_PREFIX):
        return and_(Account.kind == "general", Account.code == maps)
    if maps.startswith("loan_principal:"):
        return and_(Account.kind == "loan_principal", Loan.product_id == int(maps.split(":")[1]))
    if maps == "loan_principal":
        own = [
            int(key.split(":")[1]) for key in mapping.by_key if key.startswith("loan_principal:")
        ]
        return and_(
            Account.kind == "loan_principal",
            or_(Loan.product_id.is_(None), Loan.product_id.not_in(own) if own else true_()),
        )
    return Account.kind == maps


def false_() -> ColumnElement[bool]:
    return literal(False)


def true_() -> ColumnElement[bool]:
    return literal(True)


def chart_lines_query(
    line: ChartAccount, *, as_of: date, since: date | None = None
) -> Select[JournalLine, JournalEntry, Account]:
    """The journal lines behind a chart line's figure, oldest first: the drill-down. Their
    amounts sum to the figure `chart_balances` gives the line (debit positive)."""
    stmt = (
        select(JournalLine, JournalEntry, Account)
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .join(Account, Account.id == JournalLine.account_id)
        .outerjoin(Loan, Loan.id == Account.loan_id)
        .where(chart_line_filter(line), JournalEntry.value_date <= as_of)
        .order_by(JournalEntry.value_date, JournalEntry.id, JournalLine.id)
    )
    if since is not None:
        stmt = stmt.where(JournalEntry.value_date > since)
    return stmt


def kinds_of_type(chart_type: str) -> list[str]:
    """The ledger kinds the seeded chart puts under `chart_type` (general accounts aside)."""
    return [
        maps
        for _c, _n, kind, _p, maps in DEFAULT_CHART
        if kind == chart_type and maps is not None and maps in ACCOUNT_KINDS
    ]
