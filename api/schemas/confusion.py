"""GET /jobs/{id}/confusion: a classifier's validation confusion matrix at one epoch."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ConfusionOut(BaseModel):
    epochs: list[int] = Field(description="Every epoch with a stored matrix, ascending.")
    epoch: int = Field(description="The epoch of this matrix (epochs completed, from 1).")
    step: int = Field(description="Optimizer steps done when it was measured.")
    num_classes: int = Field(description="K: the matrix is K x K.")
    matrix: list[list[int]] = Field(
        description="matrix[t][p]: validation examples of true label t predicted as p (rows: "
        "true label, columns: predicted).")
    total: int = Field(description="The matrix's sum: the validation set's size.")
    correct: int = Field(
        description="Its trace: correct predictions (correct / total is that epoch's "
        "val_accuracy).")
