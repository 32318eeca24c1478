"""The schema the migrations build is the schema the models describe."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import text

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


def test_existing_deposits_and_shares_join_their_products_with_no_balance_moved(
    tmp_path: Path, _urls: dict[str, str]
) -> None:
    """Migration 0020 on a book written before it: every member's deposits and share
    accounts point at the seeded products, the ledger's accounts keep theirs, and every
    balance (and the journal behind it) is as it was, so the books reconcile after."""
    from flask_migrate import upgrade

    from app.services.ledger import ledger_check
    from tests.helpers import make_app

    old = make_app({**_urls, "DATABASE_URL": f"sqlite:///{tmp_path / 'old.db'}"})
    with old.app_context():
        upgrade(revision="0019")
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO members (id, member_no, name, phone, status, language, "
                    "failed_pin_count, created_at) VALUES "
                    "(1, 'M000001', 'Amina', '254711000001', 'active', 'en', 0, :now)"
                ),
                {"now": "2026-01-01 00:00:00"},
            )
            accounts = [
                (1, "SAV-M000001", "savings", 1, -500000),  # cents on SQLite, credit-normal
                (2, "SHR-M000001", "share_capital", 1, -100000),
                (3, "GL-MPESA-CLEARING", "mpesa_clearing", None, 600000),
            ]
            for account_id, code, kind, member_id, balance in accounts:
                conn.execute(
                    text(
                        "INSERT INTO accounts (id, code, kind, name, member_id, status, "
                        "balance, created_at) VALUES (:i, :c, :k, :c, :m, 'open', :b, :now)"
                    ),
                    {
                        "i": account_id,
                        "c": code,
                        "k": kind,
                        "m": member_id,
                        "b": balance,
                        "now": "2026-01-01 00:00:00",
                    },
                )
            conn.execute(
                text(
                    "INSERT INTO journal_entries (id, kind, description, value_date, posted_at, "
                    "actor) VALUES (1, 'deposit', 'opening', '2026-01-01', :now, 'system')"
                ),
                {"now": "2026-01-01 00:00:00"},
            )
            for line_id, account_id, amount in ((1, 1, -500000), (2, 2, -100000), (3, 3, 600000)):
                conn.execute(
                    text(
                        "INSERT INTO journal_lines (id, entry_id, account_id, amount) "
                        "VALUES (:i, 1, :a, :m)"
                    ),
                    {"i": line_id, "a": account_id, "m": amount},
                )
        upgrade()
        # The migration ran without foreign keys; no connection the app gets may have
        # kept that (a pooled one would skip ON DELETE CASCADE from then on).
        pooled = [db.engine.raw_connection() for _ in range(2)]  # both held: two of them
        try:
            for conn in pooled:
                assert conn.cursor().execute("PRAGMA foreign_keys").fetchone()[0] == 1
        finally:
            for conn in pooled:
                conn.close()
        products = dict(
            db.session.execute(
                text(
                    "SELECT a.code, p.code FROM accounts a "
                    "LEFT JOIN account_products p ON p.id = a.product_id"
                )
            ).all()
        )
        assert products == {"SAV-M000001": "DEP", "SHR-M000001": "SHR", "GL-MPESA-CLEARING": None}
        seeded = set(db.session.scalars(text("SELECT code FROM account_products")))
        assert {"DEP", "SHR", "ORD", "FIX", "TGT"} <= seeded
        balances = dict(db.session.execute(text("SELECT code, balance FROM accounts")).all())
        assert balances == {
            "SAV-M000001": -500000,
            "SHR-M000001": -100000,
            "GL-MPESA-CLEARING": 600000,
        }
        assert ledger_check() == []
        db.session.remove()
        db.engine.dispose()
