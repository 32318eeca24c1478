"""The API against its own OpenAPI document (schemathesis): the document generated from
the code validates against the OpenAPI 3.0 meta-schema, and every operation it names,
called with generated requests (a bounded, derandomized number per operation) and a token
carrying every scope, never answers 5xx, answers only the statuses it documents, and
every answer matches its documented schema (error bodies included: ProblemSchema).

The operations come from the document at run time, so each resource the helpers add is
covered without a change here."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.extensions import db
from app.services.api_clients import SCOPES, api_client_register
from tests.factories import make_member
from tests.helpers import browse
from tests.loan_factories import make_loan, make_product, make_staff

DOC = "/api/v1/openapi.json"
# Per operation: enough to reach the validators' edges, little enough for a quick suite.
MAX_EXAMPLES = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_schema(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Any:
    # Generated calls come faster than any client's: the limit's 429 is tested apart
    # (tests/test_api_auth.py), here every answer must be the operation's own.
    monkeypatch.setitem(
        app.config,
        "SETTINGS",
        dataclasses.replace(
            app.config["SETTINGS"],
            API_RATE_LIMIT="100000/minute",
            API_WRITE_RATE_LIMIT="100000/minute",
        ),
    )
    with app.app_context():
        return schemathesis.openapi.from_wsgi(DOC, app)


def _known() -> dict[str, str]:
    """A member with deposits and a loan paid out: the identifiers that half the valid
    calls use in place of generated ones, so the answers with data (200s, schedules,
    statements) are checked against their schemas too, not only the 404s."""
    make_member()
    loan = make_loan(product=make_product("V1"), amount=6000, on=date(2026, 11, 2))
    member = loan.member
    return {
        "member_no": str(member.member_no),
        "loan_no": str(loan.loan_no),
        "account_number": str(member.member_no),  # deposits: the member number itself
        "phone": "0" + member.phone[-9:],
        "product": "V1",
    }


def _token(app: Flask) -> str:
    """A client with every scope."""
    reg = api_client_register(name="Schemathesis", scopes=list(SCOPES), staff=make_staff("admin"))
    credentials = (reg.client.client_id, reg.secret)
    db.session.commit()  # SQLite: the read above holds the database's one write lock
    reply = browse(
        app.test_client(),
        "/api/v1/oauth/token",
        "POST",
        data={"grant_type": "client_credentials"},
        auth=credentials,
    )
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return str(reply.get_json()["access_token"])


def _with_known(case: Any, known: dict[str, str]) -> None:
    for name in known.keys() & (case.path_parameters or {}).keys():
        case.path_parameters[name] = known[name]
    for name in known.keys() & (case.query or {}).keys():
        case.query[name] = known[name]
    if isinstance(case.body, dict):
        for name in known.keys() & case.body.keys():
            case.body[name] = known[name]


def _explore(
    app: Flask, operation: Any, mode: GenerationMode, token: str, known: dict[str, str]
) -> str | None:
    """Generated calls of one operation; the first failure in words, or None."""
    calls = [0]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is enough
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        calls[0] += 1
        if mode is GenerationMode.POSITIVE and calls[0] % 2:
            _with_known(case, known)
        headers = dict(case.headers or {})
        headers["Authorization"] = f"Bearer {token}"
        if case.method.upper() == "POST":
            # A fresh key per call: the decorator's own answers are tested apart.
            headers.setdefault("Idempotency-Key", uuid.uuid4().hex)
        db.session.rollback()  # SQLite: nothing of the test's holds the write lock
        # Each call in its own app context, as in production (`g` must not carry over).
        with app.app_context():
            response = case.call(headers=headers)
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except (AssertionError, BaseExceptionGroup) as exc:
        # Every operation's failure is reported together, each in schemathesis' words.
        return f"{operation.label} ({mode.value}): {exc}"
    return None


def test_every_operation_keeps_its_document(app: Flask, api_schema: Any) -> None:
    known = _known()
    token = _token(app)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert any(op.path == "/api/v1/members/{member_no}" for op in operations)
    failures = []
    for operation in operations:
        # Valid requests must be answered as documented; invalid ones (negative) too,
        # and never with a 5xx.
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failure = _explore(app, operation, mode, token, known)
            if failure is not None:
                failures.append(failure)
    assert not failures, "\n\n".join(failures)


def test_the_openapi_document_validates(app: Flask, api_schema: Any) -> None:
    from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR

    document = browse(app.test_client(), DOC).get_json()
    assert document["openapi"].startswith("3.0")
    errors = [f"{e.instance_path}: {e.message}" for e in OPENAPI_30_VALIDATOR.iter_errors(document)]
    assert errors == []
    api_schema.validate()  # schemathesis' own loading check says the same
    # Every operation says what it does and documents its success.
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            assert operation.get("summary") or operation.get("description"), (method, path)
            assert any(str(code).startswith("2") for code in operation["responses"]), (
                method,
                path,
            )
    assert "/api/v1/members/{member_no}" in document["paths"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
