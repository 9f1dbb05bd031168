"""Compatible front ends (Rekognition's and CompreFace's APIs): public UUIDs for faces and their images, the
external image id and image size of a face, a collection's consent attestation, AWS-style keys (access key ids
up to 32 characters, their sealed secret) and keys bound to one collection.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("faces") as batch:
        batch.add_column(sa.Column("uuid", sa.String(36), nullable=True))
        batch.add_column(sa.Column("image_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("external_image_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("image_size", sa.JSON, nullable=True))
    faces = sa.table("faces", sa.column("id", sa.Integer), sa.column("uuid", sa.String),
                     sa.column("image_id", sa.String))
    conn = op.get_bind()
    ids = [r[0] for r in conn.execute(sa.select(faces.c.id))]
    for start in range(0, len(ids), 10_000):
        conn.execute(faces.update().where(faces.c.id == sa.bindparam("fid")).values(
            uuid=sa.bindparam("u"), image_id=sa.bindparam("i")),
            [{"fid": f, "u": str(uuid.uuid4()), "i": str(uuid.uuid4())} for f in ids[start:start + 10_000]])
    with op.batch_alter_table("faces") as batch:
        batch.alter_column("uuid", existing_type=sa.String(36), nullable=False)
        batch.alter_column("image_id", existing_type=sa.String(36), nullable=False)
        batch.create_index("ix_faces_uuid", ["uuid"], unique=True)
    with op.batch_alter_table("collections") as batch:
        batch.add_column(sa.Column("consent_attestation", sa.JSON, nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("id", existing_type=sa.String(16), type_=sa.String(32))
        batch.add_column(sa.Column("secret_sealed", sa.LargeBinary, nullable=True))
        batch.add_column(sa.Column("collection", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("collection")
        batch.drop_column("secret_sealed")
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("consent_attestation")
    with op.batch_alter_table("faces") as batch:
        batch.drop_index("ix_faces_uuid")
        for name in ("image_size", "external_image_id", "image_id", "uuid"):
            batch.drop_column(name)
