"""The web console's sessions: one row per signed-in browser (the SHA-256 of its cookie, never the cookie), the key
it signed in with, its CSRF token, and when it expires.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("console_sessions",
                    sa.Column("id_sha256", sa.String(64), primary_key=True),
                    sa.Column("key_id", sa.String(32), nullable=False, index=True),
                    sa.Column("csrf", sa.String(64), nullable=False),
                    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False))


def downgrade() -> None:
    op.drop_table("console_sessions")
