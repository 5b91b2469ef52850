"""Sweeps and forked runs: the `sweeps` table, each trial an ordinary job that carries its
`sweep_id` and `trial` number; the `pruned` job status (a sweep's early stopping ended the
trial); and a fork's parent (job, checkpoint, epoch, step) on the job it started.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
OLD_STATUSES = "'queued', 'running', 'succeeded', 'failed', 'cancelled'"
NEW_STATUSES = OLD_STATUSES + ", 'pruned'"


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=50), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("hyperparameters", JSON_TYPE, nullable=False),
        sa.Column("space", JSON_TYPE, nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("objective_metric", sa.String(length=200), nullable=False),
        sa.Column("objective_goal", sa.String(length=8), nullable=False),
        sa.Column("max_trials", sa.Integer(), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("early_stopping", JSON_TYPE, nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.Column("finished_at", UTC_DATETIME, nullable=True),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed', 'cancelled')",
                           name=op.f("ck_sweeps_status")),
        sa.CheckConstraint("method IN ('grid', 'random', 'tpe')", name=op.f("ck_sweeps_method")),
        sa.CheckConstraint("objective_goal IN ('min', 'max')",
                           name=op.f("ck_sweeps_objective_goal")),
        sa.CheckConstraint("max_trials >= 1 AND max_concurrent >= 1",
                           name=op.f("ck_sweeps_trial_counts")),
        sa.CheckConstraint("priority BETWEEN -100 AND 100", name=op.f("ck_sweeps_priority")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweeps")),
    )
    op.create_index(op.f("ix_sweeps_owner_id"), "sweeps", ["owner", "id"])
    op.create_index(op.f("ix_sweeps_status_id"), "sweeps", ["status", "id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("sweep_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("trial", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("parent_job_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("parent_checkpoint_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("parent_epoch", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("parent_step", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("resume_optimizer", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.create_foreign_key(op.f("fk_jobs_sweep_id_sweeps"), "sweeps", ["sweep_id"], ["id"])
        batch.create_foreign_key(op.f("fk_jobs_parent_job_id_jobs"), "jobs", ["parent_job_id"],
                                 ["id"], ondelete="SET NULL")
        batch.create_unique_constraint(op.f("uq_jobs_sweep_id_trial"), ["sweep_id", "trial"])
        batch.drop_constraint(op.f("ck_jobs_status"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_status"), f"status IN ({NEW_STATUSES})")
    op.create_index(op.f("ix_jobs_parent_job_id"), "jobs", ["parent_job_id"])


def downgrade() -> None:
    op.execute("UPDATE jobs SET status = 'cancelled' WHERE status = 'pruned'")
    op.drop_index(op.f("ix_jobs_parent_job_id"), table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_status"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_status"), f"status IN ({OLD_STATUSES})")
        batch.drop_constraint(op.f("uq_jobs_sweep_id_trial"), type_="unique")
        batch.drop_constraint(op.f("fk_jobs_parent_job_id_jobs"), type_="foreignkey")
        batch.drop_constraint(op.f("fk_jobs_sweep_id_sweeps"), type_="foreignkey")
        for column in ("resume_optimizer", "parent_step", "parent_epoch", "parent_checkpoint_id",
                       "parent_job_id", "trial", "sweep_id"):
            batch.drop_column(column)
    op.drop_index(op.f("ix_sweeps_status_id"), table_name="sweeps")
    op.drop_index(op.f("ix_sweeps_owner_id"), table_name="sweeps")
    op.drop_table("sweeps")
