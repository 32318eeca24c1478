"""`GET /`: where a person who opens the server's address finds the way in."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template_string, url_for

bp = Blueprint("home", __name__)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SACCO channel server</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}
li{margin:.4rem 0}small{color:#555}</style></head>
<body><h1>SACCO channel server</h1>
<p>Members dial <b>{{ service_code }}</b>, text the SACCO and pay by M-PESA; staff work in the
console.</p>
<ul>
<li><a href="{{ url_for('admin.index') }}">Staff console</a> <small>/admin/</small></li>
{% for title, href, note in simulators %}
<li><a href="{{ href }}">{{ title }}</a> <small>{{ note }}</small></li>
{% endfor %}
<li><a href="{{ url_for('health.healthz') }}">Health</a>
  <small>/healthz: database and Redis</small></li>
<li><a href="{{ url_for('health.metrics') }}">Metrics</a> <small>/metrics: Prometheus</small></li>
</ul></body></html>
"""


@bp.get("/")
def home() -> str:
    settings = current_app.config["SETTINGS"]
    simulators = []
    if "simulator_at" in current_app.blueprints:
        simulators.append(
            (
                "Africa's Talking simulator",
                url_for("simulator_at.index"),
                "each phone's SMS inbox; text the SACCO as a member",
            )
        )
    if "simulator_daraja" in current_app.blueprints:
        simulators.append(
            (
                "M-PESA (Daraja) simulator",
                url_for("simulator_daraja.index"),
                "answer M-PESA prompts, pay the Paybill, choose outcomes per phone",
            )
        )
    return render_template_string(
        PAGE, service_code=settings.USSD_SERVICE_CODE, simulators=simulators
    )
