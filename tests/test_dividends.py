"""The annual dividend on share capital and interest on deposits (issue 20): declare with
the AGM's rates, preview, approve (maker-checker), post (a partitioned job, each member
paid once), report (reconciled to the journal)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from fpdf import FPDF
from openpyxl import load_workbook
from sqlalchemy import func, select, type_coerce

from app.extensions import db
from app.models import (
    Account,
    AuditLog,
    DividendLine,
    DividendRun,
    JournalEntry,
    JournalLine,
    Loan,
    Member,
    SmsMessage,
    StaffUser,
)
from app.models.types import Money
from app.selectors.dividends import dividend_summary, member_dividends
from app.selectors.loans import loan_list_figures
from app.selectors.members import member_balances
from app.services.collections import portfolio_assign
from app.services.ledger import ledger_check
from app.services.loans import loan_repay
from app.services.members import member_buy_shares, member_deposit
from app.services.permissions import PermissionDenied
from app.services.savings import (
    DividendError,
    dividend_approve,
    dividend_cancel,
    dividend_declare,
    dividend_post,
    dividend_report,
)
from app.services.savings.dividends import (
    REPORT_HEADER,
    arrears_by_member,
    dividend_lines_pay,
    dividend_unpaid_line_ids,
)
from app.services.savings.products import account_product, product_update
from tests.factories import make_member
from tests.helpers import (
    Worker,
    assert_not_held,
    row_locked,
    settings_change,
    staff,
    wait_until_blocked,
)
from tests.loan_factories import make_loan, make_product

YEAR = 2025
PAID_ON = date(2026, 1, 31)
CENT = Decimal("0.01")


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def _staff(role: str, email: str | None = None) -> StaffUser:
    address = staff(role) if email is None else email
    user = db.session.scalar(select(StaffUser).where(StaffUser.email == address))
    assert user is not None
    return user


def _second(role: str) -> StaffUser:
    from app.services.staff import staff_add
    from tests.helpers import PASSWORD

    return staff_add(email=f"second.{role}@sacco.test", role=role, password=PASSWORD)


# Each member's money, as the test writes it down: (value date, amount) into deposits and
# into shares. A share purchase from deposits is a minus on deposits and a plus on shares.
Moves = dict[str, list[tuple[date, Decimal]]]


def _deposit(member: Member, day: date, amount: str, moves: Moves, ref: str) -> None:
    member_deposit(member_id=member.id, amount=amount, reference=ref, value_date=day)
    moves["deposits"].append((day, Decimal(amount)))


def _shares(
    member: Member, day: date, amount: str, moves: Moves, ref: str, from_savings: bool
) -> None:
    member_buy_shares(
        member_id=member.id,
        amount=amount,
        reference=ref,
        value_date=day,
        from_savings=from_savings,
    )
    moves["shares"].append((day, Decimal(amount)))
    if from_savings:
        moves["deposits"].append((day, -Decimal(amount)))


def _declared(**terms: object) -> DividendRun:
    """A run declared for YEAR at 10% on shares and 6% on deposits, simple, paid to
    savings, by the admin, unless `terms` say otherwise."""
    values: dict[str, object] = dict(
        year=YEAR, share_rate="10", deposit_rate="6", method="simple", payout="savings"
    )
    values.update(terms)
    if "staff" not in values:
        values["staff"] = _staff("admin")
    return dividend_declare(**values)  # type: ignore[arg-type]


def _saver(name: str, amount: str, reference: str) -> int:
    """A member since 2024 with `amount` in their deposits all 2025; their id."""
    member = make_member(name=name)
    member.created_at = datetime(2024, 1, 1, tzinfo=UTC)
    db.session.commit()
    member_id = member.id
    member_deposit(
        member_id=member_id, amount=amount, reference=reference, value_date=date(2025, 1, 2)
    )
    return member_id


def _mark_posting(run_id: int) -> None:
    """The run as a posting that stopped part-way leaves it: being posted as of PAID_ON."""
    stored = db.session.get(DividendRun, run_id)
    assert stored is not None
    stored.status, stored.value_date = "posting", PAID_ON
    db.session.commit()


@pytest.fixture
def book(app: Flask) -> Iterator[dict[int, Moves]]:
    """Four members with money on varied days: before the year (opening balances), in it,
    and after it (which no method counts); one with nothing at all."""
    plan = {
        "A": [
            ("dep", date(2024, 6, 3), "10000.00"),
            ("dep", date(2025, 3, 17), "2500.50"),
            ("shr", date(2025, 4, 9), "3000.00", True),
            ("dep", date(2025, 12, 31), "999.99"),
            ("dep", date(2026, 1, 2), "5000.00"),  # after the year: never counted
        ],
        "B": [
            ("shr", date(2025, 1, 1), "20000.00", False),
            ("dep", date(2025, 7, 31), "1234.57"),
            ("dep", date(2025, 8, 1), "333.33"),
            ("shr", date(2025, 11, 30), "777.77", True),
        ],
        "C": [
            ("dep", date(2025, 2, 28), "101.01"),
            ("dep", date(2025, 6, 15), "3.33"),
            ("dep", date(2025, 10, 5), "4567.89"),
        ],
        "D": [("shr", date(2023, 12, 31), "5000.00", False)],
    }
    found: dict[int, Moves] = {}
    for name, steps in plan.items():
        member = make_member(name=f"Member {name}")
        moves: Moves = {"deposits": [], "shares": []}
        for n, step in enumerate(steps):
            ref = f"{name}{n}"
            if step[0] == "dep":
                _deposit(member, step[1], step[2], moves, ref)
            else:
                _shares(member, step[1], step[2], moves, ref, step[3])
        found[member.id] = moves
    make_member(name="Nobody")  # nothing at all: no line
    yield found


def _expected(moves: Moves, share_rate: str, deposit_rate: str, method: str) -> dict[str, Decimal]:
    """The figures worked out plainly, not the way the service does: for the weighted
    method, each shilling earns rate/12 for every month from the one it arrived in to
    December (money there before the year: all twelve)."""

    def earned(items: list[tuple[date, Decimal]], rate: Decimal) -> Decimal:
        counted = [(day, amount) for day, amount in items if day.year <= YEAR]
        if method == "simple":
            return _cents(sum((a for _, a in counted), Decimal(0)) * rate / 100)
        month_shillings = Decimal(0)
        for day, amount in counted:
            months = 12 if day.year < YEAR else 13 - day.month
            month_shillings += amount * months
        return _cents(month_shillings * rate / 100 / 12)

    dividend = earned(moves["shares"], Decimal(share_rate))
    interest = earned(moves["deposits"], Decimal(deposit_rate))
    tax = _cents(dividend * 5 / 100) + _cents(interest * 15 / 100)
    return {
        "dividend": dividend,
        "interest": interest,
        "tax": tax,
        "net": dividend + interest - tax,
    }


def _journal_total(code: str) -> Decimal:
    total = db.session.scalar(
        select(type_coerce(func.sum(JournalLine.amount), Money()))
        .join(Account, Account.id == JournalLine.account_id)
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .where(Account.code == code, JournalEntry.kind == "dividend")
    )
    return Decimal(0) if total is None else Decimal(total)


def _ord_balance(member_id: int) -> Decimal:
    number = db.session.scalar(select(Member.member_no).where(Member.id == member_id))
    account = db.session.scalar(select(Account).where(Account.code == f"ORD-{number}"))
    return Decimal(0) if account is None else -account.balance


@pytest.mark.parametrize("method", ["simple", "weighted"])
def test_each_member_is_paid_to_the_cent_by_the_method_and_the_books_reconcile(
    app: Flask, book: dict[int, Moves], method: str
) -> None:
    maker, checker = _staff("branch_manager"), _second("branch_manager")
    run = _declared(
        share_rate="12.5",
        deposit_rate="7.25",
        method=method,
        staff=maker,
        resolution_ref="AGM 2026/4",
    )
    assert run.status == "draft"
    assert (run.dividend_tax_rate, run.interest_tax_rate) == (Decimal(5), Decimal(15))
    lines = {
        line.member_id: line
        for line in db.session.scalars(select(DividendLine).where(DividendLine.run_id == run.id))
    }
    # The member with nothing has no line; everyone else matches the plain working.
    assert set(lines) == set(book)
    for member_id, moves in book.items():
        want = _expected(moves, "12.5", "7.25", method)
        line = lines[member_id]
        got = {
            "dividend": line.dividend,
            "interest": line.interest,
            "tax": line.tax,
            "net": line.net,
        }
        assert got == want, member_id
    assert run.members == len(book)
    assert run.net == sum((line.net for line in lines.values()), Decimal(0))
    assert run.tax == sum((line.tax for line in lines.values()), Decimal(0))

    dividend_approve(run_id=run.id, staff=checker)
    posted = dividend_post(run_id=run.id, value_date=PAID_ON)
    assert posted.status == "posted" and posted.posted_at is not None
    for member_id, line in lines.items():
        assert _ord_balance(member_id) == line.net
        db.session.refresh(line)
        assert line.paid_to == "savings" and line.entry_id is not None and line.paid_at
    # Withholding tax: the lines' total is what the journal owes the taxman.
    assert -_journal_total("GL-WHT-PAYABLE") == run.tax
    assert _journal_total("GL-DIVIDENDS") == run.dividend_gross
    assert _journal_total("GL-INTEREST-EXPENSE") == run.interest_gross
    texts = db.session.scalars(select(SmsMessage).where(SmsMessage.template == "dividend_paid"))
    assert sorted(m.member_id for m in texts) == sorted(book)
    assert ledger_check() == []


def test_the_weighted_method_counts_each_month_end_and_not_money_gone_before_it(
    app: Flask,
) -> None:
    # 12,000 in deposits from 1 July: six month-ends of 12,000, i.e. 6,000 for the year.
    member = make_member()
    member_deposit(member_id=member.id, amount="12000", reference="R1", value_date=date(2025, 7, 1))
    run = _declared(deposit_rate="10", method="weighted")
    line = db.session.scalar(select(DividendLine).where(DividendLine.run_id == run.id))
    assert line is not None
    assert (line.deposit_basis, line.interest, line.dividend) == (
        Decimal("6000.00"),
        Decimal("600.00"),
        Decimal("0.00"),
    )
    assert line.tax == Decimal("90.00") and line.net == Decimal("510.00")


def test_maker_checker_permissions_and_the_audit(app: Flask, book: dict[int, Moves]) -> None:
    officer = _staff("loan_officer")
    with pytest.raises(PermissionDenied):
        _declared(deposit_rate="5", staff=officer)
    maker = _staff("compliance")
    run = dividend_declare(
        year=YEAR, share_rate="10", deposit_rate="5", method="simple", payout="savings", staff=maker
    )
    # Compliance may declare, not approve; the maker never approves their own run.
    with pytest.raises(PermissionDenied):
        dividend_approve(run_id=run.id, staff=maker)
    admin = _staff("admin")
    with pytest.raises(DividendError, match="already"):
        _declared(deposit_rate="5", staff=admin)
    # Not approved: nothing can be posted.
    with pytest.raises(DividendError, match="only an approved run"):
        dividend_post(run_id=run.id, value_date=PAID_ON)
    manager = _staff("branch_manager")
    approved = dividend_approve(run_id=run.id, staff=manager)
    assert approved.status == "approved" and approved.approved_by_id == manager.id
    with pytest.raises(DividendError, match="not a draft"):
        dividend_approve(run_id=run.id, staff=admin)
    with pytest.raises(DividendError, match="only a draft"):
        dividend_cancel(run_id=run.id, staff=maker)
    actions = list(
        db.session.scalars(
            select(AuditLog.action)
            .where(AuditLog.object_type == "dividend_run")
            .order_by(AuditLog.id)
        )
    )
    assert actions == ["dividend.declare", "dividend.approve"]
    assert (
        db.session.scalar(
            select(func.count(JournalEntry.id)).where(JournalEntry.kind == "dividend")
        )
        == 0
    )


def test_the_declarer_cannot_approve_their_own_run(app: Flask, book: dict[int, Moves]) -> None:
    manager = _staff("branch_manager")
    run = _declared(deposit_rate="5", staff=manager)
    with pytest.raises(DividendError, match="someone other than who declared it"):
        dividend_approve(run_id=run.id, staff=manager)
    assert db.session.get(DividendRun, run.id).status == "draft"  # type: ignore[union-attr]
    # A declaration that stopped before its last chunk (the process died) is never approved.
    stored = db.session.get(DividendRun, run.id)
    assert stored is not None and stored.note is None
    stored.note = "computing the preview"
    db.session.commit()
    with pytest.raises(DividendError, match="not complete"):
        dividend_approve(run_id=run.id, staff=_staff("admin"))


def test_a_cancelled_draft_frees_the_year_and_bad_input_is_refused_in_words(
    app: Flask, book: dict[int, Moves]
) -> None:
    admin = _staff("admin")
    common = dict(year=YEAR, method="simple", payout="savings", staff=admin)
    for share, deposit, match in (
        ("-1", "5", "between 0 and 100"),
        ("abc", "5", "must be a number"),
        ("10", "5.00001", "4 decimal places"),
        ("0", "0", "nothing to pay"),
    ):
        with pytest.raises(DividendError, match=match):
            dividend_declare(share_rate=share, deposit_rate=deposit, **common)  # type: ignore[arg-type]
    with pytest.raises(DividendError, match="method"):
        _declared(share_rate="1", deposit_rate="1", method="daily", staff=admin)
    with pytest.raises(DividendError, match="payout"):
        _declared(share_rate="1", deposit_rate="1", payout="cash", staff=admin)
    with pytest.raises(DividendError, match="year"):
        _declared(year=2999, share_rate="1", deposit_rate="1", staff=admin)
    assert db.session.scalar(select(func.count(DividendRun.id))) == 0
    first = dividend_declare(share_rate="10", deposit_rate="5", **common)  # type: ignore[arg-type]
    dividend_cancel(run_id=first.id, staff=admin)
    cancelled = db.session.scalar(
        select(AuditLog).where(AuditLog.action == "dividend.cancel").order_by(AuditLog.id.desc())
    )
    assert cancelled is not None
    assert (
        cancelled.actor,
        cancelled.object_type,
        cancelled.object_id,
        cancelled.before,
        cancelled.after,
    ) == (
        f"staff:{admin.email}",
        "dividend_run",
        str(first.id),
        {"status": "draft"},
        {"status": "cancelled", "year": YEAR},
    )
    again = dividend_declare(share_rate="11", deposit_rate="5", **common)  # type: ignore[arg-type]
    assert again.id != first.id and again.status == "draft"
    assert again.dividend_gross > first.dividend_gross


def test_a_rerun_pays_nobody_twice(
    app: Flask, book: dict[int, Moves], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_change(app, monkeypatch, COB_CHUNK_SIZE=2)  # several chunks, several entries
    run = _declared(method="weighted")
    dividend_approve(run_id=run.id, staff=_staff("branch_manager"))
    # A posting that stopped after its first chunk (a crash): the run is "posting" with
    # part of it paid.
    _mark_posting(run.id)
    ids = dividend_unpaid_line_ids(PAID_ON)
    assert dividend_lines_pay(ids[:2]) == (2, 2)
    db.session.commit()
    # The same chunk again (a worker retrying it), whole or one line at a time: nothing.
    # Nor does a chunk of no line, or of lines that are not there.
    assert dividend_lines_pay([]) == (0, 0)
    assert dividend_lines_pay([999999]) == (0, 0)
    assert dividend_lines_pay(ids[:2]) == (0, 0)
    assert dividend_lines_pay(ids[:1]) == (0, 0)
    db.session.commit()
    finished = dividend_post(run_id=run.id, value_date=PAID_ON)
    assert finished.status == "posted"
    with pytest.raises(DividendError, match="posted"):
        dividend_post(run_id=run.id, value_date=PAID_ON)
    lines = db.session.scalars(select(DividendLine).where(DividendLine.run_id == run.id)).all()
    for line in lines:
        assert _ord_balance(line.member_id) == line.net
    entries = db.session.scalar(
        select(func.count(JournalEntry.id)).where(JournalEntry.kind == "dividend")
    )
    assert entries == 2  # the first chunk, then the rest in one chunk of two
    assert db.session.scalar(
        select(func.count(SmsMessage.id)).where(SmsMessage.template == "dividend_paid")
    ) == len(lines)
    assert -_journal_total("GL-WHT-PAYABLE") == finished.tax


def test_a_member_whose_payment_fails_is_left_unpaid_and_paid_on_the_next_run(
    app: Flask, book: dict[int, Moves]
) -> None:
    run = _declared()
    dividend_approve(run_id=run.id, staff=_staff("branch_manager"))
    # One member's savings account is closed (empty): their credit is refused, the
    # others are paid.
    victim = min(book)
    number = db.session.scalar(select(Member.member_no).where(Member.id == victim))
    db.session.add(
        Account(
            code=f"ORD-{number}", kind="member_savings", name="x", member_id=victim, status="closed"
        )
    )
    db.session.commit()
    partial = dividend_post(run_id=run.id, value_date=PAID_ON)
    assert partial.status == "posting" and "1 not paid yet" in (partial.note or "")
    assert _ord_balance(victim) == 0
    others = [m for m in book if m != victim]
    assert all(_ord_balance(m) > 0 for m in others)
    account = db.session.scalar(select(Account).where(Account.code == f"ORD-{number}"))
    assert account is not None
    account.status = "open"
    db.session.commit()
    done = dividend_post(run_id=run.id, value_date=PAID_ON)
    assert done.status == "posted"
    line = db.session.scalar(
        select(DividendLine).where(DividendLine.run_id == run.id, DividendLine.member_id == victim)
    )
    assert line is not None and _ord_balance(victim) == line.net
    assert -_journal_total("GL-WHT-PAYABLE") == done.tax


def test_the_report_reconciles_to_the_journal_in_csv_and_xlsx(
    app: Flask, book: dict[int, Moves]
) -> None:
    run = _declared(share_rate="9", deposit_rate="4", method="weighted")
    dividend_approve(run_id=run.id, staff=_staff("branch_manager"))
    run = dividend_post(run_id=run.id, value_date=PAID_ON)
    rows = list(csv.reader(io.StringIO(dividend_report(run.id, "csv").decode("utf-8-sig"))))
    header, *body = rows
    assert header[:8] == [
        "member_no",
        "name",
        "share_basis",
        "deposit_basis",
        "dividend",
        "interest",
        "tax",
        "net",
    ]
    members, total, journal = body[:-2], body[-2], body[-1]
    assert len(members) == len(book)
    assert total[0] == "TOTAL" and journal[0] == "JOURNAL"
    assert (
        total[4:8]
        == journal[4:8]
        == [
            f"{run.dividend_gross:.2f}",
            f"{run.interest_gross:.2f}",
            f"{run.tax:.2f}",
            f"{run.net:.2f}",
        ]
    )
    summed = [sum(Decimal(r[i]) for r in members) for i in range(4, 8)]
    assert summed == [run.dividend_gross, run.interest_gross, run.tax, run.net]
    sheet = load_workbook(io.BytesIO(dividend_report(run.id, "xlsx"))).active
    assert sheet is not None
    values = list(sheet.iter_rows(values_only=True))
    assert values[-2][0] == "TOTAL" and values[-1][0] == "JOURNAL"
    assert values[-2][4:8] == values[-1][4:8]
    assert Decimal(str(values[-1][6])) == run.tax
    pdf = dividend_report(run.id, "pdf")
    assert pdf.startswith(b"%PDF-") and b"JOURNAL" in pdf
    with pytest.raises(DividendError, match="format"):
        dividend_report(run.id, "doc")


def _report_lines(run_id: int, members: list[int]) -> list[tuple]:
    """Each member's line of a run, as the report is to show it, by member."""
    found = []
    for member_id in sorted(members):
        member = db.session.get(Member, member_id)
        line = db.session.scalar(
            select(DividendLine).where(
                DividendLine.run_id == run_id, DividendLine.member_id == member_id
            )
        )
        assert member is not None and line is not None
        money = (
            line.share_basis,
            line.deposit_basis,
            line.dividend,
            line.interest,
            line.tax,
            line.net,
        )
        found.append(
            (member.member_no, member.name, money, line.paid_to, line.entry_id, line.paid_at)
        )
    return found


