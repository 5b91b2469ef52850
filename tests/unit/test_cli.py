"""The `trainyard` command's argument handling (the commands themselves run in tests/e2e)."""

from __future__ import annotations

import pytest

from trainyard.cli import _parse_hyperparameters, build_parser
from trainyard.client import format_detail


def test_set_values_are_json_or_words():
    hp = _parse_hyperparameters(
        ["lr=1e-3", "hidden_sizes=[128, 64]", "activation=tanh", "tie_weights=true", "epochs=3"]
    )
    assert hp == {"lr": 0.001, "hidden_sizes": [128, 64], "activation": "tanh",
                  "tie_weights": True, "epochs": 3}


def test_set_without_equals_is_refused():
    with pytest.raises(SystemExit, match="key=value"):
        _parse_hyperparameters(["lr"])


def test_submit_arguments():
    args = build_parser().parse_args(
        ["submit", "cnn", "--dataset", "digits", "--set", "epochs=2", "--device", "cpu"])
    assert (args.model, args.dataset, args.set, args.device) == ("cnn", "digits", ["epochs=2"], "cpu")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["submit", "cnn", "--dataset", "digits", "--device", "tpu"])


def test_api_errors_read_as_one_line():
    detail = [{"loc": ["body", "hyperparameters", "lr"], "msg": "must be > 0 and <= 10"}]
    assert format_detail(detail) == "hyperparameters.lr: must be > 0 and <= 10"
    assert format_detail("job 7 not found") == "job 7 not found"
