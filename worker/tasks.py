"""Celery tasks. Thin on purpose: a wake-up hands the worker to the runner, which claims jobs
from the database in the queue's order.

A worker that an admin drained (worker/lifecycle.py) must not swallow wake-ups meant for
others: the first one it receives after the drain makes it stop consuming its queues (here,
in the consumer's thread, as Celery requires), and is published again for another worker.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_shutting_down

from core.states import Outcome
from worker.celery_app import (
    DEVICE_QUEUES,
    RUN_JOB_TASK,
    WAKE_TASK,
    enqueue_job,
    served_queues,
)
from worker.lifecycle import DRAIN_REQUESTED, stop_consuming
from worker.runner import DRAINING, get_runner

log = logging.getLogger("trainyard.worker")


@worker_shutting_down.connect
def _drain(**_kwargs) -> None:
    # SIGTERM (warm shutdown): the running job stops at its next step and goes back to the queue.
    DRAINING.set()


def _wake(task, job_id: int | None = None) -> list[tuple[int, str]]:
    # The payload names the job whose submission sent it, for the logs only: the runner
    # claims the best eligible job, then the next, until the queue has nothing for it.
    if DRAIN_REQUESTED.is_set():
        _pass_on(task, job_id)
        return []
    runner = get_runner(worker_name=task.request.hostname or "worker",
                        queues=served_queues(task.app),
                        wake=lambda job, device: enqueue_job(task.app, job, device))
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
    if DRAIN_REQUESTED.is_set():  # drained by an admin while it ran: take no more wake-ups
        stop_consuming()
    return ran


def _pass_on(task, job_id: int | None) -> None:
    """A wake-up delivered to a worker an admin drained: stop consuming, and publish the
    wake-up again on the queue it came from, for another worker."""
    stop_consuming()
    queue = (task.request.delivery_info or {}).get("routing_key")
    if queue not in DEVICE_QUEUES:
        log.warning("drained: a wake-up for job %s from an unknown queue %r is dropped (the "
                    "reconciler re-sends it)", job_id, queue)
        return
    try:
        enqueue_job(task.app, job_id, queue)
    except Exception:  # noqa: BLE001 - the reconciler re-sends it
        log.warning("drained: could not pass on the wake-up for job %s", job_id, exc_info=True)
        return
    log.info("drained: the wake-up for job %s is passed on to another worker (queue %s)",
             job_id, queue)


@shared_task(name=WAKE_TASK, bind=True)
def wake(self, job_id: int | None = None) -> list[tuple[int, str]]:
    return _wake(self, job_id)


@shared_task(name=RUN_JOB_TASK, bind=True)
def run_job(self, job_id: int) -> list[tuple[int, str]]:
    # A message of an older version, still in the broker after an upgrade: a wake-up too.
    return _wake(self, job_id)
