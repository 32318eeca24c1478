"""Money paths: Kiswahili product names; a flagged STK prompt no longer holds the loan's
next prompt back (the open-per-loan index leaves flagged prompts out, payouts stay in)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 23:15:00.000000
"""

import sqlalchemy as sa
from alembic import op

import app.models.types  # noqa: F401  (our column types: Money, UTCDateTime)

# revision identifiers, used by Alembic.
revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_OPEN = "kind IN ('stk', 'b2c') AND status IN ('pending', 'sending', 'sent', 'unknown')"
_OPEN_UNFLAGGED = f"{_OPEN} AND (kind = 'b2c' OR flag IS NULL)"


def _open_index(batch_op, where: str) -> None:
    batch_op.create_index(
        "uq_mpesa_requests_open_per_loan",
        ["loan_id", "kind"],
        unique=True,
        postgresql_where=sa.text(where),
        sqlite_where=sa.text(where),
    )


def upgrade():
    with op.batch_alter_table("loan_products", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name_sw", sa.String(length=80), nullable=True))

    with op.batch_alter_table("mpesa_requests", schema=None) as batch_op:
        batch_op.drop_index("uq_mpesa_requests_open_per_loan")
        _open_index(batch_op, _OPEN_UNFLAGGED)


def downgrade():
    # The old rule again: this fails (and changes nothing) while a loan has a flagged
    # prompt open beside a newer one; staff settle the flagged one first.
    with op.batch_alter_table("mpesa_requests", schema=None) as batch_op:
        batch_op.drop_index("uq_mpesa_requests_open_per_loan")
        _open_index(batch_op, _OPEN)

    with op.batch_alter_table("loan_products", schema=None) as batch_op:
        batch_op.drop_column("name_sw")
