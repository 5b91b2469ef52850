"""Preemption against a real database (SQLite and Postgres): which running job the reconciler
asks to give its worker to a queued job of higher priority, and a real worker that stops such a
job at a step, runs the other one, and resumes it with exactly an undisturbed run's metrics.
The same with real worker processes on Redis and Postgres: tests/e2e/test_preemption_with_workers.py."""

from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import update

from core.settings import Settings
from db.tables import Job, Worker
from worker.reconciler import reconcile_once
from worker.runner import JobRunner

TINY_MLP = {"epochs": 3, "hidden_sizes": [16, 16], "steps_per_epoch": 6, "seed": 3}
CPU_WORKER = ("cpu", "auto")
# A job that a test preempts or cancels while it runs: long enough (~0.3 s here) that the
# reconciler's pass lands before it ends (20 epochs, ~50 ms, lost that race once steps got
# faster).
RACE_EPOCHS = 100
CUDA_WORKER = ("cpu", "cuda", "auto")
# Workers seen within the hour are live; nothing is re-sent; one minute before preemption.
PASS = Settings(lease_seconds=3600, enqueue_grace_seconds=3600, preemption_min_run_seconds=60)


def new_job(store, priority=0, device="cpu", owner="local", **hp):
    return store.create_job(model="mlp", dataset="digits", hyperparameters={**TINY_MLP, **hp},
                            device=device, priority=priority, owner=owner)


def live_worker(store, name, queues=CPU_WORKER):
    store.record_worker_seen(name, "host", 1, list(queues), starting=True)


def running(store, worker, priority=0, device="cpu", queues=CPU_WORKER, ran_seconds=3600,
            owner="local"):
    """A job of `priority` running on live worker `worker`, its attempt started `ran_seconds`
    ago."""
    live_worker(store, worker, queues)
    job = new_job(store, priority=priority, device=device, owner=owner)
    assert store.claim_job(job.id, worker=worker) is not None
    ran_for(store, job.id, ran_seconds)
    return job


def ran_for(store, job_id, seconds):
    """Move the current attempt's start `seconds` into the past (as if it had run that long)."""
    started = store.get_job(job_id).started_at
    with store.engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id)
                     .values(started_at=started - dt.timedelta(seconds=seconds)))


def set_worker(store, name, **values):
    with store.engine.begin() as conn:
        conn.execute(update(Worker).where(Worker.name == name).values(**values))


def preempted(store, settings=PASS):
    return reconcile_once(store, lambda job_id, device: None, settings).preempted


def asked(store, job_id):
    return store.get_job(job_id).preempt_requested_at is not None


def outcomes(store, job_id):
    return [a["outcome"] for a in store.list_attempts(job_id)]


def give_back(store, job, worker, queues=CPU_WORKER):
    """What the victim's worker does: requeue it as preempted, then claim the best job."""
    assert store.requeue_job(job.id, outcome="preempted", attempt=store.get_job(job.id).attempts)
    return store.claim_next_job(worker, queues, "cuda" if "cuda" in queues else "cpu")


# ---- which job is asked, and when ----

def test_the_lowest_priority_job_gives_its_worker_once(store):
    middle = running(store, "w1", priority=3)
    lowest = running(store, "w2", priority=-5)
    low = running(store, "w3", priority=0)
    urgent = new_job(store, priority=5)

    assert preempted(store) == [lowest.id]
    assert asked(store, lowest.id) and not asked(store, middle.id) and not asked(store, low.id)
    # The asked job still runs until its worker notices: it counts as a worker about to be
    # free for the urgent job, so later passes ask nothing more.
    assert preempted(store) == [] and preempted(store) == []

    assert give_back(store, lowest, "w2").id == urgent.id
    back = store.get_job(lowest.id)
    assert (back.status, back.preempt_requested_at, back.infra_failures) == ("queued", None, 0)
    assert outcomes(store, lowest.id) == ["preempted"]
    # The job given back is of lower priority than every running one: it waits its turn.
    assert preempted(store) == []


def test_no_preemption_while_a_live_worker_is_idle(store):
    low = running(store, "busy", priority=0)
    live_worker(store, "idle")
    new_job(store, priority=5)
    assert preempted(store) == [], "the idle worker takes the urgent job"

    store.record_worker_stopped("idle")  # it shut down: no longer a worker that could run it
    assert preempted(store) == [low.id]


def test_only_a_job_of_strictly_lower_priority_is_preempted(store):
    running_job = running(store, "w", priority=5)
    same = new_job(store, priority=5)
    new_job(store, priority=4)
    assert preempted(store) == []
    store.set_priority(same.id, 6)  # PATCH /jobs/{id}
    assert preempted(store) == [running_job.id]


