"""Several processes on one database: the change feed of faces (``face_changes``), which each process follows
to keep its copy of the templates in step, and the usage counters of rate limits and quotas (``usage_counters``),
counted once for all of them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("face_changes",
                    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
                    sa.Column("collection_id", sa.Integer, nullable=False),
                    sa.Column("face_id", sa.Integer, nullable=True),
                    sa.Column("op", sa.String(8), nullable=False),
                    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
                    sqlite_autoincrement=True)
    op.create_table("usage_counters",
                    sa.Column("name", sa.String(200), primary_key=True),
                    sa.Column("period", sa.Integer, primary_key=True),
                    sa.Column("count", sa.Integer, nullable=False))


def downgrade() -> None:
    op.drop_table("usage_counters")
    op.drop_table("face_changes")