def _cut(name: str, width: float = 48) -> str:
    """`name` as its 50 mm column shows it (1 mm each side): whole if it fits in Helvetica
    8, else the longest start of it that fits with "..." after it."""
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", "", 8)
    if pdf.get_string_width(name) <= width:
        return name
    end = max(n for n in range(len(name)) if pdf.get_string_width(name[:n] + "...") <= width)
    return name[:end] + "..."


def _pdf_text(pdf: bytes) -> str:
    """The words the (uncompressed) PDF draws, in the order it draws them."""
    return "\n".join(m.decode("latin-1") for m in re.findall(rb"\((.*?)\) Tj", pdf))


def test_the_report_shows_every_line_whole_in_csv_xlsx_and_pdf(
    app: Flask, book: dict[int, Moves]
) -> None:
    """Every member's line with its paid-to, entry and time (blank until paid), the totals
    row and the journal's row for this run only (last year's run posted too). (Mutation
    testing, issue 23.)"""
    admin, manager = _staff("admin"), _staff("branch_manager")
    long_named = db.session.get(Member, min(book))
    assert long_named is not None
    long_named.name = "Wanjiku Nyambura Achieng Chebet Kiprotich Wambui Otieno Kamau"
    db.session.commit()
    earlier = _declared(year=YEAR - 1, share_rate="5", deposit_rate="2", staff=admin)
    dividend_approve(run_id=earlier.id, staff=manager)
    assert dividend_post(run_id=earlier.id, value_date=date(YEAR, 1, 31)).status == "posted"
    run = _declared(share_rate="9", deposit_rate="4", method="weighted", staff=admin)
    run_id = run.id

    def csv_rows() -> list[list[str]]:
        raw = dividend_report(run_id, "csv")
        assert raw.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs for UTF-8
        return list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))

    def expect(run: DividendRun, journal: tuple[Decimal, ...]) -> None:
        lines = _report_lines(run_id, list(book))
        header, *body, total, posted = csv_rows()
        assert header == list(REPORT_HEADER)
        assert len(body) == len(lines)
        for row, (no, name, money, paid_to, entry, paid_at) in zip(body, lines, strict=True):
            assert row[:2] == [no, name]
            assert [Decimal(v) for v in row[2:8]] == list(money)
            assert row[8:] == [
                paid_to or "",
                str(entry) if entry else "",
                paid_at.isoformat() if paid_at else "",
            ]
        figures = (run.dividend_gross, run.interest_gross, run.tax, run.net)
        assert total[:4] == ["TOTAL", f"{run.members} members", "", ""]
        assert posted[:4] == ["JOURNAL", "posted entries", "", ""]
        assert [Decimal(v) for v in total[4:]] == list(figures)
        assert [Decimal(v) for v in posted[4:]] == list(journal)

        sheet = load_workbook(io.BytesIO(dividend_report(run_id, "xlsx")))["Dividends"]
        title, head, *cells, sheet_total, sheet_journal = sheet.iter_rows(values_only=True)
        assert str(title[0]).startswith(f"Dividend run {run_id}: {YEAR}, weighted, ")
        assert head == REPORT_HEADER
        for row, (no, name, money, paid_to, entry, paid_at) in zip(cells, lines, strict=True):
            assert row[:2] == (no, name)
            assert [Decimal(str(v)) for v in row[2:8]] == list(money)
            assert row[8] in ((paid_to,) if paid_to else ("", None))
            assert row[9] in ((entry,) if entry else ("", None))
            if paid_at:
                assert abs(row[10] - paid_at.replace(tzinfo=None)) < timedelta(seconds=1)
            else:
                assert row[10] in ("", None)
        assert sheet_total[:4] == ("TOTAL", f"{run.members} members", None, None)
        assert sheet_journal[:4] == ("JOURNAL", "posted entries", None, None)
        assert [Decimal(str(v)) for v in sheet_total[4:8]] == list(figures)
        assert [Decimal(str(v)) for v in sheet_journal[4:8]] == list(journal)

        words = _pdf_text(dividend_report(run_id, "pdf"))
        drawn = [
            f"Dividend run {run_id}: {YEAR}, weighted",
            "Member\nName\nShares\nDeposits\nDividend\nInterest\nTax\nNet",
            *(
                "\n".join([no, _cut(name), *(f"{v:,.2f}" for v in money)])
                for no, name, money, *_ in lines
            ),
            "\n".join(["TOTAL", f"{run.members} members", *(f"{v:,.2f}" for v in figures)]),
            "\n".join(["JOURNAL", "posted entries", *(f"{v:,.2f}" for v in journal)]),
        ]
        at = 0
        for part in drawn:
            found = words.find(part, at)
            assert found >= 0, (part, words[at:])
            at = found + len(part)

    nothing = (Decimal(0),) * 4
    expect(run, nothing)  # a draft: nothing paid, nothing posted for this year yet
    dividend_approve(run_id=run_id, staff=manager)
    posted = dividend_post(run_id=run_id, value_date=PAID_ON)
    expect(posted, (posted.dividend_gross, posted.interest_gross, posted.tax, posted.net))
    with pytest.raises(DividendError) as unknown:
        dividend_report(run_id, "doc")
    assert str(unknown.value) == "the report format must be one of csv, xlsx, pdf"
    with pytest.raises(DividendError) as missing:
        dividend_report(999999, "csv")
    assert str(missing.value) == "no dividend run 999999"


