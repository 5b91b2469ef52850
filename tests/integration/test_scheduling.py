"""The queue's order, decided by the database (db/store/scheduling.py), on SQLite and Postgres:
priorities, fair share between owners, PATCH, concurrent claimers, and the API's checks.
With real worker processes and Redis: tests/e2e/test_scheduling_with_workers.py."""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.security import new_api_key
from core.settings import Settings
from db.store import Store

CPU = ["cpu", "auto"]


def queue(store: Store, owner: str = "local", priority: int = 0, device: str = "cpu") -> int:
    return store.create_job("mlp", "digits", {"epochs": 1}, device=device, owner=owner,
                            priority=priority).id


def inversions(order: list[int], rank: dict[int, tuple]) -> int:
    """Pairs started in the wrong order by `rank` (0 when `order` is sorted by it)."""
    return sum(rank[a] > rank[b] for i, a in enumerate(order) for b in order[i + 1:])


def test_one_worker_starts_jobs_by_priority_then_age(store):
    rng = random.Random(11)
    jobs = {}
    for i in range(40):
        priority = rng.choice([-100, -5, 0, 0, 0, 3, 10, 100])
        jobs[queue(store, owner=f"user{i % 3}", priority=priority)] = priority
    started = []
    while (job := store.claim_next_job("w1", CPU)) is not None:
        started.append(job.id)
        store.finish_job(job.id, "succeeded")
    rank = {job_id: (-priority, job_id) for job_id, priority in jobs.items()}
    assert sorted(started) == sorted(jobs), "every job ran, once"
    assert inversions(started, rank) == 0
    assert started == sorted(jobs, key=rank.__getitem__)


def test_fair_share_gives_the_owner_with_fewer_running_jobs_the_next_worker(store):
    alice = [queue(store, "alice") for _ in range(6)]  # alice fills the queue first
    bob = [queue(store, "bob") for _ in range(2)]
    # Three workers: alice's oldest, then bob (0 running) before alice (1), then alice.
    first = [store.claim_next_job(f"w{i}", CPU).id for i in range(3)]
    assert first == [alice[0], bob[0], alice[1]]
    # A fourth worker: alice runs 2, bob 1, so bob's next job goes before alice's older ones.
    assert store.claim_next_job("w3", CPU).id == bob[1]
    # bob has nothing left queued: alice's jobs, oldest first.
    store.finish_job(bob[0], "succeeded")
    assert store.claim_next_job("w1", CPU).id == alice[2]
    # Priority comes before fair share: alice's urgent job goes before anyone's.
    urgent = queue(store, "alice", priority=5)
    store.finish_job(alice[1], "succeeded")
    assert store.claim_next_job("w2", CPU).id == urgent


def test_fair_share_counts_running_jobs_per_device_class(store):
    # alice runs two jobs on GPU workers; on CPU workers she is still the one with none.
    for name in ("g1", "g2"):
        store.claim_job(queue(store, "alice", device="cuda"), name, device_class="cuda")
    bob_running = queue(store, "bob")
    store.claim_job(bob_running, "c1", device_class="cpu")
    bob_next, alice_next = queue(store, "bob"), queue(store, "alice")
    assert store.claim_next_job("c2", CPU, device_class="cpu").id == alice_next
    assert store.claim_next_job("c3", CPU, device_class="cpu").id == bob_next


def test_a_worker_claims_only_jobs_of_the_devices_it_serves(store):
    gpu_job = queue(store, device="cuda", priority=50)
    cpu_job = queue(store, device="cpu")
    auto_job = queue(store, device="auto", priority=1)
    assert store.claim_next_job("cpu-worker", CPU).id == auto_job
    assert store.claim_next_job("cpu-worker-2", CPU).id == cpu_job
    assert store.claim_next_job("cpu-worker-3", CPU) is None, "the cuda job waits for a GPU"
    gpu = store.claim_next_job("gpu-worker", ["cpu", "cuda", "auto"], device_class="cuda")
    assert gpu.id == gpu_job and gpu.device_class == "cuda"


def test_the_owner_limit_passes_over_owners_at_their_limit(store):
    a1, a2 = queue(store, "alice", priority=9), queue(store, "alice", priority=9)
    b1 = queue(store, "bob")
    assert store.claim_next_job("w1", CPU, max_running_per_owner=1).id == a1
    assert store.claim_next_job("w2", CPU, max_running_per_owner=1).id == b1
    assert store.claim_next_job("w3", CPU, max_running_per_owner=1) is None
    store.finish_job(a1, "failed", error="x")
    assert store.claim_next_job("w3", CPU, max_running_per_owner=1).id == a2


def test_a_claim_marks_the_worker_busy_and_the_end_of_its_attempt_idle(store):
    store.record_worker_seen("w1", "host", 1, CPU, starting=True)
    job = queue(store)
    assert store.idle_workers_by_queue(60) == {"cpu": 1, "auto": 1}
    store.claim_next_job("w1", CPU)
    assert store.idle_workers_by_queue(60) == {}
    store.requeue_job(job, outcome="worker_lost")
    assert store.idle_workers_by_queue(60) == {"cpu": 1, "auto": 1}


