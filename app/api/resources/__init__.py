"""The resources of /api/v1, each a flask-smorest blueprint calling the existing services
and selectors (no second copy of a rule)."""

from __future__ import annotations

from flask_smorest import Blueprint

from app.api.resources.accounts import blp as accounts_blp
from app.api.resources.guarantees import blp as guarantees_blp
from app.api.resources.loans import blp as loans_blp
from app.api.resources.members import blp as members_blp
from app.api.resources.payments import blp as payments_blp
from app.api.resources.promises import blp as promises_blp
from app.api.resources.webhooks import blp as webhooks_blp

BLUEPRINTS: list[Blueprint] = [
    members_blp,
    accounts_blp,
    loans_blp,
    payments_blp,
    promises_blp,
    guarantees_blp,
    webhooks_blp,
]
