"""B2C payouts after the fact: a queue timeout, the Transaction Status query it makes
(what Safaricom is sent, the query row staff read) and the answer that settles the payout,
plus a refused callback's row and the STK prompt's waiting message. Daraja is faked at the
HTTP boundary (`responses`); jobs run in a real RQ worker. (Mutation testing, issue 23.)"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from app.cli.runtime import make_worker
from app.extensions import db, queue
from app.models import JournalEntry, Loan, MpesaCallback, MpesaRequest, Payment
from app.services.loans import loan_apply, loan_approve, loan_retry_payout
from app.services.payments import (
    PaymentError,
    callback_process,
    callback_refused,
    payments_query_payout,
    payments_request_stk,
)
from app.services.savings import exit_figures
from tests.helpers import b2c_result_body
from tests.loan_factories import make_borrower, make_loan, make_product, make_staff

TOKEN = "dev-callback-token"  # noqa: S105 - the test settings' CALLBACK_TOKEN
STATUS_URL = "/mpesa/transactionstatus/v1/query"


@pytest.fixture
def b2c(mocked: responses.RequestsMock, base: str) -> responses.RequestsMock:
    mocked.get(f"{base}/oauth/v1/generate", json={"access_token": "tok", "expires_in": "3599"})
    mocked.post(
        f"{base}/mpesa/b2c/v3/paymentrequest",
        json={"ConversationID": "AG_B2C_0001", "ResponseCode": "0"},
    )
    mocked.post(
        f"{base}{STATUS_URL}",
        json={
            "ConversationID": "AG_STATUS_0001",
            "OriginatorConversationID": "status-0001",
            "ResponseCode": "0",
            "ResponseDescription": "Accept the service request successfully.",
        },
    )
    return mocked


def work() -> None:
    make_worker(("payments",)).work(burst=True)


def post(client: FlaskClient, path: str, body: object) -> None:
    client.post(f"/payments/{TOKEN}/{path}", data=json.dumps(body), content_type="application/json")


def process_new() -> list[str]:
    """Settle the callbacks received so far, in order, by hand (their jobs dropped)."""
    ids = list(
        db.session.scalars(
            select(MpesaCallback.id)
            .where(MpesaCallback.status == "received")
            .order_by(MpesaCallback.id)
        )
    )
    queue("payments").empty()
    db.session.commit()
    return [callback_process(callback_id=cid) for cid in ids]


def status_calls(mock: responses.RequestsMock) -> list[dict]:
    return [json.loads(c.request.body) for c in mock.calls if STATUS_URL in c.request.url]


def sent_payout() -> tuple[int, MpesaRequest]:
    """An approved 5,000 loan whose payout has been sent (the loan is disbursing)."""
    member = make_borrower(savings=10000)
    loan = loan_apply(
        member_id=member.id, product_id=make_product("V1").id, amount=5000, as_of=date(2026, 11, 20)
    )
    loan_approve(loan_id=loan.id, staff=make_staff("branch_manager"))
    loan_id = loan.id
    work()
    db.session.expire_all()
    payout = db.session.scalar(select(MpesaRequest).where(MpesaRequest.loan_id == loan_id))
    assert payout.status == "sent"
    db.session.expunge(payout)
    return loan_id, payout


def queue_timeout(payout: MpesaRequest) -> dict:
    return {
        "Result": {
            "ResultCode": 1,
            "ResultDesc": "timeout",
            "OriginatorConversationID": payout.originator_conversation_id,
        }
    }


def status_answer(
    code: str = "0",
    *,
    desc: str = "The service request is processed successfully.",
    receipt: str | None = "NLJ41HAY7Z",
    state: str | None = "Completed",
    amount: object = 5000,
    finalised: object = 20261121114550,
    ids: dict | None = None,
) -> dict:
    params = [{"Key": "Amount", "Value": amount}, {"Key": "FinalisedTime", "Value": finalised}]
    if receipt is not None:
        params.append({"Key": "ReceiptNo", "Value": receipt})
    if state is not None:
        params.append({"Key": "TransactionStatus", "Value": state})
    result = {
        "ResultType": 0,
        "ResultCode": code,
        "ResultDesc": desc,
        **(ids or {"ConversationID": "AG_STATUS_0001", "OriginatorConversationID": "status-0001"}),
    }
    if code == "0":
        result["ResultParameters"] = {"ResultParameter": params}
    return {"Result": result}


def settling(payout: MpesaRequest, final: str) -> dict:
    """The B2C result that pays ("succeeded") or fails ("failed", 2040) `payout`."""
    if final == "succeeded":
        return b2c_result_body(payout.originator_conversation_id, amount=5000, receipt="NLJ0000001")
    return b2c_result_body(payout.originator_conversation_id, 2040, desc="Unregistered")


def row(model: type, id_: int):  # noqa: ANN201
    db.session.expire_all()
    return db.session.get(model, id_)


# -- a queue timeout and the Transaction Status query it makes ---------------------------


def test_a_queue_timeout_leaves_the_payout_unknown_and_asks_status_by_our_id(
    client: FlaskClient,
    b2c,  # noqa: ANN001
) -> None:
    loan_id, payout = sent_payout()
    post(client, "b2c/timeout", queue_timeout(payout))
    work()
    got = row(MpesaRequest, payout.id)
    assert (got.status, got.result_desc) == ("unknown", "queue timeout: asking Transaction Status")
    assert got.checked_at is not None
    assert row(Loan, loan_id).status == "disbursing"
    (sent,) = status_calls(b2c)
    assert sent["CommandID"] == "TransactionStatusQuery"
    assert sent["OriginalConversationID"] == payout.originator_conversation_id
    assert "TransactionID" not in sent  # no receipt yet: asked by our own id
    assert sent["ResultURL"].endswith(f"/payments/{TOKEN}/status/result")
    assert sent["QueueTimeOutURL"].endswith(f"/payments/{TOKEN}/status/timeout")
    query = db.session.scalar(select(MpesaRequest).where(MpesaRequest.kind == "status"))
    assert (query.status, query.purpose, query.parent_id) == ("sent", "status", payout.id)
    assert (query.member_id, query.loan_id) == (payout.member_id, loan_id)
    assert (query.phone, query.amount) == (payout.phone, payout.amount)
    assert (query.conversation_id, query.originator_conversation_id) == (
        "AG_STATUS_0001",
        "status-0001",
    )
    assert (query.channel, query.requested_by) == ("system", "reconciliation")
    assert query.sent_at is not None


@pytest.mark.parametrize("final", ["succeeded", "failed"])
def test_a_late_queue_timeout_for_a_settled_payout_is_a_duplicate_and_asks_nothing(
    client: FlaskClient,
    b2c,  # noqa: ANN001
    final: str,
) -> None:
    loan_id, payout = sent_payout()
    post(client, "b2c/result", settling(payout, final))
    post(client, "b2c/timeout", queue_timeout(payout))
    assert process_new() == ["processed" if final == "succeeded" else "failed", "duplicate"]
    work()
    assert row(MpesaRequest, payout.id).status == final
    assert status_calls(b2c) == []
    assert row(Loan, loan_id).status == ("active" if final == "succeeded" else "approved")


def test_a_payout_result_that_answers_nothing_of_ours_is_kept_unmatched(
    client: FlaskClient,
    b2c,  # noqa: ANN001
) -> None:
    sent_payout()
    post(client, "b2c/result", b2c_result_body("nobody-of-ours", amount=5000))
    assert process_new() == ["unmatched"]
    assert db.session.scalar(select(MpesaCallback.status)) == "unmatched"
    assert status_calls(b2c) == []


def test_a_paid_result_disburses_once_names_its_callback_and_asks_no_status(
    client: FlaskClient,
    b2c,  # noqa: ANN001
) -> None:
    loan_id, payout = sent_payout()
    post(
        client,
        "b2c/result",
        b2c_result_body(payout.originator_conversation_id, amount=5000, receipt="NLJ0000002"),
    )
    assert process_new() == ["processed"]
    work()
    callback_id = db.session.scalar(select(MpesaCallback.id))
    payment = db.session.scalar(select(Payment))
    assert (payment.receipt, payment.callback_id, payment.request_id) == (
        "NLJ0000002",
        callback_id,
        payout.id,
    )
    assert row(Loan, loan_id).status == "active"
    assert status_calls(b2c) == []


def test_a_duplicate_id_result_asks_status_about_that_payout(client: FlaskClient, b2c) -> None:  # noqa: ANN001
    loan_id, payout = sent_payout()
    post(client, "b2c/result", b2c_result_body(payout.originator_conversation_id, 15, desc="Dup"))
    assert process_new() == ["unknown"]
    work()  # the status query queued after commit
    (sent,) = status_calls(b2c)
    assert sent["OriginalConversationID"] == payout.originator_conversation_id
    query = db.session.scalar(select(MpesaRequest).where(MpesaRequest.kind == "status"))
    assert query.parent_id == payout.id
    assert row(Loan, loan_id).status == "disbursing"


@pytest.mark.parametrize("code", ["15", "9999"], ids=["duplicate-id", "unknown-code"])
@pytest.mark.parametrize("final", ["succeeded", "failed"])
def test_a_doubtful_result_after_the_payout_settled_reopens_nothing_and_asks_nothing(
    client: FlaskClient,
    b2c,  # noqa: ANN001
    final: str,
    code: str,
) -> None:
    loan_id, payout = sent_payout()
    post(client, "b2c/result", settling(payout, final))
    post(client, "b2c/result", b2c_result_body(payout.originator_conversation_id, code, desc="?"))
    assert process_new() == ["processed" if final == "succeeded" else "failed", "duplicate"]
    work()
    got = row(MpesaRequest, payout.id)
    assert (got.status, got.result_code) == (final, "0" if final == "succeeded" else "2040")
    assert status_calls(b2c) == []
    assert row(Loan, loan_id).status == ("active" if final == "succeeded" else "approved")


def test_a_doubtful_result_without_words_tells_staff_it_is_to_be_asked(
    client: FlaskClient,
    b2c,  # noqa: ANN001
) -> None:
    _, payout = sent_payout()
    body = b2c_result_body(payout.originator_conversation_id, 15)
    body["Result"]["ResultDesc"] = ""
    post(client, "b2c/result", body)
    assert process_new() == ["unknown"]
    got = row(MpesaRequest, payout.id)
    assert (got.status, got.result_code, got.result_desc) == ("unknown", "15", "to be asked")


def test_a_result_without_our_originator_id_is_matched_by_safaricoms_conversation_id(
    client: FlaskClient,
    b2c,  # noqa: ANN001
) -> None:
    loan_id, payout = sent_payout()
    assert payout.conversation_id == "AG_B2C_0001"  # from the send's reply
    body = b2c_result_body("", amount=5000, receipt="NLJ0000004")
    body["Result"]["ConversationID"] = "AG_B2C_0001"
    post(client, "b2c/result", body)
    assert process_new() == ["processed"]
    assert row(MpesaRequest, payout.id).receipt == "NLJ0000004"
    assert row(Loan, loan_id).status == "active"


# -- asking Transaction Status directly --------------------------------------------------


def test_a_payout_not_waiting_for_an_answer_is_not_asked_about(b2c) -> None:  # noqa: ANN001
    _, payout = sent_payout()
    assert payments_query_payout(request_id=999999) == "missing"
    for state in ("pending", "succeeded", "failed"):
        got = row(MpesaRequest, payout.id)
        got.status = state
        db.session.commit()
        assert payments_query_payout(request_id=payout.id) == state
    assert status_calls(b2c) == []


def test_a_status_query_daraja_refuses_is_recorded_on_the_payout(b2c, base: str) -> None:  # noqa: ANN001
    _, payout = sent_payout()
    b2c.replace(
        responses.POST,
        f"{base}{STATUS_URL}",
        status=500,
        json={"requestId": "1", "errorCode": "500.003.02", "errorMessage": "x" * 300},
    )
    assert payments_query_payout(request_id=payout.id) == "not asked"
    got = row(MpesaRequest, payout.id)
    assert got.result_desc.startswith("status query not taken: ")
    assert len(got.result_desc) == 255
    assert got.checked_at is not None and got.status == "sent"
    assert db.session.scalar(select(MpesaRequest).where(MpesaRequest.kind == "status")) is None


@pytest.mark.parametrize(
    ("reply", "conversation", "originator"),
    [
        (
            {"ConversationID": "C" * 70, "OriginatorConversationID": "  " + "o" * 70},
            "C" * 64,
            "o" * 64,
        ),
        ({"ResponseCode": "0"}, None, None),
        ({"ConversationID": "AG_1", "OriginatorConversationID": "ECHO"}, "AG_1", None),
    ],
    ids=["cut to 64", "absent", "echo of the payout's"],
)
def test_the_query_keeps_its_own_ids_from_the_reply(
    b2c,  # noqa: ANN001
    base: str,
    reply: dict,
    conversation: str | None,
    originator: str | None,
) -> None:
    _, payout = sent_payout()
    if reply.get("OriginatorConversationID") == "ECHO":
        reply = {**reply, "OriginatorConversationID": payout.originator_conversation_id}
    b2c.replace(responses.POST, f"{base}{STATUS_URL}", json=reply)
    assert payments_query_payout(request_id=payout.id) == "asked"
    query = db.session.scalar(select(MpesaRequest).where(MpesaRequest.kind == "status"))
    assert (query.conversation_id, query.originator_conversation_id) == (conversation, originator)
    assert row(MpesaRequest, payout.id).checked_at is not None


# -- the Transaction Status answer -------------------------------------------------------


def asked(client: FlaskClient) -> tuple[int, MpesaRequest]:
    loan_id, payout = sent_payout()
    post(client, "b2c/timeout", queue_timeout(payout))
    work()
    return loan_id, payout


def the_query() -> MpesaRequest:
    db.session.expire_all()
    return db.session.scalar(select(MpesaRequest).where(MpesaRequest.kind == "status"))


@pytest.mark.parametrize(
    "finalised", [20261121114550, "21.11.2026 11:45:50"], ids=["digits", "dotted"]
)
def test_a_completed_answer_pays_the_payout_from_its_receipt_amount_and_time(
    client: FlaskClient,
    b2c,  # noqa: ANN001
    finalised: object,
) -> None:
    loan_id, payout = asked(client)
    post(
        client,
        "status/result",
        status_answer(receipt=" nlj41hay7z0123456789xyz ", finalised=finalised),
    )
    assert process_new() == ["processed"]
    query = the_query()
    assert (query.status, query.result_code, query.result_desc) == (
        "succeeded",
        "0",
        "The service request is processed successfully.",
    )
    got = row(MpesaRequest, payout.id)
    assert (got.status, got.receipt, got.result_desc) == (
        "succeeded",
        "NLJ41HAY7Z0123456789",
        "paid (Transaction Status)",
    )
    payment = db.session.scalar(select(Payment))
    answer = db.session.scalar(
        select(MpesaCallback.id).where(MpesaCallback.kind == "status_result")
    )
    assert payment.callback_id == answer and payment.receipt == "NLJ41HAY7Z0123456789"
    paid_at = payment.transacted_at.replace(tzinfo=payment.transacted_at.tzinfo or UTC)
    assert paid_at == datetime(2026, 11, 21, 8, 45, 50, tzinfo=UTC)  # 11:45:50 in Nairobi
    assert row(Loan, loan_id).status == "active"


def test_an_answer_paying_another_amount_is_flagged_not_disbursed(client: FlaskClient, b2c) -> None:  # noqa: ANN001
    loan_id, payout = asked(client)
    post(client, "status/result", status_answer(amount=4000))
    assert process_new() == ["flagged"]
    got = row(MpesaRequest, payout.id)
    assert got.flag == "paid KES 4000 but KES 5000.00 was requested"
    assert row(Loan, loan_id).status == "disbursing"
    assert (
        db.session.scalar(select(JournalEntry).where(JournalEntry.kind == "disbursement")) is None
    )
    # Once flagged, staff settle it: even the right amount arriving later posts nothing.
    post(client, "b2c/result", b2c_result_body(payout.originator_conversation_id, amount=5000))
    assert process_new() == ["flagged"]
    assert row(MpesaRequest, payout.id).flag == "paid KES 4000 but KES 5000.00 was requested"
    assert row(Loan, loan_id).status == "disbursing"


def test_an_answer_that_it_does_not_exist_fails_the_payout_with_safaricoms_words(
    client: FlaskClient,
    b2c,  # noqa: ANN001
) -> None:
    loan_id, payout = asked(client)
    post(client, "status/result", status_answer("R000001", desc="The transaction does not exist."))
    assert process_new() == ["failed"]
    query = the_query()
    assert (query.status, query.result_code) == ("failed", "R000001")
    got = row(MpesaRequest, payout.id)
    assert (got.status, got.result_code, got.result_desc) == (
        "failed",
        "R000001",
        "The transaction does not exist.",
    )
    assert (
        row(Loan, loan_id).payout_error == "M-PESA payout failed: The transaction does not exist."
    )


@pytest.mark.parametrize(
    ("state", "receipt"),
    [("Pending", "NLJ41HAY7Z"), ("Completed", None)],
    ids=["pending", "no receipt"],
)
def test_an_answer_that_settles_nothing_leaves_the_payout_unknown(
    client: FlaskClient,
    b2c,  # noqa: ANN001
    state: str,
    receipt: str | None,
) -> None:
    loan_id, payout = asked(client)
    post(client, "status/result", status_answer(state=state, receipt=receipt))
    assert process_new() == ["unknown"]
    assert the_query().status == "succeeded"
    assert row(MpesaRequest, payout.id).status == "unknown"
    assert row(Loan, loan_id).status == "disbursing"
    assert db.session.scalar(select(Payment)) is None


def test_an_answer_found_by_the_querys_own_originator_id(client: FlaskClient, b2c) -> None:  # noqa: ANN001
    loan_id, _ = asked(client)
    post(client, "status/result", status_answer(ids={"OriginatorConversationID": "status-0001"}))
    assert process_new() == ["processed"]
    assert row(Loan, loan_id).status == "active"


def test_a_payout_answer_keeps_safaricoms_code_and_words_cut_to_their_columns(
    client: FlaskClient,
    b2c,  # noqa: ANN001
) -> None:
    loan_id, payout = sent_payout()
    code, words = "SFC_IC" + "9" * 20, "Held: " + "x" * 300
    post(client, "b2c/result", b2c_result_body(payout.originator_conversation_id, code, desc=words))
    assert process_new() == ["unknown"]  # a code we do not know: Transaction Status is asked
    got = row(MpesaRequest, payout.id)
    assert (got.status, got.result_code, got.result_desc) == ("unknown", code[:16], words[:255])
    assert row(Loan, loan_id).status == "disbursing"


def test_a_payout_and_its_status_query_never_answer_for_each_other(
    client: FlaskClient,
    b2c,  # noqa: ANN001
) -> None:
    """Both are M-PESA requests; an answer is looked up among its own kind only."""
    loan_id, payout = asked(client)
    # A status answer naming only the payout's ids, then a payout result naming the query's.
    payout_ids = {
        "ConversationID": payout.conversation_id,
        "OriginatorConversationID": payout.originator_conversation_id,
    }
    post(client, "status/result", status_answer(ids=payout_ids))
    post(client, "b2c/result", b2c_result_body("status-0001", amount=5000, receipt="NLJ0000009"))
    assert process_new() == ["unmatched", "unmatched"]
    assert (the_query().status, row(MpesaRequest, payout.id).status) == ("sent", "unknown")
    assert row(Loan, loan_id).status == "disbursing"
    assert db.session.scalar(select(Payment)) is None


@pytest.mark.parametrize("first", ["0", "R000001"], ids=["paid first", "missing first"])
def test_a_second_answer_to_a_settled_query_changes_nothing(
    client: FlaskClient,
    b2c,  # noqa: ANN001
    first: str,
) -> None:
    loan_id, payout = asked(client)
    post(client, "status/result", status_answer(first, desc="first"))
    process_new()
    before = the_query()
    kept = (before.status, before.result_code, before.result_desc)
    post(client, "status/result", status_answer("R000001" if first == "0" else "0", desc="second"))
    assert process_new() == ["duplicate"]
    after = the_query()
    assert (after.status, after.result_code, after.result_desc) == kept
    assert row(Loan, loan_id).status == ("active" if first == "0" else "approved")


def test_a_completed_answer_after_the_payout_failed_changes_nothing(
    client: FlaskClient,
    b2c,  # noqa: ANN001
) -> None:
    loan_id, payout = asked(client)
    post(client, "b2c/result", b2c_result_body(payout.originator_conversation_id, 2040, desc="no"))
    post(client, "status/result", status_answer())
    assert process_new() == ["failed", "duplicate"]
    assert the_query().status == "succeeded"
    assert row(MpesaRequest, payout.id).status == "failed"
    assert row(Loan, loan_id).status == "approved"
    assert db.session.scalar(select(Payment)) is None


def test_a_payout_failed_while_its_status_query_is_out_can_be_sent_again(
    client: FlaskClient,
    b2c,  # noqa: ANN001
) -> None:
    """The late failure settles the payout while the query asking about it is still out:
    a query is no payout on its way, so staff can send the money again. (Mutation
    testing, issue 23.)"""
    loan_id, payout = asked(client)
    post(client, "b2c/result", b2c_result_body(payout.originator_conversation_id, 2040, desc="no"))
    assert process_new() == ["failed"]
    assert (the_query().status, row(Loan, loan_id).status) == ("sent", "approved")
    again = loan_retry_payout(loan_id=loan_id, staff=make_staff("branch_manager"))
    assert (again.kind, again.status, again.loan_id) == ("b2c", "pending", loan_id)
    assert again.id not in (payout.id, the_query().id)


def test_a_status_query_left_out_after_its_payout_was_paid_keeps_no_exit_waiting(
    client: FlaskClient,
    b2c,  # noqa: ANN001
) -> None:
    """While the payout's outcome is unknown the member's exit waits for it; once its own
    late result has paid it, the question asked meanwhile (never answered) is no payment
    of theirs on its way. (Mutation testing, issue 23.)"""
    loan_id, payout = asked(client)
    member_id = row(Loan, loan_id).member_id
    on_its_way = "an M-PESA payment of theirs is on its way: wait for its result"
    assert on_its_way in exit_figures(member_id).blockers
    post(client, "b2c/result", b2c_result_body(payout.originator_conversation_id, amount=5000))
    assert process_new() == ["processed"]
    assert (the_query().status, row(MpesaRequest, payout.id).status) == ("sent", "succeeded")
    assert on_its_way not in exit_figures(member_id).blockers


def test_a_completed_answer_after_the_payout_was_paid_changes_nothing(
    client: FlaskClient,
    b2c,  # noqa: ANN001
) -> None:
    """The payout's own result came after all and paid it; the answer to the question
    asked meanwhile is a duplicate: no second payment, no flag for staff."""
    loan_id, payout = asked(client)
    post(client, "b2c/result", b2c_result_body(payout.originator_conversation_id, amount=5000))
    post(client, "status/result", status_answer())
    assert process_new() == ["processed", "duplicate"]
    assert the_query().status == "succeeded"
    paid = row(MpesaRequest, payout.id)
    assert (paid.status, paid.flag) == ("succeeded", None)
    assert row(Loan, loan_id).status == "active"
    assert db.session.scalar(select(func.count()).select_from(Payment)) == 1


# -- a refused callback, the waiting prompt ----------------------------------------------


@pytest.mark.parametrize(
    ("addr", "kept"), [("10.9.9.9", "10.9.9.9"), (None, None), ("a" * 70, "a" * 64)]
)
def test_a_refused_callback_is_kept_closed_and_counted(
    app: Flask, addr: str | None, kept: str | None
) -> None:
    labels = {"kind": "b2c_result", "outcome": "refused"}
    before = REGISTRY.get_sample_value("sacco_callbacks_total", labels) or 0.0
    callback_id = callback_refused(kind="b2c_result", raw=b"{}", size=2, remote_addr=addr)
    got = row(MpesaCallback, callback_id)
    assert (got.kind, got.status, got.body_size, got.remote_addr) == (
        "b2c_result",
        "refused",
        2,
        kept,
    )
    assert got.error == f"source address {addr} is not in MPESA_ALLOWED_IPS"
    assert got.processed_at is not None
    assert (REGISTRY.get_sample_value("sacco_callbacks_total", labels) or 0.0) - before == 1


def test_a_second_prompt_is_refused_in_the_members_words(app: Flask) -> None:
    member = make_borrower(savings=10000)
    member.phone = "254708374149"
    db.session.commit()
    loan = make_loan(product=make_product("V1"), on=date(2026, 1, 1), member=member)
    payments_request_stk(loan_id=loan.id, amount=500)
    with pytest.raises(PaymentError) as refused:
        payments_request_stk(loan_id=loan.id, amount=700)
    assert str(refused.value) == (
        f"a payment prompt for loan {loan.loan_no} is already on its way; "
        "answer it or try again in 3 minutes"
    )
