"""Fault tolerance in the store and the runner, against a real database (SQLite and Postgres):
leases, the reconciler's guarded transitions, poison jobs, attempts, drain, idempotent creation.
The same paths with real worker processes, SIGKILL and Redis: tests/e2e/test_fault_tolerance.py."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor


from core.settings import Settings
from worker import runner as runner_module
from worker.reconciler import reconcile_once
from worker.runner import JobRunner

TINY_MLP = {"epochs": 3, "hidden_sizes": [16, 16], "steps_per_epoch": 6, "seed": 3}
# A job that a test drains while it runs: long enough (~0.3 s here) that the drain lands before
# it ends (20 epochs, ~50 ms, lost that race once steps got faster).
RACE_EPOCHS = 100


def new_job(store, **hp):
    return store.create_job(model="mlp", dataset="digits", hyperparameters={**TINY_MLP, **hp},
                            device="cpu")


def outcomes(store, job_id):
    return [a["outcome"] for a in store.list_attempts(job_id)]


def test_a_lost_job_is_requeued_by_exactly_one_of_many_reconcilers(store):
    job = new_job(store)
    store.claim_job(job.id, worker="dead-worker")
    # A fresh heartbeat is within any lease: nothing to recover.
    assert store.recover_lost_jobs(lease_seconds=60, max_infra_retries=3) == ([], [])
    time.sleep(0.05)

    # Eight reconcilers see the same stale lease at once: one requeues, the rest find nothing.
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: store.recover_lost_jobs(0.01, 3), range(8)))
    requeued = [job for r, _ in results for job in r]
    assert [j.id for j in requeued] == [job.id]
    lost = store.get_job(job.id)
    assert (lost.status, lost.infra_failures, lost.worker) == ("queued", 1, None)
    assert outcomes(store, job.id) == ["worker_lost"]

    # Claimed again elsewhere: the attempt is numbered 2, and it ends where it ends.
    assert store.claim_job(job.id, worker="w2").attempts == 2
    assert not store.heartbeat(job.id, attempt=1), "the lost attempt's worker is refused"
    assert store.heartbeat(job.id, attempt=2)
    assert not store.finish_job(job.id, "succeeded", attempt=1)
    assert store.finish_job(job.id, "succeeded", attempt=2)
    history = store.list_attempts(job.id)
    assert [(a["number"], a["worker"], a["outcome"]) for a in history] == [
        (1, "dead-worker", "worker_lost"), (2, "w2", "succeeded")]
    assert all(a["ended_at"] >= a["started_at"] for a in history)


def test_a_poison_job_fails_after_max_infra_retries(store):
    job = new_job(store)
    sent = []
    settings = Settings(lease_seconds=0.01, max_infra_retries=2, enqueue_grace_seconds=3600)
    for attempt in range(1, 4):
        assert store.claim_job(job.id, worker=f"w{attempt}") is not None
        time.sleep(0.03)  # the worker "dies": no more heartbeats
        report = reconcile_once(store, lambda i, d: sent.append((i, d)), settings)
        if attempt <= 2:
            assert report.requeued == [job.id]
        else:
            assert report.failed == [job.id]
    failed = store.get_job(job.id)
    assert failed.status == "failed" and failed.infra_failures == 3
    assert failed.error == "worker lost 3 times; giving up"
    assert sent == [(job.id, "cpu")] * 2, "re-sent after each requeue, not after the last loss"
    assert outcomes(store, job.id) == ["worker_lost"] * 3


def test_a_lost_wake_up_is_resent_once_and_only_where_a_worker_is_idle(store):
    a, b = new_job(store), new_job(store)
    store.record_worker_seen("busy-worker", "host", 1, ["cpu", "auto"], starting=True)
    store.claim_job(b.id, worker="busy-worker")  # running: not the resender's business
    settings = Settings(lease_seconds=3600, enqueue_grace_seconds=0.5)
    time.sleep(0.6)
    sent = []
    # Every worker that could run `a` is busy: it waits its turn, and nothing is sent (a
    # backlog must not grow the broker; the busy worker claims it from the database next).
    assert reconcile_once(store, lambda i, d: sent.append(i), settings).resent == []

    store.record_worker_seen("idle-worker", "host", 2, ["cpu", "auto"], starting=True)
    with ThreadPoolExecutor(4) as pool:  # four workers' reconcilers at once
        list(pool.map(lambda _: reconcile_once(store, lambda i, d: sent.append(i), settings),
                      range(4)))
    assert sent == [a.id], "one reconciler re-sends it, the others see it sent just now"
    later = Settings(lease_seconds=3600, enqueue_grace_seconds=60)
    assert reconcile_once(store, lambda i, d: sent.append(i), later).resent == []


def test_the_same_idempotency_key_creates_one_job(store):
    def submit(_):
        return store.create_job_once("retry-key-1", model="mlp", dataset="digits",
                                     hyperparameters=TINY_MLP, device="cpu")

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(submit, range(32)))
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    other, created = store.create_job_once("retry-key-2", model="mlp", dataset="digits",
                                           hyperparameters=TINY_MLP)
    assert created and other.id != results[0][0].id
    assert store.list_jobs()[1] == 2


def test_a_drained_job_goes_back_to_the_queue_and_resumes_identically(store, tmp_path):
    settings = Settings(home=tmp_path, metrics_flush_seconds=0.05, cancel_check_seconds=0.0,
                        heartbeat_seconds=0.05)
    reference = new_job(store, epochs=RACE_EPOCHS)
    assert JobRunner(store, settings, "ref").run(reference.id) == "succeeded"

    job = new_job(store, epochs=RACE_EPOCHS)

    def sigterm_after_two_checkpoints():  # what the worker_shutting_down signal does
        deadline = time.monotonic() + 60
        while len(store.list_checkpoints(job.id)) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        runner_module.DRAINING.set()

    thread = threading.Thread(target=sigterm_after_two_checkpoints)
    thread.start()
    try:
        assert JobRunner(store, settings, "draining").run(job.id) == "drained"
        # A draining worker takes no new job: it leaves it queued.
        assert JobRunner(store, settings, "draining").run(job.id) == "skipped:draining"
    finally:
        thread.join()
        runner_module.DRAINING.clear()
    drained = store.get_job(job.id)
    assert (drained.status, drained.infra_failures) == ("queued", 0)
    # The drain checkpointed the step it stopped at: the next worker re-runs nothing.
    last_trained = max(p["step"] for p in store.get_metrics(job.id)["train_loss"])
    assert store.latest_checkpoint(job.id)[0].step == last_trained
    assert JobRunner(store, settings, "other").run(job.id) == "succeeded"
    history = store.list_attempts(job.id)
    assert [a["outcome"] for a in history] == ["drained", "succeeded"]
    assert history[1]["resumed_from_epoch"] >= 2

    def series(job_id):
        return {name: [(p["step"], p["value"]) for p in points]
                for name, points in store.get_metrics(job_id).items()
                if not name.endswith("_per_s")}

    assert series(job.id) == series(reference.id), "no step missing, doubled or different"


def test_a_worker_whose_job_was_taken_stops(store, tmp_path):
    """A worker that hangs past its lease loses the job; when it wakes it must not write over
    the new owner: its heartbeat is refused and it stops."""
    settings = Settings(home=tmp_path, metrics_flush_seconds=0.05, cancel_check_seconds=10,
                        heartbeat_seconds=0.05)
    job = new_job(store, epochs=1000)

    def take_it_away():
        deadline = time.monotonic() + 60
        while not store.list_checkpoints(job.id) and time.monotonic() < deadline:
            time.sleep(0.005)
        job_now = store.get_job(job.id)
        # As if its lease expired: requeued and claimed by another worker.
        assert store.requeue_job(job.id, attempt=job_now.attempts)
        taken.append(store.claim_job(job.id, worker="new-owner"))

    taken: list = []
    thread = threading.Thread(target=take_it_away)
    thread.start()
    assert JobRunner(store, settings, "hung").run(job.id) == "stopped"
    thread.join()
    now = store.get_job(job.id)
    assert (now.status, now.worker, now.attempts) == ("running", "new-owner", 2)
    assert (now.epoch, now.step) == (taken[0].epoch, taken[0].step), \
        "the old worker's progress writes were refused after the takeover"
    assert now.epoch < 100
    assert [a["outcome"] for a in store.list_attempts(job.id)] == ["worker_lost", None]


def test_a_corrupt_latest_checkpoint_falls_back_to_the_one_before(store, tmp_path):
    settings = Settings(home=tmp_path, metrics_flush_seconds=0.05, cancel_check_seconds=0.0,
                        heartbeat_seconds=0.05)
    reference = new_job(store, epochs=RACE_EPOCHS)
    assert JobRunner(store, settings, "ref").run(reference.id) == "succeeded"

    job = new_job(store, epochs=RACE_EPOCHS)

    def drain_after_three_checkpoints():
        deadline = time.monotonic() + 60
        while len(store.list_checkpoints(job.id)) < 3 and time.monotonic() < deadline:
            time.sleep(0.002)
        runner_module.DRAINING.set()

    thread = threading.Thread(target=drain_after_three_checkpoints)
    thread.start()
    try:
        assert JobRunner(store, settings, "w1").run(job.id) == "drained"
    finally:
        thread.join()
        runner_module.DRAINING.clear()
    checkpoints = store.list_checkpoints(job.id)
    newest, before = checkpoints[-1], checkpoints[-2]
    from sqlalchemy import text

    with store.engine.begin() as conn:  # bit rot in the newest checkpoint's bytes
        conn.execute(text("UPDATE checkpoints SET data = :d WHERE id = :id"),
                     {"d": b"\x00not a checkpoint", "id": newest.id})

    assert JobRunner(store, settings, "w2").run(job.id) == "succeeded"
    assert store.list_attempts(job.id)[1]["resumed_from_epoch"] == before.epoch

    def series(job_id):
        return {name: [(p["step"], p["value"]) for p in points]
                for name, points in store.get_metrics(job_id).items()
                if not name.endswith("_per_s")}

    assert series(job.id) == series(reference.id)


def test_post_jobs_with_an_idempotency_key(client):
    body = {"model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": 2}}
    first = client.post("/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    again = client.post("/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "queued"
    # The same key for another request is a client bug: refused, not silently answered.
    other = client.post("/jobs", json={**body, "hyperparameters": {"epochs": 3}},
                        headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 422 and "different request" in other.text
    assert client.post("/jobs", json=body).json()["id"] != first.json()["id"]
    assert client.get("/jobs").json()["total"] == 2
    detail = client.get(f"/jobs/{first.json()['id']}").json()
    assert detail["attempt_history"] == [] and detail["infra_failures"] == 0
