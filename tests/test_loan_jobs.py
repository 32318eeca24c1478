"""The daily loan jobs with fixed dates: penalties after the grace days, days past due,
aging buckets, default, and the PAR30 snapshot."""

from __future__ import annotations

import json
import threading
from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update

from app.extensions import db, redis_client
from app.models import (
    Account,
    Installment,
    JournalEntry,
    JournalLine,
    Loan,
    LoanProduct,
    PortfolioSnapshot,
)
from app.selectors.loans import aging_bucket, current_installments, portfolio_at_risk
from app.services.ledger import ledger_check
from app.services.loans import (
    ArrearsDecision,
    arrears_decide,
    loan_repay,
    loan_write_off,
    loans_update_arrears,
)
from tests.helpers import assert_not_held, holder_then_waiter
from tests.loan_factories import (
    charge_fee,
    count,
    fee_booked_behind_the_session,
    make_loan,
    make_loan_in_default,
    make_product,
    make_staff,
    receivables,
    reload,
    restructure,
    run_job,
    schedule_owed,
)

D = Decimal
DISBURSED = date(2026, 1, 31)
DUE1 = date(2026, 2, 28)  # V1 row 1: 788.49 + 100.00 = 888.49
DUE2 = date(2026, 3, 31)  # V1 row 2: 796.37 + 92.12 = 888.49


def v1_loan_id(**product: object) -> int:
    return make_loan(product=make_product(**product), on=DISBURSED).id


def state(loan_id: int) -> tuple[int, str, bool]:
    loan = reload(loan_id)
    return (loan.days_past_due, loan.aging_bucket, loan.in_default)


def penalties(loan_id: int) -> list[tuple[Decimal, date | None]]:
    return [(r.penalty_due, r.last_penalty_on) for r in current_installments(loan_id)]


def penalty_entries() -> int:
    return db.session.scalar(
        select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == "penalty")
    )


def assert_books(loan_id: int) -> None:
    assert ledger_check() == []
    loan = reload(loan_id)
    assert receivables(loan) == schedule_owed(loan)


# -- penalties ---------------------------------------------------------------------------


def test_no_penalty_within_grace_days_then_one_per_installment(app):
    loan_id = v1_loan_id(penalty_type="percent", penalty_value=D("5"))
    none = (D("0.00"), None)

    for late in (1, 2, 3):  # grace_days = 3
        run_job("loan-arrears", DUE1 + timedelta(days=late))
        assert penalties(loan_id)[0] == none
        assert state(loan_id) == (late, "1-30", False)
    assert penalty_entries() == 0

    run_job("loan-arrears", date(2026, 3, 4))  # 4 days late
    assert penalties(loan_id)[:2] == [(D("44.42"), date(2026, 3, 4)), none]  # 5% of 888.49
    assert receivables(reload(loan_id))["penalty"] == D("44.42")
    assert penalty_entries() == 1

    # Again the same day, and on later days: row 1 is never charged a second time.
    for day in (date(2026, 3, 4), date(2026, 3, 5), date(2026, 3, 20), date(2026, 4, 3)):
        run_job("loan-arrears", day)
    assert penalties(loan_id)[:2] == [(D("44.42"), date(2026, 3, 4)), none]
    assert penalty_entries() == 1

    run_job("loan-arrears", date(2026, 4, 4))  # row 2 is now 4 days late too
    assert penalties(loan_id)[:3] == [
        (D("44.42"), date(2026, 3, 4)),
        (D("44.42"), date(2026, 4, 4)),
        none,
    ]
    assert penalty_entries() == 2
    assert receivables(reload(loan_id))["penalty"] == D("88.84")
    assert state(loan_id) == (35, "31-60", True)
    assert_books(loan_id)


def test_percent_penalty_is_on_the_amount_overdue(app):
    loan_id = v1_loan_id(penalty_type="percent", penalty_value=D("5"))
    loan_repay(loan_id=loan_id, amount="388.49", reference="RCPART0001", value_date=DUE1)

    run_job("loan-arrears", date(2026, 3, 4))

    # Row 1 still owes 500.00 (its interest was paid first): 5% of that.
    assert penalties(loan_id)[0] == (D("25.00"), date(2026, 3, 4))
    assert_books(loan_id)


