"""Fixed deposits (opened from savings, paid at maturity or rolled over, broken early at a
penalty) and target savings (locked until a date or an amount)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from flask import Flask
from sqlalchemy import func, select

from app.extensions import db
from app.models import (
    Account,
    AuditLog,
    FixedDeposit,
    JobRun,
    JournalEntry,
    Member,
    SavingsTarget,
)
from app.services.ledger import credit, debit, gl_account, journal_post
from app.services.payments.c2b import c2b_validate
from app.services.savings import account_product, member_product_account
from app.services.savings.fixed import (
    TermSavingsError,
    add_months,
    fixed_deposit_break,
    fixed_deposit_mature,
    fixed_deposit_open,
    target_release,
    target_set,
)
from app.services.savings.products import ProductError, product_update
from tests.factories import make_member
from tests.helpers import Worker, assert_not_held, row_locked, wait_until_blocked
from workers.schedule import run_job

OPENED = date(2025, 1, 31)  # jobs never run for a day after today


def _save(member: Member, amount: str, product: str = "ORD", ref: str = "S") -> None:
    journal_post(
        kind="deposit",
        lines=[
            debit(gl_account("GL-MPESA-CLEARING"), Decimal(amount)),
            credit(member_product_account(member, account_product(product)), Decimal(amount)),
        ],
        value_date=date(2025, 1, 2),
        idempotency_key=f"deposit:{ref}-{member.id}",
        member_id=member.id,
    )
    db.session.commit()


def _balance(member_id: int, code: str = "ORD") -> Decimal:
    member = db.session.get(Member, member_id)
    return member_product_account(member, account_product(code)).display_balance


def _entries() -> int:
    return db.session.scalar(select(func.count()).select_from(JournalEntry))


def _by_hand(
    principal: str, rate: str, days: int, tax_percent: str = "15"
) -> tuple[Decimal, Decimal]:
    """Simple interest for `days`, and its withholding tax, written out plainly."""
    cent = Decimal("0.01")
    gross = (Decimal(principal) * Decimal(rate) / 100 * days / 365).quantize(cent, ROUND_HALF_UP)
    tax = (gross * Decimal(tax_percent) / 100).quantize(cent, ROUND_HALF_UP)
    return gross, tax


def test_months_are_added_to_the_same_day_or_the_month_end() -> None:
    assert add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert add_months(date(2026, 11, 15), 3) == date(2027, 2, 15)
    assert add_months(date(2028, 1, 31), 1) == date(2028, 2, 29)


def test_a_fixed_deposit_pays_its_interest_net_of_tax_at_maturity_and_returns_to_savings(
    app: Flask,
) -> None:
    member = make_member()
    _save(member, "60000")
    deposit = fixed_deposit_open(member_id=member.id, amount="50000", actor="x", today=OPENED)
    member_id, deposit_id = member.id, deposit.id
    assert deposit.maturity_on == date(2026, 1, 31) and deposit.rate == Decimal("8")
    assert _balance(member_id) == Decimal("10000.00")
    run_job("fixed-deposit-maturity", date(2026, 1, 30))  # the day before: nothing
    assert db.session.get(FixedDeposit, deposit_id).status == "active"
    job = db.session.scalar(select(JobRun).where(JobRun.job == "fixed-deposit-maturity"))
    assert job.records_scanned == 0
    run_job("fixed-deposit-maturity", date(2026, 2, 3))  # a late night pays it once
    run_job("fixed-deposit-maturity", date(2026, 2, 4))
    gross, tax = _by_hand("50000", "8", 365)
    assert (gross, tax) == (Decimal("4000.00"), Decimal("600.00"))
    found = db.session.get(FixedDeposit, deposit_id)
    assert (found.status, found.closed_on, found.interest_paid) == (
        "matured",
        date(2026, 1, 31),
        gross - tax,
    )
    assert _balance(member_id) == Decimal("10000.00") + Decimal("50000") + gross - tax
    account = db.session.get(Account, found.account_id)
    assert account.balance == Decimal("0.00")
    assert -gl_account("GL-WHT-PAYABLE").balance == tax


def test_a_rolled_over_deposit_starts_a_new_term_with_its_net_interest_in_it(app: Flask) -> None:
    member = make_member()
    _save(member, "20100")
    deposit_id = fixed_deposit_open(
        member_id=member.id, amount="20000", actor="x", today=OPENED, on_maturity="rollover"
    ).id
    run_job("fixed-deposit-maturity", date(2026, 1, 31))
    gross, tax = _by_hand("20000", "8", 365)
    found = db.session.get(FixedDeposit, deposit_id)
    assert (found.status, found.terms_run, found.start_on, found.maturity_on) == (
        "active",
        2,
        date(2026, 1, 31),
        date(2027, 1, 31),
    )
    assert found.principal == Decimal("20000") + gross - tax
    assert db.session.get(Account, found.account_id).display_balance == found.principal


def test_a_maturity_is_paid_once_keyed_by_the_deposit_and_counted_by_the_job(app: Flask) -> None:
    """Each payment is keyed by the deposit (the interest also by its maturity day) and
    made by the job; a deposit paid already, or broken, is not paid again however it is
    asked; the job counts the deposits it paid. (Mutation testing, issue 23.)"""
    member = make_member()
    _save(member, "30100")
    member_id = member.id
    paid = fixed_deposit_open(member_id=member_id, amount="10000", actor="x", today=OPENED).id
    rolled = fixed_deposit_open(
        member_id=member_id, amount="10000", actor="x", today=OPENED, on_maturity="rollover"
    ).id
    broken = fixed_deposit_open(member_id=member_id, amount="10000", actor="x", today=OPENED).id
    fixed_deposit_break(deposit_id=broken, actor="staff@x", today=date(2025, 7, 31))
    run_job("fixed-deposit-maturity", date(2026, 1, 31))
    job = db.session.scalar(select(JobRun).where(JobRun.job == "fixed-deposit-maturity"))
    assert (job.records_scanned, job.records_updated) == (2, 2)
    entries = {
        e.idempotency_key: (e.kind, e.actor)
        for e in db.session.scalars(
            select(JournalEntry).where(JournalEntry.kind.like("fixed_deposit_%"))
        )
    }
    due = "2026-01-31"
    assert entries[f"fixed-interest:{paid}:{due}"] == ("fixed_deposit_interest", "system")
    assert entries[f"fixed-interest:{rolled}:{due}"] == ("fixed_deposit_interest", "system")
    assert entries[f"fixed-return:{paid}"] == ("fixed_deposit_return", "fixed-deposit-maturity")
    assert entries[f"fixed-return:{broken}"] == ("fixed_deposit_return", "staff@x")
    before = (_balance(member_id), _entries())
    for deposit_id in (paid, broken):
        assert fixed_deposit_mature(deposit_id, as_of=date(2026, 2, 1)) is None
    assert fixed_deposit_mature(rolled, as_of=date(2026, 2, 1)) is None  # not due again yet
    assert (_balance(member_id), _entries()) == before


def test_a_maturity_says_what_it_did(app: Flask) -> None:
    """(Mutation testing, issue 23.)"""
    member = make_member()
    _save(member, "20100")
    back = fixed_deposit_open(member_id=member.id, amount="10000", actor="x", today=OPENED).id
    again = fixed_deposit_open(
        member_id=member.id, amount="10000", actor="x", today=OPENED, on_maturity="rollover"
    ).id
    assert fixed_deposit_mature(back, as_of=date(2026, 1, 31)) == "matured"
    assert fixed_deposit_mature(again, as_of=date(2026, 1, 31)) == "rolled over"
    assert fixed_deposit_mature(999999, as_of=date(2026, 1, 31)) is None


@pytest.mark.parametrize(("term", "months"), [(6, 6), (None, 12)])
def test_a_rollover_takes_the_product_s_terms_of_the_day(
    app: Flask, term: int | None, months: int
) -> None:
    """A new term runs at the rate and length a new deposit would get; a product whose
    term was cleared rolls over for a year. (Mutation testing, issue 23.)"""
    member = make_member()
    _save(member, "10100")
    deposit_id = fixed_deposit_open(
        member_id=member.id, amount="10000", actor="x", today=OPENED, on_maturity="rollover"
    ).id
    product = account_product("FIX")
    product_update(
        product_id=product.id, actor="staff:test", interest_rate=Decimal("10"), term_months=term
    )
    run_job("fixed-deposit-maturity", date(2026, 1, 31))
    found = db.session.get(FixedDeposit, deposit_id)
    assert (found.rate, found.start_on) == (Decimal("10"), date(2026, 1, 31))
    assert found.maturity_on == add_months(date(2026, 1, 31), months)


def test_breaking_early_earns_the_rate_less_the_penalty_for_the_days_held(app: Flask) -> None:
    member = make_member()
    _save(member, "30100")
    deposit_id = fixed_deposit_open(member_id=member.id, amount="30000", actor="x", today=OPENED).id
    member_id = member.id
    broken_on = date(2025, 7, 31)  # 181 days
    fixed_deposit_break(deposit_id=deposit_id, actor="staff@x", today=broken_on)
    gross, tax = _by_hand("30000", "4", 181)  # 8% less the 50% penalty
    assert _balance(member_id) == Decimal("30100") + gross - tax
    assert db.session.get(FixedDeposit, deposit_id).status == "broken"
    with pytest.raises(TermSavingsError, match="broken already"):
        fixed_deposit_break(deposit_id=deposit_id, actor="x", today=broken_on)
    with pytest.raises(TermSavingsError) as refused:
        fixed_deposit_break(deposit_id=999999, actor="x", today=broken_on)
    assert str(refused.value) == "no fixed deposit 999999"


def test_a_break_is_audited_keyed_and_refused_on_the_day_of_maturity(app: Flask) -> None:
    """A deposit due today is paid in full tonight, not broken; a break pays its interest
    and returns everything (even a single shilling) in entries keyed by the deposit, by
    the staff member who broke it, and is audited with the interest and penalty.
    (Mutation testing, issue 23.)"""
    member = make_member()
    _save(member, "10101")
    member_id, number = member.id, member.member_no
    deposit = fixed_deposit_open(member_id=member_id, amount="10000", actor="x", today=OPENED)
    deposit_id, maturity = deposit.id, deposit.maturity_on
    small = fixed_deposit_open(member_id=member_id, amount="1", actor="x", today=OPENED).id
    with pytest.raises(TermSavingsError) as refused:
        fixed_deposit_break(deposit_id=deposit_id, actor="staff@x", today=maturity)
    assert str(refused.value) == "the deposit has matured: it is paid in full tonight"
    broken_on = date(2025, 7, 31)  # 181 days
    fixed_deposit_break(deposit_id=deposit_id, actor="staff@x", today=broken_on)
    fixed_deposit_break(deposit_id=small, actor="staff@x", today=date(2025, 2, 1))  # earns 0
    gross, tax = _by_hand("10000", "4", 181)  # 8% less the 50% penalty
    assert _balance(member_id) == Decimal("101") + Decimal("10000") + gross - tax
    (audit,) = [
        row
        for row in db.session.scalars(
            select(AuditLog).where(AuditLog.action == "fixed_deposit.break")
        )
        if str(row.object_id) == str(deposit_id)
    ]
    assert (audit.actor, audit.object_type) == ("staff@x", "fixed_deposit")
    assert audit.before == {"status": "active", "maturity_on": maturity.isoformat()}
    penalty = str(account_product("FIX").break_penalty)
    assert audit.after == {"status": "broken", "interest": str(gross), "penalty_percent": penalty}
    entries = {
        e.idempotency_key: (e.kind, e.actor, e.member_id, e.description)
        for e in db.session.scalars(select(JournalEntry))
    }
    code = f"FIX-{number}-1"
    assert entries[f"fixed-return:{deposit_id}"] == (
        "fixed_deposit_return",
        "staff@x",
        member_id,
        f"{code} back to savings",
    )
    assert entries[f"fixed-interest:{deposit_id}:2025-07-31"][:3] == (
        "fixed_deposit_interest",
        "system",
        member_id,
    )
    assert entries[f"fixed-return:{small}"][0] == "fixed_deposit_return"


@pytest.mark.parametrize(
    ("amount", "days", "gross", "tax"),
    [("100", 30, "0.33", "0.05"), ("100", 3, "0.03", "0.00"), ("100", 0, "0", "0")],
)
def test_a_break_pays_interest_to_the_cent_even_under_a_shilling_and_none_the_same_day(
    app: Flask, amount: str, days: int, gross: str, tax: str
) -> None:
    """Interest of a few cents is paid (with its tax, or none when the tax rounds to 0);
    a deposit broken the day it opened earns nothing. (Mutation testing, issue 23.)"""
    member = make_member()
    _save(member, "200")
    member_id = member.id
    deposit_id = fixed_deposit_open(member_id=member_id, amount=amount, actor="x", today=OPENED).id
    fixed_deposit_break(deposit_id=deposit_id, actor="staff@x", today=OPENED + timedelta(days=days))
    assert _by_hand(amount, "4", days) == (Decimal(gross), Decimal(tax))
    assert _balance(member_id) == Decimal("200") + Decimal(gross) - Decimal(tax)
    interest = db.session.scalar(
        select(JournalEntry).where(JournalEntry.kind == "fixed_deposit_interest")
    )
    if Decimal(gross) == 0:
        assert interest is None
    else:
        code = db.session.get(Account, db.session.get(FixedDeposit, deposit_id).account_id).code
        on = (OPENED + timedelta(days=days)).isoformat()
        assert interest.description == f"Interest on {code} to {on}, net of withholding tax"
        assert -gl_account("GL-WHT-PAYABLE").balance == Decimal(tax)


def test_a_product_change_is_refused_in_words_for_an_unknown_product_or_field(app: Flask) -> None:
    """(Mutation testing, issue 23.)"""
    with pytest.raises(ProductError) as refused:
        product_update(product_id=999999, actor="staff:test", name="X")
    assert str(refused.value) == "no account product 999999"
    product_id = account_product("FIX").id
    with pytest.raises(ProductError) as refused:
        product_update(product_id=product_id, actor="staff:test", kind="savings", code="NEW")
    assert str(refused.value) == "cannot change code, kind"
    assert (account_product("FIX").kind, account_product("FIX").code) == ("fixed", "FIX")
    product_update(product_id=product_id, actor="staff:test", break_penalty=Decimal("40"))
    audit = db.session.scalar(select(AuditLog).where(AuditLog.action == "account_product.update"))
    assert (audit.actor, audit.object_type, audit.object_id) == (
        "staff:test",
        "account_product",
        "FIX",
    )


def test_a_deposit_or_target_is_refused_in_words_for_a_product_or_member_that_cannot(
    app: Flask,
) -> None:
    """Only an open fixed product with a term takes deposits; only an active member opens
    a deposit or a target. (Mutation testing, issue 23.)"""
    member = make_member()
    _save(member, "5000")
    member_id = member.id
    with pytest.raises(TermSavingsError) as refused:
        fixed_deposit_open(
            member_id=member_id, amount="100", actor="x", today=OPENED, product_code="ORD"
        )
    assert str(refused.value) == "Ordinary savings does not take fixed deposits now"
    fixed = account_product("FIX")
    fixed.active = False
    db.session.commit()
    with pytest.raises(TermSavingsError) as refused:
        fixed_deposit_open(member_id=member_id, amount="100", actor="x", today=OPENED)
    assert str(refused.value) == "Fixed deposit does not take fixed deposits now"
    fixed = account_product("FIX")
    fixed.active = True
    db.session.get(Member, member_id).status = "suspended"
    db.session.commit()
    with pytest.raises(TermSavingsError) as refused:
        fixed_deposit_open(member_id=member_id, amount="100", actor="x", today=OPENED)
    assert str(refused.value) == f"no active member {member_id}"
    with pytest.raises(TermSavingsError) as refused:
        target_set(member_id=member_id, name="Fees", goal_amount="10", actor="x", today=OPENED)
    assert str(refused.value) == f"no active member {member_id}"
    assert db.session.scalar(select(func.count()).select_from(FixedDeposit)) == 0
    assert db.session.scalar(select(func.count()).select_from(SavingsTarget)) == 0


def test_a_target_is_set_for_its_own_account_with_its_name_cut_and_audited(app: Flask) -> None:
    """A blank goal is no goal; a long name is cut to 40 characters; another member's
    running target does not hold this one back; the setting is audited. (Mutation
    testing, issue 23.)"""
    other = make_member()
    rent = target_set(member_id=other.id, name="Rent", goal_amount="500", actor="x", today=OPENED)
    audit = db.session.scalar(select(AuditLog).where(AuditLog.action == "savings_target.set"))
    assert audit.after["goal"] == "500.00" and audit.after["target"] == rent.id
    member = make_member()
    member_id, number = member.id, member.member_no
    target = target_set(
        member_id=member_id,
        name="  " + "A holiday at the coast with the whole family" + "  ",
        goal_amount="",
        unlock_on=date(2025, 12, 1),
        actor="member:ussd",
        today=OPENED,
    )
    assert (target.name, target.goal_amount) == ("A holiday at the coast with the whole fa", None)
    audit = db.session.scalar(
        select(AuditLog).where(
            AuditLog.action == "savings_target.set", AuditLog.object_id == number
        )
    )
    assert (audit.actor, audit.object_type) == ("member:ussd", "member")
    assert audit.after == {
        "target": target.id,
        "name": "A holiday at the coast with the whole fa",
        "goal": "None",
        "unlock_on": "2025-12-01",
    }


def test_a_deposit_s_opening_is_one_keyed_entry_and_an_audit_row(app: Flask) -> None:
    """Nothing or less is refused in words; a single shilling is a deposit; the opening
    is the member's entry, keyed by the deposit, and audited with its terms. (Mutation
    testing, issue 23.)"""
    member = make_member()
    _save(member, "5000")
    member_id, number = member.id, member.member_no
    for amount in ("0", "-5"):
        with pytest.raises(TermSavingsError) as refused:
            fixed_deposit_open(member_id=member_id, amount=amount, actor="x", today=OPENED)
        assert str(refused.value) == "amount must be more than zero"
    fixed_deposit_open(member_id=member_id, amount="1", actor="x", today=OPENED)
    deposit = fixed_deposit_open(
        member_id=member_id, amount="2000", actor="staff@x", today=OPENED, on_maturity="rollover"
    )
    entry = db.session.scalar(
        select(JournalEntry).where(JournalEntry.idempotency_key == f"fixed-open:{deposit.id}")
    )
    assert (entry.kind, entry.actor, entry.member_id, entry.description) == (
        "fixed_deposit",
        "staff@x",
        member_id,
        f"Fixed deposit FIX-{number}-2 for 12 months",
    )
    (audit,) = db.session.scalars(
        select(AuditLog).where(AuditLog.action == "fixed_deposit.open", AuditLog.actor == "staff@x")
    )
    assert (audit.object_type, audit.object_id) == ("member", number)
    assert audit.after == {
        "deposit": deposit.id,
        "amount": "2000.00",
        "rate": str(deposit.rate),
        "maturity_on": "2026-01-31",
        "on_maturity": "rollover",
    }


def test_fixed_deposits_are_refused_in_words_and_never_paid_into_by_paybill(app: Flask) -> None:
    member = make_member()
    _save(member, "1000")  # ORD keeps 100 as its minimum
    with pytest.raises(TermSavingsError, match="only KES 900.00 of the savings is free"):
        fixed_deposit_open(member_id=member.id, amount="1000", actor="x", today=OPENED)
    with pytest.raises(TermSavingsError, match="goes to savings or rolls over"):
        fixed_deposit_open(
            member_id=member.id, amount="100", actor="x", today=OPENED, on_maturity="spend"
        )
    assert db.session.scalar(select(FixedDeposit.id)) is None
    code, _ = c2b_validate({"bill_ref": f"{member.member_no}F", "amount": Decimal("500")})
    assert code != "0"  # M-PESA returns the money to the payer


def test_a_target_holds_the_money_until_its_date_or_amount_then_releases_it_all(app: Flask) -> None:
    member = make_member()
    member_id = member.id
    with pytest.raises(TermSavingsError, match="a date, an amount, or both"):
        target_set(member_id=member_id, name="Fees", actor="x", today=OPENED)
    target = target_set(
        member_id=member_id,
        name="School fees",
        goal_amount="10000",
        unlock_on=date(2025, 12, 1),
        actor="member:ussd",
        today=OPENED,
    )
    _save(db.session.get(Member, member_id), "6000", product="TGT", ref="T1")
    with pytest.raises(TermSavingsError, match="locked until 01 Dec 2025 or until it holds"):
        target_release(target_id=target.id, actor="x", today=date(2025, 6, 1))
    _save(db.session.get(Member, member_id), "4000", product="TGT", ref="T2")
    assert target_release(target_id=target.id, actor="x", today=date(2025, 6, 1)) == Decimal(
        "10000.00"
    )
    assert _balance(member_id) == Decimal("10000.00")
    assert _balance(member_id, "TGT") == Decimal("0.00")
    assert db.session.get(SavingsTarget, target.id).status == "released"
    with pytest.raises(TermSavingsError, match="released already"):
        target_release(target_id=target.id, actor="x", today=date(2025, 6, 2))
    with pytest.raises(TermSavingsError) as refused:
        target_release(target_id=999999, actor="x", today=date(2025, 6, 2))
    assert str(refused.value) == "no target 999999"
    audit = db.session.scalar(select(AuditLog).where(AuditLog.action == "savings_target.release"))
    assert (audit.actor, audit.object_type, str(audit.object_id)) == (
        "x",
        "savings_target",
        str(target.id),
    )
    assert (audit.before, audit.after) == (
        {"status": "active"},
        {"status": "released", "amount": "10000.00"},
    )
    entry = db.session.scalar(select(JournalEntry).where(JournalEntry.kind == "target_release"))
    assert (entry.idempotency_key, entry.actor, entry.member_id, entry.description) == (
        f"target-release:{target.id}",
        "x",
        member_id,
        "Target School fees released to savings",
    )
    # The next target, however small, comes back whole. (Mutation testing, issue 23.)
    small = target_set(
        member_id=member_id, name="Shoes", goal_amount="1", actor="x", today=date(2025, 6, 2)
    )
    _save(db.session.get(Member, member_id), "1", product="TGT", ref="T3")
    assert target_release(target_id=small.id, actor="x", today=date(2025, 6, 2)) == Decimal("1")
    assert _balance(member_id) == Decimal("10001.00")


def test_each_fixed_deposit_is_a_section_of_the_members_statement(app: Flask) -> None:
    from app.selectors.statements import member_statement_range

    member = make_member()
    _save(member, "10100")
    for amount in ("4000", "6000"):
        fixed_deposit_open(member_id=member.id, amount=amount, actor="x", today=OPENED)
    statement = member_statement_range(
        member_id=member.id, start=date(2025, 1, 1), end=date(2025, 2, 28)
    )
    closing = {section.title: section.closing for section in statement.sections}
    number = member.member_no
    assert closing[f"Fixed deposit FIX-{number}-1"] == Decimal("4000.00")
    assert closing[f"Fixed deposit FIX-{number}-2"] == Decimal("6000.00")
    assert closing[f"Ordinary savings {number}S"] == Decimal("100.00")


# -- races (PostgreSQL) ---------------------------------------------------------------------


def _two_members_deposits() -> tuple[int, int, int, int]:
    """(lower member id, higher member id, the higher's deposit, the lower's deposit): the
    higher member's deposit is opened first, so it has the lower deposit id."""
    low, high = make_member(), make_member()
    for member in (low, high):
        _save(member, "10000")
    first = fixed_deposit_open(member_id=high.id, amount="5000", actor="x", today=OPENED).id
    second = fixed_deposit_open(member_id=low.id, amount="5000", actor="x", today=OPENED).id
    low_id, high_id = low.id, high.id
    db.session.remove()
    return low_id, high_id, first, second


