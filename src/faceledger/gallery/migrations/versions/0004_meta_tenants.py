"""Database facts (template key check) and per-tenant guardrails against bulk surveillance.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("meta", sa.Column("key", sa.String(64), primary_key=True),
                    sa.Column("value", sa.String(1024), nullable=False))
    op.create_table(
        "tenant_policies",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("identify_per_hour", sa.Integer, nullable=True),
        sa.Column("max_faces_per_search", sa.Integer, nullable=True),
        sa.Column("human_review", sa.Boolean, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tenant_policies")
    op.drop_table("meta")