def test_the_rule_reads_a_whole_schedule_paid_and_future_rows_are_not_late() -> None:
    """`arrears_decide` takes the loan's live schedule: a row paid (late, once) and a row
    not yet due are neither counted late nor charged; the unpaid row past due is both."""
    product = LoanProduct(
        penalty_type="fixed", penalty_value=D("50"), grace_days=3, default_threshold_days=90
    )
    owed = dict(principal_due=D("796.37"), interest_due=D("92.12"), fees_due=D("0"))
    paid = {f"{c}_paid": D("0") for c in ("principal", "interest", "fees", "penalty")}
    rows = [
        Installment(number=1, due_date=DUE1, paid_on=date(2026, 3, 10), **owed, **paid),
        Installment(number=2, due_date=DUE2, paid_on=None, **owed, **paid),
        Installment(number=3, due_date=date(2026, 4, 30), paid_on=None, **owed, **paid),
    ]

    decided = arrears_decide(product, rows, date(2026, 4, 10))

    assert decided.standing == (10, "1-30", False)
    assert [(row.number, amount) for row, amount in decided.penalties] == [(2, D("50.00"))]
    # A product without a penalty: the same standing, and nothing to charge (not a zero).
    product.penalty_type = "none"
    assert arrears_decide(product, rows, date(2026, 4, 10)) == ArrearsDecision(
        [], 10, "1-30", False
    )
    # In any order: days past due count from the oldest unpaid row due (31 Mar), and the
    # penalties come oldest first (the in duplum cap serves them in that order).
    product.penalty_type = "fixed"
    decided = arrears_decide(product, rows[::-1], date(2026, 5, 5))
    assert decided.standing == (35, "31-60", False)
    assert [(row.number, amount) for row, amount in decided.penalties] == [
        (2, D("50.00")),
        (3, D("50.00")),
    ]


def test_percent_penalty_counts_a_fee_owed_on_the_row(app):
    loan_id = v1_loan_id(penalty_type="percent", penalty_value=D("5"))
    charge_fee(reload(loan_id), 1, D("100.00"), DUE1)

    run_job("loan-arrears", date(2026, 3, 4))

    # 5% of the 888.49 installment and its 100.00 fee: 49.4245.
    assert penalties(loan_id)[0] == (D("49.42"), date(2026, 3, 4))
    assert_books(loan_id)


def test_fixed_penalty_once_per_installment(app):
    loan_id = v1_loan_id(penalty_type="fixed", penalty_value=D("200"))

    run_job("loan-arrears", date(2026, 3, 3))
    assert penalties(loan_id)[0] == (D("0.00"), None)
    run_job("loan-arrears", date(2026, 3, 4))
    run_job("loan-arrears", date(2026, 3, 5))

    assert penalties(loan_id)[0] == (D("200.00"), date(2026, 3, 4))
    assert receivables(reload(loan_id))["penalty"] == D("200.00")
    assert penalty_entries() == 1
    assert_books(loan_id)


def test_the_chunk_reads_the_schedule_afresh_under_the_loans_lock(app):
    """A fee booked on a row by another writer after this session read the schedule is
    part of tonight's percentage base: the chunk re-reads the rows under the lock, not the
    session's copy of them."""
    loan_id = v1_loan_id(penalty_type="percent", penalty_value=D("5"))
    loan = reload(loan_id)
    row = current_installments(loan_id)[0]  # the session now holds the rows
    # Another worker books a 100.00 fee on row 1, as charge_fee does, around the session.
    fee_booked_behind_the_session(loan, row, D("100.00"), DUE1)

    assert loans_update_arrears([loan_id], as_of=date(2026, 3, 4)) == 1
    db.session.commit()

    # 5% of the 888.49 installment and the 100.00 fee (44.42 on the stale copy).
    assert penalties(loan_id)[0] == (D("49.42"), date(2026, 3, 4))
    assert_books(loan_id)


