"""How loans are secured: guarantees, the collateral register, and each product's rule

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 08:42:54.360340

Existing products take the rule of the instant products (no guarantors, no cover), so no
loan on the books changes its standing.
"""

import sqlalchemy as sa
from alembic import op

import app.models.types  # noqa: F401  (our column types: Money, UTCDateTime)


# revision identifiers, used by Alembic.
revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "collateral",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("loan_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("owner_name", sa.String(length=120), nullable=False),
        sa.Column("market_value", app.models.types.Money(precision=14, scale=2), nullable=False),
        sa.Column(
            "forced_sale_value", app.models.types.Money(precision=14, scale=2), nullable=False
        ),
        sa.Column("valued_on", sa.Date(), nullable=False),
        sa.Column("valuer", sa.String(length=120), nullable=False),
        sa.Column("lien_status", sa.String(length=12), nullable=False),
        sa.Column("recorded_by", sa.String(length=120), nullable=False),
        sa.Column("recorded_at", app.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("discharged_by", sa.String(length=120), nullable=True),
        sa.Column("discharged_at", app.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('land_title', 'log_book', 'chattel', 'check_off', 'fixed_deposit')",
            name=op.f("ck_collateral_kind"),
        ),
        sa.CheckConstraint(
            "lien_status IN ('registered', 'discharged')", name=op.f("ck_collateral_lien_status")
        ),
        sa.CheckConstraint(
            "forced_sale_value >= 0", name=op.f("ck_collateral_forced_sale_not_negative")
        ),
        sa.CheckConstraint(
            "market_value >= forced_sale_value",
            name=op.f("ck_collateral_forced_sale_within_market"),
        ),
        sa.ForeignKeyConstraint(
            ["loan_id"], ["loans.id"], name=op.f("fk_collateral_loan_id_loans")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collateral")),
    )
    with op.batch_alter_table("collateral", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_collateral_loan_id"), ["loan_id"], unique=False)

    op.create_table(
        "guarantees",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("loan_id", sa.Integer(), nullable=False),
        sa.Column("guarantor_id", sa.Integer(), nullable=False),
        sa.Column("amount", app.models.types.Money(precision=14, scale=2), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("requested_by", sa.String(length=120), nullable=False),
        sa.Column("requested_at", app.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=False),
        sa.Column("answered_at", app.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("answered_via", sa.String(length=8), nullable=True),
        sa.Column("ended_at", app.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "recovered_amount", app.models.types.Money(precision=14, scale=2), nullable=False
        ),
        sa.Column("replaces_id", sa.Integer(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('requested', 'accepted', 'declined', 'expired', 'cancelled', 'released', 'replaced', 'recovered')",
            name=op.f("ck_guarantees_status"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_guarantees_amount_positive")),
        sa.CheckConstraint(
            "recovered_amount >= 0", name=op.f("ck_guarantees_recovered_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["guarantor_id"], ["members.id"], name=op.f("fk_guarantees_guarantor_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["loan_id"], ["loans.id"], name=op.f("fk_guarantees_loan_id_loans")
        ),
        sa.ForeignKeyConstraint(
            ["replaces_id"], ["guarantees.id"], name=op.f("fk_guarantees_replaces_id_guarantees")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guarantees")),
    )
    with op.batch_alter_table("guarantees", schema=None) as batch_op:
        batch_op.create_index(
            "ix_guarantees_guarantor_status", ["guarantor_id", "status"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_guarantees_loan_id"), ["loan_id"], unique=False)
        batch_op.create_index(
            "ix_guarantees_status_expires_on", ["status", "expires_on"], unique=False
        )
        batch_op.create_index(
            "uq_guarantees_one_live_per_guarantor",
            ["loan_id", "guarantor_id"],
            unique=True,
            sqlite_where=sa.text("status IN ('requested', 'accepted')"),
            postgresql_where=sa.text("status IN ('requested', 'accepted')"),
        )

    with op.batch_alter_table("loan_products", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("min_guarantors", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "guarantee_cover",
                sa.Numeric(precision=5, scale=2),
                server_default="0",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column("collateral_allowed", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "collateral_haircut",
                sa.Numeric(precision=5, scale=2),
                server_default="50",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column("guarantee_days", sa.Integer(), server_default="7", nullable=False)
        )
        batch_op.create_check_constraint(
            op.f("ck_loan_products_guarantee_cover"), "guarantee_cover BETWEEN 0 AND 100"
        )
        batch_op.create_check_constraint(
            op.f("ck_loan_products_collateral_haircut"), "collateral_haircut BETWEEN 0 AND 100"
        )
        batch_op.create_check_constraint(
            op.f("ck_loan_products_guarantors"), "min_guarantors >= 0 AND guarantee_days >= 1"
        )


def downgrade():
    with op.batch_alter_table("loan_products", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_loan_products_guarantors"), type_="check")
        batch_op.drop_constraint(op.f("ck_loan_products_collateral_haircut"), type_="check")
        batch_op.drop_constraint(op.f("ck_loan_products_guarantee_cover"), type_="check")
        batch_op.drop_column("guarantee_days")
        batch_op.drop_column("collateral_haircut")
        batch_op.drop_column("collateral_allowed")
        batch_op.drop_column("guarantee_cover")
        batch_op.drop_column("min_guarantors")

    with op.batch_alter_table("guarantees", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_guarantees_one_live_per_guarantor",
            sqlite_where=sa.text("status IN ('requested', 'accepted')"),
            postgresql_where=sa.text("status IN ('requested', 'accepted')"),
        )
        batch_op.drop_index("ix_guarantees_status_expires_on")
        batch_op.drop_index(batch_op.f("ix_guarantees_loan_id"))
        batch_op.drop_index("ix_guarantees_guarantor_status")

    op.drop_table("guarantees")
    with op.batch_alter_table("collateral", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_collateral_loan_id"))

    op.drop_table("collateral")
