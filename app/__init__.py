"""The SACCO channel server: `create_app` builds the Flask app from settings."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from flask import Flask

from app.config import instance_folder, load_settings
from app.db_pool import ENGINE_OPTIONS
from app.extensions import db, init_redis, instance_protect, login_manager, migrate
from app.logs import configure_logging, init_request_ids


def create_app(overrides: Mapping[str, object] | None = None) -> Flask:
    app = Flask(__name__, instance_path=instance_folder(), instance_relative_config=True)
    instance_protect(app.instance_path)  # before any file in it is made: 0700 / 0600
    settings = load_settings(overrides=overrides, instance_path=app.instance_path)
    app.config.from_mapping(settings.as_flask_config())
    app.config.update(
        SQLALCHEMY_DATABASE_URI=settings.DATABASE_URL,
        # No ping on every checkout: app/db_pool.py says how dead connections are handled.
        SQLALCHEMY_ENGINE_OPTIONS=dict(ENGINE_OPTIONS),
        SETTINGS=settings,
        # The console's cookies: never readable by page scripts, not sent on cross-site
        # posts, and only over HTTPS in production. A staff session lasts a working day.
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.is_production,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=settings.is_production,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=10),
    )
    configure_logging(settings.LOG_LEVEL)
    if settings.TRUSTED_PROXIES:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Only the hops we run are believed: a client cannot forge its way into the
        # M-PESA allowlist with its own X-Forwarded-For. (Replacing wsgi_app is how Flask
        # documents adding middleware; mypy sees it as assigning to a method.)
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.TRUSTED_PROXIES)  # type: ignore[method-assign]

    from app import models  # noqa: F401  (register every table with the metadata)

    db.init_app(app)
    migrate.init_app(app, db, directory=_migrations_dir())
    init_redis(app)
    login_manager.init_app(app)
    init_request_ids(app)

    from app.web import register_blueprints

    register_blueprints(app)
    from app.api import init_api
    from app.api.auth import audit_api_call

    init_api(app)  # /api/v1, after the callbacks' and USSD's own routes
    app.after_request(audit_api_call)

    from admin import init_admin

    init_admin(app)

    from app.cli import register_cli

    register_cli(app)
    return app


def _migrations_dir() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parent.parent / "migrations")
