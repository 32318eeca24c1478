"""A member leaving the SACCO (SPEC "The cooperative's own money": deposits are refunded
only when the member leaves, after the notice period, net of what they owe).

1. Notice (`exit_request`): taken at the desk; from then the member cannot borrow, and
   the settlement may not happen before `EXIT_NOTICE_DAYS` (a by-law figure) have passed.
2. Settlement (`exit_settle`, a branch manager): refused in words while anything still
   rests on the member's money — guarantees they gave that still hold or wait for an
   answer (released or replaced first), loan applications in progress, a withdrawal or
   prompt on its way — or while they owe more than they hold. Otherwise, under the
   member's lock, in one transaction: savings and shares are brought into the deposits,
   every loan (a written-off one too) is paid from them, what is left is owed to the
   member (GL-REFUNDS-PAYABLE), every account is closed, standing orders end, and the
   member is "exited" and texted.
3. Payout (`exit_pay`): staff record the bank transfer or cash that paid the refund.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from flask import current_app
from sqlalchemy import select, update

from app.errors import SaccoError
from app.extensions import db
from app.models import (
    Account,
    BranchWithdrawal,
    FixedDeposit,
    Guarantee,
    Loan,
    Member,
    MemberExit,
    MpesaRequest,
    SavingsTarget,
    StaffUser,
    StandingOrder,
)
from app.models.mpesa import OPEN_STATUSES
from app.models.types import utcnow
from app.money import ZERO
from app.selectors.guarantees import guarantees_held
from app.selectors.loans import LIVE_STATUSES, PENDING_STATUSES, loan_debt
from app.services.audit import audit_record
from app.services.ledger import credit, debit, gl_account, journal_post, member_account
from app.services.locking import lock_row
from app.services.permissions import permission_require

PAYMENT_METHODS = {"bank": "GL-BANK", "cash": "GL-CASH"}
MEMBER_MONEY = (
    "savings",
    "member_savings",
    "share_capital",
    "fixed_deposit",
    "target_savings",
)


class ExitError(SaccoError):
    """An exit that cannot be taken, settled or paid now; nothing was written."""


def notice_days() -> int:
    return int(current_app.config["SETTINGS"].EXIT_NOTICE_DAYS)


@dataclass
class ExitFigures:
    """Where the member's money stands for a settlement, and what stops one."""

    deposits: Decimal
    savings: Decimal
    shares: Decimal
    owed: Decimal  # every loan: live ones' debt, written-off ones' unrecovered rest
    loans: list[tuple[int, str, Decimal]] = field(default_factory=list)  # id, number, owed
    blockers: list[str] = field(default_factory=list)

    @property
    def held(self) -> Decimal:
        return self.deposits + self.savings + self.shares

    @property
    def refund(self) -> Decimal:
        return self.held - self.owed


def exit_figures(member_id: int) -> ExitFigures:
    """The settlement as it would be now (the console shows it before anyone settles)."""
    by_kind = dict.fromkeys(MEMBER_MONEY, ZERO)
    for kind, balance in db.session.execute(
        select(Account.kind, Account.balance).where(
            Account.member_id == member_id, Account.kind.in_(MEMBER_MONEY)
        )
    ):
        by_kind[kind] -= balance  # credit-normal: held negative
    figures = ExitFigures(
        deposits=by_kind["savings"],
        # Fixed deposits and targets are refunded with the savings: leaving ends every term.
        savings=by_kind["member_savings"] + by_kind["fixed_deposit"] + by_kind["target_savings"],
        shares=by_kind["share_capital"],
        owed=ZERO,
    )
    for loan in db.session.scalars(
        select(Loan).where(Loan.member_id == member_id).order_by(Loan.id)
    ):
        if loan.status in LIVE_STATUSES:
            debt = loan_debt(loan_id=loan.id).total
        elif loan.status == "written_off":
            debt = loan.written_off_amount - loan.recovered_amount
        else:
            if loan.status in PENDING_STATUSES:
                figures.blockers.append(
                    f"loan application {loan.loan_no or loan.id} is {loan.status}: "
                    "withdraw or finish it first"
                )
            continue
        if debt > 0:
            figures.loans.append((loan.id, loan.loan_no or str(loan.id), debt))
            figures.owed += debt
    for held in guarantees_held(member_id):
        if held.exposure > 0:
            figures.blockers.append(
                f"guarantees loan {held.loan_no} of {held.borrower_name} "
                f"(KES {held.exposure:,.2f} held): release or replace the guarantee first"
            )
    waiting = db.session.scalar(
        select(Guarantee.id).where(
            Guarantee.guarantor_id == member_id, Guarantee.status == "requested"
        )
    )
    if waiting is not None:
        figures.blockers.append("a guarantee request waits for the member's answer: decline it")
    held = db.session.scalar(
        select(BranchWithdrawal.id).where(
            BranchWithdrawal.member_id == member_id, BranchWithdrawal.status == "pending"
        )
    )
    if held is not None:
        figures.blockers.append("a withdrawal at the branch waits for approval: decide it first")
    moving = db.session.scalar(
        select(MpesaRequest.id).where(
            MpesaRequest.member_id == member_id,
            MpesaRequest.kind.in_(("b2c", "stk")),
            MpesaRequest.status.in_(OPEN_STATUSES),
        )
    )
    if moving is not None:
        figures.blockers.append("an M-PESA payment of theirs is on its way: wait for its result")
    if figures.refund < 0:
        figures.blockers.append(
            f"owes KES {-figures.refund:,.2f} more than their deposits, savings and shares: "
            "collect it first"
        )
    return figures


