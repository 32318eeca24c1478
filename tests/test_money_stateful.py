"""Random lives of a SACCO's books: hypothesis drives deposits, applications, approvals,
payouts, repayments (partial, exact, over), the arrears job on advancing dates,
restructures, write-offs and recoveries through the real services, and after every step
the books must reconcile and no loan may exceed the limit it was approved under."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from decimal import Decimal

from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from app.extensions import db
from app.models import Loan, LoanProduct, Member, StaffUser
from app.selectors.loans import LIVE_STATUSES, loan_debt, loan_eligibility
from app.services.loans import (
    LoanError,
    loan_apply,
    loan_approve,
    loan_disburse,
    loan_repay,
    loan_restructure,
    loan_write_off,
)
from app.services.members import member_deposit
from tests.helpers import assert_books_reconcile, truncate_all
from tests.loan_factories import balance, make_borrower, make_product, make_staff
from workers.schedule import run_job

REACHED: set[str] = set()  # loan statuses the runs ended with: proof they went somewhere
START = date(2025, 3, 1)
LAST_DAY = date(2026, 11, 1)  # jobs refuse days after today: stay in the past


class Books(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        truncate_all()
        self.refs = itertools.count(1)
        self.today = START
        self.members = [make_borrower(savings=5000).id, make_borrower(savings=20000).id]
        self.products = [
            make_product(
                "V1",
                code="TERM",
                penalty_type="fixed",
                penalty_value=Decimal("50"),
                default_threshold_days=30,
            ).id,
            make_product("INSTANT", code="FAST", limit_multiple=Decimal("2")).id,
        ]
        self.staff = {role: make_staff(role).id for role in ("branch_manager", "loan_officer")}
        self.approved_under: dict[int, Decimal] = {}  # loan id -> limit when approved
        # Each payment to a loan: (loan no, amount, what the loan could take, the member's
        # savings before and after).
        self.payments: list[tuple[str, Decimal, Decimal, Decimal, Decimal]] = []
        db.session.commit()

    def _ref(self, prefix: str) -> str:
        return f"{prefix}{next(self.refs):06d}"

    def _loans(self, *statuses: str) -> list[int]:
        return list(db.session.scalars(select(Loan.id).where(Loan.status.in_(statuses))))

    def _staff(self, role: str) -> StaffUser:
        return db.session.get(StaffUser, self.staff[role])

    def _refused(self) -> None:
        db.session.rollback()

    def _savings(self, loan_id: int) -> Decimal:
        loan = db.session.get(Loan, loan_id)
        return balance(f"SAV-{loan.member.member_no}")

    def _pay(self, loan_id: int, amount: Decimal, can_take: Decimal, prefix: str) -> None:
        """Pay `amount` to a loan that can take `can_take`, noting the member's savings."""
        loan_no = db.session.get(Loan, loan_id).loan_no
        before = self._savings(loan_id)
        loan_repay(
            loan_id=loan_id, amount=amount, reference=self._ref(prefix), value_date=self.today
        )
        self.payments.append((loan_no, amount, can_take, before, self._savings(loan_id)))

    @rule(who=st.integers(0, 1), amount=st.integers(100, 40000))
    def deposit(self, who: int, amount: int) -> None:
        member_deposit(
            member_id=self.members[who],
            amount=amount,
            reference=self._ref("DEP"),
            value_date=self.today,
        )

    @rule(who=st.integers(0, 1), which=st.integers(0, 1), amount=st.integers(100, 60000))
    def apply(self, who: int, which: int, amount: int) -> None:
        try:
            loan = loan_apply(
                member_id=self.members[who],
                product_id=self.products[which],
                amount=amount,
                as_of=self.today,
            )
        except LoanError:
            return self._refused()
        if loan.status == "approved":  # an instant loan, approved under the limit it saw
            self.approved_under[loan.id] = loan.principal

    @rule(who=st.integers(0, 1), which=st.integers(0, 1), share=st.integers(10, 100))
    def lend(self, who: int, which: int, share: int) -> None:
        """The common life in one step: a loan within the member's limit, approved and paid
        out (so that repayments, write-offs and recoveries are reached often)."""
        member = db.session.get(Member, self.members[who])
        product = db.session.get(LoanProduct, self.products[which])
        eligibility = loan_eligibility(member=member, product=product, as_of=self.today)
        amount = int(eligibility.limit * share / 100)
        if not eligibility.eligible or amount < 100:
            return
        try:
            loan = loan_apply(
                member_id=member.id, product_id=product.id, amount=amount, as_of=self.today
            )
            if loan.status == "submitted":
                limit = loan_eligibility(
                    member=member, product=product, as_of=self.today, deciding=loan
                ).limit
                loan_approve(loan_id=loan.id, staff=self._staff("branch_manager"), as_of=self.today)
                self.approved_under[loan.id] = limit
            else:  # an instant loan, approved under the limit it saw
                self.approved_under[loan.id] = loan.principal
            loan_disburse(loan_id=loan.id, reference=self._ref("B2C"), value_date=self.today)
        except LoanError:
            self._refused()

    @rule(data=st.data())
    def approve(self, data: st.DataObject) -> None:
        pending = self._loans("submitted")
        if not pending:
            return
        loan = db.session.get(Loan, data.draw(st.sampled_from(pending)))
        member = db.session.get(Member, loan.member_id)
        limit = loan_eligibility(
            member=member, product=loan.product, as_of=self.today, deciding=loan
        ).limit
        try:
            loan_approve(loan_id=loan.id, staff=self._staff("branch_manager"), as_of=self.today)
        except LoanError:
            return self._refused()
        self.approved_under[loan.id] = limit

    @rule(data=st.data())
    def disburse(self, data: st.DataObject) -> None:
        approved = self._loans("approved")
        if not approved:
            return
        try:
            loan_disburse(
                loan_id=data.draw(st.sampled_from(approved)),
                reference=self._ref("B2C"),
                value_date=self.today,
            )
        except LoanError:
            self._refused()

    @rule(data=st.data(), kind=st.sampled_from(["partial", "exact", "over"]))
    def repay(self, data: st.DataObject, kind: str) -> None:
        live = self._loans(*LIVE_STATUSES)
        if not live:
            return
        loan_id = data.draw(st.sampled_from(live))
        debt = loan_debt(loan_id=loan_id).total
        if debt <= 0:
            return
        if kind == "partial":
            amount = data.draw(st.integers(1, max(1, int(debt) - 1)))
        elif kind == "exact":
            amount = debt
        else:
            amount = debt + data.draw(st.integers(1, 5000))
        self._pay(loan_id, Decimal(amount), debt, "MP")

    @rule(days=st.integers(1, 45))
    def arrears_job(self, days: int) -> None:
        self.today = min(self.today + timedelta(days=days), LAST_DAY)
        run_job("loan-arrears", self.today)

    @rule(days=st.integers(60, 120))
    def months_pass_unpaid(self, days: int) -> None:
        """A long silence: loans fall into default, so write-offs and recoveries happen."""
        self.arrears_job(days)

    @rule(data=st.data(), term=st.integers(1, 12))
    def restructure(self, data: st.DataObject, term: int) -> None:
        late = list(
            db.session.scalars(
                select(Loan.id).where(Loan.status.in_(LIVE_STATUSES), Loan.days_past_due > 0)
            )
        )
        if not late:
            return
        try:
            loan_restructure(
                loan_id=data.draw(st.sampled_from(late)),
                staff=self._staff("branch_manager"),
                term=term,
                start_date=self.today,
                reason="member asked for time",
            )
        except LoanError:  # a term the product does not allow: refused, nothing written
            self._refused()

    @rule(data=st.data())
    def write_off(self, data: st.DataObject) -> None:
        defaulted = list(
            db.session.scalars(
                select(Loan.id).where(Loan.status.in_(LIVE_STATUSES), Loan.in_default.is_(True))
            )
        )
        if not defaulted:
            return
        loan_write_off(
            loan_id=data.draw(st.sampled_from(defaulted)),
            staff=self._staff("branch_manager"),
            reason="no contact",
            value_date=self.today,
        )

    @rule(
        data=st.data(),
        kinds=st.lists(st.sampled_from(["partial", "exact", "over"]), min_size=1, max_size=3),
    )
    def recovery(self, data: st.DataObject, kinds: list[str]) -> None:
        """One or more payments in a row on one written-off loan."""
        written_off = self._loans("written_off")
        if not written_off:
            return
        loan_id = data.draw(st.sampled_from(written_off))
        for kind in kinds:
            loan = db.session.get(Loan, loan_id)
            unrecovered = loan.written_off_amount - loan.recovered_amount
            if kind == "partial":
                amount = Decimal(data.draw(st.integers(1, max(1, int(unrecovered) - 1))))
            elif kind == "exact" and unrecovered > 0:
                amount = unrecovered
            else:  # more than is left to recover (all of it, once the loan is recovered)
                amount = unrecovered + data.draw(st.integers(1, 5000))
            self._pay(loan_id, amount, unrecovered, "RC")

    @invariant()
    def books_reconcile(self) -> None:
        assert_books_reconcile()

    @invariant()
    def no_loan_above_the_limit_it_was_approved_under(self) -> None:
        for loan_id, limit in self.approved_under.items():
            loan = db.session.get(Loan, loan_id)
            assert loan.principal <= limit, (loan.loan_no, loan.principal, limit)

    @invariant()
    def never_more_recovered_than_written_off(self) -> None:
        for loan in db.session.scalars(select(Loan).where(Loan.status == "written_off")):
            assert loan.recovered_amount <= loan.written_off_amount, (
                loan.loan_no,
                loan.recovered_amount,
                loan.written_off_amount,
            )

    @invariant()
    def savings_take_only_what_the_loan_could_not(self) -> None:
        """Money paid to a loan reaches the member's savings (which they could withdraw)
        only beyond what the loan could still take: its debt, or what is unrecovered."""
        for loan_no, amount, can_take, before, after in self.payments:
            assert after - before == max(amount - can_take, Decimal("0")), (
                loan_no,
                amount,
                can_take,
                before,
                after,
            )

    def teardown(self) -> None:
        REACHED.update(db.session.scalars(select(Loan.status).distinct()))
        db.session.remove()


def test_random_lives_of_the_books_always_reconcile(app: Flask) -> None:
    run_state_machine_as_test(
        Books,
        settings=settings(
            max_examples=25,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )
    # The runs did reach the states worth checking (not only refusals).
    print("loan statuses reached:", sorted(REACHED))
    assert {"active", "closed", "restructured", "written_off"} & REACHED, REACHED
