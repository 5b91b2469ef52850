"""Alembic environment, driven from code (there is no alembic.ini).

`db.store.Store.migrate()` builds the Alembic Config and hands over an open connection in
`config.attributes["connection"]`, already inside a transaction (and holding a lock), so the
whole upgrade commits or rolls back as one. Without one (e.g. offline SQL generation), the
URL comes from the Config's `sqlalchemy.url` option.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import make_url
from sqlalchemy.engine import Connection

from db.session import make_engine
from db.tables import Base, include_in_comparison

config = context.config
target_metadata = Base.metadata


def _configure(dialect: str, **kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        # Autogenerate leaves out indexes that only another backend has (`Index.ddl_if`).
        include_object=include_in_comparison(dialect),
        # SQLite cannot ALTER most things: later migrations use batch mode there.
        render_as_batch=True,
        **kwargs,
    )


def _run_with(connection: Connection) -> None:
    _configure(connection.dialect.name, connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    _configure(make_url(url).get_backend_name(), url=url, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as conn:
            _run_with(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
