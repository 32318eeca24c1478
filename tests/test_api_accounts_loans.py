"""The accounts and loans resources of /api/v1, through HTTP as a client system calls
them: every route with its scope (allowed, 401 without a token, 403 with another scope),
a member's accounts with balances, holds and what is available, an account's statement
whose lines add up to its balance, the console's PDF and CSV, loan products and
eligibility, an application retried with its Idempotency-Key (one loan), a loan with its
schedule and arrears, and a member's loans a page at a time."""

from __future__ import annotations

import csv
import io
import threading
from datetime import date
from decimal import Decimal
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.clock import business_today
from app.extensions import db
from app.models import AuditLog, Loan, LoanProduct, Member
from app.selectors.guarantees import member_deposits
from app.services.api_clients import SCOPES, api_client_register
from app.services.guarantees.requests import guarantee_accept, guarantee_request
from app.services.loans import loan_apply
from app.services.savings.fixed import fixed_deposit_open, target_set
from app.services.savings.money_in import account_deposit
from app.services.savings.products import account_product
from tests.helpers import browse, login, staff
from tests.loan_factories import (
    make_borrower,
    make_loan,
    make_product,
    make_staff,
    reload,
    run_job,
    schedule_owed,
)

API = "/api/v1"
WHOLE_YEAR = {"from": "2026-01-01", "to": "2026-12-31"}


# -- calling the API ------------------------------------------------------------------------


def call(client: FlaskClient, path: str, method: str = "GET", **kwargs: Any):  # noqa: ANN201
    # Each request in its own app context, as in production (g.api_caller never leaks
    # into the next call); committed first so SQLite's write lock is free.
    db.session.commit()
    return browse(client, path, method, **kwargs)


def token(client: FlaskClient, scopes: list[str]) -> str:
    reg = api_client_register(name="Core banking", scopes=scopes, staff=make_staff("admin"))
    reply = call(
        client,
        f"{API}/oauth/token",
        "POST",
        data={"grant_type": "client_credentials"},
        auth=(reg.client.client_id, reg.secret),
    )
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return str(reply.get_json()["access_token"])


def bearer(value: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}", **headers}


def get(client: FlaskClient, path: str, tok: str, **query: str):  # noqa: ANN201
    return call(client, f"{API}{path}", headers=bearer(tok), query_string=query)


def apply(client: FlaskClient, tok: str, body: dict[str, Any], key: str | None):  # noqa: ANN201
    headers = bearer(tok, **({"Idempotency-Key": key} if key else {}))
    return call(client, f"{API}/loans", "POST", json=body, headers=headers)


def problem_code(reply: Any) -> str:
    assert reply.mimetype == "application/problem+json", reply.get_data(as_text=True)
    return str(reply.get_json()["code"])


def loans() -> int:
    return db.session.scalar(select(func.count()).select_from(Loan)) or 0


def secured(code: str = "SEC") -> LoanProduct:
    """A product whose applications rest on deposits and guarantors until paid out."""
    return make_product("V1", code=code, min_guarantors=1, guarantee_cover=Decimal("100"))


# -- the data -----------------------------------------------------------------------------


def member_with_accounts() -> Member:
    """Deposits of 20,000 and shares of 1,000 (1 Jan); 8,000 saved on 1 Feb, 3,000 of it
    into a fixed deposit on 1 Mar; a school-fees target with 1,200 (1 Apr); their own
    secured application of 5,000 and a guarantee of 4,000 of another member's loan, which
    both hold deposits."""
    member = make_borrower(savings=20000, shares=1000)
    account_deposit(
        member_id=member.id,
        product=account_product("ORD"),
        amount="8000",
        reference="ORD1",
        value_date=date(2026, 2, 1),
    )
    db.session.commit()
    fixed_deposit_open(member_id=member.id, amount="3000", actor="staff:t", today=date(2026, 3, 1))
    target_set(
        member_id=member.id,
        name="School fees",
        actor="staff:t",
        unlock_on=date(2027, 1, 1),
        today=date(2026, 3, 1),
    )
    account_deposit(
        member_id=member.id,
        product=account_product("TGT"),
        amount="1200",
        reference="TGT1",
        value_date=date(2026, 4, 1),
    )
    db.session.commit()
    product = secured()
    loan_apply(member_id=member.id, product_id=product.id, amount=5000, as_of=business_today())
    other = make_borrower(savings=10000)
    asked_of = loan_apply(
        member_id=other.id, product_id=product.id, amount=30000, as_of=business_today()
    )
    asked = guarantee_request(
        loan_id=asked_of.id, guarantor_id=member.id, amount=4000, actor="member:test"
    )
    guarantee_accept(guarantee_id=asked.id, guarantor_id=member.id, via="sms")
    db.session.commit()
    return member


