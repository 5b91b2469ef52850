"""The worker's runner against a real database (SQLite and Postgres), without a broker in between:
what a delivered task does with a job id."""

from __future__ import annotations

import struct
import threading
import time

import numpy as np
import pytest

from models.train import Callbacks, JobSpec, fit
from core.settings import Settings
from worker.celery_app import DEVICE_QUEUES, make_celery, queue_for_device
from worker.runner import JobRunner

TINY_MLP = {"epochs": 3, "hidden_sizes": [16, 16], "steps_per_epoch": 6, "seed": 3}


@pytest.fixture
def runner(store, tmp_path):
    settings = Settings(home=tmp_path, metrics_flush_seconds=0.05, cancel_check_seconds=0.0)
    return JobRunner(store, settings, worker_name="test-worker")


def final(store, job_id) -> dict:
    return {name: s["final"] for name, s in store.metric_summaries([job_id])[job_id].items()
            if not name.endswith("_per_s")}


def test_a_job_runs_once_even_when_delivered_twice(store, runner):
    job = store.create_job(model="mlp", dataset="digits", hyperparameters=TINY_MLP, device="cpu")
    assert runner.run(job.id) == "succeeded"
    # The broker may deliver the same message again (acks_late): the guarded claim refuses it.
    assert runner.run(job.id) == "skipped:succeeded"
    done = store.get_job(job.id)
    assert (done.status, done.attempts, done.worker) == ("succeeded", 1, "test-worker")
    assert (done.epoch, done.total_epochs, done.step) == (3, 3, 18)

    series = store.get_metrics(job.id)
    assert [p["step"] for p in series["train_loss"]] == list(range(1, 19))
    assert len(series["val_accuracy"]) == 3
    checkpoints = store.list_checkpoints(job.id)
    assert [c.epoch for c in checkpoints] == [1, 2, 3]


def test_only_the_newest_checkpoints_are_kept(store, tmp_path):
    settings = Settings(home=tmp_path, checkpoints_keep=2)
    job = store.create_job(model="mlp", dataset="digits",
                           hyperparameters={**TINY_MLP, "epochs": 5}, device="cpu")
    assert JobRunner(store, settings, worker_name="w").run(job.id) == "succeeded"
    # the newest two, and the best by val_accuracy (the one predict uses by default)
    accuracy = {p["epoch"]: p["value"] for p in store.get_metrics(job.id)["val_accuracy"]}
    best = max(accuracy, key=lambda epoch: (accuracy[epoch], epoch))
    assert [c.epoch for c in store.list_checkpoints(job.id)] == sorted({4, 5, best})
    record, blob = store.latest_checkpoint(job.id)
    assert record.epoch == 5 and len(blob) == record.size
    store.prune_checkpoints(job.id, keep_last=1)
    assert [c.epoch for c in store.list_checkpoints(job.id)] == [5]


def test_a_failing_job_ends_failed_with_a_readable_error(store, runner):
    job = store.create_job(model="mlp", dataset="no-such-dataset", hyperparameters=TINY_MLP,
                           device="cpu")
    assert runner.run(job.id) == "failed"
    failed = store.get_job(job.id)
    assert failed.status == "failed"
    assert "no-such-dataset" in failed.error and failed.finished_at is not None


def _write_idx(path, array, type_code: int) -> None:
    with open(path, "wb") as fh:
        fh.write(bytes([0, 0, type_code, array.ndim]))
        fh.write(struct.pack(f">{array.ndim}I", *array.shape))
        fh.write(array.astype(array.dtype.newbyteorder(">")).tobytes())


