"""Bulk writes shared by the close-of-business chunks (`app.batch`) and the loan-book import.

On PostgreSQL a chunk's rows travel as a few arrays or one COPY stream: a multi-row
INSERT or an executemany of thousands of rows costs psycopg a parse of a statement too
long for its cache, and SQLAlchemy its per-row bookkeeping, which together were half a
chunk's time. Elsewhere (SQLite, in-process) the plain executemany is already cheap.
Every value still goes through its column's type (Money rounds to the cent), so both
paths store the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

import psycopg
from psycopg.types.json import Json
from sqlalchemy import JSON, CursorResult, Table, bindparam, insert, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from app.extensions import db


def on_postgres() -> bool:
    return db.engine.dialect.name == "postgresql"


def insert_ignoring(model: type[Any] | Table, keys: list[str]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO NOTHING in the session's dialect: a row whose key
    exists already is skipped, and the unique constraint decides (a racing writer or a
    chunk redone after a crash adds nothing twice)."""
    if on_postgres():
        return pg_insert(model).on_conflict_do_nothing(index_elements=keys)
    return sqlite_insert(model).on_conflict_do_nothing(index_elements=keys)


def _processed(table: Table, column: str, values: Iterable[Any]) -> list[Any]:
    """`values` as the column's type binds them (Money rounds, UTCDateTime converts); a
    JSON value in psycopg's JSON wrapper, as SQLAlchemy's psycopg dialect sends it (None
    too, as JSON null, unless the column keeps None as SQL NULL)."""
    kind = table.c[column].type
    process = kind.bind_processor(db.engine.dialect)
    if isinstance(kind, JSON) and process is None:
        return [None if v is None and kind.none_as_null else Json(v) for v in values]
    return list(values) if process is None else [process(v) for v in values]


def _array_type(table: Table, column: str) -> str:
    return f"{table.c[column].type.compile(dialect=db.engine.dialect)}[]"


def copy_rows(
    table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, rounded: bool = False
) -> None:
    """Insert `rows` (tuples in `columns` order) in the session's transaction: COPY on
    PostgreSQL, one executemany INSERT elsewhere. `rounded`: the caller has every value
    in its stored form already (money to the cent, as the ledger's checks and the
    schedule builder leave it), so PostgreSQL gets them as they are: the Money type's
    rounding is a few microseconds a value, seconds over a book's 174,000 installments."""
    if not rows:
        return
    if not on_postgres():
        db.session.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    if rounded:
        processed: Sequence[Sequence[Any]] = rows
    else:
        by_column = zip(columns, zip(*rows, strict=True), strict=True)
        processed = list(zip(*(_processed(table, c, col) for c, col in by_column), strict=True))
    driver = db.session.connection().connection.driver_connection
    assert driver is not None  # a connection in the session's transaction
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in processed:
                copy.write_row(row)
    except psycopg.Error as exc:
        # As SQLAlchemy raises it for a statement of its own (a unique key taken is an
        # IntegrityError), so callers catch one kind of database error whatever wrote.
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


def copy_dicts(table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert `rows` (dicts with the same keys) as `insert(table)` would: COPY on
    PostgreSQL, one executemany elsewhere. COPY knows only the database's defaults, so a
    column left out takes its model's plain default here (a status, a zero balance); one
    whose default is computed (a timestamp) must be given, or this refuses the rows."""
    if not rows:
        return
    if not on_postgres():
        db.session.execute(insert(table), list(rows))
        return
    given = list(rows[0])
    left = [c for c in table.c if c.name not in given and c.default is not None]
    computed = [c.name for c in left if not getattr(c.default, "is_scalar", False)]
    if computed:
        raise ValueError(f"{table.name}: give {', '.join(computed)} (COPY cannot compute it)")
    defaults = tuple(getattr(c.default, "arg", None) for c in left)
    copy_rows(
        table,
        given + [c.name for c in left],
        [tuple(row[name] for name in given) + defaults for row in rows],
    )


def insert_returning(
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    returning: Sequence[str],
    ignore_conflicts_on: list[str] | None = None,
) -> list[Any]:
    """INSERT many rows and return `returning` of those written (with
    `ignore_conflicts_on`, a row whose key exists is skipped and returns nothing). On
    PostgreSQL one statement over unnest() of one array a column."""
    if not rows:
        return []
    columns = list(rows[0])
    if not on_postgres():
        stmt = insert_ignoring(table, ignore_conflicts_on) if ignore_conflicts_on else insert(table)
        return list(
            db.session.execute(stmt.returning(*(table.c[c] for c in returning)), rows).all()
        )
    arrays = ", ".join(f"CAST(:a{i} AS {_array_type(table, c)})" for i, c in enumerate(columns))
    conflict = (
        f" ON CONFLICT ({', '.join(ignore_conflicts_on)}) DO NOTHING" if ignore_conflicts_on else ""
    )
    # Only identifiers of our own Table go into the text (an unknown column fails above,
    # in _array_type); every value is bound.
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"  # noqa: S608
        f"{conflict} RETURNING {', '.join(returning)}"
    )
    params = {
        f"a{i}": _processed(table, c, (row[c] for row in rows)) for i, c in enumerate(columns)
    }
    return list(db.session.execute(text(sql), params).all())


def update_rows(
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    key: str = "id",
    add: Sequence[str] = (),
    where: str = "",
) -> int:
    """UPDATE `table` from `rows` (dicts of `key` and the columns to set), each matched on
    `key`; a column in `add` is added to, not replaced. `where` is an extra SQL condition
    on the row (e.g. "status = 'open'"). Returns how many rows were updated. On
    PostgreSQL one statement over unnest() arrays, elsewhere an executemany."""
    if not rows:
        return 0
    columns = [c for c in rows[0] if c != key]
    if not on_postgres():
        values = {
            c: (table.c[c] + bindparam(f"b_{c}")) if c in add else bindparam(f"b_{c}")
            for c in columns
        }
        stmt = update(table).where(table.c[key] == bindparam(f"b_{key}")).values(values)
        if where:
            stmt = stmt.where(text(where))
        # An UPDATE gives a CursorResult (with rowcount); SQLAlchemy 2.1 types it as a Result.
        result = cast(
            CursorResult[Any],  # pragma: no mutate: cast() does nothing at run time
            db.session.execute(stmt, [{f"b_{c}": v for c, v in row.items()} for row in rows]),
        )
        return result.rowcount
    names = [key, *columns]
    arrays = ", ".join(f"CAST(:a{i} AS {_array_type(table, c)})" for i, c in enumerate(names))
    sets = ", ".join(
        f"{c} = {table.name}.{c} + v.{c}" if c in add else f"{c} = v.{c}" for c in columns
    )
    # As in insert_returning: identifiers of our own Table (and `where`, written in our
    # code, never from input); every value is bound.
    condition = f" AND {table.name}.{where}" if where else ""
    source = f"unnest({arrays}) AS v({', '.join(names)})"
    sql = f"UPDATE {table.name} SET {sets} FROM {source} WHERE {table.name}.{key} = v.{key}"  # noqa: S608
    sql += condition
    params = {f"a{i}": _processed(table, c, (row[c] for row in rows)) for i, c in enumerate(names)}
    result = cast(
        CursorResult[Any],  # pragma: no mutate: cast() does nothing at run time
        db.session.execute(text(sql), params),
    )
    return result.rowcount