# -- every route, its scope ---------------------------------------------------------------


def test_every_route_answers_its_scope_and_no_other(client: FlaskClient) -> None:
    member = make_borrower(savings=30000)
    product = make_product("V1")
    loan = make_loan(product=product, member=member, amount=5000, on=date(2026, 11, 1))
    routes = [
        ("GET", f"/members/{member.member_no}/accounts", "accounts:read", None),
        ("GET", f"/accounts/{member.member_no}/statement", "accounts:read", None),
        ("GET", f"/members/{member.member_no}/statement", "accounts:read", None),
        ("GET", "/loan-products", "loans:read", None),
        ("GET", f"/members/{member.member_no}/eligibility?product=V1", "loans:read", None),
        ("GET", f"/loans/{loan.loan_no}", "loans:read", None),
        ("GET", f"/members/{member.member_no}/loans", "loans:read", None),
        (
            "POST",
            "/loans",
            "loans:write",
            {"member_no": member.member_no, "product": "V1", "amount": "2000.00"},
        ),
    ]
    for n, (method, path, scope, body) in enumerate(routes):
        route = f"{method} {path}"
        kwargs: dict[str, Any] = {"json": body} if body else {}
        key = {"Idempotency-Key": f"scope-{n}"} if method == "POST" else {}

        anonymous = call(client, f"{API}{path}", method, headers=key, **kwargs)
        assert anonymous.status_code == 401, route
        assert problem_code(anonymous) == "unauthorized", route

        others = token(client, [s for s in SCOPES if s != scope])
        refused = call(client, f"{API}{path}", method, headers=bearer(others, **key), **kwargs)
        assert refused.status_code == 403, route
        assert problem_code(refused) == "insufficient_scope", route

        allowed = call(
            client, f"{API}{path}", method, headers=bearer(token(client, [scope]), **key), **kwargs
        )
        assert allowed.status_code == (201 if method == "POST" else 200), (
            route,
            allowed.get_data(as_text=True),
        )
        assert allowed.mimetype == "application/json", route
        allowed.close()


# -- accounts -----------------------------------------------------------------------------


def test_a_members_accounts_with_balances_holds_and_what_is_available(
    client: FlaskClient,
) -> None:
    member = member_with_accounts()
    no = member.member_no
    deposits = member_deposits(member.id)
    assert (deposits.guaranteed, deposits.own) == (Decimal("4000.00"), Decimal("5000.00"))

    reply = get(client, f"/members/{no}/accounts", token(client, ["accounts:read"]))

    assert reply.status_code == 200, reply.get_data(as_text=True)
    body = reply.get_json()
    assert body["member_no"] == no
    accounts = {a["number"]: a for a in body["accounts"]}
    assert list(accounts) == [no, f"{no}S", f"{no}T", f"FIX-{no}-1", f"{no}SH"]
    assert accounts[no] == {
        "number": no,
        "product": "DEP",
        "product_name": "Deposits",
        "kind": "deposits",
        "status": "open",
        "withdrawable": False,
        "balance": f"{deposits.deposits:.2f}",
        "holds": [
            {
                "kind": "guarantees",
                "description": "held by loans the member guarantees",
                "amount": "4000.00",
            },
            {
                "kind": "own_loans",
                "description": "held by the member's own secured loans",
                "amount": "5000.00",
            },
        ],
        "held": "9000.00",
        "available": f"{deposits.deposits - Decimal(9000):.2f}",
        "locked_until": None,
    }
    savings = accounts[f"{no}S"]
    # 8,000 less the 3,000 fixed; a withdrawal leaves the 100 minimum and pays the 30 fee.
    assert (savings["balance"], savings["held"], savings["available"]) == (
        "5000.00",
        "100.00",
        "4870.00",
    )
    assert savings["withdrawable"] is True
    assert savings["holds"][0]["kind"] == "minimum_balance"
    fixed = accounts[f"FIX-{no}-1"]
    assert (fixed["kind"], fixed["balance"], fixed["available"]) == ("fixed", "3000.00", "0.00")
    assert fixed["locked_until"] == "2027-03-01"
    target = accounts[f"{no}T"]
    assert (target["balance"], target["locked_until"]) == ("1200.00", "2027-01-01")
    assert (accounts[f"{no}SH"]["kind"], accounts[f"{no}SH"]["balance"]) == ("shares", "1000.00")


