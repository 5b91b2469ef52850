"""`trainyard sweep ...` and `Client.sweep` against the real service (`trainyard api` and a
worker on Postgres and Redis): a spec file in, a finished sweep and its best trial out."""

from __future__ import annotations

import json

import pytest

from trainyard.client import Client

pytestmark = pytest.mark.e2e

SPEC_YAML = """\
name: cli-grid
model: mlp
dataset: digits
method: grid
hyperparameters: {epochs: 2, steps_per_epoch: 3, batch_size: 32}
space:
  activation: {values: [relu, tanh]}
objective: {metric: val_accuracy, goal: max}
max_concurrent: 1
"""


def test_sweep_commands_and_client(distributed_service, tmp_path):
    service = distributed_service
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_YAML)
    created = service.cli("sweep", "create", str(spec), "--watch", timeout=240)
    assert created.returncode == 0, created.stderr + created.stdout
    assert "sweep 1 created: grid, 2 trials" in created.stderr
    assert "best: trial" in created.stdout and "activation=" in created.stdout

    shown = service.cli("sweep", "show", "1", "--json")
    sweep = json.loads(shown.stdout)
    assert sweep["status"] == "succeeded" and sweep["counts"] == {"succeeded": 2}
    assert sorted(t["params"]["activation"] for t in sweep["trials"]) == ["relu", "tanh"]
    listed = service.cli("sweep", "list")
    assert "cli-grid" in listed.stdout and "2/2" in listed.stdout

    with Client(service.url) as client:
        made = client.sweep("mlp", "digits", {"lr": {"low": 1e-3, "high": 1e-1, "log": True}},
                            method="random", max_trials=5, max_concurrent=1, seed=3,
                            hyperparameters={"epochs": 30, "steps_per_epoch": 20})
        assert made["launched"] == 1
        cancelled = service.cli("sweep", "cancel", str(made["id"]))
        assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
        ended = client.wait_sweep(made["id"], timeout=30)
        assert ended["status"] == "cancelled" and ended["launched"] == 1

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: mlp\ndataset: digits\nmethod: random\nspace: {lr: {values: [0.1]}}\n")
    refused = service.cli("sweep", "create", str(bad))
    assert refused.returncode == 2 and "max_trials" in refused.stderr