def _claim_until_empty(url: str, worker: str, results) -> None:
    store = Store(url)
    try:
        while (job := store.claim_next_job(worker, CPU)) is not None:
            results.put((worker, job.id, job.attempts))
            store.finish_job(job.id, "succeeded", attempt=job.attempts)
    finally:
        store.close()


def test_four_worker_processes_claiming_200_jobs_run_each_exactly_once(store):
    ids = [queue(store, owner=f"user{i % 5}", priority=i % 3) for i in range(200)]
    url = store.engine.url.render_as_string(hide_password=False)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    workers = [ctx.Process(target=_claim_until_empty, args=(url, f"w{i}", results))
               for i in range(4)]
    for process in workers:
        process.start()
    claims = [results.get(timeout=120) for _ in ids]
    for process in workers:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert results.empty()
    counts = Counter(job_id for _, job_id, _ in claims)
    assert sorted(counts) == ids and set(counts.values()) == {1}, "each job claimed once"
    assert {attempt for _, _, attempt in claims} == {1}
    assert all(store.get_job(i).status == "succeeded" for i in ids)
    assert len(store.list_attempts(ids[0])) == 1


# ---- the API: priority on submission, PATCH, and their checks ----

def _key(store: Store, owner: str, admin: bool = False) -> dict[str, str]:
    key, prefix, digest = new_api_key()
    store.add_api_key(owner, prefix, digest, is_admin=admin)
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def secured(store: Store, tmp_path: Path):
    settings = Settings(home=tmp_path / "home", broker_url=None, database_url=None,
                        data_dir=tmp_path / "data", require_keys=True, reconcile_in_api=False)
    keys = {"alice": _key(store, "alice"), "bob": _key(store, "bob"),
            "root": _key(store, "root", admin=True)}
    with TestClient(create_app(settings, store=store), raise_server_exceptions=False) as client:
        yield client, keys


def _submit(client, headers, **body):
    return client.post("/jobs", headers=headers, json={
        "model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": 1}, **body})


def test_priority_is_checked_and_capped_for_users_who_are_not_admins(secured):
    client, keys = secured
    assert _submit(client, keys["alice"])
    for bad in (1000, -101, 101, "high", 2.5):
        response = _submit(client, keys["root"], priority=bad)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "priority"]
    over_cap = _submit(client, keys["alice"], priority=11)
    assert over_cap.status_code == 422
    detail = over_cap.json()["detail"][0]
    assert detail["loc"] == ["body", "priority"] and "at most 10" in detail["msg"]
    assert _submit(client, keys["alice"], priority=10).json()["priority"] == 10
    assert _submit(client, keys["alice"], priority=-100).json()["priority"] == -100
    assert _submit(client, keys["root"], priority=100).json()["priority"] == 100
    default = _submit(client, keys["bob"]).json()
    assert default["priority"] == 0
    listed = client.get("/jobs", headers=keys["root"]).json()["items"]
    assert {job["priority"] for job in listed} == {0, 10, -100, 100}


def test_patch_reorders_a_queued_job_for_its_owner_or_an_admin(secured, store):
    client, keys = secured
    first, second, third = (_submit(client, keys["alice"]).json()["id"] for _ in range(3))
    moved = client.patch(f"/jobs/{third}", json={"priority": 5}, headers=keys["alice"])
    assert moved.status_code == 200 and moved.json()["priority"] == 5
    # Someone else's job is not found; an admin may move it past the users' cap.
    assert client.patch(f"/jobs/{second}", json={"priority": 5},
                        headers=keys["bob"]).status_code == 404
    assert client.patch(f"/jobs/{second}", json={"priority": 50},
                        headers=keys["root"]).json()["priority"] == 50
    order = []
    while (job := store.claim_next_job("w", CPU)) is not None:
        order.append(job.id)
        store.finish_job(job.id, "succeeded")
    assert order == [second, third, first]

    finished = client.patch(f"/jobs/{first}", json={"priority": 1}, headers=keys["alice"])
    assert finished.status_code == 409 and "succeeded" in finished.json()["detail"]
    for body in ({"priority": 1000}, {}, {"priority": 1, "name": "x"}):
        response = client.patch(f"/jobs/{first}", json=body, headers=keys["alice"])
        assert response.status_code == 422, body
    assert client.patch(f"/jobs/{first}", json={"priority": 11},
                        headers=keys["alice"]).status_code == 422
    assert client.patch("/jobs/999999", json={"priority": 1},
                        headers=keys["root"]).status_code == 404


def test_concurrent_claims_never_run_more_than_the_owner_limit(store):
    """Six workers claim at the same moment from one owner's queue with a limit of two: two of
    the owner's jobs run, never more (PostgreSQL claims run concurrently; the owners they
    count take turns)."""
    for _ in range(6):
        queue(store, "alice")
    start, claimed, errors = threading.Barrier(6), [], []

    def claim(name: str) -> None:
        try:
            start.wait(10)
            job = store.claim_next_job(name, CPU, max_running_per_owner=2)
            if job is not None:
                claimed.append(job.id)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(claimed) == 2, claimed
