"""Share transfers between members, and a member leaving: notice, settlement (loans offset
against their money, shares redeemed, the rest owed to them), payout."""

from __future__ import annotations

import threading
from datetime import date, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from app.extensions import db
from app.models import (
    Account,
    AuditLog,
    FixedDeposit,
    JournalEntry,
    Loan,
    Member,
    MemberExit,
    SavingsTarget,
    ShareTransfer,
    SmsMessage,
    StaffUser,
    StandingOrder,
)
from app.selectors.loans import loan_debt, loan_eligibility
from app.selectors.members import member_balances
from app.services.guarantees import guarantee_accept, guarantee_request
from app.services.ledger import credit, debit, gl_account, journal_post, member_account
from app.services.loans import (
    loan_apply,
    loan_approve,
    loan_disburse,
    loan_repay,
    loan_write_off,
)
from app.services.members import member_buy_shares
from app.services.permissions import PermissionDenied
from app.services.savings import account_product, member_product_account
from app.services.savings.exits import (
    ExitError,
    exit_cancel,
    exit_figures,
    exit_pay,
    exit_request,
    exit_settle,
)
from app.services.savings.fixed import (
    fixed_deposit_break,
    fixed_deposit_open,
    target_release,
    target_set,
)
from app.services.savings.shares import (
    ShareTransferError,
    share_transfer_decide,
    share_transfer_request,
)
from app.services.savings.standing_orders import standing_order_cancel, standing_order_create
from app.services.staff import staff_add
from tests.factories import make_member
from tests.helpers import PASSWORD, Worker, holder_then_waiter, staff, wait_until_blocked
from tests.loan_factories import make_borrower, make_loan, make_product
from workers.schedule import run_job

TODAY = date(2026, 6, 1)


def _staff(role: str) -> StaffUser:
    email = staff(role)
    found = db.session.scalar(select(StaffUser).where(StaffUser.email == email))
    assert found is not None
    return found


def _save(member: Member, amount: str, product: str = "ORD") -> None:
    journal_post(
        kind="deposit",
        lines=[
            debit(gl_account("GL-MPESA-CLEARING"), Decimal(amount)),
            credit(member_product_account(member, account_product(product)), Decimal(amount)),
        ],
        value_date=date(2026, 1, 5),
        idempotency_key=f"deposit:{product}-{member.id}",
        member_id=member.id,
    )
    db.session.commit()


def _standing_order(member: Member) -> int:
    return standing_order_create(
        member_id=member.id,
        target="deposits",
        amount="100",
        day_of_month=3,
        actor="x",
        starts_on=date(2026, 1, 1),
    ).id


def _gl(code: str) -> Decimal:
    return db.session.scalar(select(Account.balance).where(Account.code == code)) or Decimal(0)


# -- share transfers ------------------------------------------------------------------------


def decision(action: str, transfer_id: int) -> tuple[dict | None, dict | None]:
    """The audit row of a share transfer's decision (of that transfer): before and after."""
    row = db.session.scalar(
        select(AuditLog).where(
            AuditLog.action == action,
            AuditLog.object_type == "share_transfer",
            AuditLog.object_id == str(transfer_id),
        )
    )
    return row.before, row.after


def test_a_share_transfer_moves_shares_only_once_a_second_person_approves_it(app: Flask) -> None:
    officer, manager = _staff("loan_officer"), _staff("branch_manager")
    staff_add(email="bm2@sacco.test", role="branch_manager", password=PASSWORD)
    second = db.session.scalar(select(StaffUser).where(StaffUser.email == "bm2@sacco.test"))
    seller, buyer = make_borrower(shares=5000), make_borrower()
    transfer = share_transfer_request(
        from_member_id=seller.id,
        to_member_id=buyer.id,
        amount="2000",
        staff=manager,
        form_ref="F-17",
    )
    assert member_balances(member_id=buyer.id).share_capital == Decimal("0.00")  # not yet
    entered = db.session.scalar(select(AuditLog).where(AuditLog.action == "share_transfer.request"))
    assert (entered.actor, entered.object_type, entered.object_id, entered.before) == (
        manager.email,
        "share_transfer",
        str(transfer.id),
        None,
    )
    assert entered.after == {"from": seller.member_no, "to": buyer.member_no, "amount": "2000.00"}
    assert transfer.form_ref == "F-17"
    with pytest.raises(
        ShareTransferError, match="^the transfer needs a second person: you entered it$"
    ):
        share_transfer_decide(transfer_id=transfer.id, staff=manager, approve=True)
    with pytest.raises(ShareTransferError, match="^no share transfer 999999$"):
        share_transfer_decide(transfer_id=999999, staff=second, approve=True)
    with pytest.raises(PermissionDenied):
        share_transfer_decide(transfer_id=transfer.id, staff=officer, approve=True)
    share_transfer_decide(transfer_id=transfer.id, staff=second, approve=True)
    assert member_balances(member_id=seller.id).share_capital == Decimal("3000.00")
    assert member_balances(member_id=buyer.id).share_capital == Decimal("2000.00")
    with pytest.raises(ShareTransferError, match="approved already"):
        share_transfer_decide(transfer_id=transfer.id, staff=second, approve=True)
    actions = set(db.session.scalars(select(AuditLog.action)))
    assert {"share_transfer.request", "share_transfer.approve"} <= actions
    assert decision("share_transfer.approve", transfer.id) == (
        {"status": "requested"},
        {"status": "approved", "reason": None},
    )
    # The shares moved by one entry keyed by the transfer, in the approver's name.
    decided = db.session.get(ShareTransfer, transfer.id)
    entry = db.session.get(JournalEntry, decided.entry_id)
    assert (entry.kind, entry.idempotency_key, entry.actor, entry.member_id) == (
        "share_transfer",
        f"share-transfer:{transfer.id}",
        "bm2@sacco.test",
        seller.id,
    )
    assert entry.description == f"Shares {seller.member_no} to {buyer.member_no}"
    assert decided.decided_by_id == second.id and decided.decided_at is not None