def test_preview_summary_and_a_members_own_dividends(app: Flask, book: dict[int, Moves]) -> None:
    run = _declared()
    summary, top = dividend_summary(run.id)
    assert summary.id == run.id
    nets = [line.net for line in top]
    assert nets == sorted(nets, reverse=True) and len(top) == len(book)
    biggest = top[0].member_id
    mine = member_dividends(biggest, [YEAR, YEAR - 1])
    assert [(d.year, d.status, d.net, d.paid) for d in mine] == [(YEAR, "draft", nets[0], False)]
    assert member_dividends(biggest, [YEAR - 1]) == []


def test_two_workers_paying_the_same_chunk_pay_it_once(
    app: Flask, pg: None, book: dict[int, Moves]
) -> None:
    run = _declared()
    dividend_approve(run_id=run.id, staff=_staff("branch_manager"))
    _mark_posting(run.id)
    ids = dividend_unpaid_line_ids(PAID_ON)
    db.session.commit()
    # The first holds the members' locks (uncommitted) while the second asks for them.
    first_member = min(book)
    db.session.execute(select(Member.id).where(Member.id == first_member).with_for_update()).all()

    def pay() -> tuple[int, int]:
        found = dividend_lines_pay(ids)
        db.session.commit()
        return found

    second = Worker(app, pay)
    second.start()
    wait_until_blocked()
    assert dividend_lines_pay(ids) == (len(ids), len(ids))
    db.session.commit()
    assert second.outcome() == (0, 0)
    for line in db.session.scalars(select(DividendLine).where(DividendLine.run_id == run.id)):
        assert _ord_balance(line.member_id) == line.net


