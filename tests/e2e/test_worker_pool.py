"""`trainyard worker --jobs N`: several jobs at once on one host, each in its own process.

Real processes on Postgres + Redis: a pool of two worker processes runs two jobs at the same
time; one of its processes killed with SIGKILL is started again under its name, its job
requeued after the lease and resumed, while the other process's job goes on untouched; SIGTERM
to the pool drains and stops every process. GPU sharing (CUDA_VISIBLE_DEVICES per process) is
planned by the same code on any host (tests/unit/test_worker_pool_plan.py); this host has no GPU.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.e2e.services import serving
from trainyard.local_service import LocalService, free_port

pytestmark = pytest.mark.e2e

FAST = {
    "TRAINYARD_LEASE_SECONDS": "3",
    "TRAINYARD_HEARTBEAT_SECONDS": "0.25",
    "TRAINYARD_RECONCILE_SECONDS": "0.5",
    "TRAINYARD_METRICS_FLUSH_SECONDS": "0.1",
    "TRAINYARD_CANCEL_CHECK_SECONDS": "0.2",
}
# A few seconds per job on one core, so both are seen running at once.
SLOW_MLP = {"epochs": 4, "hidden_sizes": [512, 512], "batch_size": 32, "seed": 3}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def pool_service(tmp_path, fresh_postgres_url, redis_url, request):
    service = LocalService(tmp_path, {**FAST, "TRAINYARD_DATABASE_URL": fresh_postgres_url,
                                      "TRAINYARD_BROKER_URL": redis_url}, free_port())
    service.start("api", "api", "--port", str(service.port))
    service.start("pool", "worker", "--jobs", "2", "--name", "pool@%h")
    with serving(service, request):
        yield service


def _workers(service) -> dict[str, dict]:
    items = service.http.get("/workers").json()["items"]
    return {w["name"].split("@", 1)[0]: w for w in items if w["state"] != "lost"}


def _submit(service) -> int:
    response = service.http.post("/jobs", json={"model": "mlp", "dataset": "digits",
                                                "hyperparameters": SLOW_MLP})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_pool_runs_jobs_at_once_survives_a_killed_process_and_drains(pool_service):
    service = pool_service
    workers = service.wait_for(lambda: (w := _workers(service)) and len(w) == 2 and w,
                               "the pool's two processes did not join")
    assert set(workers) == {"pool-0", "pool-1"}
    assert all(w["gpus"] >= 1 for w in workers.values())  # CPU: processes for a gloo job
    pids = {name: w["pid"] for name, w in workers.items()}

    first, second = _submit(service), _submit(service)
    both = service.wait_for(
        lambda: (jobs := [service.http.get(f"/jobs/{j}").json() for j in (first, second)])
        and all(j["status"] == "running" for j in jobs) and jobs,
        "the two jobs did not run at the same time")
    assert {j["worker"].split("@")[0] for j in both} == {"pool-0", "pool-1"}

    # Kill the process running the first job: the other job goes on; the pool starts the
    # killed process again, and the first job, requeued after its lease, resumes and ends.
    victim = next(j["worker"].split("@")[0] for j in both if j["id"] == first)
    os.kill(pids[victim], signal.SIGKILL)
    done = service.wait_status(second, {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 1
    restarted = service.wait_for(
        lambda: (w := _workers(service).get(victim)) and w["pid"] != pids[victim] and w,
        "the killed process was not started again")
    done = service.wait_status(first, {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2
    assert "restarted" in (service.home / "pool.log").read_text()

    # SIGTERM to the pool drains and stops every one of its processes.
    children = [restarted["pid"], pids["pool-1" if victim == "pool-0" else "pool-0"]]
    pool = service.processes["pool"]
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(timeout=60) == 0
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in children)
