"""Confusion matrices: a classifier's validation confusion matrix at each epoch's end.

confusion_matrices: one row per (job, epoch) of an mlp or cnn job, written with the epoch's
val_accuracy (GET /jobs/{id}/confusion): the K x K counts as JSON (rows the true label,
columns the predicted one), their sum and trace. Jobs trained before this revision have none.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the portable types in db/tables/ (a migration never imports the ORM).
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "confusion_matrices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("num_classes", sa.Integer(), nullable=False),
        sa.Column("matrix", JSON_TYPE, nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("correct", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_confusion_matrices_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_confusion_matrices")),
        sa.UniqueConstraint("job_id", "epoch", name=op.f("uq_confusion_matrices_job_id_epoch")),
    )


def downgrade() -> None:
    op.drop_table("confusion_matrices")
