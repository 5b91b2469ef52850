"""Coarse block summaries of metric series, for comparisons of many long runs.

metric_rollups_coarse: the same summary as metric_rollups over blocks of 128 steps (8 of its
blocks). Store.add_metrics keeps it in the batch's own transaction; this migration fills it
from the 16-step summaries already stored.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINE_PER_COARSE = 8  # db.tables.COARSE_ROLLUP_BLOCKS when this migration was written


def upgrade() -> None:
    # The very columns of metric_rollups (as this database has them), under their own keys.
    fine = sa.Table("metric_rollups", sa.MetaData(), autoload_with=op.get_bind())
    op.create_table(
        "metric_rollups_coarse",
        *(sa.Column(c.name, c.type, nullable=c.nullable) for c in fine.columns),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_metric_rollups_coarse_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "name", "block", "epoch",
                                name=op.f("pk_metric_rollups_coarse")),
        sqlite_with_rowid=False,
    )
    op.execute(
        f"""
        INSERT INTO metric_rollups_coarse
            (job_id, name, block, epoch, last_step, n, total, low, high)
        SELECT job_id, name, block / {FINE_PER_COARSE}, epoch, max(last_step), sum(n),
               sum(total), min(low), max(high)
        FROM metric_rollups
        GROUP BY job_id, name, block / {FINE_PER_COARSE}, epoch
        """
    )


def downgrade() -> None:
    op.drop_table("metric_rollups_coarse")
