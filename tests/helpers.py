"""Shared test helpers. Job functions here are run by a real RQ worker, which imports them
by their dotted path (`tests.helpers.NAME`)."""

from __future__ import annotations

from sqlalchemy import text

from app.extensions import db
from app.models import Member
from app.services.ledger import ledger_check


def job_rename_member_then_fail(member_id: int) -> None:
    """A job that fails halfway through a change, leaving it in the session."""
    member = db.session.get(Member, member_id)
    assert member is not None
    member.name = "Never Saved"
    raise RuntimeError("the job failed before it committed")


def job_member_name(member_id: int) -> str:
    member = db.session.get(Member, member_id)
    assert member is not None
    return member.name


def at_reply(code: int = 101, status: str = "Success", message_id: str = "ATXid_abc123") -> dict:
    sent = code in (100, 101, 102)
    return {
        "SMSMessageData": {
            "Message": f"Sent to {int(sent)}/1 Total Cost: KES 0.8000",
            "Recipients": [
                {
                    "statusCode": code,
                    "number": "+254700000001",
                    "status": status,
                    "cost": "KES 0.8000" if sent else "0",
                    "messageId": message_id if sent else "None",
                }
            ],
        }
    }


def assert_books_reconcile() -> None:
    db.session.remove()
    problems = ledger_check()
    db.session.rollback()
    assert problems == [], "the books do not reconcile:\n" + "\n".join(
        f"{p.what}: {p.detail}" for p in problems
    )


def truncate_all() -> None:
    tables = [t.name for t in reversed(db.metadata.sorted_tables)]
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - names from our metadata
