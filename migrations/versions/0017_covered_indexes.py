"""Two indexes that a wider one already covers are dropped: installments' loan_id (the
unique loan_id, version, number) and journal entries' kind (kind, value_date)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 09:00:00.000000

Each column led two indexes, and every row written paid for both: 174,000 installments
for a 10,000-loan book, an entry for every penalty a night. PostgreSQL and SQLite use a
composite index's leading column for `loan_id = ?` or `kind = ?` alone, so no query loses
its index.
"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("installments", schema=None) as batch_op:
        batch_op.drop_index("ix_installments_loan_id")
    with op.batch_alter_table("journal_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_journal_entries_kind")


def downgrade():
    with op.batch_alter_table("journal_entries", schema=None) as batch_op:
        batch_op.create_index("ix_journal_entries_kind", ["kind"], unique=False)
    with op.batch_alter_table("installments", schema=None) as batch_op:
        batch_op.create_index("ix_installments_loan_id", ["loan_id"], unique=False)
