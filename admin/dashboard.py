"""The console's landing page: the SACCO's figures at a glance, for every role.

The figures come from app/selectors/dashboard.py (aggregate queries only); the two charts
are drawn in the browser by Chart.js, vendored under admin/static/chartjs (no CDN: the
console must work offline), from the numbers embedded in the page as JSON.
"""

from __future__ import annotations

from flask import current_app, url_for
from flask_admin import AdminIndexView
from flask_admin.contrib.sqla.filters import FilterInList, FilterNotInList
from flask_admin.model import BaseModelView

from admin.auth import require
from app.clock import business_today
from app.selectors.dashboard import AWAITING_DECISION, BUCKETS, PAR_BUCKETS, dashboard_figures


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
    return view.render(
        "admin_sacco/dashboard.html", d=figures, charts=charts, links=links, buckets=BUCKETS
    )
