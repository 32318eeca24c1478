"""Thin blueprints: parse, call one service, answer."""

from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from app.metrics import init_metrics
    from app.web.health import bp as health_bp
    from app.web.home import bp as home_bp
    from app.web.payments import bp as payments_bp
    from app.web.sms import bp as sms_bp
    from app.web.ussd import bp as ussd_bp

    init_metrics(app)
    app.register_blueprint(home_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(sms_bp)
    app.register_blueprint(payments_bp)
    app.register_blueprint(ussd_bp)
    # A stand-in answers only while it is in use: with real credentials its pages (and
    # the Daraja one's state, which shows the callback token and STK passwords) are 404.
    settings = app.config["SETTINGS"]
    if settings.at_simulated:
        from app.simulators.africastalking import bp as at_simulator_bp

        app.register_blueprint(at_simulator_bp)
    if settings.mpesa_simulated:
        from app.simulators.daraja import bp as daraja_simulator_bp

        app.register_blueprint(daraja_simulator_bp)
