"""The points' indexes per backend (migration 0017): on PostgreSQL one unique index that carries
epoch and value (INCLUDE); on SQLite, which has no INCLUDE, the unique key plus the covering
index. Alembic's comparison of models and database does not see INCLUDE, so it is checked here."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from db.store import MIGRATIONS_DIR, Store


def _upgrade(store: Store, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def _postgres_indexes(store: Store) -> dict[str, str]:
    with store.engine.connect() as conn:
        return dict(conn.execute(text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'metrics'")).all())


def _points(store: Store, job_id: int) -> list[tuple]:
    with store.engine.connect() as conn:
        return conn.execute(text("SELECT name, step, value FROM metrics WHERE job_id = :j "
                                 "ORDER BY name, step"), {"j": job_id}).all()


def test_postgres_upgrade_keeps_points_and_leaves_one_index_that_covers_reads(
        fresh_postgres_url):
    store = Store(fresh_postgres_url)
    try:
        _upgrade(store, "0016")
        # The job as 0016 knew it (the store's own insert names columns added since).
        with store.engine.begin() as conn:
            job_id = conn.execute(text(
                "INSERT INTO jobs (name, model, dataset, hyperparameters, device, status, "
                "created_at, updated_at, epoch, step, attempts, infra_failures, owner) VALUES "
                "('j', 'mlp', 'digits', '{}', 'cpu', 'running', now(), now(), 0, 0, 1, 0, "
                "'local') RETURNING id")).scalar()
        store.add_metrics(job_id, [("train_loss", s, 1, 1.0 / s, 0.0) for s in range(1, 41)])
        assert "ix_metrics_job_id_name_step_epoch_value" in _postgres_indexes(store)

        store.migrate()  # 0017 and later
        indexes = _postgres_indexes(store)
        assert set(indexes) == {"pk_metrics", "uq_metrics_job_id_name_step"}
        assert indexes["uq_metrics_job_id_name_step"].endswith(
            "(job_id, name, step) INCLUDE (epoch, value)")
        assert len(_points(store, job_id)) == 40
        # Still what the upsert conflicts on: a repeated step replaces its point.
        store.add_metrics(job_id, [("train_loss", s, 1, 5.0, 0.0) for s in range(35, 46)])
        points = _points(store, job_id)
        assert len(points) == 45 and points[-1] == ("train_loss", 45, 5.0)
        assert store.latest_metrics(job_id) == {"train_loss": 5.0}
        # Reads of points are index-only scans of it.
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE metrics"))
            conn.execute(text("SET enable_seqscan = off"))
            plan = "\n".join(row[0] for row in conn.execute(text(
                "EXPLAIN SELECT step, epoch, value FROM metrics WHERE job_id = :j "
                "AND name = 'train_loss' ORDER BY step"), {"j": job_id}))
        assert "Index Only Scan using uq_metrics_job_id_name_step" in plan, plan
    finally:
        store.close()


def test_sqlite_keeps_the_unique_key_and_the_covering_index(sqlite_url):
    store = Store(sqlite_url)
    try:
        store.migrate()
        with store.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'metrics'")).all()
            table = conn.execute(text(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'metrics'"
            )).scalar_one()
        assert "ix_metrics_job_id_name_step_epoch_value" in {name for name, _ in rows}
        assert "CONSTRAINT uq_metrics_job_id_name_step UNIQUE (job_id, name, step)" in table
        assert "INCLUDE" not in table
    finally:
        store.close()