def test_unknown_members_and_accounts_are_404_problems(client: FlaskClient) -> None:
    member = make_borrower(savings=1000)
    loan = make_loan(
        product=make_product("V1"), member=make_borrower(savings=9000), on=date(2026, 11, 1)
    )
    tok = token(client, ["accounts:read"])
    for path, code in [
        ("/members/M999999/accounts", "member_not_found"),
        ("/members/M999999/statement", "member_not_found"),
        ("/accounts/M999999S/statement", "account_not_found"),
        # An account product the member never opened, a loan, nonsense, too long.
        (f"/accounts/{member.member_no}T/statement", "account_not_found"),
        (f"/accounts/{loan.loan_no}/statement", "account_not_found"),
        ("/accounts/%20/statement", "account_not_found"),
        (f"/accounts/{'X' * 300}/statement", "account_not_found"),
    ]:
        reply = get(client, path, tok)
        assert reply.status_code == 404, path
        assert problem_code(reply) == code, path


def test_an_account_statements_lines_add_up_to_its_balance(client: FlaskClient) -> None:
    member = member_with_accounts()
    tok = token(client, ["accounts:read"])
    listed = get(client, f"/members/{member.member_no}/accounts", tok).get_json()["accounts"]
    assert len(listed) == 5
    for account in listed:
        reply = get(client, f"/accounts/{account['number']}/statement", tok, **WHOLE_YEAR)
        assert reply.status_code == 200, reply.get_data(as_text=True)
        statement = reply.get_json()
        assert (statement["account"], statement["from"], statement["to"]) == (
            account["number"],
            "2026-01-01",
            "2026-12-31",
        )
        running = Decimal(statement["opening_balance"])
        assert running == 0  # everything happened this year
        for line in statement["lines"]:
            running += Decimal(line["credit"]) - Decimal(line["debit"])
            assert Decimal(line["balance"]) == running, line
        assert statement["closing_balance"] == account["balance"] == f"{running:.2f}"
        assert statement["lines"], account["number"]

    # From mid-March: the savings open at 5,000 (8,000 in, 3,000 fixed) and do not move.
    later = get(
        client, f"/accounts/{member.member_no}S/statement", tok, **{"from": "2026-03-15"}
    ).get_json()
    assert (later["opening_balance"], later["lines"], later["closing_balance"]) == (
        "5000.00",
        [],
        "5000.00",
    )
    savings = get(client, f"/accounts/{member.member_no}s/statement", tok, **WHOLE_YEAR).get_json()
    assert [(x["date"], x["credit"], x["debit"]) for x in savings["lines"]] == [
        ("2026-02-01", "8000.00", "0.00"),
        ("2026-03-01", "0.00", "3000.00"),
    ]
    audited = db.session.scalars(
        select(AuditLog).where(AuditLog.action == "member.statement").order_by(AuditLog.id)
    ).all()
    assert len(audited) == 7
    assert audited[0].actor.startswith("api:sacco_")
    assert audited[0].object_id == member.member_no


def test_a_statement_refuses_a_bad_range_in_words(client: FlaskClient) -> None:
    member = make_borrower(savings=1000)
    tok = token(client, ["accounts:read"])
    path = f"/accounts/{member.member_no}/statement"
    backwards = get(client, path, tok, **{"from": "2026-03-01", "to": "2026-02-01"})
    assert (backwards.status_code, problem_code(backwards)) == (422, "statement_range")
    assert "before it starts" in backwards.get_json()["detail"]
    too_long = get(client, path, tok, **{"from": "2025-01-01", "to": "2026-06-30"})
    assert (too_long.status_code, problem_code(too_long)) == (422, "statement_range")
    for query in ({"from": "yesterday"}, {"to": "9999-12-31"}, {"format": "xlsx"}):
        invalid = get(client, path, tok, **query)
        assert invalid.status_code == 422, query
        assert problem_code(invalid) == "invalid", query
    assert db.session.scalar(select(AuditLog).where(AuditLog.action == "member.statement")) is None


