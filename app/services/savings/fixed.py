"""Fixed deposits and target savings (SPEC "The cooperative's own money": locked until a
date or amount).

A fixed deposit is opened from the member's withdrawable savings into an account of its
own, at the product's rate and term. At maturity the nightly `fixed-deposit-maturity` job
pays simple interest for the days held, net of withholding tax, and either returns sum and
interest to savings or rolls both into a new term; broken early, the deposit earns the
rate less the product's penalty (a share of the interest forfeited). Each payment is keyed
by the deposit and its maturity date, so a rerun pays nothing twice.

A target account holds savings the member locks until a date, an amount, or whichever
comes first; once reached, `target_release` moves all of it to their withdrawable savings.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import func, select

from app.batch import Batch, ChunkStats, batch_run
from app.errors import SaccoError
from app.extensions import db
from app.models import Account, FixedDeposit, Member, SavingsTarget
from app.money import ZERO, MoneyError, money_input, round_money
from app.services.audit import audit_record
from app.services.ledger import account_get_or_create, credit, debit, gl_account, journal_post
from app.services.locking import lock_row
from app.services.savings.products import account_product, member_product_account

HUNDRED = Decimal(100)
DAYS_A_YEAR = Decimal(365)


class TermSavingsError(SaccoError):
    """A fixed deposit or target that cannot be opened, broken or released now."""


def add_months(day: date, months: int) -> date:
    """The same day `months` later, or that month's last day (31 Jan + 1 = 28/29 Feb)."""
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    return day.replace(
        year=year, month=month, day=min(day.day, calendar.monthrange(year, month)[1])
    )


def simple_interest(principal: Decimal, rate: Decimal, start: date, end: date) -> Decimal:
    """Interest on `principal` at `rate` percent a year for the days from start to end."""
    days = max((end - start).days, 0)
    return round_money(principal * rate / HUNDRED * days / DAYS_A_YEAR)


def _wht(gross: Decimal) -> Decimal:
    return round_money(gross * current_app.config["SETTINGS"].wht_interest_rate / HUNDRED)


def _free_savings(member: Member) -> tuple[Account, Decimal]:
    """The member's withdrawable savings account and what may leave it (above the minimum)."""
    product = account_product("ORD")
    account = member_product_account(member, product)
    return account, max(ZERO, account.display_balance - product.min_balance)


def _amount(amount: object) -> Decimal:
    try:
        value = money_input(amount)
    except MoneyError as exc:
        raise TermSavingsError(str(exc)) from None
    return value


def fixed_deposit_open(
    *,
    member_id: int,
    amount: object,
    actor: str,
    today: date,
    on_maturity: str = "savings",
    product_code: str = "FIX",
) -> FixedDeposit:
    """Move `amount` from the member's savings into a new fixed deposit (member's lock)."""
    value = _amount(amount)
    if on_maturity not in ("savings", "rollover"):
        raise TermSavingsError("at maturity the deposit goes to savings or rolls over")
    product = account_product(product_code)
    if product.kind != "fixed" or not product.active or not product.term_months:
        raise TermSavingsError(f"{product.name} does not take fixed deposits now")
    member = lock_row(Member, member_id)
    if member is None or member.status != "active":
        db.session.rollback()
        raise TermSavingsError(f"no active member {member_id}")
    source, free = _free_savings(member)
    if value > free:
        db.session.rollback()
        raise TermSavingsError(f"only KES {free:,.2f} of the savings is free to deposit")
    # Numbered per member under their lock: FIX-M000123-1, -2, ...
    count = db.session.scalar(
        select(func.count(FixedDeposit.id)).where(FixedDeposit.member_id == member.id)
    )
    number = (count or 0) + 1
    account = account_get_or_create(
        code=f"{product.code}-{member.member_no}-{number}",
        kind=product.ledger_kind,
        name=f"{product.name} {member.member_no}-{number}",
        member_id=member.id,
    )
    account.product_id = product.id
    deposit = FixedDeposit(
        account_id=account.id,
        member_id=member.id,
        product_id=product.id,
        principal=value,
        rate=product.interest_rate,
        start_on=today,
        maturity_on=add_months(today, product.term_months),
        on_maturity=on_maturity,
        opened_by=actor,
    )
    db.session.add(deposit)
    db.session.flush()
    journal_post(
        kind="fixed_deposit",
        lines=[debit(source, value), credit(account, value)],
        value_date=today,
        description=f"Fixed deposit {account.code} for {product.term_months} months",
        idempotency_key=f"fixed-open:{deposit.id}",
        actor=actor,
        member_id=member.id,
    )
    audit_record(
        actor=actor,
        action="fixed_deposit.open",
        object_type="member",
        object_id=member.member_no,
        after={
            "deposit": deposit.id,
            "amount": str(value),
            "rate": str(deposit.rate),
            "maturity_on": deposit.maturity_on.isoformat(),
            "on_maturity": on_maturity,
        },
    )
    db.session.commit()
    return deposit


