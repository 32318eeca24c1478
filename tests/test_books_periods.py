"""Closed periods, proven through every path that posts: the services with a back value
date, the loan-book import, jobs replayed with --as-of-date, the year-end close, reopening,
corrections, and a close racing a posting (real threads on PostgreSQL). Late M-PESA money
(a callback dated in a closed month) still posts, on the first open day."""

from __future__ import annotations

import csv
import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import delete, func, select

from app.cli.demo import PRODUCTS
from app.extensions import db
from app.models import (
    Account,
    AuditLog,
    BooksState,
    JobRun,
    JournalEntry,
    JournalLine,
    Loan,
    LoanProduct,
    MpesaRequest,
    Payment,
    PeriodEvent,
)
from app.services.books import (
    PeriodError,
    journal_correct,
    journal_manual,
    period_close,
    period_reopen,
    periods_status,
)
from app.services.books.chart import YEAR_END_KIND, kinds_of_type
from app.services.ledger import (
    Draft,
    PeriodClosed,
    books_closed_through,
    credit,
    debit,
    gl_account,
    journal_post,
    journal_post_many,
    ledger_check,
    open_value_date,
)
from app.services.loan_import import COLUMNS
from app.services.loans import loan_apply, loan_approve, loan_disburse, loan_repay
from app.services.members import member_buy_shares, member_deposit
from app.services.payments.common import late_note
from app.services.permissions import PermissionDenied
from app.services.savings.money_in import account_deposit
from app.services.savings.products import account_product
from tests.helpers import (
    Worker,
    b2c_result_body,
    c2b_body,
    stk_body,
    wait_until_blocked,
)
from tests.loan_factories import make_borrower, make_loan, make_product, make_staff, run_job
from tests.test_payments import (  # noqa: F401 - fixtures of the payments tests
    CHECKOUT,
    approved_loan,
    b2c,
    daraja,
    debt,
    loan,
    post,
    sent_stk,
    work,
)
from workers import schedule
from workers.runner import EXIT_FATAL

D = Decimal
OCT = date(2026, 10, 1)
IN_OCT = date(2026, 10, 20)
NOV_2 = date(2026, 11, 2)


def entries() -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(JournalEntry)) or 0


def saved(code: str) -> Decimal:
    return db.session.scalar(select(Account.balance).where(Account.code == code)) or D("0")


def close(month: date, role: str = "branch_manager") -> PeriodEvent:
    return period_close(month=month, actor=make_staff(role))


def refused_in_words(exc: pytest.ExceptionInfo[BaseException], day: date) -> None:
    assert "closed through 2026-10-31" in str(exc.value), exc.value
    assert f"nothing may be dated {day.isoformat()}" in str(exc.value)
    # The way out, in words: the first open day, not the last closed one.
    assert "post a correction dated 2026-11-01 or later" in str(exc.value), exc.value


# -- services with a back value date ------------------------------------------------------


