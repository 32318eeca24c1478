"""Withdrawals paid at the branch, in the console: the member page's form to record one
(cash or bank, from one of the member's withdrawable accounts), and the queue of those above
the approval limit, waiting for a branch manager who did not enter them, with the recent
decided ones under it.

Every form posts here, checks its CSRF token, then the role (403 and an audit row when the
role may not), then calls one service in app/services/savings/branch.py, which checks the
role again, guards the money under the member's lock and writes the audit row; a refusal
is rolled back and told in words.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from flask import request, url_for
from flask_admin import Admin, BaseView, expose
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import aliased
from werkzeug.wrappers import Response

from admin.auth import SecureMixin, _kenyan_time, form_post
from app.clock import business_today
from app.extensions import db
from app.models import Account, BranchWithdrawal, Member, StaffUser
from app.selectors.member_accounts import MemberAccount, member_accounts
from app.services.savings.branch import (
    BranchWithdrawalError,
    approval_limit,
    branch_withdrawal_decide,
    branch_withdrawal_record,
)

BADGES = {"pending": "warning", "paid": "success", "rejected": "light"}
METHOD_WORDS = {"cash": "cash", "bank": "bank transfer"}
RECENT_SHOWN = 50  # decided withdrawals under the queue
MEMBER_SHOWN = 5  # the member page's last withdrawals


@dataclass(frozen=True)
class MemberWithdrawals:
    accounts: list[MemberAccount]  # open and withdrawable: the form's account choice
    recent: list[BranchWithdrawal]
    limit: Decimal  # above it a withdrawal waits for a second person


def member_branch_withdrawals(member_id: int) -> MemberWithdrawals:
    """The member page's block: the accounts money may be paid from and the last few
    branch withdrawals."""
    recent = list(
        db.session.scalars(
            select(BranchWithdrawal)
            .where(BranchWithdrawal.member_id == member_id)
            .order_by(BranchWithdrawal.id.desc())
            .limit(MEMBER_SHOWN)
        )
    )
    return MemberWithdrawals(
        accounts=[
            a for a in member_accounts(member_id=member_id) if a.withdrawable and a.status == "open"
        ],
        recent=recent,
        limit=approval_limit(),
    )


def withdrawal_rows(*, pending: bool, limit: int | None = None) -> list[dict[str, Any]]:
    """Pending withdrawals oldest first (the queue), or decided ones newest first, each with
    its member, account and both staff named: one query."""
    maker, checker = aliased(StaffUser), aliased(StaffUser)
    query = (
        select(BranchWithdrawal, Member, Account.code, maker.email, checker.email)
        .join(Member, Member.id == BranchWithdrawal.member_id)
        .join(Account, Account.id == BranchWithdrawal.account_id)
        .join(maker, maker.id == BranchWithdrawal.requested_by_id)
        .outerjoin(checker, checker.id == BranchWithdrawal.decided_by_id)
    )
    if pending:
        query = query.where(BranchWithdrawal.status == "pending").order_by(BranchWithdrawal.id)
    else:
        query = query.where(BranchWithdrawal.status != "pending").order_by(
            BranchWithdrawal.id.desc()
        )
    if limit is not None:
        query = query.limit(limit)
    return [
        {"w": w, "member": member, "account": code, "maker": made, "checker": decided}
        for w, member, code, made, decided in db.session.execute(query).all()
    ]


def _staff() -> Any:
    return current_user._get_current_object()


def _account_id(raw: str | None) -> int:
    text = (raw or "").strip()
    if not text.isdigit():
        raise BranchWithdrawalError("choose the account the money comes from")
    return int(text)


class BranchWithdrawalView(SecureMixin, BaseView):
    """Every role reads the queue; recording and deciding need their own permission."""

    permission = "view"

    def _post(self, needs: str, back: str, act: Callable[[], str]) -> Any:
        return form_post(self, needs, back, act)

    @expose("/")
    def index(self) -> str:
        return self.render(
            "admin_sacco/branch_withdrawals.html",
            pending=withdrawal_rows(pending=True),
            recent=withdrawal_rows(pending=False, limit=RECENT_SHOWN),
            limit=approval_limit(),
            badges=BADGES,
            methods=METHOD_WORDS,
            me=current_user.id,
            when=lambda moment: _kenyan_time(None, moment, "") if moment else "",
        )

    @expose("/member/<int:member_id>/new", methods=("POST",))
    def new(self, member_id: int) -> Response | Any:
        def act() -> str:
            row = branch_withdrawal_record(
                member_id=member_id,
                account_id=_account_id(request.form.get("account_id")),
                amount=(request.form.get("amount") or "").strip(),
                method=request.form.get("method", ""),
                reference=request.form.get("reference", ""),
                staff=_staff(),
                today=business_today(),
            )
            how = METHOD_WORDS[row.method]
            if row.status == "paid":
                return f"Paid: KES {row.amount:,.2f} by {how} ({row.reference})."
            return (
                f"KES {row.amount:,.2f} by {how} is above the approval limit: it waits for a "
                "branch manager who did not enter it; the money is held until then."
            )

        back = url_for("member.details_view", id=member_id) + "#branch-withdrawals"
        return self._post("branch_withdrawal.record", back, act)

    @expose("/<int:withdrawal_id>/decide", methods=("POST",))
    def decide(self, withdrawal_id: int) -> Response | Any:
        decision = request.form.get("decision", "")

        def act() -> str:
            if decision not in ("approve", "reject"):
                raise BranchWithdrawalError("choose approve or reject")
            row = branch_withdrawal_decide(
                withdrawal_id=withdrawal_id,
                staff=_staff(),
                approve=decision == "approve",
                today=business_today(),
                reason=request.form.get("reason"),
            )
            if row.status == "paid":
                return (
                    f"Withdrawal {withdrawal_id} is approved: pay KES {row.amount:,.2f} "
                    f"by {METHOD_WORDS[row.method]} ({row.reference})."
                )
            return f"Withdrawal {withdrawal_id} is rejected; the money is back in the account."

        return self._post("branch_withdrawal.approve", url_for(".index"), act)


def register(console: Admin) -> None:
    app: Any = console.app
    if app is not None:
        # The member page's block (admin_sacco/branch_withdrawal_member_block.html).
        app.add_template_global(member_branch_withdrawals, "member_branch_withdrawals")
    console.add_view(
        BranchWithdrawalView(
            name="Branch withdrawals",
            category="Savings",
            endpoint="branch_withdrawals",
            url="branch-withdrawals",
        )
    )
