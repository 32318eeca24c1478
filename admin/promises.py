"""Promises to pay in the console."""

from __future__ import annotations

from flask_admin import Admin


def register(console: Admin) -> None:
    """Nothing yet."""
