"""Guarantees through the services: a secured product waits for its cover, guarantors
pledge free deposits only, a pledge holds what the loan still owes and is released when it
ends, and two pledges (or a transfer) can never take the same shilling. Every test ends
with the full reconciliation (the autouse fixture in conftest)."""

from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import bindparam, select, text

from app.extensions import db
from app.models import AuditLog, Guarantee, Loan, Member
from app.models.types import Money
from app.selectors.guarantees import guarantees_held, loan_cover, member_deposits
from app.selectors.loans import loan_eligibility
from app.services.guarantees import (
    GuaranteeError,
    guarantee_accept,
    guarantee_decline,
    guarantee_request,
    guarantees_end,
    guarantor_find,
    mask_name,
)
from app.services.ledger import ledger_check
from app.services.loans import (
    LoanError,
    loan_apply,
    loan_approve,
    loan_disburse,
    loan_reject,
    loan_repay,
)
from app.services.members import MemberError, member_buy_shares
from tests.helpers import Worker, sms_bodies, wait_until_blocked
from tests.loan_factories import make_borrower, make_product, make_staff, receivables, reload

D = Decimal
DAY = date(2026, 3, 2)


def _secured(**overrides: object) -> int:
    """V1 terms (12% a year, 12 months, limit 3x deposits), secured by at least two
    guarantors covering all of the loan above the borrower's own free deposits."""
    rule = dict(code="SEC", name="Development", min_guarantors=2, guarantee_cover=D("100"))
    return make_product("V1", **{**rule, **overrides}).id


def _apply(product_id: int, amount: int = 25000, savings: int = 10000) -> Loan:
    borrower = make_borrower(savings=savings)
    return loan_apply(member_id=borrower.id, product_id=product_id, amount=amount, as_of=DAY)


def _ask(loan: Loan, guarantor: Member, amount: int) -> Guarantee:
    return guarantee_request(
        loan_id=loan.id, guarantor_id=guarantor.id, amount=amount, actor="member:test", today=DAY
    )


def _accept(guarantee: Guarantee | int, guarantor: Member, via: str = "ussd") -> Guarantee:
    gid = guarantee if isinstance(guarantee, int) else guarantee.id
    return guarantee_accept(guarantee_id=gid, guarantor_id=guarantor.id, via=via, today=DAY)


def test_a_secured_loan_waits_for_its_cover_and_its_guarantees_follow_the_loan(
    app: Flask,
) -> None:
    loan = _apply(_secured())
    assert loan.status == "submitted"  # never auto-approved while it needs guarantors
    cover = loan_cover(loan)
    assert (cover.required, cover.covered, cover.complete) == (D("15000"), D("0"), False)
    manager = make_staff("branch_manager")
    with pytest.raises(LoanError, match="not secured yet: KES 0 of KES 15,000 covered, 0 of 2"):
        loan_approve(loan_id=loan.id, staff=manager)
    db.session.rollback()

    first = make_borrower(savings=20000)
    second = make_borrower(savings=5000)
    asked_first = _ask(loan, first, 10000)
    asked_second = _ask(loan, second, 5000)
    [request] = sms_bodies("guarantee_request", phone=first.phone)
    assert f"guarantee KES 10,000.00 of loan {loan.loan_no}" in request
    assert f"reply YES {loan.loan_no} or NO {loan.loan_no}" in request

    _accept(asked_first, first)
    assert loan_cover(reload(loan.id)).covered == D("10000")
    with pytest.raises(LoanError, match="KES 10,000 of KES 15,000 covered, 1 of 2"):
        loan_approve(loan_id=loan.id, staff=manager)
    db.session.rollback()
    _accept(asked_second, second, via="sms")
    assert loan_cover(reload(loan.id)).complete
    assert len(sms_bodies("guarantee_accepted", phone=reload(loan.id).member.phone)) == 2

    # A pledge holds the guarantor's deposits: their own limit's base shrinks with it.
    assert member_deposits(first.id).free == D("10000")
    product = reload(loan.id).product
    assert loan_eligibility(member=first, product=product, as_of=DAY).limit == D("30000")

    loan_approve(loan_id=loan.id, staff=manager)
    loan_disburse(loan_id=loan.id, reference="B2CSEC01", value_date=DAY)
    [held] = guarantees_held(first.id)
    assert held.exposure == D("10000.00")

    # Repaid principal releases in proportion: what is owed of the principal, of the pledge.
    loan_repay(loan_id=loan.id, amount="8000", reference="REPAYSEC1", value_date=DAY)
    outstanding = receivables(reload(loan.id))["principal"]
    assert D("0") < outstanding < D("25000")
    [held] = guarantees_held(first.id)
    assert held.exposure == (D("10000") * outstanding / D("25000")).quantize(D("0.01"))
    assert member_deposits(first.id).free == D("20000") - held.exposure

    # Paid off: the loan closes and every pledge is released, in the same transaction.
    loan_repay(loan_id=loan.id, amount="30000", reference="REPAYSEC2", value_date=DAY)
    assert reload(loan.id).status == "closed"
    statuses = db.session.scalars(
        select(Guarantee.status).where(Guarantee.loan_id == loan.id)
    ).all()
    assert statuses == ["released", "released"]
    assert guarantees_held(first.id) == []
    assert member_deposits(first.id).free == D("20000")