def test_not_before_the_attempt_has_run_the_minimum_time(store):
    young = running(store, "w", priority=0, ran_seconds=0)
    new_job(store, priority=5)
    assert preempted(store) == []
    assert preempted(store, PASS.model_copy(update={"preemption_min_run_seconds": 3600})) == []
    ran_for(store, young.id, 61)
    assert preempted(store) == [young.id]


def test_of_equal_victims_one_that_has_run_long_enough_goes(store):
    running(store, "young", priority=0, ran_seconds=10)
    old = running(store, "old", priority=0, ran_seconds=7200)
    running(store, "higher", priority=1, ran_seconds=7200)
    new_job(store, priority=5)
    assert preempted(store) == [old.id], "not a wait for the young one, nor a higher one"


def test_the_setting_off_preempts_nothing(store):
    low = running(store, "w", priority=-10)
    new_job(store, priority=10)
    assert preempted(store, PASS.model_copy(update={"preemption": False})) == []
    assert not asked(store, low.id)


def test_one_request_per_queued_job_even_with_many_reconcilers(store):
    # Four workers busy with jobs of the same low priority, started 4000 .. 1000 s ago.
    jobs = [running(store, f"w{i}", priority=0, ran_seconds=4000 - 1000 * i) for i in range(4)]
    urgent = [new_job(store, priority=5), new_job(store, priority=5)]
    new_job(store, priority=0)  # of the running jobs' priority: preempts nothing

    with ThreadPoolExecutor(8) as pool:  # eight reconcilers' passes at once
        reports = list(pool.map(lambda _: preempted(store), range(8)))
    requested = sorted(job_id for report in reports for job_id in report)
    # One each: the two that started last (the least work since their claim).
    assert requested == sorted([jobs[2].id, jobs[3].id])
    assert preempted(store) == []

    for job, worker in ((jobs[2], "w2"), (jobs[3], "w3")):
        assert give_back(store, job, worker).id in {u.id for u in urgent}
    assert preempted(store) == [], "the jobs given back do not preempt their equals"


def test_a_cuda_job_does_not_take_a_cpu_workers_job(store):
    on_cpu = running(store, "cpu-worker", priority=0)
    on_gpu = running(store, "gpu-worker", priority=1, queues=CUDA_WORKER)
    cuda_job = new_job(store, priority=9, device="cuda")
    auto_job = new_job(store, priority=9, device="auto")

    # The cuda job can only have the GPU worker, though the cpu worker's job is lower; the
    # auto job, after it in the order, takes the cpu worker's.
    assert sorted(preempted(store)) == sorted([on_gpu.id, on_cpu.id])
    assert give_back(store, on_gpu, "gpu-worker", CUDA_WORKER).id == cuda_job.id
    assert give_back(store, on_cpu, "cpu-worker").id == auto_job.id


def test_a_cuda_job_with_only_cpu_workers_waits(store):
    on_cpu = running(store, "cpu-worker", priority=-100)
    new_job(store, priority=100, device="cuda")
    assert preempted(store) == []
    assert not asked(store, on_cpu.id)


