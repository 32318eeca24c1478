"""API clients in the console (admin only, api.manage): the clients registered, the form
that registers one (name, scopes, allowed addresses) and shows its secret this once, and
the button that revokes one. The services (app/services/api_clients.py) check the role
again, check every value and write the audit rows.

The secret is rendered in the answer to the registration's POST itself, never flashed:
a flash travels in the session cookie, and the secret must not be kept anywhere.
"""

from __future__ import annotations

from flask import flash, redirect, request, url_for
from flask_admin import Admin, BaseView, expose
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from admin.auth import SecureMixin, TokenForm, _kenyan_time, form_post, require
from app.errors import SaccoError
from app.extensions import db
from app.models import ApiClient
from app.services.api_clients import SCOPES, api_client_register, api_client_revoke


def _addresses(raw: str) -> list[str]:
    """One address or network per line or comma; the service checks each."""
    return [part.strip() for part in raw.replace(",", "\n").splitlines() if part.strip()]


class ApiClientView(SecureMixin, BaseView):
    """Only an admin sees, registers and revokes API clients."""

    permission = "api.manage"

    def _list(self, **context: object) -> str:
        clients = db.session.scalars(select(ApiClient).order_by(ApiClient.id.desc())).all()
        return self.render(
            "admin_sacco/api_client_list.html",
            clients=clients,
            scopes=SCOPES,
            when=lambda moment: _kenyan_time(None, moment, "") if moment else "",
            **context,
        )

    @expose("/")
    def index(self) -> str:
        return self._list(form={"name": "", "scopes": [], "allowed_ips": ""})

    @expose("/register", methods=("POST",))
    def register(self) -> Response | str | tuple[str, int]:
        if not TokenForm(request.form).validate():
            flash("The form expired; please try again.", "error")
            return redirect(url_for(".index"))
        refused = require("api.manage", self)
        if refused is not None:
            return refused
        name = request.form.get("name", "")
        scopes = request.form.getlist("scopes")
        allowed = request.form.get("allowed_ips", "")
        try:
            registered = api_client_register(
                name=name,
                scopes=scopes,
                staff=current_user._get_current_object(),
                allowed_ips=_addresses(allowed),
            )
        except SaccoError as exc:
            db.session.rollback()
            # The form again with what was typed, and why it was refused.
            return self._list(
                error=str(exc), form={"name": name, "scopes": scopes, "allowed_ips": allowed}
            )
        page = self.render(
            "admin_sacco/api_client_created.html",
            client=registered.client,
            secret=registered.secret,
        )
        response = Response(page, mimetype="text/html")
        # The one page that shows the secret: no cache, no back-button copy.
        response.headers["Cache-Control"] = "no-store"
        return response

    @expose("/<client_id>/revoke", methods=("POST",))
    def revoke(self, client_id: str) -> Response:
        def act() -> str:
            client = api_client_revoke(
                client_id=client_id, staff=current_user._get_current_object()
            )
            return f"{client.name} ({client.client_id}) is revoked: its tokens stop working now."

        return form_post(self, "api.manage", url_for(".index"), act)


def register(console: Admin) -> None:
    console.add_view(
        ApiClientView(
            name="API clients", category="Admin", endpoint="api_clients", url="api-clients"
        )
    )
