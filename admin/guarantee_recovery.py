"""A loan's guarantors in the console: each one's exposure now, recovery from them after
a default (proposed by a branch manager, the board's decision recorded by a branch
manager or compliance), and replacing a guarantor (asked by staff, accepted by the new
guarantor, approved by a branch manager).

Every form posts here, checks its CSRF token, then the role (403 and an audit row when
the role may not), then calls one service in app/services/guarantees/recovery.py, which
guards the change and writes the audit row; a refusal is rolled back and told in words.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

from flask import flash, redirect, request, url_for
from flask_admin import Admin, BaseView, expose
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import select
from werkzeug.wrappers import Response

from admin.auth import SecureMixin, SecureModelView, TokenForm, require
from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import Account, Guarantee, GuaranteeRecovery, Loan, StaffUser
from app.money import ZERO
from app.selectors.guarantees import guarantee_exposure, loan_cover
from app.services.guarantees import guarantor_find
from app.services.guarantees.recovery import (
    GuaranteeRecoveryError,
    guarantee_recovery_decide,
    guarantee_recovery_propose,
    guarantee_substitute_accept,
    guarantee_substitute_approve,
    guarantee_substitute_request,
)


def _staff() -> Any:
    return current_user._get_current_object()


def _decision_date() -> date:
    raw = (request.form.get("decision_date") or "").strip()
    if not raw:
        raise GuaranteeRecoveryError("the decision date is needed")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise GuaranteeRecoveryError("the decision date must be a date (YYYY-MM-DD)") from None


def _page_facts(loan: Loan) -> dict[str, Any]:
    """What the page shows: every guarantee of the loan with its exposure now, the
    proposals newest first, and the names of the staff on them."""
    guarantees = list(
        db.session.scalars(
            select(Guarantee).where(Guarantee.loan_id == loan.id).order_by(Guarantee.id)
        )
    )
    owed = db.session.scalar(
        select(Account.balance).where(Account.loan_id == loan.id, Account.kind == "loan_principal")
    )
    exposure = {
        g.id: guarantee_exposure(
            amount=g.amount,
            loan_status=loan.status,
            principal=loan.principal,
            outstanding=owed if owed is not None else ZERO,
        )
        if g.status == "accepted"
        else ZERO
        for g in guarantees
    }
    proposals = list(
        db.session.scalars(
            select(GuaranteeRecovery)
            .where(GuaranteeRecovery.loan_id == loan.id)
            .order_by(GuaranteeRecovery.id.desc())
        )
    )
    staff_ids = {p.proposed_by_id for p in proposals} | {
        p.decided_by_id for p in proposals if p.decided_by_id
    }
    names = {
        s.id: s.name or s.email
        for s in db.session.scalars(select(StaffUser).where(StaffUser.id.in_(staff_ids)))
    }
    by_id = {g.id: g for g in guarantees}
    return {
        "guarantees": guarantees,
        "by_id": by_id,
        "exposure": exposure,
        "total_exposure": sum(exposure.values(), Decimal(0)),
        "principal_owed": owed if owed is not None else ZERO,
        "proposals": proposals,
        "open_proposal": next((p for p in proposals if p.status == "proposed"), None),
        "names": names,
        "cover": loan_cover(loan) if loan.status in ("active", "restructured") else None,
        # Accepted replacements whose guarantor is still there: a manager's to approve.
        "to_approve": [
            g
            for g in guarantees
            if g.replaces_id is not None
            and g.status == "accepted"
            and by_id[g.replaces_id].status == "accepted"
        ],
    }


class GuaranteeRecoveryView(SecureMixin, BaseView):
    """Every role may read; each form needs its own permission."""

    permission = "view"

    def is_visible(self) -> bool:
        return False  # reached from a loan's page, not the menu

    def _back(self, loan_id: int | None) -> Response:
        if loan_id is None:
            return redirect(url_for("loan.index_view"))
        return redirect(url_for(".loan", loan_id=loan_id))

    def _post(self, needs: str, loan_id: int | None, act: Callable[[], Any], done: str) -> Any:
        """CSRF, then the role, then the service; a refusal is flashed in words."""
        if not TokenForm(request.form).validate():
            flash("The form expired; please try again.", "error")
            return self._back(loan_id)
        refused = require(needs, self)
        if refused is not None:
            return refused
        if loan_id is None:
            flash("Not found.", "error")
            return self._back(None)
        try:
            act()
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Not done: {exc}.", "error")
        else:
            flash(done, "success")
        return self._back(loan_id)

    @expose("/")
    def index(self) -> Response:
        return redirect(url_for("loan.index_view"))

    @expose("/<int:loan_id>")
    def loan(self, loan_id: int) -> Response | str:
        loan = db.session.get(Loan, loan_id)
        if loan is None:
            flash(f"No loan {loan_id}.", "error")
            return redirect(url_for("loan.index_view"))
        return self.render(
            "admin_sacco/guarantee_recovery_page.html",
            loan=loan,
            f=_page_facts(loan),
            today=business_today(),
            me=current_user.id,
        )

    # -- recovery --------------------------------------------------------------------------

    @expose("/<int:loan_id>/propose", methods=("POST",))
    def propose(self, loan_id: int) -> Any:
        def act() -> None:
            guarantee_recovery_propose(
                loan_id=loan_id, staff=_staff(), reason=request.form.get("reason", "")
            )

        return self._post(
            "guarantee.recover",
            loan_id,
            act,
            "Recovery from the guarantors is proposed; the board's decision is recorded here.",
        )

    @expose("/recovery/<int:recovery_id>/decide", methods=("POST",))
    def decide(self, recovery_id: int) -> Any:
        found = db.session.get(GuaranteeRecovery, recovery_id)
        decision = request.form.get("decision", "")

        def act() -> None:
            guarantee_recovery_decide(
                recovery_id=recovery_id,
                staff=_staff(),
                decision=decision,
                decision_date=_decision_date(),
                minute_ref=request.form.get("minute_ref", ""),
            )

        done = (
            "The board's approval is recorded and the guarantors' deposits are debited."
            if decision == "approve"
            else "The board's decision is recorded; nothing is taken from the guarantors."
        )
        return self._post("guarantee.recovery_decide", found.loan_id if found else None, act, done)

    # -- replacing a guarantor ---------------------------------------------------------------

    @expose("/guarantee/<int:guarantee_id>/replace", methods=("POST",))
    def replace(self, guarantee_id: int) -> Any:
        found = db.session.get(Guarantee, guarantee_id)

        def act() -> None:
            identifier = request.form.get("guarantor", "")
            member = guarantor_find(identifier)
            if member is None:
                raise GuaranteeRecoveryError(f"no active member {identifier.strip()!r}")
            guarantee_substitute_request(
                guarantee_id=guarantee_id,
                guarantor_id=member.id,
                by=_staff(),
                amount=request.form.get("amount") or None,
            )

        return self._post(
            "guarantee.manage",
            found.loan_id if found else None,
            act,
            "The new guarantor is asked by SMS; their answer shows here.",
        )

    @expose("/guarantee/<int:guarantee_id>/consent", methods=("POST",))
    def consent(self, guarantee_id: int) -> Any:
        found = db.session.get(Guarantee, guarantee_id)

        def act() -> None:
            assert found is not None
            guarantee_substitute_accept(
                guarantee_id=guarantee_id, guarantor_id=found.guarantor_id, via="console"
            )

        return self._post(
            "guarantee.manage",
            found.loan_id if found else None,
            act,
            "The new guarantor's signed consent is recorded.",
        )

    @expose("/guarantee/<int:guarantee_id>/approve", methods=("POST",))
    def approve(self, guarantee_id: int) -> Any:
        found = db.session.get(Guarantee, guarantee_id)

        def act() -> None:
            guarantee_substitute_approve(guarantee_id=guarantee_id, staff=_staff())

        return self._post(
            "guarantee.substitute",
            found.loan_id if found else None,
            act,
            "The replacement is approved; the old guarantor's deposits are free of this loan.",
        )


def _loan_link(view: object, context: object, model: GuaranteeRecovery, name: str) -> Markup:
    return Markup('<a href="{}">loan {}</a>').format(
        url_for("guarantee_recovery.loan", loan_id=model.loan_id), model.loan_id
    )


class GuaranteeRecoveryListView(SecureModelView):
    """Read-only: proposals and decisions go through the loan's guarantors page."""

    column_list = (
        "loan",
        "status",
        "reason",
        "proposed_on",
        "decision_date",
        "minute_ref",
        "recovered_total",
    )
    column_labels = {"minute_ref": "Board minute", "recovered_total": "Recovered (KES)"}
    column_filters = ("status", "proposed_on", "decision_date")
    column_sortable_list = ("status", "proposed_on", "decision_date", "recovered_total")
    column_default_sort = [("proposed_on", True), ("id", True)]
    column_formatters = {"loan": _loan_link}
    column_details_list = (*column_list, "exposures", "recovered", "entry_id")
    column_formatters_detail = column_formatters


def register(console: Admin) -> None:
    console.add_view(
        GuaranteeRecoveryView(
            name="Guarantors of a loan",
            endpoint="guarantee_recovery",
            url="guarantee-recovery",
        )
    )
    console.add_view(
        GuaranteeRecoveryListView(
            GuaranteeRecovery, db, name="Recovery from guarantors", category="Recovery"
        )
    )