@pytest.mark.parametrize(
    ("typed", "kept"),
    [(None, None), ("   ", None), (" F-18 ", "F-18"), ("F" * 70, "F" * 60)],
)
def test_a_transfer_keeps_the_paper_forms_reference_trimmed_to_its_column(
    app: Flask, typed: str | None, kept: str | None
) -> None:
    seller, buyer = make_borrower(shares=1000), make_borrower()
    transfer = share_transfer_request(
        from_member_id=seller.id,
        to_member_id=buyer.id,
        amount="100",
        staff=_staff("branch_manager"),
        form_ref=typed,
    )
    db.session.expire_all()
    assert db.session.get(ShareTransfer, transfer.id).form_ref == kept


@pytest.mark.parametrize("role", ["seller", "buyer"])
def test_a_transfer_is_not_approved_once_a_member_in_it_is_no_longer_active(
    app: Flask, role: str
) -> None:
    """Between the form and the approval a member may be suspended: the manager is told
    which one, and no shares move. (Mutation testing, issue 23.)"""
    officer, manager = _staff("loan_officer"), _staff("branch_manager")
    seller, buyer = make_borrower(shares=1000), make_borrower()
    transfer = share_transfer_request(
        from_member_id=seller.id, to_member_id=buyer.id, amount="500", staff=officer
    )
    member = seller if role == "seller" else buyer
    member.status = "suspended"
    db.session.commit()

    with pytest.raises(ShareTransferError, match=f"^the {role}, {member.member_no}, is suspended$"):
        share_transfer_decide(transfer_id=transfer.id, staff=manager, approve=True)

    assert db.session.get(ShareTransfer, transfer.id).status == "requested"
    assert member_balances(member_id=buyer.id).share_capital == Decimal("0.00")


def test_a_transfer_between_members_who_cannot_trade_is_refused_in_words(app: Flask) -> None:
    """Entering a transfer names the member who cannot take part, in the same words as
    the approval does; nothing is written. (Mutation testing, issue 23.)"""
    officer = _staff("loan_officer")
    seller, buyer = make_borrower(shares=1000), make_borrower()
    seller_id, buyer_id, buyer_no = seller.id, buyer.id, buyer.member_no
    buyer.status = "suspended"
    db.session.commit()

    for from_id, to_id, amount, refused in (
        (999999, buyer_id, "100", "^the seller, member 999999, does not exist$"),
        (seller_id, 999999, "100", "^the buyer, member 999999, does not exist$"),
        (seller_id, buyer_id, "100", f"^the buyer, {buyer_no}, is suspended$"),
        (seller_id, seller_id, "100", "^a member cannot transfer shares to themselves$"),
        (seller_id, buyer_id, "lots", "^amount is not a number$"),
    ):
        with pytest.raises(ShareTransferError, match=refused):
            share_transfer_request(
                from_member_id=from_id, to_member_id=to_id, amount=amount, staff=officer
            )
    assert db.session.scalar(select(func.count()).select_from(ShareTransfer)) == 0


def test_a_transfer_of_shares_the_seller_no_longer_holds_is_refused_in_words(app: Flask) -> None:
    officer, manager = _staff("loan_officer"), _staff("branch_manager")
    seller, buyer = make_borrower(shares=1000), make_borrower()
    with pytest.raises(ShareTransferError, match="holds only KES 1,000.00"):
        share_transfer_request(
            from_member_id=seller.id, to_member_id=buyer.id, amount="1500", staff=officer
        )
    with pytest.raises(ShareTransferError, match="to themselves"):
        share_transfer_request(
            from_member_id=seller.id, to_member_id=seller.id, amount="100", staff=officer
        )
    first = share_transfer_request(
        from_member_id=seller.id, to_member_id=buyer.id, amount="800", staff=officer
    )
    second = share_transfer_request(
        from_member_id=seller.id, to_member_id=buyer.id, amount="800", staff=officer
    )
    share_transfer_decide(transfer_id=first.id, staff=manager, approve=True)
    with pytest.raises(ShareTransferError, match="now holds only KES 200.00"):
        share_transfer_decide(transfer_id=second.id, staff=manager, approve=True)
    with pytest.raises(ShareTransferError, match="^say why the transfer is rejected$"):
        share_transfer_decide(transfer_id=second.id, staff=manager, approve=False)
    share_transfer_decide(
        transfer_id=second.id, staff=manager, approve=False, reason="seller sold to another"
    )
    assert db.session.get(ShareTransfer, second.id).status == "rejected"
    assert decision("share_transfer.reject", second.id) == (
        {"status": "requested"},
        {"status": "rejected", "reason": "seller sold to another"},
    )
    assert member_balances(member_id=buyer.id).share_capital == Decimal("800.00")


