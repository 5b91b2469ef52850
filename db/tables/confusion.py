"""What a classifier's validation looks like inside: its confusion matrix, per epoch."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from db.tables.base import Base, JSONType, UTCDateTime, utcnow


class ConfusionMatrix(Base):
    """A classifier's validation confusion matrix at the end of one epoch (mlp and cnn jobs):
    written with that epoch's `val_accuracy`, so it can be watched as training goes
    (GET /jobs/{id}/confusion). Its trace / `total` is that epoch's `val_accuracy`."""

    __tablename__ = "confusion_matrices"
    __table_args__ = (
        UniqueConstraint("job_id", "epoch", info={"serves": (
            "One matrix per (job, epoch): what Store.add_confusion's upsert conflicts on, so a "
            "resumed run that repeats an epoch replaces its matrix; also a job's epochs in "
            "order, and one epoch's matrix (GET /jobs/{id}/confusion).")}),
        {"info": {"pk_serves": "Row identity only: matrices are found by (job_id, epoch)."}},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, doc=(
        "Row id."))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), doc=(
        "The classifier job it was measured on (deleting the job deletes it)."))
    epoch: Mapped[int] = mapped_column(Integer, doc=(
        "Epochs completed when it was measured, from 1."))
    step: Mapped[int] = mapped_column(Integer, doc=(
        "Optimizer steps done when it was measured (the epoch's last step, as for "
        "`val_accuracy`)."))
    num_classes: Mapped[int] = mapped_column(Integer, doc=(
        "K, the number of classes: `matrix` is K x K."))
    matrix: Mapped[list[list[int]]] = mapped_column(JSONType, doc=(
        "The counts, a JSON array of K arrays of K integers: `matrix[t][p]` is how many "
        "validation examples of true label t the model predicted as p."))
    total: Mapped[int] = mapped_column(Integer, doc=(
        "The sum of `matrix`: the size of the validation set."))
    correct: Mapped[int] = mapped_column(Integer, doc=(
        "The trace of `matrix`: validation examples predicted right (`correct / total` is "
        "the epoch's `val_accuracy`)."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When it was stored (rewritten when a resumed run measures the epoch again)."))