def test_the_chunk_reads_the_loans_afresh_under_their_lock(app):
    """A loan whose standing was written after this session read it (here by the chunk
    itself, whose bulk UPDATE goes around the session) is judged on the row, not on the
    session's copy: run again in the same transaction, nothing changes and nothing counts."""
    loan_id = v1_loan_id(penalty_type="fixed", penalty_value=D("200"))
    loan = reload(loan_id)  # the session holds the loan while a reference to it lives
    assert loan.days_past_due == 0

    assert loans_update_arrears([loan_id], as_of=date(2026, 3, 4)) == 1
    assert loans_update_arrears([loan_id], as_of=date(2026, 3, 4)) == 0
    db.session.commit()

    assert (loan.days_past_due, loan.aging_bucket, loan.in_default) == (4, "1-30", False)
    assert penalty_entries() == 1
    assert_books(loan_id)


def test_a_chunk_locks_its_loans_in_id_order(app, pg):
    """Whatever locks several loans takes them in id order, so two lockers can never
    deadlock: while the chunk waits for a lower loan, it holds no higher one. The lower
    loan's row is written last, so a scan in table order would meet the higher one first."""
    product = make_product(penalty_type="fixed", penalty_value=D("200"))
    low, high = (make_loan(product=product, on=DISBURSED).id for _ in range(2))
    db.session.execute(update(Loan).where(Loan.id == low).values(days_past_due=0))
    db.session.commit()
    db.session.remove()
    locked, release = threading.Event(), threading.Event()

    def hold_the_low_loan() -> None:
        db.session.execute(select(Loan.id).where(Loan.id == low).with_for_update()).all()
        locked.set()
        release.wait(20)
        db.session.rollback()

    def chunk() -> int:
        changed = loans_update_arrears([high, low], as_of=date(2026, 3, 4))
        db.session.commit()
        return changed

    holder, job = holder_then_waiter(app, hold_the_low_loan, locked, chunk)
    try:
        assert_not_held("loans", high)  # the waiting chunk holds no higher loan
    finally:
        release.set()
        holder.outcome()
    assert job.outcome() == 2
    assert penalty_entries() == 2


def test_a_chunk_counts_a_loan_it_moved_or_charged(app):
    product = make_product(penalty_type="fixed", penalty_value=D("200"), grace_days=5)
    loan_id = make_loan(product=product, on=DISBURSED).id
    # Four days late, within the grace days: its standing moves, nothing is charged.
    assert loans_update_arrears([loan_id], as_of=DUE1 + timedelta(days=4)) == 1
    db.session.commit()
    assert (state(loan_id), penalty_entries()) == ((4, "1-30", False), 0)
    # The grace cut to three days and the run repeated that day: charged, standing as it was.
    product.grace_days = 3
    db.session.commit()
    assert loans_update_arrears([loan_id], as_of=DUE1 + timedelta(days=4)) == 1
    db.session.commit()
    assert (state(loan_id), penalty_entries()) == ((4, "1-30", False), 1)
    assert_books(loan_id)


def test_a_chunk_whose_loans_all_closed_since_the_scan_counts_nothing(app):
    loan_id = v1_loan_id(penalty_type="fixed", penalty_value=D("200"))
    loan_repay(loan_id=loan_id, amount="10661.88", reference="RCSHUT0001", value_date=DUE1)
    assert reload(loan_id).status == "closed"

    assert loans_update_arrears([loan_id], as_of=date(2026, 3, 4)) == 0
    db.session.commit()
    assert penalty_entries() == 0
    assert_books(loan_id)


def test_the_penalty_account_the_run_opens_is_the_loans_and_its_members(app):
    """The nightly run opens a loan's penalty receivable on its first penalty, in bulk: the
    account is registered to the loan and its member, as every other account of the loan."""
    loan_id = v1_loan_id(penalty_type="fixed", penalty_value=D("200"))
    run_job("loan-arrears", date(2026, 3, 4))

    loan = reload(loan_id)
    accounts = {
        a.kind: (a.member_id, a.loan_id, a.name)
        for a in db.session.scalars(select(Account).where(Account.loan_id == loan_id))
    }
    assert accounts["loan_penalty"] == (loan.member_id, loan_id, f"Penalty {loan.loan_no}")
    assert accounts["loan_principal"][:2] == (loan.member_id, loan_id)
    assert_books(loan_id)


