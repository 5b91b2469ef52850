"""The job page's reads: GET /jobs/{id} answers from one database session (Store.reading), and
GET /jobs/{id}/metrics finds a settled run's curves where GET /compare/series finds them (the
API's LRU, then the stored summaries), a live run's always freshly downsampled."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text, update
from sqlalchemy.exc import OperationalError

from api.main import create_app
from core.settings import Settings
from db.store.base import _READING, WriteWhileReading
from db.tables import Job, utcnow


def _settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", broker_url=None, database_url=None,
                    data_dir=tmp_path / "data", reconcile_in_api=False, lease_seconds=5)


def _run(store, steps: int, finish: bool, settled: bool = False) -> int:
    job = store.create_job("mlp", "digits", {"epochs": 2})
    store.claim_job(job.id, "w")
    store.add_metrics(job.id, [(name, s, 1 + s * 2 // (steps + 1), 1.0 / s + k, 0.0)
                               for s in range(1, steps + 1)
                               for k, name in enumerate(("train_loss", "lr"))])
    if finish:
        store.finish_job(job.id, "succeeded")
    if settled:  # finished over a lease ago
        with store.engine.begin() as conn:
            conn.execute(update(Job).where(Job.id == job.id)
                         .values(finished_at=utcnow() - dt.timedelta(hours=1)))
    return job.id


def _forget_points(store, job_id: int) -> None:
    """Delete the run's points behind the API's back: what it answers next is not read."""
    with store.engine.begin() as conn:
        for table in ("metrics", "metric_rollups", "metric_rollups_coarse"):
            conn.execute(text(f"DELETE FROM {table} WHERE job_id = :j"), {"j": job_id})


@pytest.fixture
def checkouts(store):
    """How many connections the store's pool has handed out so far."""
    count = [0]

    def on_checkout(*_args):
        count[0] += 1

    event.listen(store.engine, "checkout", on_checkout)
    yield count
    event.remove(store.engine, "checkout", on_checkout)


def test_reads_inside_reading_share_one_session(store, checkouts):
    job_id = _run(store, 20, finish=False)
    before = checkouts[0]
    with store.reading():
        job = store.get_job(job_id)
        latest = store.latest_metrics(job_id)
        with store.reading():  # nested: still the same session
            attempts = store.list_attempts(job_id)
    assert checkouts[0] - before == 1
    assert job.status == "running" and latest == {"lr": 1.05, "train_loss": 0.05}
    assert [a["number"] for a in attempts] == [1]
    # Outside a block every call has its own session, as before.
    before = checkouts[0]
    store.get_job(job_id), store.latest_metrics(job_id)
    assert checkouts[0] - before == 2


def test_reading_refuses_writes_and_writes_nothing(store):
    job_id = _run(store, 5, finish=False)
    with pytest.raises(WriteWhileReading), store.reading():
        store.get_job(job_id)
        store.finish_job(job_id, "succeeded")
    assert store.get_job(job_id).status == "running"
    with pytest.raises(WriteWhileReading), store.reading():
        store.add_metrics(job_id, [("lr", 99, 1, 0.5, 0.0)])
    assert 99 not in [p["step"] for p in store.series_points(job_id, ["lr"], 1000)["lr"]]
    for step in range(100, 112):  # outside the block, writes work as ever, on every pooled
        store.add_metrics(job_id, [("lr", step, 1, 0.5, 0.0)])  # connection
    store.finish_job(job_id, "succeeded")
    assert store.get_job(job_id).status == "succeeded"


def _postgres_only(store):
    if store.dialect != "postgresql":
        pytest.skip("autocommit reads are a Postgres matter (SQLite reads cost no round trips)")


