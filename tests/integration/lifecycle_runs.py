"""Finished runs with a row in every table a job leaves rows in, as a worker would write
them, for the deletion, retention and usage tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import inspect, text, update

from db.tables import Job, JobLog, utcnow

NAMES = ("train_loss", "val_loss", "val_accuracy")


def finished_run(store, *, owner: str = "local", status: str = "succeeded", steps: int = 200,
                 lr: float = 0.1, model: str = "mlp", checkpoint_bytes: int = 1000,
                 log_lines: int = 3, **extra: Any):
    """A job that ran `steps` steps and ended `status`, with metrics (3 names), a text, a
    checkpoint, a confusion matrix, log lines and series summaries; its JobRecord."""
    job = store.create_job(model, "mnist", {"lr": lr, "epochs": 2}, "cpu", owner=owner, **extra)
    assert store.claim_job(job.id, "lifecycle-test-worker") is not None
    points = [(name, step, 1 + step * 2 // steps, (step + 1) * lr / (i + 1), None)
              for i, name in enumerate(NAMES) for step in range(steps)]
    store.add_metrics(job.id, points)
    store.add_text(job.id, 1, steps - 1, "sample", "hello world")
    store.add_checkpoint(job.id, 1, steps - 1, b"c" * checkpoint_bytes, {"val_loss": 0.5})
    store.add_confusion(job.id, 1, steps - 1, [[3, 1], [0, 4]])
    with store._session() as s:
        s.add_all(JobLog(job_id=job.id, attempt=1, level="INFO", source="test",
                         message=f"line {i}") for i in range(log_lines))
    assert store.finish_job(job.id, status, error="boom" if status == "failed" else None)
    store.summarise_settled_runs(-5, [50], names=list(NAMES), limit=100)
    return store.get_job(job.id)


def age(store, job_id: int, days: float) -> None:
    """Make the job look finished `days` ago."""
    when = utcnow() - dt.timedelta(days=days)
    with store._session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(finished_at=when, created_at=when))


def rows_by_table(store, job_id: int) -> dict[str, int]:
    """Rows referring to `job_id` in every table of the live schema with a job_id column
    (whatever later migrations add), plus `jobs` itself."""
    with store.engine.connect() as conn:
        names = inspect(conn).get_table_names()
        out = {"jobs": conn.execute(text("SELECT count(*) FROM jobs WHERE id = :j"),
                                    {"j": job_id}).scalar()}
        for name in names:
            columns = {c["name"] for c in inspect(conn).get_columns(name)}
            if "job_id" in columns:
                out[name] = conn.execute(text(f'SELECT count(*) FROM "{name}" WHERE job_id = :j'),
                                         {"j": job_id}).scalar()
    return out
