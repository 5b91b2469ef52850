"""What a job produces besides metrics: sampled texts and checkpoints (uploaded datasets are in
db/store/datasets.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.store.base import json_safe
from db.store.errors import NotFound
from db.store.records import CheckpointRecord, record_of
from db.tables import Checkpoint, Job, JobText, utcnow

# Columns of the record: everything but the bytes.
_CHECKPOINT_COLUMNS = tuple(getattr(Checkpoint, f.name) for f in fields(CheckpointRecord))


def blob_columns(data: bytes) -> dict[str, Any]:
    """The columns of a stored blob: its bytes, size and sha256 (which callers compare to
    detect a damaged or swapped blob)."""
    blob = bytes(data)
    return {"data": blob, "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


def best_checkpoint_of(checkpoints: Iterable[Any], metric: str, goal: str) -> Any | None:
    """The checkpoint (anything with `id`, `step`, `metrics`) with the best value of `metric`
    ("min" or "max"), the latest on a tie; None when none has a value (NaN never wins). The one
    rule for "the job's best checkpoint": pruning keeps it, predict and export default to it."""
    sign = -1.0 if goal == "min" else 1.0
    scored = [(sign * float(c.metrics[metric]), c.step, c.id, c) for c in checkpoints
              if isinstance(c.metrics, dict) and isinstance(c.metrics.get(metric), (int, float))
              and c.metrics[metric] == c.metrics[metric]]
    return max(scored, key=lambda t: t[:3])[3] if scored else None


class ArtifactsMixin:
    """Texts and checkpoints (bytes in the database)."""

    def add_text(self, job_id: int, epoch: int, step: int, name: str, text: str) -> None:
        """Keep a text artifact (e.g. a sampled text). Raises NotFound for an unknown job."""
        try:
            with self._session() as s:
                s.add(JobText(job_id=job_id, epoch=epoch, step=step, name=name, text=text))
        except IntegrityError as exc:
            raise NotFound(f"job {job_id} does not exist") from exc

    def list_texts(self, job_id: int) -> list[dict[str, Any]]:
        """`[{"epoch", "step", "name", "text"}]` in the order they were written."""
        with self._session() as s:
            rows = s.execute(
                select(JobText.epoch, JobText.step, JobText.name, JobText.text)
                .where(JobText.job_id == job_id)
                .order_by(JobText.step, JobText.id)
            )
            return [dict(row._mapping) for row in rows]

    def add_checkpoint(
        self,
        job_id: int,
        epoch: int,
        step: int,
        data: bytes,
        metrics: Mapping[str, Any] | None = None,
        keep_last: int | None = None,
        keep_best: tuple[str, str] | None = None,
    ) -> CheckpointRecord:
        """Store checkpoint bytes with their sha256 and size. NotFound for an unknown job.

        With `keep_last`, older checkpoints beyond the newest `keep_last` are deleted in the same
        transaction (see prune_checkpoints); `keep_best` = (metric, "min" | "max") keeps the
        checkpoint with the best value of that metric too."""
        try:
            with self._session() as s:
                row = Checkpoint(
                    job_id=job_id,
                    epoch=epoch,
                    step=step,
                    **blob_columns(data),
                    metrics=json_safe(dict(metrics or {})),
                    created_at=utcnow(),
                )
                s.add(row)
                s.flush()
                if keep_last:
                    self._prune_checkpoints(s, job_id, keep_last, keep_best)
                return record_of(CheckpointRecord, row)
        except IntegrityError as exc:
            raise NotFound(f"job {job_id} does not exist") from exc

    def list_checkpoints(self, job_id: int) -> list[CheckpointRecord]:
        """The job's checkpoints in training order, without their bytes."""
        with self._session() as s:
            rows = s.execute(
                select(*_CHECKPOINT_COLUMNS)
                .where(Checkpoint.job_id == job_id)
                .order_by(Checkpoint.step, Checkpoint.id)
            )
            return [record_of(CheckpointRecord, row) for row in rows]

    def get_checkpoint_data(
        self, job_id: int, checkpoint_id: int
    ) -> tuple[CheckpointRecord, bytes] | None:
        with self._session() as s:
            row = s.execute(
                select(*_CHECKPOINT_COLUMNS, Checkpoint.data).where(
                    Checkpoint.job_id == job_id, Checkpoint.id == checkpoint_id
                )
            ).first()
            return (record_of(CheckpointRecord, row), bytes(row.data)) if row is not None else None

    def latest_checkpoint(self, job_id: int) -> tuple[CheckpointRecord, bytes] | None:
        """The checkpoint at the highest step (the newest one on a tie), with its bytes."""
        with self._session() as s:
            row = s.execute(
                select(*_CHECKPOINT_COLUMNS, Checkpoint.data)
                .where(Checkpoint.job_id == job_id)
                .order_by(Checkpoint.step.desc(), Checkpoint.id.desc())
                .limit(1)
            ).first()
            return (record_of(CheckpointRecord, row), bytes(row.data)) if row is not None else None

    def prune_checkpoints(self, job_id: int, keep_last: int,
                          keep_best: tuple[str, str] | None = None) -> int:
        """Delete all but the `keep_last` newest checkpoints of a job; returns how many went.

        Checkpoints are megabytes each and written every epoch: keeping the last few bounds the
        database while a corrupt newest one still has older ones to fall back on. A checkpoint
        that a forked job starts from (its `parent_checkpoint_id`) is kept too: the fork's
        worker reads it when it starts, and the fork's page links to it. So is the best one by
        `keep_best` = (metric, "min" | "max"): predict, generate and export use it by default."""
        with self._session() as s:
            return self._prune_checkpoints(s, job_id, keep_last, keep_best)

    @staticmethod
    def _best_checkpoint_id(s: Session, job_id: int, metric: str, goal: str) -> int | None:
        rows = s.execute(select(Checkpoint.id, Checkpoint.step, Checkpoint.metrics)
                         .where(Checkpoint.job_id == job_id)).all()
        best = best_checkpoint_of(rows, metric, goal)
        return best.id if best is not None else None

    @classmethod
    def _prune_checkpoints(cls, s: Session, job_id: int, keep_last: int,
                           keep_best: tuple[str, str] | None = None) -> int:
        if keep_last < 1:
            raise ValueError("keep_last must be >= 1")
        best = cls._best_checkpoint_id(s, job_id, *keep_best) if keep_best else None
        keep = (
            select(Checkpoint.id)
            .where(Checkpoint.job_id == job_id)
            .order_by(Checkpoint.step.desc(), Checkpoint.id.desc())
            .limit(keep_last)
            .scalar_subquery()
        )
        # (NULLs filtered out: NOT IN over a list holding NULL matches nothing)
        forked = select(Job.parent_checkpoint_id).where(
            Job.parent_job_id == job_id, Job.parent_checkpoint_id.is_not(None))
        result = s.execute(
            delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.id.not_in(keep),
                                     Checkpoint.id.not_in(forked),
                                     Checkpoint.id != (best if best is not None else 0))
        )
        return result.rowcount or 0
