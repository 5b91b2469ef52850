"""A covering index on metrics for reading many series at once (the dashboard's compare page).

(job_id, name, step, epoch, value): every column that GET /compare/series reads, in the order it
reads them, so a hundred 10,000-step series are range scans of this index alone (an index-only
scan on Postgres, a covering index on SQLite) with no lookup of the table row per point. The
unique (job_id, name, step) constraint stays: it is what the metric upsert conflicts on.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_metrics_job_id_name_step_epoch_value"


def upgrade() -> None:
    op.create_index(INDEX, "metrics", ["job_id", "name", "step", "epoch", "value"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="metrics")
