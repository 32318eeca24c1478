"""The schema the migrations build is the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask

from app.extensions import db


def test_migrations_have_one_head_and_the_test_database_is_at_it(app: Flask) -> None:
    config = app.extensions["migrate"].migrate.get_config()
    heads = ScriptDirectory.from_config(config).get_heads()

    assert len(heads) == 1, f"migration branches need a merge revision: {heads}"
    db.session.commit()
    with db.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_heads() == tuple(heads)


def test_models_and_migrations_agree(app: Flask) -> None:
    db.session.commit()  # on SQLite an open session would hold the write lock
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diff = compare_metadata(context, db.metadata)

    assert diff == [], "models changed without a migration (flask db migrate):\n" + "\n".join(
        map(str, diff)
    )
