"""Collections and recovery reports: every figure is an aggregate query (COUNT / SUM with
GROUP BY) that returns one row per group, never rows summed in Python.

Decisions where the issue is silent:

- Heavy reports need a date range (at most MAX_REPORT_DAYS days, both ends included) and
  are refused in words without one: collections (journal entries: the busiest table),
  promise fulfilment (promises, by the promised date) and write-offs and recoveries (by
  the month of the write-off). Agreements by status, legal cases by status and write-off
  requests by status are a handful of groups over small tables and need none; the
  hearings list is bounded by its own window (the next HEARING_DAYS days).
- Collected is, as on the dashboard, the money side of each `repayment` journal entry (its
  one debit line: M-PESA, suspense or savings) by its value date, which is already the
  Kenyan business date; a recovery on a written-off loan counts too. The officer and
  product are the loan's as they are now (a reassigned loan's history follows it).
- A promise's officer is its loan's officer (whose book it is), not who typed it in; its
  month is the month of the promised date. The rate is kept over settled promises
  (kept + partly + broken), so a partly kept promise counts against it; open promises
  count neither way; the amounts say how much of what was promised arrived.
- A write-off's month is the loan's closed_on (the write-off's value date, set by
  loan_write_off); recovered is what came back since on those loans, whenever it came.
- Months are grouped by EXTRACT(year / month) of a date column: no bound parameter in
  the GROUP BY, which PostgreSQL would number apart from the SELECT's and refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Generic, TypeVar

from sqlalchemy import and_, case, extract, func, select, type_coerce
from sqlalchemy.sql import Select

from app.errors import SaccoError
from app.extensions import db
from app.models import (
    Account,
    Guarantee,
    JournalEntry,
    JournalLine,
    Loan,
    LoanProduct,
    Member,
    PromiseToPay,
    StaffUser,
)
from app.models.recovery import (
    AGREEMENT_STATUSES,
    CASE_STATUSES,
    WRITE_OFF_STATUSES,
    Agreement,
    Hearing,
    LegalCase,
    WriteOffRequest,
)
from app.models.types import Money
from app.money import ZERO
from app.selectors.guarantees import (
    HOLDING_STATUSES,
    guarantee_exposure,
    loan_cover,
    member_deposits,
)

MAX_REPORT_DAYS = 366
HEARING_DAYS = 30  # the legal pipeline lists hearings from today to today + HEARING_DAYS
COLLECTION_GROUPS = ("month", "officer", "product")
PROMISE_GROUPS = ("month", "officer")
PROMISE_STATUSES = ("kept", "partly", "broken", "open")
NO_OFFICER = "no officer"
RANGE_NEEDED = (
    f"this report needs a date range: choose a from and a to date (at most {MAX_REPORT_DAYS} days)"
)

T = TypeVar("T")


class ReportRangeError(SaccoError):
    """A heavy report asked for without a date range, or for too long a one."""


@dataclass(frozen=True)
class DateRange:
    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def report_range(start: date | None, end: date | None) -> DateRange:
    """The range a heavy report covers, or ReportRangeError in words: both ends needed,
    in order, at most MAX_REPORT_DAYS days."""
    if start is None or end is None:
        raise ReportRangeError(RANGE_NEEDED)
    if end < start:
        raise ReportRangeError(
            f"the range ends ({end:%d %b %Y}) before it starts ({start:%d %b %Y})"
        )
    days = (end - start).days + 1
    if days > MAX_REPORT_DAYS:
        raise ReportRangeError(
            f"a report covers at most {MAX_REPORT_DAYS} days and this range is {days:,} "
            "days; choose a shorter one"
        )
    return DateRange(start, end)


@dataclass(frozen=True)
class Page(Generic[T]):
    rows: list[T]
    total: int  # groups (or rows) in the whole report, not on this page
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max((self.total + self.per_page - 1) // self.per_page, 1)


def _sum(expr: Any) -> Any:
    """SUM of a money expression, 0 when there is none, read back as Money (SQLite holds
    cents as integers; the type turns them back into shillings)."""
    return type_coerce(func.coalesce(func.sum(expr), 0), Money())


def _paged(query: Select[*tuple[Any, ...]], *, page: int, per_page: int) -> tuple[list[Any], int]:
    """One page of a grouped query and how many groups it has in all (two queries)."""
    total = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    page = max(page, 1)
    rows = db.session.execute(query.limit(per_page).offset((page - 1) * per_page)).all()
    return list(rows), int(total or 0)


def _month(year: int | Decimal, month: int | Decimal) -> str:
    # EXTRACT gives numeric (Decimal) on PostgreSQL, an integer on SQLite.
    return f"{int(year):04d}-{int(month):02d}"


def _staff_label(staff_id: int | None, name: str | None, email: str | None) -> str:
    if staff_id is None:
        return NO_OFFICER
    return name or email or f"staff #{staff_id}"


# -- collections ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CollectionRow:
    label: str  # 2026-11, the officer, or the product
    repayments: int
    amount: Decimal


@dataclass(frozen=True)
class Collections:
    range: DateRange
    by: str
    rows: Page[CollectionRow]
    repayments: int  # the whole range, every group
    amount: Decimal


def collections_report(
    *, range_: DateRange, by: str = "month", page: int = 1, per_page: int = 25
) -> Collections:
    """Repayments collected in the range, grouped by month, officer or product: a page of
    groups, and the range's total."""
    if by not in COLLECTION_GROUPS:
        by = "month"
    where = (
        JournalEntry.kind == "repayment",
        JournalEntry.value_date >= range_.start,
        JournalEntry.value_date <= range_.end,
        JournalLine.amount > 0,  # the money side
    )
    base = (
        select()
        .select_from(JournalEntry)
        .join(JournalLine, JournalLine.entry_id == JournalEntry.id)
        .join(Loan, Loan.id == JournalEntry.loan_id)
        .where(*where)
    )
    n, amount = func.count(JournalEntry.id), _sum(JournalLine.amount)
    if by == "month":
        year, month = (
            extract("year", JournalEntry.value_date),
            extract("month", JournalEntry.value_date),
        )
        query = base.add_columns(year, month, n, amount).group_by(year, month).order_by(year, month)
        rows, total = _paged(query, page=page, per_page=per_page)
        found = [CollectionRow(_month(y, m), int(c), a) for y, m, c, a in rows]
    elif by == "officer":
        query = (
            base.outerjoin(StaffUser, StaffUser.id == Loan.officer_id)
            .add_columns(Loan.officer_id, StaffUser.name, StaffUser.email, n, amount)
            .group_by(Loan.officer_id, StaffUser.name, StaffUser.email)
            .order_by(amount.desc(), Loan.officer_id)
        )
        rows, total = _paged(query, page=page, per_page=per_page)
        found = [CollectionRow(_staff_label(i, nm, em), int(c), a) for i, nm, em, c, a in rows]
    else:
        query = (
            base.join(LoanProduct, LoanProduct.id == Loan.product_id)
            .add_columns(LoanProduct.id, LoanProduct.code, LoanProduct.name, n, amount)
            .group_by(LoanProduct.id, LoanProduct.code, LoanProduct.name)
            .order_by(amount.desc(), LoanProduct.code)
        )
        rows, total = _paged(query, page=page, per_page=per_page)
        found = [CollectionRow(f"{code} {name}", int(c), a) for _, code, name, c, a in rows]
    all_n, all_amount = db.session.execute(base.add_columns(n, amount)).one()
    return Collections(
        range=range_,
        by=by,
        rows=Page(found, total, max(page, 1), per_page),
        repayments=int(all_n or 0),
        amount=all_amount,
    )