def _pay_interest(
    deposit: FixedDeposit, account: Account, gross: Decimal, on: date, key: str
) -> Decimal:
    """Credit the deposit's account with its interest net of tax; the net."""
    tax = _wht(gross)
    if gross <= 0:
        return ZERO
    lines = [debit(gl_account("GL-INTEREST-EXPENSE"), gross), credit(account, gross - tax)]
    if tax > 0:
        lines.append(credit(gl_account("GL-WHT-PAYABLE"), tax))
    journal_post(
        kind="fixed_deposit_interest",
        lines=lines,
        value_date=on,
        description=f"Interest on {account.code} to {on.isoformat()}, net of withholding tax",
        idempotency_key=key,
        member_id=deposit.member_id,
    )
    deposit.interest_paid += gross - tax
    return gross - tax


def _to_savings(deposit: FixedDeposit, account: Account, on: date, key: str, actor: str) -> Decimal:
    """Everything in the deposit's account back to the member's savings; the amount."""
    member = db.session.get(Member, deposit.member_id)
    assert member is not None
    savings = member_product_account(member, account_product("ORD"))
    amount = account.display_balance
    if amount > 0:
        journal_post(
            kind="fixed_deposit_return",
            lines=[debit(account, amount), credit(savings, amount)],
            value_date=on,
            description=f"{account.code} back to savings",
            idempotency_key=key,
            actor=actor,
            member_id=member.id,
        )
    return amount


def fixed_deposit_mature(deposit_id: int, *, as_of: date) -> str | None:
    """Pay a deposit that has matured by `as_of` (caller's transaction; member's lock).
    What happened ("matured", "rolled over"), or None when nothing was due."""
    found = db.session.get(FixedDeposit, deposit_id)
    if found is None:
        return None
    lock_row(Member, found.member_id)
    deposit = lock_row(FixedDeposit, deposit_id)
    assert deposit is not None
    if deposit.status != "active" or deposit.maturity_on > as_of:
        return None  # not due, or paid by another run meanwhile
    account = lock_row(Account, deposit.account_id)
    assert account is not None
    due = deposit.maturity_on
    gross = simple_interest(deposit.principal, deposit.rate, deposit.start_on, due)
    net = _pay_interest(deposit, account, gross, due, f"fixed-interest:{deposit.id}:{due}")
    if deposit.on_maturity == "rollover":
        # The new term runs at the product's terms of the day, as a new deposit would.
        product = account.product
        months = (product.term_months if product is not None else None) or 12
        if product is not None:
            deposit.rate = product.interest_rate
        deposit.principal += net
        deposit.start_on = due
        deposit.maturity_on = add_months(due, months)
        deposit.terms_run += 1
        return "rolled over"
    _to_savings(deposit, account, due, f"fixed-return:{deposit.id}", "fixed-deposit-maturity")
    deposit.status = "matured"
    deposit.closed_on = due
    return "matured"


def fixed_deposit_break(*, deposit_id: int, actor: str, today: date) -> FixedDeposit:
    """Close a deposit before it matures: interest for the days held at the rate less the
    product's penalty, then everything to savings."""
    found = db.session.get(FixedDeposit, deposit_id)
    if found is None:
        raise TermSavingsError(f"no fixed deposit {deposit_id}")
    lock_row(Member, found.member_id)
    deposit = lock_row(FixedDeposit, deposit_id)
    assert deposit is not None
    if deposit.status != "active":
        db.session.rollback()
        raise TermSavingsError(f"the fixed deposit is {deposit.status} already")
    if today >= deposit.maturity_on:
        db.session.rollback()
        raise TermSavingsError("the deposit has matured: it is paid in full tonight")
    account = lock_row(Account, deposit.account_id)
    assert account is not None
    penalty = account.product.break_penalty if account.product is not None else HUNDRED
    rate = deposit.rate * (HUNDRED - penalty) / HUNDRED
    gross = simple_interest(deposit.principal, rate, deposit.start_on, today)
    _pay_interest(deposit, account, gross, today, f"fixed-interest:{deposit.id}:{today}")
    _to_savings(deposit, account, today, f"fixed-return:{deposit.id}", actor)
    deposit.status = "broken"
    deposit.closed_on = today
    audit_record(
        actor=actor,
        action="fixed_deposit.break",
        object_type="fixed_deposit",
        object_id=deposit.id,
        before={"status": "active", "maturity_on": deposit.maturity_on.isoformat()},
        after={"status": "broken", "interest": str(gross), "penalty_percent": str(penalty)},
    )
    db.session.commit()
    return deposit