def test_the_statement_as_the_consoles_pdf_and_csv(app: Flask, client: FlaskClient) -> None:
    member = member_with_accounts()
    no, member_id = member.member_no, member.id
    tok = token(client, ["accounts:read"])

    pdf = get(client, f"/accounts/{no}S/statement", tok, format="pdf", **WHOLE_YEAR)
    assert pdf.status_code == 200
    assert pdf.mimetype == "application/pdf"
    assert pdf.headers["Content-Disposition"] == (
        f'attachment; filename="statement-{no}S-20260101-20261231.pdf"'
    )
    content = pdf.get_data()
    pdf.close()
    assert content.startswith(b"%PDF")
    assert f"Ordinary savings {no}S".encode() in content  # uncompressed: the text is there
    assert b"Shares" not in content and b"Loan " not in content  # this account alone

    reply = get(client, f"/accounts/{no}S/statement", tok, format="csv", **WHOLE_YEAR)
    assert (reply.status_code, reply.mimetype) == (200, "text/csv")
    rows = list(csv.reader(io.StringIO(reply.get_data().decode("utf-8-sig"))))
    reply.close()
    assert rows == [
        ["section", "date", "description", "debit", "credit", "balance"],
        [f"Ordinary savings {no}S", "2026-01-01", "Opening balance", "", "", "0.00"],
        [f"Ordinary savings {no}S", "2026-02-01", f"Deposit {no}S ORD1", "", "8000.00", "8000.00"],
        [
            f"Ordinary savings {no}S",
            "2026-03-01",
            f"Fixed deposit FIX-{no}-1 for 12 months",
            "3000.00",
            "",
            "5000.00",
        ],
        [f"Ordinary savings {no}S", "2026-12-31", "Closing balance", "", "", "5000.00"],
    ]

    # The member's whole statement is the console's very file, byte for byte.
    api_csv = get(client, f"/members/{no}/statement", tok, format="csv", **WHOLE_YEAR)
    assert api_csv.headers["Content-Disposition"] == (
        f'attachment; filename="statement-{no}-20260101-20261231.csv"'
    )
    console = app.test_client()
    email = staff("branch_manager")
    db.session.commit()  # SQLite: the console's request needs the write lock
    login(console, email)
    from_console = call(
        console,
        f"/admin/member/statement/{member_id}",
        query_string={"start": "2026-01-01", "end": "2026-12-31", "format": "csv"},
    )
    assert from_console.status_code == 200
    assert api_csv.get_data() == from_console.get_data()
    api_csv.close()
    from_console.close()

    json_whole = get(client, f"/members/{no}/statement", tok, **WHOLE_YEAR).get_json()
    assert [s["title"] for s in json_whole["sections"]][:2] == [
        "Deposits",
        f"Ordinary savings {no}S",
    ]


# -- loans --------------------------------------------------------------------------------


def test_loan_products_are_the_open_ones_with_amounts_as_strings(client: FlaskClient) -> None:
    make_product("V1", max_amount=Decimal("50000"), fee_type="percent", fee_value=Decimal("2.5"))
    make_product("V1", code="OLD", active=False)
    reply = get(client, "/loan-products", token(client, ["loans:read"]))
    assert reply.status_code == 200
    products = reply.get_json()["products"]
    assert [p["code"] for p in products] == ["V1"]
    v1 = products[0]
    assert (v1["min_amount"], v1["max_amount"], v1["min_share_capital"]) == (
        "1000.00",
        "50000.00",
        "0.00",
    )
    assert Decimal(v1["annual_rate"]) == 12 and Decimal(v1["fee_value"]) == Decimal("2.5")
    assert (v1["default_term"], v1["frequency"], v1["fee_type"]) == (12, "monthly", "percent")


