"""The `trainyard` command's argument handling (the commands themselves run in tests/e2e)."""

from __future__ import annotations

import pytest

from trainyard.cli import _parse_hyperparameters, _queue_lines, build_parser
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


def test_show_summarises_a_queued_jobs_place_reason_and_start():
    job = {"status": "queued", "queue": {
        "position": 3, "jobs_ahead": 2, "estimated_start_seconds": 125.4,
        "reason": {"code": "workers_busy", "message": "all 2 workers that can run cpu jobs "
                   "are busy, and 2 jobs are ahead of it"}}}
    assert _queue_lines(job) == [
        "queued: #3 in queue, 2 jobs ahead",
        ("why: all 2 workers that can run cpu jobs are busy, and 2 jobs are ahead of it "
         "(workers_busy)"),
        "estimated start: in 2m05s",
    ]
    job["queue"]["estimated_start_seconds"] = None
    assert _queue_lines(job)[-1] == "estimated start: unknown"
    assert _queue_lines({"status": "running", "queue": None}) == []


def test_workers_arguments_and_hardware_column():
    from trainyard.cli import _hardware, cmd_workers

    args = build_parser().parse_args(["workers"])
    assert (args.func, args.drain) == (cmd_workers, None)
    assert build_parser().parse_args(["workers", "--drain", "gpu1@box"]).drain == "gpu1@box"
    assert _hardware({"device_class": "cpu", "gpu_name": None}) == "cpu"
    assert _hardware({"device_class": "cuda", "gpu_name": "NVIDIA H200",
                      "gpu_memory_bytes": 141 * 2**30}) == "cuda: NVIDIA H200 (141 GiB)"
