"""Staff login for the console; every view requires it.

A console session is the signed Flask session cookie holding the staff id, the session
version it was signed in under (app/services/staff.py bumps it at sign-out, password
change or reset, role change and deactivation), when it was signed in and when it was
last seen. The user loader accepts it only while the version is current, it is younger
than SESSION_ABSOLUTE and it was seen within SESSION_IDLE; the last-seen stamp is
rewritten at most once a SEEN_EVERY, so a page's many requests do not each rewrite the
cookie.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from flask import Flask, current_app, flash, redirect, render_template, request, session, url_for
from flask_admin import AdminIndexView, BaseView, expose
from flask_admin.contrib.sqla import ModelView
from flask_admin.form import SecureForm
from flask_admin.model import typefmt
from flask_login import current_user, login_user, logout_user
from sqlalchemy import BigInteger, inspect
from werkzeug.wrappers import Response
from wtforms import PasswordField, StringField

from app.csvout import csv_cell
from app.errors import SaccoError
from app.extensions import db, login_manager
from app.models import (
    Account,
    AuditLog,
    Installment,
    JournalEntry,
    JournalLine,
    Loan,
    MpesaCallback,
    MpesaRequest,
    Payment,
    SmsInbound,
    SmsMessage,
    StaffUser,
)
from app.money import money_text
from app.services.audit import audit_record
from app.services.permissions import describe, permitted
from app.services.staff import (
    StaffError,
    staff_authenticate,
    staff_change_password,
    staff_logout,
)

SESSION_ABSOLUTE = timedelta(hours=10)  # a working day, however busy
SESSION_IDLE = timedelta(hours=1)  # a console left open over lunch asks again
SEEN_EVERY = timedelta(minutes=1)
_VERSION, _SINCE, _SEEN = "staff_session_version", "staff_signed_in_at", "staff_seen_at"
# Pages a staff member who must change their password may still reach.
_WHILE_MUST_CHANGE = {"admin.password_view", "admin.logout_view", "admin.login_view"}


def _session_start(user: StaffUser) -> None:
    now = int(time.time())
    session[_VERSION], session[_SINCE], session[_SEEN] = user.session_version, now, now


def _session_end() -> None:
    for key in (_VERSION, _SINCE, _SEEN):
        session.pop(key, None)


def _session_current(user: StaffUser) -> bool:
    """This request's session may act as `user`: signed in under their current session
    version, within the absolute and the idle limits."""
    version, since, seen = session.get(_VERSION), session.get(_SINCE), session.get(_SEEN)
    if not (isinstance(version, int) and isinstance(since, int) and isinstance(seen, int)):
        return False
    now = time.time()
    if version != user.session_version or not user.active:
        return False
    if now - since > SESSION_ABSOLUTE.total_seconds() or now - seen > SESSION_IDLE.total_seconds():
        return False
    if now - seen >= SEEN_EVERY.total_seconds():
        session[_SEEN] = int(now)
    return True


def init_login(app: Flask) -> None:
    login_manager.login_view = "admin.login_view"

    @login_manager.user_loader
    def _load(user_id: str) -> StaffUser | None:
        user = (
            db.session.get(StaffUser, int(user_id))
            if user_id.isdigit() and len(user_id) < 10
            else None
        )
        if user is None or not _session_current(user):
            # Ended (sign-out elsewhere, a password change, too old, idle): the visitor
            # is anonymous and goes to the login page.
            session.pop("_user_id", None)
            _session_end()
            return None
        return user

    @app.before_request
    def _must_change_password() -> Response | None:
        # After an admin's reset the console is only the change-password page (and
        # sign-out) until the staff member has chosen their own password.
        if not request.path.startswith("/admin") or request.endpoint in _WHILE_MUST_CHANGE:
            return None
        if (request.endpoint or "").endswith(".static"):
            return None
        if current_user.is_authenticated and current_user.must_change_password:
            return redirect(url_for("admin.password_view"))
        return None

    @app.context_processor
    def _can() -> dict[str, object]:
        # Pages show only the buttons the signed-in role may use: {% if can("loan.approve") %}
        # and every hand-written form carries {{ csrf_field() }}.
        return {
            "can": lambda action: permitted(current_user, action),
            "csrf_field": lambda: TokenForm().csrf_token,
        }


def actor() -> str:
    """How the audit log names the staff member acting now."""
    return f"staff:{current_user.email}" if current_user.is_authenticated else "system"


def forbidden(
    needs: str, view: BaseView | None = None, words: str | None = None
) -> tuple[str, int]:
    """The 403 page for a signed-in staff member whose role lacks `needs`; the attempt is
    audited, since a button hidden from a role is only ever reached by a typed URL.
    `words` replace the permission's own (for what no role may do)."""
    db.session.rollback()
    audit_record(
        actor=actor(),
        action="access.denied",
        object_type="console",
        object_id=request.path[:255],
        after={"needs": needs, "method": request.method, "role": current_user.role},
    )
    db.session.commit()
    words = words or describe(needs)
    render = view.render if view is not None else render_template
    return render("admin_sacco/forbidden.html", words=words), 403


