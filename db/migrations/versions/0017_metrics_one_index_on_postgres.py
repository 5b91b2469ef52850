"""PostgreSQL: the points' unique constraint carries epoch and value, and the covering index goes.

Every point written paid for two B-trees on the same key (job_id, name, step): the unique
constraint the upsert conflicts on, and the covering index of 0002 that reads scan alone.
PostgreSQL 11+ lets a unique index INCLUDE columns outside its key, so one index can do both:
unique on (job_id, name, step), carrying epoch and value for index-only scans. Measured on the
ingestion path (Store.add_metrics, 3,000-point batches): 13.7-15.2 us per point before, 11.9-12.1
after, and one index fewer over the largest table. The new index is built before the old
constraint is dropped, so the table is never without its uniqueness; building it holds a lock
that blocks writes to `metrics` for as long as it takes (seconds per few million points).

SQLite has no INCLUDE: it keeps both, as before (`Index.ddl_if` in db/tables/metrics.py).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNIQUE = "uq_metrics_job_id_name_step"
COVERING = "ix_metrics_job_id_name_step_epoch_value"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"CREATE UNIQUE INDEX {UNIQUE}_0017 ON metrics (job_id, name, step) "
               "INCLUDE (epoch, value)")
    op.execute(f"ALTER TABLE metrics DROP CONSTRAINT {UNIQUE}")
    # USING INDEX renames the index to the constraint's name.
    op.execute(f"ALTER TABLE metrics ADD CONSTRAINT {UNIQUE} UNIQUE USING INDEX {UNIQUE}_0017")
    op.execute(f"DROP INDEX {COVERING}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"CREATE INDEX {COVERING} ON metrics (job_id, name, step, epoch, value)")
    op.execute(f"CREATE UNIQUE INDEX {UNIQUE}_0017 ON metrics (job_id, name, step)")
    op.execute(f"ALTER TABLE metrics DROP CONSTRAINT {UNIQUE}")
    op.execute(f"ALTER TABLE metrics ADD CONSTRAINT {UNIQUE} UNIQUE USING INDEX {UNIQUE}_0017")
