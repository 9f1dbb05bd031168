"""Cameras and video: streams (sources watched, with purpose, mode, budget and webhook), their track events, and
webhook deliveries (pending with the next attempt, delivered, or dead letters).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("streams",
                    sa.Column("id", sa.String(36), primary_key=True),
                    sa.Column("kind", sa.String(8), nullable=False),
                    sa.Column("tenant", sa.String(64), nullable=False, index=True),
                    sa.Column("collection", sa.String(128), nullable=True),
                    sa.Column("source", sa.Text, nullable=False),
                    sa.Column("mode", sa.String(16), nullable=False),
                    sa.Column("purpose", sa.Text, nullable=False),
                    sa.Column("fps", sa.Float, nullable=False),
                    sa.Column("identify_per_hour", sa.Integer, nullable=False),
                    sa.Column("webhook_url", sa.Text, nullable=True),
                    sa.Column("webhook_secret", sa.String(128), nullable=True),
                    sa.Column("created_by", sa.String(64), nullable=True),
                    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("state", sa.String(16), nullable=False),
                    sa.Column("status", sa.JSON, nullable=False),
                    sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table("stream_events",
                    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                    sa.Column("stream_id", sa.String(36), sa.ForeignKey("streams.id", ondelete="CASCADE"),
                              nullable=False, index=True),
                    sa.Column("type", sa.String(32), nullable=False),
                    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("payload", sa.JSON, nullable=False),
                    sqlite_autoincrement=True)
    op.create_table("webhook_deliveries",
                    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                    sa.Column("event_id", sa.Integer, sa.ForeignKey("stream_events.id", ondelete="CASCADE"),
                              nullable=False, index=True),
                    sa.Column("stream_id", sa.String(36), nullable=False, index=True),
                    sa.Column("state", sa.String(12), nullable=False, index=True),
                    sa.Column("attempts", sa.Integer, nullable=False),
                    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("last_error", sa.Text, nullable=True),
                    sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
                    sqlite_autoincrement=True)


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("stream_events")
    op.drop_table("streams")
