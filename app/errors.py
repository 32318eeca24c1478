"""One base for every domain error, so web, admin and CLI catch one thing.

A SaccoError means "refused, nothing written, the message says why" and is shown to the
person who asked; anything else is a fault. It stays a ValueError so callers written
before it keep working.
"""

from __future__ import annotations


class SaccoError(ValueError):
    """A domain rule refused the action; the message is for the person who asked."""
