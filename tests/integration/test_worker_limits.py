"""The worker's limits against a real database (SQLite and Postgres), without a broker: a job's
running time over all its attempts is capped, and its exact size is checked before training."""

from __future__ import annotations

import datetime as dt
import re
import time

from sqlalchemy import update

from db.tables import JobAttempt
from core.settings import Settings
from worker.runner import JobRunner

# A job that would run for minutes: 1000 epochs of 6 steps on digits.
LONG_MLP = {"epochs": 1000, "hidden_sizes": [16, 16], "steps_per_epoch": 6, "seed": 3}
TIME_LIMIT_ERROR = re.compile(
    r"^time limit of (\d+) s exceeded at epoch (\d+), step (\d+) "
    r"\(TRAINYARD_JOB_TIME_LIMIT_SECONDS\)$")


def runner_with(store, tmp_path, **settings) -> JobRunner:
    return JobRunner(store, Settings(home=tmp_path, metrics_flush_seconds=0.05,
                                     cancel_check_seconds=0.0, **settings), worker_name="w")


def backdate_first_attempt(store, job_id: int, seconds: float) -> None:
    """Make attempt 1 (already ended) look as if it ran for `seconds`."""
    (attempt,) = [a for a in store.list_attempts(job_id) if a["number"] == 1]
    with store.engine.begin() as conn:
        conn.execute(update(JobAttempt)
                     .where(JobAttempt.job_id == job_id, JobAttempt.number == 1)
                     .values(started_at=attempt["ended_at"] - dt.timedelta(seconds=seconds)))


def test_a_job_past_its_time_limit_fails_at_the_next_step_and_keeps_its_checkpoint(
        store, tmp_path):
    job = store.create_job(model="mlp", dataset="digits", hyperparameters=LONG_MLP,
                           device="cpu")
    started = time.monotonic()
    assert runner_with(store, tmp_path, job_time_limit_seconds=2).run(job.id) == "failed"
    took = time.monotonic() - started

    failed = store.get_job(job.id)
    assert failed.status == "failed"
    match = TIME_LIMIT_ERROR.match(failed.error)
    assert match, failed.error
    limit, epoch, step = map(int, match.groups())
    assert limit == 2 and 1 <= epoch < 1000
    assert took < 30, "it stopped at the limit, not at the end of training"
    # stopped at the step the error names: no step trained past it
    steps = [p["step"] for p in store.get_metrics(job.id)["train_loss"]]
    assert max(steps) == step < 6000
    # the work done is kept: the newest checkpoint is at (or just before) that step and loads
    record, blob = store.latest_checkpoint(job.id)
    assert step - 6 <= record.step <= step and len(blob) == record.size
    attempts = store.list_attempts(job.id)
    assert [a["outcome"] for a in attempts] == ["failed"]


def test_a_resumed_job_gets_only_the_time_its_earlier_attempts_left(store, tmp_path):
    job = store.create_job(model="mlp", dataset="digits", hyperparameters=LONG_MLP,
                           device="cpu")
    # Attempt 1: a worker claimed it and was lost after running 3598 s of an hour's limit.
    store.claim_job(job.id, worker="lost-worker")
    assert store.requeue_job(job.id)
    backdate_first_attempt(store, job.id, 3598)

    started = time.monotonic()
    assert runner_with(store, tmp_path, job_time_limit_seconds=3600).run(job.id) == "failed"
    assert time.monotonic() - started < 30, "about the 2 s left, not another hour"
    failed = store.get_job(job.id)
    assert TIME_LIMIT_ERROR.match(failed.error), failed.error
    assert "time limit of 3600 s" in failed.error and failed.attempts == 2
    assert store.get_metrics(job.id)["train_loss"], "it trained in the time left"


def test_a_job_with_no_time_left_fails_without_training(store, tmp_path):
    job = store.create_job(model="mlp", dataset="digits", hyperparameters=LONG_MLP,
                           device="cpu")
    store.claim_job(job.id, worker="lost-worker")
    assert store.requeue_job(job.id)
    backdate_first_attempt(store, job.id, 4000)

    assert runner_with(store, tmp_path, job_time_limit_seconds=3600).run(job.id) == "failed"
    failed = store.get_job(job.id)
    assert failed.error == ("time limit of 3600 s exceeded: earlier attempts ran for 4000 s "
                            "(TRAINYARD_JOB_TIME_LIMIT_SECONDS)")
    assert store.get_metrics(job.id) == {}


def test_a_job_over_the_size_caps_fails_before_training(store, tmp_path):
    # Queued without the API's check (or before the caps were lowered): the worker refuses it
    # with the exact size. 64*16+16 + 16*16+16 + 16*10+10 = 1482 parameters.
    job = store.create_job(model="mlp", dataset="digits", hyperparameters=LONG_MLP,
                           device="cpu")
    runner = runner_with(store, tmp_path, max_model_parameters=1000)
    assert runner.run(job.id) == "failed"
    failed = store.get_job(job.id)
    assert "estimated 1,482 parameters; the limit is 1,000 (TRAINYARD_MAX_MODEL_PARAMETERS)" \
        in failed.error
    assert store.get_metrics(job.id) == {} and store.list_checkpoints(job.id) == []
