"""A sweep's spec, checked: the search space against the model's catalogue (exactly as a job's
hyperparameters are checked), the objective, the trial counts and the early stopping.

Every problem is a SpecError naming the field (`space.lr.low`, `objective.metric`, ...) and
what is allowed; the API turns it into a 422. Imports no torch and no Optuna.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from core.metrics import metric_goal
from models.family import Param, SpecError
from models.registry import family, params, validate_hyperparameters

METHODS = ("grid", "random", "tpe")
EARLY_STOPPING = ("none", "median", "asha")
# models/train.py reports the validation metrics once per epoch, at the epoch's end: the
# metrics a pruner can be asked about. The others are per step.
EPOCH_METRIC_PREFIX = "val_"
DEFAULT_MAX_CONCURRENT = 4


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: a list of values (`values`), or a range of numbers
    (`low`, `high`, `log`, `step`) of an int or float hyperparameter."""

    name: str
    type: str  # the catalogue's: int | float | str | bool | int_list
    values: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    def grid_values(self) -> tuple | None:
        """Every value a grid takes; None when the range is continuous."""
        if self.values is not None:
            return self.values
        if self.type == "int":
            step = int(self.step or 1)
            return tuple(range(int(self.low), int(self.high) + 1, step))
        if self.step is not None:  # float with a step: low, low + step, ..., <= high
            n = math.floor((self.high - self.low) / self.step + 1e-9) + 1
            return tuple(round(self.low + i * self.step, 12) for i in range(n))
        return None


