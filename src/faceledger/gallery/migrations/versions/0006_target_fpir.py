"""Open-set policy by FPIR: each collection gets a target FPIR for 1:N searches.

A collection's ``target_fmr`` used to set the 1:N threshold too, so a stranger's chance of
being matched grew with the gallery (about N x FMR). Its ``target_fmr`` now applies to 1:1
verification only, and 1:N searches use ``target_fpir``. An existing collection keeps the
behaviour it has today: its target FPIR is the FPIR its target FMR amounts to at its current
size, 1 - (1 - FMR) ** N (N = its faces, at least 1), capped at 0.5; from now on the
threshold tightens as the gallery grows instead of the FPIR rising. New collections get the
deployment's default (FACELEDGER_DEFAULT_TARGET_FPIR, 0.001); `faceledger collections set`
changes a collection's policy.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import math

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

MAX_FPIR = 0.5


def equivalent_fpir(target_fmr: float, faces: int) -> float:
    """As faceledger.matching.openset.equivalent_fpir (a migration does not import the application)."""
    n = max(faces, 1)
    return min(-math.expm1(n * math.log1p(-target_fmr)), MAX_FPIR)


def upgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        batch.add_column(sa.Column("target_fpir", sa.Float, nullable=False, server_default="0.001"))
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT c.id, c.target_fmr, (SELECT COUNT(*) FROM faces f WHERE f.collection_id = c.id) "
        "FROM collections c")).all()
    for cid, fmr, faces in rows:
        bind.execute(sa.text("UPDATE collections SET target_fpir = :v WHERE id = :id"),
                     {"v": equivalent_fpir(float(fmr), int(faces)), "id": cid})


def downgrade() -> None:
    # a native ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch "move and copy" would drop the table, and with
    # foreign keys on, that cascades to every subject and face
    op.drop_column("collections", "target_fpir")
