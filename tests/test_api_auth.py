"""Who may call /api/v1, through HTTP as a client system calls it: the token endpoint
(HTTP Basic or form credentials, wrong secret, unsupported grant, scopes), a route's 401
and 403, expired, revoked and revoked-client tokens, allowed addresses; a console session
never opens the API and a token never opens the console; the rate limit's 429; the
Idempotency-Key decorator on a real POST; every call audited with the client id. And the
console page where an admin registers and revokes clients (CSRF, admin only, the secret
shown once)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import ApiClient, AuditLog, Loan
from app.services.api_clients import Registered, api_client_register, api_client_revoke
from tests.factories import make_member
from tests.helpers import browse, login, post_form, staff
from tests.loan_factories import make_borrower, make_product, make_staff

TOKEN = "/api/v1/oauth/token"
GRANT = {"grant_type": "client_credentials"}


def call(client: FlaskClient, path: str, method: str = "GET", **kwargs: Any):  # noqa: ANN201
    # Every request in its own app context (as in production), so `g.api_caller` of one
    # call can never leak into the next; committed first so SQLite's lock is free.
    db.session.commit()
    return browse(client, path, method, **kwargs)


def register(scopes: list[str], allowed_ips: list[str] | None = None) -> Registered:
    return api_client_register(
        name="Member app", scopes=scopes, staff=make_staff("admin"), allowed_ips=allowed_ips
    )


def token_for(client: FlaskClient, reg: Registered, scope: str | None = None) -> str:
    form = {**GRANT, **({"scope": scope} if scope else {})}
    reply = call(client, TOKEN, "POST", data=form, auth=(reg.client.client_id, reg.secret))
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return str(reply.get_json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def member_path() -> tuple[str, str]:
    member = make_member()
    db.session.commit()
    return f"/api/v1/members/{member.member_no}", str(member.member_no)


def assert_problem(reply: Any, status: int, code: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.get_data(as_text=True)
    assert reply.mimetype == "application/problem+json"
    body = reply.get_json()
    assert body["status"] == status and body["code"] == code, body
    assert body["detail"]
    return dict(body)


# -- the token endpoint ---------------------------------------------------------------


def test_token_with_basic_credentials_carries_every_scope_of_the_client(
    client: FlaskClient,
) -> None:
    reg = register(["members:read", "accounts:read"])
    reply = call(client, TOKEN, "POST", data=GRANT, auth=(reg.client.client_id, reg.secret))
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "accounts:read members:read"
    assert body["expires_in"] == 15 * 60
    assert reply.headers["Cache-Control"] == "no-store"
    assert [
        a.object_id
        for a in db.session.scalars(select(AuditLog).where(AuditLog.action == "api.token"))
    ] == [reg.client.client_id]


def test_token_with_form_credentials_and_a_subset_of_scopes(client: FlaskClient) -> None:
    reg = register(["members:read", "accounts:read"])
    reply = call(
        client,
        TOKEN,
        "POST",
        data={
            **GRANT,
            "client_id": reg.client.client_id,
            "client_secret": reg.secret,
            "scope": "members:read",
        },
    )
    assert reply.status_code == 200
    assert reply.get_json()["scope"] == "members:read"


def test_wrong_secret_or_unknown_client_is_invalid_client(client: FlaskClient) -> None:
    reg = register(["members:read"])
    for auth in [(reg.client.client_id, reg.secret + "x"), ("sacco_nobody", reg.secret)]:
        reply = call(client, TOKEN, "POST", data=GRANT, auth=auth)
        assert reply.status_code == 401
        assert reply.get_json()["error"] == "invalid_client"
        assert reply.headers["WWW-Authenticate"].startswith("Basic")


def test_unsupported_grant_and_a_scope_the_client_lacks(client: FlaskClient) -> None:
    reg = register(["members:read"])
    auth = (reg.client.client_id, reg.secret)
    reply = call(client, TOKEN, "POST", data={"grant_type": "password"}, auth=auth)
    assert reply.status_code == 400
    assert reply.get_json()["error"] == "unsupported_grant_type"
    reply = call(client, TOKEN, "POST", data={**GRANT, "scope": "payments:write"}, auth=auth)
    assert reply.status_code == 400
    assert reply.get_json()["error"] == "invalid_scope"


def test_a_revoked_client_gets_no_token(client: FlaskClient) -> None:
    reg = register(["members:read"])
    api_client_revoke(client_id=reg.client.client_id, staff=make_staff("admin"))
    reply = call(client, TOKEN, "POST", data=GRANT, auth=(reg.client.client_id, reg.secret))
    assert reply.status_code == 401
    assert reply.get_json()["error"] == "invalid_client"


# -- a resource's door ----------------------------------------------------------------


def test_allowed_with_the_scope_401_without_a_token_403_with_another_scope(
    client: FlaskClient,
) -> None:
    path, member_no = member_path()
    reg = register(["members:read", "accounts:read"])
    reply = call(client, path, headers=bearer(token_for(client, reg)))
    assert reply.status_code == 200
    assert reply.get_json()["member_no"] == member_no

    reply = call(client, path)
    assert_problem(reply, 401, "unauthorized")
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(call(client, path, headers={"Authorization": "Basic abc"}), 401, "unauthorized")
    assert_problem(call(client, path, headers=bearer("not-a-jwt")), 401, "invalid_token")

    narrow = token_for(client, reg, "accounts:read")
    reply = call(client, path, headers=bearer(narrow))
    assert_problem(reply, 403, "insufficient_scope")
    assert 'scope="members:read"' in reply.headers["WWW-Authenticate"]


def test_an_expired_token_is_refused(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = member_path()
    reg = register(["members:read"])
    # A token whose life is zero minutes has expired when it is first used.
    monkeypatch.setitem(
        app.config, "SETTINGS", dataclasses.replace(app.config["SETTINGS"], API_TOKEN_MINUTES=0)
    )
    expired = token_for(client, reg)
    body = assert_problem(call(client, path, headers=bearer(expired)), 401, "invalid_token")
    assert "expired" in body["detail"]


def test_a_revoked_token_stops_at_once_and_others_keep_working(client: FlaskClient) -> None:
    path, _ = member_path()
    reg = register(["members:read"])
    first, second = token_for(client, reg), token_for(client, reg)
    reply = call(client, "/api/v1/oauth/revoke", "POST", data={"token": first})
    assert reply.status_code == 200
    body = assert_problem(call(client, path, headers=bearer(first)), 401, "invalid_token")
    assert "revoked" in body["detail"]
    assert call(client, path, headers=bearer(second)).status_code == 200
    # Revoking an unknown token is not an error (RFC 7009).
    assert call(client, "/api/v1/oauth/revoke", "POST", data={"token": "junk"}).status_code == 200


def test_revoking_the_client_stops_its_tokens(client: FlaskClient) -> None:
    path, _ = member_path()
    reg = register(["members:read"])
    token = token_for(client, reg)
    assert call(client, path, headers=bearer(token)).status_code == 200
    api_client_revoke(client_id=reg.client.client_id, staff=make_staff("admin"))
    body = assert_problem(call(client, path, headers=bearer(token)), 401, "invalid_token")
    assert "revoked" in body["detail"]


def test_allowed_addresses_are_enforced(client: FlaskClient) -> None:
    path, _ = member_path()
    reg = register(["members:read"], allowed_ips=["10.20.0.0/16"])
    token = token_for(client, reg)  # the token itself may be asked for from anywhere
    inside = call(client, path, headers=bearer(token), environ_base={"REMOTE_ADDR": "10.20.3.4"})
    assert inside.status_code == 200
    outside = call(client, path, headers=bearer(token))  # the test client is 127.0.0.1
    assert_problem(outside, 403, "address_not_allowed")


# -- the console and the API never open each other -----------------------------------


def test_a_console_session_does_not_open_the_api(app: Flask) -> None:
    path, _ = member_path()
    browser = app.test_client()
    email = staff("admin")
    db.session.commit()
    login(browser, email)
    assert call(browser, "/admin/").status_code == 200  # signed in
    assert_problem(call(browser, path), 401, "unauthorized")


def test_a_bearer_token_does_not_open_the_console(client: FlaskClient) -> None:
    reg = register(["members:read"])
    token = token_for(client, reg)
    reply = call(client, "/admin/api-clients/", headers=bearer(token))
    assert reply.status_code == 302
    assert "/admin/login" in reply.headers["Location"]
    reply = call(client, "/admin/", headers=bearer(token))
    assert reply.status_code == 302
    assert "/admin/login" in reply.headers["Location"]


# -- rate limits ----------------------------------------------------------------------


def test_past_the_rate_limit_429_with_the_headers_and_a_problem(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = member_path()
    monkeypatch.setitem(
        app.config,
        "SETTINGS",
        dataclasses.replace(app.config["SETTINGS"], API_RATE_LIMIT="2/minute"),
    )
    reg = register(["members:read"])
    other = register(["members:read"])
    token = token_for(client, reg)
    first = call(client, path, headers=bearer(token))
    assert first.status_code == 200
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    assert call(client, path, headers=bearer(token)).status_code == 200
    refused = call(client, path, headers=bearer(token))
    assert_problem(refused, 429, "rate_limited")
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert int(refused.headers["Retry-After"]) > 0
    # Per client: another client's calls are counted apart.
    assert call(client, path, headers=bearer(token_for(client, other))).status_code == 200


# -- every call audited ---------------------------------------------------------------


def test_every_call_is_audited_with_the_client_id(client: FlaskClient) -> None:
    path, _ = member_path()
    reg = register(["members:read", "accounts:read"])
    token = token_for(client, reg)
    call(client, path, headers=bearer(token))
    call(client, "/api/v1/members/M404404", headers=bearer(token))
    call(client, path)  # no token: nobody to name, no api.call row
    rows = db.session.scalars(
        select(AuditLog).where(AuditLog.action == "api.call").order_by(AuditLog.id)
    ).all()
    assert [(r.actor, r.object_id, (r.after or {}).get("status")) for r in rows] == [
        (f"api:{reg.client.client_id}", f"GET {path}", 200),
        (f"api:{reg.client.client_id}", "GET /api/v1/members/M404404", 404),
    ]


# -- Idempotency-Key on a real POST ---------------------------------------------------


def test_every_post_of_the_api_is_idempotency_keyed(app: Flask) -> None:
    # Each POST view of /api/v1 but the OAuth endpoints goes through @idempotent (its
    # wrapper is in the view's chain of __wrapped__), as the issue asks of every POST.
    missing, keyed = [], []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.rule.startswith("/api/v1/oauth/"):
            continue
        if "POST" not in (rule.methods or set()):
            continue
        view = app.view_functions[rule.endpoint]
        post = getattr(getattr(view, "view_class", None), "post", view)
        names = set()
        while post is not None:
            # The code's own name: functools.wraps copies the view's __qualname__.
            code = getattr(post, "__code__", None)
            names.add(code.co_qualname if code is not None else "")
            post = getattr(post, "__wrapped__", None)
        (keyed if any(n.startswith("idempotent.") for n in names) else missing).append(rule.rule)
    assert missing == []
    assert "/api/v1/loans" in keyed  # the check sees the decorator where it is


def _loans() -> int:
    db.session.commit()
    return int(db.session.scalar(select(func.count()).select_from(Loan)) or 0)


def test_idempotency_key_required_replayed_refused_for_another_body_and_per_client(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real POST (a loan application, tests/test_api_accounts_loans.py has its rules).
    make_product("V1")
    member = make_borrower(savings=10000)
    reg = register(["loans:write"])
    other = register(["loans:write"])
    token = token_for(client, reg)
    body = {"member_no": member.member_no, "product": "V1", "amount": "2000.00", "term": 4}
    path = "/api/v1/loans"

    reply = call(client, path, "POST", json=body, headers=bearer(token))
    assert_problem(reply, 400, "idempotency_key_required")
    long_key = {**bearer(token), "Idempotency-Key": "k" * 256}
    assert_problem(
        call(client, path, "POST", json=body, headers=long_key), 400, "idempotency_key_required"
    )
    assert _loans() == 0

    headers = {**bearer(token), "Idempotency-Key": "apply-2000"}
    first = call(client, path, "POST", json=body, headers=headers)
    assert first.status_code == 201, first.get_data(as_text=True)
    assert "Idempotent-Replayed" not in first.headers
    again = call(client, path, "POST", json=body, headers=headers)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    assert _loans() == 1

    changed = {**body, "amount": "2500.00"}
    reply = call(client, path, "POST", json=changed, headers=headers)
    assert_problem(reply, 422, "idempotency_key_reused")
    assert _loans() == 1

    # Keys are the client's own: another client's same key is another request, which
    # runs (and meets the loan rules: this member has an application open already).
    theirs = {**bearer(token_for(client, other)), "Idempotency-Key": "apply-2000"}
    reply = call(client, path, "POST", json=body, headers=theirs)
    assert "Idempotent-Replayed" not in reply.headers
    assert_problem(reply, 422, "loan_refused")

    # Once a key has expired (API_IDEMPOTENCY_HOURS, here 0) it is new again.
    monkeypatch.setitem(
        app.config,
        "SETTINGS",
        dataclasses.replace(app.config["SETTINGS"], API_IDEMPOTENCY_HOURS=0),
    )
    reply = call(client, path, "POST", json=changed, headers=headers)
    assert "Idempotent-Replayed" not in reply.headers
    assert_problem(reply, 422, "loan_refused")  # run again, not refused as a reused key
    assert _loans() == 1


# -- the console page -----------------------------------------------------------------

SECRET = re.compile(r'<code id="client-secret">([^<]+)</code>')
CLIENT_ID = re.compile(r'<code id="client-id">([^<]+)</code>')


def signed_in(app: Flask, role: str) -> FlaskClient:
    browser = app.test_client()
    email = staff(role)
    db.session.commit()
    login(browser, email)
    return browser


def post(browser: FlaskClient, path: str, data: dict[str, object]):  # noqa: ANN201
    db.session.commit()
    return post_form(browser, path, data)


def test_an_admin_registers_a_client_sees_the_secret_once_and_it_works(app: Flask) -> None:
    browser = signed_in(app, "admin")
    assert 'href="/admin/api-clients/"' in call(browser, "/admin/").get_data(as_text=True)
    page = call(browser, "/admin/api-clients/").get_data(as_text=True)
    assert 'id="no-clients"' in page
    for scope in ("members:read", "payments:write", "webhooks:manage"):
        assert f'value="{scope}"' in page

    reply = post(
        browser,
        "/admin/api-clients/register",
        {
            "name": "Payroll of Acme",
            "scopes": ["members:read", "accounts:read"],
            "allowed_ips": "127.0.0.1\n10.0.0.0/8",
        },
    )
    assert reply.status_code == 200
    assert reply.headers["Cache-Control"] == "no-store"
    page = reply.get_data(as_text=True)
    secret = SECRET.search(page).group(1)  # type: ignore[union-attr]
    client_id = CLIENT_ID.search(page).group(1)  # type: ignore[union-attr]

    row = db.session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
    assert row is not None and row.name == "Payroll of Acme"
    assert row.scopes == ["accounts:read", "members:read"]
    assert row.allowed_ips == ["127.0.0.1/32", "10.0.0.0/8"]
    assert secret not in row.secret_hash
    audit = db.session.scalar(select(AuditLog).where(AuditLog.action == "api_client.register"))
    assert audit is not None and audit.object_id == client_id
    assert audit.actor == "staff:admin@sacco.test"
    assert secret not in str(audit.after)

    # The list shows the client, never the secret again.
    listing = call(browser, "/admin/api-clients/").get_data(as_text=True)
    assert client_id in listing and "Payroll of Acme" in listing
    assert secret not in listing and "127.0.0.1/32, 10.0.0.0/8" in listing

    # The secret shown is the one that works.
    api = app.test_client()
    reply = call(api, TOKEN, "POST", data=GRANT, auth=(client_id, secret))
    assert reply.status_code == 200
    assert reply.get_json()["scope"] == "accounts:read members:read"


def test_a_refused_registration_says_why_and_keeps_what_was_typed(app: Flask) -> None:
    browser = signed_in(app, "admin")
    reply = post(
        browser,
        "/admin/api-clients/register",
        {"name": "Website", "scopes": ["members:read"], "allowed_ips": "not-an-address"},
    )
    page = reply.get_data(as_text=True)
    assert reply.status_code == 200
    assert 'id="register-error"' in page and "not-an-address" in page
    assert 'value="Website"' in page
    assert 'value="members:read" id="scope-members-read" checked' in page
    reply = post(browser, "/admin/api-clients/register", {"name": "Website"})
    assert "choose at least one scope" in reply.get_data(as_text=True)
    assert db.session.scalar(select(db.func.count()).select_from(ApiClient)) == 0


def test_an_admin_revokes_a_client_and_its_tokens_stop(app: Flask, client: FlaskClient) -> None:
    path, _ = member_path()
    reg = register(["members:read"])
    token = token_for(client, reg)
    browser = signed_in(app, "admin")
    reply = post(browser, f"/admin/api-clients/{reg.client.client_id}/revoke", {})
    assert reply.status_code == 302
    page = call(browser, "/admin/api-clients/").get_data(as_text=True)
    assert "is revoked: its tokens stop working now" in page
    assert f'id="revoke-{reg.client.client_id}"' not in page
    assert_problem(call(client, path, headers=bearer(token)), 401, "invalid_token")
    audit = db.session.scalar(select(AuditLog).where(AuditLog.action == "api_client.revoke"))
    assert audit is not None and audit.object_id == reg.client.client_id
    # Twice: refused in words.
    post(browser, f"/admin/api-clients/{reg.client.client_id}/revoke", {})
    page = call(browser, "/admin/api-clients/").get_data(as_text=True)
    assert "is revoked already" in page


def test_without_the_csrf_token_nothing_is_registered_or_revoked(app: Flask) -> None:
    reg = register(["members:read"])
    browser = signed_in(app, "admin")
    reply = call(
        browser,
        "/admin/api-clients/register",
        "POST",
        data={"name": "Sneaky", "scopes": ["members:read"]},
    )
    assert reply.status_code == 302
    reply = call(browser, f"/admin/api-clients/{reg.client.client_id}/revoke", "POST", data={})
    assert reply.status_code == 302
    assert "The form expired" in call(browser, "/admin/api-clients/").get_data(as_text=True)
    assert db.session.scalar(select(db.func.count()).select_from(ApiClient)) == 1
    db.session.refresh(reg.client)
    assert reg.client.active


@pytest.mark.parametrize("role", ["branch_manager", "loan_officer", "compliance", "auditor"])
def test_only_an_admin_manages_api_clients(app: Flask, role: str) -> None:
    reg = register(["members:read"])
    browser = signed_in(app, role)
    assert 'href="/admin/api-clients/"' not in call(browser, "/admin/").get_data(as_text=True)
    assert call(browser, "/admin/api-clients/").status_code == 403
    reply = post(browser, "/admin/api-clients/register", {"name": "X", "scopes": ["members:read"]})
    assert reply.status_code == 403
    reply = post(browser, f"/admin/api-clients/{reg.client.client_id}/revoke", {})
    assert reply.status_code == 403
    assert db.session.scalar(select(db.func.count()).select_from(ApiClient)) == 1
    db.session.refresh(reg.client)
    assert reg.client.active


def test_a_value_the_database_cannot_read_is_a_problem_document_never_the_consoles_page(
    client: FlaskClient,
) -> None:
    """A NUL in a path is a DataError on PostgreSQL, caught by the console's database
    handler; on /api it answers a problem document (SQLite reads it and finds nothing)."""
    reg = register(["members:read"])
    token = token_for(client, reg)
    reply = call(client, "/api/v1/members/M%00001", headers=bearer(token))
    assert reply.status_code == 404 and reply.mimetype == "application/problem+json"
    assert reply.get_json()["code"] in ("not_found", "member_not_found")


def test_every_route_of_the_api_needs_a_scope(app: Flask) -> None:
    """Every method of every /api/v1 route but the OAuth endpoints and the documentation
    goes through require_scope (its wrapper in the view's chain of __wrapped__): no
    resource is reachable with a token that was not given its scope."""
    open_routes = ("/api/v1/oauth/", "/api/v1/docs", "/api/v1/openapi.json")
    missing, scoped = [], []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.rule.startswith(open_routes):
            continue
        view = app.view_functions[rule.endpoint]
        view_class = getattr(view, "view_class", None)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            handler = getattr(view_class, method.lower(), None) if view_class else view
            names = set()
            while handler is not None:
                code = getattr(handler, "__code__", None)
                names.add(code.co_qualname if code is not None else "")
                handler = getattr(handler, "__wrapped__", None)
            needs = any(n.startswith("require_scope.") for n in names)
            (scoped if needs else missing).append(f"{method} {rule.rule}")
    assert missing == []
    assert "POST /api/v1/payments/stk-push" in scoped and len(scoped) > 15


def test_another_app_in_the_process_leaves_this_apps_rate_limits_alone(
    client: FlaskClient,
) -> None:
    """Each app counts in its own Redis: building another app (here one pointed at a Redis
    that does not exist) must not move this app's limiter there, as a shared limiter did
    (a random-order CI run: every API call after the production-settings test failed)."""
    from app import create_app
    from tests.helpers import PRODUCTION

    reg = register(["members:read"])
    token = token_for(client, reg)
    path, _ = member_path()
    create_app({**PRODUCTION, "REDIS_URL": "redis://nowhere.invalid:6379/0"})
    reply = call(client, path, headers=bearer(token))
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.headers["X-RateLimit-Limit"]
