"""What a model family's entry in the table (models/registry.py) is written with: `Family`
itself, `Param` (one hyperparameter, and how a user's value is checked), `DataShape` (the
facts of a dataset that size a model), `Sizes` (what a family's size estimate returns) and
`SpecError`.

Imports no torch: the API reads the table on every request. A family's config class and
nn.Module are named here by module and class, and imported only when a network is built.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TYPES = ("int", "float", "str", "bool", "int_list")  # of a Param
FLOAT = 4  # bytes of an fp32 element
INDEX = 8  # bytes of an int64 element (token ids, targets, pooling indices)


class SpecError(ValueError):
    """A job spec problem: `field` names the spot ("model", "dataset", "hyperparameters.lr"),
    `message` says what is allowed."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# ---------------------------------------------------------------------------------------------
# hyperparameters


def plain(v):
    """A default as JSON has it (tuples, used for immutable defaults, become lists)."""
    return list(v) if isinstance(v, tuple) else v


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # int | float | str | bool | int_list
    default: Any
    minimum: float | None = None  # for int_list: bound on each element
    maximum: float | None = None
    choices: tuple | None = None
    description: str = ""
    exclusive_minimum: bool = False  # minimum itself not allowed (lr > 0)
    min_items: int | None = None  # int_list only
    max_items: int | None = None

    def to_dict(self) -> dict:
        d = {
            "type": self.type,
            "default": plain(self.default),
            "minimum": self.minimum,
            "maximum": self.maximum,
            "choices": list(self.choices) if self.choices is not None else None,
            "description": self.description,
            "exclusive_minimum": self.exclusive_minimum,
        }
        if self.type == "int_list":
            d["min_items"] = self.min_items
            d["max_items"] = self.max_items
        return d

    def range_text(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        lo = hi = ""
        if self.minimum is not None:
            lo = f"{'>' if self.exclusive_minimum else '>='} {_num(self.minimum)}"
        if self.maximum is not None:
            hi = f"<= {_num(self.maximum)}"
        return " and ".join(x for x in (lo, hi) if x) or "any value"

    @property
    def field(self) -> str:
        return f"hyperparameters.{self.name}"

    def _check_range(self, x, what: str = "") -> None:
        if self.choices is not None and x not in self.choices:
            raise SpecError(self.field, f"{what}{x!r} is not allowed; {self.range_text()}")
        too_low = self.minimum is not None and (
            x <= self.minimum if self.exclusive_minimum else x < self.minimum)
        too_high = self.maximum is not None and x > self.maximum
        if too_low or too_high:
            raise SpecError(self.field, f"{what}{x!r} is out of range; must be {self.range_text()}")

    def _as_int(self, x, what: str = "") -> int:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise SpecError(self.field, f"{what}must be an integer, got {x!r}")
        if isinstance(x, float):
            if not (math.isfinite(x) and x.is_integer()):
                raise SpecError(self.field, f"{what}must be an integer, got {x!r}")
            x = int(x)
        self._check_range(x, what)
        return x

    def coerce(self, value: Any) -> Any:
        """`value` as this parameter's type, in range; SpecError names the field otherwise."""
        if self.type == "int":
            return self._as_int(value)
        if self.type == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SpecError(self.field, f"must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise SpecError(self.field, f"must be a finite number, got {value!r}")
            self._check_range(value)
            return value
        if self.type == "str":
            if not isinstance(value, str):
                raise SpecError(self.field, f"must be a string, {self.range_text()}; got {value!r}")
            self._check_range(value)
            return value
        if self.type == "bool":
            if not isinstance(value, bool):
                raise SpecError(self.field, f"must be true or false, got {value!r}")
            return value
        if self.type == "int_list":
            return self._coerce_list(value)
        raise AssertionError(self.type)

    def _coerce_list(self, value: Any) -> list[int]:
        if isinstance(value, str):  # "128,64" from a command line
            try:
                value = [int(v) for v in value.replace(" ", "").split(",") if v]
            except ValueError:
                raise SpecError(self.field, f"must be a list of integers, got {value!r}") from None
        if not isinstance(value, (list, tuple)):
            raise SpecError(self.field, f"must be a list of integers, got {value!r}")
        n = len(value)
        if not self.min_items <= n <= self.max_items:
            raise SpecError(self.field,
                            f"must have {self.min_items} to {self.max_items} entries, got {n}")
        return [self._as_int(v, f"entry {i}: ") for i, v in enumerate(value)]


# ---------------------------------------------------------------------------------------------
# sizes


@dataclass(frozen=True)
class DataShape:
    """The facts of a dataset that size a model: image geometry and classes, or vocabulary.
    Loaded data (models.data.ImageData, TextData) has the same attributes."""

    channels: int = 0
    height: int = 0
    width: int = 0
    num_classes: int = 0
    vocab_size: int = 0
    vocab_is_bound: bool = False  # vocab_size is an upper bound, not the real vocabulary


@dataclass(frozen=True)
class Sizes:
    """What a family's size estimate returns (all bytes but params); models/limits.py turns it
    into the job's Estimate and its validation plan."""

    params: int
    activation: int  # kept for backward by one training batch
    largest: int  # the largest single activation tensor of a training batch
    eval_item: int  # no_grad working memory per image, or per LM token before the decoder


# ---------------------------------------------------------------------------------------------
# the family


@dataclass(frozen=True)
class Family:
    """Everything the service knows about one model family, in one place."""

    name: str  # the `model` of a job
    description: str
    task: str  # "classification" | "language_modeling"
    data_kind: str  # "images" | "text": the datasets it trains on
    params: tuple[Param, ...]  # its hyperparameters, in catalogue order
    headline_metric: str  # the one number that says how good a run is
    metrics: tuple[str, ...]  # what fit() reports for it (besides grad_norm/<layer>)
    module: str  # the file with its config dataclass and nn.Module (imports torch)
    config_class: str
    model_class: str
    # validated hyperparameters + the data's facts (DataShape, ImageData or TextData) ->
    # the config's fields
    config_fields: Callable[[dict, Any], dict]
    size: Callable[[dict, DataShape], Sizes]  # validated hyperparameters -> sizes
    check: Callable[[dict], None] | None = None  # rules across fields, once each is valid

    def param_map(self) -> dict[str, Param]:
        return {p.name: p for p in self.params}

    def config_type(self) -> type:
        return getattr(importlib.import_module(self.module), self.config_class)

    def model_type(self) -> type:
        return getattr(importlib.import_module(self.module), self.model_class)

    def build_config(self, hp: dict, data: Any):
        return self.config_type()(**self.config_fields(hp, data))

    def build(self, config):
        """The nn.Module for `config` (imports torch)."""
        return self.model_type()(config)
