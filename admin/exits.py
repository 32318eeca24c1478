"""Members leaving, in the console: the notice taken from the member's page, the exit page
(where the member's money stands now: deposits, savings, shares, each loan to offset, the
refund, and what still stops a settlement, in words), the branch manager's settlement once
the notice has run, the payout by bank or cash, and the exit statement after it.

Every form posts here, checks its CSRF token, then the role (403 and an audit row when the
role may not), then calls one service in app/services/savings/exits.py, which checks the
role again, guards the change and writes the audit row; a refusal is rolled back and told
in words.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from flask import flash, redirect, request, url_for
from flask_admin import Admin, BaseView, expose
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from admin.auth import SecureMixin, form_post
from app.clock import business_today
from app.extensions import db
from app.models import Member, MemberExit
from app.services.savings.exits import (
    PAYMENT_METHODS,
    exit_cancel,
    exit_figures,
    exit_pay,
    exit_request,
    exit_settle,
)

BADGES = {"notice": "warning", "settled": "primary", "paid": "success", "cancelled": "light"}
LIST_LIMIT = 200


def member_exit_latest(member_id: int) -> MemberExit | None:
    """The member's latest exit (the member page's block shows it, or the notice form)."""
    return db.session.scalar(
        select(MemberExit)
        .where(MemberExit.member_id == member_id)
        .order_by(MemberExit.id.desc())
        .limit(1)
    )


def statement_lines(settlement: dict[str, Any] | None) -> dict[str, Any]:
    """The settlement's figures as Decimals, for the exit statement."""
    found = settlement or {}
    return {
        "deposits": Decimal(found.get("deposits", "0")),
        "savings": Decimal(found.get("savings", "0")),
        "shares": Decimal(found.get("shares", "0")),
        "loans": [(no, Decimal(owed)) for no, owed in found.get("loans", [])],
        "owed": Decimal(found.get("owed", "0")),
        "refund": Decimal(found.get("refund", "0")),
    }


def _staff() -> Any:
    return current_user._get_current_object()


class ExitView(SecureMixin, BaseView):
    """Every role reads the exits; each form needs its own permission."""

    permission = "view"

    def _post(self, needs: str, back: str, act: Callable[[], tuple[str, str | None]]) -> Any:
        return form_post(self, needs, back, act)

    @expose("/")
    def index(self) -> str:
        rows = db.session.execute(
            select(MemberExit, Member.member_no, Member.name)
            .join(Member, Member.id == MemberExit.member_id)
            .order_by(MemberExit.id.desc())
            .limit(LIST_LIMIT)
        ).all()
        return self.render(
            "admin_sacco/exit_list.html", rows=rows, badges=BADGES, today=business_today()
        )

    @expose("/member/<int:member_id>/notice", methods=("POST",))
    def notice(self, member_id: int) -> Response | Any:
        def act() -> tuple[str, str | None]:
            leaving = exit_request(
                member_id=member_id,
                reason=request.form.get("reason", ""),
                actor=_staff(),
                today=business_today(),
            )
            return (
                f"Notice taken: the settlement may be made from {leaving.notice_ends_on:%d %b %Y}; "
                "meanwhile the member cannot borrow.",
                url_for(".details", exit_id=leaving.id),
            )

        return self._post("member_exit.request", url_for("member.details_view", id=member_id), act)

    @expose("/<int:exit_id>")
    def details(self, exit_id: int) -> Response | str:
        leaving = db.session.get(MemberExit, exit_id)
        if leaving is None:
            flash(f"No exit {exit_id}.", "error")
            return redirect(url_for(".index"))
        member = db.session.get(Member, leaving.member_id)
        today = business_today()
        return self.render(
            "admin_sacco/exit_details.html",
            leaving=leaving,
            member=member,
            badges=BADGES,
            # Where the money stands now, while there is still a settlement to make.
            figures=exit_figures(leaving.member_id) if leaving.status == "notice" else None,
            statement=statement_lines(leaving.settlement) if leaving.settlement else None,
            today=today,
            notice_over=today >= leaving.notice_ends_on,
            methods=list(PAYMENT_METHODS),
        )

    @expose("/<int:exit_id>/settle", methods=("POST",))
    def settle(self, exit_id: int) -> Response | Any:
        def act() -> tuple[str, str | None]:
            leaving = exit_settle(exit_id=exit_id, actor=_staff(), today=business_today())
            return (
                f"Settled: loans offset, accounts closed; KES {leaving.refund or 0:,.2f} is owed "
                "to the member until the payout is recorded.",
                None,
            )

        return self._post("member_exit.settle", url_for(".details", exit_id=exit_id), act)

    @expose("/<int:exit_id>/pay", methods=("POST",))
    def pay(self, exit_id: int) -> Response | Any:
        def act() -> tuple[str, str | None]:
            leaving = exit_pay(
                exit_id=exit_id,
                actor=_staff(),
                method=request.form.get("method", ""),
                reference=request.form.get("reference", ""),
                today=business_today(),
            )
            return (
                f"The refund is recorded as paid by {leaving.payment_method} "
                f"({leaving.payment_ref}).",
                None,
            )

        return self._post("member_exit.settle", url_for(".details", exit_id=exit_id), act)

    @expose("/<int:exit_id>/cancel", methods=("POST",))
    def cancel(self, exit_id: int) -> Response | Any:
        def act() -> tuple[str, str | None]:
            exit_cancel(exit_id=exit_id, actor=_staff())
            return "The notice is cancelled: the member stays and may borrow again.", None

        return self._post("member_exit.request", url_for(".details", exit_id=exit_id), act)


def register(console: Admin) -> None:
    app: Any = console.app
    if app is not None:
        # The member page's exit block (admin_sacco/exit_member_block.html).
        app.add_template_global(member_exit_latest, "member_exit_latest")
    console.add_view(
        ExitView(name="Member exits", category="Savings", endpoint="exits", url="exits")
    )
