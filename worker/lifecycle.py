"""What every worker process runs beside its Celery consumer, started and stopped with it.

- The reconciler (worker/reconciler.py): requeues jobs of lost workers, re-sends lost messages.
- The presence beat: the worker's row in the `workers` table, renewed every
  `heartbeat_seconds`, so `/healthz` can tell whether each queue with jobs has a live worker.

Both start on Celery's `worker_ready` signal (the consumer is up: this process really serves its
queues) and stop on `worker_shutdown`, which Celery also sends after an unrecoverable error. A
worker killed outright stops beating; its row goes stale after a lease.
"""

from __future__ import annotations

import logging
import os
import socket

from celery.signals import worker_ready, worker_shutdown

from core.settings import Settings, get_settings
from worker.celery_app import enqueue_job, make_celery
from worker.periodic import PeriodicThread
from worker.reconciler import Reconciler
from worker.runner import store_for

log = logging.getLogger("trainyard.worker")

# A worker row not seen for this long is deleted (the history of dead workers is not kept).
FORGET_WORKERS_AFTER_SECONDS = 24 * 3600.0


def describe_hardware() -> dict:
    """What GET /workers shows of this process's hardware: torch's version, and the first
    visible GPU's name and memory where CUDA is available (CUDA is initialised only to ask)."""
    import torch

    described = {"torch_version": torch.__version__}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        described.update(gpu_name=props.name, gpu_memory_bytes=int(props.total_memory))
    return described


class PresenceBeat(PeriodicThread):
    """Renews this worker's row every `interval` seconds in a daemon thread."""

    def __init__(self, store, name: str, queues: list[str], interval: float) -> None:
        super().__init__("presence", interval)
        self.store, self.name, self.queues = store, name, queues
        self.started = False  # whether the first beat (which resets the row) got through

    def tick(self) -> None:
        try:
            hardware = {} if self.started else describe_hardware()
            self.store.record_worker_seen(self.name, socket.gethostname(), os.getpid(),
                                          self.queues, starting=not self.started, **hardware)
            self.started = True
            self.store.prune_workers(FORGET_WORKERS_AFTER_SECONDS)
        except Exception:  # noqa: BLE001 - database away: beat again next time
            log.warning("presence beat failed", exc_info=True)

    def stop(self) -> None:
        super().stop()
        try:
            self.store.record_worker_stopped(self.name)
        except Exception:  # noqa: BLE001 - the row goes stale on its own
            log.warning("could not record that worker %s stopped", self.name, exc_info=True)


class WorkerServices:
    """The reconciler and the presence beat of one worker process."""

    def __init__(self, settings: Settings, name: str, queues: list[str]) -> None:
        store = store_for(settings.resolved_database_url)
        # The reconciler publishes through a Celery app of its own: it runs in its own thread.
        publisher = make_celery(settings)
        self.reconciler = Reconciler(
            store, lambda job_id, device: enqueue_job(publisher, job_id, device), settings)
        self.presence = PresenceBeat(store, name, queues, settings.heartbeat_seconds)

    def start(self) -> WorkerServices:
        self.presence.start()
        self.reconciler.start()
        return self

    def stop(self) -> None:
        self.reconciler.stop()
        self.presence.stop()


_running: WorkerServices | None = None


@worker_ready.connect
def _start_services(sender=None, **_kwargs) -> None:
    global _running
    if _running is not None:
        return
    queues = sorted(sender.app.amqp.queues.consume_from) if sender is not None else []
    name = getattr(sender, "hostname", None) or f"worker-{os.getpid()}@{socket.gethostname()}"
    _running = WorkerServices(get_settings(), name, queues).start()
    log.info("worker %s serving queues %s: reconciler and presence beat started", name,
             ",".join(queues))


@worker_shutdown.connect
def _stop_services(**_kwargs) -> None:
    global _running
    if _running is not None:
        _running.stop()
        _running = None
