"""Audit rows take any staff email and path; a phone's USSD sessions by index

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-21 23:15:00.000000

audit_log.actor (80) and object_id (30) were narrower than what the console writes there:
"staff:<email>" and a staff member's email as the object, the path of a refused request.
PostgreSQL refuses a longer value, so a 403 or a login by a long email failed while
writing its own audit row. The member page lists a phone's newest USSD sessions.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.alter_column('actor', existing_type=sa.String(length=80),
                              type_=sa.String(length=300), existing_nullable=False)
        batch_op.alter_column('object_id', existing_type=sa.String(length=30),
                              type_=sa.String(length=255), existing_nullable=False)
    with op.batch_alter_table('ussd_events', schema=None) as batch_op:
        batch_op.create_index('ix_ussd_events_phone_id', ['phone', 'id'], unique=False)


def downgrade():
    with op.batch_alter_table('ussd_events', schema=None) as batch_op:
        batch_op.drop_index('ix_ussd_events_phone_id')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.alter_column('object_id', existing_type=sa.String(length=255),
                              type_=sa.String(length=30), existing_nullable=False)
        batch_op.alter_column('actor', existing_type=sa.String(length=300),
                              type_=sa.String(length=80), existing_nullable=False)
