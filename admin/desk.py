"""The collections desk: a loan officer's landing page (their loans in arrears in the
order to work them today, a call/visit outcome form per loan, the day's target and
progress), each loan's activity timeline, and the team leaderboard.

Branch managers pick whose desk to read, reassign loans and set targets; there is one
branch, so "the branch" is every loan. Each form posts to one service in
app/services/collections.py, which checks the permission again and writes the audit row.

A loan officer's desk is their own book: a loan followed up by another officer, or by
nobody, is refused (403, audited) on its page and for calls and promises alike; a branch
manager works every loan, and their desk lists the late loans nobody follows up first, to
assign them.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from flask import flash, redirect, request, url_for
from flask_admin import Admin, BaseView, expose
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from admin.applications import when
from admin.auth import SecureMixin, TokenForm, forbidden, require
from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db
from app.models import Loan, StaffUser
from app.models.recovery import CONTACT_KINDS, CONTACT_OUTCOMES
from app.selectors.collections import (
    collection_officers,
    loan_arrears,
    loan_timeline,
    officer_desk,
    target_progress,
    team_leaderboard,
)
from app.selectors.promises import month_bounds, monthly_promise_keeping
from app.services.collections import (
    collection_record,
    collection_target_set,
    portfolio_assign,
    promise_bulk_record,
)
from app.services.permissions import permitted
from app.services.promises import MAX_DAYS_AHEAD

PER_PAGE = 25
TIMELINE_PAGE = 30
LEADERS_PAGE = 50
BULK_MAX = PER_PAGE  # a bulk action takes at most a page of loans
UNASSIGNED = "none"
UNASSIGNED_SHOWN = 10  # late loans with no officer, at the top of a branch manager's desk
OTHERS_BOOK = "work loans outside their own book (a branch manager can)"


def _expired() -> None:
    flash("The form expired; please try again.", "error")


def _day(text: str | None, what: str) -> date:
    try:
        return date.fromisoformat((text or "").strip())
    except ValueError:
        raise _FormError(f"{what}: choose a date") from None


class _FormError(SaccoError):
    """A form value the service never saw (a date that is not one)."""


def _int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def _not_own_book(*loan_ids: int) -> bool:
    """Whether any of these loans is outside the signed-in staff member's book: another
    officer's or nobody's, for a staff member who cannot work every loan."""
    if permitted(current_user, "portfolio.assign"):
        return False
    officers = db.session.scalars(select(Loan.officer_id).where(Loan.id.in_(loan_ids))).all()
    return any(officer != current_user.id for officer in officers)


def _loan_no(loan_id: int) -> str:
    loan = db.session.get(Loan, loan_id)
    return (loan.loan_no if loan is not None else None) or f"loan #{loan_id}"


class DeskView(SecureMixin, BaseView):
    """The officers' page: those who record collection calls (loan officers and branch
    managers). A loan officer reads their own desk; a branch manager picks anyone's."""

    permission = "collection.record"

    def _officer_arg(self) -> tuple[int | None, str]:
        """Whose desk: ?officer=<id>, "none" for loans nobody follows up; the signed-in
        staff member's own by default."""
        raw = request.values.get("officer", "")
        if raw == UNASSIGNED:
            return None, UNASSIGNED
        picked = _int(raw)
        officer_id = picked if picked is not None else current_user.id
        return officer_id, str(officer_id)

    def _back(self) -> Response:
        if request.form.get("return_to") == "loan" and _int(request.form.get("loan")):
            return redirect(url_for(".loan", loan_id=_int(request.form.get("loan"))))
        officer = request.form.get("officer") or None
        page = _int(request.form.get("page")) or 1
        return redirect(url_for(".index", officer=officer, page=page))

    @expose("/")
    def index(self) -> str | tuple[str, int] | Response:
        officer_id, officer_arg = self._officer_arg()
        if officer_id != current_user.id and not permitted(current_user, "portfolio.assign"):
            # Another officer's desk is a branch manager's view.
            return forbidden("portfolio.assign", self)
        officer = db.session.get(StaffUser, officer_id) if officer_id is not None else None
        if officer_id is not None and officer is None:
            flash(f"No staff member {officer_id}.", "error")
            return redirect(url_for(".index"))
        today = business_today()
        page = max(request.args.get("page", 1, type=int) or 1, 1)
        rows, total = officer_desk(officer_id=officer_id, as_of=today, page=page, per_page=PER_PAGE)
        unassigned, unassigned_total = (
            officer_desk(officer_id=None, as_of=today, page=1, per_page=UNASSIGNED_SHOWN)
            if officer_id is not None and permitted(current_user, "portfolio.assign")
            else ([], 0)
        )
        return self.render(
            "admin_sacco/desk.html",
            rows=rows,
            total=total,
            page=page,
            pages=max((total + PER_PAGE - 1) // PER_PAGE, 1),
            officer=officer,
            officer_arg=officer_arg,
            officers=collection_officers(),
            progress=target_progress(officer_id=officer.id, day=today) if officer else None,
            keeping=monthly_promise_keeping(today=today, months=6, officer_id=officer_id)
            if officer
            else [],
            today=today,
            kinds=CONTACT_KINDS,
            outcomes=CONTACT_OUTCOMES,
            max_days=MAX_DAYS_AHEAD,
            bulk_max=BULK_MAX,
            when=when,
            unassigned=unassigned,
            unassigned_total=unassigned_total,
            unassigned_arg=UNASSIGNED,
        )

    @expose("/loan/<int:loan_id>")
    def loan(self, loan_id: int) -> str | Response | tuple[str, int]:
        loan = db.session.get(Loan, loan_id)
        if loan is None:
            flash(f"No loan {loan_id}.", "error")
            return redirect(url_for(".index"))
        if _not_own_book(loan.id):
            return forbidden("portfolio.assign", self, OTHERS_BOOK)
        today = business_today()
        page = max(request.args.get("page", 1, type=int) or 1, 1)
        events, more = loan_timeline(loan_id=loan.id, page=page, per_page=TIMELINE_PAGE)
        officer = db.session.get(StaffUser, loan.officer_id) if loan.officer_id else None
        return self.render(
            "admin_sacco/desk_loan.html",
            loan=loan,
            officer=officer,
            arrears=loan_arrears(loan_id=loan.id, as_of=today),
            events=events,
            page=page,
            more=more,
            officers=collection_officers(),
            today=today,
            kinds=CONTACT_KINDS,
            outcomes=CONTACT_OUTCOMES,
            max_days=MAX_DAYS_AHEAD,
            when=when,
        )

    @expose("/contact/<int:loan_id>", methods=("POST",))
    def contact(self, loan_id: int) -> Response | tuple[str, int]:
        if not TokenForm(request.form).validate():
            _expired()
            return self._back()
        refused = require("collection.record", self)
        if refused is not None:
            return refused
        if _not_own_book(loan_id):
            return forbidden("portfolio.assign", self, OTHERS_BOOK)
        form = request.form
        outcome = form.get("outcome", "")
        try:
            promise_date = (
                _day(form.get("promise_date"), "the promise date")
                if (form.get("promise_date") or "").strip()
                else None
            )
            log = collection_record(
                loan_id=loan_id,
                staff=current_user._get_current_object(),
                kind=form.get("kind", "call"),
                outcome=outcome,
                note=form.get("note"),
                amount=(form.get("amount") or "").strip() or None,
                promised_date=promise_date,
                as_of=business_today(),
            )
        except SaccoError as exc:
            db.session.rollback()
            flash(f"{_loan_no(loan_id)}: not recorded: {exc}", "error")
        else:
            done = f"{_loan_no(loan_id)}: {log.kind} recorded ({outcome.replace('_', ' ')})"
            if log.promise_id:
                done += f" with a promise for {promise_date:%d/%m/%Y}"
            flash(done + ".", "success")
        return self._back()

    @expose("/assign/<int:loan_id>", methods=("POST",))
    def assign(self, loan_id: int) -> Response | tuple[str, int]:
        if not TokenForm(request.form).validate():
            _expired()
            return self._back()
        refused = require("portfolio.assign", self)
        if refused is not None:
            return refused
        officer_id = _int(request.form.get("officer_id"))
        try:
            if officer_id is None:
                raise _FormError("choose the officer")
            loan = portfolio_assign(
                loan_id=loan_id, officer_id=officer_id, staff=current_user._get_current_object()
            )
        except SaccoError as exc:
            db.session.rollback()
            flash(f"{_loan_no(loan_id)} not reassigned: {exc}", "error")
        else:
            officer = db.session.get(StaffUser, officer_id)
            flash(f"{loan.loan_no} is now {officer.email if officer else ''}'s.", "success")
        return self._back()

    @expose("/target", methods=("POST",))
    def target(self) -> Response | tuple[str, int]:
        if not TokenForm(request.form).validate():
            _expired()
            return self._back()
        refused = require("portfolio.assign", self)
        if refused is not None:
            return refused
        form = request.form
        try:
            officer_id = _int(form.get("officer_id"))
            accounts = _int(form.get("accounts"))
            if officer_id is None:
                raise _FormError("choose the officer")
            if accounts is None:
                raise _FormError("the accounts to contact: a whole number")
            target = collection_target_set(
                officer_id=officer_id,
                day=_day(form.get("day"), "the day"),
                amount=(form.get("amount") or "").strip(),
                accounts=accounts,
                staff=current_user._get_current_object(),
                as_of=business_today(),
            )
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Target not set: {exc}", "error")
        else:
            flash(
                f"Target for {target.day:%d/%m/%Y}: KES {target.amount:,.2f} and "
                f"{target.accounts} accounts.",
                "success",
            )
        return self._back()

    @expose("/promises", methods=("POST",))
    def bulk_promises(self) -> Response | tuple[str, int]:
        if not TokenForm(request.form).validate():
            _expired()
            return self._back()
        refused = require("collection.record", self)
        if refused is not None:
            return refused
        ids = list(dict.fromkeys(v for v in map(_int, request.form.getlist("loan_id")) if v))
        if not ids:
            flash("Tick the loans to record promises for first.", "error")
            return self._back()
        if len(ids) > BULK_MAX:
            flash(f"At most {BULK_MAX} loans at a time.", "error")
            return self._back()
        if _not_own_book(*ids):
            return forbidden("portfolio.assign", self, OTHERS_BOOK)
        try:
            day = _day(request.form.get("promise_date"), "the promise date")
        except SaccoError as exc:
            flash(f"No promises recorded: {exc}", "error")
            return self._back()
        result = promise_bulk_record(
            loan_ids=ids,
            staff=current_user._get_current_object(),
            promised_date=day,
            as_of=business_today(),
        )
        if result.recorded:
            total = sum((p.amount for p in result.recorded), Decimal(0))
            flash(
                f"{len(result.recorded)} promise{'s' if len(result.recorded) != 1 else ''} "
                f"for {day:%d/%m/%Y}, KES {total:,.2f} in all.",
                "success",
            )
        for loan_no, why in result.refused:
            flash(f"{loan_no}: no promise: {why}", "error")
        return self._back()


class LeaderboardView(SecureMixin, BaseView):
    """Every role may read how the team is doing."""

    permission = "view"

    @expose("/")
    def index(self) -> str:
        today = business_today()
        raw = request.args.get("month", "")
        try:
            month = date.fromisoformat(f"{raw}-01") if raw else today
        except ValueError:
            month = today
        start, end = month_bounds(month)
        # One row per officer, worked out by grouped queries; a page of them is shown.
        everyone = team_leaderboard(month=start)
        page = max(request.args.get("page", 1, type=int) or 1, 1)
        first = (page - 1) * LEADERS_PAGE
        return self.render(
            "admin_sacco/desk_leaderboard.html",
            rows=everyone[first : first + LEADERS_PAGE],
            first=first,
            page=page,
            pages=max((len(everyone) + LEADERS_PAGE - 1) // LEADERS_PAGE, 1),
            month=start,
            previous=month_bounds(start - timedelta(days=1))[0],
            following=end if end <= today else None,
        )


def register(console: Admin) -> None:
    console.add_view(
        DeskView(name="Officer desk", category="Collections", endpoint="desk", url="desk")
    )
    console.add_view(
        LeaderboardView(
            name="Leaderboard",
            category="Collections",
            endpoint="leaderboard",
            url="desk/leaderboard",
        )
    )
