"""Celery tasks. Thin on purpose: a task receives a job id and hands it to the runner."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_shutting_down

from core.states import Outcome
from worker.celery_app import RUN_JOB_TASK, enqueue_job
from worker.runner import DRAINING, RunEnd, get_runner


@worker_shutting_down.connect
def _drain(**_kwargs) -> None:
    # SIGTERM (warm shutdown): the running job stops at its next step and goes back to the queue.
    DRAINING.set()


@shared_task(name=RUN_JOB_TASK, bind=True)
def run_job(self, job_id: int) -> str:
    # The payload is only the id: the job's spec, state and history are read from the database.
    runner = get_runner(worker_name=self.request.hostname or "worker")
    outcome = runner.run(int(job_id))
    if outcome in (Outcome.DRAINED, RunEnd.SKIPPED_DRAINING):
        # Given back to the queue: send it again for another worker (the reconciler would too,
        # after the grace period).
        job = runner.store.get_job(int(job_id))
        try:
            enqueue_job(self.app, int(job_id), job.device if job else "auto")
        except Exception:  # noqa: BLE001 - the reconciler re-sends it
            pass
    return outcome
