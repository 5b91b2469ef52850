"""Drives models.train.fit() for one job and persists everything it reports through db.store.

The runner owns the job's life on a worker: claim it (a guarded queued -> running transition, so a
duplicate delivery is harmless), load its data, resume from its latest checkpoint if it has one,
train, and record the outcome. The training core never sees the database; it talks to
`PersistingCallbacks`, which batches metric rows and checks for cancellation between steps.
"""

from __future__ import annotations

import functools
import logging
import time
import traceback

from db.store import Store
from models.data import text_data_from_string
from models.train import Callbacks, JobSpec, fit
from trainyard.settings import Settings, get_settings

log = logging.getLogger("trainyard.worker")


class PersistingCallbacks(Callbacks):
    """Writes what fit() reports to the database, in batches, and answers "should I stop?"."""

    def __init__(self, store: Store, job_id: int, settings: Settings):
        self.store = store
        self.job_id = job_id
        self.flush_seconds = settings.metrics_flush_seconds
        self.cancel_check_seconds = settings.cancel_check_seconds
        self._pending: list[tuple[str, int, int, float, float]] = []
        self._last_flush = time.monotonic()
        self._last_cancel_check = time.monotonic()
        self._last_progress = 0.0
        self._stop = False

    # ---- metrics: buffered, written in one transaction per flush ----
    def _add(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        now = time.time()
        self._pending.extend((name, step, epoch, float(value), now) for name, value in metrics.items())

    def flush(self) -> None:
        if self._pending:
            points, self._pending = self._pending, []
            self.store.add_metrics(self.job_id, points)
        self._last_flush = time.monotonic()

    def on_step(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        self._add(step, epoch, metrics)
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def on_epoch(self, epoch: int, step: int, metrics: dict[str, float], texts: dict[str, str]) -> None:
        self._add(step, epoch, metrics)
        self.flush()
        for name, text in texts.items():
            self.store.add_text(self.job_id, epoch=epoch, step=step, name=name, text=text)

    def on_checkpoint(self, epoch: int, step: int, blob: bytes, metrics: dict) -> None:
        # Metrics first, so a checkpoint never points past the metrics stored for its run.
        self.flush()
        self.store.add_checkpoint(self.job_id, epoch=epoch, step=step, data=blob, metrics=metrics)

    def on_progress(
        self, epoch: int, total_epochs: int, step: int, total_steps: int, eta_seconds: float | None
    ) -> None:
        now = time.monotonic()
        at_epoch_end = total_steps and step % max(1, total_steps // max(1, total_epochs)) == 0
        if now - self._last_progress >= 1.0 or at_epoch_end:
            self._last_progress = now
            self.store.update_progress(
                self.job_id,
                epoch=epoch,
                total_epochs=total_epochs,
                step=step,
                total_steps=total_steps,
                eta_seconds=eta_seconds,
            )

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._stop and now - self._last_cancel_check >= self.cancel_check_seconds:
            self._last_cancel_check = now
            self._stop = self.store.get_status(self.job_id) != "running"
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
            callbacks.flush()
        except Exception as exc:  # the job's own failure: record it, keep the worker alive
            log.exception("job %s failed", job_id)
            try:
                callbacks.flush()
            except Exception:
                log.exception("job %s: could not flush metrics after failure", job_id)
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
        return text_data_from_string(
            raw.decode("utf-8"), tokenizer=spec.hyperparameters["tokenizer"],
        )


@functools.lru_cache(maxsize=1)
def _store_for(url: str) -> Store:
    store = Store(url)
    store.migrate()
    return store


def get_runner(worker_name: str, settings: Settings | None = None) -> JobRunner:
    settings = settings or get_settings()
    return JobRunner(_store_for(settings.resolved_database_url), settings, worker_name)
