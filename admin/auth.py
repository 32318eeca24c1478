"""Staff login for the console; every view requires it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from flask import Flask, current_app, flash, redirect, render_template, request, session, url_for
from flask_admin import AdminIndexView, BaseView, expose
from flask_admin.contrib.sqla import ModelView
from flask_admin.form import SecureForm
from flask_admin.model import typefmt
from flask_login import current_user, login_user, logout_user
from werkzeug.wrappers import Response
from wtforms import PasswordField, StringField

from app.extensions import db, login_manager
from app.models import StaffUser
from app.money import money_text
from app.services.audit import audit_record
from app.services.permissions import describe, permitted
from app.services.staff import (
    StaffError,
    staff_authenticate,
    staff_change_password,
    staff_logout,
)


def init_login(app: Flask) -> None:
    login_manager.login_view = "admin.login_view"

    @login_manager.user_loader
    def _load(user_id: str) -> StaffUser | None:
        return db.session.get(StaffUser, int(user_id)) if user_id.isdigit() else None

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


def forbidden(needs: str, view: BaseView | None = None) -> tuple[str, int]:
    """The 403 page for a signed-in staff member whose role lacks `needs`; the attempt is
    audited, since a button hidden from a role is only ever reached by a typed URL."""
    db.session.rollback()
    audit_record(
        actor=actor(),
        action="access.denied",
        object_type="console",
        object_id=request.path[:255],
        after={"needs": needs, "method": request.method, "role": current_user.role},
    )
    db.session.commit()
    words = describe(needs)
    render = view.render if view is not None else render_template
    return render("admin_sacco/forbidden.html", words=words), 403


def require(action: str, view: BaseView | None = None) -> tuple[str, int] | None:
    """None when the signed-in staff member may do `action`, else the 403 page to return."""
    return None if permitted(current_user, action) else forbidden(action, view)


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


class SecureModelView(SecureMixin, ModelView):
    """Read-only unless a view names `edit_permission` and what it allows (`editable`):
    money changes go through services, never through a form save."""

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
        return self._may("delete")

    def _handle_view(self, name: str, **kwargs: object) -> object:
        refused = super()._handle_view(name, **kwargs)
        if refused is not None:
            return refused
        change = _CHANGES.get(name)
        if change in self.editable and not self._may(change):
            # Flask-Admin would quietly redirect; the matrix says answer 403 and audit it.
            return forbidden(self.edit_permission or "view", self)
        return None


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
                staff_change_password(
                    user=current_user._get_current_object(),
                    current=form.current.data or "",
                    new=form.new.data or "",
                    repeat=form.repeat.data or "",
                )
            except StaffError as exc:
                db.session.rollback()
                error = str(exc)
            else:
                flash("Your password is changed.", "success")
                return redirect(url_for(".index"))
        return self.render("admin_sacco/password.html", error=error, form=form)


class TokenForm(SecureForm):
    """Only the CSRF token: for buttons that post nothing else."""


class LoginForm(SecureForm):
    email = StringField()
    password = PasswordField()


class PasswordForm(SecureForm):
    current = PasswordField()
    new = PasswordField()
    repeat = PasswordField()
