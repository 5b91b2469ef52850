"""What a job produces besides metrics: sampled texts and checkpoints (uploaded datasets are in
db/store/datasets.py).

A checkpoint's bytes: the first CHECKPOINT_CHUNK_BYTES in its row, the rest in
checkpoint_chunks (no database value holds more than 1 GB; a big model's checkpoint is more).
Readers get the whole file joined (a worker loads it whole anyway) or, for a download, its
pieces one query each, so the API never holds a large checkpoint in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import fields
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.store.base import json_safe
from db.store.errors import NotFound
from db.store.records import CheckpointRecord, record_of
from db.tables import CHECKPOINT_CHUNK_BYTES, Checkpoint, CheckpointChunk, Job, JobText, utcnow

# Columns of the record: everything but the bytes.
_CHECKPOINT_COLUMNS = tuple(getattr(Checkpoint, f.name) for f in fields(CheckpointRecord))
_CHUNKS = CheckpointChunk.__table__


def best_checkpoint_of(checkpoints: Iterable[Any], metric: str, goal: str) -> Any | None:
    """The checkpoint (anything with `id`, `step`, `metrics`) with the best value of `metric`
    ("min" or "max"), the latest on a tie; None when none has a value (NaN never wins). The one
    rule for "the job's best checkpoint": pruning keeps it, predict and export default to it."""
    sign = -1.0 if goal == "min" else 1.0
    scored = [(sign * float(c.metrics[metric]), c.step, c.id, c) for c in checkpoints
              if isinstance(c.metrics, dict) and isinstance(c.metrics.get(metric), (int, float))
              and c.metrics[metric] == c.metrics[metric]]
    return max(scored, key=lambda t: t[:3])[3] if scored else None


def _piece(s: Session, checkpoint_id: int, seq: int) -> bytes | None:
    """Piece `seq` (1, 2, ...) of a checkpoint's bytes past its row's own; None past the end."""
    data = s.scalar(select(CheckpointChunk.data).where(
        CheckpointChunk.checkpoint_id == checkpoint_id, CheckpointChunk.seq == seq))
    return bytes(data) if data is not None else None


def _file_pieces(head: bytes, size: int, piece: Callable[[int], bytes | None]
                 ) -> Iterator[bytes]:
    """A checkpoint's file in order: its row's `head`, then `piece(1)`, `piece(2)`, ... until
    `size` bytes have come; ends early at a missing piece (the checkpoint pruned meanwhile)."""
    yield head
    seq, got = 1, len(head)
    while got < size and (data := piece(seq)) is not None:
        yield data
        seq, got = seq + 1, got + len(data)


class ArtifactsMixin:
    """Texts and checkpoints (bytes in the database)."""

    # Bytes per stored piece of a checkpoint (a class attribute, so tests can make it small).
    CHECKPOINT_CHUNK_BYTES = CHECKPOINT_CHUNK_BYTES

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
        """Store checkpoint bytes with their sha256 and size (which readers compare, to detect
        a damaged or swapped checkpoint), in one transaction. NotFound for an unknown job.

        With `keep_last`, older checkpoints beyond the newest `keep_last` are deleted in the same
        transaction (see prune_checkpoints); `keep_best` = (metric, "min" | "max") keeps the
        checkpoint with the best value of that metric too."""
        blob, size = memoryview(data), len(data)
        piece = self.CHECKPOINT_CHUNK_BYTES
        try:
            with self._session() as s:
                row = Checkpoint(
                    job_id=job_id,
                    epoch=epoch,
                    step=step,
                    data=bytes(blob[:piece]),
                    size=size,
                    sha256=hashlib.sha256(blob).hexdigest(),
                    metrics=json_safe(dict(metrics or {})),
                    created_at=utcnow(),
                )
                s.add(row)
                s.flush()
                for seq, start in enumerate(range(piece, size, piece), start=1):
                    # Core INSERT, one piece at a time: at most one piece copied at once
                    s.execute(_CHUNKS.insert(), {"checkpoint_id": row.id, "seq": seq,
                                                 "data": bytes(blob[start:start + piece])})
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
        """One of the job's checkpoints with its whole file; None when the job has no such
        checkpoint."""
        return self._checkpoint_with_data(
            Checkpoint.job_id == job_id, Checkpoint.id == checkpoint_id)

    def latest_checkpoint(self, job_id: int) -> tuple[CheckpointRecord, bytes] | None:
        """The checkpoint at the highest step (the newest one on a tie), with its bytes."""
        return self._checkpoint_with_data(Checkpoint.job_id == job_id)

    def _checkpoint_with_data(self, *where) -> tuple[CheckpointRecord, bytes] | None:
        """The newest checkpoint matching `where`, with its row's bytes and its pieces joined,
        read in one transaction (so a checkpoint pruned meanwhile is read whole or not at
        all), a piece per query: one query for all of them made psycopg hold every row and
        took twice as long (bench/checkpoint_sizes.py)."""
        with self._session() as s:
            row = s.execute(
                select(*_CHECKPOINT_COLUMNS, Checkpoint.data).where(*where)
                .order_by(Checkpoint.step.desc(), Checkpoint.id.desc()).limit(1)
            ).first()
            if row is None:
                return None
            pieces = _file_pieces(bytes(row.data), row.size, lambda seq: _piece(s, row.id, seq))
            return record_of(CheckpointRecord, row), b"".join(pieces)

    def iter_checkpoint_data(self, job_id: int, checkpoint_id: int
                             ) -> tuple[CheckpointRecord, Iterator[bytes]] | None:
        """One of the job's checkpoints with its file as pieces, each read by its own short
        query when the iterator reaches it (a download streams a 1 GB checkpoint in 16 MiB
        pieces); None when the job has no such checkpoint. A checkpoint pruned meanwhile ends
        the pieces early: the reader sees fewer than `size` bytes."""
        with self._session() as s:
            row = s.execute(select(*_CHECKPOINT_COLUMNS, Checkpoint.data).where(
                Checkpoint.job_id == job_id, Checkpoint.id == checkpoint_id)).first()
            if row is None:
                return None
            record, head = record_of(CheckpointRecord, row), bytes(row.data)

        def piece(seq: int) -> bytes | None:
            with self._session() as s:
                return _piece(s, checkpoint_id, seq)

        return record, _file_pieces(head, record.size, piece)

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
