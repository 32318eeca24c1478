"""Staff users (admins) and the audit log (compliance, auditors and admins).

The audit log is read-only and exports as CSV; staff users change only through the
audited services in app/services/staff.py, never through a form save, and no page shows
a password hash.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flask import current_app, flash, redirect, request, url_for
from flask_admin import Admin, expose
from flask_admin.form import SecureForm
from flask_admin.model import typefmt
from flask_login import current_user
from werkzeug.wrappers import Response
from wtforms import HiddenField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import Optional

from admin.auth import SecureModelView, actor, require
from admin.day_filter import day_filters
from app.errors import SaccoError
from app.extensions import db
from app.models import AuditLog, StaffUser
from app.models.member import STAFF_ROLES
from app.money import money_text
from app.services.staff import (
    MIN_PASSWORD,
    StaffError,
    staff_add,
    staff_reset_password,
    staff_set_accept_limit,
    staff_set_active,
    staff_set_role,
)

EXPORT_MAX_ROWS = 50_000  # one export's ceiling: filter by date for more


def _short_json(view: object, context: object, model: AuditLog, name: str) -> str:
    value = getattr(model, name)
    if value is None:
        return ""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _export_time(view: object, value: datetime, name: str) -> str:
    # The export keeps the seconds (an auditor lines events up); Kenyan time, as the list.
    return value.astimezone(current_app.config["SETTINGS"].tz).strftime("%Y-%m-%d %H:%M:%S")


class AuditView(SecureModelView):
    """Who did what, newest first. Read-only for everyone; exported as CSV by the roles
    that may read it (the whole view, export included, answers 403 to the others)."""

    permission = "audit.view"
    column_list = ("at", "actor", "action", "object_type", "object_id", "after", "note")
    column_labels = {"at": "At (Kenyan time)", "object_type": "Object", "object_id": "Object id"}
    column_default_sort = ("id", True)
    column_sortable_list = ("at", "actor", "action", "object_type", "object_id")
    column_searchable_list = ("actor", "action", "object_id")
    column_filters = (
        "actor",
        "action",
        "object_type",
        "object_id",
        *day_filters(AuditLog.at, "At"),
    )
    column_formatters = {"after": _short_json}
    column_details_list = (
        "id",
        "at",
        "actor",
        "action",
        "object_type",
        "object_id",
        "before",
        "after",
        "note",
    )

    can_export = True
    export_types = ["csv"]
    export_max_rows = EXPORT_MAX_ROWS
    column_export_list = column_details_list
    column_formatters_export: dict[str, Any] = {}  # the whole before/after, not the list's cut
    column_type_formatters_export = {**typefmt.EXPORT_FORMATTERS, datetime: _export_time}

    def get_export_name(self, export_type: str = "csv") -> str:
        tz = current_app.config["SETTINGS"].tz
        return f"audit-log-{datetime.now(tz):%Y-%m-%d-%H%M}.{export_type}"


class StaffAddForm(SecureForm):
    email = StringField()
    name = StringField(validators=[Optional()])
    role = SelectField(choices=[SelectChoice(r, r.replace("_", " ")) for r in STAFF_ROLES])
    password = PasswordField()


class StaffManageForm(SecureForm):
    """One form for each change on a staff user's page; `action` says which."""

    action = HiddenField()
    role = StringField(validators=[Optional()])
    password = PasswordField(validators=[Optional()])
    limit = StringField(validators=[Optional()])


class StaffView(SecureModelView):
    """Admins list, add, re-role, deactivate and reset staff users; each change is one
    audited service call. The hash never leaves the database: it is in no column list."""

    permission = "staff.manage"
    column_list = ("email", "name", "role", "active", "created_at")
    column_details_list = column_list
    column_searchable_list = ("email", "name")
    column_filters = ("role", "active")
    column_default_sort = "email"
    column_formatters = {"role": lambda v, c, m, n: m.role.replace("_", " ")}
    list_template = "admin_sacco/staff_list.html"
    details_template = "admin_sacco/staff_details.html"

    def render(self, template: str, **kwargs: Any) -> str:
        if template == self.details_template:
            kwargs["manage_form"] = StaffManageForm()
            kwargs["roles"] = STAFF_ROLES
            kwargs["min_password"] = MIN_PASSWORD
        return super().render(template, **kwargs)

    @expose("/add", methods=("GET", "POST"))
    def add_view(self) -> Response | str | tuple[str, int]:
        form = StaffAddForm(request.form)
        error = None
        if request.method == "POST":
            refused = require("staff.manage", self)
            if refused is not None:
                return refused
            try:
                if not form.validate():
                    raise StaffError("The form expired; please try again.")
                user = staff_add(
                    email=form.email.data or "",
                    role=form.role.data or "",
                    password=form.password.data or "",
                    name=(form.name.data or "").strip(),
                    actor=actor(),
                )
            except SaccoError as exc:
                db.session.rollback()
                error = str(exc)
            else:
                flash(f"{user.email} can sign in now as {user.role.replace('_', ' ')}.", "success")
                return redirect(url_for(".details_view", id=user.id))
        return self.render(
            "admin_sacco/staff_add.html", form=form, error=error, min_password=MIN_PASSWORD
        )

    @expose("/manage/<int:user_id>", methods=("POST",))
    def manage_view(self, user_id: int) -> Response | tuple[str, int]:
        back = redirect(url_for(".details_view", id=user_id))
        form = StaffManageForm(request.form)
        if not form.validate():
            flash("The form expired; please try again.", "error")
            return back
        refused = require("staff.manage", self)
        if refused is not None:
            return refused
        me = current_user._get_current_object()
        action = form.action.data
        try:
            if action in ("deactivate", "reactivate"):
                user = staff_set_active(user_id=user_id, active=action == "reactivate", staff=me)
                done = f"{user.email} is {'active again' if user.active else 'deactivated'}."
            elif action == "role":
                user = staff_set_role(user_id=user_id, role=form.role.data or "", staff=me)
                done = f"{user.email} is now {user.role.replace('_', ' ')}."
            elif action == "limit":
                user = staff_set_accept_limit(user_id=user_id, limit=form.limit.data, staff=me)
                done = (
                    f"{user.email} may accept promises and settlements up to KES "
                    f"{money_text(user.accept_limit)} alone."
                    if user.accept_limit is not None
                    else f"{user.email} has no limit of their own."
                )
            elif action == "reset_password":
                user = staff_reset_password(
                    user_id=user_id, password=form.password.data or "", staff=me
                )
                done = (
                    f"The password of {user.email} is reset and their sessions are ended. "
                    "Give it to them in person; the console asks them to choose their own "
                    "at their next sign-in."
                )
            else:
                raise StaffError(f"unknown action {action!r}")
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Not done: {exc}", "error")
        else:
            flash(done, "success")
        return back


def register(console: Admin) -> None:
    console.add_view(AuditView(AuditLog, db, name="Audit log", category="Admin"))
    console.add_view(StaffView(StaffUser, db, name="Staff", category="Admin"))
