"""GPU memory accounting: which GPUs a worker trains on, and since when a job waits for memory.

- `workers.gpu_ids`: processes that share one GPU (`trainyard worker --jobs N` with fewer GPUs
  than N, or workers on one host started apart) each measure its free memory before claiming.
  Started together, they all measured the same free memory and claimed jobs that together did
  not fit. With the GPUs' UUIDs on the worker rows, a claim also subtracts the estimates of
  the jobs already running on any GPU it shares (db/store/scheduling.py).
- `jobs.memory_wait_since`: a job passed over for GPU memory let smaller jobs behind it start
  first, for ever if they kept the GPU busy. Once it has waited TRAINYARD_GPU_BACKFILL_SECONDS,
  the GPUs where it fits take no job behind it until it starts.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("gpu_ids", sa.String(length=2000), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("memory_wait_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("memory_wait_since")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("gpu_ids")
