"""The reconciler: makes the broker and the workers agree again with the database.

Every worker runs it once at start and then every `reconcile_seconds` in a daemon thread. Each
pass, in one short transaction per job (guarded UPDATEs, so any number of reconcilers may run
at once and each change is made by exactly one of them):

1. Lost workers: a running job whose heartbeat is older than `lease_seconds` is requeued (an
   infrastructure failure, attempt outcome `worker_lost`) and sent to the broker again; once it
   has been lost more than `max_infra_retries` times it ends failed ("worker lost N times;
   giving up"), so a job that kills its worker every time cannot loop forever.
2. Lost wake-ups: where a live worker sits idle while a job it could run has been queued for
   longer than `enqueue_grace_seconds`, a wake-up is sent again for that job's device, at most
   one per idle worker (a broker restarted empty loses its messages; the database does not).
   While every such worker is busy nothing is sent: a worker takes its next job from the
   database as soon as it finishes one, so a backlog needs no messages and never grows the
   broker. A duplicate wake-up is harmless: it claims nothing, or the next job in order.
3. Preemption (when `settings.preemption` is on): where a queued job finds every live worker
   that could run it busy with jobs of strictly lower priority, the lowest of those is asked to
   give its worker back (db/store/preemption.py; not before its attempt has run
   `preemption_min_run_seconds`). Its worker stops it at the next step with a checkpoint,
   requeues it (attempt outcome `preempted`) and claims the job that asked.
4. Sweeps: every running sweep is advanced (sweeps/driver.py): the trials it may launch now are
   launched and sent, and a sweep whose trials are all done ends. So a sweep goes on after the
   loss of any process, and its launches are exact (`Store.launch_trial`).
5. Series summaries (when `settings.compare_summaries` is on): up to SUMMARISE_RUNS runs that
   finished over a lease ago and are not summarised yet get their curves stored at the levels
   the compare page asks of many runs (`Store.summarise_settled_runs`), so a page of a
   thousand runs reads stored rows instead of downsampling rollups. With nothing to do this is
   one query on a small partial index; a failure here is logged and spoils no other step. Like
   recovery, it waits for the database to have answered for a whole lease after an outage.

6. Retention (lifecycle; worker/retention.py): finished jobs older than their status's
   TRAINYARD_RETENTION_*_DAYS are deleted, at most `retention_jobs_per_pass` per status.

Recovery is the database's lease, never the broker's visibility timeout. After a pass that
found the database unreachable, the reconciler requeues no lost job until the database has
answered for a whole lease: an outage stops every heartbeat at once, and the workers, which kept
training and buffering their writes, need one lease to renew theirs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from core.metrics import COMPARE_NAMES, SUMMARY_LEVELS
from core.settings import Settings
from db.store import Store
from sweeps import driver as sweep_driver
from worker.periodic import PeriodicThread
from worker.retention import apply_retention

log = logging.getLogger("trainyard.reconciler")

# Runs summarised per pass: at 10,000 steps and 3 metrics, 120 curves (~0.1-0.3 s of the
# database's time) every `reconcile_seconds`.
SUMMARISE_RUNS = 20


@dataclass
class ReconcileReport:
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    resent: list[int] = field(default_factory=list)
    preempted: list[int] = field(default_factory=list)  # running jobs asked to stop
    launched: list[int] = field(default_factory=list)  # sweep trials launched
    summarised: list[int] = field(default_factory=list)  # finished runs' curves stored
    retention_deleted: list[int] = field(default_factory=list)  # old finished jobs deleted by retention


def reconcile_once(store: Store, send, settings: Settings, recover_lost: bool = True
                   ) -> ReconcileReport:
    """One pass. `send(job_id, device)` publishes "run job <id>" on the broker."""
    report = ReconcileReport()
    requeued, failed = [], []
    if recover_lost:
        requeued, failed = store.recover_lost_jobs(settings.lease_seconds,
                                                   settings.max_infra_retries)
    for job in failed:
        log.warning("job %s: %s", job.id, job.error)
        report.failed.append(job.id)
    for job in requeued:
        log.warning("job %s lost its worker (%s of %s allowed): requeued", job.id,
                    job.infra_failures, settings.max_infra_retries)
        report.requeued.append(job.id)
        _send(send, job)
    for queue, idle in sorted(store.idle_workers_by_queue(settings.lease_seconds).items()):
        for job in store.take_jobs_to_resend(settings.enqueue_grace_seconds, device=queue,
                                             limit=idle):
            log.info("job %s queued for over %s s while a %s worker is idle: waking it again",
                     job.id, settings.enqueue_grace_seconds, queue)
            report.resent.append(job.id)
            _send(send, job)
    if settings.preemption:
        for asked in store.request_preemptions(settings.lease_seconds,
                                               settings.preemption_min_run_seconds,
                                               settings.max_running_jobs_per_user):
            log.info("job %s (priority %s) on %s asked to stop for job %s (priority %s)",
                     asked.job_id, asked.priority, asked.worker, asked.for_job_id,
                     asked.for_priority)
            report.preempted.append(asked.job_id)
    for sweep_id in store.running_sweep_ids():
        for job in _advance(store, sweep_id, settings):
            log.info("sweep %s: trial %s launched as job %s", sweep_id, job.trial, job.id)
            report.launched.append(job.id)
            _send(send, job)
    if settings.compare_summaries and recover_lost:
        # Not within a lease of an outage either: workers flush the points they buffered
        # meanwhile as soon as the database is back, and a summary must come after them.
        report.summarised = _summarise(store, settings)
    if recover_lost:  # like recovery: not within a lease of an outage
        report.retention_deleted = apply_retention(store, settings)
    return report


def _advance(store: Store, sweep_id: int, settings: Settings) -> list:
    """sweep_driver.advance, one sweep's failure (a proposal that raises) logged and kept
    from the other sweeps and the later steps: the pass as a whole failing would read as the
    database being away, and hold off recovery for a lease."""
    try:
        return sweep_driver.advance(store, sweep_id, settings)
    except Exception:  # noqa: BLE001
        if not store.ping():
            raise  # the database is away: the pass fails as any other step's would
        log.warning("sweep %s: could not launch its next trials", sweep_id, exc_info=True)
        return []


def _summarise(store: Store, settings: Settings) -> list[int]:
    try:
        done = store.summarise_settled_runs(settings.lease_seconds, SUMMARY_LEVELS,
                                            names=COMPARE_NAMES, limit=SUMMARISE_RUNS)
    except Exception:  # noqa: BLE001 - only reads are spared by them: try again next pass
        log.warning("could not store series summaries", exc_info=True)
        return []
    if done:
        log.debug("series summaries stored for %s finished runs", len(done))
    return done


def _send(send, job) -> None:
    try:
        send(job.id, job.device)
    except Exception:  # noqa: BLE001 - the broker is away: the next pass re-sends it
        log.warning("job %s: could not send to the broker", job.id, exc_info=True)


class Reconciler(PeriodicThread):
    """Runs `reconcile_once` now and then every `settings.reconcile_seconds` in a daemon thread."""

    def __init__(self, store: Store, send, settings: Settings):
        super().__init__("reconciler", settings.reconcile_seconds)
        self.store, self.send, self.settings = store, send, settings
        self.healthy_since = float("-inf")  # when the database last came back; -inf: never away

    def tick(self) -> None:
        now = time.monotonic()
        try:
            recover = now - self.healthy_since >= self.settings.lease_seconds
            reconcile_once(self.store, self.send, self.settings, recover_lost=recover)
        except Exception:  # noqa: BLE001 - database away: try again next time
            log.warning("reconciler pass failed", exc_info=True)
            self.healthy_since = float("inf")
        else:
            if self.healthy_since == float("inf"):
                self.healthy_since = now
