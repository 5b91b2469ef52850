"""Shared fixtures: real databases and Redis, never mocks.

- `sqlite_url`: a fresh SQLite file per test (in a folder that does not exist yet).
- `postgres_url`: a fresh database `trainyard_test_<random>` for the test session, dropped at
  the end. `fresh_postgres_url`: one more fresh database for a single test.
- `redis_url`: Redis database 15, flushed before each test.
- `store`: a migrated `db.store.Store`, once on SQLite and once on Postgres.

Servers: PostgreSQL at postgresql+psycopg://postgres@127.0.0.1:5432 (trust auth) and Redis
at 127.0.0.1:6379, or wherever TRAINYARD_TEST_POSTGRES_URL (a URL of the admin database) and
TRAINYARD_TEST_REDIS_URL point. When one is not reachable the tests that need it are
skipped, except under CI=true, where they fail: CI must not go green by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "TRAINYARD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TRAINYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_HINT = (
    "start it with `sudo service postgresql start` (trust auth for user postgres on "
    "127.0.0.1) or `docker compose up -d postgres`, or set TRAINYARD_TEST_POSTGRES_URL"
)
REDIS_HINT = (
    "start it with `sudo service redis-server start` or `docker compose up -d redis`, "
    "or set TRAINYARD_TEST_REDIS_URL"
)


def _unavailable(message: str) -> None:
    """Fail under CI (a missing service is a broken pipeline), skip elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class _PostgresServer:
    """Creates and drops throw-away databases on the test server."""

    def __init__(self, admin_url: str) -> None:
        from sqlalchemy import create_engine, make_url

        self.admin_url = make_url(admin_url)
        self.engine = create_engine(
            self.admin_url,
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 3},
            pool_pre_ping=True,
        )
        self.error: Exception | None = None
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            self.error = exc

    def create_database(self) -> str:
        name = f"trainyard_test_{uuid.uuid4().hex[:12]}"
        with self.engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    @contextmanager
    def database(self) -> Iterator[str]:
        """A fresh, empty database, dropped on leaving."""
        url = self.create_database()
        try:
            yield url
        finally:
            self.drop_database(url)

    def drop_database(self, url: str) -> None:
        from sqlalchemy import make_url

        name = make_url(url).database
        with self.engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _postgres_server() -> Iterator[_PostgresServer]:
    server = _PostgresServer(POSTGRES_ADMIN_URL)
    try:
        if server.error is not None:
            _unavailable(
                f"PostgreSQL not reachable at {server.admin_url.render_as_string()}: "
                f"{server.error.__class__.__name__}; {POSTGRES_HINT}"
            )
        yield server
    finally:
        server.engine.dispose()


@pytest.fixture(scope="session")
def postgres_url(_postgres_server: _PostgresServer) -> Iterator[str]:
    """A fresh, empty database for the whole test session (dropped at the end)."""
    with _postgres_server.database() as url:
        yield url


@pytest.fixture
def fresh_postgres_url(_postgres_server: _PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test (dropped after it)."""
    with _postgres_server.database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A SQLite file in a folder that does not exist yet (the engine must create it)."""
    return f"sqlite:///{tmp_path / 'state' / 'trainyard.db'}"


@pytest.fixture(scope="session")
def _redis_reachable() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        _unavailable(f"Redis not reachable at {REDIS_URL}: {exc.__class__.__name__}; {REDIS_HINT}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_url(_redis_reachable: str) -> str:
    """Redis database 15 (by default), emptied before the test."""
    import redis

    client = redis.Redis.from_url(_redis_reachable, socket_connect_timeout=3)
    try:
        client.flushdb()
    finally:
        client.close()
    return _redis_reachable


@pytest.fixture(scope="session")
def _store_postgres_url(_postgres_server: _PostgresServer) -> Iterator[str]:
    """The database behind the Postgres `store` (separate from `postgres_url`), migrated once."""
    from db.store import Store

    url = _postgres_server.create_database()
    store = Store(url)
    try:
        store.migrate()
    finally:
        store.close()
    try:
        yield url
    finally:
        _postgres_server.drop_database(url)


def _store_tables() -> list[str]:
    """Every table of the schema: a new one is emptied between tests without listing it here."""
    from db.tables import Base

    return [table.name for table in Base.metadata.sorted_tables]


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def store(request: pytest.FixtureRequest):
    """A migrated, empty Store on each backend (Postgres tables are emptied per test)."""
    from db.store import Store

    if request.param == "sqlite":
        instance = Store(request.getfixturevalue("sqlite_url"))
        instance.migrate()
    else:
        instance = Store(request.getfixturevalue("_store_postgres_url"))
        with instance.engine.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {', '.join(_store_tables())} RESTART IDENTITY CASCADE")
    try:
        yield instance
    finally:
        instance.close()
