"""The console's landing page: the SACCO's figures at a glance, for every role.

The figures come from app/selectors/dashboard.py (aggregate queries only); the two charts
are drawn in the browser by Chart.js, vendored under admin/static/chartjs (no CDN: the
console must work offline), from the numbers embedded in the page as JSON.

The suspicious-activity alert (app/selectors/alerts.py) is shown to the roles that read the
audit log and to branch managers; each line links to the audit log filtered to what it
counts, for those who may open it (a branch manager reads the line without the link).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo

from flask import current_app, url_for
from flask_admin import AdminIndexView
from flask_admin.contrib.sqla.filters import FilterEqual, FilterInList, FilterNotInList
from flask_admin.model import BaseModelView
from flask_login import current_user

from admin.auth import require
from admin.day_filter import DayFrom, DayOn
from app.clock import business_today
from app.selectors.alerts import (
    FAILED_LOGIN_WINDOW,
    FAILED_LOGINS,
    LOGIN_FAILED,
    LOOKBACK_DAYS,
    RISKY_PER_DAY,
    Alert,
    suspicious_activity,
)
from app.selectors.dashboard import AWAITING_DECISION, BUCKETS, PAR_BUCKETS, dashboard_figures
from app.services.books.kpis import KPIS, kpis_board
from app.services.permissions import permitted
from app.services.webhooks import webhooks_disabled


def list_url(view: AdminIndexView, endpoint: str, column: str, *values: str) -> str | None:
    """The list page of `endpoint` filtered to `column` in `values`, or unfiltered when
    that list has no such filter, or None when there is no such page. Flask-Admin numbers
    its filters, so the filter's argument is looked up rather than written down here."""
    for page in view.admin._views:
        if page.endpoint != endpoint or not isinstance(page, BaseModelView):
            continue
        target = f"{endpoint}.index_view"
        for index, flt in enumerate(page._filters or ()):
            if (
                getattr(getattr(flt, "column", None), "key", None) == column
                and isinstance(flt, FilterInList)
                and not isinstance(flt, FilterNotInList)
            ):
                arg = f"flt0_{page.get_filter_arg(index, flt)}"
                return url_for(target, **{arg: ",".join(values)})
        return url_for(target)
    return None


def page_url(view: AdminIndexView, endpoint: str) -> str | None:
    """The index of the console page `endpoint`, or None when the console has none."""
    for page in view.admin._views:
        if page.endpoint == endpoint:
            index = "index_view" if isinstance(page, BaseModelView) else "index"
            return url_for(f"{endpoint}.{index}")
    return None


def audit_url(view: AdminIndexView, **wanted: str | date) -> str | None:
    """The audit log filtered to each `column=value` given (an exact match; a date is the
    Kenyan day of `at`: `on=` that day or `since=` it), or None when the console has no
    audit log. A filter the log does not offer is left out rather than guessed."""
    for page in view.admin._views:
        if page.endpoint != "auditlog" or not isinstance(page, BaseModelView):
            continue
        args: dict[str, str] = {}
        for column, value in wanted.items():
            kind: type = FilterEqual
            if column in ("on", "since"):
                kind, column = (DayOn if column == "on" else DayFrom), "at"
            for index, flt in enumerate(page._filters or ()):
                if (
                    getattr(getattr(flt, "column", None), "key", None) == column
                    and type(flt) is kind
                ):
                    text = value.isoformat() if isinstance(value, date) else value
                    args[f"flt{len(args)}_{page.get_filter_arg(index, flt)}"] = text
                    break
        return url_for("auditlog.index_view", **args)
    return None


def alerts_visible() -> bool:
    """Those who read the audit log, and branch managers (who act on what it shows)."""
    return permitted(current_user, "audit.view") or current_user.role == "branch_manager"


