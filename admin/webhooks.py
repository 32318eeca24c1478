"""Webhooks in the console (admin only, api.manage): every subscription with its client,
events and standing (a disabled one says why, and an enable button), and the latest
deliveries with their status, attempts and the receiver's answer, each re-sendable. The
services (app/services/webhooks.py) check the role again and write the audit rows."""

from __future__ import annotations

from datetime import datetime

from flask import abort, request, url_for
from flask_admin import Admin, BaseView, expose
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from admin.auth import SecureMixin, _kenyan_time, form_post
from app.extensions import db
from app.models import WebhookDelivery, WebhookSubscription
from app.services.webhooks import DELETED, EVENTS, webhook_enable, webhook_resend

PAGE = 50  # deliveries shown
BADGES = {
    "pending": "secondary",
    "sending": "info",
    "retrying": "warning",
    "sent": "success",
    "failed": "danger",
}


def when(moment: datetime | None) -> str:
    return _kenyan_time(None, moment, "") if moment is not None else ""


class WebhookView(SecureMixin, BaseView):
    """Only an admin reads the subscriptions and deliveries and acts on them."""

    permission = "api.manage"

    @expose("/")
    def index(self) -> str:
        subscriptions = db.session.scalars(
            select(WebhookSubscription).order_by(WebhookSubscription.id.desc())
        ).unique()
        deliveries = select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(PAGE)
        chosen = request.args.get("subscription", type=int)
        if chosen is not None:
            deliveries = deliveries.where(WebhookDelivery.subscription_id == chosen)
        status = request.args.get("status")
        if status in BADGES:
            deliveries = deliveries.where(WebhookDelivery.status == status)
        return self.render(
            "admin_sacco/webhook_list.html",
            subscriptions=list(subscriptions),
            deliveries=db.session.scalars(deliveries).all(),
            chosen=chosen,
            status=status if status in BADGES else None,
            statuses=list(BADGES),
            badges=BADGES,
            events=EVENTS,
            deleted=DELETED,
            when=when,
        )

    @expose("/deliveries/<int:delivery_id>")
    def delivery(self, delivery_id: int) -> str:
        found = db.session.get(WebhookDelivery, delivery_id)
        if found is None:
            abort(404)
        return self.render(
            "admin_sacco/webhook_delivery.html",
            delivery=found,
            subscription=db.session.get(WebhookSubscription, found.subscription_id),
            badges=BADGES,
            when=when,
        )

    @expose("/deliveries/<int:delivery_id>/resend", methods=("POST",))
    def resend(self, delivery_id: int) -> Response:
        def act() -> str:
            webhook_resend(delivery_id=delivery_id, staff=current_user._get_current_object())
            return f"Delivery {delivery_id} is queued to be sent again."

        return form_post(self, "api.manage", url_for(".delivery", delivery_id=delivery_id), act)

    @expose("/subscriptions/<int:subscription_id>/enable", methods=("POST",))
    def enable(self, subscription_id: int) -> Response:
        def act() -> str:
            subscription = webhook_enable(
                subscription_id=subscription_id, staff=current_user._get_current_object()
            )
            return (
                f"Subscription {subscription.id} ({subscription.url}) is enabled: new events "
                "go to it; re-send the deliveries it missed from their pages."
            )

        return form_post(self, "api.manage", url_for(".index"), act)


def register(console: Admin) -> None:
    console.add_view(
        WebhookView(name="Webhooks", category="Admin", endpoint="webhook_admin", url="webhooks")
    )
