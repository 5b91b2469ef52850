"""Series summaries: finished runs' downsampled curves, computed once.

series_summaries: one run's curve of one metric for one `max_points`, exactly as GET
/compare/series answers it (JSON text; NULL data: the run has no such metric), for runs that
finished more than a lease ago, whose points no longer change. jobs.summarised_at: when the
reconciler stored a run's summaries, with a partial index on finished_at over the jobs not yet
summarised, so the reconciler finds the runs to summarise in a few seeks. Existing finished
runs start unsummarised: the reconciler's passes work through them, a small batch at a time.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)
UNSUMMARISED = sa.text("summarised_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "series_summaries",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("max_points", sa.Integer(), nullable=False),
        sa.Column("data", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_series_summaries_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "name", "max_points",
                                name=op.f("pk_series_summaries")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("summarised_at", UTC_DATETIME, nullable=True))
    op.create_index(op.f("ix_jobs_finished_at_unsummarised"), "jobs", ["finished_at"],
                    sqlite_where=UNSUMMARISED, postgresql_where=UNSUMMARISED)


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_finished_at_unsummarised"), table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("summarised_at")
    op.drop_table("series_summaries")
