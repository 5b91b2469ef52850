"""The store's engine, sessions and schema: what every part of the gateway stands on."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Self

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, event, func, select, text
from sqlalchemy.orm import Session

from db.session import make_engine, make_session_factory, normalize_url, session_scope

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Postgres advisory-lock key held while migrating: any constant shared by every process.
MIGRATION_LOCK_KEY = 0x7472_6169_6E79_6172  # "trainyar" in ASCII

# The session that `StoreBase.reading` opened in this thread or task, with its store.
_READING: ContextVar[tuple[StoreBase, Session] | None] = ContextVar("store_reading", default=None)
_READ_ONLY = "trainyard.read_only"  # Connection.info key, set inside reading(): no writes


class WriteWhileReading(RuntimeError):
    """A store write was attempted inside `Store.reading()` (a programming error)."""


def _refuse_writes(conn: Any, clauseelement: Any, *_args: Any) -> None:
    if conn.info.get(_READ_ONLY) and getattr(clauseelement, "is_dml", False):
        raise WriteWhileReading(f"{clauseelement} inside Store.reading(), which is for reads")


def _refuse_savepoints(conn: Any, _name: Any) -> None:
    if conn.info.get(_READ_ONLY):
        raise WriteWhileReading("a savepoint (a write's) inside Store.reading(), which is for "
                                "reads")


def json_safe(value: Any) -> Any:
    """Replace NaN/inf (invalid in JSON, rejected by Postgres JSONB) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value



def _end_reading(connection: Any, raw: Any) -> None:
    """Give the pool back a connection that takes writes, in transactions; one that cannot be
    switched back (broken mid-read) is discarded rather than pooled in autocommit."""
    try:
        connection.info.pop(_READ_ONLY, None)
        if raw is not None:
            raw.autocommit = False
    except Exception:  # noqa: BLE001 - any failure: the connection must not be reused
        connection.invalidate()


class StoreBase:
    """An engine and a session factory for one database URL; see `Store`."""

    def __init__(self, url: str | URL) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)
        self.dialect = self.engine.dialect.name
        self._sessions = make_session_factory(self.engine)
        event.listen(self.engine, "before_execute", _refuse_writes)
        event.listen(self.engine, "savepoint", _refuse_savepoints)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _dialect_insert(self, table: Any) -> Any:
        """This backend's INSERT, the one with ON CONFLICT."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        shared = _READING.get()
        if shared is not None and shared[0] is self:
            yield shared[1]
            return
        with session_scope(self._sessions) as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Several reads in one session: the store calls made inside the block share one
        connection checkout (one pre-ping on Postgres). A request that answers from three reads
        costs one checkout and ping instead of three.

        On Postgres the connection is in autocommit for the block: each read is its own
        statement, with no BEGIN and COMMIT around them (two round trips fewer per request;
        the reads may see different snapshots, which a page of status and counts tolerates).
        For reads only: an INSERT/UPDATE/DELETE (ORM flushes included) or a savepoint inside
        raises WriteWhileReading (in autocommit a write would be atomic with nothing)."""
        if (shared := _READING.get()) is not None and shared[0] is self:
            yield
            return
        with self._sessions() as session:
            connection = session.connection()  # the checkout, and its pre-ping
            connection.info[_READ_ONLY] = True
            raw = None
            if self.dialect == "postgresql":
                raw = connection.connection.dbapi_connection
                raw.autocommit = True
            token = _READING.set((self, session))
            try:
                yield
            finally:
                _READING.reset(token)
                if not connection.invalidated:  # (a broken one takes its state with it)
                    _end_reading(connection, raw)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (`upgrade head`).

        Safe to call on every start: at head it changes nothing. Concurrent callers are
        serialised, so a fleet of workers starting together cannot trip over each other:
        Postgres takes a transaction-scoped advisory lock; SQLite takes the database's write
        lock up front (BEGIN IMMEDIATE). The whole upgrade commits as one transaction.
        """
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        url = self.url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
            elif self.dialect == "sqlite":
                # SQLite alters a table by rebuilding it (copy, drop, rename); with foreign
                # keys on, dropping `jobs` would cascade-delete every metric and checkpoint.
                # The pragma only takes effect outside a transaction: before BEGIN.
                conn.exec_driver_sql("PRAGMA foreign_keys = OFF")
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            config.attributes["connection"] = conn
            try:
                command.upgrade(config, "head")
                if self.dialect == "sqlite":
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration left dangling references: {broken[:5]}")
                conn.commit()
            finally:
                if self.dialect == "sqlite":
                    conn.rollback()  # no-op after the commit; needed before the pragma
                    conn.exec_driver_sql("PRAGMA foreign_keys = ON")

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - a health check reports, it does not raise
            return False
