"""The Celery application, configured from Settings.

The broker only carries wake-up calls: "a job for this device was queued, come and claim the
best one" (with the id of the job that caused it, for the logs). Which job runs is decided by
the database (db/store/scheduling.py), so the broker holds at most one message per job
submitted or given back, never one per job and period of waiting. Two brokers:
- distributed: Redis (TRAINYARD_BROKER_URL=redis://...);
- embedded: a file-system queue under TRAINYARD_HOME/broker (worker/file_queue.py: kombu's
  transport with atomic writes), which needs no server and lets any process of the same user on
  the same machine join as producer or worker.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from core.settings import Settings, get_settings
from core.states import DEVICES

WAKE_TASK = "trainyard.wake"
# What older versions sent (one message per job, "run job <id>"): still understood, as a wake.
RUN_JOB_TASK = "trainyard.run_job"

# A job asks for a device; each device has its own queue (core.states.DEVICES).
DEVICE_QUEUES = DEVICES


def queue_for_device(device: str) -> str:
    if device not in DEVICE_QUEUES:
        raise ValueError(f"device must be one of {', '.join(DEVICE_QUEUES)}, got {device!r}")
    return device


def _embedded_transport_options(settings: Settings) -> dict:
    queue_dir = settings.broker_dir / "queue"
    control_dir = settings.broker_dir / "control"
    for folder in (queue_dir, control_dir):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        # Producer and consumers share one folder: a message written by the API is read by a worker.
        "data_folder_in": str(queue_dir),
        "data_folder_out": str(queue_dir),
        "control_folder": str(control_dir),
        "polling_interval": settings.broker_poll_interval,
    }


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("trainyard", broker=settings.resolved_broker_url, include=["worker.tasks"])
    app.conf.update(
        # JSON only: a serialized Python object from anyone who can write to the broker would
        # run code here (tests/e2e/test_security.py sends one: it is refused).
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # results live in the database, not in a result backend
        # Training tasks are long: take one at a time and acknowledge only when done, so a task
        # held by a worker that dies is not silently dropped by the broker.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=[Queue(name) for name in DEVICE_QUEUES],
        task_default_queue="auto",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    if settings.embedded_broker:
        from worker.file_queue import Transport

        app.conf.broker_transport = Transport
        app.conf.broker_transport_options = _embedded_transport_options(settings)
        # The file-system transport has no pub/sub worth the polling: no remote control, no events.
        app.conf.worker_enable_remote_control = False
        app.conf.worker_send_task_events = False
    else:
        # Long jobs: Redis would redeliver an unacked task after the visibility timeout; make that
        # longer than any job may run (recovery of dead workers is the database's lease, not this).
        app.conf.broker_transport_options = {"visibility_timeout": 7 * 24 * 3600}
    return app


def enqueue_job(app: Celery, job_id: int, device: str) -> None:
    """Wake a worker that serves the job's device: publish a wake-up naming `job_id` on that
    device's queue. The worker claims the best queued job it can run, not necessarily this
    one; this one runs when its turn comes."""
    app.send_task(WAKE_TASK, args=[job_id], queue=queue_for_device(device))


def served_queues(app: Celery) -> list[str]:
    """The device queues this worker process consumes (all of them outside a worker)."""
    consumed = app.amqp.queues.consume_from
    return sorted(consumed) if consumed else list(DEVICE_QUEUES)