@dataclass(frozen=True)
class EarlyStopping:
    method: str = "none"
    min_epochs: int = 1
    reduction_factor: int = 3

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "min_epochs": self.min_epochs,
                "reduction_factor": self.reduction_factor}


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep: what POST /sweeps stores."""

    model: str
    dataset: str
    hyperparameters: dict[str, Any]  # the fixed ones, as given (checked)
    space: dict[str, Dimension]
    method: str
    objective_metric: str
    objective_goal: str
    max_trials: int
    max_concurrent: int
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    seed: int = 0

    def space_json(self) -> dict[str, Any]:
        out = {}
        for name, d in self.space.items():
            if d.values is not None:
                out[name] = {"values": list(d.values)}
            else:
                out[name] = {"low": d.low, "high": d.high, "log": d.log, "step": d.step}
        return out


def dimensions_from_json(space: dict[str, Any], model: str) -> dict[str, Dimension]:
    """The stored `sweeps.space` back as Dimensions (it was checked when stored)."""
    p = params(model)
    return {name: Dimension(
        name=name, type=p[name].type,
        values=tuple(spec["values"]) if "values" in spec else None,
        low=spec.get("low"), high=spec.get("high"), log=bool(spec.get("log")),
        step=spec.get("step"),
    ) for name, spec in space.items()}


def _dimension(name: str, spec: Any, param: Param) -> Dimension:
    where = f"space.{name}"
    if not isinstance(spec, dict):
        raise SpecError(where, 'must be {"values": [...]} or {"low": a, "high": b, '
                               '"log"?: bool, "step"?: n}')
    unknown = set(spec) - {"values", "low", "high", "log", "step"}
    if unknown:
        raise SpecError(f"{where}.{min(unknown)}",
                        "unknown key; allowed: values, or low, high, log, step")
    if "values" in spec:
        if set(spec) != {"values"}:
            raise SpecError(where, "give either values or low/high, not both")
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where}.values", "must be a non-empty list")
        checked = []
        for i, value in enumerate(values):
            try:
                checked.append(param.coerce(value))
            except SpecError as exc:
                raise SpecError(f"{where}.values[{i}]", exc.message) from exc
        keys = [json.dumps(v) for v in checked]
        if len(set(keys)) != len(keys):
            raise SpecError(f"{where}.values", "has the same value twice")
        return Dimension(name, param.type, values=tuple(
            tuple(v) if isinstance(v, list) else v for v in checked))
    if "low" not in spec or "high" not in spec:
        raise SpecError(where, 'needs "values", or both "low" and "high"')
    if param.type not in ("int", "float") or param.choices is not None:
        kind = "has fixed choices" if param.choices is not None else f"is a {param.type}"
        raise SpecError(where, f"{name} {kind}: search it with \"values\" "
                               f"({param.range_text()})")
    bounds = {}
    for key in ("low", "high"):
        try:
            bounds[key] = param.coerce(spec[key])
        except SpecError as exc:
            raise SpecError(f"{where}.{key}", exc.message) from exc
    low, high = bounds["low"], bounds["high"]
    if low > high:
        raise SpecError(where, f"low ({low}) must not exceed high ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(f"{where}.log", "must be true or false")
    if log and low <= 0:
        raise SpecError(f"{where}.low", f"a log range needs low > 0, not {low}")
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, int | float) or step <= 0:
            raise SpecError(f"{where}.step", "must be a number > 0")
        if param.type == "int" and (not float(step).is_integer() or (log and step != 1)):
            raise SpecError(f"{where}.step", "an int range takes a whole step (1 with log)")
        if param.type == "float" and log:
            raise SpecError(f"{where}.step", "a log range of floats takes no step")
        if step > high - low and high > low:
            raise SpecError(f"{where}.step", f"must not exceed high - low ({high - low})")
    return Dimension(name, param.type, low=low, high=high, log=log,
                     step=(int(step) if param.type == "int" else float(step))
                     if step is not None else None)


def _positive_int(body: dict, key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError(key, f"must be a whole number from {low} to {high}")
    return value


def _early_stopping(body: Any, epochs: int | None) -> EarlyStopping:
    if body is None:
        return EarlyStopping()
    if not isinstance(body, dict):
        raise SpecError("early_stopping", 'must be {"method": "none" | "median" | "asha", '
                                          '"min_epochs"?: int, "reduction_factor"?: int}')
    unknown = set(body) - {"method", "min_epochs", "reduction_factor"}
    if unknown:
        raise SpecError(f"early_stopping.{min(unknown)}",
                        "unknown key; allowed: method, min_epochs, reduction_factor")
    method = body.get("method", "none")
    if method not in EARLY_STOPPING:
        raise SpecError("early_stopping.method", f"one of {', '.join(EARLY_STOPPING)}")
    sub = {f"early_stopping.{k}": v for k, v in body.items()}
    min_epochs = _positive_int(sub, "early_stopping.min_epochs", 1, 1000) or 1
    rf = _positive_int(sub, "early_stopping.reduction_factor", 2, 10) or 3
    if method != "none" and epochs is not None and epochs < 2:
        raise SpecError("early_stopping.method",
                        "pruning needs trials of at least 2 epochs (hyperparameters.epochs)")
    return EarlyStopping(method, min_epochs, rf)


def check_sweep(body: dict[str, Any], max_trials_cap: int) -> SweepSpec:
    """The sweep POST /sweeps asks for, checked; SpecError naming the field otherwise."""
    model = body.get("model")
    fam = family(model if isinstance(model, str) else "")
    fixed = body.get("hyperparameters") or {}
    if not isinstance(fixed, dict):
        raise SpecError("hyperparameters", "must be an object of name: value")
    space_in = body.get("space")
    if not isinstance(space_in, dict) or not space_in:
        raise SpecError("space", "must name at least one hyperparameter to search")
    catalogue = params(model)
    space: dict[str, Dimension] = {}
    for name, spec in space_in.items():
        if name not in catalogue:
            raise SpecError(f"space.{name}", f"unknown hyperparameter {name!r} for model "
                                             f"{model!r}; allowed: {', '.join(catalogue)}")
        if name in fixed:
            raise SpecError(f"space.{name}", "is also fixed in hyperparameters; give it once")
        space[name] = _dimension(name, spec, catalogue[name])
    # The fixed values are checked as a job's are (defaults filled for the check only).
    checked = validate_hyperparameters(model, fixed)
    fixed = {name: checked[name] for name in fixed}

    method = body.get("method", "random")
    if method not in METHODS:
        raise SpecError("method", f"one of {', '.join(METHODS)}")
    objective = body.get("objective") or {}
    if not isinstance(objective, dict):
        raise SpecError("objective", 'must be {"metric": name, "goal": "max" | "min"}')
    metric = objective.get("metric", fam.headline_metric)
    epoch_metrics = [m for m in fam.metrics if m.startswith(EPOCH_METRIC_PREFIX)]
    if metric not in epoch_metrics:
        raise SpecError("objective.metric", f"{metric!r} is not a metric {model} reports at "
                                            f"each epoch's end; one of {', '.join(epoch_metrics)}")
    goal = objective.get("goal", metric_goal(metric))
    if goal not in ("max", "min"):
        raise SpecError("objective.goal", "max or min")

    max_trials = _positive_int(body, "max_trials", 1, max_trials_cap)
    if method == "grid":
        grid = [d.grid_values() for d in space.values()]
        for d, values in zip(space.values(), grid):
            if values is None:
                raise SpecError(f"space.{d.name}", "a grid needs values, an int range or a "
                                                   "float range with a step")
        size = math.prod(len(v) for v in grid)
        if size > max_trials_cap:
            raise SpecError("space", f"the grid has {size} combinations; at most "
                                     f"{max_trials_cap} (TRAINYARD_MAX_SWEEP_TRIALS)")
        for combo in itertools.product(*grid):  # every trial must be a valid job
            try:
                validate_hyperparameters(model, {**fixed, **dict(zip(space, combo))})
            except SpecError as exc:
                raise SpecError(f"space.{exc.field.removeprefix('hyperparameters.')}",
                                f"the combination {dict(zip(space, combo))} is not a "
                                f"valid job: {exc.message}") from exc
        max_trials = min(max_trials or size, size)
    elif max_trials is None:
        raise SpecError("max_trials", f"{method} search needs max_trials (1 to "
                                      f"{max_trials_cap})")
    max_concurrent = _positive_int(body, "max_concurrent", 1, max_trials_cap)
    max_concurrent = min(max_concurrent or DEFAULT_MAX_CONCURRENT, max_trials)
    epochs = None if "epochs" in space else checked["epochs"]
    early = _early_stopping(body.get("early_stopping"), epochs)
    seed = _positive_int(body, "seed", 0, 2**31 - 1) or 0
    return SweepSpec(model=model, dataset=body.get("dataset", ""), hyperparameters=dict(fixed),
                     space=space, method=method, objective_metric=metric, objective_goal=goal,
                     max_trials=max_trials, max_concurrent=max_concurrent,
                     early_stopping=early, seed=seed)