# -- exits ----------------------------------------------------------------------------------


def test_an_exit_offsets_the_loans_redeems_the_shares_and_owes_the_member_the_rest(
    app: Flask,
) -> None:
    officer, manager = _staff("loan_officer"), _staff("branch_manager")
    loan = make_loan(product=make_product("V1"), amount=6000, on=date(2026, 1, 10))
    member = db.session.get(Member, loan.member_id)
    member_buy_shares(
        member_id=member.id, amount="1000", reference="SH1", value_date=date(2026, 1, 11)
    )
    _save(member, "2500")
    _standing_order(member)
    before = member_balances(member_id=member.id)
    member_id, loan_id, member_no, loan_no = member.id, loan.id, member.member_no, loan.loan_no
    # A neighbour's money and empty accounts are nothing of the leaver's.
    neighbour = make_member(savings="700")
    empty = make_member()
    neighbour_id, empty_id = neighbour.id, empty.id

    leaving = exit_request(member_id=member_id, reason="moving abroad", actor=officer, today=TODAY)
    assert leaving.notice_ends_on == TODAY + timedelta(days=60)
    # During the notice the member cannot borrow against money about to be refunded.
    refusal = loan_eligibility(
        member=db.session.get(Member, member_id), product=loan.product, as_of=TODAY
    )
    assert (refusal.code, refusal.reason) == (
        "exit_notice",
        "You have given notice to leave the SACCO.",
    )
    with pytest.raises(ExitError, match="has given notice already"):
        exit_request(member_id=member_id, reason="again", actor=officer, today=TODAY)
    with pytest.raises(ExitError, match="the notice runs until 31 Jul 2026"):
        exit_settle(exit_id=leaving.id, actor=manager, today=TODAY + timedelta(days=59))

    figures = exit_figures(member_id)
    owed = figures.owed
    assert owed > 0 and figures.blockers == []
    held = before.savings + before.share_capital + Decimal("2500")
    with pytest.raises(ExitError, match=f"^no exit {leaving.id + 1000}$"):
        exit_settle(exit_id=leaving.id + 1000, actor=manager, today=TODAY + timedelta(days=60))
    settled_on = TODAY + timedelta(days=60)
    settled = exit_settle(exit_id=leaving.id, actor=manager, today=settled_on)
    assert settled.status == "settled" and settled.refund == held - owed
    assert (settled.settled_by_id, settled.settled_on) == (manager.id, settled_on)
    with pytest.raises(ExitError, match="^the exit is settled already$"):
        exit_settle(exit_id=leaving.id, actor=manager, today=settled_on)
    # The books of the settlement: each entry under its own key, by the manager, for the
    # member. (Mutation testing, issue 23.)
    entries = {
        e.kind: e
        for e in db.session.scalars(
            select(JournalEntry).where(JournalEntry.value_date == settled_on)
        )
    }
    assert {
        kind: (e.idempotency_key, e.actor, e.member_id, e.description)
        for kind, e in entries.items()
    } == {
        "exit_transfer": (
            f"exit-transfer:{leaving.id}",
            manager.email,
            member_id,
            f"Exit {member_no}: savings and shares brought together",
        ),
        "repayment": (
            f"repay:EXIT{leaving.id}-{loan_no}",
            f"staff:{manager.email}",  # as every repayment names a person
            member_id,
            f"Repayment {loan_no} EXIT{leaving.id}-{loan_no}",
        ),
        "exit_refund": (
            f"exit-refund:{leaving.id}",
            manager.email,
            member_id,
            f"Exit {member_no}: refund owed",
        ),
    }
    assert member_balances(member_id=neighbour_id).savings == Decimal("700.00")
    assert {
        a.status for a in db.session.scalars(select(Account).where(Account.member_id == empty_id))
    } == {"open"}
    [audit] = db.session.scalars(select(AuditLog).where(AuditLog.action == "member_exit.settle"))
    assert (audit.actor, audit.object_type, audit.object_id) == (
        manager.email,
        "member",
        member_no,
    )
    assert audit.before == {"status": "active"}
    assert audit.after == {"status": "exited", **settled.settlement}
    assert settled.settlement == {
        "deposits": str(figures.deposits),
        "savings": str(figures.savings),
        "shares": str(figures.shares),
        "loans": [[loan_no, str(owed)]],
        "owed": str(owed),
        "refund": str(held - owed),
    }
    assert db.session.get(Loan, loan_id).status == "closed"
    assert db.session.get(Member, member_id).status == "exited"
    money = db.session.scalars(
        select(Account).where(
            Account.member_id == member_id,
            Account.kind.in_(("savings", "member_savings", "share_capital")),
        )
    ).all()
    assert {(a.status, a.balance) for a in money} == {("closed", Decimal("0.00"))}
    assert -_gl("GL-REFUNDS-PAYABLE") == held - owed
    [sms] = db.session.scalars(select(SmsMessage).where(SmsMessage.template == "exit_settled"))
    assert (sms.member_id, sms.idempotency_key) == (member_id, f"exit-settled:{leaving.id}")
    assert sms.body == (
        f"Your SACCO membership has ended. Loans paid from your money: KES {owed:,.2f}. "
        f"Refund due to you: KES {held - owed:,.2f}. Thank you for saving with us."
    )

    with pytest.raises(ExitError, match="by bank or cash"):
        exit_pay(exit_id=leaving.id, actor=manager, method="mpesa", reference="X", today=TODAY)
    exit_pay(exit_id=leaving.id, actor=manager, method="bank", reference="CHQ 0042", today=TODAY)
    assert _gl("GL-REFUNDS-PAYABLE") == Decimal("0.00")
    assert _gl("GL-BANK") == -(held - owed)
    with pytest.raises(ExitError, match="only a settled one is paid"):
        exit_pay(exit_id=leaving.id, actor=manager, method="bank", reference="again", today=TODAY)