def test_eligibility_is_the_consoles_answer(client: FlaskClient) -> None:
    make_product("V1")
    saver = make_borrower(savings=4000)
    newcomer = make_borrower(savings=0)
    tok = token(client, ["loans:read"])

    yes = get(client, f"/members/{saver.member_no}/eligibility", tok, product="V1").get_json()
    assert yes == {
        "member_no": saver.member_no,
        "product": "V1",
        "eligible": True,
        "limit": "12000.00",  # three times the deposits
        "code": None,
        "reason": None,
    }
    no = get(client, f"/members/{newcomer.member_no}/eligibility", tok, product="V1").get_json()
    assert (no["eligible"], no["limit"], no["code"]) == (False, "0.00", "limit")
    assert "Save more" in no["reason"]

    unknown = get(client, f"/members/{saver.member_no}/eligibility", tok, product="NOPE")
    assert (unknown.status_code, problem_code(unknown)) == (422, "product_not_found")
    missing = get(client, "/members/M999999/eligibility", tok, product="V1")
    assert (missing.status_code, problem_code(missing)) == (404, "member_not_found")
    without = get(client, f"/members/{saver.member_no}/eligibility", tok)
    assert (without.status_code, problem_code(without)) == (422, "invalid")


def test_an_application_retried_with_its_key_is_one_loan(client: FlaskClient) -> None:
    make_product("V1")
    member = make_borrower(savings=10000)
    tok = token(client, ["loans:write"])
    body = {"member_no": member.member_no, "product": "V1", "amount": "6000.00", "term": 6}

    first = apply(client, tok, body, "apply-1")
    again = apply(client, tok, body, "apply-1")

    assert first.status_code == again.status_code == 201, first.get_data(as_text=True)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert first.get_json() == again.get_json()
    assert first.headers["Location"] == again.headers["Location"]
    loan = first.get_json()
    assert first.headers["Location"].endswith(f"{API}/loans/{loan['loan_no']}")
    assert (loan["status"], loan["channel"], loan["principal"], loan["term"]) == (
        "submitted",
        "api",
        "6000.00",
        6,
    )
    assert (loan["owed"], loan["schedule"]) == ("0.00", [])  # nothing owed until paid out
    assert loans() == 1
    submitted = db.session.scalar(select(AuditLog).where(AuditLog.action == "loan.submit"))
    assert submitted is not None and submitted.actor.startswith("api:sacco_")

    other = apply(client, tok, {**body, "amount": "7000.00"}, "apply-1")
    assert (other.status_code, problem_code(other)) == (422, "idempotency_key_reused")
    keyless = apply(client, tok, body, None)
    assert (keyless.status_code, problem_code(keyless)) == (400, "idempotency_key_required")
    assert loans() == 1


def test_two_identical_applications_at_the_same_instant_are_one_loan(
    app: Flask, client: FlaskClient, pg: None
) -> None:
    make_product("V1")
    member = make_borrower(savings=10000)
    tok = token(client, ["loans:write"])
    body = {"member_no": member.member_no, "product": "V1", "amount": "3000.00"}
    db.session.commit()
    start = threading.Barrier(2)
    replies: list[tuple[int, dict[str, Any]]] = []

    def post() -> None:
        with app.app_context():
            start.wait()
            reply = app.test_client().post(
                f"{API}/loans", json=body, headers=bearer(tok, **{"Idempotency-Key": "same"})
            )
            replies.append((reply.status_code, reply.get_json()))
            db.session.remove()

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [status for status, _ in replies] == [201, 201]
    assert replies[0][1] == replies[1][1]
    assert loans() == 1


def test_a_refused_application_is_a_422_with_its_reason_and_writes_nothing(
    client: FlaskClient,
) -> None:
    make_product("V1")
    saver = make_borrower(savings=1000)
    newcomer = make_borrower(savings=0)
    tok = token(client, ["loans:write"])

    over = apply(
        client, tok, {"member_no": saver.member_no, "product": "V1", "amount": "5000"}, "k1"
    )
    assert (over.status_code, problem_code(over)) == (422, "loan_refused")
    assert over.get_json()["detail"] == "the most you can borrow now is KES 3,000"
    assert over.get_json()["reason"] is None  # eligible, only not for this much
    poor = apply(
        client, tok, {"member_no": newcomer.member_no, "product": "V1", "amount": "1000"}, "k2"
    )
    assert (poor.status_code, problem_code(poor), poor.get_json()["reason"]) == (
        422,
        "loan_refused",
        "limit",
    )
    for body, code in [
        ({"member_no": "M999999", "product": "V1", "amount": "1000"}, "member_not_found"),
        ({"member_no": saver.member_no, "product": "NOPE", "amount": "1000"}, "product_not_found"),
        ({"member_no": saver.member_no, "product": "V1", "amount": "10.005"}, "invalid"),
        ({"member_no": saver.member_no, "product": "V1", "amount": "-5"}, "invalid"),
        ({"member_no": saver.member_no, "product": "V1", "amount": "NaN"}, "invalid"),
        ({"member_no": saver.member_no, "product": "V1", "amount": "1e999999"}, "invalid"),
        ({"member_no": saver.member_no, "product": "V1", "amount": 1000}, "invalid"),
        ({"member_no": saver.member_no, "product": "V1", "amount": "1000", "term": 0}, "invalid"),
        ({"member_no": saver.member_no, "amount": "1000"}, "invalid"),
    ]:
        reply = apply(client, tok, body, f"bad-{body}")
        assert reply.status_code == 422, body
        assert problem_code(reply) == code, (body, reply.get_json())
    assert loans() == 0


