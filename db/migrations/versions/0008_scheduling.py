"""Scheduling: job priorities, fair share per device class, preemption, and what each worker
is and does.

The database decides which queued job runs next (highest priority, then the owner with the
fewest running jobs in the worker's device class, then the oldest); the broker only wakes
workers. Existing jobs get priority 0; existing worker rows become idle CPU workers until their
next presence beat says otherwise.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("device_class", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("preempt_requested_at", UTC_DATETIME, nullable=True))
        batch.create_check_constraint(op.f("ck_jobs_priority"),
                                      "priority BETWEEN -100 AND 100")
    op.create_index(op.f("ix_jobs_status_priority_id"), "jobs", ["status", "priority", "id"])
    op.create_index(op.f("ix_jobs_status_priority_owner_id"), "jobs",
                    ["status", "priority", "owner", "id"])
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("device_class", sa.String(length=8), nullable=False,
                                   server_default="cpu"))
        batch.add_column(sa.Column("gpu_name", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("gpu_memory_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("torch_version", sa.String(length=50), nullable=True))
        batch.add_column(sa.Column("state", sa.String(length=16), nullable=False,
                                   server_default="idle"))
        batch.add_column(sa.Column("job_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("jobs_done", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("infra_failures", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("drain_requested_at", UTC_DATETIME, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        for column in ("drain_requested_at", "infra_failures", "jobs_done", "job_id", "state",
                       "torch_version", "gpu_memory_bytes", "gpu_name", "device_class"):
            batch.drop_column(column)
    op.drop_index(op.f("ix_jobs_status_priority_owner_id"), table_name="jobs")
    op.drop_index(op.f("ix_jobs_status_priority_id"), table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_priority"), type_="check")
        batch.drop_column("preempt_requested_at")
        batch.drop_column("device_class")
        batch.drop_column("priority")
