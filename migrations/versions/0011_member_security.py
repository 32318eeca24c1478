"""Members' second factor: activation codes, PIN resets by ID number and SMS code

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 23:15:00.000000

A first PIN (and a staff-reset PIN) needs the member's ID number or a one-time activation
code. The code is kept only as an HMAC with its expiry; a PIN reset by SMS code keeps its
short-lived state in Redis, so it needs no column.
"""
from alembic import op
import sqlalchemy as sa
import app.models.types  # noqa: F401  (our column types: Money, UTCDateTime)


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.add_column(sa.Column('activation_code_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column('activation_code_expires', app.models.types.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade():
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_column('activation_code_expires')
        batch_op.drop_column('activation_code_hash')