def _settled(manager: StaffUser, savings: str) -> tuple[int, int, date]:
    """A member with `savings` in ordinary savings and nothing else, whose exit `manager`
    settled: (member, exit, the day). A shilling is brought into the deposits as any sum."""
    member = make_member()
    if Decimal(savings) > 0:
        _save(member, savings)
    leaving = exit_request(member_id=member.id, reason="leaving", actor=manager, today=TODAY)
    day = TODAY + timedelta(days=60)
    settled = exit_settle(exit_id=leaving.id, actor=manager, today=day)
    assert settled.refund == Decimal(savings)
    return member.id, leaving.id, day


def test_a_notice_is_recorded_and_refused_in_words_for_no_member_or_one_gone(
    app: Flask,
) -> None:
    """Another member's notice, or the member's own cancelled one, does not stop a notice.
    (Mutation testing, issue 23.)"""
    officer = _staff("loan_officer")
    with pytest.raises(ExitError, match="^no member 999999$"):
        exit_request(member_id=999999, reason="x", actor=officer, today=TODAY)
    member, other = make_member(), make_member()
    member_id, member_no = member.id, member.member_no
    exit_request(member_id=other.id, reason="moving", actor=officer, today=TODAY)
    first = exit_request(member_id=member_id, reason="moving", actor=officer, today=TODAY)
    exit_cancel(exit_id=first.id, actor=officer)

    notice = exit_request(member_id=member_id, reason="  retiring ", actor=officer, today=TODAY)

    audit = db.session.scalars(
        select(AuditLog)
        .where(AuditLog.action == "member_exit.request", AuditLog.object_id == member_no)
        .order_by(AuditLog.id.desc())
    ).first()
    assert (audit.actor, audit.object_type, audit.note) == (officer.email, "member", "retiring")
    assert audit.after == {"exit": notice.id, "notice_ends_on": "2026-07-31"}
    gone, _, _ = _settled(_staff("branch_manager"), "0")
    gone_no = db.session.get(Member, gone).member_no
    with pytest.raises(ExitError, match=f"^{gone_no} has left already$"):
        exit_request(member_id=gone, reason="again", actor=officer, today=TODAY)


def test_a_payout_records_who_paid_how_and_the_reference_in_the_books_and_the_audit(
    app: Flask,
) -> None:
    """A refund of one shilling is paid like any other. (Mutation testing, issue 23.)"""
    manager = _staff("branch_manager")
    member_id, exit_id, day = _settled(manager, "1")
    cash_before = _gl("GL-CASH")
    with pytest.raises(ExitError, match="^the bank reference or cash voucher number is needed$"):
        exit_pay(exit_id=exit_id, actor=manager, method="cash", reference="  ", today=day)
    with pytest.raises(ExitError, match=f"^no exit {exit_id + 1000}$"):
        exit_pay(exit_id=exit_id + 1000, actor=manager, method="cash", reference="V1", today=day)
    reference = "  VOUCHER " + "7" * 70 + " "  # longer than the column: trimmed, not refused

    paid = exit_pay(exit_id=exit_id, actor=manager, method="cash", reference=reference, today=day)

    voucher = reference.strip()
    assert (paid.status, paid.paid_by_id, paid.paid_on) == ("paid", manager.id, day)
    assert (paid.payment_method, paid.payment_ref) == ("cash", voucher[:60])
    [entry] = db.session.scalars(select(JournalEntry).where(JournalEntry.kind == "exit_payout"))
    assert (entry.idempotency_key, entry.actor, entry.member_id, entry.value_date) == (
        f"exit-payout:{exit_id}",
        manager.email,
        member_id,
        day,
    )
    assert entry.description == f"Exit refund paid by cash {voucher[:40]}"
    assert _gl("GL-REFUNDS-PAYABLE") == Decimal("0.00")
    assert _gl("GL-CASH") - cash_before == Decimal("-1.00")
    [audit] = db.session.scalars(select(AuditLog).where(AuditLog.action == "member_exit.pay"))
    assert (audit.actor, audit.object_type, audit.object_id) == (
        manager.email,
        "member_exit",
        str(exit_id),
    )
    assert audit.before == {"status": "settled"}
    assert audit.after == {"status": "paid", "method": "cash", "reference": voucher[:60]}


def test_an_exit_with_nothing_to_refund_is_paid_without_an_entry(app: Flask) -> None:
    manager = _staff("branch_manager")
    _, exit_id, day = _settled(manager, "0")

    paid = exit_pay(exit_id=exit_id, actor=manager, method="bank", reference="NIL", today=day)

    assert paid.status == "paid"
    assert (
        db.session.scalar(
            select(func.count(JournalEntry.id)).where(JournalEntry.kind == "exit_payout")
        )
        == 0
    )


