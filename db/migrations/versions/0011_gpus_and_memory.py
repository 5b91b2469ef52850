"""GPUs and GPU memory: what a job needs, what a worker has.

jobs.gpus: how many GPUs (on a CPU worker: processes) a job trains on at once, with
DistributedDataParallel; 1 for every existing job. jobs.memory_bytes: the job's estimated
training memory (models/limits.py, peak + state) recorded at submit, so a worker on a shared
GPU claims it only when its GPU has that much free, and the queue can say it waits for memory;
NULL for jobs queued before this revision (they are claimed as before). workers.gpus: how many
GPUs (on CPU: processes) the worker can give one job; workers.gpu_free_bytes: the free memory
of its fullest GPU at its latest beat (NULL without CUDA).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("gpus", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("memory_bytes", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("gpus", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("gpu_free_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("gpu_free_bytes")
        batch.drop_column("gpus")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("memory_bytes")
        batch.drop_column("gpus")
