"""Close of business in partitions: which partition of which run is done, by whom

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 06:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

import app.models.types  # noqa: F401  (our column types: Money, UTCDateTime)

# revision identifiers, used by Alembic.
revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "batch_partitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("job", sa.String(length=40), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("ids", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("worker", sa.String(length=80), nullable=True),
        sa.Column("lease_until", app.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_chunk", sa.Integer(), nullable=False),
        sa.Column("records_scanned", sa.Integer(), nullable=False),
        sa.Column("records_updated", sa.Integer(), nullable=False),
        sa.Column("notifications_sent", sa.Integer(), nullable=False),
        sa.Column("notifications_failed", sa.Integer(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("started_at", app.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", app.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_partitions")),
        sa.UniqueConstraint("run_id", "number", name=op.f("uq_batch_partitions_run_id_number")),
    )
    with op.batch_alter_table("batch_partitions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_batch_partitions_status_lease", ["status", "lease_until"], unique=False
        )


def downgrade():
    with op.batch_alter_table("batch_partitions", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_partitions_status_lease")
    op.drop_table("batch_partitions")