def test_a_closed_month_refuses_every_service_posting_dated_inside_it(app: Flask) -> None:
    member = make_borrower(savings=20000)
    product = make_product("V1")
    active = make_loan(product=product, on=date(2026, 1, 5), member=member)
    approved = loan_apply(
        member_id=member.id, product_id=product.id, amount=2000, term=None, as_of=date(2026, 9, 1)
    )
    if approved.status == "submitted":
        loan_approve(loan_id=approved.id, staff=make_staff("branch_manager"))
    active_id, approved_id, member_id = active.id, approved.id, member.id
    close(OCT)
    assert books_closed_through() == date(2026, 10, 31)
    before = entries()
    savings_code = f"SAV-{member.member_no}"
    savings = saved(savings_code)

    attempts = {
        "repayment from savings": lambda: loan_repay(
            loan_id=active_id, amount=500, reference="BACK-1", value_date=IN_OCT, source="savings"
        ),
        "M-PESA repayment": lambda: loan_repay(
            loan_id=active_id, amount=500, reference="BACK-2", value_date=IN_OCT
        ),
        "Paybill deposit": lambda: account_deposit(
            member_id=member_id,
            product=account_product("ORD"),
            amount=700,
            reference="BACK-3",
            value_date=IN_OCT,
        ),
        "deposit": lambda: member_deposit(
            member_id=member_id, amount=300, reference="BACK-4", value_date=IN_OCT
        ),
        "share purchase": lambda: member_buy_shares(
            member_id=member_id, amount=100, reference="BACK-5", value_date=IN_OCT
        ),
        "disbursement": lambda: loan_disburse(
            loan_id=approved_id, reference="BACK-6", value_date=IN_OCT
        ),
        "close of business, in bulk": lambda: journal_post_many(
            [
                Draft(
                    kind="journal",
                    lines=[
                        debit(gl_account("GL-BANK"), D("5.00")),
                        credit(gl_account("GL-CASH"), D("5.00")),
                    ],
                    value_date=IN_OCT,
                    idempotency_key="BACK-7",
                )
            ]
        ),
    }
    for what, attempt in attempts.items():
        with pytest.raises(PeriodClosed) as exc:
            attempt()
        db.session.rollback()
        refused_in_words(exc, IN_OCT)
        assert entries() == before, what

    assert db.session.get(Loan, approved_id).status == "approved"  # type: ignore[union-attr]
    assert saved(savings_code) == savings
    # The first open day takes them.
    loan_repay(loan_id=active_id, amount=500, reference="OPEN-1", value_date=NOV_2)
    loan_disburse(loan_id=approved_id, reference="OPEN-2", value_date=NOV_2)
    assert entries() == before + 2


def test_the_general_journal_refuses_a_closed_day_and_a_correction_names_what_it_corrects(
    app: Flask,
) -> None:
    boss = make_staff("branch_manager")
    wrong = journal_manual(
        lines=[("GL-BANK", D("250.00")), ("GL-CASH", D("-250.00"))],
        value_date=date(2026, 10, 10),
        description="Cash banked",
        actor=boss,
    )
    wrong_id = wrong.id
    close(OCT)
    before = entries()

    with pytest.raises(PeriodError, match="closed through 2026-10-31"):
        journal_manual(
            lines=[("GL-CASH", D("250.00")), ("GL-BANK", D("-250.00"))],
            value_date=date(2026, 10, 31),
            description="Undo in October",
            actor=boss,
        )
    with pytest.raises(PeriodError, match="closed through 2026-10-31"):
        journal_correct(
            corrects_entry_id=wrong_id,
            lines=[("GL-CASH", D("250.00")), ("GL-BANK", D("-250.00"))],
            value_date=date(2026, 10, 31),
            description="banked twice",
            actor=boss,
        )
    assert entries() == before

    fixed = journal_correct(
        corrects_entry_id=wrong_id,
        lines=[("GL-CASH", D("250.00")), ("GL-BANK", D("-250.00"))],
        value_date=NOV_2,
        description="banked twice",
        actor=boss,
    )
    assert (fixed.value_date, fixed.corrects_entry_id) == (NOV_2, wrong_id)
    assert fixed.description == f"Correction of #{wrong_id}: banked twice"
    assert gl_account("GL-BANK").balance == 0 and gl_account("GL-CASH").balance == 0
    # The corrected entry stays as it was, in its closed month.
    original = db.session.get(JournalEntry, wrong_id)
    assert original is not None and original.value_date == date(2026, 10, 10)


# -- the loan-book import -----------------------------------------------------------------


@pytest.fixture
def dev_product(app: Flask) -> LoanProduct:
    dev = LoanProduct(**{**PRODUCTS[1], "min_rate": D("10"), "max_rate": D("24")})
    db.session.add(dev)
    db.session.commit()
    return dev


def book(folder: Path) -> Path:
    path = folder / "book.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerow(
            ["C001", "Wanjiku Kamau", "0711000001", "DEV", "120000", "12", "12", "2026-06-15",
             "active"]
        )  # fmt: skip
    return path


