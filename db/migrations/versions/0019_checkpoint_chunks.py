"""Checkpoints of any size the limits allow: the bytes past a checkpoint's first 16 MiB go to
`checkpoint_chunks` (checkpoint_id, seq, data), 16 MiB a row.

A database value holds at most 1 GB (PostgreSQL's field limit; SQLite's default
SQLITE_MAX_LENGTH is 10^9 bytes), and a model at TRAINYARD_MAX_MODEL_PARAMETERS (100M) trained
with Adam checkpoints 1.2 GB: on PostgreSQL the insert dropped the connection, so such a job
failed at its first epoch end. Existing checkpoints keep their bytes in `checkpoints.data`: a
checkpoint without chunks is one piece, as before.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "checkpoint_chunks",
        sa.Column("checkpoint_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"], ["checkpoints.id"],
            name=op.f("fk_checkpoint_chunks_checkpoint_id_checkpoints"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("checkpoint_id", "seq", name=op.f("pk_checkpoint_chunks")),
    )


def downgrade() -> None:
    # Join each chunked checkpoint back into its row, one at a time (a checkpoint over 1 GB
    # cannot go back: the database refuses the value, and the downgrade fails, keeping it).
    conn = op.get_bind()
    chunks = sa.table("checkpoint_chunks", sa.column("checkpoint_id", sa.Integer()),
                      sa.column("seq", sa.Integer()), sa.column("data", sa.LargeBinary()))
    checkpoints = sa.table("checkpoints", sa.column("id", sa.Integer()),
                           sa.column("data", sa.LargeBinary()))
    ids = conn.execute(sa.select(chunks.c.checkpoint_id).distinct()).scalars().all()
    for checkpoint_id in ids:
        head = conn.execute(sa.select(checkpoints.c.data)
                            .where(checkpoints.c.id == checkpoint_id)).scalar_one()
        rest = conn.execute(sa.select(chunks.c.data).where(chunks.c.checkpoint_id == checkpoint_id)
                            .order_by(chunks.c.seq)).scalars().all()
        conn.execute(sa.update(checkpoints).where(checkpoints.c.id == checkpoint_id)
                     .values(data=b"".join([bytes(head), *map(bytes, rest)])))
    op.drop_table("checkpoint_chunks")