# -- promise fulfilment ---------------------------------------------------------------------


@dataclass(frozen=True)
class PromiseRow:
    label: str
    kept: int
    partly: int
    broken: int
    open: int
    promised: Decimal  # the amounts promised, every status
    paid: Decimal  # what arrived by the promised dates (settled promises)

    @property
    def settled(self) -> int:
        return self.kept + self.partly + self.broken

    @property
    def rate(self) -> Decimal | None:
        """Kept as a percentage of the settled promises, to one place; None when none is
        settled yet."""
        if not self.settled:
            return None
        return (Decimal(100) * self.kept / self.settled).quantize(Decimal("0.1"), ROUND_HALF_UP)


@dataclass(frozen=True)
class PromiseFulfilmentReport:
    range: DateRange
    by: str
    rows: Page[PromiseRow]
    total: PromiseRow


def _promise_figures() -> list[Any]:
    counts = [
        func.coalesce(func.sum(case((PromiseToPay.status == s, 1), else_=0)), 0)
        for s in PROMISE_STATUSES
    ]
    return [*counts, _sum(PromiseToPay.amount), _sum(PromiseToPay.paid_amount)]


def _promise_row(label: str, figures: Any) -> PromiseRow:
    kept, partly, broken, open_, promised, paid = figures
    return PromiseRow(label, int(kept), int(partly), int(broken), int(open_), promised, paid)


