"""Share transfers between members in the console: the list (those waiting for a decision
first), the form staff fill from the members' signed transfer form, and a branch manager's
approval or rejection.

Every form posts here, checks its CSRF token, then the role (403 and an audit row when the
role may not), then calls one service in app/services/savings/shares.py, which checks the
role again, guards the change (maker-checker: the approver did not enter it; the seller
holds the shares now) and writes the audit row; a refusal is rolled back and told in words.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import request, url_for
from flask_admin import Admin, BaseView, expose
from flask_login import current_user
from sqlalchemy import case, select
from sqlalchemy.orm import aliased
from werkzeug.wrappers import Response

from admin.auth import SecureMixin, _kenyan_time, form_post
from app.extensions import db
from app.models import Member, ShareTransfer, StaffUser
from app.services.savings.shares import (
    ShareTransferError,
    share_transfer_decide,
    share_transfer_request,
)

BADGES = {"requested": "warning", "approved": "success", "rejected": "light"}
_MEMBER_NO = re.compile(r"^[Mm]?\d{1,9}$")
LIST_LIMIT = 200


def member_by_number(raw: str, role: str) -> Member:
    """The member a form names by member number (M000123 or 123); whether they may take
    part (active, holding the shares) is the service's to say."""
    text = (raw or "").strip()
    if not text:
        raise ShareTransferError(f"the {role}'s member number is needed")
    member = None
    if _MEMBER_NO.match(text):
        number = f"M{int(text.lstrip('Mm')):06d}"
        member = db.session.scalar(select(Member).where(Member.member_no == number))
    if member is None:
        raise ShareTransferError(f"no member {text!r} (the {role})")
    return member


def transfer_rows(limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
    """The transfers with both members and both staff named, those waiting first, then the
    newest: one query."""
    seller, buyer = aliased(Member), aliased(Member)
    maker, checker = aliased(StaffUser), aliased(StaffUser)
    waiting_first = case((ShareTransfer.status == "requested", 0), else_=1)
    rows = db.session.execute(
        select(
            ShareTransfer,
            seller.member_no,
            seller.name,
            buyer.member_no,
            buyer.name,
            maker.email,
            checker.email,
        )
        .join(seller, seller.id == ShareTransfer.from_member_id)
        .join(buyer, buyer.id == ShareTransfer.to_member_id)
        .join(maker, maker.id == ShareTransfer.requested_by_id)
        .outerjoin(checker, checker.id == ShareTransfer.decided_by_id)
        .order_by(waiting_first, ShareTransfer.id.desc())
        .limit(limit)
    ).all()
    return [
        {
            "t": t,
            "seller": (s_no, s_name),
            "buyer": (b_no, b_name),
            "maker": maker_email,
            "checker": checker_email,
        }
        for t, s_no, s_name, b_no, b_name, maker_email, checker_email in rows
    ]


def _staff() -> Any:
    return current_user._get_current_object()


class ShareTransferView(SecureMixin, BaseView):
    """Every role reads the transfers; entering one and deciding one need their permission."""

    permission = "view"

    def _post(self, needs: str, act: Callable[[], str]) -> Any:
        return form_post(self, needs, url_for(".index"), act)

    @expose("/")
    def index(self) -> str:
        return self.render(
            "admin_sacco/share_transfers.html",
            rows=transfer_rows(),
            badges=BADGES,
            me=current_user.id,
            when=lambda moment: _kenyan_time(None, moment, "") if moment else "",
        )

    @expose("/new", methods=("POST",))
    def new(self) -> Response | Any:
        def act() -> str:
            seller = member_by_number(request.form.get("seller", ""), "seller")
            buyer = member_by_number(request.form.get("buyer", ""), "buyer")
            transfer = share_transfer_request(
                from_member_id=seller.id,
                to_member_id=buyer.id,
                amount=(request.form.get("amount") or "").strip(),
                staff=_staff(),
                form_ref=request.form.get("form_ref"),
            )
            return (
                f"Transfer {transfer.id} of KES {transfer.amount:,.2f} from {seller.member_no} "
                f"to {buyer.member_no} is entered: a branch manager other than you approves it."
            )

        return self._post("share_transfer.request", act)

    @expose("/<int:transfer_id>/decide", methods=("POST",))
    def decide(self, transfer_id: int) -> Response | Any:
        decision = request.form.get("decision", "")

        def act() -> str:
            if decision not in ("approve", "reject"):
                raise ShareTransferError("choose approve or reject")
            transfer = share_transfer_decide(
                transfer_id=transfer_id,
                staff=_staff(),
                approve=decision == "approve",
                reason=request.form.get("reason"),
            )
            if transfer.status == "approved":
                return f"Transfer {transfer_id} is approved: the shares have moved."
            return f"Transfer {transfer_id} is rejected; no shares moved."

        return self._post("share_transfer.approve", act)


def register(console: Admin) -> None:
    console.add_view(
        ShareTransferView(
            name="Share transfers",
            category="Savings",
            endpoint="share_transfers",
            url="share-transfers",
        )
    )
