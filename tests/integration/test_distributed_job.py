"""A job with "gpus": 2 through the worker's runner on SQLite (CPU: two gloo processes, the
worker's own process being rank 0): it succeeds with its metrics and checkpoints written once,
trains like the same job on one process, drains and resumes exactly, fails (without hanging)
when a helper rank is killed, and its helpers exit when the worker is killed."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from core.settings import Settings
from db.store import Store
from worker.persistence import DRAINING
from worker.runner import JobRunner

REL = 1e-5  # k=2 vs k=1, as in tests/unit/test_distributed_train.py (measured: 2.3e-7)
HP = {"epochs": 3, "hidden_sizes": [32, 16], "dropout": 0.1, "batch_size": 64,
      "steps_per_epoch": 10, "lr": 0.01, "seed": 4}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(sqlite_url):
    instance = Store(sqlite_url)
    instance.migrate()
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def runner(store, tmp_path):
    settings = Settings(home=tmp_path, metrics_flush_seconds=0.05, cancel_check_seconds=0.0)
    return JobRunner(store, settings, worker_name="test-worker")


def helpers() -> list[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p.name.startswith("trainyard-rank")]


def final(store, job_id) -> dict:
    return {name: s["final"] for name, s in store.metric_summaries([job_id])[job_id].items()
            if not name.endswith("_per_s")}


def when_trained(store, job_id, steps: int, then) -> threading.Thread:
    """Call `then()` from a thread once the job has `steps` train_loss points stored."""
    def wait():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(store.get_metrics(job_id).get("train_loss", [])) >= steps:
                then()
                return
            time.sleep(0.02)
    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def test_a_two_process_job_succeeds_like_a_one_process_job(store, runner):
    two = store.create_job(model="mlp", dataset="digits", hyperparameters=HP, device="cpu",
                           gpus=2)
    one = store.create_job(model="mlp", dataset="digits",
                           hyperparameters={**HP, "dropout": 0.0}, device="cpu")
    two_no_dropout = store.create_job(model="mlp", dataset="digits",
                                      hyperparameters={**HP, "dropout": 0.0}, device="cpu",
                                      gpus=2)
    for job in (two, one, two_no_dropout):
        assert runner.run(job.id) == "succeeded"
    assert not helpers()

    done = store.get_job(two.id)
    assert (done.status, done.attempts, done.epoch, done.step) == ("succeeded", 1, 3, 30)
    series = store.get_metrics(two.id)
    # rank 0 alone reports: every step once, every epoch once, every checkpoint once
    assert [p["step"] for p in series["train_loss"]] == list(range(1, 31))
    assert [p["epoch"] for p in series["val_accuracy"]] == [1, 2, 3]
    assert [(c.epoch, c.step) for c in store.list_checkpoints(two.id)] == \
        [(1, 10), (2, 20), (3, 30)]
    # the same job on one process (dropout off: each rank draws its own masks)
    a, b = final(store, one.id), final(store, two_no_dropout.id)
    assert a.keys() == b.keys()
    for name, value in a.items():
        assert math.isclose(value, b[name], rel_tol=REL, abs_tol=1e-7), name


def test_a_drained_two_process_job_resumes_exactly_where_it_stopped(store, runner):
    hp = {**HP, "steps_per_epoch": 20}
    whole = store.create_job(model="mlp", dataset="digits", hyperparameters=hp, device="cpu",
                             gpus=2)
    assert runner.run(whole.id) == "succeeded"

    job = store.create_job(model="mlp", dataset="digits", hyperparameters=hp, device="cpu",
                           gpus=2)
    # The drain lands at the next batch where the ranks agree (every 8 batches: mid-epoch at
    # batch 8 or 16, or at an epoch's start, which resumes from that epoch's checkpoint):
    # either way the resumed job must end exactly as the uninterrupted one.
    when_trained(store, job.id, 12, DRAINING.set)
    try:
        assert runner.run(job.id) == "drained"
    finally:
        DRAINING.clear()
    assert store.get_job(job.id).status == "queued"
    assert 12 <= store.list_checkpoints(job.id)[-1].step < 60
    assert not helpers()

    assert runner.run(job.id) == "succeeded"  # the next attempt resumes on two processes
    assert final(store, job.id) == final(store, whole.id)  # exact
    assert [p["step"] for p in store.get_metrics(job.id)["train_loss"]] == list(range(1, 61))


def test_a_killed_helper_rank_fails_the_job_without_hanging(store, runner):
    long = {**HP, "epochs": 100, "steps_per_epoch": 20}
    job = store.create_job(model="mlp", dataset="digits", hyperparameters=long, device="cpu",
                           gpus=2)
    killed = []

    def kill_helper():
        (helper,) = helpers()
        os.kill(helper.pid, signal.SIGKILL)
        killed.append(time.monotonic())

    when_trained(store, job.id, 3, kill_helper)
    assert runner.run(job.id) == "failed"
    assert time.monotonic() - killed[0] < 20
    failed = store.get_job(job.id)
    assert failed.status == "failed"
    assert "rank 1" in failed.error and "SIGKILL" in failed.error
    assert not helpers()


RANK0 = textwrap.dedent("""
    import sys, time
    import multiprocessing
    from models.train import Callbacks, JobSpec
    from worker.distributed import fit_job

    class Stall(Callbacks):
        def on_step(self, step, epoch, metrics):
            if step == 2:
                (helper,) = multiprocessing.active_children()
                print("helper", helper.pid, flush=True)
                time.sleep(120)  # the helper waits in its next collective meanwhile

    if __name__ == "__main__":
        spec = JobSpec("mlp", "digits", {"epochs": 1, "steps_per_epoch": 5}, "cpu")
        fit_job(spec, Stall(), gpus=2)
""")


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


def test_helper_ranks_exit_when_the_worker_process_is_killed(tmp_path):
    script = tmp_path / "rank0.py"
    script.write_text(RANK0)
    worker = subprocess.Popen([sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = worker.stdout.readline()
        assert line.startswith("helper"), line
        helper = int(line.split()[1])
        worker.kill()  # SIGKILL: no atexit, no cleanup in the worker
        worker.wait(10)
        deadline = time.monotonic() + 20
        while not gone(helper) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gone(helper)
    finally:
        worker.kill()
        worker.wait(10)
