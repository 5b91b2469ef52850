"""Drives models.train.fit() for one job and persists everything it reports through db.store.

The runner owns the job's life on a worker: claim the best queued job the worker can run (the
database's order, db/store/scheduling.py; a guarded queued -> running transition, so any number
of workers can claim at once), load its data, resume from its latest checkpoint if it has one,
train, and record the outcome. The training core never sees the database; it talks to
`PersistingCallbacks` (worker/persistence.py), which batches metric rows, hands every write to a
writer process (worker/db_writer.py) so that no database work runs on the trainer's GIL, and
checks for cancellation between steps.

Fault tolerance: while a job runs, a `Heartbeat` thread renews its lease in the database every
`heartbeat_seconds` (whatever the training thread is doing: a long epoch, an evaluation). Its
heartbeats, progress and final transition are guarded by the attempt number, so a worker whose
job was taken from it (lease expired, requeued, claimed elsewhere) learns so at its next beat,
drops the writes it still has queued and stops instead of writing over the new owner. When the
process is asked to shut down (`DRAINING`, set on SIGTERM), the job stops at the next step
boundary, checkpoints that step and goes back to the queue (attempt outcome `drained`); the task
re-sends it and the next worker resumes at the following step.

Preemption: when a reconciler asks a running job to give its worker to a queued job of higher
priority (`jobs.preempt_requested_at`, see db/store/preemption.py), the worker learns it at its
next status check (every `cancel_check_seconds`, the same query as the cancel check), stops at
the next step with a checkpoint there, as a drain does, and puts the job back in the queue
(attempt outcome `preempted`, not an infrastructure failure); `run_next` then claims the best
queued job, the one that asked. The preempted job resumes later exactly at that step. A cancel
wins: a job cancelled meanwhile is not requeued.

Limits: a job may run for `job_time_limit_seconds` in all, summed over its attempts (as the
attempts table records them: a lost worker's attempt counts until the reconciler ended it). Past
that the job stops at the next step, checkpoints it and fails with the reason; a resumed job gets
only what is left. Before training, the job's exact size (with the real vocabulary) is checked
against the caps the API checked with an estimate (models/limits.py).

The job's log: from its claim to its end, this thread's records of the `trainyard` loggers (the
events below, and fit()'s) are captured (worker/job_log.py) and written through the run's
writer with its metrics; each final transition is preceded by writing what is left, so a job
seen ended has its whole log (GET /jobs/{id}/logs).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path

from core.settings import Settings, get_settings
from core.states import DEVICES, FitEnd, JobStatus, Outcome
from db.store import Store, describe_db_error
from db.store.scheduling import device_class_of
from models import loaded_memory_bytes
from models.limits import check_limits, estimate, shape_of_data
from models.registry import FAMILIES
from models.train import JobSpec, load_checkpoint, load_data
from sweeps import driver as sweep_driver
from worker import dataset_cache, gpus
from worker.db_writer import DatabaseWriteError, retry_while_unreachable
from worker.distributed import fit_job
from worker.job_log import JobLogCapture
from worker.persistence import DRAINING, PersistingCallbacks

log = logging.getLogger("trainyard.worker")

TIME_LIMIT_ENV = "TRAINYARD_JOB_TIME_LIMIT_SECONDS"  # Settings.job_time_limit_seconds


class RunEnd(StrEnum):
    """What JobRunner.run() returns besides an attempt's Outcome (succeeded, failed, drained)
    and skipped:<status> (see `skipped`)."""

    STOPPED = "stopped"  # fit() stopped: the job was cancelled, or taken from this worker
    SKIPPED_DRAINING = "skipped:draining"  # this worker is shutting down: the job stays queued


def skipped(status: str | None) -> str:
    """run()'s answer to a delivery of a job that is not queued (a duplicate): its status."""
    return f"skipped:{status}"


class Heartbeat:
    """A daemon thread that renews a running job's lease every `interval` seconds.

    `lost` is set when the database says the job is not ours any more (requeued by a
    reconciler, cancelled, finished elsewhere), and `taken` too when it went back to the queue
    or to another attempt; a failed write (database away) is logged and retried at the next
    beat: the lease is the database's judgement, not ours.
    """

    def __init__(self, store: Store, job_id: int, attempt: int, interval: float):
        self.store, self.job_id, self.attempt, self.interval = store, job_id, attempt, interval
        self.lost = threading.Event()
        self.taken = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"job-{job_id}-heartbeat",
                                        daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                if not self.store.heartbeat(self.job_id, attempt=self.attempt):
                    job = self.store.get_job(self.job_id)
                    if (job is None or job.status == JobStatus.QUEUED
                            or job.attempts != self.attempt):
                        self.taken.set()
                    self.lost.set()
                    return
            except Exception:  # noqa: BLE001 - keep beating; the next one may get through
                log.warning("job %s: heartbeat failed", self.job_id, exc_info=True,
                            extra={"job_id": self.job_id})  # in the job's log too

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)


