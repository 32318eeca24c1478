"""The resources of /api/v1, each a flask-smorest blueprint calling the existing services
and selectors (no second copy of a rule)."""

from __future__ import annotations

from flask_smorest import Blueprint

from app.api.resources.accounts import blp as accounts_blp
from app.api.resources.loans import blp as loans_blp
from app.api.resources.members import blp as members_blp
from app.api.resources.webhooks import blp as webhooks_blp

BLUEPRINTS: list[Blueprint] = [members_blp, accounts_blp, loans_blp, webhooks_blp]
