"""The hyperparameter catalogue and its validation (what the API answers with 422)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from models.registry import (
    MAX_TOKENS_PER_BATCH,
    MODEL_NAMES,
    SpecError,
    catalogue,
    check_dataset_kind,
    dataset_kind_for,
    defaults,
    validate_hyperparameters,
)

ROOT = Path(__file__).resolve().parents[2]

STABLE = {
    "common": {"epochs", "batch_size", "lr", "optimizer", "weight_decay", "seed", "lr_schedule"},
    "mlp": {"hidden_sizes", "activation", "dropout"},
    "cnn": {"channels", "kernel_size", "pooling", "activation", "dropout"},
    "rnn_lm": {"cell", "embedding_dim", "hidden_size", "num_layers", "seq_len", "tokenizer",
               "tie_weights", "dropout"},
}


def test_catalogue_describes_every_hyperparameter():
    cat = catalogue()
    assert tuple(cat) == MODEL_NAMES
    json.dumps(cat)  # JSON-able as the API returns it
    for model, entry in cat.items():
        assert entry["task"] == ("language_modeling" if model == "rnn_lm" else "classification")
        assert entry["datasets_kind"] == dataset_kind_for(model)
        hps = entry["hyperparameters"]
        assert STABLE["common"] | STABLE[model] <= set(hps)
        for name, p in hps.items():
            assert {"type", "default", "minimum", "maximum", "choices", "description"} <= set(p)
            assert p["description"], name
            if p["type"] in ("int", "float", "int_list") and p["choices"] is None:
                assert p["maximum"] is not None, f"{model}.{name} needs an upper bound"
                assert p["minimum"] is not None
            if p["type"] == "str":
                assert p["default"] in p["choices"]


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_defaults_validate_and_are_filled(model):
    hp = validate_hyperparameters(model, {})
    assert hp == defaults(model)
    assert validate_hyperparameters(model, None) == hp
    assert validate_hyperparameters(model, hp) == hp  # idempotent


def test_upper_bounds_keep_jobs_sane():
    cat = catalogue()
    for model in MODEL_NAMES:
        hps = cat[model]["hyperparameters"]
        assert hps["epochs"]["maximum"] <= 1000 and hps["batch_size"]["maximum"] <= 4096
    assert cat["mlp"]["hyperparameters"]["hidden_sizes"]["max_items"] <= 8
    assert cat["cnn"]["hyperparameters"]["channels"]["maximum"] <= 512
    lm = cat["rnn_lm"]["hyperparameters"]
    assert lm["seq_len"]["maximum"] <= 512 and lm["num_layers"]["maximum"] <= 4
    with pytest.raises(SpecError) as err:
        validate_hyperparameters("rnn_lm", {"batch_size": 1024, "seq_len": 512})
    assert err.value.field == "hyperparameters.batch_size"
    assert str(MAX_TOKENS_PER_BATCH) in err.value.message


def test_values_are_coerced():
    hp = validate_hyperparameters("mlp", {"lr": 1, "epochs": 3.0, "hidden_sizes": "64, 32,16"})
    assert hp["lr"] == 1.0 and isinstance(hp["lr"], float)
    assert hp["epochs"] == 3 and isinstance(hp["epochs"], int)
    assert hp["hidden_sizes"] == [64, 32, 16]
    assert validate_hyperparameters("rnn_lm", {"tie_weights": True})["tie_weights"] is True


@pytest.mark.parametrize("model,hp,field,words", [
    ("mlp", {"lr": 0}, "hyperparameters.lr", ["> 0", "<= 10"]),
    ("mlp", {"lr": -1e-3}, "hyperparameters.lr", ["> 0"]),
    ("mlp", {"lr": 11}, "hyperparameters.lr", ["<= 10"]),
    ("mlp", {"lr": float("nan")}, "hyperparameters.lr", ["finite"]),
    ("mlp", {"epochs": 0}, "hyperparameters.epochs", [">= 1", "<= 1000"]),
    ("mlp", {"epochs": 1.5}, "hyperparameters.epochs", ["integer"]),
    ("mlp", {"epochs": True}, "hyperparameters.epochs", ["integer"]),
    ("mlp", {"batch_size": "64"}, "hyperparameters.batch_size", ["integer"]),
    ("mlp", {"hidden_sizes": [64]}, "hyperparameters.hidden_sizes", ["2 to 8"]),
    ("mlp", {"hidden_sizes": [64, 0]}, "hyperparameters.hidden_sizes", ["entry 1", ">= 1"]),
    ("mlp", {"hidden_sizes": [64, True]}, "hyperparameters.hidden_sizes", ["integer"]),
    ("mlp", {"activation": "gelu"}, "hyperparameters.activation", ["relu", "sigmoid", "tanh"]),
    ("mlp", {"optimizer": "lbfgs"}, "hyperparameters.optimizer", ["adam", "adamw", "sgd"]),
    ("mlp", {"dropout": 1.0}, "hyperparameters.dropout", ["<= 0.9"]),
    ("cnn", {"kernel_size": 4}, "hyperparameters.kernel_size", ["1, 3, 5, 7"]),
    ("cnn", {"pooling": "min"}, "hyperparameters.pooling", ["max", "avg"]),
    ("cnn", {"channels": []}, "hyperparameters.channels", ["1 to 6"]),
    ("rnn_lm", {"cell": "transformer"}, "hyperparameters.cell", ["rnn", "gru", "lstm"]),
    ("rnn_lm", {"tokenizer": "bpe"}, "hyperparameters.tokenizer", ["char", "word"]),
    ("rnn_lm", {"tie_weights": 1}, "hyperparameters.tie_weights", ["true or false"]),
    ("rnn_lm", {"num_layers": 9}, "hyperparameters.num_layers", ["<= 4"]),
    ("mlp", {"channels": [8]}, "hyperparameters.channels", ["unknown", "hidden_sizes"]),
    ("nope", {}, "model", ["mlp", "cnn", "rnn_lm"]),
])
def test_bad_values_name_the_field_and_what_is_allowed(model, hp, field, words):
    with pytest.raises(SpecError) as err:
        validate_hyperparameters(model, hp)
    assert err.value.field == field
    for word in words:
        assert word in err.value.message, (word, err.value.message)
    assert isinstance(err.value, ValueError)


def test_dataset_kind_check():
    assert dataset_kind_for("cnn") == "images" and dataset_kind_for("rnn_lm") == "text"
    check_dataset_kind("mlp", "digits", "images")
    with pytest.raises(SpecError) as err:
        check_dataset_kind("rnn_lm", "digits", "images")
    assert err.value.field == "dataset" and "text" in err.value.message


def test_registry_and_dataset_listing_import_without_torch():
    code = ("import sys; import models.registry, models.data as d; "
            "d.builtin_datasets(None); d.validate_text_upload(b'x' * 300); "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
