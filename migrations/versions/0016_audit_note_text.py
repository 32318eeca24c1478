"""Audit notes are text: a staff reason or an agreement note is kept whole

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 07:30:00.000000

audit_log.note was 255 characters while the console takes longer words into it: a penalty
reversal's reason (any length) and an agreement note (up to 2,000). PostgreSQL refused the
longer ones, so the action failed while writing its own audit row (found by the mutation
tests of issue 23). SQLite never checked the length.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column(
            "note", existing_type=sa.String(length=255), type_=sa.Text(), existing_nullable=True
        )


def downgrade():
    # The log is append-only (a trigger refuses UPDATE): the type change itself cuts.
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column(
            "note",
            existing_type=sa.Text(),
            type_=sa.String(length=255),
            existing_nullable=True,
            postgresql_using="left(note, 255)",
        )
