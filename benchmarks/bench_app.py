"""The app a benchmark runs on: DATABASE_URL / REDIS_URL when given (emptied, so only with
--wipe), else a fresh SQLite file and embedded Redis in a temporary folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import text

from app import create_app
from app.extensions import db, embedded_redis_url

REFUSE = "DATABASE_URL or REDIS_URL is set: this empties them; add --wipe to go on"


def bench_app(prefix: str, *, wipe: bool) -> tuple[Flask, Path] | None:
    """The app and its temporary folder; None (after saying why) when the environment
    points at a database or Redis and --wipe was not given."""
    if (os.environ.get("DATABASE_URL") or os.environ.get("REDIS_URL")) and not wipe:
        print(REFUSE)
        return None
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-bench-"))
    app = create_app(
        {
            "APP_ENV": "test",
            "DEMO_DATA": False,
            "SECRET_KEY": "bench",
            "DATABASE_URL": os.environ.get("DATABASE_URL") or f"sqlite:///{tmp / 'bench.db'}",
            "REDIS_URL": os.environ.get("REDIS_URL") or embedded_redis_url(str(tmp / "redis")),
            "LOG_LEVEL": "WARNING",
        }
    )
    return app, tmp


def bench_schema_fresh() -> None:
    """The schema built by the migrations, as the tests build it; on PostgreSQL the old one
    is dropped first (the caller has refused unless --wipe was given)."""
    if db.engine.dialect.name == "postgresql":
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    upgrade()
