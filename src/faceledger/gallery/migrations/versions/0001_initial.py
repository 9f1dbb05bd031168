"""Initial schema: collections, subjects (with consent), faces (templates).

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("model_id", sa.String(512), nullable=False),
        sa.Column("target_fmr", sa.Float, nullable=False),
        sa.Column("require_consent", sa.Boolean, nullable=False),
        sa.Column("store_crops", sa.Boolean, nullable=False),
        sa.Column("retention_days", sa.Integer, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("tenant", "name"),
    )
    op.create_table(
        "subjects",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("collection_id", sa.Integer, sa.ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("external_id", sa.String(256), nullable=False),
        sa.Column("display_name", sa.String(256), nullable=True),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("consent_basis", sa.String(64), nullable=True),
        sa.Column("consent_reference", sa.String(256), nullable=True),
        sa.Column("consent_given_at", TZ, nullable=True),
        sa.Column("consent_expires_at", TZ, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("collection_id", "external_id"),
    )
    op.create_index("ix_subjects_collection_id", "subjects", ["collection_id"])
    op.create_table(
        "faces",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subject_id", sa.Integer, sa.ForeignKey("subjects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("collection_id", sa.Integer, sa.ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("template", sa.LargeBinary, nullable=False),
        sa.Column("model_id", sa.String(512), nullable=False),
        sa.Column("quality", sa.JSON, nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("box", sa.JSON, nullable=False),
        sa.Column("crop", sa.LargeBinary, nullable=True),
        sa.Column("enrolled_at", TZ, nullable=False),
        sa.UniqueConstraint("subject_id", "image_sha256"),
    )
    op.create_index("ix_faces_subject_id", "faces", ["subject_id"])
    op.create_index("ix_faces_collection", "faces", ["collection_id"])


def downgrade() -> None:
    op.drop_table("faces")
    op.drop_table("subjects")
    op.drop_table("collections")
