"""The writer process (worker/db_writer.py) against a real database (SQLite and Postgres): a
job's writes land in order, nothing is lost, a failed write is raised in the trainer, an
abandoned job's queued writes are dropped, and a worker killed with SIGKILL leaves no writer
process behind and resumes from its last checkpoint."""

from __future__ import annotations

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
from db.store import NotFound, Store
from worker.db_writer import DatabaseWriteError, ProcessStoreWriter, open_store_writer
from worker.runner import JobRunner

ROOT = Path(__file__).resolve().parents[2]


def url_of(store: Store) -> str:
    return store.url.render_as_string(hide_password=False)


def new_job(store, **hp):
    base = {"epochs": 3, "hidden_sizes": [16, 16], "steps_per_epoch": 6, "seed": 3}
    job = store.create_job(model="mlp", dataset="digits", hyperparameters={**base, **hp},
                           device="cpu")
    store.claim_job(job.id, worker="test")
    return job


def steps_of(store, job_id, name="loss"):
    return [p["step"] for p in store.get_metrics(job_id).get(name, [])]


def test_writes_land_in_order_in_another_process_and_nothing_is_lost(store):
    job = new_job(store)
    writer = open_store_writer(store, "test", "process")
    assert isinstance(writer, ProcessStoreWriter)
    assert writer._proc.process.pid != os.getpid()
    seen = []
    for step in range(1, 201):
        writer.call("add_metrics", job.id, [("loss", step, 1, 1.0 / step, time.time())])
        if step % 50 == 0:
            writer.call("add_checkpoint", job.id, epoch=step // 50, step=step,
                        data=os.urandom(50_000), metrics={"loss": 1.0 / step})
            # A read asked after the writes answers after they landed: order, across kinds.
            writer.ask("metrics", "get_metrics", job.id)
        seen += writer.answers()
    writer.drain()
    seen += writer.answers()
    writer.close()
    assert [tag for tag, _ in seen] == ["metrics"] * 4
    for i, (_, metrics) in enumerate(seen, start=1):
        assert [p["step"] for p in metrics["loss"]] == list(range(1, 50 * i + 1))
    assert steps_of(store, job.id) == list(range(1, 201)), "every point, once"
    assert [c.step for c in store.list_checkpoints(job.id)] == [50, 100, 150, 200]


def test_one_writer_process_serves_the_next_jobs_too(store):
    first = open_store_writer(store, "a", "process")
    first.drain()
    first.close()
    second = open_store_writer(store, "b", "process")
    job = new_job(store)
    second.call("add_metrics", job.id, [("loss", 1, 1, 0.5, time.time())])
    second.drain()
    second.close()
    assert second._proc is first._proc and second._proc.process.is_alive()
    assert steps_of(store, job.id) == [1]


def test_a_failed_write_is_raised_in_the_trainer_and_later_writes_are_dropped(store):
    job = new_job(store)
    writer = open_store_writer(store, "test", "process")
    writer.call("add_metrics", job.id, [("loss", 1, 1, 0.5, time.time())])
    writer.call("add_text", job.id + 1000, epoch=1, step=1, name="sample", text="x")  # no job
    writer.call("add_metrics", job.id, [("loss", 2, 1, 0.4, time.time())])
    with pytest.raises(NotFound):
        writer.drain()
    with pytest.raises(NotFound):  # and at the next submit
        writer.call("add_metrics", job.id, [("loss", 3, 1, 0.3, time.time())])
    writer.close()
    writer.close()  # twice is harmless
    assert steps_of(store, job.id) == [1]
    # the process lives on for the next job, whose writes are not affected
    other = open_store_writer(store, "next", "process")
    other.call("add_metrics", job.id, [("loss", 9, 1, 0.1, time.time())])
    other.drain()
    other.close()
    assert steps_of(store, job.id) == [1, 9]


def test_a_failure_that_is_not_the_stores_own_arrives_in_words(store):
    job = new_job(store)
    writer = open_store_writer(store, "test", "process")
    writer.call("add_metrics", job.id)  # a bug of the caller: no points
    with pytest.raises(DatabaseWriteError, match="TypeError: .*points"):
        writer.drain()
    writer.close()