@pytest.mark.parametrize("path", ["maturity", "break"])
def test_a_maturity_or_a_break_waits_while_the_member_s_other_money_moves(
    app: Flask, pg: None, path: str
) -> None:
    """The member's lock orders every money path of one member: a deposit paid out while
    a withdrawal or a loan for the same member is being decided waits for it, then pays.
    (Mutation testing, issue 23.)"""
    member = make_member()
    _save(member, "10000")
    deposit_id = fixed_deposit_open(member_id=member.id, amount="5000", actor="x", today=OPENED).id
    member_id = member.id
    db.session.remove()

    def pay() -> str:
        if path == "break":
            return fixed_deposit_break(
                deposit_id=deposit_id, actor="staff@x", today=date(2025, 7, 31)
            ).status
        done = fixed_deposit_mature(deposit_id, as_of=date(2026, 1, 31))
        db.session.commit()
        return str(done)

    with row_locked(app, "members", member_id):
        worker = Worker(app, pay)
        worker.start()
        wait_until_blocked()
        # The member first, as every money path: while it waits, it holds none of the
        # member's rows.
        assert_not_held("fixed_deposits", deposit_id)
    assert worker.outcome() == {"break": "broken", "maturity": "matured"}[path]
    assert _balance(member_id) > Decimal("10000")  # everything back, with some interest


def test_the_maturity_job_locks_a_chunk_s_members_in_id_order(app: Flask, pg: None) -> None:
    """Whatever locks several members takes them in id order, so two lockers never
    deadlock: while the night's chunk waits for a lower member, it holds no higher one.
    The higher member's deposit comes first in the chunk. (Mutation testing, issue 23.)"""
    low, high, first, second = _two_members_deposits()

    with row_locked(app, "members", low):
        job = Worker(app, lambda: run_job("fixed-deposit-maturity", date(2026, 1, 31)))
        job.start()
        wait_until_blocked()
        assert_not_held("members", high)  # the waiting chunk holds no higher member
    assert job.outcome() == 0
    assert {db.session.get(FixedDeposit, d).status for d in (first, second)} == {"matured"}
