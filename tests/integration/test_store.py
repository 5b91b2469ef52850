"""The store against real databases: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import random
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text

from db.session import make_engine, make_session_factory, session_scope
from db.store import (
    MIGRATIONS_DIR,
    InvalidTransition,
    NotFound,
    Store,
)
from db.tables import Base, Job, Metric, include_in_comparison

HP = {"epochs": 2, "lr": 0.001, "hidden_sizes": [64, 32]}


def _aware(value: dt.datetime | None) -> bool:
    return value is not None and value.utcoffset() == dt.timedelta(0)


# ---- jobs ----------------------------------------------------------------------------


def test_job_lifecycle(store: Store) -> None:
    job = store.create_job(model="mlp", dataset="digits", hyperparameters=HP, device="cpu")
    assert (job.status, job.attempts, job.worker) == ("queued", 0, None)
    assert job.name == f"mlp-digits-{job.id}"
    assert job.hyperparameters == HP
    assert _aware(job.created_at) and job.started_at is None and job.finished_at is None
    assert store.get_job(job.id) == job

    running = store.claim_job(job.id, worker="worker-a")
    assert running is not None
    assert (running.status, running.attempts, running.worker) == ("running", 1, "worker-a")
    assert _aware(running.started_at) and running.started_at >= job.created_at
    assert store.claim_job(job.id, worker="worker-b") is None  # already owned

    assert store.update_progress(job.id, epoch=1, total_epochs=2, step=30, total_steps=60,
                                 eta_seconds=12.5)
    assert store.heartbeat(job.id)
    progress = store.get_job(job.id)
    assert (progress.epoch, progress.total_epochs, progress.step, progress.total_steps) == (
        1, 2, 30, 60)
    assert progress.eta_seconds == 12.5 and _aware(progress.heartbeat_at)

    assert store.finish_job(job.id, "succeeded")
    done = store.get_job(job.id)
    assert done.status == "succeeded" and _aware(done.finished_at) and done.error is None
    assert done.finished_at >= done.started_at
    assert store.get_status(job.id) == "succeeded"
    # A finished job accepts no more transitions.
    assert not store.finish_job(job.id, "failed")
    assert not store.update_progress(job.id, 2, 2, 60, 60, 0.0)
    assert not store.heartbeat(job.id)
    assert store.claim_job(job.id, "worker-b") is None


def test_named_job_and_failure_keeps_error(store: Store) -> None:
    job = store.create_job("cnn", "digits", {}, name="baseline")
    assert job.name == "baseline" and job.device == "auto"
    store.claim_job(job.id, "w")
    assert store.finish_job(job.id, "failed", error="CUDA out of memory")
    failed = store.get_job(job.id)
    assert (failed.status, failed.error) == ("failed", "CUDA out of memory")


def test_finish_only_from_running(store: Store) -> None:
    job = store.create_job("mlp", "digits", HP)
    assert store.finish_job(job.id, "succeeded") is False
    assert store.get_status(job.id) == "queued"
    assert store.finish_job(10_000, "failed") is False
    with pytest.raises(ValueError):
        store.finish_job(job.id, "running")


def test_cancel_transitions(store: Store) -> None:
    queued = store.create_job("mlp", "digits", HP)
    cancelled = store.cancel_job(queued.id)
    assert cancelled.status == "cancelled" and _aware(cancelled.finished_at)
    assert store.claim_job(queued.id, "w") is None  # a cancelled job is never started

    running = store.create_job("mlp", "digits", HP)
    store.claim_job(running.id, "w")
    assert store.cancel_job(running.id).status == "cancelled"
    # The worker learns it through its next progress update, and cannot overwrite the status.
    assert store.update_progress(running.id, 1, 2, 10, 20, 5.0) is False
    assert store.finish_job(running.id, "succeeded") is False
    assert store.get_status(running.id) == "cancelled"

    finished = store.create_job("mlp", "digits", HP)
    store.claim_job(finished.id, "w")
    store.finish_job(finished.id, "succeeded")
    with pytest.raises(InvalidTransition) as excinfo:
        store.cancel_job(finished.id)
    assert excinfo.value.current_status == "succeeded"
    with pytest.raises(InvalidTransition):
        store.cancel_job(queued.id)  # cancelled twice
    with pytest.raises(NotFound):
        store.cancel_job(987_654)
    assert store.get_job(987_654) is None and store.get_status(987_654) is None


def test_requeue_then_second_attempt(store: Store) -> None:
    job = store.create_job("rnn_lm", "pydocs", {"cell": "gru"})
    store.claim_job(job.id, "w1")
    assert store.requeue_job(job.id, error="worker lost")
    again = store.get_job(job.id)
    assert (again.status, again.worker) == ("queued", None)
    assert sorted(j.id for j in store.list_jobs(status="queued", limit=1000)[0]) == [job.id]
    second = store.claim_job(job.id, "w2")
    assert (second.attempts, second.worker, second.error) == (2, "w2", None)
    assert store.requeue_job(12345) is False


def test_list_jobs_filters_pagination_total(store: Store) -> None:
    ids = []
    for i in range(7):
        job = store.create_job("mlp" if i % 2 == 0 else "cnn", "digits", {"seed": i})
        ids.append(job.id)
    for job_id in ids[:3]:
        store.claim_job(job_id, "w")
    store.finish_job(ids[0], "succeeded")

    jobs, total = store.list_jobs()
    assert total == 7 and [j.id for j in jobs] == ids[::-1]  # newest first

    page, total = store.list_jobs(limit=3, offset=3)
    assert total == 7 and [j.id for j in page] == ids[::-1][3:6]
    assert store.list_jobs(limit=3, offset=100) == ([], 7)

    mlp, total = store.list_jobs(model="mlp")
    assert total == 4 and [j.id for j in mlp] == [ids[6], ids[4], ids[2], ids[0]]

    running, total = store.list_jobs(status="running")
    assert total == 2 and [j.id for j in running] == [ids[2], ids[1]]

    mlp_running, total = store.list_jobs(status="running", model="mlp", limit=1)
    assert total == 1 and [j.id for j in mlp_running] == [ids[2]]

    active, total = store.list_jobs(status=["queued", "running"])
    assert total == 6
    assert store.list_jobs(status="failed") == ([], 0)
    assert sorted(j.id for j in store.list_jobs(status="queued", limit=1000)[0]) == ids[3:]


def test_concurrent_claim_exactly_one_winner(store: Store) -> None:
    """Real threads, each with its own connection, race for the same queued jobs."""
    threads_per_job = 6
    for _ in range(3):
        job = store.create_job("mlp", "digits", HP)
        barrier = threading.Barrier(threads_per_job)
        winners: list[str] = []
        errors: list[BaseException] = []

        def race(worker: str, job_id: int = job.id, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait(timeout=30)
                if store.claim_job(job_id, worker) is not None:
                    winners.append(worker)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [
            threading.Thread(target=race, args=(f"w{i}",)) for i in range(threads_per_job)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert len(winners) == 1
        final = store.get_job(job.id)
        assert (final.status, final.attempts, final.worker) == ("running", 1, winners[0])


# ---- metrics -------------------------------------------------------------------------


def test_metrics_upsert_replaces_without_duplicates(store: Store) -> None:
    job = store.create_job("mlp", "digits", HP)
    store.add_metrics(job.id, [("train_loss", s, 0, 2.0 - s / 10, 1000.0 + s) for s in range(5)])
    # A resumed run writes steps 3..6 again: replaced, not duplicated.
    store.add_metrics(job.id, [("train_loss", s, 1, 9.0 + s, None) for s in range(3, 7)])
    # Within one batch the last point for a key wins.
    store.add_metrics(job.id, [("lr", 0, 0, 0.1), ("lr", 0, 0, 0.2), ("val_loss", 0, 0, math.nan)])

    series = store.get_metrics(job.id)
    assert [p["step"] for p in series["train_loss"]] == list(range(7))
    assert [p["value"] for p in series["train_loss"]] == [2.0, 1.9, 1.8, 12.0, 13.0, 14.0, 15.0]
    assert [p["epoch"] for p in series["train_loss"]] == [0, 0, 0, 1, 1, 1, 1]
    assert series["lr"] == [{"step": 0, "epoch": 0, "value": 0.2}]
    assert series["val_loss"] == [{"step": 0, "epoch": 0, "value": None}]  # NaN -> None
    with store.engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(Metric)).scalar_one()
    assert rows == 9

    assert store.get_metrics(job.id, names=["lr"]) == {"lr": series["lr"]}
    assert store.get_metrics(job.id, names=[]) == {}
    assert store.metric_names(job.id) == ["lr", "train_loss", "val_loss"]
    assert store.latest_metrics(job.id) == {"lr": 0.2, "train_loss": 15.0, "val_loss": None}
    store.add_metrics(job.id, [])  # nothing to do
    with pytest.raises(NotFound):
        store.add_metrics(424242, [("train_loss", 0, 0, 1.0, 0.0)])


def _expected_downsample(values: list[float], max_points: int) -> list[tuple[int, float]]:
    """Reference for get_metrics' bucketing: (last step, mean) per bucket of rows 0..n-2,
    then the exact final point. Steps are the row indices here."""
    n = len(values)
    buckets: dict[int, list[int]] = {}
    for row in range(n - 1):
        buckets.setdefault(row * (max_points - 1) // (n - 1), []).append(row)
    means = [(rows[-1], sum(values[r] for r in rows) / len(rows)) for rows in buckets.values()]
    return means + [(n - 1, values[-1])]


def test_downsampling_in_sql_shape_and_values(store: Store) -> None:
    n, max_points = 10_000, 500
    rng = random.Random(7)
    jobs = {}
    for offset in (0.0, 100.0):
        job = store.create_job("mlp", "digits", HP)
        values = [offset + 5.0 * math.exp(-s / 2000) + rng.random() for s in range(n)]
        store.add_metrics(
            job.id,
            [("train_loss", s, s // 1000, v, 0.0) for s, v in enumerate(values)]
            + [("val_accuracy", e, e, 0.5 + e / 100, 0.0) for e in range(10)],
        )
        jobs[job.id] = values

    for job_id, values in jobs.items():
        series = store.get_metrics(job_id, max_points=max_points)
        loss = series["train_loss"]
        assert len(loss) == max_points
        steps = [p["step"] for p in loss]
        assert steps == sorted(set(steps))  # strictly increasing
        assert loss[-1] == {"step": n - 1, "epoch": (n - 1) // 1000, "value": values[-1]}
        expected = _expected_downsample(values, max_points)
        assert steps == [step for step, _ in expected]
        for point, (step, mean) in zip(loss, expected, strict=True):
            assert point["value"] == pytest.approx(mean, rel=1e-9)
            assert point["epoch"] == step // 1000  # the epoch at the bucket's last step
        # The short series comes back whole and exact.
        assert [p["value"] for p in series["val_accuracy"]] == [0.5 + e / 100 for e in range(10)]

        assert len(store.get_metrics(job_id, ["train_loss"], max_points=n)["train_loss"]) == n
        only_final = store.get_metrics(job_id, ["train_loss"], max_points=1)["train_loss"]
        assert only_final == [{"step": n - 1, "epoch": 9, "value": values[-1]}]
        two = store.get_metrics(job_id, ["train_loss"], max_points=2)["train_loss"]
        assert two[0]["value"] == pytest.approx(sum(values[:-1]) / (n - 1))
        assert two[1]["value"] == values[-1]
    with pytest.raises(ValueError):
        store.get_metrics(next(iter(jobs)), max_points=0)


def test_metric_summaries_best_and_final(store: Store) -> None:
    a = store.create_job("mlp", "digits", HP).id
    b = store.create_job("mlp", "digits", {**HP, "lr": 0.01}).id
    empty = store.create_job("cnn", "digits", {}).id
    # Written out of step order: "final" is by step, not by insertion.
    store.add_metrics(a, [
        ("val_loss", 2, 2, 0.30, 0.0), ("val_loss", 0, 0, 0.90, 0.0), ("val_loss", 1, 1, 0.20, 0.0),
        ("val_accuracy", 0, 0, 0.80, 0.0), ("val_accuracy", 1, 1, 0.97, 0.0),
        ("val_accuracy", 2, 2, 0.95, 0.0),
        ("samples_per_s", 0, 0, 900.0, 0.0), ("samples_per_s", 1, 1, 1100.0, 0.0),
    ])
    store.add_metrics(b, [
        ("val_perplexity", 0, 0, 50.0, 0.0), ("val_perplexity", 1, 1, 30.0, 0.0),
        ("val_perplexity", 2, 2, 35.0, 0.0),
    ])
    summaries = store.metric_summaries([a, b, empty, a])
    assert set(summaries) == {a, b, empty}
    assert summaries[a]["val_loss"] == {"final": 0.30, "best": 0.20}
    assert summaries[a]["val_accuracy"] == {"final": 0.95, "best": 0.97}
    assert summaries[a]["samples_per_s"] == {"final": 1100.0, "best": 1100.0}
    assert summaries[b] == {"val_perplexity": {"final": 35.0, "best": 30.0}}
    assert summaries[empty] == {}
    assert store.metric_summaries([]) == {}


def test_texts(store: Store) -> None:
    job = store.create_job("rnn_lm", "pydocs", {})
    store.add_text(job.id, 1, 100, "sample", "the cat")
    store.add_text(job.id, 0, 50, "sample", "th ca")
    assert store.list_texts(job.id) == [
        {"epoch": 0, "step": 50, "name": "sample", "text": "th ca"},
        {"epoch": 1, "step": 100, "name": "sample", "text": "the cat"},
    ]
    with pytest.raises(NotFound):
        store.add_text(777, 0, 0, "sample", "x")


# ---- checkpoints and datasets ----------------------------------------------------------


def test_checkpoint_bytes_roundtrip(store: Store) -> None:
    job = store.create_job("cnn", "digits", HP)
    blobs = [os.urandom(300_000) + b"\x00" * 1000, bytes(range(256)) * 10]
    first = store.add_checkpoint(job.id, 1, 50, blobs[0], {"val_loss": 0.5, "bad": math.inf})
    second = store.add_checkpoint(job.id, 2, 100, blobs[1], {"val_loss": 0.3})
    assert first.sha256 == hashlib.sha256(blobs[0]).hexdigest() and first.size == len(blobs[0])
    assert first.metrics == {"val_loss": 0.5, "bad": None} and _aware(first.created_at)

    listed = store.list_checkpoints(job.id)
    assert [c.id for c in listed] == [first.id, second.id]
    assert listed[0] == first
    record, data = store.get_checkpoint_data(job.id, first.id)
    assert record == first and data == blobs[0]
    assert hashlib.sha256(data).hexdigest() == record.sha256
    assert store.latest_checkpoint(job.id) == (second, blobs[1])

    other = store.create_job("cnn", "digits", HP)
    assert store.get_checkpoint_data(other.id, first.id) is None  # not that job's checkpoint
    assert store.latest_checkpoint(other.id) is None and store.list_checkpoints(other.id) == []
    with pytest.raises(NotFound):
        store.add_checkpoint(999_999, 1, 1, b"x", {})


def test_pruning_keeps_the_newest_checkpoints_and_the_best_one(store: Store) -> None:
    job = store.create_job("cnn", "digits", HP)
    accuracy = [0.5, 0.9, 0.7, None, 0.6, 0.8]  # epoch 2 is the best; epoch 4 has no value
    for epoch, value in enumerate(accuracy, start=1):
        store.add_checkpoint(job.id, epoch, epoch * 10, b"x", {"val_accuracy": value},
                             keep_last=2, keep_best=("val_accuracy", "max"))
    assert [c.epoch for c in store.list_checkpoints(job.id)] == [2, 5, 6]
    # a loss is best at its minimum
    store.add_checkpoint(job.id, 7, 70, b"x", {"val_accuracy": 0.1, "val_loss": 0.2})
    assert store.prune_checkpoints(job.id, keep_last=1, keep_best=("val_loss", "min")) == 3
    assert [c.epoch for c in store.list_checkpoints(job.id)] == [7]


def test_datasets_are_versioned(store: Store) -> None:
    data = b"To be, or not to be.\n" * 100
    record = store.add_dataset("hamlet", "text", data, description="a soliloquy")
    assert (record.name, record.kind, record.size) == ("hamlet", "text", len(data))
    assert record.sha256 == hashlib.sha256(data).hexdigest() and _aware(record.created_at)
    assert (record.version, record.ref) == (1, "hamlet@1")
    # a second upload of the name is its next version; the first stays
    second = store.add_dataset("hamlet", "text", b"other")
    assert second.version == 2
    with pytest.raises(ValueError):
        store.add_dataset("sounds", "audio", b"x")
    store.add_dataset("a_images", "images", b"\x00\x01")
    assert [d.ref for d in store.list_datasets()] == ["a_images@1", "hamlet@1", "hamlet@2"]
    assert store.get_dataset("hamlet", version=1) == record
    assert store.get_dataset("hamlet") == second and store.get_dataset("nope") is None
    assert store.get_dataset_data("hamlet", version=1) == data
    assert store.get_dataset_data("hamlet") == b"other"
    assert store.get_dataset_data("nope") is None


def test_deleting_a_job_cascades(store: Store) -> None:
    job = store.create_job("mlp", "digits", HP)
    store.add_metrics(job.id, [("train_loss", 0, 0, 1.0, 0.0)])
    store.add_checkpoint(job.id, 0, 0, b"abc", {})
    store.add_text(job.id, 0, 0, "sample", "x")
    with store.engine.begin() as conn:
        conn.execute(Job.__table__.delete().where(Job.id == job.id))
    assert store.get_metrics(job.id) == {} and store.list_checkpoints(job.id) == []
    assert store.list_texts(job.id) == []


# ---- schema and sessions -----------------------------------------------------------------


def _assert_schema_matches_metadata(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "compare_type": True,
                "include_object": include_in_comparison(conn.dialect.name)})
            assert compare_metadata(context, Base.metadata) == []
            head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
            assert context.get_current_revision() == head
    finally:
        engine.dispose()


def _migrate_twice_keeps_data(url: str) -> None:
    store = Store(url)
    try:
        store.migrate()
        job = store.create_job("mlp", "digits", HP)
        before = sorted(inspect(store.engine).get_table_names())
        store.migrate()  # at head: a no-op
        assert sorted(inspect(store.engine).get_table_names()) == before
        assert store.get_job(job.id) == job
        with store.engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        assert len(versions) == 1
    finally:
        store.close()
    _assert_schema_matches_metadata(url)


def _migrate_concurrently(url: str, processes: int = 4) -> None:
    barrier = threading.Barrier(processes)
    errors: list[BaseException] = []

    def migrate() -> None:
        store = Store(url)  # its own engine, as a separate process would have
        try:
            barrier.wait(timeout=30)
            store.migrate()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=migrate) for _ in range(processes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    _assert_schema_matches_metadata(url)


def test_migration_matches_metadata_and_is_idempotent_sqlite(sqlite_url: str) -> None:
    _migrate_twice_keeps_data(sqlite_url)


@pytest.mark.postgres
def test_migration_matches_metadata_and_is_idempotent_postgres(fresh_postgres_url: str) -> None:
    _migrate_twice_keeps_data(fresh_postgres_url)


def test_concurrent_migrations_sqlite(sqlite_url: str) -> None:
    _migrate_concurrently(sqlite_url)


@pytest.mark.postgres
def test_concurrent_migrations_postgres(fresh_postgres_url: str) -> None:
    _migrate_concurrently(fresh_postgres_url)


def test_sqlite_engine_settings(tmp_path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
            }
        assert path.exists()
        assert pragma == {"journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1,
                          "synchronous": 1}  # 1 = NORMAL
    finally:
        engine.dispose()


def test_session_scope_commits_or_rolls_back(store: Store) -> None:
    sessions = make_session_factory(store.engine)
    now = dt.datetime.now(dt.UTC)
    fields = dict(model="mlp", dataset="digits", hyperparameters={}, device="cpu",
                  status="queued", created_at=now, updated_at=now)
    with pytest.raises(RuntimeError):
        with session_scope(sessions) as session:
            session.add(Job(name="rolled-back", **fields))
            session.flush()
            raise RuntimeError("boom")
    with session_scope(sessions) as session:
        session.add(Job(name="kept", **fields))
    assert [job.name for job in store.list_jobs()[0]] == ["kept"]
