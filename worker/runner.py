"""Drives models.train.fit() for one job and persists everything it reports through db.store.

The runner owns the job's life on a worker: claim it (a guarded queued -> running transition, so a
duplicate delivery is harmless), load its data, resume from its latest checkpoint if it has one,
train, and record the outcome. The training core never sees the database; it talks to
`PersistingCallbacks`, which batches metric rows, writes them from a background thread, and
checks for cancellation between steps.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
import traceback

from db.store import Store
from models.data import text_data_from_string
from models.train import Callbacks, JobSpec, fit
from trainyard.settings import Settings, get_settings

log = logging.getLogger("trainyard.worker")


class DatabaseWriter:
    """One background thread that performs a job's database writes, in the order submitted.

    Training never waits for a commit (a Postgres commit waits for its log flush: ~10 ms), and
    the order still guarantees that a checkpoint lands after the metrics that precede it. The
    queue is bounded, so a slow database slows training down instead of growing memory. The
    first failed write is re-raised in the training thread at the next submit or at close().
    """

    def __init__(self, name: str, max_pending: int = 1000):
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:  # after a failure, drop the rest: the job is failing
                    fn, args, kwargs = item
                    fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, fn, *args, **kwargs) -> None:
        self._raise_if_failed()
        self._queue.put((fn, args, kwargs))

    def drain(self) -> None:
        """Wait until every submitted write is done; raise the first failure."""
        self._queue.join()
        self._raise_if_failed()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class PersistingCallbacks(Callbacks):
    """Writes what fit() reports to the database, in batches, and answers "should I stop?"."""

    def __init__(self, store: Store, job_id: int, settings: Settings):
        self.store = store
        self.job_id = job_id
        self.flush_seconds = settings.metrics_flush_seconds
        self.cancel_check_seconds = settings.cancel_check_seconds
        self.checkpoints_keep = settings.checkpoints_keep
        self.writer = DatabaseWriter(name=f"job-{job_id}-writer")
        self._pending: list[tuple[str, int, int, float, float]] = []
        self._last_flush = time.monotonic()
        self._last_cancel_check = time.monotonic()
        self._stop = False
        self._closed = False

    # ---- metrics: buffered, then written in one transaction per flush ----
    def _add(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        now = time.time()
        self._pending.extend((name, step, epoch, float(value), now) for name, value in metrics.items())

    def flush(self) -> None:
        if self._pending:
            points, self._pending = self._pending, []
            self.writer.submit(self.store.add_metrics, self.job_id, points)
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Write what is left and wait for every write to land (raises the first failure)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
            self.writer.drain()
        finally:
            self.writer.close()

    def on_step(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        self._add(step, epoch, metrics)
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def on_epoch(self, epoch: int, step: int, metrics: dict[str, float], texts: dict[str, str]) -> None:
        self._add(step, epoch, metrics)
        self.flush()
        for name, text in texts.items():
            self.writer.submit(self.store.add_text, self.job_id, epoch=epoch, step=step,
                               name=name, text=text)

    def on_checkpoint(self, epoch: int, step: int, blob: bytes, metrics: dict) -> None:
        # Metrics first, so a checkpoint never points past the metrics stored for its run.
        self.flush()
        self.writer.submit(self.store.add_checkpoint, self.job_id, epoch=epoch, step=step,
                           data=blob, metrics=metrics, keep_last=self.checkpoints_keep or None)

    def on_progress(
        self, epoch: int, total_epochs: int, step: int, total_steps: int, eta_seconds: float | None
    ) -> None:
        self.writer.submit(self._write_progress, epoch, total_epochs, step, total_steps, eta_seconds)

    def _write_progress(self, epoch, total_epochs, step, total_steps, eta_seconds) -> None:
        still_running = self.store.update_progress(
            self.job_id, epoch=epoch, total_epochs=total_epochs, step=step,
            total_steps=total_steps, eta_seconds=eta_seconds,
        )
        if not still_running:  # cancelled (or taken away) while we trained
            self._stop = True

    def _check_status(self) -> None:
        if self.store.get_status(self.job_id) != "running":
            self._stop = True

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._stop and now - self._last_cancel_check >= self.cancel_check_seconds:
            self._last_cancel_check = now
            self.writer.submit(self._check_status)  # answered on the writer thread
        return self._stop


def _readable_error(exc: BaseException) -> str:
    # The last frames are what a user needs; the whole traceback goes to the worker log.
    tail = "".join(traceback.format_exception(exc)[-3:])
    return f"{type(exc).__name__}: {exc}\n{tail}"[:4000]


class JobRunner:
    def __init__(self, store: Store, settings: Settings, worker_name: str):
        self.store = store
        self.settings = settings
        self.worker_name = worker_name

    def run(self, job_id: int) -> str:
        job = self.store.claim_job(job_id, worker=self.worker_name)
        if job is None:
            # Not queued any more (cancelled, or another worker owns it): a duplicate delivery.
            current = self.store.get_status(job_id)
            log.info("job %s not claimed (status %s): skipping", job_id, current)
            return f"skipped:{current}"

        log.info("job %s claimed by %s (attempt %s)", job_id, self.worker_name, job.attempts)
        callbacks = PersistingCallbacks(self.store, job_id, self.settings)
        try:
            spec = JobSpec(
                model=job.model,
                dataset=job.dataset,
                hyperparameters=job.hyperparameters,
                device=job.device,
            )
            data = self._uploaded_data(spec)
            latest = self.store.latest_checkpoint(job_id)
            resume_from = latest[1] if latest else None
            if resume_from is not None:
                log.info("job %s resumes from checkpoint at epoch %s", job_id, latest[0].epoch)
            result = fit(
                spec,
                callbacks,
                data=data,
                data_dir=self.settings.resolved_data_dir,
                resume_from=resume_from,
            )
            callbacks.close()
        except Exception as exc:  # the job's own failure: record it, keep the worker alive
            log.exception("job %s failed", job_id)
            try:
                callbacks.close()
            except Exception:
                log.exception("job %s: could not write its last metrics after the failure", job_id)
            self.store.finish_job(job_id, "failed", error=_readable_error(exc))
            return "failed"

        if result.status == "completed":
            self.store.finish_job(job_id, "succeeded")
            log.info("job %s succeeded: %s", job_id, result.final_metrics)
            return "succeeded"
        # fit() stopped because should_stop() said so: the job was cancelled in the database.
        log.info("job %s stopped at epoch %s (status %s)", job_id, result.epochs_done,
                 self.store.get_status(job_id))
        return "stopped"

    def _uploaded_data(self, spec: JobSpec):
        """Uploaded datasets live in the database so any worker can read them; built-in ones
        are loaded by fit() itself from the package or the data directory."""
        raw = self.store.get_dataset_data(spec.dataset)
        if raw is None:
            return None
        hp = spec.hyperparameters
        return text_data_from_string(
            raw.decode("utf-8"), tokenizer=hp["tokenizer"], max_vocab=hp["max_vocab"]
        )


@functools.lru_cache(maxsize=1)
def _store_for(url: str) -> Store:
    store = Store(url)
    store.migrate()
    return store


def get_runner(worker_name: str, settings: Settings | None = None) -> JobRunner:
    settings = settings or get_settings()
    return JobRunner(_store_for(settings.resolved_database_url), settings, worker_name)
