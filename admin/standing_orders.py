"""Standing orders in the console: the member page's block (each order with its last runs,
the form to set one, cancel) and a list of every active order.

The forms post here, check their CSRF token, then the role ("standing_order.manage": 403
and an audit row when the role may not), then call one service in
app/services/savings/standing_orders.py, which guards the order and writes the audit row;
a refusal is rolled back and told in words on the member's page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from flask import flash, redirect, request, url_for
from flask_admin import Admin, BaseView, expose
from sqlalchemy import select
from werkzeug.wrappers import Response

from admin.auth import SecureMixin, actor, form_post
from app.extensions import db
from app.models import Loan, Member, StandingOrder, StandingOrderRun
from app.selectors.loans import LIVE_STATUSES
from app.services.savings.standing_orders import (
    TARGETS,
    StandingOrderError,
    standing_order_cancel,
    standing_order_create,
)

RUNS_SHOWN = 3  # the last runs beside each order: enough to see a short month
LIST_LIMIT = 200


@dataclass
class OrderRow:
    order: StandingOrder
    loan_no: str
    runs: list[StandingOrderRun] = field(default_factory=list)


@dataclass
class MemberOrders:
    orders: list[OrderRow]
    loans: list[tuple[int, str]]  # the member's open loans, for the form's loan choice


def member_standing_orders(member_id: int) -> MemberOrders:
    """The member page's block: their orders (active first, newest first), each with its
    last runs, and the open loans an order may pay."""
    orders = list(
        db.session.scalars(
            select(StandingOrder)
            .where(StandingOrder.member_id == member_id)
            .order_by((StandingOrder.status == "active").desc(), StandingOrder.id.desc())
        )
    )
    loan_nos: dict[int, str | None] = dict(
        db.session.execute(select(Loan.id, Loan.loan_no).where(Loan.member_id == member_id)).all()
    )
    runs: dict[int, list[StandingOrderRun]] = {order.id: [] for order in orders}
    if orders:
        for run in db.session.scalars(
            select(StandingOrderRun)
            .where(StandingOrderRun.order_id.in_(list(runs)))
            .order_by(StandingOrderRun.due_on.desc())
        ):
            if len(runs[run.order_id]) < RUNS_SHOWN:
                runs[run.order_id].append(run)
    open_loans = db.session.execute(
        select(Loan.id, Loan.loan_no)
        .where(Loan.member_id == member_id, Loan.status.in_(LIVE_STATUSES))
        .order_by(Loan.id)
    ).all()
    return MemberOrders(
        orders=[
            OrderRow(
                order=order,
                loan_no=(loan_nos.get(order.loan_id) or "") if order.loan_id else "",
                runs=runs[order.id],
            )
            for order in orders
        ],
        loans=[(loan_id, loan_no or str(loan_id)) for loan_id, loan_no in open_loans],
    )


def _day(raw: str | None) -> int:
    try:
        return int((raw or "").strip())
    except ValueError:
        raise StandingOrderError("the day must be 1 to 28, a day every month has") from None


def _date(raw: str | None, what: str) -> date | None:
    text = (raw or "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise StandingOrderError(f"the {what} date must be a date (YYYY-MM-DD)") from None


def _loan_id(raw: str | None) -> int | None:
    text = (raw or "").strip()
    return int(text) if text.isdigit() else None


class StandingOrderView(SecureMixin, BaseView):
    """Every role reads the orders; setting and cancelling need standing_order.manage."""

    permission = "view"

    def _post(self, member_id: int, act: Callable[[], str]) -> Any:
        """Back to the member's page either way."""
        back = url_for("member.details_view", id=member_id) + "#standing-orders"
        return form_post(self, "standing_order.manage", back, act)

    @expose("/")
    def index(self) -> str:
        rows = db.session.execute(
            select(StandingOrder, Member.member_no, Member.name)
            .join(Member, Member.id == StandingOrder.member_id)
            .where(StandingOrder.status == "active")
            .order_by(StandingOrder.day_of_month, StandingOrder.id)
            .limit(LIST_LIMIT)
        ).all()
        return self.render("admin_sacco/standing_order_list.html", rows=rows, targets=TARGETS)

    @expose("/member/<int:member_id>/new", methods=("POST",))
    def new(self, member_id: int) -> Response | Any:
        def act() -> str:
            target = request.form.get("target", "")
            order = standing_order_create(
                member_id=member_id,
                target=target,
                amount=(request.form.get("amount") or "").strip(),
                day_of_month=_day(request.form.get("day_of_month")),
                actor=actor(),
                loan_id=_loan_id(request.form.get("loan_id")) if target == "loan" else None,
                partial=request.form.get("partial", "yes") == "yes",
                starts_on=_date(request.form.get("starts_on"), "start"),
                ends_on=_date(request.form.get("ends_on"), "end"),
                channel="console",
            )
            return (
                f"Standing order {order.id} is set: KES {order.amount:,.2f} to "
                f"{TARGETS[order.target]} on day {order.day_of_month} of every month."
            )

        return self._post(member_id, act)

    @expose("/<int:order_id>/cancel", methods=("POST",))
    def cancel(self, order_id: int) -> Response | Any:
        found = db.session.get(StandingOrder, order_id)
        if found is None:
            flash(f"No standing order {order_id}.", "error")
            return redirect(url_for(".index"))
        member_id = found.member_id

        def act() -> str:
            standing_order_cancel(order_id=order_id, actor=actor(), member_id=member_id)
            return f"Standing order {order_id} is cancelled; its past runs stay."

        return self._post(member_id, act)


def register(console: Admin) -> None:
    app: Any = console.app
    if app is not None:
        # The member page's block (admin_sacco/standing_order_member_block.html).
        app.add_template_global(member_standing_orders, "member_standing_orders")
    console.add_view(
        StandingOrderView(
            name="Standing orders",
            category="Savings",
            endpoint="standing_orders",
            url="standing-orders",
        )
    )
