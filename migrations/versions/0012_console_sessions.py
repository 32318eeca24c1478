"""Console sessions that can be ended: a per-staff session version, must-change-password

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 23:15:00.000000
"""
from alembic import op
import sqlalchemy as sa
import app.models.types  # noqa: F401  (our column types: Money, UTCDateTime)


# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    # session_version: every console session carries the number it was signed in under;
    # sign-out, a password change or reset, a role change and deactivation bump it, so a
    # copied cookie stops working. must_change_password: set by an admin's reset.
    with op.batch_alter_table('staff_users', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('session_version', sa.Integer(), nullable=False, server_default='0')
        )
        batch_op.add_column(
            sa.Column(
                'must_change_password', sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade():
    with op.batch_alter_table('staff_users', schema=None) as batch_op:
        batch_op.drop_column('must_change_password')
        batch_op.drop_column('session_version')
