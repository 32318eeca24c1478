"""Africa's Talking SMS callbacks (contracts/africastalking.md), form fields as sent.

Webhook schemas exclude unknown fields: the provider adds fields without notice. Only
what we cannot work without is required; lengths are not checked here because an odd
but well-formed callback is still stored (the service clips to the column widths).
"""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate


class _Webhook(Schema):
    class Meta:
        unknown = EXCLUDE


class SmsInboundSchema(_Webhook):
    """POST /sms/inbound: a member's text. `id` is what the provider retries with."""

    provider_id = fields.String(
        data_key="id", required=True, validate=validate.Length(min=1, max=64)
    )
    phone = fields.String(data_key="from", required=True, validate=validate.Length(min=1))
    to = fields.String(load_default=None)
    # An empty text is a real (if odd) message: kept, answered with HELP.
    text = fields.String(load_default="")
    link_id = fields.String(data_key="linkId", load_default=None)
    date = fields.String(load_default=None)
    network_code = fields.String(data_key="networkCode", load_default=None)
    cost = fields.String(load_default=None)


class SmsDeliveryReportSchema(_Webhook):
    """POST /sms/delivery-reports: what became of a message we sent (by its messageId)."""

    provider_message_id = fields.String(
        data_key="id", required=True, validate=validate.Length(min=1, max=64)
    )
    status = fields.String(required=True, validate=validate.Length(min=1, max=24))
    phone = fields.String(data_key="phoneNumber", load_default=None)
    network_code = fields.String(data_key="networkCode", load_default=None)
    failure_reason = fields.String(data_key="failureReason", load_default=None)
    retry_count = fields.String(data_key="retryCount", load_default=None)


class SmsOptOutSchema(_Webhook):
    """POST /sms/opt-out: the number wants no more bulk (reminder) SMS."""

    phone = fields.String(data_key="phoneNumber", required=True, validate=validate.Length(min=1))
    sender_id = fields.String(data_key="senderId", load_default=None)
