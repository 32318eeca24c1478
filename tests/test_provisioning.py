"""Loan-loss provisioning: a loan in each class requires its provision to the cent, a month
end posts only the change, interest of a non-performing loan leaves income for suspense
(and comes back when the loan performs), a rerun posts nothing, a closed month is refused,
restructured loans keep their class, and the in duplum rule caps penalties."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import func, select

from app.extensions import db
from app.models import JournalEntry
from app.models.books import BooksState, LoanProvision, ProvisionRun
from app.selectors.loans import current_installments
from app.services.books import chart_ensure, provision_classify, provision_run
from app.services.ledger import PeriodClosed
from app.services.loans import loan_repay, loan_update_arrears
from app.services.loans.arrears import in_duplum_room
from app.services.loans.end import loan_restructure
from tests.loan_factories import (
    balance,
    make_loan,
    make_product,
    make_staff,
    reload,
    run_job,
    schedule_owed,
)

D = Decimal
OCT31 = date(2026, 10, 31)


@pytest.fixture(autouse=True)
def _bands(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' own bands and rates (the defaults' figures, pinned here so a change of
    default does not silently change what a test checks)."""
    chart_ensure()
    pinned = dict(
        PROVISION_WATCH_DAYS=1,
        PROVISION_SUBSTANDARD_DAYS=31,
        PROVISION_DOUBTFUL_DAYS=91,
        PROVISION_LOSS_DAYS=181,
        PROVISION_PERFORMING_PERCENT="1",
        PROVISION_WATCH_PERCENT="5",
        PROVISION_SUBSTANDARD_PERCENT="25",
        PROVISION_DOUBTFUL_PERCENT="50",
        PROVISION_LOSS_PERCENT="100",
        PROVISION_RESTRUCTURED_MIN_CLASS="substandard",
    )
    monkeypatch.setitem(app.config, "SETTINGS", replace(app.config["SETTINGS"], **pinned))


def entries(kind: str) -> int:
    return db.session.scalar(
        select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == kind)
    )


def entry_total(entry_id: int | None, code: str) -> Decimal:
    """The debit-positive amount an entry puts on a GL account (0 when no entry)."""
    if entry_id is None:
        return D("0")
    entry = db.session.get(JournalEntry, entry_id)
    assert entry is not None
    return sum((line.amount for line in entry.lines if line.account.code == code), D("0"))


def first_due(loan_id: int) -> date:
    return current_installments(loan_id)[0].due_date


def test_a_loan_in_each_class_requires_its_provision_to_the_cent(app: Flask) -> None:
    product = make_product()
    # Disbursed so that, at 31 October, none has paid anything and the first unpaid
    # installment is (about) 0, 11, 46, 93 and 215 days late.
    performing = make_loan(product=product, amount=10000, on=date(2026, 10, 15)).id
    watch = make_loan(product=product, amount=12000, on=date(2026, 9, 20)).id
    substandard = make_loan(product=product, amount=8000, on=date(2026, 8, 15)).id
    doubtful = make_loan(product=product, amount=6000, on=date(2026, 6, 30)).id
    loss = make_loan(product=product, amount=5000, on=date(2026, 3, 31)).id
    interest_before = balance("GL-INCOME-INTEREST")

    rows = {r.loan_id: r for r in provision_classify(OCT31)}
    expected = {
        # loan: class, rate, provision = principal x rate / 100, by hand
        performing: ("performing", D("1"), D("100.00")),
        watch: ("watch", D("5"), D("600.00")),
        substandard: ("substandard", D("25"), D("2000.00")),
        doubtful: ("doubtful", D("50"), D("3000.00")),
        loss: ("loss", D("100"), D("5000.00")),
    }
    assert {i: (r.risk_class, r.rate, r.provision) for i, r in rows.items()} == expected
    assert rows[performing].days_in_arrears == 0
    for loan_id in (watch, substandard, doubtful, loss):
        assert rows[loan_id].days_in_arrears == (OCT31 - first_due(loan_id)).days
    # Only the non-performing loans' interest is suspended: all of it still receivable.
    owed = {i: schedule_owed(reload(i))["interest"] for i in expected}
    for loan_id, row in rows.items():
        npl = row.risk_class in ("substandard", "doubtful", "loss")
        assert row.interest_suspended == (owed[loan_id] if npl else D("0"))
        assert not row.restructured
    suspended = owed[substandard] + owed[doubtful] + owed[loss]
    assert suspended > 0

    run = provision_run(OCT31)
    assert run.required == D("10700.00")  # 100 + 600 + 2,000 + 3,000 + 5,000
    assert run.suspended == suspended
    assert balance("GL-LOAN-LOSS-PROVISION") == D("10700.00")
    assert balance("GL-PROVISION-EXPENSE") == D("10700.00")
    assert balance("GL-INTEREST-SUSPENSE") == suspended
    # Suspended interest is not income.
    assert balance("GL-INCOME-INTEREST") == interest_before - suspended
    stored = db.session.scalar(
        select(func.sum(LoanProvision.provision)).where(LoanProvision.as_of == OCT31)
    )
    assert D(stored) == D("10700.00")


