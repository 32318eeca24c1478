"""Shared test helpers. Job functions here are run by a real RQ worker, which imports them
by their dotted path (`tests.helpers.NAME`)."""

from __future__ import annotations

from app.extensions import db
from app.models import Member


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