def require(action: str, view: BaseView | None = None) -> tuple[str, int] | None:
    """None when the signed-in staff member may do `action`, else the 403 page to return."""
    return None if permitted(current_user, action) else forbidden(action, view)


def form_post(
    view: BaseView, needs: str, back: str, act: Callable[[], str | tuple[str, str | None]]
) -> Any:
    """A console form's POST: the CSRF token, then the role (403, audited), then the one
    service call `act`; a refusal (SaccoError) is rolled back and flashed in its words.
    `act` returns what was done, or that and where to go next (None: `back`)."""
    if not TokenForm(request.form).validate():
        flash("The form expired; please try again.", "error")
        return redirect(back)
    refused = require(needs, view)
    if refused is not None:
        return refused
    try:
        done = act()
    except SaccoError as exc:
        db.session.rollback()
        flash(f"Not done: {exc}.", "error")
        return redirect(back)
    if isinstance(done, tuple):
        done, then = done
        back = then or back
    flash(done, "success")
    return redirect(back)


class SecureMixin:
    """A console page: signed-in staff whose role has `permission` (see
    app/services/permissions.py); others get the login page or a 403."""

    permission: str = "view"

    def is_accessible(self) -> bool:
        return bool(current_user.is_authenticated) and permitted(current_user, self.permission)

    def inaccessible_callback(self, name: str, **kwargs: object) -> Response | tuple[str, int]:
        if current_user.is_authenticated:
            return forbidden(self.permission, self)  # type: ignore[arg-type]
        return redirect(url_for("admin.login_view", next=request.full_path))


def _kenyan_time(view: object, value: datetime, name: str) -> str:
    """Staff read Kenyan time to the minute, not UTC with microseconds."""
    if value.tzinfo is None:
        return value.strftime("%Y-%m-%d %H:%M")
    return value.astimezone(current_app.config["SETTINGS"].tz).strftime("%Y-%m-%d %H:%M")


def _money(view: object, value: Decimal, name: str) -> str:
    return money_text(value)


SACCO_FORMATTERS = {
    **typefmt.BASE_FORMATTERS,
    datetime: _kenyan_time,
    Decimal: _money,
}
SACCO_DETAIL_FORMATTERS = {
    **typefmt.DETAIL_FORMATTERS,
    datetime: _kenyan_time,
    Decimal: _money,
}


_CHANGES = {"create_view": "create", "edit_view": "edit", "delete_view": "delete"}
# Rows that are the books or their evidence: never deleted from the console, by any role
# (a correction is a new entry, a reversal, a status; the audit log is append-only).
NEVER_DELETED = (
    Account,
    JournalEntry,
    JournalLine,
    Payment,
    MpesaRequest,
    MpesaCallback,
    SmsMessage,
    SmsInbound,
    Loan,
    Installment,
    AuditLog,
)
_REFUSED_WORDS = {
    "create": "add records to this list (no role may)",
    "edit": "change records in this list here (no role may)",
    "delete": "delete records from this list (no role may)",
    "action": "run that action on this list (no role may)",
    "export": "export this list (no role may)",
}
_INT_LIMIT = {False: 2**31 - 1, True: 2**63 - 1}  # Integer, BigInteger


def _readable_id(model: type, value: Any) -> bool:
    """Whether `value` can name a row of `model` at all: an integer key given as digits
    within the column's range. Anything else names nothing (PostgreSQL would refuse it
    with an error rather than find no row)."""
    keys: tuple[Any, ...] = tuple(inspect(model).primary_key)
    if len(keys) != 1:
        return True
    try:
        python_type = keys[0].type.python_type
    except NotImplementedError:
        return True
    if not issubclass(python_type, int):
        return True
    text = str(value)
    if not text.isascii() or not text.isdigit():
        return False
    return int(text) <= _INT_LIMIT[isinstance(keys[0].type, BigInteger)]


