"""The model catalogue: every hyperparameter with its type, default and allowed range, and the
validation that turns a user's partial hyperparameters into a complete, checked dict.

Imports no torch (the API uses it on every request). Defaults are sized so each model's
default job finishes in well under a minute on 2 CPU cores and still learns (see
tests/unit/test_train.py). Upper bounds keep a single job from being absurd in memory or time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MODEL_NAMES = ("mlp", "cnn", "rnn_lm")
TYPES = ("int", "float", "str", "bool", "int_list")
# An LM batch is batch_size * seq_len tokens; cap it so the logits tensor stays sane.
MAX_TOKENS_PER_BATCH = 65_536


class SpecError(ValueError):
    """A job spec problem: `field` names the spot ("model", "dataset", "hyperparameters.lr"),
    `message` says what is allowed."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


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
            "default": _plain(self.default),
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


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def _common(*, epochs, batch_size, lr, optimizer="adam", lr_schedule="constant", grad_clip=0.0,
            steps_per_epoch=0, batch_max=4096) -> list[Param]:
    return [
        Param("epochs", "int", epochs, 1, 1000, description="Passes over the training data."),
        Param("batch_size", "int", batch_size, 1, batch_max, description="Examples per step."),
        Param("lr", "float", lr, 0.0, 10.0, exclusive_minimum=True,
              description="Learning rate (peak, for the cosine schedule)."),
        Param("optimizer", "str", optimizer, choices=("adam", "adamw", "sgd"),
              description="adam, adamw (decoupled weight decay) or sgd (with momentum)."),
        Param("momentum", "float", 0.9, 0.0, 0.999, description="SGD momentum (sgd only)."),
        Param("weight_decay", "float", 0.0, 0.0, 1.0, description="L2 / decoupled weight decay."),
        Param("lr_schedule", "str", lr_schedule, choices=("constant", "cosine"),
              description="constant, or cosine decay to 0 over all steps."),
        Param("grad_clip", "float", grad_clip, 0.0, 1000.0,
              description="Clip the global gradient norm to this value; 0 disables clipping."),
        Param("steps_per_epoch", "int", steps_per_epoch, 0, 100_000,
              description="Batches per epoch, each epoch a fresh random subset; "
                          "0 = one full pass over the training data."),
        Param("seed", "int", 0, 0, 2**31 - 1, description="Seeds init, shuffling, dropout, split."),
        Param("precision", "str", "fp32", choices=("fp32", "bf16"),
              description="bf16 autocast on CUDA; CPU always trains in fp32."),
    ]


_ACTIVATION = ("relu", "sigmoid", "tanh")

_CATALOGUE: dict[str, dict] = {
    "mlp": {
        "description": "Multi-layer perceptron (fully connected, >= 2 hidden layers) for images.",
        "task": "classification",
        "datasets_kind": "images",
        "params": _common(epochs=40, batch_size=32, lr=2e-3, lr_schedule="cosine") + [
            Param("hidden_sizes", "int_list", (256, 128), 1, 2048, min_items=2, max_items=8,
                  description="Width of each hidden layer (2 to 8 layers)."),
            Param("activation", "str", "relu", choices=_ACTIVATION,
                  description="Hidden activation; sigmoid shows vanishing gradients."),
            Param("dropout", "float", 0.1, 0.0, 0.9,
                  description="Dropout after each hidden layer."),
        ],
    },
    "cnn": {
        "description": "Convolutional network: conv blocks with pooling, then a linear head.",
        "task": "classification",
        "datasets_kind": "images",
        "params": _common(epochs=30, batch_size=32, lr=2e-3, lr_schedule="cosine") + [
            Param("channels", "int_list", (32, 64), 1, 512, min_items=1, max_items=6,
                  description="Output channels of each conv block (1 to 6 blocks)."),
            Param("kernel_size", "int", 3, choices=(1, 3, 5, 7),
                  description="Square, odd kernel with 'same' padding."),
            Param("pooling", "str", "max", choices=("max", "avg"),
                  description="2x2 pooling after each block (while the map is >= 2 pixels)."),
            Param("activation", "str", "relu", choices=_ACTIVATION, description="Activation."),
            Param("dropout", "float", 0.1, 0.0, 0.9, description="Dropout before the head."),
        ],
    },
    "rnn_lm": {
        "description": "Recurrent language model: embedding, RNN/GRU/LSTM layers, "
                       "next-token softmax.",
        "task": "language_modeling",
        "datasets_kind": "text",
        "params": _common(epochs=4, batch_size=32, lr=3e-3, lr_schedule="cosine", grad_clip=1.0,
                          steps_per_epoch=150, batch_max=1024) + [
            Param("cell", "str", "gru", choices=("rnn", "gru", "lstm"),
                  description="rnn (Elman, tanh), gru or lstm."),
            Param("embedding_dim", "int", 64, 1, 1024, description="Token embedding width."),
            Param("hidden_size", "int", 128, 1, 1024, description="Recurrent state width."),
            Param("num_layers", "int", 1, 1, 4, description="Stacked recurrent layers."),
            Param("seq_len", "int", 64, 2, 512, description="Tokens per training window (BPTT)."),
            Param("tokenizer", "str", "char", choices=("char", "word"),
                  description="char, or word (lowercased words and punctuation)."),
            Param("max_vocab", "int", 5_000, 2, 50_000,
                  description="Word tokenizer: keep this many most frequent tokens (incl. <unk>)."),
            Param("tie_weights", "bool", False,
                  description="Share embedding and decoder weights (a projection is added "
                              "when embedding_dim != hidden_size)."),
            Param("dropout", "float", 0.0, 0.0, 0.9, description="Dropout on embeddings/outputs."),
        ],
    },
}