def test_the_command_line_declares_approves_posts_and_reports(
    app: Flask, book: dict[int, Moves]
) -> None:
    runner = app.test_cli_runner()
    maker, checker = staff("branch_manager"), staff("admin")
    declared = runner.invoke(
        args=[
            "dividends",
            "declare",
            "--year",
            str(YEAR),
            "--share-rate",
            "10",
            "--deposit-rate",
            "5",
            "--method",
            "simple",
            "--staff",
            maker,
        ]
    )
    assert declared.exit_code == 0, declared.output
    run = db.session.scalar(select(DividendRun))
    assert run is not None and f"run {run.id} ({YEAR}, simple, draft)" in declared.output
    # Refusals: one line, exit 1, nothing changed.
    own = runner.invoke(args=["dividends", "approve", "--run", str(run.id), "--staff", maker])
    assert own.exit_code == 1
    assert (
        own.output.strip()
        == "error: the run must be approved by someone other than who declared it"
    )
    early = runner.invoke(
        args=["dividends", "post", "--run", str(run.id), "--value-date", "2026-01-31"]
    )
    assert early.exit_code == 1 and early.output.count("\n") == 1
    bad = runner.invoke(args=["dividends", "approve", "--run", "x", "--staff", checker])
    assert bad.exit_code == 1 and "whole number" in bad.output
    approved = runner.invoke(
        args=["dividends", "approve", "--run", str(run.id), "--staff", checker]
    )
    assert approved.exit_code == 0 and "approved" in approved.output
    posted = runner.invoke(
        args=["dividends", "post", "--run", str(run.id), "--value-date", "2026-01-31"]
    )
    assert posted.exit_code == 0 and "posted" in posted.output
    report = runner.invoke(args=["dividends", "report", "--run", str(run.id)])
    assert report.exit_code == 0
    assert "JOURNAL" in report.output and "TOTAL" in report.output
    db.session.expire_all()
    assert db.session.get(DividendRun, run.id).status == "posted"  # type: ignore[union-attr]


