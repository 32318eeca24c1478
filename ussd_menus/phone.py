"""Menu 5, Update Phone Number: its screens, and the first hop of a dial from the new
number (which completes the change with the OTP)."""

from __future__ import annotations

from app.ussd.engine import End, Hop, Screen, Step
from ussd_menus.text import t

PHONE_SCREENS: dict[str, Screen] = {}


def phone_entry(hop: Hop) -> Step:
    """Main menu 5."""
    return End(t("not_yet", hop.session.language))


def phone_change_start(hop: Hop) -> Step | None:
    """A dial from a number that is no member's: a pending change to it? (None: no.)"""
    return None
