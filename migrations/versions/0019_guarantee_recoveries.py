"""Recovery from guarantors: a branch manager's proposal and the board's decision

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 09:00:00.000000

One row per proposal (one open per loan, by a partial unique index); an approved one
names the journal entry that debited the guarantors' deposits. No existing row changes.
"""

import sqlalchemy as sa
from alembic import op

import app.models.types  # noqa: F401  (our column types: Money, UTCDateTime)

# revision identifiers, used by Alembic.
revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "guarantee_recoveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("loan_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("exposures", sa.JSON(), nullable=True),
        sa.Column("proposed_by_id", sa.Integer(), nullable=False),
        sa.Column("proposed_at", app.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("proposed_on", sa.Date(), nullable=False),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("decided_at", app.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decision_date", sa.Date(), nullable=True),
        sa.Column("minute_ref", sa.String(length=60), nullable=True),
        sa.Column("recovered", sa.JSON(), nullable=True),
        sa.Column("recovered_total", app.models.types.Money(precision=14, scale=2), nullable=True),
        sa.Column("entry_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "status IN ('proposed', 'approved', 'declined')",
            name=op.f("ck_guarantee_recoveries_status"),
        ),
        sa.ForeignKeyConstraint(
            ["decided_by_id"],
            ["staff_users.id"],
            name=op.f("fk_guarantee_recoveries_decided_by_id_staff_users"),
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["journal_entries.id"],
            name=op.f("fk_guarantee_recoveries_entry_id_journal_entries"),
        ),
        sa.ForeignKeyConstraint(
            ["loan_id"], ["loans.id"], name=op.f("fk_guarantee_recoveries_loan_id_loans")
        ),
        sa.ForeignKeyConstraint(
            ["proposed_by_id"],
            ["staff_users.id"],
            name=op.f("fk_guarantee_recoveries_proposed_by_id_staff_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guarantee_recoveries")),
    )
    with op.batch_alter_table("guarantee_recoveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_guarantee_recoveries_loan_id"), ["loan_id"], unique=False
        )
        batch_op.create_index(
            "uq_guarantee_recoveries_one_open_per_loan",
            ["loan_id"],
            unique=True,
            sqlite_where=sa.text("status = 'proposed'"),
            postgresql_where=sa.text("status = 'proposed'"),
        )


def downgrade():
    with op.batch_alter_table("guarantee_recoveries", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_guarantee_recoveries_one_open_per_loan",
            sqlite_where=sa.text("status = 'proposed'"),
            postgresql_where=sa.text("status = 'proposed'"),
        )
        batch_op.drop_index(batch_op.f("ix_guarantee_recoveries_loan_id"))

    op.drop_table("guarantee_recoveries")
