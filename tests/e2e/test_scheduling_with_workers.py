"""The queue's order and the broker's size with real processes: `trainyard api`, `trainyard
worker`, Postgres and Redis. The order's rules, case by case: tests/integration/test_scheduling.py.
"""

from __future__ import annotations

import random
import time

import pytest
import redis

from db.store import Store
from tests.e2e.services import failed
from trainyard.local_service import LocalService, free_port

pytestmark = pytest.mark.e2e

TINY_MLP = {"epochs": 1, "steps_per_epoch": 2, "hidden_sizes": [8, 8], "seed": 1}
FAST = {
    "TRAINYARD_HEARTBEAT_SECONDS": "0.5",
    "TRAINYARD_LEASE_SECONDS": "5",
    "TRAINYARD_RECONCILE_SECONDS": "0.25",
    "TRAINYARD_CANCEL_CHECK_SECONDS": "0.2",
    "TRAINYARD_TORCH_THREADS": "1",
}


@pytest.fixture
def service(tmp_path, fresh_postgres_url, redis_url, request):
    def make(**env) -> LocalService:
        made = LocalService(tmp_path, {"TRAINYARD_DATABASE_URL": fresh_postgres_url,
                                       "TRAINYARD_BROKER_URL": redis_url, **FAST, **env},
                            free_port())
        made.start("api", "api", "--port", str(made.port))
        made.wait_healthy()
        services.append(made)
        return made

    services: list[LocalService] = []
    yield make
    for made in services:
        if failed(request):
            print(made.logs())
        made.stop()


def submit(service: LocalService, priority: int = 0, **hp) -> int:
    response = service.http.post("/jobs", json={
        "model": "mlp", "dataset": "digits", "hyperparameters": {**TINY_MLP, **hp},
        "device": "cpu", "priority": priority})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def broker_messages(redis_url: str) -> int:
    """Messages the Redis broker holds: waiting in a queue's lists, or delivered and not yet
    acknowledged (kombu's `unacked` hash)."""
    client = redis.Redis.from_url(redis_url)
    try:
        waiting = sum(client.llen(key) for key in client.scan_iter()
                      if client.type(key) == b"list")
        return waiting + client.hlen("unacked")
    finally:
        client.close()


def test_one_worker_starts_a_backlog_in_priority_order(service):
    api = service()
    rng = random.Random(7)
    priorities = {}
    for _ in range(14):  # queued before any worker exists, in a scrambled order of priorities
        priority = rng.choice([-20, 0, 0, 5, 10])
        priorities[submit(api, priority)] = priority
    # A queued job moved up by PATCH goes where its new priority puts it.
    moved = min(j for j, p in priorities.items() if p == -20)
    assert api.http.patch(f"/jobs/{moved}", json={"priority": 50}).status_code == 200
    priorities[moved] = 50

    api.start("worker", "worker", "--name", "order-worker@%h")
    jobs = [api.wait_status(job_id, {"succeeded", "failed"}, timeout=180)
            for job_id in priorities]
    assert {job["status"] for job in jobs} == {"succeeded"}
    assert {job["attempts"] for job in jobs} == {1}, "each ran once"
    started = [job["id"] for job in sorted(jobs, key=lambda j: j["started_at"])]
    expected = sorted(priorities, key=lambda job_id: (-priorities[job_id], job_id))
    assert started == expected, "highest priority first, then the oldest: no inversion"


def test_a_backlog_behind_a_busy_worker_does_not_grow_the_broker(service, redis_url):
    # A wake-up lost while every worker is busy would, before, be re-sent once per grace
    # period for every waiting job; now nothing is sent while no worker is idle.
    api = service(TRAINYARD_ENQUEUE_GRACE_SECONDS="0.5")
    api.start("worker", "worker", "--name", "busy-worker@%h")
    long_job = submit(api, priority=10, epochs=500, steps_per_epoch=40)
    store = Store(api.env["TRAINYARD_DATABASE_URL"])
    try:
        deadline = time.monotonic() + 60
        while store.get_status(long_job) != "running":
            assert time.monotonic() < deadline, api.logs()
            time.sleep(0.1)
        backlog = [submit(api) for _ in range(20)]
        time.sleep(1.0)  # past the grace period: every waiting job is "overdue"
        at_start = broker_messages(redis_url)
        assert at_start <= len(backlog) + 1, "one wake-up per job submitted, no more"
        time.sleep(10 * 0.5 + 1.0)  # ten re-send periods
        assert broker_messages(redis_url) <= at_start
        assert all(store.get_status(j) == "queued" for j in backlog)
        assert store.get_status(long_job) == "running"

        # Freed, the worker takes the backlog from the database: every job runs, once.
        assert api.http.post(f"/jobs/{long_job}/cancel").status_code == 200
        jobs = [api.wait_status(j, {"succeeded", "failed"}, timeout=180) for j in backlog]
        assert {(job["status"], job["attempts"]) for job in jobs} == {("succeeded", 1)}
    finally:
        store.close()
    deadline = time.monotonic() + 30  # the leftover wake-ups are consumed and claim nothing
    while broker_messages(redis_url) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert broker_messages(redis_url) == 0


def test_four_workers_run_200_queued_jobs_each_exactly_once(service):
    api = service(TRAINYARD_MAX_QUEUED_JOBS_PER_USER="1000")
    jobs = [submit(api, priority=i % 5, epochs=1, steps_per_epoch=1) for i in range(200)]
    for i in range(4):  # started after the backlog exists: all four claim from it at once
        api.start(f"w{i}", "worker", "--name", f"claimer-{i}@%h")
    store = Store(api.env["TRAINYARD_DATABASE_URL"])
    try:
        deadline = time.monotonic() + 600
        while store.list_jobs(status=["queued", "running"], limit=1)[1]:
            assert time.monotonic() < deadline, api.logs()
            time.sleep(0.5)
        finished = [store.get_job(j) for j in jobs]
        attempts = {j: store.list_attempts(j) for j in jobs}
    finally:
        store.close()
    assert {(job.status, job.attempts) for job in finished} == {("succeeded", 1)}
    assert all(len(history) == 1 for history in attempts.values()), "no job claimed twice"
    workers = {history[0]["worker"] for history in attempts.values()}
    assert len(workers) >= 2, f"the four workers shared the backlog: {workers}"
