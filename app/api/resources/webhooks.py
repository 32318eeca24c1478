"""Webhook subscriptions (scope webhooks:manage): subscribe a URL to events, list them,
delete one. The signing secret is in the answer to the POST only.

Each event needs the scope that reads what it carries (app.services.webhooks.EVENTS), on
the token that subscribes."""

from __future__ import annotations

from typing import Any, NoReturn

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, fields, validate

from app.api import PREFIX
from app.api.auth import require_scope
from app.api.common import PageArgs, page_schema, paginate, problems
from app.api.idempotency import idempotent
from app.extensions import db
from app.models import WebhookSubscription
from app.services.webhooks import (
    EVENTS,
    WebhookError,
    webhook_subscribe,
    webhook_subscription_get,
    webhook_subscriptions,
    webhook_unsubscribe,
)

blp = Blueprint(
    "webhooks",
    __name__,
    url_prefix=f"{PREFIX}/webhooks",
    description=(
        "Events posted to your URL, signed: X-Sacco-Signature is v1=<hex HMAC-SHA256 of "
        '"<X-Sacco-Timestamp>.<body>" with the subscription secret>. Events: '
        + ", ".join(f"{event} (needs {scope})" for event, scope in EVENTS.items())
        + "."
    ),
)


class WebhookSubscriptionIn(Schema):
    url = fields.String(
        required=True,
        validate=validate.Length(min=1, max=500),
        metadata={"example": "https://erp.example.co.ke/sacco/events"},
    )
    events = fields.List(
        fields.String(validate=validate.OneOf(list(EVENTS))),
        required=True,
        validate=validate.Length(min=1, max=len(EVENTS)),
        metadata={"example": ["payment.received"]},
    )


class WebhookSubscriptionOut(Schema):
    id = fields.Integer(required=True)
    url = fields.String(required=True)
    events = fields.List(fields.String(), required=True)
    active = fields.Boolean(required=True)
    failures = fields.Integer(
        required=True, metadata={"description": "deliveries failed in a row, after retries"}
    )
    disabled_at = fields.DateTime(allow_none=True, required=True)
    disabled_reason = fields.String(allow_none=True, required=True)
    created_at = fields.DateTime(required=True)


class WebhookSubscriptionCreated(WebhookSubscriptionOut):
    secret = fields.String(
        required=True, metadata={"description": "the signing secret; shown this once"}
    )


SubscriptionPage = page_schema(WebhookSubscriptionOut, "WebhookSubscriptionPage")


def _refuse(exc: WebhookError) -> NoReturn:
    db.session.rollback()
    abort(exc.status, message=str(exc), code=exc.code)
    raise AssertionError("abort raised")


@blp.route("")
class SubscriptionsView(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, SubscriptionPage)
    @problems(blp, 400, 401, 403)
    @require_scope("webhooks:manage")
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Your subscriptions, newest first (a disabled one says why)."""
        page = paginate(
            webhook_subscriptions(client=g.api_caller.client), WebhookSubscription.id, args
        )
        return {"items": page.items, "next_cursor": page.next_cursor}

    @blp.doc(security=[{"bearer": []}])
    @blp.arguments(WebhookSubscriptionIn)
    @blp.response(201, WebhookSubscriptionCreated)
    @problems(blp, 400, 401, 403, 409, 422)
    @require_scope("webhooks:manage")
    @idempotent
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Subscribe a URL (https) to events. Keep the secret from this answer: it signs
        every delivery and is never shown again."""
        caller = g.api_caller
        try:
            subscription, secret = webhook_subscribe(
                client=caller.client, url=body["url"], events=body["events"], scopes=caller.scopes
            )
        except WebhookError as exc:
            _refuse(exc)
        # Dumped here: @idempotent keeps the answer as sent, status and all.
        return {**WebhookSubscriptionOut().dump(subscription), "secret": secret}, 201


@blp.route("/<int:subscription_id>")
class SubscriptionView(MethodView):
    @blp.doc(security=[{"bearer": []}])
    @blp.response(200, WebhookSubscriptionOut)
    @problems(blp, 401, 403, 404)
    @require_scope("webhooks:manage")
    def get(self, subscription_id: int) -> WebhookSubscription:
        """One of your subscriptions."""
        try:
            return webhook_subscription_get(
                client=g.api_caller.client, subscription_id=subscription_id
            )
        except WebhookError as exc:
            _refuse(exc)

    @blp.doc(security=[{"bearer": []}])
    @blp.response(204)
    @problems(blp, 401, 403, 404)
    @require_scope("webhooks:manage")
    def delete(self, subscription_id: int) -> None:
        """Delete a subscription: nothing more is sent to it, queued deliveries included."""
        try:
            webhook_unsubscribe(client=g.api_caller.client, subscription_id=subscription_id)
        except WebhookError as exc:
            _refuse(exc)
