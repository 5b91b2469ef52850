"""Authentication and ownership: API keys, dashboard sessions, an owner on jobs and datasets.

- api_keys: one row per key, the SHA-256 of the key only (the key is shown once); owner is
  the user it acts for, is_admin lets it see everyone's jobs; revoked keys stay, inert.
- web_sessions: dashboard sign-ins (cookie token's SHA-256, CSRF token, expiry).
- jobs.owner, datasets.owner: who created them; 'local' for what was created without a key.
- Idempotency keys and dataset names become unique per owner, so one user's choice never
  collides with, or reveals, another's.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)
LOCAL_OWNER = "local"  # db.tables.LOCAL_OWNER


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("last_used_at", UTC_DATETIME, nullable=True),
        sa.Column("revoked_at", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "web_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("expires_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_web_sessions_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_web_sessions")),
    )
    op.create_index(op.f("ix_web_sessions_key_id"), "web_sessions", ["key_id"])

    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column(
            "owner", sa.String(length=100), nullable=False, server_default=LOCAL_OWNER
        ))
        batch.drop_constraint(op.f("uq_jobs_idempotency_key"), type_="unique")
        batch.create_unique_constraint(
            op.f("uq_jobs_owner_idempotency_key"), ["owner", "idempotency_key"]
        )
    op.create_index("ix_jobs_owner_status_id", "jobs", ["owner", "status", "id"])

    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column(
            "owner", sa.String(length=100), nullable=False, server_default=LOCAL_OWNER
        ))
        batch.drop_constraint(op.f("uq_datasets_name"), type_="unique")
        batch.create_unique_constraint(op.f("uq_datasets_owner_name"), ["owner", "name"])


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_constraint(op.f("uq_datasets_owner_name"), type_="unique")
        batch.create_unique_constraint(op.f("uq_datasets_name"), ["name"])
        batch.drop_column("owner")
    op.drop_index("ix_jobs_owner_status_id", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("uq_jobs_owner_idempotency_key"), type_="unique")
        batch.create_unique_constraint(op.f("uq_jobs_idempotency_key"), ["idempotency_key"])
        batch.drop_column("owner")
    op.drop_index(op.f("ix_web_sessions_key_id"), table_name="web_sessions")
    op.drop_table("web_sessions")
    op.drop_table("api_keys")
