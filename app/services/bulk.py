"""Bulk writes shared by the close-of-business chunks (`app.batch`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.extensions import db


def insert_ignoring(model: type[Any] | Table, keys: list[str]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO NOTHING in the session's dialect: a row whose key
    exists already is skipped, and the unique constraint decides (a racing writer or a
    chunk redone after a crash adds nothing twice)."""
    if db.engine.dialect.name == "postgresql":
        return pg_insert(model).on_conflict_do_nothing(index_elements=keys)
    return sqlite_insert(model).on_conflict_do_nothing(index_elements=keys)
