"""What fit() reports, persisted: `PersistingCallbacks` batches metric rows, hands every write to
a `StoreWriter` (worker/db_writer.py: a writer process by default, so the trainer never runs
SQLAlchemy), and answers fit()'s "should I stop?" from what the database said (cancel,
preemption, lost lease) and from this process's own reasons (drain, time limit, pruning).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from core.metrics import metric_goal
from core.settings import Settings
from core.states import JobStatus
from db.store import Store
from models.train import Callbacks
from worker.db_writer import open_store_writer

if TYPE_CHECKING:
    from worker.job_log import JobLogCapture
    from worker.runner import Heartbeat

log = logging.getLogger("trainyard.worker")

# Set once this worker process is shutting down (SIGTERM): the running job gives itself back.
DRAINING = threading.Event()


def storable_text(text: str) -> str:
    """`text` as any database can store it. A model trained on a text that holds NUL (an
    upload from before uploads refused it) can sample NUL, which Postgres text refuses: it
    becomes U+FFFD, the replacement character, so the job does not fail over its sample."""
    return text.replace("\x00", "\ufffd")


class PersistingCallbacks(Callbacks):
    """Writes what fit() reports to the database, in batches, and answers "should I stop?"."""

    def __init__(self, store: Store, job_id: int, settings: Settings, attempt: int | None = None,
                 heartbeat: Heartbeat | None = None, deadline: float | None = None,
                 judge_epoch: Callable[[int], bool] | None = None,
                 best_metric: str | None = None, job_log: JobLogCapture | None = None):
        self.store = store
        # The job's log lines go with its metrics, through the same writer (worker/job_log.py)
        self.job_log = job_log
        # Pruning keeps the checkpoint best by this metric (the family's headline one): the
        # one predict, generate and export use by default.
        goal = metric_goal(best_metric) if best_metric else None
        self.keep_best = (best_metric, goal) if goal else None
        # A sweep's trial: asked at each epoch end (but the last) whether it stops there,
        # its epoch's metrics written first (sweeps/driver.py judge_epoch).
        self.judge_epoch = judge_epoch
        self.pruned = False
        # time.monotonic() past which the job has used up its time limit (None: no limit)
        self.deadline = deadline
        self.timed_out = False
        self.job_id = job_id
        self.attempt = attempt
        self.heartbeat = heartbeat
        self.flush_seconds = settings.metrics_flush_seconds
        self.cancel_check_seconds = settings.cancel_check_seconds
        self.checkpoints_keep = settings.checkpoints_keep
        self.writer = open_store_writer(store, f"job-{job_id}-writer", settings.db_writer,
                                        retry_seconds=settings.db_retry_seconds,
                                        abandon=heartbeat.taken if heartbeat else None)
        self._pending: list[tuple[str, int, int, float, float]] = []
        self._last_flush = time.monotonic()
        self._last_cancel_check = time.monotonic()
        self._stop = False  # cancelled, or taken from this worker
        # A job of higher priority needs this worker: stop at the next step, checkpoint it and
        # give the job back (see db/store/preemption.py). A cancel found at the same check wins.
        self.preempted = False
        self._closed = False

    # ---- metrics: buffered, then written in one transaction per flush ----
    def _add(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        now = time.time()
        self._pending.extend((name, step, epoch, float(value), now) for name, value in metrics.items())

    def flush(self) -> None:
        if self.job_log is not None:
            self.job_log.send(self.writer)  # only queues them: written in order, elsewhere
        if self._pending:
            points, self._pending = self._pending, []
            self.writer.call("add_metrics", self.job_id, points)
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Write what is left and wait for every write to land (raises the first failure)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
            self.writer.drain()
            self._take_answers()
        finally:
            self.writer.close()

    def on_step(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        self._add(step, epoch, metrics)
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def on_confusion(self, epoch: int, step: int, matrix: list[list[int]]) -> None:
        # fit() reports it just before on_epoch: queued first, it lands before the epoch's
        # val_accuracy, so a client that sees the accuracy finds its matrix too.
        self.writer.call("add_confusion", self.job_id, epoch=epoch, step=step, matrix=matrix)

    def on_epoch(self, epoch: int, step: int, metrics: dict[str, float], texts: dict[str, str]) -> None:
        self._add(step, epoch, metrics)
        self.flush()
        for name, text in texts.items():
            self.writer.call("add_text", self.job_id, epoch=epoch, step=step, name=name,
                             text=storable_text(text))
        if self.judge_epoch is not None:
            # The pruner reads this epoch's objective from the database: wait for it to land.
            # A pruned trial still writes this epoch's checkpoint, then stops before a step.
            self.writer.drain()
            try:
                self.pruned = self.judge_epoch(epoch)
            except Exception:  # a decision that fails never fails the trial
                log.warning("job %s: the pruning decision at epoch %s failed; training on",
                            self.job_id, epoch, exc_info=True)

    def on_checkpoint(self, epoch: int, step: int, blob: bytes, metrics: dict) -> None:
        # Metrics first, so a checkpoint never points past the metrics stored for its run.
        self.flush()
        self.writer.call("add_checkpoint", self.job_id, epoch=epoch, step=step, data=blob,
                         metrics=metrics, keep_last=self.checkpoints_keep or None,
                         keep_best=self.keep_best)
        size = len(blob) / 1024
        log.info("job %s: checkpoint written at epoch %s, step %s (%s)", self.job_id, epoch,
                 step, f"{size:.1f} KiB" if size < 1024 else f"{size / 1024:.1f} MiB")

    def on_progress(
        self, epoch: int, total_epochs: int, step: int, total_steps: int, eta_seconds: float | None
    ) -> None:
        # Guarded by the attempt; False back means cancelled (or taken away) while we trained.
        self.writer.ask("progress", "update_progress", self.job_id, epoch=epoch,
                        total_epochs=total_epochs, step=step, total_steps=total_steps,
                        eta_seconds=eta_seconds, attempt=self.attempt)

    def _take_answers(self) -> None:
        """What the database answered since the last look (the writer never blocks here)."""
        for tag, value in self.writer.answers():
            if tag == "progress" and not value:
                if not self._stop:
                    log.info("job %s: no longer this attempt's to run (cancelled, or taken "
                             "over): stopping at the next step", self.job_id)
                self._stop = True
            elif tag == "signals":
                status, preempt_requested_at = value
                if status != JobStatus.RUNNING:
                    if not self._stop:
                        log.info("job %s is %s now: stopping at the next step", self.job_id,
                                 status)
                    self._stop = True
                elif preempt_requested_at is not None:
                    if not self.preempted:
                        log.info("job %s: preemption asked (a job of higher priority needs "
                                 "this worker): stopping at the next step", self.job_id)
                    self.preempted = True

    def should_stop(self) -> bool:
        # Checked first so that the reason is known even when a drain or cancel comes too.
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.timed_out = True
            return True
        self._take_answers()  # also tells the writer at once when the job was taken
        if DRAINING.is_set() or (self.heartbeat is not None and self.heartbeat.lost.is_set()):
            return True
        now = time.monotonic()
        if not self._stop and now - self._last_cancel_check >= self.cancel_check_seconds:
            self._last_cancel_check = now
            self.writer.ask("signals", "run_signals", self.job_id)  # answered at a later step
        return self._stop or self.preempted or self.pruned

    def checkpoint_on_stop(self) -> bool:
        # A drained or preempted job is given back and resumes exactly at this step; one out
        # of time keeps the work it did; a cancelled job needs no checkpoint, and one taken
        # from this worker must not get ours.
        lost = self.heartbeat is not None and self.heartbeat.lost.is_set()
        given_back = DRAINING.is_set() or self.timed_out or self.preempted
        return given_back and not lost and not self._stop
