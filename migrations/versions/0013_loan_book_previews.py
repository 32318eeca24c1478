"""Loan-book previews parsed once and stored, shared by every web replica

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 23:15:00.000000
"""
from alembic import op
import sqlalchemy as sa
import app.models.types  # noqa: F401  (our column types: Money, UTCDateTime)


# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "loan_book_previews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=22), nullable=False),
        sa.Column("filename", sa.String(length=120), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=True),
        sa.Column("created_at", app.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("ok_count", sa.Integer(), nullable=False),
        sa.Column("imported_count", sa.Integer(), nullable=False),
        sa.Column("bad_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["staff_users.id"],
            name=op.f("fk_loan_book_previews_staff_id_staff_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loan_book_previews")),
        sa.UniqueConstraint("token", name=op.f("uq_loan_book_previews_token")),
    )
    with op.batch_alter_table("loan_book_previews", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_loan_book_previews_created_at"), ["created_at"], unique=False
        )
    op.create_table(
        "loan_book_preview_rows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("preview_id", sa.Integer(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("cells", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["preview_id"],
            ["loan_book_previews.id"],
            name=op.f("fk_loan_book_preview_rows_preview_id_loan_book_previews"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loan_book_preview_rows")),
    )
    with op.batch_alter_table("loan_book_preview_rows", schema=None) as batch_op:
        batch_op.create_index(
            "ix_loan_book_preview_rows_preview_line", ["preview_id", "line"], unique=True
        )
        batch_op.create_index(
            "ix_loan_book_preview_rows_preview_outcome",
            ["preview_id", "outcome", "line"],
            unique=False,
        )


def downgrade():
    with op.batch_alter_table("loan_book_preview_rows", schema=None) as batch_op:
        batch_op.drop_index("ix_loan_book_preview_rows_preview_outcome")
        batch_op.drop_index("ix_loan_book_preview_rows_preview_line")
    op.drop_table("loan_book_preview_rows")
    with op.batch_alter_table("loan_book_previews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_loan_book_previews_created_at"))
    op.drop_table("loan_book_previews")