def test_a_loan_book_true_on_a_closed_day_is_refused_and_nothing_is_written(
    runner: FlaskCliRunner, dev_product: LoanProduct, tmp_path: Path
) -> None:
    close(OCT)
    path = book(tmp_path)
    before = entries()
    loans = db.session.scalar(select(func.count()).select_from(Loan))
    db.session.commit()

    result = runner.invoke(args=["import", "loan-book", str(path), "--as-of-date", "2026-10-31"])

    assert result.exit_code != 0
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1, error
    assert "closed through 2026-10-31" in error
    assert entries() == before
    assert db.session.scalar(select(func.count()).select_from(Loan)) == loans == 0
    # Dated on an open day, the same book goes in.
    again = runner.invoke(args=["import", "loan-book", str(path), "--as-of-date", "2026-11-30"])
    assert again.exit_code == 0, again.output
    assert db.session.scalar(select(func.count()).select_from(Loan)) == 1


# -- jobs replayed with --as-of-date ------------------------------------------------------


def test_a_job_replayed_into_a_closed_month_is_refused(runner: FlaskCliRunner, app: Flask) -> None:
    product = make_product("V1", penalty_type="flat", penalty_value=D("50"))
    make_loan(product=product, on=date(2026, 1, 5))
    close(OCT)
    before = entries()
    db.session.commit()

    result = runner.invoke(args=["jobs", "run", "loan-arrears", "--as-of-date", "2026-10-15"])

    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        "error: --as-of-date 2026-10-15 is in a closed period: the books are closed "
        "through 2026-10-31"
    )
    assert entries() == before
    # The runner refuses it as well (the scheduler's catch-up calls it, not the CLI).
    assert schedule.run_job("loan-arrears", date(2026, 10, 15)) == EXIT_FATAL
    run = db.session.scalars(select(JobRun).order_by(JobRun.id.desc())).first()
    assert run is not None and run.status == "fatal"
    assert entries() == before
    # An open day runs (penalties posted on it, none in October).
    run_job("loan-arrears", date(2026, 11, 15))
    oct_entries = db.session.scalar(
        select(func.count())
        .select_from(JournalEntry)
        .where(JournalEntry.value_date.between(OCT, date(2026, 10, 31)))
    )
    assert oct_entries == 0


# -- closing in order, reopening, permissions ---------------------------------------------


def test_months_close_in_order_once_over_and_by_the_roles_allowed(app: Flask) -> None:
    with pytest.raises(PermissionDenied):
        close(date(2026, 9, 1), "loan_officer")
    with pytest.raises(PeriodError, match="December 2026 is not over yet"):
        close(date(2026, 12, 1), "admin")
    close(date(2026, 9, 1))
    with pytest.raises(PeriodError, match="close October 2026 first"):
        close(date(2026, 11, 1))
    with pytest.raises(PeriodError, match="September 2026 is closed already"):
        close(date(2026, 9, 30))
    close(OCT, "admin")
    status = periods_status()
    assert status.closed_through == date(2026, 10, 31)
    assert status.next_to_close == date(2026, 11, 1)
    assert [e.action for e in status.events] == ["close", "close"]


def test_reopening_is_an_admins_audited_act_with_a_reason_and_lets_the_posting_in(
    app: Flask,
) -> None:
    member = make_borrower(savings=1000)
    member_id = member.id
    close(date(2026, 9, 1))
    close(OCT)
    with pytest.raises(PermissionDenied):
        period_reopen(month=OCT, actor=make_staff("branch_manager"), reason="a late bank slip")
    admin = make_staff("admin")
    with pytest.raises(PeriodError, match="say why"):
        period_reopen(month=OCT, actor=admin, reason="  ")
    with pytest.raises(PeriodError, match="November 2026 is not closed"):
        period_reopen(month=date(2026, 11, 1), actor=admin, reason="a late bank slip")
    assert books_closed_through() == date(2026, 10, 31)

    event = period_reopen(month=OCT, actor=admin, reason="a late bank slip from 20 October")

    assert (event.action, event.period_start, event.period_end) == (
        "reopen",
        OCT,
        date(2026, 10, 31),
    )
    assert books_closed_through() == date(2026, 9, 30)
    audit = db.session.scalars(select(AuditLog).where(AuditLog.action == "books.reopen")).one()
    assert audit.actor == f"staff:{admin.email}"
    assert audit.note == "a late bank slip from 20 October"
    assert audit.after == {"closed_through": "2026-09-30"}
    # The October posting goes through now; September stays closed.
    member_deposit(member_id=member_id, amount=300, reference="SLIP-1", value_date=IN_OCT)
    with pytest.raises(PeriodClosed):
        member_deposit(
            member_id=member_id, amount=300, reference="SLIP-2", value_date=date(2026, 9, 30)
        )
    db.session.rollback()
    close(OCT)  # and October closes again, with the slip in it
    assert books_closed_through() == date(2026, 10, 31)