def test_a_loan_with_its_schedule_what_it_owes_and_its_arrears(client: FlaskClient) -> None:
    product = make_product("V1")
    loan_id = make_loan(product=product, amount=10000, on=date(2026, 6, 1)).id
    run_job("loan-arrears", date(2026, 12, 1))
    loan = reload(loan_id)
    assert loan.days_past_due > 0
    owed = schedule_owed(loan)

    reply = get(client, f"/loans/{loan.loan_no.lower()}", token(client, ["loans:read"]))

    assert reply.status_code == 200, reply.get_data(as_text=True)
    body = reply.get_json()
    assert (body["loan_no"], body["status"], body["product"], body["principal"]) == (
        loan.loan_no,
        "active",
        "V1",
        "10000.00",
    )
    assert body["days_in_arrears"] == loan.days_past_due
    assert body["disbursed_on"] == "2026-06-01"
    assert body["owed_by_part"] == {
        "principal": f"{owed['principal']:.2f}",
        "interest": f"{owed['interest']:.2f}",
        "fees": "0.00",
        "penalty": "0.00",
        "total": f"{sum(owed.values()):.2f}",
    }
    assert body["owed"] == body["owed_by_part"]["total"]
    schedule = body["schedule"]
    assert len(schedule) == 12 and schedule[0]["due_date"] == "2026-07-01"
    assert sum(Decimal(row["outstanding"]) for row in schedule) == Decimal(body["owed"])
    late = [row for row in schedule if row["state"] == "late"]
    assert late and len(late) == body["late_installments"]
    assert all(row["due_date"] < business_today().isoformat() for row in late)
    assert Decimal(body["arrears"]) == sum(Decimal(row["outstanding"]) for row in late)
    assert all(Decimal(row["total"]) == Decimal(row["outstanding"]) for row in late)

    missing = get(client, "/loans/L999999", token(client, ["loans:read"]))
    assert (missing.status_code, problem_code(missing)) == (404, "loan_not_found")
    long = get(client, f"/loans/{'L' * 300}", token(client, ["loans:read"]))
    assert (long.status_code, problem_code(long)) == (404, "loan_not_found")


def test_a_members_loans_a_page_at_a_time_newest_first(client: FlaskClient) -> None:
    product = make_product("V1")
    member = make_borrower(savings=50000)
    made = [
        make_loan(product=product, member=member, amount=5000, on=date(2026, 11, day)).loan_no
        for day in (1, 2, 3)
    ]
    tok = token(client, ["loans:read"])
    path = f"/members/{member.member_no}/loans"

    first = get(client, path, tok, limit="2").get_json()
    assert [x["loan_no"] for x in first["items"]] == [made[2], made[1]]
    assert first["next_cursor"]
    second = get(client, path, tok, limit="2", cursor=first["next_cursor"]).get_json()
    assert [x["loan_no"] for x in second["items"]] == [made[0]]
    assert second["next_cursor"] is None
    item = second["items"][0]
    assert (item["status"], item["principal"], item["disbursed_on"]) == (
        "active",
        "5000.00",
        "2026-11-01",
    )
    assert Decimal(item["owed"]) > Decimal("5000")  # principal and the scheduled interest

    assert problem_code(get(client, path, tok, cursor="not-ours!")) == "bad_cursor"
    assert get(client, path, tok, limit="0").status_code == 422
    assert get(client, path, tok, limit="101").status_code == 422
    missing = get(client, "/members/M999999/loans", tok)
    assert (missing.status_code, problem_code(missing)) == (404, "member_not_found")
    nobody = make_borrower(savings=10)
    empty = get(client, f"/members/{nobody.member_no}/loans", tok).get_json()
    assert empty == {"items": [], "next_cursor": None}
