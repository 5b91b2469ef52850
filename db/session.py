"""Engines and sessions: connection settings per backend, and the one place that commits.

SQLite (the embedded default) is tuned for several processes sharing one file: WAL journal
(readers never block the writer), a 30 s busy timeout (writers queue instead of failing),
foreign keys enforced, and synchronous=NORMAL (safe with WAL, much faster than FULL).
Postgres gets `pool_pre_ping` so a restarted server does not break a long-lived process, and
keeps up to 10 idle connections (SQLAlchemy keeps 5: an API serving more requests at once
opened and closed a server connection per request beyond those).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str | URL) -> URL:
    """Parse `url`; a bare `postgresql://` (or `postgres://`) URL gets the psycopg 3 driver."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL (it stays so). The switch needs an exclusive lock, and SQLite
    answers "database is locked" at once, without its busy handler, when another connection
    is switching or writing at that moment: retry until the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        # A new file (no tables yet) gives deleted pages back on
        # `PRAGMA incremental_vacuum` (db/store/lifecycle.py). Only then: on a file with
        # tables the pragma changes nothing, and it would wait for the write lock.
        if cursor.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None:
            cursor.execute("PRAGMA auto_vacuum = INCREMENTAL")
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def make_engine(url: str | URL) -> Engine:
    """Create an engine for `url` with the per-backend settings described above.

    For a SQLite file the parent folder is created. An in-memory SQLite URL gets a single
    shared connection, so every session sees the same database.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs: dict[str, Any] = {
            "connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        }
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["poolclass"] = StaticPool
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (records are built after it)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit when the block ends normally, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