def _readable_error(exc: BaseException) -> str:
    # A database error is told in the driver's words, never with its SQL statement or
    # parameters (users' data); the whole traceback goes to the worker log.
    described = describe_db_error(exc)
    if described is not None:
        return described
    if isinstance(exc, DatabaseWriteError):  # the writer process's account, already SQL-free
        return str(exc)
    if gpus.is_out_of_memory(exc):
        return gpus.out_of_memory_message(exc)
    # The last frames are what a user needs.
    tail = "".join(traceback.format_exception(exc)[-3:])
    return f"{type(exc).__name__}: {exc}\n{tail}"[:4000]


class JobRunner:
    def __init__(self, store: Store, settings: Settings, worker_name: str,
                 queues: Sequence[str] = DEVICES,
                 wake: Callable[[int, str], None] | None = None):
        self.store = store
        self.settings = settings
        self.worker_name = worker_name
        self.queues = list(queues)  # the devices of the jobs this worker may claim
        self.wake = wake  # wake(job_id, device): a wake-up on the broker, for launched trials

    def run_next(self) -> list[tuple[int, str]]:
        """Claim the best queued job this worker can run (the database's order: priority,
        fair share, age; see db/store/scheduling.py), run it, and go on with the next until
        none is eligible or the worker drains. Returns (job id, what `run` would return) for
        each job run. A wake-up message that finds nothing to claim returns []."""
        ran: list[tuple[int, str]] = []
        while not DRAINING.is_set():
            job = self.store.claim_next_job(
                self.worker_name, self.queues, device_class_of(self.queues),
                max_running_per_owner=self.settings.max_running_jobs_per_user,
                capacity=gpus.capacity(self.queues, self.settings.gpu_memory_reserve_bytes),
                backfill_seconds=self.settings.gpu_backfill_seconds)
            if job is None:
                break
            ran.append((job.id, self._run_job(job)))
        return ran

    def run(self, job_id: int) -> str:
        """Run this job, if it is queued (`run_next` is how workers take jobs: in the queue's
        order). Returns succeeded, failed, stopped (cancelled, or taken from this worker),
        drained or preempted (given back to the queue) or skipped:<status> (not queued)."""
        if DRAINING.is_set():
            # Shutting down: leave the job queued.
            return RunEnd.SKIPPED_DRAINING
        job = self.store.claim_job(job_id, worker=self.worker_name,
                                   device_class=device_class_of(self.queues))
        if job is None:
            # Not queued any more (cancelled, or another worker owns it): a duplicate delivery.
            current = self.store.get_status(job_id)
            log.info("job %s not claimed (status %s): skipping", job_id, current)
            return skipped(current)
        return self._run_job(job)

    def _run_job(self, job) -> str:
        """Run a job this worker has just claimed, with its lease renewed meanwhile; a sweep's
        trial that ended lets its sweep launch the next ones."""
        attempt = job.attempts
        # the job's log: this thread's records from here on (worker/job_log.py)
        job_log = JobLogCapture(job.id, attempt, self.settings.job_log_level,
                                self.settings.job_log_max_lines).attach()
        try:
            log.info("job %s (priority %s, owner %s) claimed by %s (attempt %s)", job.id,
                     job.priority, job.owner, self.worker_name, attempt)
            heartbeat = Heartbeat(self.store, job.id, attempt,
                                  self.settings.heartbeat_seconds).start()
            try:
                outcome = self._run_claimed(job, attempt, heartbeat, job_log)
            finally:
                heartbeat.stop()
        finally:
            job_log.detach()
            self._write_log(job_log)  # what came after the final transition
        if job.sweep_id is not None:
            self._advance_sweep(job.sweep_id)
        return outcome

    def _advance_sweep(self, sweep_id: int) -> None:
        # The reconciler advances every running sweep too: a failure here only delays it.
        try:
            for launched in sweep_driver.advance(self.store, sweep_id, self.settings):
                if self.wake is not None:
                    self.wake(launched.id, launched.device)
        except Exception:  # noqa: BLE001
            log.warning("sweep %s: could not launch its next trials", sweep_id, exc_info=True)

    def _write_log(self, job_log: JobLogCapture) -> None:
        """Write the job's captured lines now (the run's writer is closed, or never opened)."""
        try:
            job_log.write_now(self.store, self.settings.db_retry_seconds)
        except Exception:  # noqa: BLE001 - a lost log line never fails the job
            log.warning("job %s: could not write its log lines", job_log.job_id, exc_info=True)

    def _end(self, job_log: JobLogCapture, transition, *args, **kwargs):
        """The job's final transition (guarded; retried while the database is away), its log
        written first: whoever sees the job end finds in its log how it ended."""
        self._write_log(job_log)
        return self._retry(transition, *args, **kwargs)

    def _run_claimed(self, job, attempt: int, heartbeat: Heartbeat,
                     job_log: JobLogCapture) -> str:
        job_id = job.id
        limit = self.settings.job_time_limit_seconds
        used = self._time_used(job_id, attempt)
        if used >= limit:  # resumed with no time left: fail without loading anything
            error = (f"time limit of {limit:g} s exceeded: earlier attempts ran for "
                     f"{used:.0f} s ({TIME_LIMIT_ENV})")
            log.error("job %s failed: %s", job_id, error)
            self._end(job_log, self.store.finish_job, job_id, JobStatus.FAILED, error=error,
                      attempt=attempt)
            return Outcome.FAILED
        callbacks = PersistingCallbacks(self.store, job_id, self.settings, attempt=attempt,
                                        heartbeat=heartbeat,
                                        deadline=time.monotonic() + limit - used,
                                        judge_epoch=self._judge(job),
                                        best_metric=_headline_metric(job.model),
                                        job_log=job_log)
        try:
            # The API checked the stored hyperparameters; the JobSpec is the one check on
            # this side (and fills in defaults a job stored without them lacks).
            spec = JobSpec(
                model=job.model,
                dataset=job.dataset,
                hyperparameters=job.hyperparameters,
                device=job.device,
            )
            data = load_data(spec, self.settings.resolved_data_dir,
                             uploaded=self._uploaded_file(job))
            log.info("job %s: data loaded: %s", job_id, _data_text(job, data))
            self._check_size(spec, data)
            # Exact now (real vocabulary, real dataset size): claims on a shared GPU count it
            self._retry(self.store.set_memory_bytes, job_id,
                        loaded_memory_bytes(spec.model, spec.hyperparameters, data), attempt)
            latest = self._resume_point(job_id, attempt)
            resume_from = latest[1] if latest else None
            init_from = None
            if resume_from is not None:
                # a fork's own checkpoints come first: an interrupted fork resumes from them
                log.info("job %s resumed from epoch %s, step %s (checkpoint %s)", job_id,
                         latest[0].epoch, latest[0].step, latest[0].id)
            elif job.parent_checkpoint_id is not None:
                init_from = self._parent_checkpoint(job)
            else:
                log.info("job %s started fresh (no checkpoint to resume from)", job_id)
            # "gpus": k > 1 trains on k processes, this one rank 0 (worker/distributed.py)
            result = fit_job(spec, callbacks, gpus=getattr(job, "gpus", 1) or 1, data=data,
                             resume_from=resume_from, init_from=init_from,
                             init_optimizer=job.resume_optimizer)
            callbacks.close()
        except Exception as exc:  # the job's own failure: record it, keep the worker alive
            # the traceback, in the worker's log and the job's
            log.exception("job %s failed: %s: %s", job_id, type(exc).__name__, exc)
            try:
                callbacks.close()
            except Exception:
                log.exception("job %s: could not write its last metrics after the failure", job_id)
            gpus.release_cached_memory()  # a job that ran out of GPU memory leaves none held
            self._end(job_log, self.store.finish_job, job_id, JobStatus.FAILED,
                      error=_readable_error(exc), attempt=attempt)
            return Outcome.FAILED
        return self._record_end(job, attempt, heartbeat, job_log, callbacks, result, limit)

    def _record_end(self, job, attempt: int, heartbeat: Heartbeat, job_log: JobLogCapture,
                    callbacks: PersistingCallbacks, result, limit: float) -> str:
        """The transition for how fit() ended, each said in the job's log first."""
        job_id = job.id
        if callbacks.pruned and not heartbeat.lost.is_set():
            log.info("job %s pruned by its sweep after epoch %s", job_id, result.epochs_done)
            if self._end(job_log, self.store.finish_job, job_id, JobStatus.PRUNED,
                         attempt=attempt):
                return Outcome.PRUNED
        if result.status == FitEnd.COMPLETED:
            log.info("job %s succeeded: %s", job_id, _metrics_text(result.final_metrics))
            if not self._end(job_log, self.store.finish_job, job_id, JobStatus.SUCCEEDED,
                             attempt=attempt):
                log.warning("job %s completed here but was no longer ours (status %s)", job_id,
                            self.store.get_status(job_id))
                return RunEnd.STOPPED
            return Outcome.SUCCEEDED
        if callbacks.timed_out:
            # result.epochs_done is the epoch in progress, 0-based; users count from 1.
            error = (f"time limit of {limit:g} s exceeded at epoch {result.epochs_done + 1}, "
                     f"step {result.steps_done} ({TIME_LIMIT_ENV})")
            log.error("job %s failed: %s", job_id, error)
            if self._end(job_log, self.store.finish_job, job_id, JobStatus.FAILED, error=error,
                         attempt=attempt):
                return Outcome.FAILED
        if DRAINING.is_set() and not heartbeat.lost.is_set():
            # Every metric of the steps done is written (close() above); the job resumes from
            # its newest checkpoint on another worker, re-run steps replacing their rows.
            log.info("job %s drained at step %s (this worker is shutting down): back in the "
                     "queue", job_id, result.steps_done)
            if self._end(job_log, self.store.requeue_job, job_id, outcome=Outcome.DRAINED,
                         attempt=attempt):
                return Outcome.DRAINED
        # Preempted: as a drain, but this worker stays (run_next claims the job that asked for
        # it). Guarded by the attempt, so a cancel that came meanwhile wins (stopped below).
        if callbacks.preempted and not heartbeat.lost.is_set():
            log.info("job %s preempted at step %s: back in the queue", job_id, result.steps_done)
            if self._end(job_log, self.store.requeue_job, job_id, outcome=Outcome.PREEMPTED,
                         attempt=attempt):
                return Outcome.PREEMPTED
        # fit() stopped because should_stop() said so: cancelled, or taken from this worker
        # (or given back just as it was cancelled).
        status = self.store.get_status(job_id)
        if status == JobStatus.CANCELLED:
            log.info("job %s cancelled: stopped at epoch %s, step %s", job_id,
                     result.epochs_done + 1, result.steps_done)
        else:
            log.info("job %s stopped at epoch %s (status %s)", job_id, result.epochs_done,
                     status)
        return RunEnd.STOPPED

    def _parent_checkpoint(self, job) -> bytes:
        """The bytes of the checkpoint a fork starts from (its parent's pruning keeps it);
        ValueError, failing the job, when it is gone or damaged."""
        parent, checkpoint = job.parent_job_id, job.parent_checkpoint_id
        found = None if parent is None else self.store.get_checkpoint_data(parent, checkpoint)
        if found is None:
            raise ValueError(f"this job is a fork of checkpoint {checkpoint} of job "
                             f"{parent if parent is not None else '(deleted)'}, which no longer "
                             "exists")
        record, blob = found
        if hashlib.sha256(blob).hexdigest() != record.sha256:
            raise ValueError(f"checkpoint {checkpoint} of job {parent}, which this fork starts "
                             "from, is damaged (sha256 mismatch)")
        log.info("job %s starts from checkpoint %s of job %s (epoch %s, step %s)%s", job.id,
                 checkpoint, parent, record.epoch, record.step,
                 " with its optimizer state" if job.resume_optimizer else "")
        return blob

    def _judge(self, job) -> Callable[[int], bool] | None:
        """A trial's epoch-end question to its sweep's pruner (None outside sweeps); never
        asked at the last epoch, which ends the trial anyway."""
        if job.sweep_id is None:
            return None
        sweep = self.store.get_sweep(job.sweep_id)
        if sweep is None or sweep.early_stopping.get("method", "none") == "none":
            return None  # nothing to ask: no wait for the epoch's writes either
        epochs = int((job.hyperparameters or {}).get("epochs", 0))
        return lambda epoch: epoch < epochs and sweep_driver.judge_epoch(self.store, sweep,
                                                                         job.id, epoch)

    def _resume_point(self, job_id: int, attempt: int):
        """The newest checkpoint whose bytes match their sha256 and load, with its bytes; a
        corrupt one is skipped for the one before it (None: start from scratch)."""
        newest_first = list(reversed(self.store.list_checkpoints(job_id)))
        for i, record in enumerate(newest_first):
            found = self.store.get_checkpoint_data(job_id, record.id)
            if found is None:  # pruned meanwhile
                continue
            _, blob = found
            try:
                if hashlib.sha256(blob).hexdigest() != record.sha256:
                    raise ValueError("sha256 mismatch")
                load_checkpoint(blob)
            except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is skipped
                log.error("job %s: checkpoint %s (epoch %s) is corrupt (%s): trying the one "
                          "before", job_id, record.id, record.epoch, exc)
                continue
            if i:
                self.store.set_attempt_resumed_from(job_id, attempt, record.epoch)
            return record, blob
        if newest_first:
            self.store.set_attempt_resumed_from(job_id, attempt, None)
        return None

    def _time_used(self, job_id: int, attempt: int) -> float:
        """Seconds the job's earlier attempts ran, from the attempts table. An attempt without
        an end (should not happen once a later one started) counts until the next began."""
        earlier = [a for a in self.store.list_attempts(job_id) if a["number"] < attempt]
        used = 0.0
        for a, after in zip(earlier, [*earlier[1:], None]):
            end = a["ended_at"] or (after["started_at"] if after else None)
            if end is not None:
                # clamp: attempts are timed by different machines' clocks
                used += max(0.0, (end - a["started_at"]).total_seconds())
        return used

    def _check_size(self, spec: JobSpec, data) -> None:
        """The API checked an estimate (for text: a bound of the vocabulary); this is exact,
        and also holds for jobs queued before the caps were lowered."""
        check_limits(estimate(spec.model, spec.hyperparameters, shape_of_data(data)),
                     self.settings.max_model_parameters, self.settings.max_activation_bytes)

    def _retry(self, fn, *args, **kwargs):
        return retry_while_unreachable(fn, *args, retry_seconds=self.settings.db_retry_seconds,
                                       **kwargs)

    def _uploaded_file(self, job) -> tuple[Path, str] | None:
        """(path, kind) of the job's uploaded dataset in this worker's cache, fetched from the
        database once per version (worker/dataset_cache.py); None for a built-in dataset.
        The job trains on the version recorded at submit, never a newer one; a job without a
        recorded version (queued before migration 0013, a sweep's trial) on the newest, or
        on the `name@N` its dataset names."""
        name, version, record = self.store.find_upload(job.dataset, job.owner,
                                                       job.dataset_version)
        if record is None:
            if version is not None:
                raise ValueError(f"dataset {name}@{version} no longer exists (deleted after "
                                 "the job was submitted)")
            return None  # built-in
        if job.dataset_sha256 is not None and record.sha256 != job.dataset_sha256:
            raise ValueError(f"dataset {record.ref} is not the one the job was submitted "
                             f"with (sha256 {job.dataset_sha256[:12]}..., now "
                             f"{record.sha256[:12]}...): it was deleted and uploaded again")
        cached = dataset_cache.ensure(self.store, record, self.settings.home,
                                      self.settings.dataset_cache_bytes)
        return cached.path, record.kind


