"""The money core under attack: one test per defect the review reproduced. Races run real
threads on PostgreSQL, each with its own session; an interleaving is forced by holding a
row lock from another transaction, never by patching our services. Every test ends with the
full reconciliation (the autouse fixture in conftest)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import select, text

from app.extensions import db
from app.models import Account, Installment, JobRun, Loan, Member, StaffUser
from app.money import MoneyError, money_input
from app.selectors.loans import current_installments
from app.services.ledger import LedgerError, account_close, member_account
from app.services.loans import (
    LoanError,
    loan_apply,
    loan_approve,
    loan_repay,
    loan_restructure,
    loan_reverse_penalty,
    loan_write_off,
)
from app.services.members import MemberError, member_deposit
from app.services.permissions import PermissionDenied
from tests.factories import make_member
from tests.helpers import Worker, assert_books_reconcile, wait_until_blocked
from tests.loan_factories import (
    balance,
    make_borrower,
    make_loan,
    make_product,
    make_staff,
    receivables,
    reload,
    run_job,
)

DAY = date(2026, 3, 1)
V1_INSTALLMENT = Decimal("888.49")  # contracts/loan-schedules.md, vector V1


def _v1_loan(on: date = date(2026, 1, 1), **product: object) -> int:
    loan = make_loan(product=make_product("V1", **product), on=on)
    db.session.commit()
    return loan.id


# 1 -----------------------------------------------------------------------------------------


def test_1_a_loan_paid_off_while_the_arrears_job_runs_gets_no_penalty(app: Flask, pg: None) -> None:
    loan_id = _v1_loan(
        on=date(2026, 1, 1), penalty_type="fixed", penalty_value=Decimal("50"), grace_days=3
    )
    payoff = sum(
        (r.principal_due + r.interest_due for r in reload(loan_id).installments), Decimal(0)
    )
    db.session.remove()
    paid = threading.Event()
    release = threading.Event()

    def pay_off_and_hold() -> None:
        loan_repay(
            loan_id=loan_id,
            amount=payoff,
            reference="PAYOFF1",
            value_date=date(2026, 2, 10),
            commit=False,
        )
        paid.set()  # the loan's row is locked by this uncommitted payment
        release.wait(20)
        db.session.commit()

    payer = Worker(app, pay_off_and_hold)
    payer.start()
    assert paid.wait(20)
    # The job scans (it sees the unpaid installment: the payment is not committed) and then
    # waits on the loan's lock; once the payment commits it must decide from fresh rows.
    job = Worker(app, lambda: run_job("loan-arrears", date(2026, 2, 10)))
    job.start()
    wait_until_blocked()
    release.set()
    payer.outcome()
    job.outcome()

    loan = reload(loan_id)
    assert loan.status == "closed"
    assert (loan.days_past_due, loan.aging_bucket) == (0, "current")
    assert receivables(loan)["penalty"] == 0
    assert balance("GL-INCOME-PENALTY") == 0


def test_1_a_restructure_committed_during_the_arrears_job_is_not_charged_on_old_rows(
    app: Flask, pg: None
) -> None:
    loan_id = _v1_loan(
        on=date(2026, 1, 1), penalty_type="fixed", penalty_value=Decimal("50"), grace_days=3
    )
    run_job("loan-arrears", date(2026, 2, 3))  # late, within grace: no penalty yet
    assert reload(loan_id).days_past_due == 2
    manager_id = make_staff("branch_manager").id
    db.session.commit()
    db.session.remove()
    interest_locked = threading.Event()
    release = threading.Event()

    def hold_interest_income() -> None:
        # The restructure will post to interest income: holding that row keeps the
        # restructure (and its lock on the loan) open until we let go.
        db.session.execute(
            text("SELECT id FROM accounts WHERE code = 'GL-INCOME-INTEREST' FOR UPDATE")
        )
        interest_locked.set()
        release.wait(20)
        db.session.commit()

    holder = Worker(app, hold_interest_income)
    holder.start()
    assert interest_locked.wait(20)
    restructure = Worker(
        app,
        lambda: loan_restructure(
            loan_id=loan_id,
            staff=db.session.get(StaffUser, manager_id),
            term=12,
            start_date=date(2026, 2, 10),
            reason="new terms agreed",
        ),
    )
    restructure.start()
    wait_until_blocked(1)
    job = Worker(app, lambda: run_job("loan-arrears", date(2026, 2, 10)))
    job.start()
    wait_until_blocked(2)  # the job scanned the old rows and waits for the loan
    release.set()
    holder.outcome()
    restructure.outcome()
    job.outcome()

    assert balance("GL-INCOME-PENALTY") == 0
    assert receivables(reload(loan_id))["penalty"] == 0


# 2 -----------------------------------------------------------------------------------------


def test_2_two_payments_of_a_loan_looked_up_first_go_to_installments_1_and_2(
    app: Flask, pg: None
) -> None:
    loan_id = _v1_loan()
    loan_no = reload(loan_id).loan_no
    db.session.remove()
    both_read = threading.Barrier(2, timeout=20)

    def callback(receipt: str) -> Callable[[], object]:
        def run() -> object:
            # As a payment callback does: find the loan by number (loading its schedule into
            # this session), then repay.
            loan = db.session.scalar(select(Loan).where(Loan.loan_no == loan_no))
            assert loan is not None
            _ = [row.principal_paid for row in loan.installments]
            db.session.commit()
            both_read.wait()
            return loan_repay(
                loan_id=loan.id,
                amount=V1_INSTALLMENT,
                reference=receipt,
                value_date=date(2026, 2, 1),
            )

        return run

    workers = [Worker(app, callback(r)) for r in ("QK1AAAAAA1", "QK1AAAAAA2")]
    for w in workers:
        w.start()
    for w in workers:
        w.outcome()

    rows = db.session.scalars(
        select(Installment).where(Installment.loan_id == loan_id).order_by(Installment.number)
    ).all()
    assert [r.outstanding for r in rows[:2]] == [0, 0]
    assert rows[2].outstanding > 0


# 3 -----------------------------------------------------------------------------------------


def test_3_the_limit_is_checked_again_at_approval(app: Flask) -> None:
    member = make_borrower(savings=10000)  # limit 30,000 on V1-like products
    a = make_product("V1", code="A")
    b = make_product("V1", code="B")
    first = loan_apply(member_id=member.id, product_id=a.id, amount=30000, as_of=date(2026, 3, 1))
    second = loan_apply(member_id=member.id, product_id=b.id, amount=30000, as_of=date(2026, 3, 1))
    officer = make_staff("branch_manager")
    loan_approve(loan_id=first.id, staff=officer, as_of=date(2026, 3, 1))
    with pytest.raises(LoanError, match="limit"):
        loan_approve(loan_id=second.id, staff=officer, as_of=date(2026, 3, 1))
    db.session.rollback()
    assert reload(second.id).status == "submitted"


def test_3_two_instant_applications_at_once_cannot_both_take_the_limit(
    app: Flask, pg: None
) -> None:
    member_id = make_borrower(savings=10000).id
    products = [
        make_product("INSTANT", code=code, limit_multiple=Decimal("3")).id
        for code in ("INST1", "INST2")
    ]
    db.session.remove()
    go = threading.Barrier(2, timeout=20)

    def apply(product_id: int) -> Callable[[], Loan]:
        def run() -> Loan:
            go.wait()
            return loan_apply(
                member_id=member_id, product_id=product_id, amount=30000, as_of=date(2026, 3, 1)
            )

        return run

    workers = [Worker(app, apply(p)) for p in products]
    for w in workers:
        w.start()
    outcomes = []
    for w in workers:
        w.join(30)
        outcomes.append(w.error)
    assert sum(e is None for e in outcomes) == 1, outcomes
    (refused,) = [e for e in outcomes if e is not None]
    assert isinstance(refused, LoanError)
    approved = db.session.scalars(
        select(Loan).where(Loan.member_id == member_id, Loan.status == "approved")
    ).all()
    assert sum(loan.principal for loan in approved) == Decimal("30000.00")


# 4 -----------------------------------------------------------------------------------------


def test_4_no_job_runs_for_a_day_after_today_and_a_wrong_penalty_can_be_reversed(
    app: Flask,
) -> None:
    runner = app.test_cli_runner()
    loan_id = _v1_loan(on=date(2026, 1, 1), penalty_type="fixed", penalty_value=Decimal("50"))
    result = runner.invoke(args=["jobs", "run", "loan-arrears", "--as-of-date", "2099-06-01"])
    assert result.exit_code == 1
    assert "after today's business date" in result.output
    assert balance("GL-INCOME-PENALTY") == 0

    run_job("loan-arrears", date(2026, 2, 10))  # installment 1 late: 50.00 charged
    assert receivables(reload(loan_id))["penalty"] == Decimal("50.00")
    manager = make_staff("branch_manager")
    with pytest.raises(PermissionDenied, match="cannot reverse penalties"):
        loan_reverse_penalty(
            loan_id=loan_id,
            installment_number=1,
            staff=make_staff("loan_officer"),
            reason="x",
            value_date=date(2026, 2, 11),
        )
    reversed_ = loan_reverse_penalty(
        loan_id=loan_id,
        installment_number=1,
        staff=manager,
        reason="charged for the wrong date",
        value_date=date(2026, 2, 11),
    )
    assert reversed_ == Decimal("50.00")
    loan = reload(loan_id)
    assert receivables(loan)["penalty"] == 0
    assert balance("GL-INCOME-PENALTY") == 0
    assert loan.installments[0].penalty_due == 0
    # Still late: the next run may charge it again, once.
    run_job("loan-arrears", date(2026, 2, 12))
    run_job("loan-arrears", date(2026, 2, 13))
    assert receivables(reload(loan_id))["penalty"] == Decimal("50.00")


def test_4_a_penalty_paid_while_its_reversal_waits_is_refunded_to_savings(
    app: Flask, pg: None
) -> None:
    """The reversal decides from the schedule as it stands once it holds the loan's lock,
    not as the staff member's page read it: the payment that cleared the penalty in between
    is refunded to savings, and the penalty receivable is not credited a second time."""
    loan_id = _v1_loan(on=date(2026, 1, 1), penalty_type="fixed", penalty_value=Decimal("50"))
    run_job("loan-arrears", date(2026, 2, 10))
    savings = "SAV-" + reload(loan_id).member.member_no
    savings_before = balance(savings)
    manager_id = make_staff("branch_manager").id
    db.session.commit()
    db.session.remove()
    paid = threading.Event()
    release = threading.Event()

    def pay_the_penalty_and_hold() -> None:
        loan_repay(
            loan_id=loan_id,
            amount=Decimal("50"),
            reference="PENPAY1",
            value_date=date(2026, 2, 11),
            commit=False,
        )
        paid.set()
        release.wait(20)
        db.session.commit()

    def reverse_as_read_before() -> Decimal:
        assert current_installments(loan_id)[0].penalty_paid == 0  # the page's copy
        return loan_reverse_penalty(
            loan_id=loan_id,
            installment_number=1,
            staff=db.session.get(StaffUser, manager_id),
            reason="charged for the wrong date",
            value_date=date(2026, 2, 11),
        )

    payer = Worker(app, pay_the_penalty_and_hold)
    payer.start()
    assert paid.wait(20)
    reversal = Worker(app, reverse_as_read_before)
    reversal.start()
    wait_until_blocked()
    release.set()
    payer.outcome()
    assert reversal.outcome() == Decimal("50.00")

    loan = reload(loan_id)
    assert receivables(loan)["penalty"] == 0
    assert balance("GL-INCOME-PENALTY") == 0
    assert balance(savings) == savings_before + Decimal("50.00")
    assert (loan.installments[0].penalty_due, loan.installments[0].penalty_paid) == (0, 0)


def test_4_a_job_asked_for_tomorrow_is_fatal_and_changes_nothing(app: Flask) -> None:
    from workers.schedule import run_job as run_scheduled

    _v1_loan(penalty_type="fixed", penalty_value=Decimal("50"))
    assert run_scheduled("loan-arrears", date(2099, 1, 1)) == 1
    assert balance("GL-INCOME-PENALTY") == 0


# 5 -----------------------------------------------------------------------------------------


def test_5_money_paid_on_a_written_off_loan_is_a_recovery_not_savings(app: Flask) -> None:
    loan_id = _v1_loan(on=date(2026, 1, 1), default_threshold_days=30)
    run_job("loan-arrears", date(2026, 4, 1))
    loan = loan_write_off(
        loan_id=loan_id,
        staff=make_staff("branch_manager"),
        reason="no contact for 60 days",
        value_date=date(2026, 4, 2),
    )
    written_off = loan.written_off_amount
    assert written_off > 0
    member = db.session.get(Member, loan.member_id)
    savings_before = balance(member_account(member, "savings").code)

    result = loan_repay(
        loan_id=loan_id, amount="1000", reference="RECOV1", value_date=date(2026, 5, 1)
    )
    loan = reload(loan_id)
    assert result.recovered == Decimal("1000.00") and result.to_savings == 0
    assert loan.recovered_amount == Decimal("1000.00")
    assert balance("GL-INCOME-RECOVERY") == Decimal("1000.00")
    assert balance(member_account(member, "savings").code) == savings_before
    assert result.balance_left == written_off - Decimal("1000.00")


# 6 and 7 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("absurd", ["1e26", "1e400", "1e12", "1000000000000"])
def test_6_absurd_amounts_are_refused_with_a_clear_error(app: Flask, absurd: str) -> None:
    member = make_member(savings=100)
    loan_id = _v1_loan()
    product = make_product("V1", code="ABS")
    with pytest.raises(MemberError, match="more than the books can hold"):
        member_deposit(member_id=member.id, amount=absurd, reference="D1", value_date=DAY)
    with pytest.raises(LoanError, match="more than the books can hold"):
        loan_repay(loan_id=loan_id, amount=absurd, reference="R1", value_date=date(2026, 2, 1))
    with pytest.raises(LoanError, match="more than the books can hold"):
        loan_apply(member_id=member.id, product_id=product.id, amount=absurd, as_of=DAY)
    db.session.rollback()


def test_6_the_schedule_command_refuses_a_rate_finer_than_the_books_in_one_line(
    app: Flask,
) -> None:
    result = app.test_cli_runner().invoke(
        args=["loan", "schedule", "--principal", "1000", "--annual-rate", "1e-400"]
        + ["--installments", "12"]
    )
    assert result.exit_code != 0
    assert "annual rate has more than 4 decimal places" in result.output
    assert "Traceback" not in result.output


def test_6_an_import_row_too_large_for_the_books_is_a_bad_row_with_its_line(
    app: Flask, tmp_path: Any
) -> None:
    make_product("V1", code="DEV", max_rate=Decimal("24"), min_rate=Decimal("10"))
    good = "C1,Jane Wanjiru,0712000001,DEV,10000,12,12,2026-01-01,active"
    huge = "C2,John Otieno,0712000002,DEV,1000000000000,12,12,2026-01-01,active"
    path = tmp_path / "book.csv"
    header = "Customer ID,Name,Phone,Product,Principal,Rate,Term,Disbursed Date,Status"
    path.write_text("\n".join([header, good, huge]) + "\n")
    result = app.test_cli_runner().invoke(
        args=["import", "loan-book", str(path), "--skip-bad", "--as-of-date", "2026-06-01"]
    )
    assert "line 3: Principal is more than the books can hold" in result.output, result.output
    assert db.session.scalar(select(Loan).where(Loan.principal == Decimal("10000"))) is not None


def test_7_one_rounding_rule_a_fraction_of_a_cent_is_refused_everywhere(app: Flask) -> None:
    member = make_member()
    loan_id = _v1_loan()
    with pytest.raises(MemberError, match="fractions of a cent"):
        member_deposit(member_id=member.id, amount="100.005", reference="D", value_date=DAY)
    with pytest.raises(LoanError, match="fractions of a cent"):
        loan_repay(loan_id=loan_id, amount="100.005", reference="R", value_date=date(2026, 2, 1))
    with pytest.raises(MoneyError, match="fractions of a cent"):
        money_input("100.005")
    db.session.rollback()


# 8 -----------------------------------------------------------------------------------------


def test_8_a_deposit_committing_during_a_close_keeps_the_account_open(app: Flask, pg: None) -> None:
    member = make_member()
    savings_id = member_account(member, "savings").id
    member_id = member.id
    db.session.commit()
    db.session.remove()
    deposited = threading.Event()
    release = threading.Event()

    def deposit_and_hold() -> None:
        member_deposit(
            member_id=member_id,
            amount="100",
            reference="DEP-RACE",
            value_date=date(2026, 3, 1),
            commit=False,
        )
        deposited.set()
        release.wait(20)
        db.session.commit()

    depositor = Worker(app, deposit_and_hold)
    depositor.start()
    assert deposited.wait(20)
    closer = Worker(app, lambda: account_close(account_id=savings_id, actor="staff:ops"))
    closer.start()
    wait_until_blocked()
    release.set()
    depositor.outcome()
    with pytest.raises(LedgerError, match="still holds"):
        closer.outcome()

    account = db.session.get(Account, savings_id)
    assert (account.status, account.display_balance) == ("open", Decimal("100.00"))
    assert_books_reconcile()


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Pacific/Pago_Pago"])
def test_4_a_job_s_default_day_is_the_business_date_in_timezone_never_the_host_s(
    app: Flask, monkeypatch: pytest.MonkeyPatch, zone: str
) -> None:
    from workers.schedule import run_job as run_scheduled

    # UTC+14 and UTC-11 never share a date, so a default taken from UTC (or the host)
    # fails for at least one of them, at any hour the suite runs.
    settings = dataclasses.replace(app.config["SETTINGS"], TIMEZONE=zone)
    monkeypatch.setitem(app.config, "SETTINGS", settings)
    assert run_scheduled("ledger-check") == 0
    recorded = db.session.scalar(select(JobRun.as_of))
    assert recorded == datetime.now(ZoneInfo(zone)).date()
