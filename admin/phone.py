"""The phone page: a demo of the whole system in one tab, when the simulators are in use."""

from __future__ import annotations

from flask_admin import Admin


def register(console: Admin) -> None:
    """Nothing yet."""