def promise_fulfilment_report(
    *, range_: DateRange, by: str = "month", page: int = 1, per_page: int = 25
) -> PromiseFulfilmentReport:
    """Promises falling due in the range, kept / partly / broken / open, by month of the
    promised date or by the loan's officer."""
    if by not in PROMISE_GROUPS:
        by = "month"
    base = (
        select()
        .select_from(PromiseToPay)
        .join(Loan, Loan.id == PromiseToPay.loan_id)
        .where(
            PromiseToPay.promised_date >= range_.start,
            PromiseToPay.promised_date <= range_.end,
        )
    )
    figures = _promise_figures()
    if by == "month":
        year = extract("year", PromiseToPay.promised_date)
        month = extract("month", PromiseToPay.promised_date)
        query = base.add_columns(year, month, *figures).group_by(year, month).order_by(year, month)
        rows, total = _paged(query, page=page, per_page=per_page)
        found = [_promise_row(_month(r[0], r[1]), r[2:]) for r in rows]
    else:
        query = (
            base.outerjoin(StaffUser, StaffUser.id == Loan.officer_id)
            .add_columns(Loan.officer_id, StaffUser.name, StaffUser.email, *figures)
            .group_by(Loan.officer_id, StaffUser.name, StaffUser.email)
            .order_by(func.count().desc(), Loan.officer_id)
        )
        rows, total = _paged(query, page=page, per_page=per_page)
        found = [_promise_row(_staff_label(r[0], r[1], r[2]), r[3:]) for r in rows]
    overall = db.session.execute(base.add_columns(*figures)).one()
    return PromiseFulfilmentReport(
        range=range_,
        by=by,
        rows=Page(found, total, max(page, 1), per_page),
        total=_promise_row("all", overall),
    )


# -- agreements -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AgreementRow:
    status: str
    count: int
    settlement: Decimal
    discount: Decimal
    paid: Decimal


def agreements_by_status() -> list[AgreementRow]:
    """Every agreement status (none left out, zeros shown) with the settlements agreed,
    the discounts given and what has been paid towards them."""
    rows = db.session.execute(
        select(
            Agreement.status,
            func.count(),
            _sum(Agreement.settlement_amount),
            _sum(Agreement.discount),
            _sum(Agreement.paid_amount),
        ).group_by(Agreement.status)
    ).all()
    found = {r[0]: r for r in rows}
    return [
        AgreementRow(s, int(found[s][1]), *found[s][2:])
        if s in found
        else AgreementRow(s, 0, ZERO, ZERO, ZERO)
        for s in AGREEMENT_STATUSES
    ]


# -- legal pipeline ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HearingRow:
    held_on: date
    court: str
    case_number: str
    case_status: str
    loan_id: int
    loan_no: str
    member: str


def cases_by_status() -> list[tuple[str, int]]:
    rows = dict(
        db.session.execute(select(LegalCase.status, func.count()).group_by(LegalCase.status)).all()
    )
    return [(s, int(rows.get(s, 0))) for s in CASE_STATUSES]