def test_leaving_ends_every_term_the_member_holds_and_no_one_elses(app: Flask) -> None:
    """A fixed deposit is broken, a savings target released and a standing order cancelled,
    on the day of the settlement; another member's stay as they were. (Mutation testing,
    issue 23.)"""
    manager = _staff("branch_manager")
    leaver, stayer = make_member(), make_member()
    leaver_id, stayer_id = leaver.id, stayer.id
    for member in (leaver, stayer):
        _save(member, "20000")
    # Terms the leaver ended before: they keep the day they ended.
    ended_on = TODAY + timedelta(days=1)
    broken = fixed_deposit_open(member_id=leaver_id, amount="1000", actor="x", today=TODAY).id
    fixed_deposit_break(deposit_id=broken, actor="x", today=ended_on)
    released = target_set(
        member_id=leaver_id, name="Holiday", unlock_on=ended_on, actor="x", today=TODAY
    ).id
    target_release(target_id=released, actor="x", today=ended_on)
    terms = {}
    for member_id in (leaver_id, stayer_id):
        deposit = fixed_deposit_open(member_id=member_id, amount="5000", actor="x", today=ended_on)
        target = target_set(
            member_id=member_id, name="School fees", goal_amount="3000", actor="x", today=ended_on
        )
        order = _standing_order(db.session.get(Member, member_id))
        terms[member_id] = (deposit.id, target.id, order)
    _save(db.session.get(Member, leaver_id), "700", product="TGT")  # saved towards the target
    stopped = _standing_order(db.session.get(Member, leaver_id))
    standing_order_cancel(order_id=stopped, actor="member:ussd")
    leaving = exit_request(member_id=leaver_id, reason="leaving", actor=manager, today=TODAY)
    day = TODAY + timedelta(days=60)
    held = exit_figures(leaver_id)
    ordinary = member_product_account(
        db.session.get(Member, leaver_id), account_product("ORD")
    ).display_balance

    settled = exit_settle(exit_id=leaving.id, actor=manager, today=day)

    def state(member_id: int) -> tuple[object, ...]:
        deposit_id, target_id, order_id = terms[member_id]
        deposit = db.session.get(FixedDeposit, deposit_id)
        target = db.session.get(SavingsTarget, target_id)
        order = db.session.get(StandingOrder, order_id)
        return (
            (deposit.status, deposit.closed_on),
            (target.status, target.released_on),
            (order.status, order.cancelled_by, order.cancelled_at is not None),
        )

    assert state(leaver_id) == (
        ("broken", day),
        ("released", day),
        ("cancelled", manager.email, True),
    )
    assert state(stayer_id) == (("active", None), ("active", None), ("active", None, False))
    old_deposit = db.session.get(FixedDeposit, broken)
    old_target = db.session.get(SavingsTarget, released)
    assert (old_deposit.status, old_deposit.closed_on) == ("broken", ended_on)
    assert (old_target.status, old_target.released_on) == ("released", ended_on)
    assert db.session.get(StandingOrder, stopped).cancelled_by == "member:ussd"
    # The deposit and the target's money come back with the savings.
    assert held.savings == ordinary + Decimal("5000") + Decimal("700")
    assert settled.refund == held.refund


def test_an_exit_counts_every_loan_and_what_a_write_off_still_owes(app: Flask) -> None:
    """A written-off loan owes what its recoveries have not covered, to the shilling; one
    recovered in full owes nothing; every loan adds to what is owed, and the settlement
    recovers it. (Mutation testing, issue 23.)"""
    manager = _staff("branch_manager")
    member = make_borrower(savings=30000)
    member_id = member.id
    loans = []
    for code, amount in (("W1", 3000), ("W2", 2000), ("W3", 1000)):
        product = make_product("V1", code=code, default_threshold_days=30)
        loans.append(
            make_loan(
                product=product,
                amount=amount,
                on=date(2026, 1, 1),
                member=db.session.get(Member, member_id),
            ).id
        )
    manager_id = manager.id
    run_job("loan-arrears", date(2026, 4, 1))  # in default; the run ends the session
    manager = db.session.get(StaffUser, manager_id)
    for loan_id in loans:
        loan_write_off(loan_id=loan_id, staff=manager, reason="no contact", value_date=TODAY)
    # Recovered all but a shilling, all but KES 2.50, and in full.
    for n, (loan_id, left) in enumerate(zip(loans, ("1", "2.50", "0"), strict=True)):
        written = db.session.get(Loan, loan_id).written_off_amount
        loan_repay(
            loan_id=loan_id, amount=written - Decimal(left), reference=f"REC{n}", value_date=TODAY
        )

    figures = exit_figures(member_id)

    assert [(loan_id, debt) for loan_id, _, debt in figures.loans] == [
        (loans[0], Decimal("1.00")),
        (loans[1], Decimal("2.50")),
    ]
    assert (figures.owed, figures.blockers) == (Decimal("3.50"), [])
    leaving = exit_request(member_id=member_id, reason="leaving", actor=manager, today=TODAY)
    settled = exit_settle(exit_id=leaving.id, actor=manager, today=TODAY + timedelta(days=60))
    assert settled.refund == figures.held - Decimal("3.50")
    for loan_id in loans:
        loan = db.session.get(Loan, loan_id)
        assert loan.recovered_amount == loan.written_off_amount


