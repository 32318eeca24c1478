"""The console's landing page: the SACCO's figures at a glance."""

from __future__ import annotations

from flask_admin import AdminIndexView


def render_dashboard(view: AdminIndexView) -> str:
    """Not built yet: Flask-Admin's empty index page."""
    return view.render(view._template)