def test_grace_days_and_default_threshold_are_per_product(app):
    loan_id = v1_loan_id(
        penalty_type="fixed", penalty_value=D("50"), grace_days=0, default_threshold_days=60
    )

    run_job("loan-arrears", date(2026, 3, 1))  # one day late, no grace
    assert penalties(loan_id)[0] == (D("50.00"), date(2026, 3, 1))

    run_job("loan-arrears", DUE1 + timedelta(days=60))
    assert state(loan_id) == (60, "31-60", False)
    run_job("loan-arrears", DUE1 + timedelta(days=61))
    assert state(loan_id) == (61, "61-90", True)
    assert_books(loan_id)


def test_no_penalty_product_charges_nothing(app):
    loan_id = v1_loan_id()

    run_job("loan-arrears", date(2026, 4, 10))

    assert penalty_entries() == 0
    assert state(loan_id) == (41, "31-60", True)
    assert_books(loan_id)


# -- days past due, aging and default --------------------------------------------------


@pytest.mark.parametrize(
    ("days", "bucket", "in_default"),
    [
        (0, "current", False),
        (1, "1-30", False),
        (30, "1-30", False),
        (31, "31-60", True),
        (60, "31-60", True),
        (61, "61-90", True),
        (90, "61-90", True),
        (91, "90+", True),
    ],
)
def test_days_past_due_buckets_and_default_at_the_boundaries(app, days, bucket, in_default):
    assert aging_bucket(days) == bucket
    loan_id = v1_loan_id()

    run_job("loan-arrears", DUE1 + timedelta(days=days))

    # Days past due count from the oldest unpaid installment, not the newest.
    assert state(loan_id) == (days, bucket, in_default)
    assert_books(loan_id)


def test_late_loan_paid_goes_back_to_current_on_the_next_run(app):
    loan_id = v1_loan_id(penalty_type="percent", penalty_value=D("5"))
    run_job("loan-arrears", date(2026, 4, 5))
    assert state(loan_id) == (36, "31-60", True)

    # Pay row 1 and its penalty: row 2 (due 31 Mar) is now the oldest unpaid.
    loan_repay(
        loan_id=loan_id, amount="932.91", reference="RCLATE0001", value_date=date(2026, 4, 5)
    )
    run_job("loan-arrears", date(2026, 4, 6))
    assert state(loan_id) == (6, "1-30", False)

    # Pay row 2 and its penalty: nothing is overdue any more.
    loan_repay(
        loan_id=loan_id, amount="932.91", reference="RCLATE0002", value_date=date(2026, 4, 6)
    )
    run_job("loan-arrears", date(2026, 4, 7))
    assert state(loan_id) == (0, "current", False)
    assert [r.paid_on for r in current_installments(loan_id)[:3]] == [
        date(2026, 4, 5),
        date(2026, 4, 6),
        None,
    ]
    assert_books(loan_id)


def test_rerunning_the_same_day_changes_nothing(app, capsys):
    percent = make_product(code="LATE", penalty_type="percent", penalty_value=D("5"))
    late = make_loan(product=percent, on=DISBURSED).id  # 46 days late on 15 April
    partly = make_loan(product=percent, on=date(2026, 2, 20)).id
    loan_repay(loan_id=partly, amount="300", reference="RCRERUN001", value_date=date(2026, 3, 20))
    cleared = make_loan(product=percent, on=date(2026, 1, 10)).id
    run_job("loan-arrears", date(2026, 3, 1))  # 'cleared' is late, then paid up below
    loan_repay(loan_id=cleared, amount="3000", reference="RCRERUN002", value_date=date(2026, 4, 1))
    ids = (late, partly, cleared)
    day = date(2026, 4, 15)

    def picture() -> tuple[object, ...]:
        return (
            count(JournalEntry),
            count(JournalLine),
            [state(i) for i in ids],
            [penalties(i) for i in ids],
            db.session.scalars(select(Installment.paid_on).order_by(Installment.id)).all(),
        )

    run_job("loan-arrears", day)
    first = picture()
    capsys.readouterr()
    run_job("loan-arrears", day)
    second = picture()

    assert second == first
    assert first[2] == [(46, "31-60", True), (26, "1-30", False), (0, "current", False)]
    assert penalties(partly)[0] == (D("29.42"), day)  # 5% of the 588.49 still owed
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (line["status"], line["records_scanned"], line["records_updated"]) == ("success", 2, 0)
    for loan_id in ids:
        assert_books(loan_id)


