"""Preemption with real processes: uvicorn, one Celery worker, Postgres, Redis.

A long job of low priority runs on the only worker; an urgent one is submitted. The reconcilers
(the API's and the worker's, every 0.5 s here) ask the long one to give the worker back; it stops
at a step with a checkpoint there, the urgent job runs and finishes first, and the long one then
resumes and ends with exactly an undisturbed run's metrics.
"""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest
from sqlalchemy import text

from db.store import Store
from tests.e2e.services import serving
from trainyard.local_service import LocalService

pytestmark = pytest.mark.e2e

FAST = {
    "TRAINYARD_LEASE_SECONDS": "3",
    "TRAINYARD_HEARTBEAT_SECONDS": "0.5",
    "TRAINYARD_RECONCILE_SECONDS": "0.5",
    "TRAINYARD_METRICS_FLUSH_SECONDS": "0.1",
    "TRAINYARD_CANCEL_CHECK_SECONDS": "0.2",
    "TRAINYARD_TORCH_THREADS": "1",
    "TRAINYARD_PREEMPTION_MIN_RUN_SECONDS": "1",
}
# ~8 ms a step on one core: 45 steps (an epoch) of digits.
SLOW_MLP = {"epochs": 8, "hidden_sizes": [1024, 1024], "batch_size": 32, "seed": 7}
STEPS_PER_EPOCH = 45


@pytest.fixture
def service(tmp_path, fresh_postgres_url, redis_url, request):
    service = LocalService.distributed(tmp_path, fresh_postgres_url, redis_url, "only@%h",
                                       env=FAST)
    store = Store(fresh_postgres_url)
    try:
        with serving(service, request):
            yield service, store
    finally:
        store.close()


def submit(http: httpx.Client, hp: dict, priority: int = 0) -> dict:
    response = http.post("/jobs", json={"model": "mlp", "dataset": "digits",
                                        "hyperparameters": hp, "priority": priority})
    assert response.status_code == 201, response.text
    return response.json()


def trained_steps(store: Store, job_id: int) -> int:
    with store.engine.connect() as conn:
        return conn.execute(text("SELECT coalesce(max(step), 0) FROM metrics WHERE job_id = :id"
                                 " AND name = 'train_loss'"), {"id": job_id}).scalar()


def at(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)


def series(store: Store, job_id: int) -> dict:
    return {name: [(p["step"], p["epoch"], p["value"]) for p in points]
            for name, points in store.get_metrics(job_id).items()
            if not name.endswith("_per_s")}


def test_an_urgent_job_preempts_a_long_one_which_resumes_exactly(service):
    service, store = service
    reference = submit(service.http, SLOW_MLP)
    assert service.wait_status(reference["id"], {"succeeded", "failed"})["status"] == "succeeded"

    long = submit(service.http, SLOW_MLP)
    deadline = time.monotonic() + 120
    while trained_steps(store, long["id"]) <= STEPS_PER_EPOCH + 5:  # into its second epoch
        assert time.monotonic() < deadline, service.logs()
        time.sleep(0.05)
    urgent = submit(service.http, {**SLOW_MLP, "epochs": 2}, priority=5)

    urgent_done = service.wait_status(urgent["id"], {"succeeded", "failed"})
    long_done = service.wait_status(long["id"], {"succeeded", "failed"})
    assert (urgent_done["status"], long_done["status"]) == ("succeeded", "succeeded")
    assert at(urgent_done["finished_at"]) < at(long_done["finished_at"]), "urgent went first"
    history = long_done["attempt_history"]
    assert [a["outcome"] for a in history] == ["preempted", "succeeded"]
    assert long_done["infra_failures"] == 0
    assert history[1]["resumed_from_epoch"] >= 1
    (urgent_attempt,) = urgent_done["attempt_history"]
    assert at(history[0]["ended_at"]) <= at(urgent_attempt["started_at"])
    assert at(urgent_attempt["ended_at"]) <= at(history[1]["started_at"])

    got = series(store, long["id"])
    assert [s for s, _, _ in got["train_loss"]] == list(
        range(1, SLOW_MLP["epochs"] * STEPS_PER_EPOCH + 1))
    assert got == series(store, reference["id"]), "identical to the undisturbed run"
