"""A sweep survives the loss of every process: real `trainyard api` and `trainyard worker`
processes on Postgres and a Redis of our own are all killed with SIGKILL in the middle of a
sweep (Redis comes back empty), then started again. The sweep goes on and ends with exactly
its trials, none launched twice, and never more than max_concurrent at once, with three
workers competing for them."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from sqlalchemy import text

from db.store import Store
from trainyard.local_service import LocalService, RedisServer, free_port

pytestmark = pytest.mark.e2e

FAST = {
    "TRAINYARD_LEASE_SECONDS": "3",
    "TRAINYARD_HEARTBEAT_SECONDS": "0.5",
    "TRAINYARD_RECONCILE_SECONDS": "0.5",
    "TRAINYARD_ENQUEUE_GRACE_SECONDS": "2",
    "TRAINYARD_CANCEL_CHECK_SECONDS": "0.2",
    "TRAINYARD_TORCH_THREADS": "1",
}
MAX_TRIALS, MAX_CONCURRENT, WORKERS = 8, 2, 3
SWEEP = {
    "model": "mlp", "dataset": "digits", "method": "random", "seed": 5,
    "max_trials": MAX_TRIALS, "max_concurrent": MAX_CONCURRENT,
    # a few seconds a trial on one core, so the kill lands in the middle of the sweep
    "hyperparameters": {"epochs": 3, "steps_per_epoch": 40, "batch_size": 32,
                        "hidden_sizes": [256, 256]},
    "space": {"lr": {"low": 1e-3, "high": 1e-1, "log": True},
              "activation": {"values": ["relu", "tanh"]}},
}


class ActiveTrialWatch(threading.Thread):
    """Samples, every 20 ms, how many of the sweep's trials are queued or running, straight
    from the database, and keeps the highest count seen."""

    def __init__(self, store: Store, sweep_id: int):
        super().__init__(daemon=True)
        self.store, self.sweep_id = store, sweep_id
        self.highest, self.running_together = 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        query = text("SELECT count(*) FILTER (WHERE status IN ('queued', 'running')), "
                     "count(*) FILTER (WHERE status = 'running') FROM jobs "
                     "WHERE sweep_id = :id")
        while not self.done.wait(0.02):
            with self.store.engine.connect() as conn:
                active, running = conn.execute(query, {"id": self.sweep_id}).one()
            self.highest = max(self.highest, active)
            self.running_together = max(self.running_together, running)


def start_all(service: LocalService, round_: int) -> None:
    service.start(f"api-{round_}", "api", "--port", str(service.port))
    for n in range(WORKERS):
        service.start(f"w{n}-{round_}", "worker", "--name", f"w{n}-{round_}@%h")
    service.wait_healthy()


def kill_all(service: LocalService) -> None:
    for proc in service.processes.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_sweep_survives_every_process_killed(tmp_path, fresh_postgres_url):
    redis = RedisServer(tmp_path)
    redis.start()
    service = LocalService(tmp_path, {"TRAINYARD_DATABASE_URL": fresh_postgres_url,
                                      "TRAINYARD_BROKER_URL": redis.url, **FAST}, free_port())
    store = Store(fresh_postgres_url)
    watch = None
    try:
        start_all(service, 1)
        created = service.http.post("/sweeps", json=SWEEP)
        assert created.status_code == 201, created.text
        sweep_id = created.json()["id"]
        watch = ActiveTrialWatch(store, sweep_id)
        watch.start()

        early_running = text("SELECT count(*) FROM jobs WHERE sweep_id = :id AND status = "
                             "'running' AND (total_steps IS NULL OR step < total_steps / 2)")

        def two_done_and_one_early() -> bool:
            counts = service.http.get(f"/sweeps/{sweep_id}").json()["counts"]
            with store.engine.connect() as conn:
                early = conn.execute(early_running, {"id": sweep_id}).scalar_one()
            return counts.get("succeeded", 0) >= 2 and early >= 1

        # Killed while a trial is in its first half (not in the gap between trials, nor as one
        # ends), so at least one trial must resume.
        service.wait_for(two_done_and_one_early, "two trials done, one in its first half", 180)
        # Everything dies at once, mid-sweep: API, workers (with trials running) and broker.
        kill_all(service)
        with store.engine.connect() as conn:
            killed_mid_run = list(conn.execute(text(
                "SELECT id FROM jobs WHERE sweep_id = :id AND status = 'running'"),
                {"id": sweep_id}).scalars())
        assert killed_mid_run, "the kill landed while no trial ran"
        redis.stop()
        before = service.http  # the old client's connections point at a dead server
        before.close()
        assert store.get_sweep(sweep_id).status == "running"
        redis.start()
        service.processes.clear()
        service.http = type(before)(base_url=service.url, timeout=30)
        start_all(service, 2)

        done = service.wait_for(
            lambda: (s := service.http.get(f"/sweeps/{sweep_id}").json())["status"] != "running"
            and s, "the sweep ended", 300)
        watch.done.set()
        watch.join()
        assert done["status"] == "succeeded", done
        assert done["counts"] == {"succeeded": MAX_TRIALS}, done["counts"]
        numbers = sorted(t["number"] for t in done["trials"])
        assert numbers == list(range(MAX_TRIALS)), "exactly the trials asked for, once each"
        with store.engine.connect() as conn:
            rows = conn.execute(text("SELECT count(*), count(DISTINCT trial) FROM jobs "
                                     "WHERE sweep_id = :id"), {"id": sweep_id}).one()
        assert tuple(rows) == (MAX_TRIALS, MAX_TRIALS)
        assert watch.highest <= MAX_CONCURRENT, f"{watch.highest} trials active at once"
        assert watch.running_together == MAX_CONCURRENT, "three workers ran two trials at once"
        # The trials killed mid-run resumed (a second attempt), not relaunched as new trials.
        for job_id in killed_mid_run:
            attempts = service.http.get(f"/jobs/{job_id}").json()["attempt_history"]
            assert len(attempts) > 1, (job_id, attempts)
        assert done["best"] is not None and done["best"]["objective"] > 0.1
    except BaseException:
        print(service.logs())
        raise
    finally:
        if watch is not None:
            watch.done.set()
        service.stop()
        store.close()
        redis.stop()