def fixed_deposits_maturing(as_of: date) -> list[int]:
    return list(
        db.session.scalars(
            select(FixedDeposit.id)
            .where(FixedDeposit.status == "active", FixedDeposit.maturity_on <= as_of)
            .order_by(FixedDeposit.id)
        )
    )


def _maturity_chunk(deposit_ids: Sequence[int], as_of: date, stats: ChunkStats) -> None:
    members = sorted(
        set(
            db.session.scalars(
                select(FixedDeposit.member_id).where(FixedDeposit.id.in_(list(deposit_ids)))
            )
        )
    )
    for member_id in members:  # members in id order first, as every money path
        lock_row(Member, member_id)
    for deposit_id in deposit_ids:
        if fixed_deposit_mature(deposit_id, as_of=as_of) is not None:
            stats.records_updated += 1


FIXED_MATURITY = Batch(
    "fixed-deposit-maturity", fixed_deposits_maturing, _maturity_chunk, "fixed deposit"
)


# `stats` is the runner's JobStats (workers.runner): app/ never imports workers/.
def fixed_deposit_maturity_job(*, as_of: date, stats: Any) -> None:
    """Deposits matured by `as_of`: interest paid, then back to savings or rolled over.
    records_scanned counts the deposits found, records_updated those paid."""
    batch_run(FIXED_MATURITY, as_of=as_of, stats=stats)


# -- target savings -----------------------------------------------------------------------


def target_set(
    *,
    member_id: int,
    name: str,
    actor: str,
    goal_amount: object | None = None,
    unlock_on: date | None = None,
    today: date,
) -> SavingsTarget:
    """Lock the member's target account (opened if new) until a date or an amount."""
    name = name.strip()[:40]
    if not name:
        raise TermSavingsError("name the target (school fees, a holiday, ...)")
    goal = _amount(goal_amount) if goal_amount not in (None, "") else None
    if goal is None and unlock_on is None:
        raise TermSavingsError("a target needs a date, an amount, or both")
    if unlock_on is not None and unlock_on <= today:
        raise TermSavingsError("the unlock date must be after today")
    member = lock_row(Member, member_id)
    if member is None or member.status != "active":
        db.session.rollback()
        raise TermSavingsError(f"no active member {member_id}")
    account = member_product_account(member, account_product("TGT"))
    current = db.session.scalar(
        select(SavingsTarget).where(
            SavingsTarget.account_id == account.id, SavingsTarget.status == "active"
        )
    )
    if current is not None:
        db.session.rollback()
        raise TermSavingsError(f"the target {current.name!r} is running: release it first")
    db.session.flush()
    target = SavingsTarget(
        account_id=account.id,
        member_id=member.id,
        name=name,
        goal_amount=goal,
        unlock_on=unlock_on,
        created_by=actor,
    )
    db.session.add(target)
    db.session.flush()
    audit_record(
        actor=actor,
        action="savings_target.set",
        object_type="member",
        object_id=member.member_no,
        after={"target": target.id, "name": name, "goal": str(goal), "unlock_on": str(unlock_on)},
    )
    db.session.commit()
    return target


def target_reached(target: SavingsTarget, balance: Decimal, today: date) -> bool:
    return (target.unlock_on is not None and today >= target.unlock_on) or (
        target.goal_amount is not None and balance >= target.goal_amount
    )


def target_release(*, target_id: int, actor: str, today: date) -> Decimal:
    """Move a reached target's whole balance to the member's savings; the amount moved."""
    found = db.session.get(SavingsTarget, target_id)
    if found is None:
        raise TermSavingsError(f"no target {target_id}")
    member = lock_row(Member, found.member_id)
    target = lock_row(SavingsTarget, target_id)
    assert member is not None and target is not None
    if target.status != "active":
        db.session.rollback()
        raise TermSavingsError(f"the target is {target.status} already")
    account = lock_row(Account, target.account_id)
    assert account is not None
    balance = account.display_balance
    if not target_reached(target, balance, today):
        db.session.rollback()
        words = []
        if target.unlock_on is not None:
            words.append(f"until {target.unlock_on:%d %b %Y}")
        if target.goal_amount is not None:
            words.append(f"until it holds KES {target.goal_amount:,.2f}")
        raise TermSavingsError(f"{target.name} is locked {' or '.join(words)}")
    savings = member_product_account(member, account_product("ORD"))
    if balance > 0:
        journal_post(
            kind="target_release",
            lines=[debit(account, balance), credit(savings, balance)],
            value_date=today,
            description=f"Target {target.name} released to savings",
            idempotency_key=f"target-release:{target.id}",
            actor=actor,
            member_id=member.id,
        )
    target.status = "released"
    target.released_on = today
    audit_record(
        actor=actor,
        action="savings_target.release",
        object_type="savings_target",
        object_id=target.id,
        before={"status": "active"},
        after={"status": "released", "amount": str(balance)},
    )
    db.session.commit()
    return balance