# -- the year-end close -------------------------------------------------------------------


def result_of(first: date, last: date) -> Decimal:
    """Income and expense lines over the year, debit positive, the year-end entry left out."""
    kinds = [*kinds_of_type("income"), *kinds_of_type("expense")]
    return db.session.scalar(
        select(func.coalesce(func.sum(JournalLine.amount), 0))
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .join(Account, Account.id == JournalLine.account_id)
        .where(
            Account.kind.in_(kinds),
            JournalEntry.value_date.between(first, last),
            JournalEntry.kind != YEAR_END_KIND,
        )
    )


def test_closing_december_moves_the_years_result_to_retained_earnings(app: Flask) -> None:
    boss = make_staff("branch_manager")
    product = make_product("V1")
    member = make_borrower(savings=20000)
    loan_ = make_loan(product=product, on=date(2025, 3, 1), member=member)
    loan_repay(loan_id=loan_.id, amount=2000, reference="R-2025", value_date=date(2025, 6, 1))
    journal_manual(
        lines=[("GL-INTEREST-EXPENSE", D("120.00")), ("GL-CASH", D("-120.00"))],
        value_date=date(2025, 12, 31),
        description="Interest paid on a deposit",
        actor=boss,
    )
    # Next year's income stays next year's.
    journal_manual(
        lines=[("GL-CASH", D("75.00")), ("GL-INCOME-FEES", D("-75.00"))],
        value_date=date(2026, 1, 2),
        description="A fee",
        actor=boss,
    )
    year = (date(2025, 1, 1), date(2025, 12, 31))
    result = result_of(*year)  # credit-heavy: a surplus reads negative
    interest = gl_account("GL-INCOME-INTEREST").balance
    assert interest < 0 and result == interest + D("120.00")

    event = period_close(month=date(2025, 12, 1), actor=boss)

    assert event.action == "year_end" and event.entry_id is not None
    entry = db.session.get(JournalEntry, event.entry_id)
    assert entry is not None and (entry.kind, entry.value_date) == (YEAR_END_KIND, year[1])
    # Every result account is nil for 2025 once the close's entry is counted.
    kinds = [*kinds_of_type("income"), *kinds_of_type("expense")]
    left = db.session.execute(
        select(Account.code, func.sum(JournalLine.amount))
        .join(JournalLine, JournalLine.account_id == Account.id)
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .where(Account.kind.in_(kinds), JournalEntry.value_date.between(*year))
        .group_by(Account.code)
    ).all()
    assert left and all(amount == 0 for _, amount in left), left
    assert gl_account("GL-RETAINED-EARNINGS").balance == result
    assert gl_account("GL-INCOME-FEES").balance == D("-75.00")
    assert ledger_check() == []


# -- a close racing a posting (PostgreSQL: row locks that wait) ---------------------------