def exit_request(*, member_id: int, reason: str, actor: StaffUser, today: date) -> MemberExit:
    """Take the member's notice to leave (their written notice, entered by staff)."""
    permission_require(actor, "member_exit.request")
    if not reason.strip():
        raise ExitError("say why the member is leaving (their notice's words)")
    member = lock_row(Member, member_id)
    if member is None:
        raise ExitError(f"no member {member_id}")
    if member.status == "exited":
        db.session.rollback()
        raise ExitError(f"{member.member_no} has left already")
    open_exit = db.session.scalar(
        select(MemberExit.id).where(
            MemberExit.member_id == member.id, MemberExit.status.in_(("notice", "settled"))
        )
    )
    if open_exit is not None:
        db.session.rollback()
        raise ExitError(f"{member.member_no} has given notice already")
    leaving = MemberExit(
        member_id=member.id,
        reason=reason.strip(),
        requested_on=today,
        notice_ends_on=today + timedelta(days=notice_days()),
        requested_by=actor.email,
    )
    db.session.add(leaving)
    db.session.flush()
    audit_record(
        actor=actor.email,
        action="member_exit.request",
        object_type="member",
        object_id=member.member_no,
        after={"exit": leaving.id, "notice_ends_on": leaving.notice_ends_on.isoformat()},
        note=leaving.reason,
    )
    db.session.commit()
    return leaving


def exit_cancel(*, exit_id: int, actor: StaffUser) -> MemberExit:
    """The member stays after all (during the notice only)."""
    permission_require(actor, "member_exit.request")
    leaving = lock_row(MemberExit, exit_id)
    if leaving is None:
        raise ExitError(f"no exit {exit_id}")
    if leaving.status != "notice":
        db.session.rollback()
        raise ExitError(f"the exit is {leaving.status}: it can no longer be cancelled")
    leaving.status = "cancelled"
    leaving.cancelled_by = actor.email
    audit_record(
        actor=actor.email,
        action="member_exit.cancel",
        object_type="member_exit",
        object_id=leaving.id,
        before={"status": "notice"},
        after={"status": "cancelled"},
    )
    db.session.commit()
    return leaving


