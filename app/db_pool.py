"""How the web and worker processes keep their database connections alive, cheaply.

`pool_pre_ping` pinged on every checkout: a round trip before every request's first
statement (and again after each commit), the most frequent query the USSD hop sent. Now
(SQLAlchemy's "disconnect handling", both halves):

- pessimistic only where it pays: a connection idle in the pool for IDLE_PING_S or more
  is pinged at checkout and, if dead, replaced before anyone uses it (a quiet night, a
  database restart or a firewall dropping idle sockets). A busy server's connections are
  never that idle, so under load nothing is pinged.
- optimistic otherwise: a connection found dead by a statement is invalidated, and
  SQLAlchemy then replaces every connection pooled before it (the pool "recreate" on a
  disconnect); POOL_RECYCLE_S also replaces each connection after half an hour, whatever
  happens. The USSD hop retries once on such a disconnect (app/ussd/retry.py).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.pool import Pool

IDLE_PING_S = 10.0
POOL_RECYCLE_S = 1800

ENGINE_OPTIONS: dict[str, Any] = {"pool_pre_ping": False, "pool_recycle": POOL_RECYCLE_S}

_CHECKED_IN = "sacco_checked_in"


@event.listens_for(Pool, "checkin")
def _note_checkin(dbapi_connection: Any, connection_record: Any) -> None:
    connection_record.info[_CHECKED_IN] = time.monotonic()


@event.listens_for(Pool, "checkout")
def _ping_if_idle(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
    """Ping a PostgreSQL connection that sat in the pool a while; raising
    DisconnectionError makes the pool replace it (SQLAlchemy retries the checkout)."""
    since = connection_record.info.get(_CHECKED_IN)
    if since is None or time.monotonic() - since < IDLE_PING_S:
        return  # new, or in use moments ago
    if not hasattr(dbapi_connection, "pgconn"):
        return  # SQLite: a file, nothing to drop it
    autocommit = dbapi_connection.autocommit
    try:
        # As SQLAlchemy's psycopg ping: ";" outside a transaction, so no BEGIN/ROLLBACK.
        dbapi_connection.autocommit = True
        dbapi_connection.execute(";")
    except Exception as error:  # noqa: BLE001 - whatever the driver says, it is gone
        raise exc.DisconnectionError(f"idle connection dead: {error}") from error
    finally:
        if not dbapi_connection.closed:
            dbapi_connection.autocommit = autocommit