@pytest.mark.parametrize("late_money", [False, True], ids=["posting", "late-money"])
def test_a_posting_in_flight_commits_before_the_close_of_its_month(
    app: Flask, pg: None, late_money: bool
) -> None:
    """The posting passed the check (its shared lock held) and has not committed: the close
    waits for it, so the posting lands inside the month before the month closes. Late
    M-PESA money holds that lock from the moment it chooses its day (`open_value_date`),
    before it posts on it: never refused for a month that closed in between."""
    cash, bank = gl_account("GL-CASH"), gl_account("GL-BANK")
    boss = make_staff("branch_manager")
    db.session.commit()
    cash_id, bank_id, boss_id = cash.id, bank.id, boss.id
    posted, release = threading.Event(), threading.Event()

    def hold() -> None:
        posted.set()
        assert release.wait(10)

    def posting() -> int:
        day = open_value_date(IN_OCT) if late_money else IN_OCT  # nothing closed yet
        if late_money:
            hold()  # its day chosen, not posted yet
        entry = journal_post(
            kind="journal",
            lines=[
                debit(db.session.get(Account, bank_id), D("10.00")),  # type: ignore[arg-type]
                credit(db.session.get(Account, cash_id), D("10.00")),  # type: ignore[arg-type]
            ],
            value_date=day,
            description="in flight",
        )
        if not late_money:
            hold()
        db.session.commit()
        return entry.id

    def closing() -> date:
        from app.models import StaffUser

        event = period_close(month=OCT, actor=db.session.get(StaffUser, boss_id))
        return event.period_end

    poster = Worker(app, posting)
    poster.start()
    assert posted.wait(10)
    closer = Worker(app, closing)
    closer.start()
    wait_until_blocked(1)
    assert closer.is_alive()  # the close waits for the posting
    release.set()

    entry_id = poster.outcome()
    assert closer.outcome() == date(2026, 10, 31)
    db.session.rollback()
    entry = db.session.get(JournalEntry, entry_id)
    assert entry is not None and entry.value_date == IN_OCT
    with pytest.raises(PeriodClosed):  # and nothing more gets in
        journal_post(
            kind="journal",
            lines=[debit(gl_account("GL-BANK"), D("1.00")), credit(gl_account("GL-CASH"), D("1"))],
            value_date=IN_OCT,
        )
    db.session.rollback()


def test_postings_in_flight_share_the_books_lock_and_never_wait_for_each_other(
    app: Flask, pg: None
) -> None:
    """Every posting reads the closed-through day under a shared lock: a long one (a
    close-of-business chunk) holding it must not hold up a member's deposit elsewhere.
    Only a close, which takes the lock exclusively, waits for them."""
    accounts = [gl_account(c) for c in ("GL-CASH", "GL-BANK", "GL-SUSPENSE", "GL-INCOME-FEES")]
    books_closed_through(lock=True)  # the books' row, as the first posting makes it
    db.session.commit()
    cash_id, bank_id, suspense_id, fees_id = (a.id for a in accounts)
    posted, release = threading.Event(), threading.Event()

    def post(debit_id: int, credit_id: int) -> int:
        return journal_post(
            kind="journal",
            lines=[
                debit(db.session.get(Account, debit_id), D("10.00")),  # type: ignore[arg-type]
                credit(db.session.get(Account, credit_id), D("10.00")),  # type: ignore[arg-type]
            ],
            value_date=IN_OCT,
        ).id

    def long_posting() -> int:
        entry_id = post(bank_id, cash_id)
        posted.set()
        assert release.wait(30)
        db.session.commit()
        return entry_id

    def other_posting() -> int:
        entry_id = post(suspense_id, fees_id)
        db.session.commit()
        return entry_id

    first = Worker(app, long_posting)
    first.start()
    try:
        assert posted.wait(10)
        second = Worker(app, other_posting)
        second.start()
        second.join(15)  # at once unless it waits on the first's lock
        assert not second.is_alive(), "a posting waited for another one's books lock"
    finally:
        release.set()
    ids = {first.outcome(), second.outcome()}

    db.session.rollback()
    assert db.session.scalar(select(func.count()).where(JournalEntry.id.in_(ids))) == 2
    assert ledger_check() == []


