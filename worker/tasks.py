"""Celery tasks. Thin on purpose: a wake-up hands the worker to the runner, which claims jobs
from the database in the queue's order."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_shutting_down

from core.states import Outcome
from worker.celery_app import RUN_JOB_TASK, WAKE_TASK, enqueue_job, served_queues
from worker.runner import DRAINING, get_runner

log = logging.getLogger("trainyard.worker")


@worker_shutting_down.connect
def _drain(**_kwargs) -> None:
    # SIGTERM (warm shutdown): the running job stops at its next step and goes back to the queue.
    DRAINING.set()


def _wake(task, job_id: int | None = None) -> list[tuple[int, str]]:
    # The payload names the job whose submission sent it, for the logs only: the runner
    # claims the best eligible job, then the next, until the queue has nothing for it.
    runner = get_runner(worker_name=task.request.hostname or "worker",
                        queues=served_queues(task.app))
    ran = runner.run_next()
    if not ran:
        log.debug("woken for job %s: nothing to claim", job_id)
    for ran_id, outcome in ran:
        if outcome == Outcome.DRAINED:
            # Given back by this worker, which is going away: wake another one for it (the
            # reconciler would too, once a worker sits idle past the grace period).
            job = runner.store.get_job(ran_id)
            try:
                enqueue_job(task.app, ran_id, job.device if job else "auto")
            except Exception:  # noqa: BLE001 - the reconciler re-sends it
                log.warning("job %s: could not wake another worker", ran_id, exc_info=True)
    return ran


@shared_task(name=WAKE_TASK, bind=True)
def wake(self, job_id: int | None = None) -> list[tuple[int, str]]:
    return _wake(self, job_id)


@shared_task(name=RUN_JOB_TASK, bind=True)
def run_job(self, job_id: int) -> list[tuple[int, str]]:
    # A message of an older version, still in the broker after an upgrade: a wake-up too.
    return _wake(self, job_id)
