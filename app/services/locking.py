"""The one way a service takes a row's lock: every change to a loan, a member, a payment
or an M-PESA request starts here."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select

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
