"""An audit record's decision is text of any length (it names policies before and after, keys and tenants).

SQLite never enforced VARCHAR(64); PostgreSQL refused a longer decision, so the audited
operation failed there (found by the schema fuzzer: a collection update naming two policies).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":  # SQLite stores any length already; no table copy of the log
        op.alter_column("audit_records", "decision", type_=sa.Text(), existing_type=sa.String(64))


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("audit_records", "decision", type_=sa.String(64), existing_type=sa.Text())