class SecureModelView(SecureMixin, ModelView):
    """Read-only unless a view names `edit_permission` and what it allows (`editable`):
    money changes go through services, never through a form save. A create, edit,
    delete, bulk action or export the signed-in role may not do answers 403 and is
    audited (Flask-Admin would quietly redirect); rows in NEVER_DELETED are deletable by
    no one. Every export goes through the one CSV writer's cell rule (app/csvout.py)."""

    def __init__(self, model: type, *args: Any, **kwargs: Any) -> None:
        if "delete" in self.editable and issubclass(model, NEVER_DELETED):
            raise TypeError(f"{model.__name__} rows are never deleted from the console")
        super().__init__(model, *args, **kwargs)

    form_base_class = SecureForm  # CSRF on every create/edit form
    column_type_formatters = SACCO_FORMATTERS
    column_type_formatters_detail = SACCO_DETAIL_FORMATTERS

    edit_permission: str | None = None
    editable: tuple[str, ...] = ()  # of "create", "edit", "delete"
    can_view_details = True
    page_size = 50
    can_set_page_size = False  # no page loads an unbounded list

    def _may(self, change: str) -> bool:
        return (
            change in self.editable
            and self.edit_permission is not None
            and permitted(current_user, self.edit_permission)
        )

    # Flask-Admin reads these when it draws the buttons and when it serves the forms, so
    # a role without the permission sees no button and cannot post the form either.
    @property
    def can_create(self) -> bool:  # type: ignore[override]
        return self._may("create")

    @property
    def can_edit(self) -> bool:  # type: ignore[override]
        return self._may("edit")

    @property
    def can_delete(self) -> bool:  # type: ignore[override]
        return self._may("delete") and not issubclass(self.model, NEVER_DELETED)

    def _refuse(self, change: str) -> tuple[str, int]:
        if change in self.editable and self.edit_permission is not None:
            return forbidden(self.edit_permission, self)
        return forbidden(f"{self.endpoint}.{change}", self, _REFUSED_WORDS[change])

    def _handle_view(self, name: str, **kwargs: object) -> object:
        refused = super()._handle_view(name, **kwargs)
        if refused is not None:
            return refused
        change = _CHANGES.get(name)
        if change == "delete" and not self.can_delete:
            return self._refuse("delete")
        if change is not None and change != "delete" and not self._may(change):
            return self._refuse(change)
        if name == "action_view":
            action = request.form.get("action", "")
            if action not in self._actions_data or not self.is_action_allowed(action):
                return self._refuse("delete" if action == "delete" else "action")
        if name == "export" and (
            not self.can_export or kwargs.get("export_type") not in self.export_types
        ):
            return self._refuse("export")
        return None

    def get_one(self, id: Any) -> Any:
        # A malformed or out-of-range id names no row: Flask-Admin then says "Record does
        # not exist" over the list, instead of the database answering with an error.
        return super().get_one(id) if _readable_id(self.model, id) else None

    def get_export_value(self, model: Any, name: Any) -> str:
        return csv_cell(super().get_export_value(model, name))


class SaccoIndexView(AdminIndexView):
    @expose("/")
    def index(self) -> Response | str:
        if not current_user.is_authenticated:
            return redirect(url_for(".login_view"))
        from admin.dashboard import render_dashboard  # the dashboard imports views; not here

        return render_dashboard(self)

    @expose("/login", methods=("GET", "POST"))
    def login_view(self) -> Response | str:
        error = None
        form = LoginForm(request.form)
        if request.method == "POST":
            try:
                if not form.validate():
                    raise StaffError("The form expired; please sign in again.")
                user = staff_authenticate(
                    email=form.email.data or "",
                    password=form.password.data or "",
                    address=request.remote_addr,
                )
            except StaffError as exc:
                error = str(exc)
            else:
                login_user(user)
                _session_start(user)
                session.permanent = True  # ends after PERMANENT_SESSION_LIFETIME
                target = request.args.get("next") or ""
                # Only local paths: an open redirect would hand a phished login away.
                # Browsers drop tabs and newlines and read a backslash as "/", so a tab
                # between two slashes makes "//evil.example".
                if (
                    not target.startswith("/")
                    or target.startswith("//")
                    or any(ch == "\\" or not ch.isprintable() or ch.isspace() for ch in target)
                ):
                    target = url_for(".index")
                return redirect(target)
        return self.render("admin_sacco/login.html", error=error, form=form)

    @expose("/logout", methods=("POST",))
    def logout_view(self) -> Response:
        # A POST with the CSRF token: a link on another site cannot sign staff out.
        if current_user.is_authenticated and TokenForm(request.form).validate():
            staff_logout(user=current_user._get_current_object(), address=request.remote_addr)
            logout_user()
            _session_end()
        return redirect(url_for(".login_view"))

    @expose("/password", methods=("GET", "POST"))
    def password_view(self) -> Response | str:
        if not current_user.is_authenticated:
            return redirect(url_for(".login_view", next=request.full_path))
        form = PasswordForm(request.form)
        error = None
        if request.method == "POST":
            try:
                if not form.validate():
                    raise StaffError("The form expired; please try again.")
                version = staff_change_password(
                    user=current_user._get_current_object(),
                    current=form.current.data or "",
                    new=form.new.data or "",
                    repeat=form.repeat.data or "",
                )
            except StaffError as exc:
                db.session.rollback()
                error = str(exc)
            else:
                # This session carries on under the new version; every other one (a
                # copied cookie, another device) has ended.
                session[_VERSION] = version
                flash(
                    "Your password is changed. Other sessions of yours are signed out.", "success"
                )
                return redirect(url_for(".index"))
        return self.render(
            "admin_sacco/password.html",
            error=error,
            form=form,
            must_change=current_user.must_change_password,
        )


class TokenForm(SecureForm):
    """Only the CSRF token: for buttons that post nothing else."""


class LoginForm(SecureForm):
    email = StringField()
    password = PasswordField()


class PasswordForm(SecureForm):
    current = PasswordField()
    new = PasswordField()
    repeat = PasswordField()