def test_a_diverging_job_fails_at_the_bad_step_and_keeps_its_last_good_checkpoint(store, tmp_path):
    # MNIST-format float images, one of which holds a NaN: with this seed the bad image is first
    # drawn at step 6, after five good epochs (CPU training is deterministic).
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = (rng.random((200, 8, 8)) * 255).astype(np.float32)
    images[7, 3, 3] = np.nan
    _write_idx(folder / "train-images-idx3-ubyte", images, 0x0D)
    _write_idx(folder / "train-labels-idx1-ubyte", rng.integers(0, 10, 200).astype(np.uint8), 0x08)
    settings = Settings(home=tmp_path, metrics_flush_seconds=0.05)
    job = store.create_job(model="mlp", dataset="mnist", device="cpu", hyperparameters={
        "epochs": 30, "steps_per_epoch": 1, "batch_size": 8, "seed": 6, "hidden_sizes": [16, 16]})

    assert JobRunner(store, settings, worker_name="w").run(job.id) == "failed"
    failed = store.get_job(job.id)
    assert failed.status == "failed"
    assert "diverged" in failed.error and "step 6" in failed.error
    record, blob = store.latest_checkpoint(job.id)
    assert record.epoch == 5 and len(blob) == record.size, "the last good checkpoint is kept"
    steps = [p["step"] for p in store.get_metrics(job.id)["train_loss"]]
    assert steps[:5] == [1, 2, 3, 4, 5] and max(steps) <= 6


def test_cuda_job_on_a_cpu_machine_fails_clearly(store, runner):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    job = store.create_job(model="mlp", dataset="digits", hyperparameters=TINY_MLP, device="cuda")
    assert runner.run(job.id) == "failed"
    assert "CUDA is not available" in store.get_job(job.id).error


def test_cancelled_job_stops_between_steps(store, runner):
    job = store.create_job(model="mlp", dataset="digits",
                           hyperparameters={**TINY_MLP, "epochs": 1000}, device="cpu")

    def cancel_after_first_checkpoint():  # the API, in another thread
        deadline = time.monotonic() + 60
        while not store.list_checkpoints(job.id) and time.monotonic() < deadline:
            time.sleep(0.01)
        store.cancel_job(job.id)

    canceller = threading.Thread(target=cancel_after_first_checkpoint)
    canceller.start()
    assert runner.run(job.id) == "stopped"
    canceller.join()
    cancelled = store.get_job(job.id)
    assert cancelled.status == "cancelled"
    assert cancelled.epoch < 100, "the worker noticed the cancel long before the end"


def test_a_requeued_job_resumes_from_its_checkpoint_with_identical_results(store, runner):
    uninterrupted = store.create_job(model="mlp", dataset="digits", hyperparameters=TINY_MLP,
                                     device="cpu")
    runner.run(uninterrupted.id)

    job = store.create_job(model="mlp", dataset="digits", hyperparameters=TINY_MLP, device="cpu")
    # First attempt: a worker trains one epoch, stores its checkpoint, then loses the job.
    claimed = store.claim_job(job.id, worker="lost-worker")

    class OneEpoch(Callbacks):
        def on_step(self, step, epoch, metrics):
            store.add_metrics(job.id, [(k, step, epoch, v) for k, v in metrics.items()])

        def on_epoch(self, epoch, step, metrics, texts):
            store.add_metrics(job.id, [(k, step, epoch, v) for k, v in metrics.items()])

        def on_checkpoint(self, epoch, step, blob, metrics):
            store.add_checkpoint(job.id, epoch=epoch, step=step, data=blob, metrics=metrics)
            self.stopped = True

        def should_stop(self):
            return getattr(self, "stopped", False)

    spec = JobSpec(claimed.model, claimed.dataset, claimed.hyperparameters, "cpu")
    assert fit(spec, OneEpoch()).status == "stopped"
    assert store.requeue_job(job.id)

    # Second attempt, on our runner: resumes at epoch 2 and ends exactly where the other run did.
    assert runner.run(job.id) == "succeeded"
    resumed = store.get_job(job.id)
    assert resumed.attempts == 2
    assert final(store, job.id) == final(store, uninterrupted.id)
    steps = [p["step"] for p in store.get_metrics(job.id)["train_loss"]]
    assert steps == list(range(1, 19)), "no step missing or doubled across the resume"


def test_celery_is_configured_for_long_jobs_and_json_only(tmp_path):
    app = make_celery(Settings(home=tmp_path))
    conf = app.conf
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert conf.task_acks_late and conf.worker_prefetch_multiplier == 1
    assert {q.name for q in conf.task_queues} == set(DEVICE_QUEUES)
    assert queue_for_device("cuda") == "cuda"
    with pytest.raises(ValueError, match="cpu, cuda, auto"):
        queue_for_device("tpu")