def test_reading_opens_no_transaction_on_postgres(store):
    """No BEGIN and COMMIT around the block's reads: between them the connection is idle, not
    in a transaction; once back in the pool it is transactional again."""
    _postgres_only(store)
    job_id = _run(store, 5, finish=False)
    with store.reading():
        store.get_job(job_id)
        raw = _READING.get()[1].connection().connection.dbapi_connection
        assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        store.latest_metrics(job_id)
        assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert raw.autocommit is False
    with store.engine.connect() as conn:  # and a write transaction is still atomic
        conn.execute(update(Job).where(Job.id == job_id).values(status="failed"))
        conn.rollback()
    assert store.get_job(job_id).status == "running"


def test_a_connection_that_breaks_inside_reading_is_not_pooled(store):
    _postgres_only(store)
    job_id = _run(store, 5, finish=False)
    with pytest.raises(OperationalError), store.reading():
        pid = _READING.get()[1].execute(text("SELECT pg_backend_pid()")).scalar()
        with store.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        store.get_job(job_id)
    for _ in range(12):  # more than the pool holds: every connection it hands out works
        with store.reading():
            assert store.get_job(job_id).status == "running"
    with store.engine.connect() as conn:
        assert conn.connection.dbapi_connection.autocommit is False
    for step in range(100, 112):  # and takes writes (no connection kept the read-only mark)
        store.add_metrics(job_id, [("lr", step, 1, 0.5, 0.0)])
    assert len(store.series_points(job_id, ["lr"], 1000)["lr"]) == 5 + 12


def test_get_job_answers_from_one_checkout(store, checkouts, tmp_path):
    job_id = _run(store, 20, finish=False)
    with TestClient(create_app(_settings(tmp_path), store=store),
                    base_url="http://127.0.0.1:8000") as client:
        client.get(f"/jobs/{job_id}")  # the app's own first reads
        before = checkouts[0]
        answer = client.get(f"/jobs/{job_id}")
        assert checkouts[0] - before == 1
        assert answer.status_code == 200
        body = answer.json()
        assert body["latest_metrics"] == {"lr": 1.05, "train_loss": 0.05}
        assert [a["number"] for a in body["attempt_history"]] == [1]
        assert client.get("/jobs/999999").status_code == 404


def test_job_metrics_of_a_settled_run_are_computed_once(store, tmp_path):
    settled = _run(store, 400, finish=True, settled=True)
    live = _run(store, 400, finish=False)
    app = create_app(_settings(tmp_path), store=store)
    params = {"max_points": 30}
    both = {**params, "names": "train_loss,lr"}
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        first = {i: client.get(f"/jobs/{i}/metrics", params=params).json() for i in (settled, live)}
        for job_id in (settled, live):
            # The answer is the store's own downsampling, name by name, in name order.
            assert first[job_id] == {"series": store.series_points(job_id, None, 30)}
            assert list(first[job_id]["series"]) == ["lr", "train_loss"]
            assert len(first[job_id]["series"]["lr"]) == 30
        cache = app.state.series_cache
        hits = cache.hits
        assert client.get(f"/jobs/{settled}/metrics", params=params).json() == first[settled]
        assert cache.hits == hits + 1
        _forget_points(store, settled)
        _forget_points(store, live)
        again = {i: client.get(f"/jobs/{i}/metrics", params=both).json() for i in (settled, live)}
        assert again[settled] == first[settled], "a settled run's curves come from the LRU"
        assert again[live] == {"series": {}}, "a live run's are read every time"
    # Another API process: its LRU is empty, the summaries the first read stored remain.
    with TestClient(create_app(_settings(tmp_path), store=store),
                    base_url="http://127.0.0.1:8000") as client:
        fresh = client.get(f"/jobs/{settled}/metrics", params=both).json()
        assert fresh == first[settled]
        only_lr = client.get(f"/jobs/{settled}/metrics", params={**params, "names": "lr"})
        assert only_lr.json() == {"series": {"lr": first[settled]["series"]["lr"]}}
        other_size = client.get(f"/jobs/{settled}/metrics", params={**both, "max_points": 31})
        assert other_size.json() == {"series": {}}, "another max_points is computed"