def test_moving_between_classes_posts_only_the_difference_and_a_rerun_posts_nothing(
    app: Flask,
) -> None:
    loan_id = make_loan(product=make_product(), amount=12000, on=date(2026, 6, 15)).id
    interest_before = balance("GL-INCOME-INTEREST")
    jul = provision_run(date(2026, 7, 31))  # first installment 16 days late: watch
    assert (jul.required, jul.suspended) == (D("600.00"), D("0"))
    assert entry_total(jul.provision_entry_id, "GL-PROVISION-EXPENSE") == D("600.00")
    assert jul.suspense_entry_id is None

    aug = provision_run(date(2026, 8, 31))  # 47 days late: substandard
    owed = schedule_owed(reload(loan_id))
    assert aug.required == D("3000.00")  # 12,000 x 25%
    # Only the difference: 3,000 required less the 600 already held.
    assert entry_total(aug.provision_entry_id, "GL-PROVISION-EXPENSE") == D("2400.00")
    assert entry_total(aug.provision_entry_id, "GL-LOAN-LOSS-PROVISION") == D("-2400.00")
    assert aug.suspended == owed["interest"]
    assert balance("GL-INCOME-INTEREST") == interest_before - owed["interest"]

    # A rerun (and the nightly job for the 1st after) posts nothing twice.
    counts = (entries("loan_loss_provision"), entries("interest_suspense"))
    assert provision_run(date(2026, 8, 31)).id == aug.id
    run_job("loan-loss-provision", date(2026, 9, 1))
    run_job("loan-loss-provision", date(2026, 9, 2))  # not a month end: nothing
    assert (entries("loan_loss_provision"), entries("interest_suspense")) == counts
    assert db.session.scalar(select(func.count()).select_from(ProvisionRun)) == 2

    # Paid up to date: performing again, the provision released down to 1% and the
    # suspended interest back in income.
    rows = current_installments(loan_id)
    due = sum(
        (r.principal_due + r.interest_due for r in rows if r.due_date <= date(2026, 9, 15)),
        D("0"),
    )
    loan_repay(loan_id=loan_id, amount=due, reference="PAIDUP01", value_date=date(2026, 9, 20))
    sep = provision_run(date(2026, 9, 30))
    principal = schedule_owed(reload(loan_id))["principal"]
    required = (principal / 100).quantize(D("0.01"))
    assert sep.required == required
    assert sep.suspended == D("0")
    assert entry_total(sep.provision_entry_id, "GL-LOAN-LOSS-PROVISION") == D("3000.00") - required
    assert balance("GL-LOAN-LOSS-PROVISION") == required
    assert balance("GL-INTEREST-SUSPENSE") == D("0.00")
    assert balance("GL-INCOME-INTEREST") == interest_before


