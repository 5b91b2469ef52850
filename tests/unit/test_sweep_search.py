"""Sweep decisions (sweeps/search.py) on constructed histories: what Optuna proposes and prunes
when its study is rebuilt from trial rows, as the driver rebuilds it for every decision."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from types import SimpleNamespace

import pytest

from db.store import TrialRecord
from models.family import SpecError
from sweeps.search import propose, should_prune
from sweeps.space import check_sweep, dimensions_from_json

NOW = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
CAP = 1000


def make_sweep(body: dict):
    spec = check_sweep({"model": "mlp", "dataset": "digits", **body}, CAP)
    return SimpleNamespace(
        id=1, model=spec.model, method=spec.method, seed=spec.seed,
        objective_metric=spec.objective_metric, objective_goal=spec.objective_goal,
        max_trials=spec.max_trials, max_concurrent=spec.max_concurrent,
        early_stopping=spec.early_stopping.to_dict(), space=spec.space_json(),
        hyperparameters=spec.hyperparameters,
    ), dimensions_from_json(spec.space_json(), spec.model)


def trial(number: int, params: dict, status: str, objective: dict[int, float],
          epoch: int | None = None) -> TrialRecord:
    return TrialRecord(job_id=100 + number, number=number, name=f"t{number}", status=status,
                       hyperparameters=params, epoch=max(objective) if epoch is None and
                       objective else (epoch or 0), total_epochs=None, step=0, error=None,
                       created_at=NOW, finished_at=None, objective=objective)


def run_proposals(sweep, space, n: int) -> list[dict]:
    trials: list[TrialRecord] = []
    for number in range(n):
        params = propose(sweep, space, trials)
        trials.append(trial(number, params, "queued", {}))
    return [t.hyperparameters for t in trials]


RANDOM = {"method": "random", "max_trials": 8,
          "space": {"lr": {"low": 1e-4, "high": 0.1, "log": True},
                    "hidden_sizes": {"values": [[32, 32], [64, 64, 64]]},
                    "activation": {"values": ["relu", "tanh"]}}}


def test_the_same_spec_and_seed_propose_the_same_trials():
    first = run_proposals(*make_sweep({**RANDOM, "seed": 7}), 8)
    again = run_proposals(*make_sweep({**RANDOM, "seed": 7}), 8)
    other = run_proposals(*make_sweep({**RANDOM, "seed": 8}), 8)
    assert first == again
    assert first != other
    assert len({json.dumps(p, sort_keys=True) for p in first}) == 8  # not one point repeated
    for p in first:
        assert 1e-4 <= p["lr"] <= 0.1
        assert p["hidden_sizes"] in ([32, 32], [64, 64, 64])  # lists come back as lists


def test_tpe_proposals_are_reproducible_over_the_same_history():
    sweep, space = make_sweep({**RANDOM, "method": "tpe", "max_trials": 20, "seed": 3})
    history = [trial(i, p, "succeeded", {1: 0.5 + 0.01 * i})
               for i, p in enumerate(run_proposals(sweep, space, 12))]
    assert propose(sweep, space, history) == propose(sweep, space, history)


def test_a_grid_proposes_every_combination_exactly_once():
    sweep, space = make_sweep({"method": "grid", "space": {
        "hidden_sizes": {"values": [[8, 8], [16, 16], [32, 32, 32]]},
        "activation": {"values": ["relu", "sigmoid", "tanh"]},
        "epochs": {"low": 1, "high": 2}}})
    assert sweep.max_trials == 18
    proposed = run_proposals(sweep, space, 18)
    combos = {json.dumps([p["hidden_sizes"], p["activation"], p["epochs"]]) for p in proposed}
    expected = {json.dumps([list(h), a, e]) for h, a, e in itertools.product(
        [[8, 8], [16, 16], [32, 32, 32]], ["relu", "sigmoid", "tanh"], [1, 2])}
    assert combos == expected


MEDIAN = {"method": "random", "max_trials": 30, "hyperparameters": {"epochs": 5},
          "space": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}},
          "early_stopping": {"method": "median", "min_epochs": 2}}


def _curve(top: float) -> dict[int, float]:
    return {e: top * e / 5 for e in range(1, 6)}


def test_median_prunes_a_trial_below_the_median_and_spares_one_above():
    sweep, space = make_sweep(MEDIAN)
    done = [trial(i, {"lr": 0.01}, "succeeded", _curve(0.9)) for i in range(5)]
    slow = trial(5, {"lr": 0.01}, "running", {1: 0.05, 2: 0.1})
    fast = trial(5, {"lr": 0.01}, "running", {1: 0.5, 2: 0.5})
    assert should_prune(sweep, space, [*done, slow], slow.job_id, 2)
    assert not should_prune(sweep, space, [*done, fast], fast.job_id, 2)


def test_median_waits_for_min_epochs_and_for_enough_completed_trials():
    sweep, space = make_sweep(MEDIAN)
    done = [trial(i, {"lr": 0.01}, "succeeded", _curve(0.9)) for i in range(5)]
    early = trial(5, {"lr": 0.01}, "running", {1: 0.01})
    assert not should_prune(sweep, space, [*done, early], early.job_id, 1)  # epoch < min
    few = [trial(i, {"lr": 0.01}, "succeeded", _curve(0.9)) for i in range(2)]
    slow = trial(2, {"lr": 0.01}, "running", {1: 0.05, 2: 0.1})
    assert not should_prune(sweep, space, [*few, slow], slow.job_id, 2)


ASHA = {"method": "random", "max_trials": 27, "hyperparameters": {"epochs": 9},
        "space": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}},
        "early_stopping": {"method": "asha", "min_epochs": 1, "reduction_factor": 3}}


def test_asha_keeps_only_the_top_third_at_a_rung():
    sweep, space = make_sweep(ASHA)
    # Six trials judged at rung 0 (epoch 1) before: values 0.1 .. 0.6.
    rung0 = [trial(i, {"lr": 0.01}, "pruned", {1: 0.1 * (i + 1)}, epoch=1) for i in range(6)]
    worst = trial(6, {"lr": 0.01}, "running", {1: 0.05})
    best = trial(6, {"lr": 0.01}, "running", {1: 0.9})
    middle = trial(6, {"lr": 0.01}, "running", {1: 0.35})
    assert should_prune(sweep, space, [*rung0, worst], worst.job_id, 1)
    assert should_prune(sweep, space, [*rung0, middle], middle.job_id, 1)
    assert not should_prune(sweep, space, [*rung0, best], best.job_id, 1)
    # Between rungs (epoch 2) nothing is judged, however bad.
    assert not should_prune(sweep, space, [*rung0, trial(6, {"lr": 0.01}, "running",
                                                         {1: 0.9, 2: 0.0})], 106, 2)


def test_asha_judges_the_next_rung_against_those_that_reached_it():
    sweep, space = make_sweep(ASHA)
    # Three trials went on to epoch 3 (rung 1) with 0.7, 0.8, 0.9 there.
    promoted = [trial(i, {"lr": 0.01}, "succeeded",
                      {1: 0.6, 2: 0.65, 3: 0.7 + 0.1 * i, 9: 0.95}) for i in range(3)]
    behind = trial(3, {"lr": 0.01}, "running", {1: 0.95, 2: 0.6, 3: 0.65})
    ahead = trial(3, {"lr": 0.01}, "running", {1: 0.95, 2: 0.9, 3: 0.99})
    assert should_prune(sweep, space, [*promoted, behind], behind.job_id, 3)
    assert not should_prune(sweep, space, [*promoted, ahead], ahead.job_id, 3)


def test_no_early_stopping_never_prunes():
    sweep, space = make_sweep({**ASHA, "early_stopping": {"method": "none"}})
    rung0 = [trial(i, {"lr": 0.01}, "succeeded", {1: 0.9}) for i in range(6)]
    worst = trial(6, {"lr": 0.01}, "running", {1: 0.0})
    assert not should_prune(sweep, space, [*rung0, worst], worst.job_id, 1)


@pytest.mark.parametrize(("body", "field"), [
    ({"space": {}}, "space"),
    ({"space": {"lr": {"low": 0.1, "high": 0.01}}}, "space.lr"),
    ({"space": {"lr": {"low": 0, "high": 0.1, "log": True}}}, "space.lr.low"),
    ({"space": {"lr": {"low": 1e-3, "high": 20}}}, "space.lr.high"),
    ({"space": {"activation": {"values": ["relu", "swish"]}}}, "space.activation.values[1]"),
    ({"space": {"hidden_sizes": {"values": [[8]]}}}, "space.hidden_sizes.values[0]"),
    ({"space": {"dropout": {"values": []}}}, "space.dropout.values"),
    ({"space": {"width": {"values": [1]}}}, "space.width"),
    ({"space": {"lr": {"values": [0.1]}}, "hyperparameters": {"lr": 0.2}}, "space.lr"),
    ({"space": {"lr": {"low": 1e-3, "high": 0.1}}, "method": "grid"}, "space.lr"),
    ({"space": {"lr": {"values": [0.1]}}, "method": "random"}, "max_trials"),
    ({"space": {"lr": {"values": [0.1]}}, "method": "random", "max_trials": 1001},
     "max_trials"),
    ({"space": {"epochs": {"low": 1, "high": 1000}, "batch_size": {"low": 1, "high": 10}},
      "method": "grid"}, "space"),
    ({"space": {"lr": {"values": [0.1]}}, "max_trials": 2,
      "objective": {"metric": "val_perplexity"}}, "objective.metric"),
    ({"space": {"lr": {"values": [0.1]}}, "max_trials": 2,
      "objective": {"metric": "train_loss"}}, "objective.metric"),
    ({"space": {"lr": {"values": [0.1]}}, "max_trials": 2, "hyperparameters": {"epochs": 1},
      "early_stopping": {"method": "asha"}}, "early_stopping.method"),
    ({"space": {"lr": {"values": [0.1]}}, "max_trials": 2,
      "early_stopping": {"method": "asha", "reduction_factor": 1}},
     "early_stopping.reduction_factor"),
])
def test_a_bad_spec_names_its_field(body, field):
    with pytest.raises(SpecError) as caught:
        check_sweep({"model": "mlp", "dataset": "digits", "method": "random", **body}, CAP)
    assert caught.value.field == field, caught.value
