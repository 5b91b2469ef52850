"""GET /workers and POST /workers/{name}/drain against real store rows, on SQLite and Postgres.

The rows are written the way workers write them: presence beats (`record_worker_seen`),
claims (`claim_next_job`), a clean stop. A worker not seen for a lease is `lost`; that is
set up by dating its last beat back, as a worker killed that long ago would have left it.
With real worker processes: tests/e2e/test_workers.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.main import create_app
from api.security import new_api_key
from core.settings import Settings
from db.store import Store
from db.tables import Worker, utcnow

CPU = ["cpu", "auto"]
LEASE_SECONDS = 30.0


def make_key(store: Store, owner: str, admin: bool = False) -> str:
    key, prefix, digest = new_api_key()
    store.add_api_key(owner, prefix, digest, is_admin=admin)
    return key


@pytest.fixture
def keys(store: Store) -> dict[str, dict[str, str]]:
    """Authorization headers of two users and an admin."""
    return {owner: {"Authorization": f"Bearer {make_key(store, owner, admin)}"}
            for owner, admin in (("alice", False), ("bob", False), ("root", True))}


@pytest.fixture
def api(store: Store, keys, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path / "home", broker_url=None, database_url=None,
                        data_dir=tmp_path / "data", require_keys=True, reconcile_in_api=False,
                        lease_seconds=LEASE_SECONDS)
    with TestClient(create_app(settings, store=store), raise_server_exceptions=False) as client:
        yield client


def beat(store: Store, name: str, starting: bool = True, **hardware) -> bool:
    return store.record_worker_seen(name, "box", 4242, CPU, starting=starting, **hardware)


def claim(store: Store, worker: str, owner: str) -> int:
    job = store.create_job("mlp", "digits", {"epochs": 1}, device="cpu", owner=owner)
    assert store.claim_next_job(worker, CPU).id == job.id
    return job.id


def last_seen(store: Store, name: str, seconds_ago: float) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(Worker).where(Worker.name == name).values(
            seen_at=utcnow() - dt.timedelta(seconds=seconds_ago)))


@pytest.fixture
def fleet(store: Store) -> dict[str, int]:
    """idle, busy with alice's job, busy with bob's job, lost, stopped; returns the job ids."""
    beat(store, "idle@box", gpu_name="NVIDIA H100", gpu_memory_bytes=80 * 2**30,
         torch_version="2.13.0")
    beat(store, "busy-alice@box")
    beat(store, "busy-bob@box")
    beat(store, "lost@box")
    beat(store, "stopped@box")
    jobs = {"alice": claim(store, "busy-alice@box", "alice"),
            "bob": claim(store, "busy-bob@box", "bob")}
    last_seen(store, "lost@box", LEASE_SECONDS + 5)
    store.record_worker_stopped("stopped@box")
    return jobs


def by_name(response) -> dict[str, dict]:
    assert response.status_code == 200, response.text
    return {w["name"]: w for w in response.json()["items"]}


def test_workers_show_their_state_and_only_the_jobs_the_caller_may_see(api, keys, fleet):
    workers = by_name(api.get("/workers", headers=keys["alice"]))
    assert list(workers) == ["busy-alice@box", "busy-bob@box", "idle@box", "lost@box"], \
        "a cleanly stopped worker is not listed"
    assert {n: w["state"] for n, w in workers.items()} == {
        "busy-alice@box": "busy", "busy-bob@box": "busy", "idle@box": "idle",
        "lost@box": "lost"}
    assert workers["busy-alice@box"]["job_id"] == fleet["alice"]
    assert workers["busy-bob@box"]["job_id"] is None, "bob's job is not alice's to see"
    assert workers["idle@box"]["job_id"] is None

    idle = workers["idle@box"]
    assert (idle["host"], idle["pid"], idle["queues"], idle["device_class"]) == (
        "box", 4242, CPU, "cpu")
    assert (idle["gpu_name"], idle["gpu_memory_bytes"], idle["torch_version"]) == (
        "NVIDIA H100", 80 * 2**30, "2.13.0")
    assert (idle["jobs_done"], idle["infra_failures"], idle["drain_requested_at"]) == (0, 0, None)
    assert idle["seen_seconds_ago"] < LEASE_SECONDS <= workers["lost@box"]["seen_seconds_ago"]
    assert idle["started_at"] <= idle["seen_at"]

    # An admin sees every job; bob sees his own and not alice's.
    admin = by_name(api.get("/workers", headers=keys["root"]))
    assert (admin["busy-alice@box"]["job_id"], admin["busy-bob@box"]["job_id"]) == (
        fleet["alice"], fleet["bob"])
    bob = by_name(api.get("/workers", headers=keys["bob"]))
    assert (bob["busy-alice@box"]["job_id"], bob["busy-bob@box"]["job_id"]) == (
        None, fleet["bob"])


def test_a_worker_counts_its_jobs_and_its_lost_ones(api, keys, store, fleet):
    store.finish_job(fleet["alice"], "succeeded")
    store.requeue_job(fleet["bob"], outcome="worker_lost")  # the reconciler took it back
    workers = by_name(api.get("/workers", headers=keys["root"]))
    alice_worker, bob_worker = workers["busy-alice@box"], workers["busy-bob@box"]
    assert (alice_worker["state"], alice_worker["job_id"], alice_worker["jobs_done"],
            alice_worker["infra_failures"]) == ("idle", None, 1, 0)
    assert (bob_worker["state"], bob_worker["jobs_done"], bob_worker["infra_failures"]) == (
        "idle", 1, 1)


def test_an_admin_drains_a_worker_until_its_process_restarts(api, keys, store, fleet):
    assert beat(store, "busy-alice@box", starting=False) is False
    response = api.post("/workers/busy-alice@box/drain", headers=keys["root"])
    assert response.status_code == 200, response.text
    drained = response.json()
    assert (drained["name"], drained["state"], drained["job_id"]) == (
        "busy-alice@box", "draining", fleet["alice"])
    first_request = drained["drain_requested_at"]
    assert first_request is not None
    # Its next presence beat tells the process; asking again is no error.
    assert beat(store, "busy-alice@box", starting=False) is True
    again = api.post("/workers/busy-alice@box/drain", headers=keys["root"])
    assert again.status_code == 200
    assert again.json()["drain_requested_at"] == first_request
    # The job it gives back ends its attempt: the worker stays draining, now without a job.
    store.requeue_job(fleet["alice"], outcome="drained")
    workers = by_name(api.get("/workers", headers=keys["alice"]))
    assert (workers["busy-alice@box"]["state"], workers["busy-alice@box"]["job_id"]) == (
        "draining", None)
    # A draining worker serves no queue: /healthz counts idle@box and busy-bob@box only.
    assert store.queue_health(LEASE_SECONDS)["cpu"]["workers"] == 2
    # Only a new process under its name (the first beat) ends the drain.
    assert beat(store, "busy-alice@box", starting=True) is False
    restarted = by_name(api.get("/workers", headers=keys["root"]))["busy-alice@box"]
    assert (restarted["state"], restarted["drain_requested_at"]) == ("idle", None)


def test_only_an_admin_may_drain_and_only_a_known_running_worker(api, keys, store, fleet):
    for user in ("alice", "bob"):
        refused = api.post("/workers/busy-alice@box/drain", headers=keys[user])
        assert refused.status_code == 403
        assert refused.json()["detail"] == "only an admin may drain a worker"
    assert by_name(api.get("/workers", headers=keys["root"]))["busy-alice@box"]["state"] == "busy"
    for name in ("nobody@box", "stopped@box", "x" * 300, "a%00b", "%ED%A0%80", "%FF"):
        missing = api.post(f"/workers/{name}/drain", headers=keys["root"])
        assert missing.status_code == 404, (name, missing.text)
        assert "not found" in missing.json()["detail"]
    assert api.get("/workers").status_code == 401, "listing workers needs a key too"


def test_workers_not_seen_for_long_are_forgotten(store):
    beat(store, "old@box")
    beat(store, "recent@box")
    last_seen(store, "old@box", 3 * 3600)
    assert store.prune_workers(3600) == 1  # the presence beat's TRAINYARD_FORGET_WORKERS_SECONDS
    assert [w.name for w in store.list_workers(LEASE_SECONDS)] == ["recent@box"]
