"""Fixed deposits and target savings in the console: the member page's block lists the
member's fixed deposits (principal, rate, term, status, interest paid) and their target
(name, goal, unlock date, balance), with the forms to open or break a deposit and to set
or release a target.

The services in app/services/savings/fixed.py check no role (the nightly job and the
member's own channels call them too), so the role is checked here: every form checks its
CSRF token, then "term_savings.manage" (403 and an audit row when the role may not), then
calls one service, which guards the money under the member's lock and writes the audit
row; a refusal is rolled back and told in words on the member's page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from flask import flash, redirect, request, url_for
from flask_admin import Admin, BaseView, expose
from sqlalchemy import case, select
from werkzeug.wrappers import Response

from admin.auth import SecureMixin, actor, form_post
from app.clock import business_today
from app.extensions import db
from app.models import Account, AccountProduct, FixedDeposit, SavingsTarget
from app.money import ZERO
from app.services.savings.fixed import (
    TermSavingsError,
    fixed_deposit_break,
    fixed_deposit_open,
    target_reached,
    target_release,
    target_set,
)

MANAGE = "term_savings.manage"
ON_MATURITY_WORDS = {"savings": "goes back to savings", "rollover": "rolls over"}


@dataclass(frozen=True)
class DepositRow:
    deposit: FixedDeposit
    code: str  # its own ledger account, FIX-M000123-1
    balance: Decimal


@dataclass(frozen=True)
class TargetRow:
    target: SavingsTarget
    balance: Decimal
    reached: bool  # may be released today


@dataclass(frozen=True)
class MemberTermSavings:
    deposits: list[DepositRow]
    target: TargetRow | None  # the running one
    released: SavingsTarget | None  # the last released, when none runs
    fixed_terms: AccountProduct | None  # the rate and term a new deposit gets


def member_term_savings(member_id: int) -> MemberTermSavings:
    """The member page's block; reads only (no product or account is opened by a page)."""
    deposits = db.session.execute(
        select(FixedDeposit, Account)
        .join(Account, Account.id == FixedDeposit.account_id)
        .where(FixedDeposit.member_id == member_id)
        .order_by(case((FixedDeposit.status == "active", 0), else_=1), FixedDeposit.id.desc())
    ).all()
    targets = db.session.execute(
        select(SavingsTarget, Account)
        .join(Account, Account.id == SavingsTarget.account_id)
        .where(SavingsTarget.member_id == member_id)
        .order_by(SavingsTarget.id.desc())
    ).all()
    running = next(((t, a) for t, a in targets if t.status == "active"), None)
    today = business_today()
    return MemberTermSavings(
        deposits=[DepositRow(d, a.code, a.display_balance) for d, a in deposits],
        target=(
            TargetRow(
                running[0],
                running[1].display_balance,
                target_reached(running[0], running[1].display_balance, today),
            )
            if running is not None
            else None
        ),
        released=targets[0][0] if targets and running is None else None,
        fixed_terms=db.session.scalar(
            select(AccountProduct).where(
                AccountProduct.code == "FIX", AccountProduct.active.is_(True)
            )
        ),
    )


def _unlock_on(raw: str | None) -> date | None:
    text = (raw or "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise TermSavingsError("the unlock date must be a date (YYYY-MM-DD)") from None


class TermSavingsView(SecureMixin, BaseView):
    """Reached from the member page only; every form needs term_savings.manage."""

    permission = "view"

    def is_visible(self) -> bool:
        return False

    def _post(self, member_id: int | None, act: Callable[[], str]) -> Any:
        """CSRF, then the role, then the service; back to the member's page either way."""
        if member_id is None:
            flash("Not found.", "error")
            return redirect(url_for("member.index_view"))
        back = url_for("member.details_view", id=member_id) + "#term-savings"
        return form_post(self, MANAGE, back, act)

    @expose("/")
    def index(self) -> Response:
        return redirect(url_for("member.index_view"))

    @expose("/member/<int:member_id>/fixed", methods=("POST",))
    def open_fixed(self, member_id: int) -> Response | Any:
        def act() -> str:
            deposit = fixed_deposit_open(
                member_id=member_id,
                amount=(request.form.get("amount") or "").strip(),
                actor=actor(),
                today=business_today(),
                on_maturity=request.form.get("on_maturity", ""),
            )
            return (
                f"Fixed deposit of KES {deposit.principal:,.2f} opened from savings at "
                f"{deposit.rate.normalize():f}% a year; it matures on "
                f"{deposit.maturity_on:%d %b %Y} and then {ON_MATURITY_WORDS[deposit.on_maturity]}."
            )

        return self._post(member_id, act)

    @expose("/fixed/<int:deposit_id>/break", methods=("POST",))
    def break_fixed(self, deposit_id: int) -> Response | Any:
        found = db.session.get(FixedDeposit, deposit_id)
        # interest_paid counts every term; a rolled-over term's is in the principal already,
        # so the break's own interest is what it adds.
        paid_before = found.interest_paid if found else ZERO

        def act() -> str:
            deposit = fixed_deposit_break(
                deposit_id=deposit_id, actor=actor(), today=business_today()
            )
            return (
                f"The fixed deposit is broken: KES {deposit.principal:,.2f} and "
                f"KES {deposit.interest_paid - paid_before:,.2f} interest (less the penalty, "
                "net of tax) are back in savings."
            )

        return self._post(found.member_id if found else None, act)

    @expose("/member/<int:member_id>/target", methods=("POST",))
    def set_target(self, member_id: int) -> Response | Any:
        def act() -> str:
            target = target_set(
                member_id=member_id,
                name=request.form.get("name", ""),
                actor=actor(),
                goal_amount=(request.form.get("goal_amount") or "").strip() or None,
                unlock_on=_unlock_on(request.form.get("unlock_on")),
                today=business_today(),
            )
            until = []
            if target.unlock_on is not None:
                until.append(f"{target.unlock_on:%d %b %Y}")
            if target.goal_amount is not None:
                until.append(f"it holds KES {target.goal_amount:,.2f}")
            return (
                f"Target {target.name!r} is set: its savings are locked until {' or '.join(until)}."
            )

        return self._post(member_id, act)

    @expose("/target/<int:target_id>/release", methods=("POST",))
    def release_target(self, target_id: int) -> Response | Any:
        found = db.session.get(SavingsTarget, target_id)

        def act() -> str:
            moved = target_release(target_id=target_id, actor=actor(), today=business_today())
            if moved > ZERO:
                return f"The target is released: KES {moved:,.2f} moved to savings."
            return "The target is released; it held nothing."

        return self._post(found.member_id if found else None, act)


def register(console: Admin) -> None:
    app: Any = console.app
    if app is not None:
        # The member page's block (admin_sacco/term_savings_member_block.html).
        app.add_template_global(member_term_savings, "member_term_savings")
    console.add_view(
        TermSavingsView(
            name="Fixed deposits and targets", endpoint="term_savings", url="term-savings"
        )
    )