def test_a_guarantee_holding_a_shilling_keeps_the_exit_waiting_and_an_application_too(
    app: Flask,
) -> None:
    """The guarantor's pledge holds its share of the principal still owed: KES 1.00 of it
    is still a pledge to release first. An application in progress is said, and the
    loans after it are still counted. (Mutation testing, issue 23.)"""
    manager = _staff("branch_manager")
    secured = make_product("V1", code="SEC", min_guarantors=1, guarantee_cover=Decimal("20"))
    borrower, guarantor = make_borrower(savings=10000), make_borrower(savings=20000)
    loan = loan_apply(member_id=borrower.id, product_id=secured.id, amount=25000, as_of=TODAY)
    gid = guarantee_request(
        loan_id=loan.id, guarantor_id=guarantor.id, amount=5000, actor="member:t", today=TODAY
    ).id
    guarantee_accept(guarantee_id=gid, guarantor_id=guarantor.id, via="sms", today=TODAY)
    loan_approve(loan_id=loan.id, staff=manager)
    loan_disburse(loan_id=loan.id, reference="B2CEXIT1", value_date=TODAY)
    # Everything but KES 5 of the last installment's principal: 5,000 x 5 / 25,000 = 1.00.
    loan_repay(
        loan_id=loan.id,
        amount=loan_debt(loan_id=loan.id).total - 5,
        reference="ALMOST",
        value_date=TODAY,
    )
    loan_no, borrower_name = loan.loan_no, borrower.name
    # The guarantor's own application, then a loan of theirs paid out after it.
    applied = loan_apply(member_id=guarantor.id, product_id=secured.id, amount=1000, as_of=TODAY)
    own = make_loan(product=make_product("V1", code="OWN"), amount=2000, on=TODAY, member=guarantor)

    figures = exit_figures(guarantor.id)

    assert figures.blockers == [
        f"loan application {applied.loan_no} is {applied.status}: withdraw or finish it first",
        f"guarantees loan {loan_no} of {borrower_name} (KES 1.00 held): release or replace "
        "the guarantee first",
    ]
    assert figures.owed == loan_debt(loan_id=own.id).total > 0


def test_an_exit_waits_for_what_of_the_members_own_is_still_moving(app: Flask) -> None:
    """A guarantee request they have not answered, a withdrawal at the branch held for
    approval, an M-PESA prompt or payout on its way: each of the member's own keeps the
    settlement waiting, in words; another member's keeps nobody else waiting. (Mutation
    testing, issue 23.)"""
    from app.services.payments.stk import payments_request_deposit_stk
    from app.services.savings.branch import branch_withdrawal_record
    from app.services.savings.withdrawals import withdrawal_request

    officer = _staff("loan_officer")
    asked, at_branch, prompted, paid_out, bystander = (
        make_borrower(savings=20000) for _ in range(5)
    )
    secured = make_product("V1", code="SEC", min_guarantors=1, guarantee_cover=Decimal("100"))
    applicant = make_borrower(savings=10000)
    loan = loan_apply(member_id=applicant.id, product_id=secured.id, amount=25000, as_of=TODAY)
    guarantee_request(
        loan_id=loan.id, guarantor_id=asked.id, amount=5000, actor="member:t", today=TODAY
    )
    for member in (at_branch, paid_out):
        _save(member, "90000")
    branch_withdrawal_record(
        member_id=at_branch.id,
        account_id=member_product_account(at_branch, account_product("ORD")).id,
        amount="60000",
        method="cash",
        reference="V-8",
        staff=officer,
        today=TODAY,
    )
    payments_request_deposit_stk(
        member_id=prompted.id, account_id=member_account(prompted, "savings").id, amount=300
    )
    withdrawal_request(
        member_id=paid_out.id,
        account_id=member_product_account(paid_out, account_product("ORD")).id,
        amount="1000",
    )
    in_flight = "an M-PESA payment of theirs is on its way: wait for its result"

    assert {
        name: exit_figures(member.id).blockers
        for name, member in (
            ("asked", asked),
            ("at_branch", at_branch),
            ("prompted", prompted),
            ("paid_out", paid_out),
            ("bystander", bystander),
        )
    } == {
        "asked": ["a guarantee request waits for the member's answer: decline it"],
        "at_branch": ["a withdrawal at the branch waits for approval: decide it first"],
        "prompted": [in_flight],
        "paid_out": [in_flight],
        "bystander": [],
    }


