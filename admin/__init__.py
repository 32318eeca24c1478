"""The staff console at /admin: Flask-Admin behind a login."""

from __future__ import annotations

from flask import Blueprint, Flask
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme

from admin.auth import SaccoIndexView, init_login, money_text
from admin.views import register_views


def init_admin(app: Flask) -> Admin:
    """Build a fresh Admin per app (never a module global: tests create many apps)."""
    app.register_blueprint(
        # Our templates, and static files served from the package (no CDN: the console
        # must work offline): url_for("sacco_admin.static", filename=...).
        Blueprint(
            "sacco_admin",
            __name__,
            template_folder="templates",
            static_folder="static",
            static_url_path="/admin/sacco-static",
        )
    )
    init_login(app)
    # One way to show an amount on every page: thousands separators, cents kept.
    app.add_template_filter(money_text, "money")
    console = Admin(
        app,
        name="SACCO console",
        index_view=SaccoIndexView(url="/admin"),
        # Our base adds who is signed in and a sign-out link to every page.
        theme=Bootstrap4Theme(base_template="admin_sacco/master.html"),
    )
    register_views(console)
    return console