def test_the_nightly_job_posts_the_month_end(app: Flask) -> None:
    make_loan(product=make_product(), amount=10000, on=date(2026, 8, 15))
    run_job("loan-loss-provision", date(2026, 10, 15))  # mid-month: nothing
    # Nor on the last day itself: the scheduler runs it at 01:20, before that day's payments.
    run_job("loan-loss-provision", OCT31)
    assert db.session.scalar(select(func.count()).select_from(ProvisionRun)) == 0
    run_job("loan-loss-provision", date(2026, 11, 1))  # the night after 31 October
    run = db.session.scalar(select(ProvisionRun))
    assert run is not None and run.as_of == OCT31
    assert run.required == D("2500.00")  # 46 days late: substandard, 25% of 10,000


def test_a_closed_month_is_refused_and_nothing_is_written(app: Flask) -> None:
    make_loan(product=make_product(), amount=10000, on=date(2026, 8, 15))
    state = db.session.get(BooksState, 1) or BooksState(id=1)
    state.closed_through = OCT31
    db.session.add(state)
    db.session.commit()
    with pytest.raises(PeriodClosed):
        provision_run(OCT31)
    assert db.session.scalar(select(func.count()).select_from(LoanProvision)) == 0
    assert db.session.scalar(select(func.count()).select_from(ProvisionRun)) == 0
    assert entries("loan_loss_provision") == 0


def test_a_restructured_loan_is_substandard_at_best_and_keeps_a_worse_class(app: Flask) -> None:
    product = make_product(default_threshold_days=30)
    fresh = make_loan(product=product, amount=10000, on=date(2026, 3, 15)).id
    lost = make_loan(product=product, amount=10000, on=date(2025, 9, 15)).id
    run_job("loan-arrears", date(2026, 5, 1))
    provision_run(date(2026, 4, 30))
    classes = {r.loan_id: r.risk_class for r in db.session.scalars(select(LoanProvision))}
    assert classes == {fresh: "watch", lost: "loss"}
    staff = make_staff("branch_manager")
    for loan_id in (fresh, lost):
        loan_restructure(
            loan_id=loan_id,
            staff=staff,
            term=12,
            start_date=date(2026, 5, 5),
            reason="hardship",
        )
    rows = {r.loan_id: r for r in provision_classify(date(2026, 5, 31))}
    # Nothing late on the new schedule: the watch loan goes down to the floor (substandard),
    # the loss loan keeps its class; a restructure upgrades neither.
    assert rows[fresh].days_in_arrears == rows[lost].days_in_arrears == 0
    assert rows[fresh].restructured and rows[lost].restructured
    assert rows[fresh].risk_class == "substandard"
    assert rows[lost].risk_class == "loss"  # its class at the last month end, retained
    principal = schedule_owed(reload(fresh))["principal"]
    assert rows[fresh].provision == (principal * D("0.25")).quantize(D("0.01"))
    assert rows[lost].provision == schedule_owed(reload(lost))["principal"]


def test_in_duplum_penalties_never_take_charges_beyond_the_principal(app: Flask) -> None:
    # A penalty of 4,000 an installment on a 10,000 loan: without the rule, four missed
    # installments would owe 16,000 in penalties alone.
    product = make_product(penalty_type="fixed", penalty_value=D("4000"), grace_days=0)
    loan_id = make_loan(product=product, amount=10000, on=date(2026, 1, 31)).id
    for day in (date(2026, 3, 1), date(2026, 4, 1), date(2026, 5, 1), date(2026, 6, 1)):
        run_job("loan-arrears", day)
    rows = current_installments(loan_id)
    assert len([r for r in rows if r.due_date < date(2026, 6, 1)]) == 4
    # Interest due by the third night's charge (rows 1-3): with the penalties it stops
    # at the 10,000 principal outstanding (nothing paid).
    interest_due = sum((r.interest_due for r in rows[:3]), D("0"))
    penalties = [r.penalty_due for r in rows]
    assert penalties[0] == penalties[1] == D("4000.00")
    assert penalties[2] == D("10000.00") - D("8000.00") - interest_due
    assert interest_due + sum(penalties, D("0")) == D("10000.00")
    assert penalties[3:] == [D("0")] * (len(rows) - 3)  # no room left for row 4
    assert schedule_owed(reload(loan_id))["penalty"] == sum(penalties, D("0"))
    assert balance("GL-INCOME-PENALTY") == sum(penalties, D("0"))
    # Another night adds nothing: the room is used up.
    run_job("loan-arrears", date(2026, 6, 2))
    assert [r.penalty_due for r in current_installments(loan_id)] == penalties