def test_an_exit_waits_while_the_member_guarantees_a_loan_or_owes_more_than_they_hold(
    app: Flask,
) -> None:
    officer, manager = _staff("loan_officer"), _staff("branch_manager")
    secured = make_product("V1", code="SEC", min_guarantors=1, guarantee_cover=Decimal("100"))
    borrower = make_borrower(savings=10000)
    guarantor = make_borrower(savings=20000)
    loan = loan_apply(member_id=borrower.id, product_id=secured.id, amount=25000, as_of=TODAY)
    gid = guarantee_request(
        loan_id=loan.id, guarantor_id=guarantor.id, amount=5000, actor="member:t", today=TODAY
    ).id
    guarantee_accept(guarantee_id=gid, guarantor_id=guarantor.id, via="sms", today=TODAY)
    # An application of their own in progress too: every reason is said, one after another.
    applied = loan_apply(member_id=guarantor.id, product_id=secured.id, amount=1000, as_of=TODAY)
    leaving = exit_request(member_id=guarantor.id, reason="retiring", actor=officer, today=TODAY)
    later = TODAY + timedelta(days=90)
    with pytest.raises(ExitError) as waits:
        exit_settle(exit_id=leaving.id, actor=manager, today=later)
    assert str(waits.value).startswith(
        f"not yet: loan application {applied.loan_no or applied.id} is {applied.status}: "
        "withdraw or finish it first; guarantees loan "
    )
    assert str(waits.value).endswith(": release or replace the guarantee first")
    assert db.session.get(MemberExit, leaving.id).status == "notice"
    assert db.session.get(Member, guarantor.id).status == "active"
    exit_cancel(exit_id=leaving.id, actor=officer)
    with pytest.raises(ExitError, match="no longer be cancelled"):
        exit_cancel(exit_id=leaving.id, actor=officer)

    debtor_loan = make_loan(
        product=make_product("V1", code="BIG"), amount=9000, on=date(2026, 1, 10)
    )
    debtor_id = debtor_loan.member_id
    # Their deposits went to shares and back out by a transfer: they now hold less than owed.
    debtor = db.session.get(Member, debtor_id)
    held = member_balances(member_id=debtor_id).savings
    member_buy_shares(member_id=debtor_id, amount=held, reference="SHX", value_date=TODAY)
    other = make_borrower()
    transfer = share_transfer_request(
        from_member_id=debtor.id, to_member_id=other.id, amount=held, staff=officer
    )
    share_transfer_decide(transfer_id=transfer.id, staff=manager, approve=True)
    leaving = exit_request(member_id=debtor_id, reason="leaving", actor=officer, today=TODAY)
    with pytest.raises(
        ExitError,
        match=r"owes KES [\d,.]+ more than their deposits, savings and shares: collect it first$",
    ):
        exit_settle(exit_id=leaving.id, actor=manager, today=later)


def _exit_due(officer: StaffUser) -> tuple[int, str, int]:
    member = make_borrower(savings=3000)
    leaving = exit_request(member_id=member.id, reason="leaving", actor=officer, today=TODAY)
    return member.id, member.member_no or "", leaving.id


SETTLED_ON = TODAY + timedelta(days=61)


def _settle_as(manager_id: int, exit_id: int) -> tuple[str, Decimal | None]:
    """A settlement in a thread of its own: ("settled", the refund), or the refusal's
    words and None."""
    try:
        manager = db.session.get(StaffUser, manager_id)
        settled = exit_settle(exit_id=exit_id, actor=manager, today=SETTLED_ON)
    except ExitError as exc:
        return str(exc), None
    return settled.status, settled.refund


def test_a_deposit_in_flight_when_the_settlement_starts_is_counted_in_the_refund(
    app: Flask, pg: None
) -> None:
    """A Paybill payment has written the deposits' new balance and not committed: its
    journal entry names the member, so the settlement's lock on the member waits for it,
    then reads the balance with the payment in it and refunds all of it."""
    from app.services.members import member_deposit

    officer, manager = _staff("loan_officer"), _staff("branch_manager")
    member_id, _, leaving_id = _exit_due(officer)
    manager_id = manager.id
    db.session.remove()
    paid, release = threading.Event(), threading.Event()

    def pay() -> None:
        member_deposit(
            member_id=member_id, amount="500", reference="LATE1", value_date=TODAY, commit=False
        )
        paid.set()
        release.wait(20)
        db.session.commit()

    payer, settling = holder_then_waiter(app, pay, paid, lambda: _settle_as(manager_id, leaving_id))
    release.set()
    payer.outcome()
    assert settling.outcome() == ("settled", Decimal("3500.00"))
    assert member_balances(member_id=member_id).savings == Decimal("0.00")
    assert -_gl("GL-REFUNDS-PAYABLE") == Decimal("3500.00")


def test_a_deposit_arriving_during_a_settlement_is_refused_not_lost_in_a_closed_account(
    app: Flask, pg: None
) -> None:
    """The settlement holds the member's lock (it waits here on the exit's row, held by
    this test); a Paybill payment arriving then waits on the member's row, and once the
    settlement has closed the accounts the ledger refuses it in words (the callback's
    handling turns that into suspense or a refusal): no money sits in a closed account."""
    from app.services.ledger import LedgerError
    from app.services.members import member_deposit

    officer, manager = _staff("loan_officer"), _staff("branch_manager")
    member_id, _, leaving_id = _exit_due(officer)
    manager_id = manager.id
    db.session.remove()
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        db.session.execute(
            text("SELECT id FROM member_exits WHERE id = :e FOR UPDATE"), {"e": leaving_id}
        )
        locked.set()
        release.wait(20)
        db.session.commit()

    def pay() -> str:
        try:
            member_deposit(member_id=member_id, amount="500", reference="LATE2", value_date=TODAY)
        except LedgerError as exc:
            return str(exc)
        return "paid"

    holder = Worker(app, hold)
    holder.start()
    assert locked.wait(20)
    settling = Worker(app, lambda: _settle_as(manager_id, leaving_id))
    settling.start()
    wait_until_blocked(1)
    payer = Worker(app, pay)
    payer.start()
    wait_until_blocked(2)
    release.set()
    holder.outcome()
    assert settling.outcome() == ("settled", Decimal("3000.00"))
    assert "closed" in payer.outcome()
    assert member_balances(member_id=member_id).savings == Decimal("0.00")
    assert -_gl("GL-REFUNDS-PAYABLE") == Decimal("3000.00")