def test_posting_in_partitions_pays_each_member_once(
    app: Flask, book: dict[int, Moves], monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.schedule import BATCHES

    assert BATCHES["dividend-post"].noun == "dividend line"  # what a cob worker runs
    settings_change(app, monkeypatch, COB_CHUNK_SIZE=1)
    run = _declared(share_rate="8", deposit_rate="3", method="weighted")
    dividend_approve(run_id=run.id, staff=_staff("branch_manager"))
    posted = dividend_post(run_id=run.id, value_date=PAID_ON, workers=2)
    assert posted.status == "posted"
    lines = db.session.scalars(select(DividendLine).where(DividendLine.run_id == run.id)).all()
    assert len({line.entry_id for line in lines}) == len(lines)  # a chunk of one: an entry each
    for line in lines:
        assert _ord_balance(line.member_id) == line.net
    assert -_journal_total("GL-WHT-PAYABLE") == posted.tax


def test_arrears_first_pays_what_a_members_loans_are_behind_and_the_rest_to_savings(
    app: Flask, book: dict[int, Moves]
) -> None:

    # A member with deposits all 2025 and a loan paid out in June, never repaid.
    member_id = _saver("Borrower", "400000", "BIG1")
    member = db.session.get(Member, member_id)
    loan = make_loan(product=make_product("V1"), amount=10000, on=date(2025, 6, 1), member=member)
    loan_id = loan.id
    behind = loan_list_figures(loan_ids=[loan_id], as_of=PAID_ON)[loan_id].due_now
    assert behind > 0
    run = _declared(payout="arrears_first")
    dividend_approve(run_id=run.id, staff=_staff("branch_manager"))
    posted = dividend_post(run_id=run.id, value_date=PAID_ON)
    assert posted.status == "posted"
    line = db.session.scalar(
        select(DividendLine).where(
            DividendLine.run_id == run.id, DividendLine.member_id == member_id
        )
    )
    assert line is not None and line.net > behind  # 24,000 less tax: more than is behind
    assert line.paid_to == "arrears"
    assert loan_list_figures(loan_ids=[loan_id], as_of=PAID_ON)[loan_id].due_now == 0
    assert _ord_balance(member_id) == line.net - behind
    assert db.session.get(Loan, loan_id).status == "active"  # type: ignore[union-attr]
    # Members without loans are paid to savings as before.
    for other in book:
        paid = db.session.scalar(
            select(DividendLine).where(
                DividendLine.run_id == run.id, DividendLine.member_id == other
            )
        )
        assert paid is not None and paid.paid_to == "savings"
        assert _ord_balance(other) == paid.net
    texts = {
        m.member_id: m.body
        for m in db.session.scalars(select(SmsMessage).where(SmsMessage.template.like("dividend%")))
    }
    assert "paid your loan arrears" in texts[member_id]
    # The report still reconciles: the net went to deposits (then the loan) and savings.
    rows = list(csv.reader(io.StringIO(dividend_report(run.id, "csv").decode("utf-8-sig"))))
    assert rows[-2][4:8] == rows[-1][4:8]
    assert -_journal_total("GL-WHT-PAYABLE") == posted.tax
    assert ledger_check() == []


def test_a_run_paid_by_mpesa_sends_each_net_once_and_a_failed_one_comes_back_to_savings(
    client: FlaskClient, mocked: responses.RequestsMock, base: str, book: dict[int, Moves]
) -> None:
    """payout "mpesa": each member's net is credited to savings by the run's entry and sent
    on by the withdrawal's own path (no fee, whole shillings; the cents stay in savings).
    A payout M-PESA refuses comes back to savings once, and the member is told."""
    import json

    from app.cli.runtime import make_worker
    from app.models import MpesaRequest
    from tests.helpers import b2c_result_body

    mocked.get(f"{base}/oauth/v1/generate", json={"access_token": "tok", "expires_in": "3599"})
    mocked.post(
        f"{base}/mpesa/b2c/v3/paymentrequest",
        json={"ConversationID": "AG_B2C_DIV", "ResponseCode": "0"},
    )
    run = _declared(payout="mpesa")
    dividend_approve(run_id=run.id, staff=_staff("branch_manager"))
    run_id = run.id
    assert dividend_post(run_id=run_id, value_date=PAID_ON).status == "posted"
    lines = {
        line.member_id: line
        for line in db.session.scalars(select(DividendLine).where(DividendLine.run_id == run_id))
    }
    payouts = {
        member_id: (request_id, originator, amount, kind, purpose)
        for member_id, request_id, originator, amount, kind, purpose in db.session.execute(
            select(
                MpesaRequest.member_id,
                MpesaRequest.id,
                MpesaRequest.originator_conversation_id,
                MpesaRequest.amount,
                MpesaRequest.kind,
                MpesaRequest.purpose,
            ).where(MpesaRequest.requested_by == f"dividend:{run_id}")
        )
    }
    net = {member_id: line.net for member_id, line in lines.items()}
    assert set(payouts) == {m for m, line in lines.items() if line.net >= 10}
    for member_id, line in lines.items():
        sent = payouts.get(member_id)
        whole = line.net.to_integral_value(rounding="ROUND_FLOOR") if sent else Decimal(0)
        assert line.paid_to == ("mpesa" if sent else "savings")
        if sent:
            assert (sent[3], sent[4], sent[2]) == ("b2c", "withdrawal", whole)
        assert _ord_balance(member_id) == line.net - whole  # the cents stay
    make_worker(("payments",)).work(burst=True)  # queued by the post after its commit
    sends = [json.loads(c.request.body) for c in mocked.calls if "b2c" in c.request.url]
    assert sorted(Decimal(str(s["Amount"])) for s in sends) == sorted(
        r[2] for r in payouts.values()
    )
    # One payout paid, one refused by M-PESA: the refused one's money comes back, once.
    paid_member, failed_member = sorted(payouts)[:2]
    for member_id, code in ((paid_member, 0), (failed_member, 2001)):
        request_id, originator, amount, _, _ = payouts[member_id]
        body = b2c_result_body(
            originator or "",
            code,
            amount=int(amount),
            receipt=f"DIV{member_id:07d}",
        )
        for _ in range(2):  # a result delivered twice changes nothing more
            client.post(
                "/payments/dev-callback-token/b2c/result",
                data=json.dumps(body),
                content_type="application/json",
            )
            make_worker(("payments", "sms")).work(burst=True)
    db.session.expire_all()
    assert db.session.get(MpesaRequest, payouts[paid_member][0]).status == "succeeded"
    assert db.session.get(MpesaRequest, payouts[failed_member][0]).status == "failed"
    assert _ord_balance(failed_member) == net[failed_member]
    texts = [
        m.body
        for m in db.session.scalars(
            select(SmsMessage).where(SmsMessage.template == "dividend_paid_mpesa")
        )
    ]
    assert len(texts) == len(payouts) and all("on its way to your M-PESA" in t for t in texts)
    assert ledger_check() == []


def test_arrears_first_pays_loans_oldest_first_to_the_shilling_in_the_callers_transaction(
    app: Flask,
) -> None:
    """One member's loans, oldest first: one up to date, one a shilling behind, two far
    behind. The net (less than all that is behind) pays the shilling, then all it can of
    the next; nothing goes to the loan up to date or the last one, nothing to savings,
    nothing to another member's loan. Each repayment is the member's deposits paying, keyed by run,
    member and loan, by the system. Until the chunk commits none of it is written: the
    caller's rollback takes it all back. (Mutation testing, issue 23.)"""

    member_id = _saver("Borrower", "400000", "BIG1")
    neighbour_id = _saver("Neighbour", "100000", "NB1")
    neighbours_loan = make_loan(
        product=make_product("V1", code="NB"),
        amount=5000,
        on=date(2025, 6, 1),
        member=db.session.get(Member, neighbour_id),
    ).id
    member = db.session.get(Member, member_id)
    loans = {}
    for name in ("up_to_date", "a_shilling", "far_behind", "also_behind"):
        product = make_product("V1", code=name[:8].upper())
        loans[name] = make_loan(
            product=product, amount=10000, on=date(2025, 6, 1), member=member
        ).id
    manager = _staff("branch_manager")
    # Given to another officer since: PostgreSQL now keeps its row after the others'.
    portfolio_assign(
        loan_id=loans["a_shilling"],
        officer_id=_second("loan_officer").id,
        staff=manager,
    )

    def behind() -> dict[str, Decimal]:
        figures = loan_list_figures(loan_ids=list(loans.values()), as_of=PAID_ON)
        return {name: figures[loan_id].due_now for name, loan_id in loans.items()}

    # The neighbour owes a shilling too: their own dividend pays it, the rest is savings.
    neighbour_behind = loan_list_figures(loan_ids=[neighbours_loan], as_of=PAID_ON)
    loan_repay(
        loan_id=neighbours_loan,
        amount=neighbour_behind[neighbours_loan].due_now - 1,
        reference="PAY-NB",
        value_date=date(2026, 1, 20),
    )
    before = behind()
    for name, left in (("up_to_date", Decimal(0)), ("a_shilling", Decimal(1))):
        loan_repay(
            loan_id=loans[name],
            amount=before[name] - left,
            reference=f"PAY-{name}",
            value_date=date(2026, 1, 20),
        )
    before = behind()
    assert (before["up_to_date"], before["a_shilling"]) == (Decimal(0), Decimal("1.00"))
    assert arrears_by_member([member_id], PAID_ON) == {
        member_id: [
            (loans["a_shilling"], Decimal("1.00")),
            (loans["far_behind"], before["far_behind"]),
            (loans["also_behind"], before["also_behind"]),
        ]
    }

    run = _declared(deposit_rate="0.5", payout="arrears_first")
    run_id = run.id
    dividend_approve(run_id=run_id, staff=manager)
    _mark_posting(run_id)
    line = db.session.scalar(
        select(DividendLine).where(
            DividendLine.run_id == run_id, DividendLine.member_id == member_id
        )
    )
    assert line is not None
    net, line_id = line.net, line.id
    assert Decimal(1) < net < Decimal(1) + before["far_behind"]

    assert dividend_lines_pay([line_id]) == (1, 1)
    db.session.rollback()
    assert behind() == before
    assert db.session.get(DividendLine, line_id).paid_at is None
    assert _ord_balance(member_id) == 0

    assert dividend_post(run_id=run_id, value_date=PAID_ON).status == "posted"
    assert behind() == {
        **before,
        "a_shilling": Decimal(0),
        "far_behind": before["far_behind"] - (net - 1),
    }
    paid = db.session.get(DividendLine, line_id)
    assert paid is not None and paid.paid_to == "arrears"
    assert _ord_balance(member_id) == 0
    repayments = db.session.execute(
        select(JournalEntry.idempotency_key, JournalEntry.actor, JournalEntry.loan_id)
        .where(JournalEntry.loan_id.in_(list(loans.values())))
        .where(JournalEntry.idempotency_key.like("%DIV%"))
        .order_by(JournalEntry.id)
    ).all()
    assert [(loan_id, actor) for _, actor, loan_id in repayments] == [
        (loans["a_shilling"], "system"),
        (loans["far_behind"], "system"),
    ]
    for key, _, loan_id in repayments:
        assert key.endswith(f"DIV{run_id}-{member_id}-{loan_id}"), key
    # The deposits paid: what they hold is what the member saved, less nothing else.
    assert member_balances(member_id=member_id).savings == Decimal("400000.00")
    assert db.session.get(Loan, neighbours_loan).status == "active"  # type: ignore[union-attr]
    assert (
        loan_list_figures(loan_ids=[neighbours_loan], as_of=PAID_ON)[neighbours_loan].due_now == 0
    )
    theirs = db.session.scalar(
        select(DividendLine).where(
            DividendLine.run_id == run_id, DividendLine.member_id == neighbour_id
        )
    )
    assert theirs is not None and theirs.paid_to == "arrears"
    assert _ord_balance(neighbour_id) == theirs.net - 1
    assert ledger_check() == []


def test_with_savings_closed_to_new_accounts_only_members_who_hold_one_are_paid(
    app: Flask, book: dict[int, Moves]
) -> None:
    """The ordinary savings product closed to new accounts: a member who holds one is
    paid into it; one who does not is left unpaid, the run saying why. (Mutation testing,
    issue 23.)"""
    holder, *others = sorted(book)
    # The holder's account, from a deposit to their savings before the product closed.
    holder_no = db.session.scalar(select(Member.member_no).where(Member.id == holder))
    ordinary = account_product("ORD")
    # Opened before products existed: it has none yet, and is the product's from now on.
    db.session.add(
        Account(
            code=f"ORD-{holder_no}",
            kind=ordinary.ledger_kind,
            name="Ordinary savings",
            member_id=holder,
        )
    )
    db.session.commit()
    product_update(product_id=ordinary.id, actor="staff:test", active=False)
    run = _declared()
    dividend_approve(run_id=run.id, staff=_staff("branch_manager"))
    partial = dividend_post(run_id=run.id, value_date=PAID_ON)
    assert partial.status == "posting"
    first_missing = db.session.scalar(select(Member.member_no).where(Member.id == others[0]))
    assert f"{ordinary.name} is closed to new accounts (ORD-{first_missing})" in (
        partial.note or ""
    )
    assert partial.note.startswith(f"{len(others)} not paid yet: ")
    paid = db.session.scalar(
        select(DividendLine).where(DividendLine.run_id == run.id, DividendLine.member_id == holder)
    )
    assert paid is not None and paid.paid_at is not None
    assert _ord_balance(holder) == paid.net
    held = db.session.scalar(select(Account).where(Account.code == f"ORD-{holder_no}"))
    assert held is not None and held.product_id == ordinary.id
    for member_id in others:
        assert _ord_balance(member_id) == 0
    assert ledger_check() == []


def _lines_posting() -> list[int]:
    run = _declared()
    dividend_approve(run_id=run.id, staff=_staff("branch_manager"))
    _mark_posting(run.id)
    return dividend_unpaid_line_ids(PAID_ON)


def _paying(ids: list[int]) -> Callable[[], tuple[int, int]]:
    def pay() -> tuple[int, int]:
        done = dividend_lines_pay(ids)
        db.session.commit()
        return done

    return pay


def test_a_chunk_of_lines_locks_its_members_in_id_order(
    app: Flask, book: dict[int, Moves], pg: None
) -> None:
    """While a chunk waits for its lowest member, it holds none of the others: two lockers
    never wait on each other in a circle. (Mutation testing, issue 23.)"""
    low, *higher = sorted(book)
    # Their details changed since: PostgreSQL keeps the lowest member's row after the others'.
    renamed = db.session.get(Member, low)
    assert renamed is not None
    renamed.name = "Member A Renamed"
    db.session.commit()
    ids = _lines_posting()
    with row_locked(app, "members", low):
        chunk = Worker(app, _paying(ids))
        chunk.start()
        wait_until_blocked()
        for member_id in higher:
            assert_not_held("members", member_id)
    assert chunk.outcome() == (len(ids), len(ids))


def test_a_chunk_of_lines_locks_only_its_own_members(
    app: Flask, book: dict[int, Moves], pg: None
) -> None:
    """A member with no line in the chunk is not waited for. (Mutation testing, issue 23.)"""
    bystander = make_member(name="Bystander").id
    ids = _lines_posting()
    with row_locked(app, "members", bystander):
        chunk = Worker(app, _paying(ids))
        chunk.start()
        assert chunk.outcome(timeout=60) == (len(ids), len(ids))  # did not wait for them


def test_amounts_under_a_shilling_are_paid_to_the_cent(
    app: Flask, book: dict[int, Moves], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member whose interest is KES 0.60 (tax 0.09, net 0.51) and one whose is KES 0.01
    (no tax at all), each alone in a chunk, so in an entry of their own: both paid to the
    cent. (Mutation testing, issue 23.)"""
    settings_change(app, monkeypatch, COB_CHUNK_SIZE=1)
    small_id, tiny_id = _saver("Small", "10.00", "S1"), _saver("Tiny", "0.10", "S2")
    run = _declared()
    dividend_approve(run_id=run.id, staff=_staff("branch_manager"))
    posted = dividend_post(run_id=run.id, value_date=PAID_ON)
    assert posted.status == "posted", posted.note
    lines = {
        line.member_id: (line.interest, line.tax, line.net)
        for line in db.session.scalars(
            select(DividendLine).where(DividendLine.member_id.in_([small_id, tiny_id]))
        )
    }
    assert lines == {
        small_id: (Decimal("0.60"), Decimal("0.09"), Decimal("0.51")),
        tiny_id: (Decimal("0.01"), Decimal("0.00"), Decimal("0.01")),
    }
    assert (_ord_balance(small_id), _ord_balance(tiny_id)) == (Decimal("0.51"), Decimal("0.01"))
    assert -_journal_total("GL-WHT-PAYABLE") == posted.tax
    assert ledger_check() == []


def test_a_chunk_pays_the_lines_of_the_run_being_posted_and_leaves_a_drafts(
    app: Flask, book: dict[int, Moves]
) -> None:
    """Lines of a run not being posted (a draft declared earlier), first in the chunk, are
    left for their own run; the posted run's lines after them are paid. (Mutation
    testing, issue 23.)"""
    admin, manager = _staff("admin"), _staff("branch_manager")
    draft = _declared(year=YEAR - 1, share_rate="5", deposit_rate="2", staff=admin)
    draft_lines = list(
        db.session.scalars(select(DividendLine.id).where(DividendLine.run_id == draft.id))
    )
    assert draft_lines
    run = _declared(staff=admin)
    dividend_approve(run_id=run.id, staff=manager)
    _mark_posting(run.id)
    posting = dividend_unpaid_line_ids(PAID_ON)
    assert max(draft_lines) < min(posting)
    assert dividend_lines_pay(draft_lines + posting) == (len(posting), len(posting))
    db.session.commit()
    assert (
        db.session.scalar(
            select(func.count(DividendLine.id)).where(
                DividendLine.id.in_(draft_lines), DividendLine.paid_at.is_not(None)
            )
        )
        == 0
    )
    assert dividend_unpaid_line_ids(PAID_ON) == []
