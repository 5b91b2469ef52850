"""What every worker process runs beside its Celery consumer, started and stopped with it.

- The reconciler (worker/reconciler.py): requeues jobs of lost workers, re-sends lost messages.
- The presence beat: the worker's row in the `workers` table, renewed every
  `heartbeat_seconds`, so `/healthz` can tell whether each queue with jobs has a live worker
  and GET /workers what each does. Its answer also says whether an admin asked this worker to
  drain (POST /workers/{name}/drain): then the running job gives itself back at its next step
  (`DRAINING`, the SIGTERM path), and the worker claims nothing more and stops consuming its
  queues at the next wake-up it receives (worker/tasks.py), which it publishes again for
  another worker. It stays so until its process restarts.

Both start on Celery's `worker_ready` signal (the consumer is up: this process really serves its
queues) and stop on `worker_shutdown`, which Celery also sends after an unrecoverable error. A
worker killed outright stops beating; its row goes stale after a lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from celery.signals import worker_ready, worker_shutdown

from core.settings import Settings, get_settings
from worker import gpus
from worker.celery_app import enqueue_job, make_celery
from worker.periodic import PeriodicThread
from worker.reconciler import Reconciler
from worker.runner import DRAINING, store_for
from worker.webhook_sender import WebhookSender

log = logging.getLogger("trainyard.worker")

# Set when the presence beat learns that an admin drained this worker (DRAINING is set with
# it; SIGTERM sets DRAINING alone, and Celery's shutdown stops the consumer itself).
DRAIN_REQUESTED = threading.Event()


def describe_hardware() -> dict:
    """What GET /workers shows of this process's hardware: torch's version, and where CUDA is
    available the first visible GPU's name, the total memory of the smallest visible GPU (what
    its claims count on, worker/gpus.capacity, so the queue's reasons count the same) and
    every visible GPU's UUID (CUDA is initialised only to ask)."""
    import torch

    described = {"torch_version": torch.__version__}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        described.update(gpu_name=props.name, gpu_memory_bytes=gpus.total_memory_bytes(),
                         gpu_ids=gpus.gpu_ids())
    return described


class PresenceBeat(PeriodicThread):
    """Renews this worker's row every `interval` seconds in a daemon thread, learns from it
    whether an admin drained the worker, and forgets workers not seen for `forget_after`
    seconds (the history of dead workers is not kept)."""

    def __init__(self, store, name: str, queues: list[str], interval: float,
                 forget_after: float) -> None:
        super().__init__("presence", interval)
        self.store, self.name, self.queues = store, name, queues
        self.forget_after = forget_after
        self.started = False  # whether the first beat (which resets the row) got through

    def tick(self) -> None:
        try:
            hardware = {} if self.started else describe_hardware()
            has = gpus.capacity(self.queues, reserve_bytes=0)
            drain = self.store.record_worker_seen(
                self.name, socket.gethostname(), os.getpid(), self.queues,
                starting=not self.started, gpus=has.gpus,
                gpu_free_bytes=has.free_memory_bytes, **hardware)
            self.started = True
            if drain and not DRAIN_REQUESTED.is_set():
                log.info("worker %s: drain requested by an admin: the running job goes back "
                         "to the queue at its next step, and no new job is taken", self.name)
                DRAIN_REQUESTED.set()
                DRAINING.set()
            self.store.prune_workers(self.forget_after)
        except Exception:  # noqa: BLE001 - database away: beat again next time
            log.warning("presence beat failed", exc_info=True)

    def stop(self) -> None:
        super().stop()
        try:
            self.store.record_worker_stopped(self.name)
        except Exception:  # noqa: BLE001 - the row goes stale on its own
            log.warning("could not record that worker %s stopped", self.name, exc_info=True)


class WorkerServices:
    """The reconciler and the presence beat of one worker process, and its Celery consumer
    (to stop consuming once drained)."""

    def __init__(self, settings: Settings, name: str, queues: list[str], consumer=None) -> None:
        self.consumer = consumer
        store = store_for(settings.resolved_database_url)
        # The reconciler publishes through a Celery app of its own: it runs in its own thread.
        publisher = make_celery(settings)
        self.reconciler = Reconciler(
            store, lambda job_id, device: enqueue_job(publisher, job_id, device), settings)
        self.presence = PresenceBeat(store, name, queues, settings.heartbeat_seconds,
                                     settings.forget_workers_seconds)
        self.webhooks = WebhookSender(store, settings)  # sends the webhook outbox

    def start(self) -> WorkerServices:
        self.presence.start()
        self.reconciler.start()
        self.webhooks.start()
        return self

    def stop(self) -> None:
        self.webhooks.stop()
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
    _running = WorkerServices(get_settings(), name, queues, consumer=sender).start()
    log.info("worker %s serving queues %s: reconciler and presence beat started", name,
             ",".join(queues))


@worker_shutdown.connect
def _stop_services(**_kwargs) -> None:
    global _running
    if _running is not None:
        _running.stop()
        _running = None


def stop_consuming() -> list[str]:
    """Cancel every task queue this worker consumes, so the broker hands their wake-ups to
    other workers; returns the queues cancelled (none the second time). Celery wants this in
    the consumer's thread: with the solo pool, that is the thread that runs tasks, so call it
    from a task."""
    consumer = _running.consumer if _running is not None else None
    if consumer is None:
        return []
    queues = sorted(consumer.app.amqp.queues.consume_from)
    for queue in queues:
        consumer.cancel_task_queue(queue)
    if queues:
        log.info("worker %s drained: no longer consuming queues %s", consumer.hostname,
                 ",".join(queues))
    return queues
