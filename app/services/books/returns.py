"""The prudential returns a deposit-taking SACCO files with SASRA, built from the books.

Sources (looked up for issue 21; the regulation's own text was not readable in full, so
what could not be confirmed is said so beside the figure it concerns):

- The Sacco Societies (Deposit-Taking Sacco Business) Regulations, 2010 (Legal Notice
  No. 95 of 2010; Kenya Law, https://new.kenyalaw.org/akn/ke/act/ln/2010/95). Its
  arrangement: Part III Capital adequacy (r. 9 minimum capital requirements, r. 10 higher
  minimum ratios, r. 11 capital adequacy return, r. 12 sanctions); Part IV Liquidity
  (r. 13 liquidity and asset liability management, r. 14 liquidity statement return);
  Part VII Risk classification of assets and provisioning. r. 3 defines core capital as
  "the fully paid up members' shares, capital issued, disclosed reserves, retained
  earnings, grants and donations all of which are not meant to be expended unless on
  liquidation".
- SASRA's explanatory note "Capital adequacy for deposit-taking SACCOs"
  (sasra.go.ke/index.php/regulation/capital-adequacy-for-deposit-taking-saccos), written
  "pursuant to Section 9" of the Regulations: core capital = paid-up share capital +
  statutory reserves + retained earnings + disclosed reserves + grants/donations;
  institutional capital = core capital less members' share capital.
- The r. 9 minimums as SASRA and the press quote them (the note above is cut off before
  its table; Business Daily 2017 quoting SASRA, Statesman Digital 2024 quoting the
  regulation, The Standard 2017 quoting SASRA's report): core capital not less than
  KES 10 million; core capital not less than 10% of total assets; core capital not less
  than 8% of total deposit liabilities; institutional capital not less than 8% of total
  assets. Liquidity: 15% of savings deposits and short-term liabilities (Business Daily
  2022: "Section 30 of the Sacco Societies Act and rule 13 of the Regulations").
- The return forms: SASRA's "DTS Regulatory Return Forms" page
  (https://www.sasra.go.ke/dts-regulatory-return-forms/): Form 1 Capital Adequacy,
  Form 2 Liquidity Statement, Form 3 Statement of Deposit Return, Form 4 Risk
  Classification of Assets and Provisioning. The forms' spreadsheets themselves were not
  readable here, so each return follows the form's title and the regulation's
  quantities, not a cell-for-cell copy of SASRA's template.
- Due date: NOT FOUND. The press says the liquidity return is filed "at the end of every
  month"; SASRA's "Summary of SASRA required reports" (April 2011, with FSD Kenya) lists
  each report's due date but its table was not readable. SASRA_RETURNS_DUE_DAY (default
  15: the 15th of the following month) is an assumption to confirm with SASRA.

Every minimum is a setting (app/config.py, SASRA_*), the figures above the defaults, so a
higher minimum set by the Authority under r. 10 is a configuration change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import Account, ChartAccount, JournalEntry, JournalLine
from app.models.books import RegulatoryFiling
from app.money import ZERO, round_money
from app.services.audit import audit_record
from app.services.books.chart import chart_accounts, chart_balances, chart_rollup
from app.services.books.exports import Report, ReportRow, report_pdf, report_xlsx
from app.services.books.periods import month_bounds
from app.services.permissions import permission_require

HUNDRED = Decimal(100)
BELOW = "below minimum"

# The ledger kinds that are members' deposits and savings (chart 2100), and the size bands
# of the deposit return. The bands are OUR default: Form 3's own bands were not readable.
DEPOSIT_KINDS = ("savings", "member_savings", "fixed_deposit", "target_savings")
DEPOSIT_BANDS: tuple[tuple[Decimal, Decimal | None], ...] = (
    (Decimal("0"), Decimal("10000")),
    (Decimal("10000"), Decimal("50000")),
    (Decimal("50000"), Decimal("100000")),
    (Decimal("100000"), Decimal("500000")),
    (Decimal("500000"), Decimal("1000000")),
    (Decimal("1000000"), None),
)


class ReturnError(SaccoError):
    """A return that cannot be built or filed as asked; nothing was written."""


@dataclass(frozen=True)
class ReturnForm:
    code: str  # what the console and RegulatoryFiling.form call it
    number: str  # SASRA's form number
    title: str
    regulation: str
    build: Callable[[date], Report]


@dataclass(frozen=True)
class ReturnStatus:
    """A return on the Regulatory page: the last filed, the month to file next, its due
    date, and whether that date has passed."""

    form: ReturnForm
    last_filed: RegulatoryFiling | None
    next_period_end: date
    next_due: date
    overdue: bool


# -- settings ------------------------------------------------------------------------------


def _setting(name: str) -> Decimal:
    return Decimal(str(getattr(current_app.config["SETTINGS"], name)))


def return_minimums() -> dict[str, Decimal]:
    """The r. 9 / r. 13 minimums in force (settings; the regulation's figures by default)."""
    return {
        "core_capital": _setting("SASRA_MIN_CORE_CAPITAL"),
        "core_to_assets": _setting("SASRA_CORE_CAPITAL_TO_ASSETS_PERCENT"),
        "institutional_to_assets": _setting("SASRA_INSTITUTIONAL_CAPITAL_TO_ASSETS_PERCENT"),
        "core_to_deposits": _setting("SASRA_CORE_CAPITAL_TO_DEPOSITS_PERCENT"),
        "liquidity": _setting("SASRA_LIQUIDITY_PERCENT"),
    }


def return_due(period_end: date) -> date:
    """When the return for the month ending `period_end` is due: day SASRA_RETURNS_DUE_DAY
    of the following month (an assumption: see the module's note)."""
    day = int(current_app.config["SETTINGS"].SASRA_RETURNS_DUE_DAY)
    first, last = month_bounds(period_end + timedelta(days=1))
    return first.replace(day=min(max(day, 1), last.day))


# -- figures from the books ----------------------------------------------------------------


@dataclass(frozen=True)
class _Books:
    """The chart's balances at a month end, read once per return: a figure by chart code,
    liabilities, equity and income positive (a person's reading, not the journal's sign)."""

    lines: dict[str, ChartAccount]
    balance: dict[int, Decimal]

    def figure(self, code: str) -> Decimal:
        line = self.lines.get(code)
        if line is None:
            return ZERO
        amount = self.balance.get(line.id, ZERO)
        return amount if line.type in ("asset", "expense") else -amount

    def leaves_under(self, code: str) -> list[ChartAccount]:
        """The posting lines under a header (any depth), in code order."""
        top = self.lines.get(code)
        if top is None:
            return []
        children: dict[int | None, list[ChartAccount]] = {}
        for line in self.lines.values():
            children.setdefault(line.parent_id, []).append(line)
        found: list[ChartAccount] = []
        stack = [top]
        while stack:
            line = stack.pop()
            if not line.header:
                found.append(line)
            stack.extend(children.get(line.id, []))
        return sorted(found, key=lambda line: line.code)

    def result(self) -> Decimal:
        """The surplus of the year so far (income less expenses, not yet closed to retained
        earnings: the year-end close moves it there)."""
        return self.figure("4000") - self.figure("5000")


def _books(month_end: date) -> _Books:
    lines = {line.code: line for line in chart_accounts()}
    return _Books(lines, chart_rollup(chart_balances(as_of=month_end)))


def _ratio(numerator: Decimal, denominator: Decimal) -> Decimal | None:
    if denominator <= 0:
        return None
    return round_money(numerator * HUNDRED / denominator)


def _check(ratio: Decimal | None, minimum: Decimal) -> str | None:
    if ratio is None:
        return "no denominator"
    return BELOW if ratio < minimum else None


def _month_end(month_end: date) -> date:
    if not isinstance(month_end, date):
        raise ReturnError("the month end must be a date")
    if month_bounds(month_end)[1] != month_end:
        raise ReturnError(f"{month_end:%d %b %Y} is not the last day of a month")
    return month_end


def _subtitle(form: str, regulation: str, month_end: date) -> str:
    return f"SASRA {form} ({regulation}): as at {month_end:%d %B %Y}, KES"


# -- Form 1: capital adequacy --------------------------------------------------------------


def capital_adequacy(month_end: date) -> Report:
    """Form 1: core and institutional capital against total assets and total deposits, each
    ratio beside its r. 9 minimum, "below minimum" where it falls short.

    Core capital (r. 3; SASRA's note) is read off the equity side: share capital (3100),
    statutory reserve (3210), retained earnings (3220), balances brought forward (3230:
    opening balances taken on, which are the SACCO's own retained funds), less dividends
    declared (3300, a distribution out of them), plus the surplus of the year so far (not
    yet closed to retained earnings: it belongs to the SACCO until the AGM declares it
    away). Institutional capital = core capital less share capital. Total assets are net
    of the loan-loss provision and interest in suspense (contra-assets under 1200)."""
    month_end = _month_end(month_end)
    books = _books(month_end)
    mins = return_minimums()
    share = books.figure("3100")
    reserve = books.figure("3210")
    retained = books.figure("3220")
    brought = books.figure("3230")
    declared = -books.figure("3300")  # debit-normal: a reduction of equity
    surplus = books.result()
    core = share + reserve + retained + brought + declared + surplus
    institutional = core - share
    assets = books.figure("1000")
    deposits = books.figure("2100")
    core_assets = _ratio(core, assets)
    inst_assets = _ratio(institutional, assets)
    core_deposits = _ratio(core, deposits)

    def amount(label: str, value: Decimal, code: str | None = None, **kw: Any) -> ReportRow:
        return ReportRow(label, [value, None, None], code=code, **kw)

    rows = [
        ReportRow("A. Core capital", [None, None, None], bold=True),
        amount("Share capital (fully paid up)", share, "3100", level=1),
        amount("Statutory reserve", reserve, "3210", level=1),
        amount("Retained earnings", retained, "3220", level=1),
        amount("Balances brought forward", brought, "3230", level=1),
        amount("Less: dividends declared", declared, "3300", level=1),
        amount("Surplus of the year to date", surplus, level=1),
        amount("Core capital", core, bold=True),
        amount("Less: share capital", -share, "3100", level=1),
        amount("Institutional capital", institutional, "3200", bold=True),
        ReportRow("B. Assets and deposits", [None, None, None], bold=True),
        amount("Total assets (net of provisions)", assets, "1000", level=1),
        amount("Total deposit liabilities", deposits, "2100", level=1),
        ReportRow("C. Capital ratios (r. 9)", [None, None, None], bold=True),
        ReportRow(
            "Core capital against the minimum core capital",
            [core, None, mins["core_capital"]],
            level=1,
            check=BELOW if core < mins["core_capital"] else None,
        ),
        ReportRow(
            "Core capital to total assets",
            [None, core_assets, mins["core_to_assets"]],
            level=1,
            check=_check(core_assets, mins["core_to_assets"]),
        ),
        ReportRow(
            "Institutional capital to total assets",
            [None, inst_assets, mins["institutional_to_assets"]],
            level=1,
            check=_check(inst_assets, mins["institutional_to_assets"]),
        ),
        ReportRow(
            "Core capital to total deposits",
            [None, core_deposits, mins["core_to_deposits"]],
            level=1,
            check=_check(core_deposits, mins["core_to_deposits"]),
        ),
    ]
    totals = {
        "core_capital": core,
        "institutional_capital": institutional,
        "total_assets": assets,
        "total_deposits": deposits,
    }
    for key, value in (
        ("core_to_assets", core_assets),
        ("institutional_to_assets", inst_assets),
        ("core_to_deposits", core_deposits),
    ):
        if value is not None:
            totals[key] = value
    return Report(
        title="Capital Adequacy Return",
        subtitle=_subtitle("Form 1", "Regulations 9 and 11", month_end),
        columns=["Amount", "Ratio %", "Minimum"],
        rows=rows,
        sheet="Form 1 Capital Adequacy",
        notes=[
            "Core capital: share capital, statutory reserve, retained earnings, balances "
            "brought forward, less dividends declared, plus the surplus of the year to date "
            "(Regulation 3; SASRA's explanatory note on capital adequacy).",
            "Institutional capital: core capital less members' share capital.",
            "Minimums (Regulation 9, settings SASRA_*): core capital KES "
            f"{mins['core_capital']:,.0f}; core capital {mins['core_to_assets']}% of total "
            f"assets and {mins['core_to_deposits']}% of total deposits; institutional "
            f"capital {mins['institutional_to_assets']}% of total assets.",
        ],
        totals=totals,
    )


# -- Form 2: liquidity statement -----------------------------------------------------------


def liquidity_statement(month_end: date) -> Report:
    """Form 2: liquid assets (cash and cash equivalents, chart 1100: cash at the branch,
    bank, the M-PESA Paybill clearing and B2C float) against deposits and short-term
    liabilities (every deposit and savings line, 2100, and every payable, 2200), the ratio
    beside the r. 13 minimum.

    The regulation's denominator is "savings deposits and short-term liabilities"; whether
    non-withdrawable member deposits (2110) belong in it could not be confirmed from the
    form, so they are counted: the larger denominator gives the lower, safer ratio."""
    month_end = _month_end(month_end)
    books = _books(month_end)
    minimum = return_minimums()["liquidity"]
    rows = [ReportRow("A. Liquid assets", [None, None, None], bold=True)]
    for line in books.leaves_under("1100"):
        rows.append(ReportRow(line.name, [books.figure(line.code), None, None], 1, code=line.code))
    liquid = books.figure("1100")
    rows.append(ReportRow("Total liquid assets", [liquid, None, None], bold=True, code="1100"))
    rows.append(ReportRow("B. Deposits and short-term liabilities", [None, None, None], bold=True))
    for header in ("2100", "2200"):
        for line in books.leaves_under(header):
            rows.append(
                ReportRow(line.name, [books.figure(line.code), None, None], 1, code=line.code)
            )
    owed = books.figure("2100") + books.figure("2200")
    rows.append(
        ReportRow("Total deposits and short-term liabilities", [owed, None, None], bold=True)
    )
    ratio = _ratio(liquid, owed)
    required = round_money(owed * minimum / HUNDRED)
    rows += [
        ReportRow("C. Liquidity (r. 13)", [None, None, None], bold=True),
        ReportRow(
            "Liquid assets to deposits and short-term liabilities",
            [None, ratio, minimum],
            1,
            check=_check(ratio, minimum),
        ),
        ReportRow("Minimum liquid assets required", [required, None, None], 1),
        ReportRow(
            "Excess / (deficiency) of liquid assets",
            [liquid - required, None, None],
            1,
            bold=True,
            check=BELOW if liquid < required else None,
        ),
    ]
    totals = {"liquid_assets": liquid, "deposits_and_short_term": owed, "required": required}
    if ratio is not None:
        totals["liquidity_ratio"] = ratio
    return Report(
        title="Liquidity Statement",
        subtitle=_subtitle("Form 2", "Regulations 13 and 14", month_end),
        columns=["Amount", "Ratio %", "Minimum"],
        rows=rows,
        sheet="Form 2 Liquidity",
        notes=[
            "Liquid assets: cash at the branch, bank and M-PESA balances (chart 1100).",
            "Against: all member deposits and savings (2100) and payables (2200).",
            f"Minimum (Regulation 13, setting SASRA_LIQUIDITY_PERCENT): {minimum}%.",
        ],
        totals=totals,
    )


# -- Form 3: deposit return ----------------------------------------------------------------


def _deposit_balances(month_end: date) -> list[tuple[str, Decimal]]:
    """Each member deposit account's balance at the month end (credit shown positive), with
    its ledger kind; accounts holding nothing are left out."""
    rows = db.session.execute(
        select(Account.kind, func.sum(JournalLine.amount))
        .join(JournalLine, JournalLine.account_id == Account.id)
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .where(Account.kind.in_(DEPOSIT_KINDS), JournalEntry.value_date <= month_end)
        .group_by(Account.id, Account.kind)
    ).all()
    return [(kind, -Decimal(total)) for kind, total in rows if total and Decimal(total) != 0]


def _band_label(low: Decimal, high: Decimal | None) -> str:
    if high is None:
        return f"Over {low:,.0f}"
    if low == 0:
        return f"Up to {high:,.0f}"
    return f"{low + 1:,.0f} to {high:,.0f}"


def deposit_return(month_end: date) -> Report:
    """Form 3: members' deposits and savings by product (the chart's 2100 lines) and by the
    size of the account, with the number of accounts holding money at the month end. The
    product totals tie to the chart; a difference is flagged."""
    month_end = _month_end(month_end)
    books = _books(month_end)
    balances = _deposit_balances(month_end)
    products = books.leaves_under("2100")
    kind_of = {line.maps: line for line in products if line.maps}
    rows = [ReportRow("A. By product", [None, None], bold=True)]
    total_count, total_amount = 0, ZERO
    for line in products:
        mine = [amount for kind, amount in balances if kind == line.maps]
        amount = sum(mine, ZERO)
        figure = books.figure(line.code)
        total_count += len(mine)
        total_amount += amount
        rows.append(
            ReportRow(
                line.name,
                [str(len(mine)), figure],
                1,
                code=line.code,
                check=None if amount == figure else "does not tie to the ledger",
            )
        )
    rows.append(
        ReportRow("Total deposits", [str(total_count), total_amount], bold=True, code="2100")
    )
    rows.append(ReportRow("B. By size of account", [None, None], bold=True))
    for low, high in DEPOSIT_BANDS:
        inside = [
            amount
            for kind, amount in balances
            if kind in kind_of and amount > low and (high is None or amount <= high)
        ]
        if low == 0:  # an overdrawn account (never expected) still counts somewhere
            inside += [amount for kind, amount in balances if kind in kind_of and amount <= 0]
        rows.append(ReportRow(_band_label(low, high), [str(len(inside)), sum(inside, ZERO)], 1))
    return Report(
        title="Statement of Deposit Return",
        subtitle=_subtitle("Form 3", "Part V, Regulations", month_end),
        columns=["Accounts", "Amount"],
        rows=rows,
        sheet="Form 3 Deposits",
        notes=[
            "Accounts: member deposit and savings accounts with a balance at the month end.",
            "Size bands are this system's default; SASRA's Form 3 bands were not confirmed.",
        ],
        totals={"accounts": Decimal(total_count), "deposits": total_amount},
    )


# -- Form 4: risk classification of assets and provisioning ---------------------------------


def risk_classification(month_end: date) -> Report:
    """Form 4: loans by risk class (Part VII), ordinary and restructured apart: the number
    of accounts, principal outstanding, the class's provision rate and the provision it
    requires (from provisioning's own classification, so the return and the posting agree),
    then the provision the books hold against it; less held than required is flagged."""
    # Imported here: provisioning pulls in the close-of-business machinery, which the
    # other three returns (and the console's page) have no need of.
    from app.services.books.provisioning import (
        PROVISION_CLASSES,
        provision_bands,
        provision_classify,
    )

    month_end = _month_end(month_end)
    books = _books(month_end)
    loans = provision_classify(month_end)
    rates = {band.name: band.rate for band in provision_bands()}
    columns = ["Accounts", "Principal", "Rate %", "Required provision"]
    rows: list[ReportRow] = []
    grand_count, grand_principal, grand_required = 0, ZERO, ZERO
    for restructured, heading in ((False, "A. Loans"), (True, "B. Restructured loans")):
        rows.append(ReportRow(heading, [None] * 4, bold=True))
        count, principal, required = 0, ZERO, ZERO
        for risk_class in PROVISION_CLASSES:
            mine = [
                row
                for row in loans
                if row.risk_class == risk_class and row.restructured == restructured
            ]
            owed = sum((row.principal for row in mine), ZERO)
            needs = sum((row.provision for row in mine), ZERO)
            rate = rates.get(risk_class)
            rows.append(ReportRow(risk_class.capitalize(), [str(len(mine)), owed, rate, needs], 1))
            count, principal, required = count + len(mine), principal + owed, required + needs
        rows.append(ReportRow("Subtotal", [str(count), principal, None, required], bold=True))
        grand_count += count
        grand_principal += principal
        grand_required += required
    held = -books.figure("1250")  # a contra-asset: credit balance shown positive
    rows += [
        ReportRow(
            "Total loans", [str(grand_count), grand_principal, None, grand_required], bold=True
        ),
        ReportRow("C. Provision held", [None] * 4, bold=True),
        ReportRow("Loan-loss provision in the books", [None, None, None, held], 1, code="1250"),
        ReportRow(
            "Excess / (shortfall) of provision held",
            [None, None, None, held - grand_required],
            1,
            bold=True,
            check="under-provided" if held < grand_required else None,
        ),
    ]
    return Report(
        title="Risk Classification of Assets and Provisioning",
        subtitle=_subtitle("Form 4", "Part VII, Regulations", month_end),
        columns=columns,
        rows=rows,
        sheet="Form 4 Risk Classification",
        notes=[
            "Classes and minimum provision rates are provisioning's settings "
            "(PROVISION_CLASSES), the Regulations' Part VII figures by default.",
            "Provision held: the loan-loss provision account (chart 1250) at the month end.",
        ],
        totals={
            "accounts": Decimal(grand_count),
            "principal": grand_principal,
            "required": grand_required,
            "held": held,
        },
    )


# -- the forms -----------------------------------------------------------------------------

FORMS: dict[str, ReturnForm] = {
    form.code: form
    for form in (
        ReturnForm(
            "capital_adequacy",
            "Form 1",
            "Capital Adequacy Return",
            "Regulations 9 and 11",
            capital_adequacy,
        ),
        ReturnForm(
            "liquidity",
            "Form 2",
            "Liquidity Statement",
            "Regulations 13 and 14",
            liquidity_statement,
        ),
        ReturnForm("deposits", "Form 3", "Statement of Deposit Return", "Part V", deposit_return),
        ReturnForm(
            "risk_classification",
            "Form 4",
            "Risk Classification of Assets and Provisioning",
            "Part VII",
            risk_classification,
        ),
    )
}


def _form(code: str) -> ReturnForm:
    try:
        return FORMS[code]
    except KeyError:
        raise ReturnError(f"no return {code!r}: one of {', '.join(FORMS)}") from None


def returns_build(form: str, month_end: date) -> list[Report]:
    """The return `form` for the month ending `month_end` ("all": the four, one workbook)."""
    month_end = _month_end(month_end)
    codes: Iterable[str] = FORMS if form == "all" else [_form(form).code]
    return [FORMS[code].build(month_end) for code in codes]


def returns_xlsx(form: str, month_end: date) -> bytes:
    return report_xlsx(returns_build(form, month_end))


def returns_pdf(form: str, month_end: date) -> bytes:
    return report_pdf(returns_build(form, month_end))


# -- filing --------------------------------------------------------------------------------


def _actor(actor: Any) -> str:
    email = getattr(actor, "email", None)
    return f"staff:{email}" if email else str(actor)


def return_file(*, form: str, period_end: date, actor: Any) -> RegulatoryFiling:
    """Record that the return for `period_end` went to SASRA (books.file). A month not yet
    over cannot have been filed, and a return is filed once. Audited; commits."""
    permission_require(actor, "books.file")
    spec = _form(form)
    period_end = _month_end(period_end)
    if period_end >= business_today():
        raise ReturnError(f"the month to {period_end:%d %b %Y} is not over yet")
    existing = db.session.scalar(
        select(RegulatoryFiling).where(
            RegulatoryFiling.form == spec.code, RegulatoryFiling.period_end == period_end
        )
    )
    if existing is not None:
        raise ReturnError(
            f"the {spec.title} for {period_end:%B %Y} was marked filed by {existing.filed_by}"
        )
    filing = RegulatoryFiling(form=spec.code, period_end=period_end, filed_by=_actor(actor))
    db.session.add(filing)
    try:
        db.session.flush()
    except IntegrityError:
        # Two clicks at once: the unique (form, period_end) lets one through.
        db.session.rollback()
        raise ReturnError(f"the {spec.title} for {period_end:%B %Y} is filed already") from None
    audit_record(
        actor=_actor(actor),
        action="books.file",
        object_type="regulatory_return",
        object_id=f"{spec.code}:{period_end.isoformat()}",
        after={"form": spec.number, "period_end": period_end.isoformat()},
    )
    db.session.commit()
    return filing


def returns_status(today: date | None = None) -> list[ReturnStatus]:
    """Each return with its last filing and the month to file next: the month after the
    last filed, or last month when none was filed yet."""
    today = today or business_today()
    last_month_end = month_bounds(today)[0] - timedelta(days=1)
    statuses = []
    for form in FORMS.values():
        last = db.session.scalar(
            select(RegulatoryFiling)
            .where(RegulatoryFiling.form == form.code)
            .order_by(RegulatoryFiling.period_end.desc())
            .limit(1)
        )
        if last is None:
            next_end = last_month_end
        else:
            next_end = month_bounds(last.period_end + timedelta(days=1))[1]
        due = return_due(next_end)
        statuses.append(ReturnStatus(form, last, next_end, due, today > due))
    return statuses


def return_filings(limit: int = 24) -> list[RegulatoryFiling]:
    """The latest filings, newest month first (the page's history)."""
    return list(
        db.session.scalars(
            select(RegulatoryFiling)
            .order_by(RegulatoryFiling.period_end.desc(), RegulatoryFiling.form)
            .limit(limit)
        )
    )
