"""SMS in the console: the outbox (with a resend for a failed message), the texts members
sent us, and the numbers that opted out of reminders (STOP, or the provider's opt-out).

Rows with a member show the member's number and name, looked up once per page
(app/selectors/sms.py), not once per row.

A message carrying a one-time code (app.sms_templates.CODE_TEMPLATES: phone change, PIN
reset) is read masked by every role, wherever a body shows: list, details, any export,
the member page and the loan timeline. Searching the outbox never looks inside such a
body, and the list does not sort by body: either would let a reader find a code digit by
digit without ever seeing it.
"""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, request, url_for
from flask_admin import Admin, expose
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import case, literal
from werkzeug.wrappers import Response

from admin.auth import SecureModelView, TokenForm, require
from admin.day_filter import day_filters
from app.errors import SaccoError
from app.extensions import db
from app.models import SmsInbound, SmsMessage, SmsSuppression
from app.selectors.sms import (
    MemberLabel,
    member_labels,
    member_labels_by_phone,
    sms_resent_as,
)
from app.services.sms import NOT_RESENT, sms_resend
from app.sms_templates import CODE_TEMPLATES, sms_body_for_staff

# Messages whose body holds a secret staff must not read: the member's one-time code.
SECRET_TEMPLATES = CODE_TEMPLATES


def readable_body(message: SmsMessage) -> str:
    """The body as staff may read it: a one-time code is masked."""
    return sms_body_for_staff(message.template, message.body)


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


_MEMBER_LINK = Markup('<a href="{}">{} {}</a>')


def _member_link(label: MemberLabel | None) -> Markup | str:
    if label is None:
        return ""
    return _MEMBER_LINK.format(
        url_for("member.details_view", id=label.id), label.member_no, label.name
    )


def _member_by_id(view: object, context: object, model: Any, name: str) -> Markup | str:
    if model.member_id is None:
        return ""
    labels = g.get("sms_member_labels")
    if labels is None or model.member_id not in labels:  # a details page: one row
        labels = member_labels(member_ids=[model.member_id])
    return _member_link(labels.get(model.member_id))


def _member_by_phone(view: object, context: object, model: Any, name: str) -> Markup | str:
    labels = g.get("sms_phone_labels")
    if labels is None or model.phone not in labels:
        labels = member_labels_by_phone(phones=[model.phone])
    return _member_link(labels.get(model.phone))


class _PageOfMembers:
    """Look up the members of a list page in one query before its rows are drawn."""

    def get_list(self, *args: Any, **kwargs: Any) -> Any:
        count, data = super().get_list(*args, **kwargs)  # type: ignore[misc]
        g.sms_member_labels = member_labels(
            member_ids=[getattr(m, "member_id", None) for m in data]
        )
        g.sms_phone_labels = member_labels_by_phone(phones=[m.phone for m in data])
        return count, data


class SmsView(_PageOfMembers, SecureModelView):
    """The outbox in the columns a person reads; the rest on the details page, with a
    Resend button for a failed message."""

    column_list = ("created_at", "phone", "template", "status", "attempts", "sent_at", "body")
    column_labels = {"created_at": "Queued at"}
    column_filters = (
        "status",
        "template",
        "kind",
        "phone",
        *day_filters(SmsMessage.created_at, "Queued"),
    )
    column_searchable_list = ("phone", "template", "body")
    column_sortable_list = ("created_at", "phone", "template", "status", "attempts", "sent_at")
    column_default_sort = ("id", True)
    column_formatters = {"body": lambda v, c, m, n: _short(readable_body(m))}
    # If exports are turned on here, the body goes out masked and whole.
    column_formatters_export = {"body": lambda v, c, m, n: readable_body(m)}
    column_details_list = (
        "id",
        "member",
        "phone",
        "template",
        "language",
        "kind",
        "status",
        "attempts",
        "last_error",
        "provider_status",
        "provider_message_id",
        "cost",
        "created_at",
        "not_before",
        "sent_at",
        "delivered_at",
        "context",
        "body",
    )
    column_formatters_detail = {
        "body": lambda v, c, m, n: readable_body(m),
        "member": _member_by_id,
    }
    details_template = "admin_sacco/sms_details.html"

    def init_search(self) -> bool:
        """Search the body only of messages that carry no code (see the module's note)."""
        searchable = super().init_search()
        self._search_fields = [
            (
                case((SmsMessage.template.in_(sorted(CODE_TEMPLATES)), literal("")), else_=field)
                if field is SmsMessage.body.property.columns[0]
                else field,
                path,
            )
            for field, path in self._search_fields or []
        ]
        return searchable

    def render(self, template: str, **kwargs: Any) -> str:
        model = kwargs.get("model")
        if template == self.details_template and model is not None:
            kwargs["resend_form"] = TokenForm()
            kwargs["resent_as"] = sms_resent_as(message_id=model.id)
            kwargs["not_resent"] = NOT_RESENT.get(model.template)
        return super().render(template, **kwargs)

    @expose("/resend/<int:message_id>", methods=("POST",))
    def resend_view(self, message_id: int) -> Response | tuple[str, int]:
        back = redirect(url_for(".details_view", id=message_id))
        if not TokenForm(request.form).validate():
            flash("The form expired; please try again.", "error")
            return back
        refused = require("member.message", self)
        if refused is not None:
            return refused
        try:
            message = sms_resend(message_id=message_id, staff=current_user._get_current_object())
        except SaccoError as exc:
            db.session.rollback()
            flash(f"Not sent again: {exc}", "error")
            return back
        flash(f"Sent again as message {message.id} ({message.status}).", "success")
        return redirect(url_for(".details_view", id=message.id))


class SmsInboundView(_PageOfMembers, SecureModelView):
    """Texts members (and strangers) sent to the shortcode, newest first."""

    column_list = ("received_at", "phone", "member", "keyword", "text")
    column_labels = {"received_at": "Received at"}
    column_filters = ("keyword", "phone", *day_filters(SmsInbound.received_at, "Received"))
    column_searchable_list = ("phone", "text")
    column_default_sort = ("id", True)
    column_formatters = {"text": lambda v, c, m, n: _short(m.text), "member": _member_by_id}
    column_details_list = (
        "id",
        "received_at",
        "phone",
        "member",
        "to",
        "keyword",
        "provider_id",
        "link_id",
        "text",
    )
    column_formatters_detail = {"member": _member_by_id}


class OptOutView(_PageOfMembers, SecureModelView):
    """Numbers that asked for no reminders (STOP / SIMAMA, or the provider's opt-out);
    a START turns it off again. Receipts and codes still reach them."""

    column_list = ("phone", "member", "active", "source", "updated_at")
    column_labels = {"active": "Opted out now", "updated_at": "Since", "source": "How"}
    column_filters = ("active", "source", *day_filters(SmsSuppression.updated_at, "Since"))
    column_searchable_list = ("phone",)
    column_default_sort = ("updated_at", True)
    column_formatters = {"member": _member_by_phone}
    column_details_list = column_list
    column_formatters_detail = column_formatters


def register(console: Admin) -> None:
    console.add_view(SmsView(SmsMessage, db, name="SMS outbox", category="SMS"))
    console.add_view(
        SmsInboundView(SmsInbound, db, name="Inbound SMS", category="SMS", endpoint="smsinbound")
    )
    console.add_view(
        OptOutView(SmsSuppression, db, name="Opt-outs", category="SMS", endpoint="optout")
    )