def test_a_guarantor_pledges_free_deposits_only_and_is_told_why_not(app: Flask) -> None:
    product_id = _secured(min_guarantors=1)
    guarantor = make_borrower(savings=10000)
    one, two = _apply(product_id), _apply(product_id)
    first, second = _ask(one, guarantor, 8000), _ask(two, guarantor, 8000)

    _accept(first, guarantor)
    with pytest.raises(
        GuaranteeError, match="free deposits are KES 2,000, less than the KES 8,000"
    ):
        _accept(second, guarantor)
    assert db.session.get(Guarantee, second.id).status == "requested"  # still answerable

    # Savings that secure a loan stay: only the free part moves to shares.
    with pytest.raises(MemberError, match="only KES 2,000.00 of the savings is free"):
        member_buy_shares(
            member_id=guarantor.id, amount="2000.01", reference="SH-HELD", value_date=DAY
        )
    member_buy_shares(member_id=guarantor.id, amount="2000", reference="SH-FREE", value_date=DAY)
    assert member_deposits(guarantor.id).free == D("0")

    guarantee_decline(guarantee_id=second.id, guarantor_id=guarantor.id, via="sms", today=DAY)
    declined = db.session.get(Guarantee, second.id)
    assert (declined.status, declined.answered_via) == ("declined", "sms")
    assert declined.answered_at is not None and declined.ended_at == declined.answered_at
    assert len(sms_bodies("guarantee_declined", phone=two.member.phone)) == 1
    with pytest.raises(GuaranteeError, match="was declined already"):
        _accept(second, guarantor)


def test_ending_an_application_cancels_its_requests_and_releases_its_pledges(
    app: Flask,
) -> None:
    product_id = _secured()
    loan, other_loan = _apply(product_id), _apply(product_id)
    accepting, waiting = make_borrower(savings=20000), make_borrower(savings=20000)
    released = _ask(loan, accepting, 10000).id
    _accept(released, accepting)
    cancelled = _ask(loan, waiting, 5000).id
    kept = _ask(other_loan, accepting, 4000).id
    _accept(kept, accepting)
    also_kept = _ask(other_loan, waiting, 3000).id
    assert member_deposits(accepting.id).free == D("6000")

    manager = make_staff("branch_manager")
    loan_reject(loan_id=loan.id, staff=manager, reason="incomplete file")
    rows = db.session.execute(
        select(Guarantee.guarantor_id, Guarantee.status).where(Guarantee.loan_id == loan.id)
    ).all()
    assert dict(rows) == {accepting.id: "released", waiting.id: "cancelled"}
    assert all(db.session.get(Guarantee, gid).ended_at for gid in (released, cancelled))
    # Another loan's pledge by the same guarantor is not this loan's to end.
    assert db.session.get(Guarantee, kept).status == "accepted"
    assert db.session.get(Guarantee, also_kept).status == "requested"
    assert member_deposits(accepting.id).free == D("16000")
    audits = db.session.scalars(
        select(AuditLog)
        .where(AuditLog.action.in_(("guarantee.release", "guarantee.cancel")))
        .order_by(AuditLog.id)
    ).all()
    assert [(a.action, a.actor, a.object_type, a.object_id, a.before, a.after) for a in audits] == [
        (
            "guarantee.release",
            f"staff:{manager.email}",
            "loan",
            loan.loan_no,
            {"guarantee": released, "status": "accepted"},
            {"status": "released", "loan_status": "rejected"},
        ),
        (
            "guarantee.cancel",
            f"staff:{manager.email}",
            "loan",
            loan.loan_no,
            {"guarantee": cancelled, "status": "requested"},
            {"status": "cancelled", "loan_status": "rejected"},
        ),
    ]
    # What it ends it counts; a loan with nothing left to end changes nothing.
    assert guarantees_end(reload(other_loan.id), "staff:test") == 2
    assert guarantees_end(reload(other_loan.id), "staff:test") == 0
    db.session.rollback()