def hearings_ahead(*, today: date, page: int = 1, per_page: int = 25) -> Page[HearingRow]:
    """Hearings from today to today + HEARING_DAYS, soonest first, with their case, loan
    and member (one joined query a page)."""
    query = (
        select(
            Hearing.held_on,
            LegalCase.court,
            LegalCase.case_number,
            LegalCase.status,
            Loan.id,
            Loan.loan_no,
            Member.name,
        )
        .join(LegalCase, LegalCase.id == Hearing.case_id)
        .join(Loan, Loan.id == LegalCase.loan_id)
        .join(Member, Member.id == Loan.member_id)
        .where(Hearing.held_on >= today, Hearing.held_on <= today + timedelta(days=HEARING_DAYS))
        .order_by(Hearing.held_on, LegalCase.court, LegalCase.case_number, Hearing.id)
    )
    rows, total = _paged(query, page=page, per_page=per_page)
    found = [HearingRow(d, c, n, s, i, no or f"#{i}", m) for d, c, n, s, i, no, m in rows]
    return Page(found, total, max(page, 1), per_page)


# -- write-offs and recoveries ----------------------------------------------------------------


@dataclass(frozen=True)
class WriteOffMonth:
    month: str
    loans: int
    written_off: Decimal
    recovered: Decimal


@dataclass(frozen=True)
class WriteOffs:
    range: DateRange
    months: list[WriteOffMonth]  # at most 13: the range is a year at most
    total: WriteOffMonth
    requests: list[tuple[str, int]]  # write-off requests by status, all time


def write_offs_report(*, range_: DateRange) -> WriteOffs:
    """Loans written off in the range by month, with what was written off and what has been
    recovered on them since; and the write-off requests by status."""
    where = and_(
        Loan.status == "written_off",
        Loan.closed_on >= range_.start,
        Loan.closed_on <= range_.end,
    )
    figures = (func.count(), _sum(Loan.written_off_amount), _sum(Loan.recovered_amount))
    year, month = extract("year", Loan.closed_on), extract("month", Loan.closed_on)
    rows = db.session.execute(
        select(year, month, *figures).where(where).group_by(year, month).order_by(year, month)
    ).all()
    n, written, recovered = db.session.execute(select(*figures).where(where)).one()
    requests = dict(
        db.session.execute(
            select(WriteOffRequest.status, func.count()).group_by(WriteOffRequest.status)
        ).all()
    )
    return WriteOffs(
        range=range_,
        months=[WriteOffMonth(_month(y, m), int(c), w, r) for y, m, c, w, r in rows],
        total=WriteOffMonth("all", int(n or 0), written, recovered),
        requests=[(s, int(requests.get(s, 0))) for s in WRITE_OFF_STATUSES],
    )


# -- guarantees (issue 19) --------------------------------------------------------------------
# Exposure is worked out per guarantee by the one rule (`guarantee_exposure`: the whole
# pledge until payout, then its share of the principal still owed) and summed per guarantor
# here, not in SQL: a second copy of the rule in a GROUP BY could round apart from the one
# the holds use. The rows read are the accepted guarantees of loans that still hold (one
# query, with each loan's principal receivable), far fewer than the journal.


@dataclass(frozen=True)
class ExposureRow:
    guarantor_id: int
    member_no: str
    name: str
    phone: str
    loans: int
    pledged: Decimal
    exposure: Decimal
    loan_nos: str  # the loans guaranteed, by number


@dataclass(frozen=True)
class GuarantorExposure:
    rows: Page[ExposureRow]
    guarantees: int  # in the whole report
    pledged: Decimal
    exposure: Decimal


