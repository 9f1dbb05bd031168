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
    # native ALTER TABLE ... ADD COLUMN only: a batch "move and copy" of faces would lose its AUTOINCREMENT (face ids
    # must never be reused) and, with foreign keys on, dropping a parent table cascades to its subjects and faces
    for column in (sa.Column("uuid", sa.String(36), nullable=True), sa.Column("image_id", sa.String(36), nullable=True),
                   sa.Column("external_image_id", sa.String(255), nullable=True),
                   sa.Column("image_size", sa.JSON, nullable=True)):
        op.add_column("faces", column)
    faces = sa.table("faces", sa.column("id", sa.Integer), sa.column("uuid", sa.String),
                     sa.column("image_id", sa.String))
    conn = op.get_bind()
    ids = [r[0] for r in conn.execute(sa.select(faces.c.id))]
    for start in range(0, len(ids), 10_000):
        conn.execute(faces.update().where(faces.c.id == sa.bindparam("fid")).values(
            uuid=sa.bindparam("u"), image_id=sa.bindparam("i")),
            [{"fid": f, "u": str(uuid.uuid4()), "i": str(uuid.uuid4())} for f in ids[start:start + 10_000]])
    op.create_index("ix_faces_uuid", "faces", ["uuid"], unique=True)
    op.add_column("collections", sa.Column("consent_attestation", sa.JSON, nullable=True))
    op.add_column("api_keys", sa.Column("secret_sealed", sa.LargeBinary, nullable=True))
    op.add_column("api_keys", sa.Column("collection", sa.String(128), nullable=True))
    if conn.dialect.name != "sqlite":  # SQLite neither enforces VARCHAR lengths nor alters columns in place
        op.alter_column("faces", "uuid", existing_type=sa.String(36), nullable=False)
        op.alter_column("faces", "image_id", existing_type=sa.String(36), nullable=False)
        op.alter_column("api_keys", "id", existing_type=sa.String(16), type_=sa.String(32))


def downgrade() -> None:
    op.drop_column("api_keys", "collection")
    op.drop_column("api_keys", "secret_sealed")
    op.drop_column("collections", "consent_attestation")
    op.drop_index("ix_faces_uuid", "faces")
    for name in ("image_size", "external_image_id", "image_id", "uuid"):
        op.drop_column("faces", name)
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("api_keys", "id", existing_type=sa.String(32), type_=sa.String(16))
