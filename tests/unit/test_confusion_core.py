"""The training core's confusion matrix: a classifier reports, at each epoch's end, the
validation confusion matrix its val_accuracy is read from (on one process and on two), and a
language model reports none."""

from __future__ import annotations

import math

import pytest
import torch

from models import data as D
from models.train import Callbacks, JobSpec, fit, model_from_checkpoint
from worker.distributed import fit_job

MLP = {"epochs": 2, "hidden_sizes": [32, 16], "dropout": 0.0, "batch_size": 64, "lr": 0.01,
       "seed": 1}


class Collector(Callbacks):
    """What fit() reports at epoch ends, in the order it reports it."""

    def __init__(self):
        self.events, self.confusions, self.accuracy, self.checkpoints = [], {}, {}, {}

    def on_confusion(self, epoch, step, matrix):
        self.events.append(("confusion", epoch, step))
        self.confusions[epoch] = matrix

    def on_epoch(self, epoch, step, metrics, texts):
        self.events.append(("epoch", epoch, step))
        self.accuracy[epoch] = metrics.get("val_accuracy")

    def on_checkpoint(self, epoch, step, blob, metrics):
        self.checkpoints[epoch] = blob


@pytest.fixture(scope="module")
def digits():
    return D.load_image_dataset("digits", seed=0)


def assert_matches_validation(rec: Collector, data: D.ImageData) -> None:
    n, k = data.y_val.shape[0], data.num_classes
    per_label = torch.bincount(data.y_val, minlength=k).tolist()
    for epoch, matrix in rec.confusions.items():
        assert len(matrix) == k and all(len(row) == k for row in matrix)
        assert sum(map(sum, matrix)) == n  # every validation example, once
        assert [sum(row) for row in matrix] == per_label  # rows are the true labels
        trace = sum(matrix[i][i] for i in range(k))
        assert math.isclose(trace / n, rec.accuracy[epoch], rel_tol=1e-6), epoch


def test_an_mlp_reports_the_confusion_its_accuracy_comes_from(digits):
    rec = Collector()
    result = fit(JobSpec("mlp", "digits", MLP, "cpu"), rec, data=digits)
    assert result.status == "completed"
    assert sorted(rec.confusions) == [1, 2]
    assert_matches_validation(rec, digits)
    # once per epoch, just before on_epoch, at the same step
    assert [e[0] for e in rec.events] == ["confusion", "epoch"] * 2
    assert rec.events[0][1:] == rec.events[1][1:] and rec.events[2][1:] == rec.events[3][1:]
    # columns are the predictions: the final model's own predictions give the last matrix
    model, _ = model_from_checkpoint(rec.checkpoints[2])
    with torch.no_grad():
        predicted = model(digits.x_val)[0].argmax(-1)
    k = digits.num_classes
    expected = torch.bincount(k * digits.y_val + predicted, minlength=k * k).view(k, k)
    assert rec.confusions[2] == expected.tolist()
    assert rec.accuracy[2] > 0.5  # it learned: the matrix is not one column


def test_a_cnn_reports_one_too(digits):
    rec = Collector()
    fit(JobSpec("cnn", "digits", {"epochs": 1, "channels": [4], "seed": 2}, "cpu"), rec,
        data=digits)
    assert sorted(rec.confusions) == [1]
    assert_matches_validation(rec, digits)


def test_a_language_model_reports_none():
    text = D.text_data_from_documents(D.pydocs_documents()[:4], "char")
    rec = Collector()
    hp = {"epochs": 1, "hidden_size": 16, "embedding_dim": 8, "seq_len": 16, "batch_size": 8,
          "steps_per_epoch": 2}
    fit(JobSpec("rnn_lm", "upload", hp, "cpu"), rec, data=text)
    assert rec.confusions == {} and [e[0] for e in rec.events] == ["epoch"]


def test_two_processes_report_the_whole_validation_set_once(digits):
    # rank 0 evaluates the whole validation set (the helper ranks report nothing)
    rec = Collector()
    fit_job(JobSpec("mlp", "digits", MLP, "cpu"), rec, gpus=2, data=digits)
    assert [e[:2] for e in rec.events] == [("confusion", 1), ("epoch", 1),
                                           ("confusion", 2), ("epoch", 2)]
    assert_matches_validation(rec, digits)
