"""Fault tolerance: infrastructure failures, broker (re)send times, idempotency keys, attempts.

- jobs.infra_failures: how many attempts were lost to the infrastructure (a worker that died
  or stopped heart-beating), apart from failures of the job's own code.
- jobs.enqueued_at: when "run job <id>" was last sent to the broker; the reconciler re-sends a
  job queued for longer than a grace period (a broker restarted empty loses messages).
- jobs.idempotency_key: the Idempotency-Key of the POST /jobs that created it (unique).
- job_attempts: one row per claim of a job by a worker: who, when, how it ended
  (succeeded, failed, cancelled, worker_lost, drained) and the epoch it resumed from.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("infra_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("enqueued_at", UTC_DATETIME, nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(length=200), nullable=True))
        batch.create_unique_constraint(op.f("uq_jobs_idempotency_key"), ["idempotency_key"])
    op.create_index("ix_jobs_status_enqueued_at", "jobs", ["status", "enqueued_at"])

    op.create_table(
        "job_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("started_at", UTC_DATETIME, nullable=False),
        sa.Column("ended_at", UTC_DATETIME, nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("resumed_from_epoch", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_attempts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_attempts")),
        sa.UniqueConstraint("job_id", "number", name=op.f("uq_job_attempts_job_id_number")),
    )


def downgrade() -> None:
    op.drop_table("job_attempts")
    op.drop_index("ix_jobs_status_enqueued_at", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("uq_jobs_idempotency_key"), type_="unique")
        batch.drop_column("idempotency_key")
        batch.drop_column("enqueued_at")
        batch.drop_column("infra_failures")
