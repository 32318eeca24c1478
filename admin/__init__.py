"""The staff console at /admin: Flask-Admin behind a login."""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, flash, redirect, render_template, request
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme
from sqlalchemy.exc import DataError, SQLAlchemyError
from werkzeug.exceptions import InternalServerError
from werkzeug.wrappers import Response

from admin.auth import SaccoIndexView, init_login
from admin.views import register_views
from app.api import PREFIX as API_PREFIX
from app.api import problem
from app.extensions import db
from app.money import money_text
from app.words import plural

log = logging.getLogger(__name__)


def _database_error(
    exc: SQLAlchemyError,
) -> tuple[str, int] | InternalServerError | Response:
    """A database failure in the console is told in words, not as a stack trace; nothing
    half-done stays behind (the transaction is rolled back). Elsewhere it stays the 500
    Flask gives (the provider routes handle their own failures).

    A page asked for with a value the database cannot read (an id out of range, a NUL in
    a search or filter: PostgreSQL's DataError) is not a database failure: the list comes
    back without the search and filters, saying why, or, with nothing to drop, 404."""
    db.session.rollback()
    if request.path.startswith(API_PREFIX):
        return _api_unreadable() if isinstance(exc, DataError) else _api_database_error(exc)
    if isinstance(exc, DataError) and request.path.startswith("/admin") and request.method == "GET":
        log.info("unreadable value in %s: %s", request.path, type(exc.orig).__name__)
        if request.query_string:
            flash(
                "That search, filter or id holds a value that names nothing (a character or "
                "a number the database cannot read); here is the list without it.",
                "error",
            )
            return redirect(request.path)
        return render_template("admin_sacco/not_found.html"), 404
    log.error("database error on %s: %s", request.path, type(exc).__name__, exc_info=exc)
    if not request.path.startswith("/admin"):
        return InternalServerError()
    return render_template("admin_sacco/database_error.html", what=type(exc).__name__), 503


def _number_too_large(exc: OverflowError) -> tuple[str, int] | InternalServerError | Response:
    """SQLite's driver refuses an integer past 64 bits before the query runs (PostgreSQL
    answers a DataError, above): an id in a console path names nothing, so 404."""
    db.session.rollback()
    if request.path.startswith(API_PREFIX):
        return _api_unreadable()
    if not request.path.startswith("/admin"):
        return InternalServerError()
    return render_template("admin_sacco/not_found.html"), 404


def _api_unreadable() -> Response:
    # The API answers in problem documents, whoever's handler catches the error: a value
    # the database cannot read (an id past its range) names nothing, or cannot be taken.
    if request.method == "GET":
        return problem(404, "not_found", "a value in this request names nothing")
    return problem(422, "invalid", "a value in this request is out of range")


def _api_database_error(exc: SQLAlchemyError) -> Response:
    log.error("database error on %s: %s", request.path, type(exc).__name__, exc_info=exc)
    return problem(503, "database_unavailable", "the database could not answer; try again")


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
    app.register_error_handler(SQLAlchemyError, _database_error)
    app.register_error_handler(OverflowError, _number_too_large)
    # One way to show an amount on every page: thousands separators, cents kept.
    app.add_template_filter(money_text, "money")
    app.add_template_filter(plural, "plural")  # {{ n|plural("loan") }}: 1 loan, 2 loans
    console = Admin(
        app,
        name="SACCO console",
        index_view=SaccoIndexView(url="/admin"),
        # Our base adds who is signed in and a sign-out link to every page.
        theme=Bootstrap4Theme(base_template="admin_sacco/master.html"),
    )
    register_views(console)
    from admin import books

    books.register(console)  # Books: the financial statements and their drill-down
    from admin import regulatory

    regulatory.register(console)  # Books: SASRA's returns, filed and due
    from admin import books_periods

    books_periods.register(console)  # Books: periods, the chart, journal entries
    return console