@functools.lru_cache(maxsize=1)
def store_for(url: str) -> Store:
    """One migrated Store per database URL for this worker process."""
    store = Store(url)
    store.migrate()
    return store


def get_runner(worker_name: str, settings: Settings | None = None,
               queues: Sequence[str] = DEVICES,
               wake: Callable[[int, str], None] | None = None) -> JobRunner:
    settings = settings or get_settings()
    return JobRunner(store_for(settings.resolved_database_url), settings, worker_name, queues,
                     wake)


def _metrics_text(metrics: dict) -> str:
    shown = {k: v for k, v in metrics.items() if not k.startswith("grad_norm/")}
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in sorted(shown.items())) or "no metrics"


def _data_text(job, data) -> str:
    """What a job's data loading found, in one line: dataset (version) and its size."""
    name = job.dataset
    version = getattr(job, "dataset_version", None)
    if version is not None and "@" not in name:
        name = f"{name}@{version}"
    if hasattr(data, "x_train"):
        return (f"dataset {name}: {len(data.x_train):,} training and {len(data.x_val):,} "
                f"validation images, {data.num_classes} classes, {data.channels} x "
                f"{data.height} x {data.width}")
    return (f"dataset {name}: {len(data.train_ids):,} training and {len(data.val_ids):,} "
            f"validation tokens ({data.tokenizer} level, vocabulary {data.vocab_size:,})")


def _headline_metric(model: str) -> str | None:
    fam = FAMILIES.get(model)
    return fam.headline_metric if fam is not None else None
