"""The annual dividend run in the console: declare the AGM's rates, read the preview (totals
and the 20 largest), a checker's approval, cancel, post, and the report.

Every role reads the runs. Each post checks the CSRF token, then the role (403, audited),
then calls one service in app/services/savings/dividends.py, which checks the role again,
guards the transition (maker-checker: the approver is not the declarer) and writes the
audit row; a refusal comes back in the service's words.

Posting walks every member's line (a partitioned close-of-business job), so the button
queues it on RQ (POST_JOB) and the page shows the run's status; with no Redis to queue
on, the request posts it itself.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

from flask import abort, flash, redirect, request, url_for
from flask_admin import Admin, BaseView, expose
from flask_admin.form import SecureForm
from flask_login import current_user
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job
from sqlalchemy import select
from werkzeug.wrappers import Response
from wtforms import HiddenField, SelectChoice, SelectField, StringField
from wtforms.validators import Optional

from admin.auth import SecureMixin, _kenyan_time, require
from app.clock import business_today
from app.errors import SaccoError
from app.extensions import db, enqueue, redis_client
from app.models import DividendRun, Member
from app.models.savings import DIVIDEND_METHODS, DIVIDEND_PAYOUTS
from app.selectors.dividends import dividend_runs, dividend_summary
from app.services.permissions import permitted
from app.services.savings.dividends import (
    DividendError,
    dividend_approve,
    dividend_cancel,
    dividend_declare,
    dividend_post,
    dividend_report,
)

log = logging.getLogger(__name__)

# The job the post button queues (a dotted path: this module never imports workers).
POST_JOB = "workers.dividends.dividend_run_post"

METHOD_WORDS = {
    "simple": "Simple: the balance at the year's end",
    "weighted": "Weighted: each month's balance earns for its month",
}
PAYOUT_WORDS = {
    "savings": "Credited to the member's savings",
    "mpesa": "Sent to the member by M-PESA",
    "arrears_first": "First to the member's loan arrears, the rest to savings",
}
BADGES = {
    "draft": "secondary",
    "approved": "primary",
    "posting": "warning",
    "posted": "success",
    "cancelled": "light",
}
REPORTS = {
    "csv": "text/csv",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}
# RQ job states in which a posting is still to come or going on.
WAITING = ("queued", "started", "deferred", "scheduled")
# What each button needs (app/services/permissions.py) and how its outcome reads.
ACTIONS = {
    "approve": ("dividend.approve", "approved"),
    "cancel": ("dividend.declare", "cancelled"),
    "post": ("dividend.approve", "queued for posting"),
}


class DeclareForm(SecureForm):
    """The AGM's resolution (CSRF-checked); the service checks every value."""

    year = StringField(validators=[Optional()])
    share_rate = StringField("Dividend on share capital, % a year", validators=[Optional()])
    deposit_rate = StringField("Interest on deposits, % a year", validators=[Optional()])
    method = SelectField(
        choices=[SelectChoice(m, METHOD_WORDS[m]) for m in DIVIDEND_METHODS], default="weighted"
    )
    payout = SelectField(
        choices=[SelectChoice(p, PAYOUT_WORDS[p]) for p in DIVIDEND_PAYOUTS], default="savings"
    )
    resolution_ref = StringField("AGM minute", validators=[Optional()])


class ActionForm(SecureForm):
    action = HiddenField()
    value_date = StringField(validators=[Optional()])


def post_job_id(run_id: int) -> str:
    return f"dividend-post-{run_id}"


def post_job_state(run_id: int) -> str | None:
    """Where the run's posting job is (queued, started, failed, finished...), None when
    none was queued or Redis cannot say: the page then shows the button."""
    try:
        job = Job.fetch(post_job_id(run_id), connection=redis_client())
        status = job.get_status(refresh=True)
    except (NoSuchJobError, RedisError):
        return None
    return None if status is None else str(getattr(status, "value", status))


def when(moment: datetime | None) -> str:
    return _kenyan_time(None, moment, "") if moment is not None else ""


def _value_date(raw: str | None) -> date:
    try:
        return date.fromisoformat((raw or "").strip())
    except ValueError:
        raise DividendError("the value date must be a date like 2026-01-31") from None


def _names(member_ids: list[int]) -> dict[int, tuple[str, str]]:
    """Member number and name of the preview's largest lines, in one query."""
    rows = db.session.execute(
        select(Member.id, Member.member_no, Member.name).where(Member.id.in_(member_ids))
    ).all()
    return {member_id: (no or "", name) for member_id, no, name in rows}


def approval_refused(run: DividendRun) -> str | None:
    """Why the signed-in staff member cannot approve this draft, in words; None if they
    can. The page says it where the button would be; the service refuses the same."""
    if run.status != "draft":
        return None
    if run.declared_by_id == current_user.id:
        return "You declared this run: a branch manager or admin other than you approves it."
    if not permitted(current_user, "dividend.approve"):
        return "Only a branch manager or an admin approves a dividend run."
    return None


