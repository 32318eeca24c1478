"""Thin blueprints: parse, call one service, answer."""

from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from app.metrics import init_metrics
    from app.web.health import bp as health_bp

    init_metrics(app)
    app.register_blueprint(health_bp)
