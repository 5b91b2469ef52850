"""`trainyard submit --from JOB[:CHECKPOINT] [--resume-optimizer]`: POST /jobs' from_checkpoint."""

from __future__ import annotations

import pytest

from trainyard.cli import _parse_fork, build_parser


def test_from_names_the_parent_job_and_optionally_its_checkpoint():
    args = build_parser().parse_args(
        ["submit", "mlp", "--dataset", "digits", "--from", "3", "--set", "lr=1e-4"])
    assert _parse_fork(args.from_checkpoint, args.resume_optimizer) == {"job": 3}
    args = build_parser().parse_args(
        ["submit", "mlp", "--dataset", "digits", "--from", "3:17", "--resume-optimizer"])
    assert _parse_fork(args.from_checkpoint, args.resume_optimizer) == {
        "job": 3, "checkpoint": 17, "resume_optimizer": True}
    args = build_parser().parse_args(["submit", "mlp", "--dataset", "digits"])
    assert _parse_fork(args.from_checkpoint, args.resume_optimizer) is None


@pytest.mark.parametrize("raw", ["x", "3:", "3:y", ":4"])
def test_a_malformed_from_is_refused(raw):
    with pytest.raises(SystemExit, match="JOB or JOB:CHECKPOINT"):
        _parse_fork(raw, False)


def test_resume_optimizer_needs_from():
    with pytest.raises(SystemExit, match="--from"):
        _parse_fork(None, True)