def alert_lines(view: AdminIndexView, alerts: list[Alert], today: date) -> list[dict[str, object]]:
    """Each alert in words, with the audit log filtered to what it counts."""
    tz = current_app.config["SETTINGS"].tz
    since = today - timedelta(days=LOOKBACK_DAYS - 1)

    def when(moment: datetime) -> str:
        return moment.astimezone(tz).strftime("%a %d %b %H:%M")

    lines = []
    for a in alerts:
        who = a.who.removeprefix("staff:")
        span = f"{when(a.first)} to {when(a.last)}"
        if a.rule == "failed_logins_email":
            text = f"{a.count} failed sign-ins for {who} ({span})"
            url = audit_url(view, action=LOGIN_FAILED, object_id=a.who, since=_day(a.first, tz))
        elif a.rule == "failed_logins_address":
            text = f"{a.count} failed sign-ins from address {who} ({span})"
            url = audit_url(view, action=LOGIN_FAILED, since=_day(a.first, tz))
        elif a.rule == "risky_actions":
            day = a.day or _day(a.first, tz)
            text = f"{a.count} write-off or reversal actions by {who} on {day:%a %d %b}"
            url = audit_url(view, actor=a.who, on=day)
        else:
            actions = "action" if a.count == 1 else "actions"
            text = f"{a.count} {actions} by {who} outside working hours ({span})"
            url = audit_url(view, actor=a.who, since=since)
        lines.append({"rule": a.rule, "text": text, "url": url})
    return lines


def _day(moment: datetime, tz: tzinfo) -> date:
    return moment.astimezone(tz).date()


def render_dashboard(view: AdminIndexView) -> str | tuple[str, int]:
    refused = require("view", view)
    if refused is not None:
        return refused
    figures = dashboard_figures(today=business_today(), tz=current_app.config["SETTINGS"].tz)
    # Amounts go to the page as strings (exact); the chart script turns them into numbers
    # only to draw them.
    charts = {
        "aging": {
            "labels": list(BUCKETS),
            "amounts": [str(figures.buckets[b].amount) for b in BUCKETS],
            "loans": [figures.buckets[b].count for b in BUCKETS],
        },
        "collections": {
            "labels": [day.strftime("%d %b") for day, _ in figures.collections_by_day],
            "amounts": [str(amount) for _, amount in figures.collections_by_day],
        },
    }
    links = {
        # The applications queue (eligibility beside each loan) when there is one.
        "pending": page_url(view, "applications")
        or list_url(view, "loan", "status", *AWAITING_DECISION),
        "submitted": list_url(view, "loan", "status", "submitted"),
        "recommended": list_url(view, "loan", "status", "recommended"),
        "live": list_url(view, "loan", "status", "active", "restructured"),
        "par": list_url(view, "loan", "aging_bucket", *PAR_BUCKETS),
        # The suspense page (with its assign action) when there is one, else the payments.
        "suspense": list_url(view, "suspense", "status", "suspense")
        or list_url(view, "payment", "status", "suspense"),
        "sms_failed": list_url(view, "smsmessage", "status", "failed"),
        "members": list_url(view, "member", "status", "active"),
    }
    alerts = None
    if alerts_visible():
        now = datetime.now(UTC)
        found = suspicious_activity(now=now, tz=current_app.config["SETTINGS"].tz)
        alerts = alert_lines(view, found, figures.today)
    # The books' KPIs, for the roles that read finance: a few rows of kpi_snapshots (the
    # nightly books-kpis job), never the journal.
    finance = kpis_board() if permitted(current_user, "books.view") else None
    # Webhook subscriptions disabled for failing: the admins who can fix and enable them.
    webhooks_off = webhooks_disabled() if permitted(current_user, "api.manage") else []
    return view.render(
        "admin_sacco/dashboard.html",
        d=figures,
        finance=finance,
        kpi_names=KPIS,
        charts=charts,
        links=links,
        buckets=BUCKETS,
        alerts=alerts,
        webhooks_off=webhooks_off,
        webhooks_url=page_url(view, "webhook_admin"),
        alert_rules={
            "failed_logins": FAILED_LOGINS,
            "failed_login_hours": int(FAILED_LOGIN_WINDOW.total_seconds() // 3600),
            "risky_per_day": RISKY_PER_DAY,
            "days": LOOKBACK_DAYS,
        },
    )