def test_the_run_reads_the_loans_in_arrears_and_no_others(app, capsys):
    """Its cost follows the arrears, not the book: of four loans it reads only the late one.
    Not a written-off loan (still marked 59 days late), nor a restructured one that is
    current on its new schedule (its old rows, unpaid, are superseded), nor one whose first
    installment falls due on the day itself."""
    written_off = make_loan_in_default()  # paid out 1 January; runs the job for 1 April
    v1 = make_product(code="V1B")
    restructured = make_loan(product=v1, on=DISBURSED).id
    late = make_loan(product=v1, on=DISBURSED).id
    due_today = make_loan(product=v1, on=date(2026, 3, 15)).id
    run_job("loan-arrears", date(2026, 4, 1))
    loan_write_off(
        loan_id=written_off,
        staff=make_staff("branch_manager"),
        reason="Absconded",
        value_date=date(2026, 4, 2),
    )
    restructure(restructured, start=date(2026, 4, 10))
    day = date(2026, 4, 15)
    assert current_installments(due_today)[0].due_date == day
    capsys.readouterr()

    run_job("loan-arrears", day)

    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (line["status"], line["records_scanned"]) == ("success", 1)
    assert [state(i)[0] for i in (written_off, restructured, late, due_today)] == [59, 0, 46, 0]
    for loan_id in (restructured, late, due_today):
        assert_books(loan_id)


def test_a_loan_one_day_late_and_then_paid_goes_back_to_current(app):
    loan_id = v1_loan_id()
    run_job("loan-arrears", DUE1 + timedelta(days=1))
    assert state(loan_id) == (1, "1-30", False)
    loan_repay(loan_id=loan_id, amount="888.49", reference="RCONEDAY01", value_date=DUE1)

    run_job("loan-arrears", DUE1 + timedelta(days=2))

    assert state(loan_id) == (0, "current", False)
    assert_books(loan_id)


def test_a_run_while_another_holds_the_lock_is_skipped(app, capsys):
    loan_id = v1_loan_id(penalty_type="percent", penalty_value=D("5"))
    redis_client().set("sacco:lock:job:loan-arrears", "other-scheduler")

    run_job("loan-arrears", date(2026, 4, 5))  # skipped is success: exit 0

    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (line["status"], line["records_scanned"]) == ("skipped", 0)
    assert state(loan_id) == (0, "current", False)
    assert penalty_entries() == 0
    assert redis_client().get("sacco:lock:job:loan-arrears") == b"other-scheduler"
    assert_books(loan_id)


# -- PAR30 and the snapshot ------------------------------------------------------------

AS_OF = date(2026, 6, 15)


def _book() -> dict[str, int]:
    """Five live loans (and one closed) whose arrears on 15 June 2026 are known by hand."""
    product = make_product()
    loans = {
        # first due 1 Jul: current, 10,000 outstanding
        "current": make_loan(product=product, amount=10000, on=date(2026, 6, 1)),
        # first due 5 Jun: 10 days late, 20,000 outstanding
        "late10": make_loan(product=product, amount=20000, on=date(2026, 5, 5)),
        # first due 1 May: 45 days late, 5,000 outstanding
        "late45": make_loan(product=product, amount=5000, on=date(2026, 4, 1)),
        # first due 12 Mar: 95 days late, 8,000 outstanding
        "late95": make_loan(product=product, amount=8000, on=date(2026, 2, 12)),
        # V1 with rows 1 and 2 paid on time: row 3 (due 30 Apr) is 46 days late and
        # 10,000 − 788.49 − 796.37 = 8,415.14 principal is outstanding
        "late46": make_loan(product=product, amount=10000, on=DISBURSED),
        "closed": make_loan(product=product, amount=10000, on=DISBURSED),
    }
    ids = {name: loan.id for name, loan in loans.items()}
    loan_repay(loan_id=ids["late46"], amount="888.49", reference="RCPAR00001", value_date=DUE1)
    loan_repay(loan_id=ids["late46"], amount="888.49", reference="RCPAR00002", value_date=DUE2)
    loan_repay(loan_id=ids["closed"], amount="10661.86", reference="RCPAR00003", value_date=DUE1)
    return ids


