"""The one way a service takes a row's lock: every change to a loan, a member, a payment
or an M-PESA request starts here; and the one way a send job claims an outbox row."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, select, update

from app.extensions import db

_Row = TypeVar("_Row", bound=Any)


def lock_row(model: type[_Row], row_id: int) -> _Row | None:
    """The row, locked for this transaction and re-read under the lock.

    The lock serialises every change to it on PostgreSQL (SQLite locks at BEGIN);
    populate_existing makes the row we work from the one the lock protects, not a copy the
    session read before (a callback that looked the loan up by number first, say).
    OF: PostgreSQL refuses FOR UPDATE on the outer joins of the eager loads.
    """
    return db.session.scalar(
        select(model)
        .where(model.id == row_id)
        .with_for_update(of=model)
        .execution_options(populate_existing=True)
    )


def lock_existing(model: type[_Row], row_id: int) -> _Row:
    """lock_row for a row the caller has already read (an M-PESA request being answered, a
    callback being processed): rows are not deleted under us, so a missing one is a bug
    and fails here, by name, instead of as an AttributeError on None further on."""
    row = lock_row(model, row_id)
    if row is None:
        raise LookupError(f"{model.__name__} {row_id} is gone")
    return row


def claim_for_sending(row: Any, sendable: Collection[str]) -> bool:
    """Move an outbox row (an SMS, a webhook delivery) from a sendable status to "sending",
    counting the attempt, by one conditional UPDATE committed before the provider is
    called: of two runs of its send job, one claims it and the other gets False. It
    commits the session (whatever else the caller had changed goes with it); on True the
    row is refreshed."""
    model = type(row)
    # An UPDATE gives a CursorResult (with rowcount); SQLAlchemy 2.1 types it as a Result.
    claimed = cast(
        CursorResult[Any],
        db.session.execute(
            update(model)
            .where(model.id == row.id, model.status.in_(sendable))
            .values(status="sending", attempts=model.attempts + 1)
            .execution_options(synchronize_session=False)
        ),
    ).rowcount
    db.session.commit()
    if claimed != 1:
        return False
    db.session.refresh(row)
    return True
