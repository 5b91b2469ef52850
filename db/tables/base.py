"""The ground of the ORM schema: the declarative base, its naming convention and the portable
column types every table module uses (SQLAlchemy 2 typed style).

The Alembic migrations in `db/migrations/versions/` are the source of truth for the real
database; this module must describe the same schema (a test compares the two with Alembic's
autogenerate and expects no difference). Change both together.

Portability notes (SQLite is the embedded default, Postgres the served one):
- JSON columns are `JSON` on SQLite and `JSONB` on Postgres.
- Big-integer primary keys are `INTEGER` on SQLite, because only `INTEGER PRIMARY KEY`
  autoincrements there.
- Datetimes are stored in UTC and always come back timezone-aware (`UTCDateTime`), although
  SQLite itself keeps no zone.
- Constraint and index names come from the naming convention below, so migrations can
  refer to them by name on every backend.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Integer,
    MetaData,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase

from core.states import JobStatus

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JOB_STATUSES = tuple(JobStatus)  # the CHECK constraint of jobs.status
# A job's priority: higher runs first (POST /jobs, PATCH /jobs/{id}).
PRIORITY_MIN, PRIORITY_MAX = -100, 100
# The most GPUs (on CPU: processes) one job may train on (POST /jobs `gpus`).
MAX_JOB_GPUS = 16
# Owner of what is created without an API key (embedded mode on loopback, keyless).
LOCAL_OWNER = "local"
DATASET_KINDS = ("images", "text")

# Portable column types.
JSONType = JSON().with_variant(JSONB(), "postgresql")
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC that is always returned timezone-aware.

    Naive values given to the database are taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite keeps no zone: we only ever write UTC
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def created_on(item: Any, dialect: str) -> bool:
    """Whether a schema item exists on this backend: an index made with `.ddl_if(dialect=...)`
    exists only there (Alembic's comparison does not know it, see `include_in_comparison`)."""
    condition = getattr(item, "_ddl_if", None)
    wanted = condition.dialect if condition is not None else None
    if wanted is None:
        return True
    return dialect == wanted if isinstance(wanted, str) else dialect in wanted


def include_in_comparison(dialect: str) -> Any:
    """Alembic's `include_object` for comparing the models with a database of `dialect`: items
    of the models that are not created there are left out."""
    def include(item: Any, _name: Any, _type: Any, reflected: bool, _compare_to: Any) -> bool:
        return reflected or created_on(item, dialect)
    return include


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
