"""The schema the migrations build is the schema the models describe."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import select, text

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


def test_every_existing_posting_maps_to_the_chart_with_the_books_unchanged(
    tmp_path: Path, _urls: dict[str, str]
) -> None:
    """Migration 0026 on a book written before it: the chart is seeded with a line for
    every ledger kind and one per loan product, every account with postings lands on a
    leaf of it, and each leaf's balance is exactly its kinds' balances before (nothing
    posted, nothing moved), so the trial balance still balances and the books reconcile."""
    from datetime import date
    from decimal import Decimal

    from flask_migrate import upgrade

    from app.models import ACCOUNT_KINDS, ChartAccount
    from app.services.books import chart_balances
    from app.services.ledger import ledger_check
    from tests.helpers import make_app

    old = make_app({**_urls, "DATABASE_URL": f"sqlite:///{tmp_path / 'old.db'}"})
    now = {"now": "2026-01-01 00:00:00"}
    with old.app_context():
        upgrade(revision="0025")
        kinds = sorted(k for k in ACCOUNT_KINDS if k not in _KINDS_FROM_0026)
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO loan_products (id, code, name, active, interest_method, "
                    "amortization, annual_rate, frequency, default_term, min_term, max_term, "
                    "min_amount, fee_type, fee_value, penalty_type, penalty_value, "
                    "grace_days, default_threshold_days, limit_multiple, min_share_capital, "
                    "min_membership_days, created_at) VALUES (7, 'BIZ', 'Biashara', 1, "
                    "'declining', 'equal_installments', 12, 'monthly', 6, 1, 12, 0, 'flat', "
                    "0, 'flat', 0, 0, 90, 3, 0, 0, :now)"
                ),
                now,
            )
            # One entry touching an account of every kind there was, in cents (SQLite).
            # Each on its normal side (savings may not be overdrawn); the clearing account,
            # put last, balances the entry.
            kinds.remove("mpesa_clearing")
            kinds.append("mpesa_clearing")
            sides = {"debit": 1, "credit": -1}
            amounts = [(n + 1) * 100 * sides[ACCOUNT_KINDS[k]] for n, k in enumerate(kinds)]
            amounts[-1] = -sum(amounts[:-1])
            conn.execute(
                text(
                    "INSERT INTO journal_entries (id, kind, description, value_date, posted_at, "
                    "actor) VALUES (1, 'opening', 'old book', '2025-12-31', :now, 'system')"
                ),
                now,
            )
            for n, (kind, amount) in enumerate(zip(kinds, amounts, strict=True), 1):
                conn.execute(
                    text(
                        "INSERT INTO accounts (id, code, kind, name, status, balance, "
                        "created_at) VALUES (:i, :c, :k, :c, 'open', :b, :now)"
                    ),
                    {"i": n, "c": f"OLD-{kind}", "k": kind, "b": amount, **now},
                )
                conn.execute(
                    text(
                        "INSERT INTO journal_lines (id, entry_id, account_id, amount) "
                        "VALUES (:i, 1, :i, :m)"
                    ),
                    {"i": n, "m": amount},
                )
        upgrade()
        chart = {c.id: c for c in db.session.scalars(select(ChartAccount))}
        by_code = {c.code: c for c in chart.values()}
        assert by_code["1210-BIZ"].maps == "loan_principal:7"
        assert by_code["1210-BIZ"].parent_id == by_code["1210"].id
        mapped = {c.maps for c in chart.values() if c.maps}
        assert set(kinds) <= mapped, "a ledger kind with no line of the chart"
        balances = chart_balances(as_of=date(2025, 12, 31))
        expected = {
            kind: Decimal(amount) / 100 for kind, amount in zip(kinds, amounts, strict=True)
        }
        assert {chart[i].maps: v for i, v in balances.items()} == expected
        assert sum(balances.values()) == 0
        assert all(not chart[i].header for i in balances)
        assert ledger_check() == []
        db.session.remove()
        db.engine.dispose()


# The ledger kinds migration 0026 itself brings (no account of them can predate it).
_KINDS_FROM_0026 = {
    "retained_earnings",
    "statutory_reserve",
    "loan_loss_provision",
    "interest_suspense",
    "provision_expense",
    "dividends_payable",
    "general",
}