def _params(model: str) -> dict[str, Param]:
    if model not in _CATALOGUE:
        raise SpecError("model", f"unknown model {model!r}; allowed: {', '.join(MODEL_NAMES)}")
    return {p.name: p for p in _CATALOGUE[model]["params"]}


def params(model: str) -> dict[str, Param]:
    """The Param objects of one model, by name."""
    return _params(model)


def defaults(model: str) -> dict:
    return {name: _plain(p.default) for name, p in _params(model).items()}


def catalogue() -> dict[str, dict]:
    return {
        model: {
            "description": entry["description"],
            "task": entry["task"],
            "datasets_kind": entry["datasets_kind"],
            "hyperparameters": {p.name: p.to_dict() for p in entry["params"]},
        }
        for model, entry in _CATALOGUE.items()
    }


def dataset_kind_for(model: str) -> str:
    _params(model)
    return _CATALOGUE[model]["datasets_kind"]


def check_dataset_kind(model: str, dataset: str, kind: str) -> None:
    """SpecError("dataset", ...) when a dataset of `kind` cannot train `model`."""
    want = dataset_kind_for(model)
    if kind != want:
        raise SpecError("dataset", f"dataset {dataset!r} holds {kind}; model {model!r} "
                                   f"needs a dataset of kind {want!r}")


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def _coerce(p: Param, value: Any) -> Any:
    field = f"hyperparameters.{p.name}"

    def check_range(x, what=""):
        if p.choices is not None and x not in p.choices:
            raise SpecError(field, f"{what}{x!r} is not allowed; {p.range_text()}")
        too_low = p.minimum is not None and (
            x <= p.minimum if p.exclusive_minimum else x < p.minimum)
        too_high = p.maximum is not None and x > p.maximum
        if too_low or too_high:
            raise SpecError(field, f"{what}{x!r} is out of range; must be {p.range_text()}")

    def as_int(x, what=""):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise SpecError(field, f"{what}must be an integer, got {x!r}")
        if isinstance(x, float):
            if not (math.isfinite(x) and x.is_integer()):
                raise SpecError(field, f"{what}must be an integer, got {x!r}")
            x = int(x)
        check_range(x, what)
        return x

    if p.type == "int":
        return as_int(value)
    if p.type == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(field, f"must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise SpecError(field, f"must be a finite number, got {value!r}")
        check_range(value)
        return value
    if p.type == "str":
        if not isinstance(value, str):
            raise SpecError(field, f"must be a string, {p.range_text()}; got {value!r}")
        check_range(value)
        return value
    if p.type == "bool":
        if not isinstance(value, bool):
            raise SpecError(field, f"must be true or false, got {value!r}")
        return value
    if p.type == "int_list":
        if isinstance(value, str):  # "128,64" from a command line
            try:
                value = [int(v) for v in value.replace(" ", "").split(",") if v]
            except ValueError:
                raise SpecError(field, f"must be a list of integers, got {value!r}") from None
        if not isinstance(value, (list, tuple)):
            raise SpecError(field, f"must be a list of integers, got {value!r}")
        n = len(value)
        if not p.min_items <= n <= p.max_items:
            raise SpecError(field, f"must have {p.min_items} to {p.max_items} entries, got {n}")
        return [as_int(v, f"entry {i}: ") for i, v in enumerate(value)]
    raise AssertionError(p.type)


def validate_hyperparameters(model: str, hp: dict | None) -> dict:
    """Fill defaults, coerce types, check ranges; SpecError names the field and what is allowed."""
    spec = _params(model)
    hp = {} if hp is None else hp
    if not isinstance(hp, dict):
        raise SpecError("hyperparameters", "must be an object of name: value")
    out = {}
    for key, value in hp.items():
        if key not in spec:
            raise SpecError(f"hyperparameters.{key}",
                            f"unknown hyperparameter {key!r} for model {model!r}; "
                            f"allowed: {', '.join(sorted(spec))}")
        out[key] = _coerce(spec[key], value)
    for name, p in spec.items():
        out.setdefault(name, _plain(p.default))
    if model == "rnn_lm" and out["batch_size"] * out["seq_len"] > MAX_TOKENS_PER_BATCH:
        raise SpecError("hyperparameters.batch_size",
                        f"batch_size * seq_len must be <= {MAX_TOKENS_PER_BATCH} tokens; "
                        f"got {out['batch_size']} * {out['seq_len']}")
    return {name: out[name] for name in spec}  # catalogue order