@pytest.mark.parametrize("first_close", [False, True], ids=["books-row", "no-books-row-yet"])
def test_a_close_in_flight_refuses_the_posting_that_waited_for_it(
    app: Flask, pg: None, first_close: bool
) -> None:
    """The year-end close holds the books' lock while it posts to retained earnings (held
    up here by a lock on that account); a posting dated in December waits on the books'
    lock, then reads the month closed and is refused, in words. The very first close, on
    books as an upgrade leaves them (no books row yet), makes the row and holds it: the
    posting, finding no row to lock, waits on that insert instead. (The first close:
    mutation testing, issue 23.)"""
    boss = make_staff("branch_manager")
    journal_manual(
        lines=[("GL-CASH", D("1000.00")), ("GL-INCOME-FEES", D("-1000.00"))],
        value_date=date(2025, 12, 10),
        description="Fees",
        actor=boss,
    )
    if first_close:
        db.session.execute(delete(BooksState))  # the table, no row: nothing posted since
    retained = gl_account("GL-RETAINED-EARNINGS")
    db.session.commit()
    boss_id, retained_id = boss.id, retained.id
    from app.models import StaffUser

    # Hold retained earnings: the close will take the books' lock, then wait here.
    db.session.execute(select(Account.id).where(Account.id == retained_id).with_for_update())

    def closing() -> int | None:
        return period_close(
            month=date(2025, 12, 1), actor=db.session.get(StaffUser, boss_id)
        ).entry_id

    def posting() -> int:
        return journal_manual(
            lines=[("GL-CASH", D("50.00")), ("GL-INCOME-FEES", D("-50.00"))],
            value_date=date(2025, 12, 20),
            description="A fee on the 20th",
            actor=db.session.get(StaffUser, boss_id),
        ).id

    closer = Worker(app, closing)
    closer.start()
    wait_until_blocked(1)
    poster = Worker(app, posting)
    poster.start()
    wait_until_blocked(2)
    db.session.rollback()  # let the close go on

    assert closer.outcome() is not None
    with pytest.raises(PeriodError, match="closed through 2025-12-31"):
        poster.outcome()
    db.session.rollback()
    assert gl_account("GL-RETAINED-EARNINGS").balance == D("-1000.00")
    assert gl_account("GL-INCOME-FEES").balance == D("0.00")
    assert db.session.scalar(select(BooksState.closed_through)) == date(2025, 12, 31)


# -- late M-PESA money --------------------------------------------------------------------


def test_open_value_date_moves_only_a_closed_day(app: Flask) -> None:
    assert open_value_date(IN_OCT) == IN_OCT  # nothing closed
    close(OCT)
    assert open_value_date(IN_OCT) == date(2026, 11, 1)
    assert open_value_date(date(2026, 10, 31)) == date(2026, 11, 1)
    assert open_value_date(NOV_2) == NOV_2


def test_a_paybill_payment_confirmed_after_its_month_closed_posts_on_the_first_open_day(
    client: FlaskClient,
) -> None:
    member = make_borrower()
    member_no = member.member_no
    close(date(2026, 11, 1))  # the payload's TransTime is 21 November

    post(client, "c2b/confirmation", c2b_body("LATEPAY001", amount="1000", account=member_no))
    work()

    db.session.expire_all()
    payment = db.session.scalars(select(Payment)).one()
    entry = db.session.get(JournalEntry, payment.journal_entry_id)
    assert entry is not None and entry.value_date == date(2026, 12, 1)
    assert entry.description.startswith(
        "Late: paid 2026-11-21 (books closed), dated 2026-12-01. Deposit"
    )
    # The M-PESA time is kept as it was: TransTime 06:38:45 in Nairobi.
    paid_at = payment.transacted_at.replace(tzinfo=payment.transacted_at.tzinfo or UTC)
    assert paid_at == datetime(2026, 11, 21, 3, 38, 45, tzinfo=UTC)
    # Said once: noting the same entry again (a retried step) leaves it as it is.
    noted = entry.description
    late_note(entry.id, paid_at)
    assert entry.description == noted
    assert db.session.scalar(
        select(Account.balance).where(Account.code == f"SAV-{member_no}")
    ) == D("-1000.00")


def test_an_unmatched_paybill_payment_after_the_close_goes_to_suspense_on_the_first_open_day(
    client: FlaskClient,
) -> None:
    close(date(2026, 11, 1))
    post(client, "c2b/confirmation", c2b_body("LATEPAY002", amount="400", account="NOBODY"))
    work()
    db.session.expire_all()
    payment = db.session.scalars(select(Payment)).one()
    entry = db.session.get(JournalEntry, payment.journal_entry_id)
    assert payment.status == "suspense"
    assert entry is not None and entry.value_date == date(2026, 12, 1)
    assert entry.description.startswith("Late: paid 2026-11-21")
    assert gl_account("GL-SUSPENSE").balance == D("-400.00")


