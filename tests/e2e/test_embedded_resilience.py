"""`trainyard up` under bursts and kills, with real processes.

A burst of concurrent submits once killed the only embedded worker (a message file read before
it was written); `up` did not notice, every job stayed queued and /healthz said ok. Here: 20
rounds of 40 concurrent submits each run exactly once, with a malformed file in the queue too;
and a worker killed with SIGKILL mid-job is started again by `up`, its job is requeued when its
lease runs out and resumes, and the queue drains.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.services import serving
from trainyard.local_service import LocalService

pytestmark = pytest.mark.e2e

TINY = {"model": "mlp", "dataset": "digits",
        "hyperparameters": {"epochs": 1, "steps_per_epoch": 1, "hidden_sizes": [8, 8]}}


def worker_pids(parent: int) -> list[int]:
    """Live `trainyard worker` processes started by `parent` (the `up` process)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z" and b"worker" in cmdline:
            pids.append(int(entry.name))
    return pids


def all_jobs(service: LocalService) -> list[dict]:
    jobs, before = [], None
    while True:
        params = {"limit": 200, **({"before": before} if before else {})}
        page = service.http.get("/jobs", params=params).json()["items"]
        if not page:
            return jobs
        jobs += page
        before = page[-1]["id"]


def wait_drained(service: LocalService, expected: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = all_jobs(service)
        if len(jobs) == expected and all(j["status"] not in ("queued", "running") for j in jobs):
            return jobs
        time.sleep(1)
    waiting = [j["id"] for j in all_jobs(service) if j["status"] in ("queued", "running")]
    raise TimeoutError(f"{len(waiting)} jobs still waiting after {timeout} s:\n{service.logs()}")


@pytest.fixture
def up(tmp_path, request):
    env = {"TRAINYARD_MAX_QUEUED_JOBS_PER_USER": "1000", "TRAINYARD_HEARTBEAT_SECONDS": "0.5",
           "TRAINYARD_LEASE_SECONDS": "3", "TRAINYARD_RECONCILE_SECONDS": "1"}
    with serving(LocalService.embedded(tmp_path, env), request) as service:
        yield service


@pytest.mark.timeout(1500)  # 800 jobs through one worker: ~2-3 min on 2 idle cores
def test_bursts_of_concurrent_submits_each_run_once(up):
    # A malformed message file already in the queue must not stop the consumer either.
    (up.home / "broker" / "queue" / "0_garbage.auto.msg").write_bytes(b"")
    first_workers = worker_pids(up.processes["up"].pid)
    assert len(first_workers) == 1

    def submit(client: httpx.Client) -> int:
        response = client.post("/jobs", json=TINY)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    ids: list[int] = []
    with httpx.Client(base_url=up.url, timeout=60,
                      limits=httpx.Limits(max_connections=40)) as client, \
            ThreadPoolExecutor(40) as pool:
        for _ in range(20):
            ids += pool.map(lambda _n: submit(client), range(40))
    assert len(set(ids)) == 800

    jobs = wait_drained(up, 800, timeout=900)
    assert sorted(j["id"] for j in jobs) == sorted(ids)
    failed = [(j["id"], j["status"], j.get("error")) for j in jobs if j["status"] != "succeeded"]
    assert not failed
    assert all(j["attempts"] == 1 for j in jobs), "every job ran exactly once"
    # The first worker served the whole burst: it never died.
    assert worker_pids(up.processes["up"].pid) == first_workers
    log = (up.home / "up.log").read_text()
    assert "exited with code" not in log
    assert "dropped a malformed message" in log
    health = up.http.get("/healthz").json()
    assert health["status"] == "ok", health


def test_a_killed_worker_is_restarted_and_the_queue_drains(up):
    long_job = up.http.post("/jobs", json={**TINY, "hyperparameters": {
        "epochs": 15, "hidden_sizes": [64, 64], "seed": 3}}).json()
    deadline = time.monotonic() + 120
    while up.http.get(f"/jobs/{long_job['id']}").json()["progress"]["epoch"] < 2:
        assert time.monotonic() < deadline, up.logs()
        time.sleep(0.1)  # past its first checkpoints, so it has something to resume from
    others = [up.http.post("/jobs", json=TINY).json()["id"] for _ in range(10)]
    [victim] = worker_pids(up.processes["up"].pid)
    os.kill(victim, signal.SIGKILL)

    jobs = wait_drained(up, 11, timeout=300)
    by_id = {j["id"]: j for j in jobs}
    assert all(by_id[i]["status"] == "succeeded" for i in others)
    resumed = up.http.get(f"/jobs/{long_job['id']}").json()
    assert resumed["status"] == "succeeded", resumed.get("error")
    assert resumed["infra_failures"] == 1  # requeued once by a reconciler, after its lease
    attempts = resumed["attempt_history"]
    assert [a["outcome"] for a in attempts] == ["worker_lost", "succeeded"]
    assert attempts[1]["resumed_from_epoch"] is not None  # from its checkpoint, not scratch

    [replacement] = worker_pids(up.processes["up"].pid)
    assert replacement != victim
    log = (up.home / "up.log").read_text()
    assert "exited with code -9" in log and "worker restarted" in log
    health = up.http.get("/healthz").json()
    assert health["status"] == "ok", health
    assert sum(q["workers"] for q in health["queues"].values()) >= 1
