""" "Today" is the business date in Kenya (`TIMEZONE`), never the host's date: a server on
UTC would otherwise start tomorrow's penalties three hours late, or yesterday's early."""

from __future__ import annotations

from datetime import date, datetime

from flask import current_app


def business_today() -> date:
    return datetime.now(current_app.config["SETTINGS"].tz).date()