class DividendView(SecureMixin, BaseView):
    """Every role reads the runs; the buttons and the posts follow the role."""

    permission = "view"

    @expose("/")
    def index(self) -> str:
        return self.render(
            "admin_sacco/dividend_list.html",
            runs=dividend_runs(limit=50),
            badges=BADGES,
            when=when,
        )

    @expose("/new", methods=("GET", "POST"))
    def new(self) -> Response | str | tuple[str, int]:
        refused = require("dividend.declare", self)
        if refused is not None:
            return refused
        form = DeclareForm(request.form)
        if request.method == "GET":
            form.year.data = str(business_today().year - 1)  # the AGM declares last year's
        error = None
        if request.method == "POST":
            if not form.validate():
                # Only the token can fail here (every box is checked by the service).
                if "csrf_token" in form.errors:
                    flash("The form expired; please try again.", "error")
                    return redirect(url_for(".new"))
                error = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
            else:
                try:
                    run = dividend_declare(
                        year=(form.year.data or "").strip(),  # type: ignore[arg-type]
                        share_rate=(form.share_rate.data or "").strip(),
                        deposit_rate=(form.deposit_rate.data or "").strip(),
                        method=form.method.data or "",
                        payout=form.payout.data or "",
                        staff=current_user._get_current_object(),
                        resolution_ref=form.resolution_ref.data,
                    )
                except SaccoError as exc:
                    db.session.rollback()
                    error = str(exc)
                else:
                    flash(
                        f"The {run.year} run is declared: check the preview, then a branch "
                        "manager approves it.",
                        "success",
                    )
                    return redirect(url_for(".details", run_id=run.id))
        return self.render("admin_sacco/dividend_new.html", form=form, error=error)

    @expose("/<int:run_id>")
    def details(self, run_id: int) -> str:
        try:
            run, top = dividend_summary(run_id)
        except LookupError:
            abort(404)
        year_end = date(run.year, 12, 31)
        return self.render(
            "admin_sacco/dividend_details.html",
            run=run,
            top=top,
            names=_names([line.member_id for line in top]),
            badges=BADGES,
            method_words=METHOD_WORDS,
            payout_words=PAYOUT_WORDS,
            action_form=ActionForm(),
            approval_refused=approval_refused(run),
            # The value date the post form offers: today, or the first day after the year.
            value_date=max(business_today(), year_end + timedelta(days=1)),
            job_state=post_job_state(run.id) if run.status in ("approved", "posting") else None,
            reports=REPORTS,
            when=when,
        )

    @expose("/<int:run_id>/act", methods=("POST",))
    def act(self, run_id: int) -> Response | tuple[str, int]:
        back = redirect(url_for(".details", run_id=run_id))
        form = ActionForm(request.form)
        if not form.validate():
            flash("The form expired; please try again.", "error")
            return back
        action = form.action.data or ""
        if action not in ACTIONS:
            flash("Choose what to do with the run.", "error")
            return back
        needs, done = ACTIONS[action]
        refused = require(needs, self)
        if refused is not None:
            return refused
        staff = current_user._get_current_object()
        try:
            if action == "approve":
                dividend_approve(run_id=run_id, staff=staff)
            elif action == "cancel":
                dividend_cancel(run_id=run_id, staff=staff)
            else:
                done = self._post(run_id, _value_date(form.value_date.data))
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Run {run_id} not {done}: {exc}", "error")
        else:
            flash(f"Run {run_id} {done}.", "success")
        return back

    def _post(self, run_id: int, value_date: date) -> str:
        """Queue the posting job; refuse first, in words, what the job would refuse."""
        run = db.session.get(DividendRun, run_id)
        if run is None:
            raise DividendError(f"no dividend run {run_id}")
        if run.status not in ("approved", "posting"):
            raise DividendError(
                f"the {run.year} run is {run.status}: only an approved run is posted"
            )
        if value_date <= date(run.year, 12, 31):
            raise DividendError(f"the value date must be after the end of {run.year}")
        if post_job_state(run_id) in WAITING:
            # A second click while the first job waits or runs: one job pays the run.
            raise DividendError("its posting is queued or under way already")
        db.session.rollback()  # nothing of this request's is left open while the job runs
        try:
            enqueue(
                "default",
                POST_JOB,
                run_id,
                value_date.isoformat(),
                job_id=post_job_id(run_id),
                job_timeout=6 * 3600,
            )
        except RedisError:
            # No queue: the staff member waits while it posts here.
            log.warning("no queue for dividend run %s: posting in the request", run_id)
            posted = dividend_post(run_id=run_id, value_date=value_date)
            return posted.status if posted.status == "posted" else "posted in part (see the note)"
        return "queued for posting: the status turns to posted when every line is paid"

    @expose("/<int:run_id>/report.<fmt>")
    def report(self, run_id: int, fmt: str) -> Response:
        if fmt not in REPORTS:
            abort(404)
        run = db.session.get(DividendRun, run_id)
        if run is None:
            abort(404)
        try:
            content = dividend_report(run_id, fmt)
        except SaccoError as exc:
            db.session.rollback()
            flash(f"No report: {exc}", "error")
            return redirect(url_for(".details", run_id=run_id))
        filename = f"dividends-{run.year}-run{run.id}.{fmt}"
        return Response(
            content,
            mimetype=REPORTS[fmt],
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )


def register(console: Admin) -> None:
    console.add_view(
        DividendView(
            name="Dividend runs", category="Savings", endpoint="dividends", url="dividends"
        )
    )