def test_draining_and_silent_workers_jobs_are_not_preempted(store):
    draining = running(store, "draining", priority=0)
    set_worker(store, "draining", state="draining")  # it gives its job back anyway
    silent = running(store, "silent", priority=0)
    set_worker(store, "silent", seen_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    new_job(store, priority=5)
    assert preempted(store) == []
    assert not asked(store, draining.id) and not asked(store, silent.id)


def test_a_job_its_owner_could_not_start_preempts_nothing(store):
    running(store, "w1", priority=0, owner="alice")
    bobs = running(store, "w2", priority=0, owner="bob")
    new_job(store, priority=5, owner="alice")
    limited = PASS.model_copy(update={"max_running_jobs_per_user": 1})
    assert preempted(store, limited) == [], "alice is at her limit: a freed worker skips her job"
    assert preempted(store) == [bobs.id]


def test_two_jobs_do_not_take_the_worker_from_each_other_in_turn(store):
    first = running(store, "w", priority=0)
    second = new_job(store, priority=5)
    assert preempted(store) == [first.id]
    assert give_back(store, first, "w").id == second.id

    # The preempted job is raised above the one now running, which has only just started:
    # it is not stopped before the minimum, however many passes run meanwhile.
    store.set_priority(first.id, 10)
    for _ in range(5):
        assert preempted(store) == []
    ran_for(store, second.id, 61)
    assert preempted(store) == [second.id]
    assert give_back(store, second, "w").id == first.id

    # Nor is a job just resumed stopped again before the minimum.
    store.set_priority(second.id, 20)
    assert preempted(store) == []
    assert outcomes(store, first.id) == ["preempted", None]
    assert outcomes(store, second.id) == ["preempted"]


# ---- a real worker ----

def fast(tmp_path, **values) -> Settings:
    return PASS.model_copy(update={
        "home": tmp_path, "metrics_flush_seconds": 0.05, "cancel_check_seconds": 0.0,
        "heartbeat_seconds": 0.05, "preemption_min_run_seconds": 0, "checkpoints_keep": 0,
        **values})


def series(store, job_id):
    return {name: [(p["step"], p["epoch"], p["value"]) for p in points]
            for name, points in store.get_metrics(job_id).items()
            if not name.endswith("_per_s")}


def after_checkpoints(store, job_id, n, action):
    """A thread that runs `action()` once job `job_id` has `n` checkpoints."""
    def wait_then_act():
        deadline = time.monotonic() + 60
        while len(store.list_checkpoints(job_id)) < n and time.monotonic() < deadline:
            time.sleep(0.002)
        action()

    thread = threading.Thread(target=wait_then_act)
    thread.start()
    return thread


def test_a_preempted_job_resumes_exactly_after_the_urgent_one(store, tmp_path):
    settings = fast(tmp_path)
    reference = new_job(store, epochs=RACE_EPOCHS)
    assert JobRunner(store, settings, "ref").run(reference.id) == "succeeded"

    live_worker(store, "w")
    low = new_job(store, epochs=RACE_EPOCHS)
    seen: dict = {}

    def submit_urgent_and_reconcile():
        seen["urgent"] = new_job(store, priority=5, epochs=10)
        seen["asked"] = preempted(store, settings)
        # While the urgent job runs, the preempted one waits in the queue: look at it.
        deadline = time.monotonic() + 60
        while store.get_status(low.id) != "queued" and time.monotonic() < deadline:
            time.sleep(0.001)
        seen["last_step"] = max(p["step"] for p in store.get_metrics(low.id)["train_loss"])
        seen["checkpoint_step"] = store.latest_checkpoint(low.id)[0].step

    thread = after_checkpoints(store, low.id, 2, submit_urgent_and_reconcile)
    ran = JobRunner(store, settings, "w", queues=CPU_WORKER).run_next()
    thread.join()

    urgent = seen["urgent"]
    assert seen["asked"] == [low.id]
    assert ran == [(low.id, "preempted"), (urgent.id, "succeeded"), (low.id, "succeeded")]
    assert seen["checkpoint_step"] == seen["last_step"], "checkpointed where it stopped"
    done = store.get_job(low.id)
    assert (done.status, done.attempts, done.infra_failures) == ("succeeded", 2, 0)
    history = store.list_attempts(low.id)
    assert [a["outcome"] for a in history] == ["preempted", "succeeded"]
    assert history[1]["resumed_from_epoch"] >= 2
    urgent_attempt = store.list_attempts(urgent.id)[0]
    assert history[0]["ended_at"] <= urgent_attempt["started_at"]
    assert urgent_attempt["ended_at"] <= history[1]["started_at"]
    assert series(store, low.id) == series(store, reference.id), \
        "every step's value equals the undisturbed run's: none lost, doubled or different"


def test_with_a_long_minimum_the_running_job_keeps_its_worker(store, tmp_path):
    settings = fast(tmp_path, preemption_min_run_seconds=3600)
    live_worker(store, "w")
    low = new_job(store, epochs=RACE_EPOCHS)
    reports: list = []

    def submit_urgent_and_reconcile_until_done():
        reports.append(new_job(store, priority=5))
        while store.get_status(low.id) == "running":
            reports.append(preempted(store, settings))
            time.sleep(0.01)

    thread = after_checkpoints(store, low.id, 2, submit_urgent_and_reconcile_until_done)
    ran = JobRunner(store, settings, "w", queues=CPU_WORKER).run_next()
    thread.join()
    urgent, passes = reports[0], reports[1:]
    assert passes and all(report == [] for report in passes)
    assert ran == [(low.id, "succeeded"), (urgent.id, "succeeded")]
    assert outcomes(store, low.id) == ["succeeded"]


def test_a_cancel_wins_over_a_preemption(store, tmp_path):
    settings = fast(tmp_path)
    live_worker(store, "w")
    low = new_job(store, epochs=RACE_EPOCHS)
    seen: dict = {}

    def preempt_then_cancel():
        seen["urgent"] = new_job(store, priority=5)
        seen["asked"] = preempted(store, settings)
        store.cancel_job(low.id)

    thread = after_checkpoints(store, low.id, 2, preempt_then_cancel)
    ran = JobRunner(store, settings, "w", queues=CPU_WORKER).run_next()
    thread.join()
    assert seen["asked"] == [low.id]
    # Whichever the worker saw first, the job ends cancelled and never runs again.
    assert store.get_status(low.id) == "cancelled"
    assert ran[0] in {(low.id, "stopped"), (low.id, "preempted")}
    assert ran[1:] == [(seen["urgent"].id, "succeeded")]
    assert store.get_job(low.id).attempts == 1