def test_in_duplum_shares_one_nights_room_among_its_penalties_oldest_first(app: Flask) -> None:
    # Three installments found late on one night (the first run after they fell due).
    product = make_product(penalty_type="fixed", penalty_value=D("4000"), grace_days=0)
    loan_id = make_loan(product=product, amount=10000, on=date(2026, 1, 31)).id
    run_job("loan-arrears", date(2026, 5, 1))
    rows = current_installments(loan_id)
    interest_due = sum((r.interest_due for r in rows[:3]), D("0"))
    assert interest_due == D("276.27")  # 100.00 + 92.12 + 84.15
    # 10,000 - 276.27 of room: 4,000, 4,000, then what is left, 1,723.73.
    assert [r.penalty_due for r in rows[:4]] == [
        D("4000.00"),
        D("4000.00"),
        D("1723.73"),
        D("0"),
    ]


def test_in_duplum_holds_on_the_one_loan_path_too(app: Flask) -> None:
    product = make_product(penalty_type="fixed", penalty_value=D("6000"), grace_days=0)
    loan_id = make_loan(product=product, amount=10000, on=date(2026, 1, 31)).id
    for day in (date(2026, 3, 1), date(2026, 4, 1), date(2026, 5, 1)):
        assert loan_update_arrears(loan_id=loan_id, as_of=day) is True
    assert loan_update_arrears(loan_id=loan_id, as_of=date(2026, 5, 1)) is False  # done
    rows = current_installments(loan_id)
    penalties = [r.penalty_due for r in rows]
    # Row 1 takes 6,000; row 2 only what is left below the principal once rows 1-2's
    # interest is counted; row 3 nothing.
    interest_due = rows[0].interest_due + rows[1].interest_due
    assert penalties[0] == D("6000.00")
    assert penalties[1] == D("4000.00") - interest_due
    assert penalties[2] == D("0")
    assert balance("GL-INCOME-PENALTY") == sum(penalties, D("0"))


def test_the_in_duplum_room_is_the_live_principal_owed_less_the_charges_unpaid(
    app: Flask,
) -> None:
    product = make_product(penalty_type="fixed", penalty_value=D("50"), grace_days=0)
    loan_id = make_loan(product=product, amount=10000, on=date(2026, 1, 31)).id
    other_id = make_loan(product=product, amount=10000, on=date(2026, 1, 31)).id
    run_job("loan-arrears", date(2026, 3, 1))  # row 1 (due 28/02) is late: 50 on each loan
    first = current_installments(loan_id)[0]
    assert (first.penalty_due, first.interest_due, first.principal_due) == (
        D("50.00"),
        D("100.00"),
        D("788.49"),
    )
    # An unpaid penalty counts whatever night is asked about (a rerun for an earlier
    # date): row 1 is not due before 28/02, its interest is not counted, its penalty is.
    assert in_duplum_room([loan_id], date(2026, 2, 28)) == {loan_id: D("9950.00")}
    loan_repay(loan_id=loan_id, amount="938.49", reference="DUPLUM1", value_date=date(2026, 3, 2))

    # Principal owed 10,000 - 788.49 paid; charges unpaid: row 2's interest (due 31/03),
    # not the penalty paid, nor interest not yet due. Only the loans asked for.
    assert in_duplum_room([loan_id], date(2026, 4, 10)) == {loan_id: D("9119.39")}

    # A restructured loan counts from its new schedule, not the rows it replaced.
    loan_restructure(
        loan_id=other_id,
        staff=make_staff("branch_manager"),
        term=6,
        start_date=date(2026, 3, 31),
        reason="new terms agreed",
    )
    live = current_installments(other_id)
    principal = sum((r.principal_due for r in live), D("0"))
    assert principal > D("10000")  # the arrears capitalised
    assert in_duplum_room([other_id], date(2026, 3, 10)) == {other_id: principal}