def test_requests_are_refused_in_words(app: Flask) -> None:
    loan = _apply(_secured())
    other = make_borrower(savings=1000)
    with pytest.raises(GuaranteeError, match="cannot guarantee their own loan"):
        _ask(loan, loan.member, 1000)
    with pytest.raises(GuaranteeError, match="must be more than zero"):
        _ask(loan, other, 0)
    with pytest.raises(GuaranteeError, match="cannot be more than the loan"):
        _ask(loan, other, 25001)
    _ask(loan, other, 1000)
    with pytest.raises(GuaranteeError, match="has already been asked"):
        _ask(loan, other, 500)
    instant = make_product("V1", code="INS", name="Instant")
    plain = _apply(instant.id, amount=5000)
    with pytest.raises(GuaranteeError, match="Instant loans need no guarantors"):
        _ask(plain, other, 1000)
    assert db.session.scalar(select(Guarantee.id).where(Guarantee.loan_id == plain.id)) is None


def test_a_guarantor_is_found_by_member_number_or_phone_and_shown_masked(app: Flask) -> None:
    member = make_borrower(savings=1)
    member.name = "John Kamau Otieno"
    db.session.commit()
    number = int(member.member_no[1:])
    assert guarantor_find(member.member_no) == member
    assert guarantor_find(str(number)) == member
    assert guarantor_find("0" + member.phone[3:]) == member
    assert guarantor_find(" m" + member.member_no[1:] + " ") == member  # as typed on a phone
    assert guarantor_find("M999999") is None
    assert guarantor_find("not a phone") is None
    assert guarantor_find("") is None
    assert mask_name(member.name) == "J*** K*** O***"
    # Only an active member may guarantee: not a suspended one, by number or phone.
    member.status = "suspended"
    db.session.commit()
    assert guarantor_find(member.member_no) is None
    assert guarantor_find("0" + member.phone[3:]) is None


# -- races (PostgreSQL: row locks wait) ------------------------------------------------------


def _hold_member(app: Flask, member_id: int) -> tuple[Worker, threading.Event, threading.Event]:
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        db.session.execute(
            text("SELECT id FROM members WHERE id = :id FOR UPDATE"), {"id": member_id}
        )
        locked.set()
        release.wait(20)
        db.session.commit()

    holder = Worker(app, hold)
    holder.start()
    assert locked.wait(20)
    return holder, locked, release


def test_two_loans_asking_the_same_last_shillings_at_once_get_them_once(
    app: Flask, pg: None
) -> None:
    product_id = _secured(min_guarantors=1)
    guarantor = make_borrower(savings=10000)
    one, two = _apply(product_id), _apply(product_id)
    asks = [_ask(one, guarantor, 8000).id, _ask(two, guarantor, 8000).id]
    guarantor_id = guarantor.id
    db.session.remove()

    holder, _, release = _hold_member(app, guarantor_id)
    racers = [
        Worker(
            app,
            lambda gid=gid: (
                guarantee_accept(
                    guarantee_id=gid, guarantor_id=guarantor_id, via="ussd", today=DAY
                ).status
            ),
        )
        for gid in asks
    ]
    for racer in racers:
        racer.start()
    wait_until_blocked(2)  # both acceptances wait on the guarantor's lock
    release.set()
    holder.outcome()
    outcomes = []
    for racer in racers:
        try:
            outcomes.append(racer.outcome())
        except GuaranteeError as exc:
            outcomes.append(str(exc))
    assert sorted(outcomes, key=len) == [
        "accepted",
        "your free deposits are KES 2,000, less than the KES 8,000 asked",
    ]
    statuses = db.session.scalars(select(Guarantee.status).where(Guarantee.id.in_(asks))).all()
    assert sorted(statuses) == ["accepted", "requested"]
    assert member_deposits(guarantor_id).free == D("2000")