def test_par30_and_buckets_by_hand(app):
    ids = _book()

    run_job("loan-arrears", AS_OF)
    run_job("portfolio-snapshot", AS_OF)

    assert {name: state(i)[0] for name, i in ids.items()} == {
        "current": 0,
        "late10": 10,
        "late45": 45,
        "late95": 95,
        "late46": 46,
        "closed": 0,
    }
    p = portfolio_at_risk(as_of=AS_OF)
    assert p.loans == 5
    assert p.gross_principal == D("51415.14")  # 10,000 + 20,000 + 5,000 + 8,000 + 8,415.14
    assert p.par30_principal == D("21415.14")  # 5,000 + 8,415.14 + 8,000
    assert p.par30 == D("0.4165")  # 21,415.14 / 51,415.14 = 0.41651…
    assert p.buckets == {
        "current": D("10000.00"),
        "1-30": D("20000.00"),
        "31-60": D("13415.14"),
        "61-90": D("0.00"),
        "90+": D("8000.00"),
    }
    snapshot = db.session.scalar(select(PortfolioSnapshot))
    assert (
        snapshot.as_of,
        snapshot.loans,
        snapshot.gross_principal,
        snapshot.par30_principal,
        snapshot.par30,
        snapshot.current,
        snapshot.dpd_1_30,
        snapshot.dpd_31_60,
        snapshot.dpd_61_90,
        snapshot.dpd_90_plus,
    ) == (
        AS_OF,
        5,
        D("51415.14"),
        D("21415.14"),
        D("0.4165"),
        D("10000.00"),
        D("20000.00"),
        D("13415.14"),
        D("0.00"),
        D("8000.00"),
    )
    assert ledger_check() == []


def test_snapshot_rerun_replaces_its_own_day(app):
    ids = _book()
    run_job("loan-arrears", AS_OF)
    run_job("portfolio-snapshot", AS_OF)

    # The 95-days-late loan is paid off the same day; both jobs run again.
    owed = sum(schedule_owed(reload(ids["late95"])).values(), D(0))
    loan_repay(loan_id=ids["late95"], amount=owed, reference="RCPAR00004", value_date=AS_OF)
    run_job("loan-arrears", AS_OF)
    run_job("portfolio-snapshot", AS_OF)

    snapshots = db.session.scalars(select(PortfolioSnapshot)).all()
    assert len(snapshots) == 1
    (snapshot,) = snapshots
    assert (snapshot.as_of, snapshot.loans) == (AS_OF, 4)
    assert snapshot.gross_principal == D("43415.14")
    assert snapshot.par30_principal == D("13415.14")
    assert snapshot.par30 == D("0.3090")  # 13,415.14 / 43,415.14 = 0.30899…
    assert snapshot.dpd_90_plus == D("0.00")

    # The next day is a row of its own; the first day's row is left as it was.
    run_job("loan-arrears", AS_OF + timedelta(days=1))
    run_job("portfolio-snapshot", AS_OF + timedelta(days=1))
    rows = db.session.scalars(select(PortfolioSnapshot).order_by(PortfolioSnapshot.as_of)).all()
    assert [(r.as_of, r.par30) for r in rows] == [
        (AS_OF, D("0.3090")),
        (AS_OF + timedelta(days=1), D("0.3090")),
    ]
    assert ledger_check() == []


def test_empty_book_snapshot_is_zero(app):
    run_job("loan-arrears", AS_OF)
    run_job("portfolio-snapshot", AS_OF)

    snapshot = db.session.scalar(select(PortfolioSnapshot))
    assert (snapshot.loans, snapshot.gross_principal, snapshot.par30) == (0, D("0.00"), D("0.0000"))
    assert count(Loan) == 0
    assert ledger_check() == []
