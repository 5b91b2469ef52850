"""`trainyard logs JOB -f` against real processes (uvicorn, Celery workers, Postgres, Redis):
it follows a job whose worker is killed with SIGKILL mid-run and which resumes on another
worker; the log reads in order, the second attempt's lines after the first's, and the command
ends by itself when the job does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from db.store import Store
from tests.e2e.services import serving
from trainyard.local_service import LocalService, free_port

pytestmark = pytest.mark.e2e

FAST_RECOVERY = {  # as tests/e2e/test_fault_tolerance.py: a recovery takes seconds
    "TRAINYARD_LEASE_SECONDS": "3",
    "TRAINYARD_HEARTBEAT_SECONDS": "0.5",
    "TRAINYARD_RECONCILE_SECONDS": "0.5",
    "TRAINYARD_ENQUEUE_GRACE_SECONDS": "30",
    "TRAINYARD_METRICS_FLUSH_SECONDS": "0.1",
    "TRAINYARD_CANCEL_CHECK_SECONDS": "0.2",
    "TRAINYARD_TORCH_THREADS": "1",
}
# ~8 ms a step on one core: 45 steps (an epoch) of digits, 12 epochs.
SLOW_MLP = {"epochs": 12, "hidden_sizes": [1024, 1024], "batch_size": 32, "seed": 7}


@pytest.fixture
def cluster(tmp_path, fresh_postgres_url, redis_url, request):
    service = LocalService(tmp_path, {"TRAINYARD_DATABASE_URL": fresh_postgres_url,
                                      "TRAINYARD_BROKER_URL": redis_url, **FAST_RECOVERY},
                           free_port())
    service.start("api", "api", "--port", str(service.port))
    service.store = Store(fresh_postgres_url)
    try:
        with serving(service, request):
            yield service
    finally:
        service.store.close()


def test_logs_follow_a_job_killed_and_resumed_elsewhere(cluster):
    cluster.start("w1", "worker", "--name", "w1@%h")
    job = cluster.http.post("/jobs", json={"model": "mlp", "dataset": "digits",
                                           "hyperparameters": SLOW_MLP}).json()
    job_id = job["id"]
    follower = subprocess.Popen(
        [sys.executable, "-m", "trainyard", "logs", str(job_id), "-f", "--interval", "0.3"],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed: list[tuple[str, str]] = []  # (the line, the job's status when it was printed)

    def read():
        for line in follower.stdout:
            status = cluster.store.get_status(job_id)
            printed.append((line.rstrip("\n"), status))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while len(cluster.store.list_checkpoints(job_id)) < 2:
            assert time.monotonic() < deadline, "no second checkpoint"
            time.sleep(0.05)
        os.killpg(cluster.processes["w1"].pid, signal.SIGKILL)  # mid-run, no goodbye
        cluster.start("w2", "worker", "--name", "w2@%h")
        done = cluster.wait_status(job_id, {"succeeded", "failed"}, timeout=240)
        assert done["status"] == "succeeded", done.get("error")
        assert follower.wait(timeout=60) == 0, follower.stderr.read()
        reader.join(timeout=10)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert f"job {job_id} succeeded" in follower.stderr.read()

    lines = [line for line, _ in printed]
    text = "\n".join(lines)
    assert any(status == "running" for _, status in printed[:3]), \
        "the first lines were printed while the job ran: followed, not read at the end"
    first = [i for i, line in enumerate(lines) if "#1 worker:" in line or "#1 train:" in line]
    second = [i for i, line in enumerate(lines) if "#2 worker:" in line or "#2 train:" in line]
    assert first and second and max(first) < min(second), text
    assert "claimed by w1@" in lines[first[0]] and "(attempt 1)" in lines[first[0]]
    assert "claimed by w2@" in lines[second[0]] and "(attempt 2)" in lines[second[0]]
    resumed = [line for line in lines if "resumed from epoch" in line]
    assert len(resumed) == 1 and lines.index(resumed[0]) > min(second)
    epoch = int(resumed[0].split("resumed from epoch ")[1].split(",")[0])
    assert epoch >= 2
    assert "checkpoint written at epoch 1," in text and "data loaded: dataset digits" in text
    assert f"job {job_id} succeeded" in lines[-1]
    # the same log as the API's, line for line (the CLI printed each line once)
    api_lines = cluster.http.get(f"/jobs/{job_id}/logs", params={"limit": 5000}).json()["lines"]
    assert sum("\n" not in x["message"] for x in api_lines) <= len(lines)
    assert [x["attempt"] for x in api_lines] == sorted(x["attempt"] for x in api_lines)

    again = cluster.cli("logs", str(job_id))  # without -f: what is there, then exit
    assert again.returncode == 0 and again.stdout.splitlines() == lines
    missing = cluster.cli("logs", "999999")
    assert missing.returncode == 2 and "404" in missing.stderr