def test_an_abandoned_jobs_queued_writes_are_dropped(store):
    job = new_job(store)
    taken = threading.Event()
    writer = open_store_writer(store, "test", "process", abandon=taken)
    writer.call("add_metrics", job.id, [("loss", 1, 1, 0.5, time.time())])
    writer.drain()
    taken.set()  # the heartbeat learnt that the job is someone else's
    writer.call("add_metrics", job.id, [("loss", 2, 1, 0.4, time.time())])
    writer.ask("progress", "update_progress", job.id, 1, 1, 2, 2, 0.0)
    writer.drain()
    assert writer.answers() == [], "a dropped ask has no answer"
    writer.close()
    assert steps_of(store, job.id) == [1]


def test_an_in_memory_database_gets_a_thread_writer():
    store = Store("sqlite://")
    store.migrate()
    writer = open_store_writer(store, "test", "process")
    assert not isinstance(writer, ProcessStoreWriter)
    writer.close()


UNGUARDED_SCRIPT = textwrap.dedent("""
    import sys
    from db.store import Store
    from worker.db_writer import ProcessStoreWriter, open_store_writer
    print("main body ran", flush=True)
    store = Store(sys.argv[1])
    writer = open_store_writer(store, "script", "process")
    assert isinstance(writer, ProcessStoreWriter)
    writer.ask("status", "get_status", int(sys.argv[2]))
    writer.drain()
    print(writer.answers(), flush=True)
""")


def test_a_script_without_a_main_guard_is_not_run_again_by_the_writer(store, tmp_path):
    job = new_job(store)
    script = tmp_path / "script.py"  # a file: 'spawn' would re-import a __main__ with a path
    script.write_text(UNGUARDED_SCRIPT)
    done = subprocess.run([sys.executable, str(script), url_of(store), str(job.id)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["main body ran", "[('status', 'running')]"]


# ------------------------------------------------------------------ SIGKILL of the worker
WORKER_SCRIPT = textwrap.dedent("""
    import sys
    from core.settings import Settings
    from db.store import Store
    from worker.runner import JobRunner
    settings = Settings(home=sys.argv[3], metrics_flush_seconds=0.05, heartbeat_seconds=0.2,
                        cancel_check_seconds=0.2)
    JobRunner(Store(sys.argv[1]), settings, "doomed").run(int(sys.argv[2]))
""")


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has exited; init reaps it


def test_a_worker_killed_with_sigkill_leaves_no_writer_and_resumes_from_its_checkpoint(
        store, tmp_path):
    hp = {"epochs": 40, "steps_per_epoch": 10}
    reference = store.create_job(model="mlp", dataset="digits", device="cpu",
                                 hyperparameters={"hidden_sizes": [16, 16], "seed": 3, **hp})
    settings = Settings(home=tmp_path, metrics_flush_seconds=0.05, cancel_check_seconds=0.2,
                        heartbeat_seconds=0.2)
    assert JobRunner(store, settings, "ref").run(reference.id) == "succeeded"

    job = store.create_job(model="mlp", dataset="digits", device="cpu",
                           hyperparameters={"hidden_sizes": [16, 16], "seed": 3, **hp})
    worker = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, url_of(store), str(job.id),
                               str(tmp_path)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        while len(store.list_checkpoints(job.id)) < 3:
            assert worker.poll() is None and time.monotonic() < deadline, "no checkpoints"
            time.sleep(0.01)
        writers = children_of(worker.pid)
        assert writers, "the worker writes from a child process"
        os.kill(worker.pid, signal.SIGKILL)  # the worker alone, not its process group
        worker.wait()
    finally:
        if worker.poll() is None:
            worker.kill()
    deadline = time.monotonic() + 30
    while any(is_running(pid) for pid in writers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(is_running(pid) for pid in writers), "the writer outlived its worker"

    last = store.list_checkpoints(job.id)[-1]
    assert last.epoch < hp["epochs"], "killed before the end"
    attempt = store.get_job(job.id).attempts
    assert store.requeue_job(job.id, attempt=attempt)  # as the reconciler does
    assert JobRunner(store, settings, "next").run(job.id) == "succeeded"
    assert store.list_attempts(job.id)[-1]["resumed_from_epoch"] == last.epoch

    def series(job_id):
        return {name: [(p["step"], p["value"]) for p in points]
                for name, points in store.get_metrics(job_id).items()
                if not name.endswith("_per_s")}

    assert series(job.id) == series(reference.id), "no step missing, doubled or different"