def test_a_transfer_out_of_savings_racing_an_acceptance_cannot_take_the_pledged_shilling(
    app: Flask, pg: None
) -> None:
    loan = _apply(_secured(min_guarantors=1))
    guarantor = make_borrower(savings=10000)
    ask = _ask(loan, guarantor, 8000).id
    guarantor_id = guarantor.id
    db.session.remove()

    holder, _, release = _hold_member(app, guarantor_id)
    accept = Worker(
        app,
        lambda: (
            guarantee_accept(
                guarantee_id=ask, guarantor_id=guarantor_id, via="ussd", today=DAY
            ).status
        ),
    )
    transfer = Worker(
        app,
        lambda: member_buy_shares(
            member_id=guarantor_id, amount="5000", reference="SH-RACE", value_date=DAY
        ),
    )
    accept.start()
    wait_until_blocked(1)
    transfer.start()
    wait_until_blocked(2)
    release.set()
    holder.outcome()
    assert accept.outcome() == "accepted"  # first to the lock
    with pytest.raises(MemberError, match="only KES 2,000.00 of the savings is free"):
        transfer.outcome()
    assert member_deposits(guarantor_id).deposits == D("10000")


@pytest.mark.books_may_disagree
def test_the_reconciliation_finds_holds_beyond_deposits_and_pledges_left_on_ended_loans(
    app: Flask,
) -> None:
    loan = _apply(_secured(min_guarantors=1))
    guarantor = make_borrower(savings=3000)
    pledge = _accept(_ask(loan, guarantor, 3000), guarantor)
    assert ledger_check() == []

    # Written behind the services' back: more pledged than the deposits hold...
    db.session.execute(
        text("UPDATE guarantees SET amount = :a WHERE id = :g").bindparams(
            bindparam("a", type_=Money())
        ),
        {"a": D("3000.01"), "g": pledge.id},
    )
    # ...and a loan ended while its pledge stays.
    db.session.execute(text("UPDATE loans SET status = 'withdrawn' WHERE id = :l"), {"l": loan.id})
    db.session.commit()
    problems = [(p.what, p.detail) for p in ledger_check()]
    assert problems == [
        (
            "hold",
            f"guarantee {pledge.id} of {loan.loan_no} is still accepted; the loan is withdrawn",
        )
    ]
    db.session.execute(text("UPDATE loans SET status = 'submitted' WHERE id = :l"), {"l": loan.id})
    db.session.commit()
    assert [(p.what, p.detail) for p in ledger_check()] == [
        ("hold", f"member {guarantor.id}: guarantees hold 3000.01, deposits are 3000.00")
    ]


def test_savings_pledged_to_another_loan_cannot_repay_the_guarantors_own_loan(
    app: Flask,
) -> None:
    guarantor = make_borrower(savings=10000)
    instant = make_product("V1", code="INS", name="Instant")
    own = loan_apply(member_id=guarantor.id, product_id=instant.id, amount=5000, as_of=DAY)
    loan_approve(loan_id=own.id, staff=make_staff("branch_manager"))
    loan_disburse(loan_id=own.id, reference="B2COWN1", value_date=DAY)
    asked = _apply(_secured(min_guarantors=1))
    _accept(_ask(asked, guarantor, 7000), guarantor)

    # Just over what is free, and every shilling of the deposits: both refused for the
    # pledge, in words that say why.
    for amount in ("3000.01", "10000"):
        with pytest.raises(
            LoanError,
            match=r"^only KES 3,000\.00 of the savings is free: the rest secures loans the "
            r"member guarantees$",
        ):
            loan_repay(
                loan_id=own.id, amount=amount, reference="OWNSAV1", value_date=DAY, source="savings"
            )
        db.session.rollback()
    assert receivables(reload(own.id))["principal"] == D("5000.00")
    loan_repay(loan_id=own.id, amount="3000", reference="OWNSAV2", value_date=DAY, source="savings")
    assert member_deposits(guarantor.id).deposits == D("7000.00")
    assert member_deposits(guarantor.id).free == D("0.00")