def guarantor_exposure_report(*, page: int = 1, per_page: int = 25) -> GuarantorExposure:
    """Each guarantor's accepted guarantees on loans that still hold: how many loans, what
    was pledged and the exposure now, largest exposure first; the totals of them all."""
    owed = (
        select(Account.loan_id, Account.balance).where(Account.kind == "loan_principal").subquery()
    )
    rows = db.session.execute(
        select(
            Guarantee.guarantor_id,
            Member.member_no,
            Member.name,
            Member.phone,
            Loan.loan_no,
            Loan.status,
            Loan.principal,
            Guarantee.amount,
            owed.c.balance,
        )
        .join(Loan, Loan.id == Guarantee.loan_id)
        .join(Member, Member.id == Guarantee.guarantor_id)
        .outerjoin(owed, owed.c.loan_id == Loan.id)
        .where(Guarantee.status == "accepted", Loan.status.in_(HOLDING_STATUSES))
        .order_by(Guarantee.guarantor_id, Loan.id)
    ).all()
    by_guarantor: dict[int, dict[str, Any]] = {}
    for gid, no, name, phone, loan_no, status, principal, amount, balance in rows:
        entry = by_guarantor.setdefault(
            gid,
            {
                "no": no or "",
                "name": name,
                "phone": phone,
                "loans": [],
                "pledged": ZERO,
                "exp": ZERO,
            },
        )
        entry["loans"].append(loan_no or "")
        entry["pledged"] += amount
        entry["exp"] += guarantee_exposure(
            amount=amount, loan_status=status, principal=principal, outstanding=balance or ZERO
        )
    found = sorted(
        (
            ExposureRow(
                guarantor_id=gid,
                member_no=e["no"],
                name=e["name"],
                phone=e["phone"],
                loans=len(e["loans"]),
                pledged=e["pledged"],
                exposure=e["exp"],
                loan_nos=", ".join(e["loans"]),
            )
            for gid, e in by_guarantor.items()
        ),
        key=lambda r: (-r.exposure, r.member_no),
    )
    page = max(page, 1)
    first = (page - 1) * per_page
    return GuarantorExposure(
        rows=Page(found[first : first + per_page], len(found), page, per_page),
        guarantees=sum(r.loans for r in found),
        pledged=sum((r.pledged for r in found), ZERO),
        exposure=sum((r.exposure for r in found), ZERO),
    )


@dataclass(frozen=True)
class BelowCoverRow:
    loan_id: int
    loan_no: str
    status: str
    member: str
    product: str
    principal: Decimal
    required: Decimal
    covered: Decimal
    shortfall: Decimal
    guarantors: int
    min_guarantors: int
    short_guarantors: int  # accepted guarantors whose deposits are below what they hold


def loans_below_cover_report(*, page: int = 1, per_page: int = 25) -> Page[BelowCoverRow]:
    """Secured loans waiting for payout or still owing whose cover, as `loan_cover` works
    it out for the approval, is below what the product asks (a guarantee ended, a lien was
    discharged, the borrower's own free deposits fell), or that rest on a guarantor whose
    deposits no longer reach what they hold; the largest shortfall first.

    The cover is worked out per loan by the one function the approval uses (a few queries
    each): secured loans are the minority of a book, and a report is read, not polled."""
    loans = db.session.scalars(
        select(Loan)
        .join(LoanProduct, LoanProduct.id == Loan.product_id)
        .where(
            Loan.status.in_(HOLDING_STATUSES),
            (LoanProduct.min_guarantors > 0) | (LoanProduct.guarantee_cover > 0),
        )
        .order_by(Loan.id)
    ).all()
    short: dict[int, bool] = {}

    def _short(member_id: int) -> bool:
        if member_id not in short:
            held = member_deposits(member_id)
            short[member_id] = held.deposits < held.guaranteed + held.own
        return short[member_id]

    found: list[BelowCoverRow] = []
    for loan in loans:
        cover = loan_cover(loan)
        guarantors = db.session.scalars(
            select(Guarantee.guarantor_id).where(
                Guarantee.loan_id == loan.id, Guarantee.status == "accepted"
            )
        ).all()
        weak = sum(1 for member_id in guarantors if _short(member_id))
        if cover.complete and not weak:
            continue
        found.append(
            BelowCoverRow(
                loan_id=loan.id,
                loan_no=loan.loan_no or "",
                status=loan.status,
                member=loan.member.name,
                product=loan.product.name,
                principal=loan.principal,
                required=cover.required,
                covered=cover.covered,
                shortfall=cover.shortfall,
                guarantors=cover.guarantors,
                min_guarantors=cover.min_guarantors,
                short_guarantors=weak,
            )
        )
    found.sort(key=lambda r: (-r.shortfall, r.loan_id))
    page = max(page, 1)
    first = (page - 1) * per_page
    return Page(found[first : first + per_page], len(found), page, per_page)
