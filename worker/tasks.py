"""Celery tasks. Thin on purpose: a task receives a job id and hands it to the runner."""

from __future__ import annotations

from celery import shared_task

from worker.celery_app import RUN_JOB_TASK
from worker.runner import get_runner


@shared_task(name=RUN_JOB_TASK, bind=True)
def run_job(self, job_id: int) -> str:
    # The payload is only the id: the job's spec, state and history are read from the database.
    return get_runner(worker_name=self.request.hostname or "worker").run(int(job_id))
