"""Users' datasets, versioned, their bytes in chunks.

datasets.version: each upload of a name by its owner is its next version (existing uploads are
version 1); unique (owner, name, version) replaces (owner, name). datasets.summary: what the
upload holds (GET /datasets); existing text uploads get theirs computed here. The bytes move
from datasets.data to dataset_chunks (dataset_id, seq, data): ~4 MiB each for new uploads, so
no upload or download holds a whole dataset in memory; an existing upload becomes one chunk.
jobs.dataset_version, jobs.dataset_sha256: the exact version a job trains on, recorded at
submit (NULL for built-in datasets and for jobs queued before this revision).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the portable JSON type in db/tables/ (a migration never imports the ORM).
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
SAMPLE_CHARS = 500


def _text_summary(data: bytes) -> dict:
    """The summary an uploaded text gets today (ingest/ computes it for new uploads)."""
    text = bytes(data).decode("utf-8", errors="replace")
    return {"format": "text", "characters": len(text), "documents": 1,
            "vocab": {"char": len(set(text)), "word": len(set(text.split()))},
            "sample": text[:SAMPLE_CHARS]}


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("summary", JSON_TYPE, nullable=True))
    op.create_table(
        "dataset_chunks",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_dataset_chunks_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dataset_id", "seq", name=op.f("pk_dataset_chunks")),
    )
    conn = op.get_bind()
    # Uploads were capped at TRAINYARD_MAX_UPLOAD_BYTES (20 MiB): one chunk each is fine.
    op.execute("INSERT INTO dataset_chunks (dataset_id, seq, data) "
               "SELECT id, 0, data FROM datasets")
    datasets = sa.table("datasets", sa.column("id", sa.Integer()),
                        sa.column("summary", JSON_TYPE))
    ids = [row[0] for row in conn.execute(sa.text("SELECT id FROM datasets ORDER BY id"))]
    for dataset_id in ids:  # one row at a time: never every upload in memory at once
        data = conn.execute(sa.text("SELECT data FROM datasets WHERE id = :id"),
                            {"id": dataset_id}).scalar_one()
        conn.execute(datasets.update().where(datasets.c.id == dataset_id)
                     .values(summary=json.loads(json.dumps(_text_summary(data)))))
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("data")
        batch.alter_column("summary", existing_type=JSON_TYPE, nullable=False)
        batch.drop_constraint(op.f("uq_datasets_owner_name"), type_="unique")
        batch.create_unique_constraint(op.f("uq_datasets_owner_name_version"),
                                       ["owner", "name", "version"])
        batch.create_check_constraint(op.f("ck_datasets_version"), "version >= 1")
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("dataset_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("dataset_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Back to one upload per name: only each name's newest version is kept, its chunks joined
    again (in SQL, a string aggregate would not do for bytes: row by row here)."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("dataset_sha256")
        batch.drop_column("dataset_version")
    conn = op.get_bind()
    conn.execute(sa.text(
        "DELETE FROM datasets WHERE EXISTS (SELECT 1 FROM datasets AS newer WHERE "
        "newer.owner = datasets.owner AND newer.name = datasets.name AND "
        "newer.version > datasets.version)"))
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("data", sa.LargeBinary(), nullable=True))
    datasets = sa.table("datasets", sa.column("id", sa.Integer()),
                        sa.column("data", sa.LargeBinary()))
    ids = [row[0] for row in conn.execute(sa.text("SELECT id FROM datasets"))]
    for dataset_id in ids:
        parts = conn.execute(sa.text("SELECT data FROM dataset_chunks WHERE dataset_id = :id "
                                     "ORDER BY seq"), {"id": dataset_id}).scalars()
        conn.execute(datasets.update().where(datasets.c.id == dataset_id)
                     .values(data=b"".join(bytes(p) for p in parts)))
    op.drop_table("dataset_chunks")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_constraint(op.f("ck_datasets_version"), type_="check")
        batch.drop_constraint(op.f("uq_datasets_owner_name_version"), type_="unique")
        batch.create_unique_constraint(op.f("uq_datasets_owner_name"), ["owner", "name"])
        batch.alter_column("data", existing_type=sa.LargeBinary(), nullable=False)
        batch.drop_column("summary")
        batch.drop_column("version")