def test_the_late_note_goes_in_front_of_a_long_description_within_its_column(
    client: FlaskClient,
) -> None:
    """An account typed at length makes the suspense entry's description as long as the
    column (255): the late note still goes in front, and the end is cut, not the note."""
    close(date(2026, 11, 1))
    typed = "NOBODY" * 60
    post(client, "c2b/confirmation", c2b_body("LATEPAY003", amount="400", account=typed))
    work()
    db.session.expire_all()
    payment = db.session.scalars(select(Payment)).one()
    entry = db.session.get(JournalEntry, payment.journal_entry_id)
    assert payment.status == "suspense" and len(entry.description) == 255
    assert entry.description.startswith(
        "Late: paid 2026-11-21 (books closed), dated 2026-12-01. Unmatched Paybill LATEPAY003"
    )


def test_an_stk_repayment_whose_callback_comes_after_the_close_still_pays_the_loan(
    client: FlaskClient,
    loan: object,  # noqa: F811 - the payments tests' fixture
    daraja: object,  # noqa: F811
) -> None:
    sent_stk(loan)  # type: ignore[arg-type]
    before = debt(loan.id)  # type: ignore[attr-defined]
    close(date(2026, 11, 1))  # the callback's TransactionDate is 21 November

    post(client, "stk/callback", stk_body(CHECKOUT, amount=500))
    work()

    assert before - debt(loan.id) == D("500")  # type: ignore[attr-defined]
    db.session.expire_all()
    request = db.session.scalars(
        select(MpesaRequest).where(MpesaRequest.checkout_request_id == CHECKOUT)
    ).one()
    assert request.status == "succeeded"
    entry = db.session.scalars(select(JournalEntry).where(JournalEntry.kind == "repayment")).one()
    assert entry.value_date == date(2026, 12, 1)
    assert entry.description.startswith("Late: paid 2026-11-21 (books closed), dated 2026-12-01")


def test_stk_money_for_suspense_heard_after_the_close_is_dated_the_first_open_day(
    client: FlaskClient,
    loan: object,  # noqa: F811 - the payments tests' fixture
    daraja: object,  # noqa: F811
) -> None:
    """A cancelled prompt paid after all, at another amount, on 21 November: heard after
    November closed, its suspense entry says so in front, like every late payment.
    (Mutation testing, issue 23.)"""
    sent_stk(loan)  # type: ignore[arg-type]
    post(client, "stk/callback", stk_body(CHECKOUT, 1032))
    work()
    close(date(2026, 11, 1))

    post(client, "stk/callback", stk_body(CHECKOUT, amount=450, receipt="LATESTK001"))
    work()

    db.session.expire_all()
    payment = db.session.scalars(select(Payment).where(Payment.receipt == "LATESTK001")).one()
    entry = db.session.get(JournalEntry, payment.journal_entry_id)
    assert payment.status == "suspense"
    assert entry is not None and entry.value_date == date(2026, 12, 1)
    assert entry.description.startswith(
        "Late: paid 2026-11-21 (books closed), dated 2026-12-01. STK LATESTK001"
    )


def test_a_payout_result_dated_in_a_closed_month_disburses_the_loan_on_the_first_open_day(
    client: FlaskClient,
    b2c: object,  # noqa: F811 - the payments tests' fixture
) -> None:
    """Money out is never lost either: the member has the loan's money, so the result of a
    payout M-PESA made on 21 November, heard after November closed, still disburses it."""
    made, payout = approved_loan()
    work()  # the payout is sent
    close(date(2026, 11, 1))

    body = b2c_result_body(payout.originator_conversation_id, amount=5000, receipt="LATEB2C001")
    post(client, "b2c/result", body)
    work()

    db.session.expire_all()
    disbursed = db.session.get(Loan, made.id)
    assert disbursed is not None and disbursed.status == "active"
    assert disbursed.disbursed_on == date(2026, 12, 1)
    entry = db.session.scalars(
        select(JournalEntry).where(JournalEntry.kind == "disbursement")
    ).one()
    assert entry.value_date == date(2026, 12, 1)
    assert entry.description.startswith("Late: paid 2026-11-21 (books closed), dated 2026-12-01")
