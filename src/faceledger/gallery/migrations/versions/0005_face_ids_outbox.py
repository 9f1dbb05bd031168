"""Face ids are never reused (SQLite AUTOINCREMENT); the audit outbox table.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # a rowid table reuses the highest id after a delete; AUTOINCREMENT never does (the table is copied)
        with op.batch_alter_table("faces", recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass
    op.create_table("audit_outbox", sa.Column("token", sa.String(32), primary_key=True),
                    sa.Column("at", sa.String(40), nullable=False), sa.Column("payload", sa.Text, nullable=False))


def downgrade() -> None:
    op.drop_table("audit_outbox")
