"""workers.gpu_ids: which GPUs a worker trains on, so claims on a shared GPU count each other.

Processes that share one GPU (`trainyard worker --jobs N` with fewer GPUs than N, or workers
on one host started apart) each measure its free memory before claiming. Started together,
they all measured the same free memory and claimed jobs that together did not fit. With the
GPUs' UUIDs on the worker rows, a claim also subtracts the estimates of the jobs already
running on any GPU it shares (db/store/scheduling.py).

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


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("gpu_ids")
