"""Block summaries of metric series, so long curves downsample without reading every point.

metric_rollups: per (job, metric name, block of 16 steps, epoch) the count, sum, min and max of
the values and the block's last step. Store.add_metrics rewrites the blocks each batch touches
in the batch's own transaction; this migration fills the table from the points already stored.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BLOCK_STEPS = 16  # db.tables.ROLLUP_BLOCK_STEPS when this migration was written


def upgrade() -> None:
    op.create_table(
        "metric_rollups",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("block", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("last_step", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("total", sa.Float(), nullable=True),
        sa.Column("low", sa.Float(), nullable=True),
        sa.Column("high", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_metric_rollups_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "name", "block", "epoch", name=op.f("pk_metric_rollups")),
        sqlite_with_rowid=False,
    )
    op.execute(
        f"""
        INSERT INTO metric_rollups (job_id, name, block, epoch, last_step, n, total, low, high)
        SELECT job_id, name, step / {BLOCK_STEPS}, epoch, max(step), count(value), sum(value),
               min(value), max(value)
        FROM metrics
        GROUP BY job_id, name, step / {BLOCK_STEPS}, epoch
        """
    )


def downgrade() -> None:
    op.drop_table("metric_rollups")