def exit_settle(*, exit_id: int, actor: StaffUser, today: date) -> MemberExit:
    """Settle an exit whose notice has run: see the module's docstring."""
    from app.services.loans import loan_repay  # the loans package imports savings
    from app.services.notifications import notify_exit_settled

    permission_require(actor, "member_exit.settle")
    found = db.session.get(MemberExit, exit_id)
    if found is None:
        raise ExitError(f"no exit {exit_id}")
    member = lock_row(Member, found.member_id)  # the member first, as every money path
    leaving = lock_row(MemberExit, exit_id)
    assert member is not None and leaving is not None
    if leaving.status != "notice":
        db.session.rollback()
        raise ExitError(f"the exit is {leaving.status} already")
    if today < leaving.notice_ends_on:
        db.session.rollback()
        raise ExitError(f"the notice runs until {leaving.notice_ends_on:%d %b %Y}")
    figures = exit_figures(member.id)
    if figures.blockers:
        db.session.rollback()
        raise ExitError("not yet: " + "; ".join(figures.blockers))
    reference = f"EXIT{leaving.id}"
    deposits = member_account(member, "savings")
    accounts = list(
        db.session.scalars(
            select(Account)
            .where(Account.member_id == member.id, Account.kind.in_(MEMBER_MONEY))
            .order_by(Account.id)
        )
    )
    # Savings and shares into the deposits, so the loans are paid from one account.
    into_deposits = [
        (account, account.display_balance)
        for account in accounts
        if account.id != deposits.id and account.display_balance > 0
    ]
    if into_deposits:
        total = sum((amount for _, amount in into_deposits), ZERO)
        journal_post(
            kind="exit_transfer",
            lines=[*(debit(a, amount) for a, amount in into_deposits), credit(deposits, total)],
            value_date=today,
            description=f"Exit {member.member_no}: savings and shares brought together",
            idempotency_key=f"exit-transfer:{leaving.id}",
            actor=actor.email,
            member_id=member.id,
        )
    for loan_id, loan_no, debt in figures.loans:
        loan_repay(
            loan_id=loan_id,
            amount=debt,
            reference=f"{reference}-{loan_no}",
            value_date=today,
            source="savings",
            actor=actor,
            commit=False,
        )
    refund = figures.refund
    if refund > 0:
        journal_post(
            kind="exit_refund",
            lines=[debit(deposits, refund), credit(gl_account("GL-REFUNDS-PAYABLE"), refund)],
            value_date=today,
            description=f"Exit {member.member_no}: refund owed",
            idempotency_key=f"exit-refund:{leaving.id}",
            actor=actor.email,
            member_id=member.id,
        )
    # Every account closes empty, in one conditional UPDATE: money that reached one during
    # the settlement (a Paybill payment takes no member lock) keeps it open, and the whole
    # settlement is refused rather than leaving money in a closed account.
    ids = [account.id for account in accounts] + [deposits.id]
    db.session.execute(
        update(Account)
        .where(Account.id.in_(set(ids)), Account.status == "open", Account.balance == 0)
        .values(status="closed")
        .execution_options(synchronize_session=False)
    )
    still_open = db.session.scalar(
        select(Account.code).where(
            Account.id.in_(set(ids)), Account.status == "open", Account.balance != 0
        )
    )
    if still_open is not None:
        db.session.rollback()
        raise ExitError(f"money reached {still_open} during the settlement: settle again")
    # Leaving ends every term: fixed deposits and targets were refunded above.
    for deposit in db.session.scalars(
        select(FixedDeposit).where(
            FixedDeposit.member_id == member.id, FixedDeposit.status == "active"
        )
    ):
        deposit.status = "broken"
        deposit.closed_on = today
    for target in db.session.scalars(
        select(SavingsTarget).where(
            SavingsTarget.member_id == member.id, SavingsTarget.status == "active"
        )
    ):
        target.status = "released"
        target.released_on = today
    for order in db.session.scalars(
        select(StandingOrder).where(
            StandingOrder.member_id == member.id, StandingOrder.status == "active"
        )
    ):
        order.status = "cancelled"
        order.cancelled_by = actor.email
        order.cancelled_at = utcnow()
    settlement = {
        "deposits": str(figures.deposits),
        "savings": str(figures.savings),
        "shares": str(figures.shares),
        "loans": [[loan_no, str(debt)] for _, loan_no, debt in figures.loans],
        "owed": str(figures.owed),
        "refund": str(refund),
    }
    leaving.status = "settled"
    leaving.settled_by_id = actor.id
    leaving.settled_on = today
    leaving.settlement = settlement
    leaving.refund = refund
    member.status = "exited"
    audit_record(
        actor=actor.email,
        action="member_exit.settle",
        object_type="member",
        object_id=member.member_no,
        before={"status": "active"},
        after={"status": "exited", **settlement},
    )
    notify_exit_settled(member=member, exit_id=leaving.id, refund=refund, owed=figures.owed)
    db.session.commit()
    return leaving


def exit_pay(
    *, exit_id: int, actor: StaffUser, method: str, reference: str, today: date
) -> MemberExit:
    """Record the bank transfer or cash that paid a settled member's refund, once."""
    permission_require(actor, "member_exit.settle")
    if method not in PAYMENT_METHODS:
        raise ExitError("paid by bank or cash")
    if not reference.strip():
        raise ExitError("the bank reference or cash voucher number is needed")
    leaving = lock_row(MemberExit, exit_id)
    if leaving is None:
        raise ExitError(f"no exit {exit_id}")
    if leaving.status != "settled":
        db.session.rollback()
        raise ExitError(f"the exit is {leaving.status}: only a settled one is paid")
    refund = leaving.refund or ZERO
    if refund > 0:
        journal_post(
            kind="exit_payout",
            lines=[
                debit(gl_account("GL-REFUNDS-PAYABLE"), refund),
                credit(gl_account(PAYMENT_METHODS[method]), refund),
            ],
            value_date=today,
            description=f"Exit refund paid by {method} {reference.strip()[:40]}",
            idempotency_key=f"exit-payout:{leaving.id}",
            actor=actor.email,
            member_id=leaving.member_id,
        )
    leaving.status = "paid"
    leaving.paid_by_id = actor.id
    leaving.paid_on = today
    leaving.payment_method = method
    leaving.payment_ref = reference.strip()[:60]
    audit_record(
        actor=actor.email,
        action="member_exit.pay",
        object_type="member_exit",
        object_id=leaving.id,
        before={"status": "settled"},
        after={"status": "paid", "method": method, "reference": leaving.payment_ref},
    )
    db.session.commit()
    return leaving
