"""Job ids are never reused on SQLite, now that finished jobs can be deleted.

SQLite gives a new row of a plain INTEGER PRIMARY KEY table max(id) + 1: delete the newest
job and the next one gets its id, and with it whatever still names that id (a bookmarked
/jobs/{id}, the compare page's per-process cache of finished curves, a webhook receiver's
records). AUTOINCREMENT keeps the largest id ever used (in sqlite_sequence) instead. A table's
primary key cannot be altered in place, so `jobs` is rebuilt, SQLite's way: the same CREATE
TABLE text with the key declared AUTOINCREMENT, the rows copied, the old table dropped, the
new one renamed, the indexes created again (foreign keys are off while migrating). Postgres
ids come from a sequence and are never reused: nothing to do there.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

import re
from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = re.compile(r"\bid INTEGER NOT NULL,")
_PK = re.compile(r"\s*CONSTRAINT pk_jobs PRIMARY KEY \(id\),")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    rows = bind.exec_driver_sql(
        "SELECT type, sql FROM sqlite_master WHERE tbl_name = 'jobs' AND sql IS NOT NULL"
    ).all()
    create = next(sql for kind, sql in rows if kind == "table")
    indexes = [sql for kind, sql in rows if kind == "index"]
    if "AUTOINCREMENT" in create.upper():
        return
    if len(_KEY.findall(create)) != 1 or len(_PK.findall(create)) != 1:
        raise RuntimeError(f"unexpected jobs table: {create}")
    new = _PK.sub("", _KEY.sub("id INTEGER NOT NULL CONSTRAINT pk_jobs PRIMARY KEY "
                               "AUTOINCREMENT,", create, count=1), count=1)
    new = re.sub(r'^CREATE TABLE "?jobs"?', "CREATE TABLE jobs_0016", new, count=1)
    bind.exec_driver_sql(new)
    bind.exec_driver_sql("INSERT INTO jobs_0016 SELECT * FROM jobs")
    bind.exec_driver_sql("DROP TABLE jobs")
    bind.exec_driver_sql("ALTER TABLE jobs_0016 RENAME TO jobs")
    for sql in indexes:
        bind.exec_driver_sql(sql)


def downgrade() -> None:
    # AUTOINCREMENT is harmless under the older revisions: the rebuild is not undone.
    pass
