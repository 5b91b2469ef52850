"""A classifier's validation confusion matrix per epoch (`confusion_matrices`)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from db.store.errors import NotFound
from db.tables import ConfusionMatrix, utcnow


class ConfusionMixin:
    """Write one epoch's matrix (the worker's writer, by name), read a job's epochs and one."""

    @functools.cached_property
    def _confusion_upsert(self) -> Any:
        """INSERT ... ON CONFLICT (job_id, epoch) DO UPDATE, for this backend."""
        table = ConfusionMatrix.__table__
        stmt = self._dialect_insert(table)
        return stmt.on_conflict_do_update(
            index_elements=[table.c.job_id, table.c.epoch],
            set_={name: stmt.excluded[name]
                  for name in ("step", "num_classes", "matrix", "total", "correct",
                               "created_at")},
        )

    def add_confusion(self, job_id: int, epoch: int, step: int,
                      matrix: Sequence[Sequence[int]]) -> None:
        """Store the K x K confusion matrix (`matrix[true][predicted]` counts) of `epoch`.

        An upsert on (job_id, epoch): a resumed run that measures an epoch again replaces it,
        and a write retried after a lost answer changes nothing. ValueError for a matrix that
        is not square or holds a negative count; NotFound for an unknown job."""
        rows = [[int(c) for c in row] for row in matrix]
        k = len(rows)
        if k == 0 or any(len(row) != k for row in rows):
            raise ValueError("a confusion matrix is K x K, with K >= 1")
        if any(c < 0 for row in rows for c in row):
            raise ValueError("a confusion matrix counts: no negative entries")
        values = {"job_id": job_id, "epoch": int(epoch), "step": int(step), "num_classes": k,
                  "matrix": rows, "total": sum(map(sum, rows)),
                  "correct": sum(rows[i][i] for i in range(k)), "created_at": utcnow()}
        try:
            with self._session() as s:
                s.execute(self._confusion_upsert, values)
        except IntegrityError as exc:
            raise NotFound(f"job {job_id} does not exist") from exc

    def get_confusion(self, job_id: int, epoch: int | None = None
                      ) -> tuple[list[int], dict[str, Any] | None]:
        """The job's epochs that have a stored matrix (ascending), and `{"epoch", "step",
        "num_classes", "matrix", "total", "correct"}` of `epoch` (None: the latest), or None
        when that epoch has none. One transaction: the matrix's epoch is among the epochs."""
        columns = (ConfusionMatrix.epoch, ConfusionMatrix.step, ConfusionMatrix.num_classes,
                   ConfusionMatrix.matrix, ConfusionMatrix.total, ConfusionMatrix.correct)
        with self._session() as s:
            epochs = list(s.scalars(select(ConfusionMatrix.epoch)
                                    .where(ConfusionMatrix.job_id == job_id)
                                    .order_by(ConfusionMatrix.epoch)))
            if not epochs or (epoch is not None and epoch not in epochs):
                return epochs, None
            row = s.execute(select(*columns).where(
                ConfusionMatrix.job_id == job_id,
                ConfusionMatrix.epoch == (epochs[-1] if epoch is None else epoch))).one()
            return epochs, dict(row._mapping)
