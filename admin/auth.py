"""Staff login for the console; every view requires it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from flask import Flask, current_app, flash, redirect, request, url_for
from flask_admin import AdminIndexView, expose
from flask_admin.contrib.sqla import ModelView
from flask_admin.form import SecureForm
from flask_admin.model import typefmt
from flask_login import current_user, login_user, logout_user
from werkzeug.wrappers import Response

from app.extensions import db, login_manager
from app.models import StaffUser
from app.services.staff import staff_authenticate


def init_login(app: Flask) -> None:
    login_manager.login_view = "admin.login_view"

    @login_manager.user_loader
    def _load(user_id: str) -> StaffUser | None:
        return db.session.get(StaffUser, int(user_id)) if user_id.isdigit() else None


def actor() -> str:
    """How the audit log names the staff member acting now."""
    return f"staff:{current_user.email}" if current_user.is_authenticated else "system"


class SecureMixin:
    """Views open to these roles only (all staff when None)."""

    roles: tuple[str, ...] | None = None

    def is_accessible(self) -> bool:
        if not current_user.is_authenticated:
            return False
        return self.roles is None or current_user.role in self.roles

    def inaccessible_callback(self, name: str, **kwargs: object) -> Response:
        if current_user.is_authenticated:
            flash("Your role does not open that page.", "error")
            return redirect(url_for("admin.index"))
        return redirect(url_for("admin.login_view", next=request.full_path))


def _kenyan_time(view: object, value: datetime, name: str) -> str:
    """Staff read Kenyan time to the minute, not UTC with microseconds."""
    if value.tzinfo is None:
        return value.strftime("%Y-%m-%d %H:%M")
    return value.astimezone(current_app.config["SETTINGS"].tz).strftime("%Y-%m-%d %H:%M")


def _money(view: object, value: Decimal, name: str) -> str:
    """Thousands separators; cents kept, finer places (a rate's 4 decimals) too."""
    return f"{value:,.2f}" if value == round(value, 2) else f"{value:,}"


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


class SecureModelView(SecureMixin, ModelView):
    """Read-only unless a view says otherwise: money changes go through services."""

    form_base_class = SecureForm  # CSRF on every create/edit form
    column_type_formatters = SACCO_FORMATTERS
    column_type_formatters_detail = SACCO_DETAIL_FORMATTERS

    can_create = False
    can_edit = False
    can_delete = False
    can_view_details = True
    page_size = 50


class SaccoIndexView(AdminIndexView):
    @expose("/")
    def index(self) -> Response | str:
        if not current_user.is_authenticated:
            return redirect(url_for(".login_view"))
        return super().index()

    @expose("/login", methods=("GET", "POST"))
    def login_view(self) -> Response | str:
        error = None
        if request.method == "POST":
            user = staff_authenticate(
                email=request.form.get("email", ""), password=request.form.get("password", "")
            )
            if user is not None:
                login_user(user)
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
            error = "Wrong email or password."
        return self.render("admin_sacco/login.html", error=error)

    @expose("/logout")
    def logout_view(self) -> Response:
        logout_user()
        return redirect(url_for(".login_view"))
