"""The applications queue: loans waiting for a staff decision, oldest first, with what a
checker weighs beside each (the member's savings, limit, other loans and arrears, and the
schedule the loan would run on).

Decisions call the same services as the loan page (app/services/loans/), one loan at a
time even in a bulk action: the service guards each loan (maker-checker, the member's
limit now) and writes its audit row, so a bulk approval cannot do what one-by-one could not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from flask import flash, redirect, request, url_for
from flask_admin import Admin, BaseView, expose
from flask_login import current_user
from werkzeug.wrappers import Response

from admin.auth import SecureMixin, TokenForm, _kenyan_time, require
from admin.guarantees import LoanSecurity, loan_security
from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import Loan
from app.selectors.guarantees import product_needs_security
from app.selectors.loans import (
    APPLICATION_STATUSES,
    ApplicantPosition,
    applicant_position,
    loan_applications,
)
from app.services.loan_schedule import Schedule, ScheduleError, schedule_build
from app.services.loans import LoanError, loan_approve, loan_recommend, loan_reject

PER_PAGE = 25
# A bulk action takes at most a page of loans: one request stays short.
BULK_MAX = PER_PAGE

# What each decision needs (app/services/permissions.py) and how its outcome reads.
ACTIONS = {
    "approve": ("loan.approve", "approved"),
    "reject": ("loan.approve", "rejected"),
    "recommend": ("loan.recommend", "recommended"),
}


@dataclass(frozen=True)
class QueueRow:
    loan: Loan
    position: ApplicantPosition
    schedule: Schedule | None
    schedule_error: str | None
    needs_recommendation: bool  # above the product's maker-checker threshold, not yet recommended
    # A secured product's cover and each guarantor's answer and free deposits, else None.
    security: LoanSecurity | None = None


def _schedule(loan: Loan, start: date) -> tuple[Schedule | None, str | None]:
    """The schedule the loan would run on if paid out today (disbursement fixes the real
    dates): the same calculation loan_disburse makes."""
    try:
        return (
            schedule_build(
                principal=loan.principal,
                annual_rate=loan.annual_rate,
                installments=loan.term,
                interest_method=loan.interest_method,
                amortization=loan.amortization,
                frequency=loan.frequency,
                multiple_of=loan.installment_multiple,
                start_date=start,
            ),
            None,
        )
    except ScheduleError as exc:
        return None, str(exc)


def when(moment: datetime | None) -> str:
    """Kenyan time to the minute, as the console's lists show it."""
    return _kenyan_time(None, moment, "") if moment is not None else ""


def _decide(loan_id: int, action: str, reason: str) -> Loan:
    staff = current_user._get_current_object()
    if action == "approve":
        return loan_approve(loan_id=loan_id, staff=staff, note=reason or None)
    if action == "reject":
        return loan_reject(loan_id=loan_id, staff=staff, reason=reason)
    if action == "recommend":
        return loan_recommend(loan_id=loan_id, staff=staff, note=reason or None)
    raise LoanError(f"unknown action {action!r}")


def _loan_no(loan_id: int) -> str:
    loan = db.session.get(Loan, loan_id)
    return (loan.loan_no if loan is not None else None) or f"loan #{loan_id}"


class ApplicationsView(SecureMixin, BaseView):
    """Every role may read the queue; the buttons follow the role."""

    permission = "view"

    def _back(self) -> Response:
        page = request.form.get("page", "1")
        status = request.form.get("status") or None
        return redirect(
            url_for(".index", page=page if page.isdigit() else 1, status=status),
        )

    @expose("/")
    def index(self) -> str:
        page = max(request.args.get("page", 1, type=int) or 1, 1)
        status = request.args.get("status")
        status = status if status in APPLICATION_STATUSES else None
        loans, total = loan_applications(page=page, per_page=PER_PAGE, status=status)
        today = business_today()
        rows = []
        for loan in loans:
            schedule, problem = _schedule(loan, today)
            threshold = loan.product.maker_checker_threshold
            rows.append(
                QueueRow(
                    loan=loan,
                    position=applicant_position(loan=loan, as_of=today),
                    schedule=schedule,
                    schedule_error=problem,
                    needs_recommendation=(
                        threshold is not None
                        and loan.principal > threshold
                        and loan.status == "submitted"
                    ),
                    security=loan_security(loan, with_free=True)
                    if product_needs_security(loan.product)
                    else None,
                )
            )
        pages = max((total + PER_PAGE - 1) // PER_PAGE, 1)
        return self.render(
            "admin_sacco/applications.html",
            rows=rows,
            total=total,
            page=page,
            pages=pages,
            status=status,
            statuses=APPLICATION_STATUSES,
            bulk_max=BULK_MAX,
            when=when,
        )

    @expose("/decide/<int:loan_id>", methods=("POST",))
    def decide(self, loan_id: int) -> Response | tuple[str, int]:
        if not TokenForm(request.form).validate():
            flash("The form expired; please try again.", "error")
            return self._back()
        action = request.form.get("action", "")
        needs, done = ACTIONS.get(action, ("loan.approve", ""))
        refused = require(needs, self)
        if refused is not None:
            return refused
        reason = (request.form.get("reason") or "").strip()
        try:
            loan = _decide(loan_id, action, reason)
        except SaccoError as exc:
            db.session.rollback()
            flash(f"{_loan_no(loan_id)} not {done or 'decided'}: {exc}", "error")
        else:
            flash(f"{loan.loan_no} {done}.", "success")
        return self._back()

    @expose("/bulk", methods=("POST",))
    def bulk(self) -> Response | tuple[str, int]:
        if not TokenForm(request.form).validate():
            flash("The form expired; please try again.", "error")
            return self._back()
        action = request.form.get("action", "")
        if action not in ("approve", "reject"):
            flash("Choose approve or reject.", "error")
            return self._back()
        needs, done = ACTIONS[action]
        refused = require(needs, self)
        if refused is not None:
            return refused
        ids = [int(v) for v in request.form.getlist("loan_id") if v.isdigit()]
        ids = list(dict.fromkeys(ids))  # a loan ticked twice is decided once
        if not ids:
            flash("Tick the applications to decide first.", "error")
            return self._back()
        if len(ids) > BULK_MAX:
            flash(f"At most {BULK_MAX} applications at a time.", "error")
            return self._back()
        reason = (request.form.get("reason") or "").strip()
        succeeded: list[str] = []
        refusals: list[str] = []
        for loan_id in ids:
            # Each loan on its own: one refusal (maker-checker, the limit) stops only it.
            try:
                loan = _decide(loan_id, action, reason)
            except SaccoError as exc:
                db.session.rollback()
                refusals.append(f"{_loan_no(loan_id)} not {done}: {exc}")
            else:
                succeeded.append(loan.loan_no or f"#{loan_id}")
        if succeeded:
            flash(f"{len(succeeded)} {done}: {', '.join(succeeded)}.", "success")
        for refusal in refusals:
            flash(refusal, "error")
        return self._back()


def register(console: Admin) -> None:
    console.add_view(
        ApplicationsView(
            name="Applications", category="Loans", endpoint="applications", url="applications"
        )
    )