def test_money_reaching_an_account_mid_settlement_refuses_it_and_changes_nothing(
    app: Flask, pg: None
) -> None:
    """A posting that takes no member lock (here a deposit entry of its own, held open on
    the deposits' row) lands after the settlement read the balances: the account is not
    empty when the settlement closes it, so the whole settlement is refused and rolled
    back, the loan's repayment with it. Settled again, the money is counted. (Mutation
    testing, issue 23.)"""
    officer, manager = _staff("loan_officer"), _staff("branch_manager")
    member = make_borrower(savings=10000)
    loan = make_loan(product=make_product("V1"), amount=2000, on=date(2026, 1, 10), member=member)
    member_id, loan_id, manager_id = member.id, loan.id, manager.id
    deposits_id = member_account(member, "savings").id
    owed = loan_debt(loan_id=loan_id).total
    leaving_id = exit_request(member_id=member_id, reason="leaving", actor=officer, today=TODAY).id
    db.session.remove()
    posted, release = threading.Event(), threading.Event()

    def deposit() -> None:
        journal_post(
            kind="deposit",
            lines=[
                debit(gl_account("GL-MPESA-CLEARING"), Decimal("500")),
                credit(db.session.get(Account, deposits_id), Decimal("500")),
            ],
            value_date=SETTLED_ON,
            idempotency_key="deposit:MIDEXIT",
        )
        posted.set()
        release.wait(20)
        db.session.commit()

    # The settlement waits on the deposits' row.
    payer, settling = holder_then_waiter(
        app, deposit, posted, lambda: _settle_as(manager_id, leaving_id)
    )
    release.set()
    payer.outcome()
    refused, refund = settling.outcome()

    code = db.session.get(Account, deposits_id).code
    assert (refused, refund) == (f"money reached {code} during the settlement: settle again", None)
    assert db.session.get(MemberExit, leaving_id).status == "notice"
    assert db.session.get(Member, member_id).status == "active"
    assert loan_debt(loan_id=loan_id).total == owed  # the repayment went back too
    assert member_balances(member_id=member_id).savings == Decimal("10500.00")
    assert _gl("GL-REFUNDS-PAYABLE") == Decimal("0.00")

    again = exit_settle(
        exit_id=leaving_id, actor=db.session.get(StaffUser, manager_id), today=SETTLED_ON
    )
    assert again.refund == Decimal("10500.00") - owed


def test_an_exit_waits_for_a_branch_withdrawal_held_for_approval(app: Flask) -> None:
    from app.services.savings.branch import branch_withdrawal_decide, branch_withdrawal_record

    officer, manager = _staff("loan_officer"), _staff("branch_manager")
    member = make_borrower(savings=1000)
    _save(member, "90000")
    ordinary = member_product_account(member, account_product("ORD"))
    held = branch_withdrawal_record(
        member_id=member.id,
        account_id=ordinary.id,
        amount="60000",
        method="cash",
        reference="V-7",
        staff=officer,
        today=TODAY,
    )
    leaving = exit_request(member_id=member.id, reason="leaving", actor=officer, today=TODAY)
    later = TODAY + timedelta(days=61)
    with pytest.raises(ExitError, match="a withdrawal at the branch waits for approval"):
        exit_settle(exit_id=leaving.id, actor=manager, today=later)
    branch_withdrawal_decide(
        withdrawal_id=held.id, staff=manager, approve=False, today=TODAY, reason="not signed"
    )
    assert exit_settle(exit_id=leaving.id, actor=manager, today=later).refund == Decimal("91000.00")


def test_a_notice_stops_the_leavers_borrowing_alone_and_a_cancelled_one_no_longer(
    app: Flask,
) -> None:
    product = make_product("V1")
    leaver, neighbour = make_borrower(savings="5000"), make_borrower(savings="5000")
    leaver_id, neighbour_id = leaver.id, neighbour.id

    def eligibility(member_id: int) -> tuple[bool, str | None]:
        answer = loan_eligibility(
            member=db.session.get(Member, member_id), product=product, as_of=TODAY
        )
        return answer.eligible, answer.code

    notice = exit_request(
        member_id=leaver_id, reason="moving abroad", actor=_staff("loan_officer"), today=TODAY
    )
    assert eligibility(leaver_id) == (False, "exit_notice")
    assert eligibility(neighbour_id) == (True, None)  # another member's notice is not theirs

    manager = _staff("branch_manager")
    with pytest.raises(ExitError, match=f"^no exit {notice.id + 1000}$"):
        exit_cancel(exit_id=notice.id + 1000, actor=manager)
    cancelled = exit_cancel(exit_id=notice.id, actor=manager)

    assert eligibility(leaver_id) == (True, None)
    # Who cancelled it, kept on the exit and in the audit. (Mutation testing, issue 23.)
    assert (cancelled.status, cancelled.cancelled_by) == ("cancelled", manager.email)
    [audit] = db.session.scalars(select(AuditLog).where(AuditLog.action == "member_exit.cancel"))
    assert (audit.actor, audit.object_type, audit.object_id) == (
        manager.email,
        "member_exit",
        str(notice.id),
    )
    assert (audit.before, audit.after) == ({"status": "notice"}, {"status": "cancelled"})
