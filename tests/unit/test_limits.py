"""models/limits.py against the real torch models: the parameter count is exact, the activation
estimate covers what autograd really keeps for backward without being absurd, and the caps
refuse what they should with a message that names the estimate and the cap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from models import check_job, training_memory_bytes
from models.data import load_image_dataset, load_text_dataset, pydocs_documents
from models.limits import (
    CHAR_VOCAB_BOUND,
    IMAGE_EXAMPLES,
    DataShape,
    check_limits,
    dataset_device_bytes,
    dataset_items,
    estimate,
    shape_for_dataset,
    shape_of_data,
)
from models.registry import SpecError, validate_hyperparameters
from models.train import build_model_from_config, build_optimizer, model_config
from core.settings import Settings

DIGITS = DataShape(channels=1, height=8, width=8, num_classes=10)
RGB_ODD = DataShape(channels=3, height=9, width=7, num_classes=4)

# (model, hyperparameters, data shape): every family, every cell, tied and untied weights (with
# and without the projection), grey and RGB images of odd sizes, maps pooled down to 1x1.
GRID = [
    ("mlp", {}, DIGITS),
    ("mlp", {"hidden_sizes": [3, 5, 7], "activation": "sigmoid", "dropout": 0.0}, RGB_ODD),
    ("mlp", {"hidden_sizes": [1, 1], "batch_size": 1, "dropout": 0.5},
     DataShape(channels=1, height=28, width=28, num_classes=10)),
    ("mlp", {"hidden_sizes": [64, 32, 16, 8], "activation": "tanh", "batch_size": 7},
     DataShape(channels=3, height=32, width=32, num_classes=10)),
    ("cnn", {}, DIGITS),
    ("cnn", {"channels": [4, 6], "kernel_size": 5, "pooling": "avg"}, RGB_ODD),
    ("cnn", {"channels": [3], "kernel_size": 1, "dropout": 0.0, "batch_size": 5},
     DataShape(channels=1, height=5, width=3, num_classes=2)),
    ("cnn", {"channels": [2, 3, 4, 5, 6], "kernel_size": 7, "activation": "tanh"},
     DataShape(channels=3, height=11, width=13, num_classes=3)),
    ("cnn", {"channels": [8, 8, 8], "pooling": "max", "batch_size": 3},
     DataShape(channels=1, height=1, width=1, num_classes=10)),
    ("cnn", {"channels": [16, 32], "batch_size": 8},
     DataShape(channels=3, height=32, width=32, num_classes=10)),
    ("rnn_lm", {}, DataShape(vocab_size=100)),
    ("rnn_lm", {"cell": "rnn", "num_layers": 2, "dropout": 0.2, "seq_len": 9},
     DataShape(vocab_size=31)),
    ("rnn_lm", {"cell": "gru", "embedding_dim": 32, "hidden_size": 48, "tie_weights": True,
                "num_layers": 3, "seq_len": 5, "batch_size": 4}, DataShape(vocab_size=57)),
    ("rnn_lm", {"cell": "lstm", "embedding_dim": 40, "hidden_size": 40, "tie_weights": True,
                "seq_len": 16, "batch_size": 8}, DataShape(vocab_size=90)),
    ("rnn_lm", {"cell": "lstm", "embedding_dim": 16, "hidden_size": 96, "tie_weights": True,
                "num_layers": 2, "dropout": 0.1, "seq_len": 12, "batch_size": 6},
     DataShape(vocab_size=64)),
    ("rnn_lm", {"cell": "lstm", "embedding_dim": 8, "hidden_size": 1, "seq_len": 2,
                "batch_size": 1}, DataShape(vocab_size=2)),
    ("rnn_lm", {"cell": "rnn", "embedding_dim": 1, "hidden_size": 1, "batch_size": 1,
                "seq_len": 2}, DataShape(vocab_size=2)),
]


def _ids(case):
    model, hp, shape = case
    return f"{model}-{'-'.join(f'{k}={v}' for k, v in hp.items()) or 'defaults'}"


def build(model: str, hp: dict, shape: DataShape) -> torch.nn.Module:
    # model_config reads only these fields of the data
    data = SimpleNamespace(channels=shape.channels, height=shape.height, width=shape.width,
                           num_classes=shape.num_classes, vocab_size=shape.vocab_size)
    torch.manual_seed(0)
    return build_model_from_config(model, model_config(model, hp, data)).train()


def batch(model: str, hp: dict, shape: DataShape):
    b = hp["batch_size"]
    if model == "rnn_lm":
        size = (b, hp["seq_len"])
        return torch.randint(shape.vocab_size, size), torch.randint(shape.vocab_size, size)
    x = torch.rand(b, shape.channels, shape.height, shape.width)
    return x, torch.randint(shape.num_classes, (b,))


def saved_bytes(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd keeps for backward in one training step: each
    storage once, the parameters (which exist anyway) left out."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, loss = module(x, y)
    loss.backward()
    return sum(storages.values())


@pytest.mark.parametrize("case", GRID, ids=[_ids(c) for c in GRID])
def test_parameter_count_is_exact(case):
    model, hp, shape = case
    hp = validate_hyperparameters(model, hp)
    net = build(model, hp, shape)
    # parameters() yields a tied weight once, as the estimate counts it
    assert estimate(model, hp, shape).params == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("case", GRID, ids=[_ids(c) for c in GRID])
def test_activation_estimate_covers_saved_tensors_within_4x(case):
    model, hp, shape = case
    hp = validate_hyperparameters(model, hp)
    net = build(model, hp, shape)
    measured = saved_bytes(net, *batch(model, hp, shape))
    est = estimate(model, hp, shape).activation_bytes
    assert measured <= est < 4 * measured, (measured, est, est / measured)


@pytest.mark.parametrize("optimizer, momentum, per_param", [
    ("adam", 0.9, 16), ("adamw", 0.9, 16), ("sgd", 0.9, 12), ("sgd", 0.0, 8)])
def test_state_bytes_are_weights_gradients_and_optimizer_state(optimizer, momentum, per_param):
    hp = validate_hyperparameters("mlp", {"optimizer": optimizer, "momentum": momentum,
                                          "hidden_sizes": [12, 10]})
    net = build("mlp", hp, DIGITS)
    opt = build_optimizer(net, hp)
    _, loss = net(*batch("mlp", hp, DIGITS))
    loss.backward()
    opt.step()
    tensors = [*net.parameters(), *(p.grad for p in net.parameters())]
    # Adam's per-parameter `step` counters are scalars: not worth counting
    tensors += [t for s in opt.state.values() for t in s.values()
                if isinstance(t, torch.Tensor) and t.dim() > 0]
    est = estimate("mlp", hp, DIGITS)
    assert est.state_bytes == per_param * est.params
    assert est.state_bytes == sum(t.numel() * t.element_size() for t in tensors)
    assert est.to_dict() == {"params": est.params, "activation_bytes": est.activation_bytes,
                             "state_bytes": est.state_bytes, "peak_bytes": est.peak_bytes}


def test_shape_of_loaded_data_matches_what_is_known_before():
    images = SimpleNamespace(channels=3, height=32, width=32, num_classes=10)
    assert shape_of_data(images) == shape_for_dataset(
        "cnn", validate_hyperparameters("cnn", {}), "cifar10")
    text = SimpleNamespace(vocab=["<unk>", "a", "b"])
    assert shape_of_data(text).vocab_size == 3


def _device_bytes(data) -> int:
    """What fit() moves to the device: every tensor of the loaded dataset."""
    return sum(t.nbytes for t in vars(data).values() if isinstance(t, torch.Tensor))


def test_the_dataset_on_the_device_is_counted_as_loaded():
    digits = load_image_dataset("digits", seed=0)
    assert digits.x_train.shape[0] + digits.x_val.shape[0] == IMAGE_EXAMPLES["digits"]
    counted = dataset_device_bytes(shape_of_data(digits), dataset_items("cnn", "digits"))
    assert counted == _device_bytes(digits) == 1797 * (64 * 4 + 8)
    # a text: its characters (here its UTF-8 bytes) bound the tokens of either tokenizer
    for tokenizer in ("char", "word"):
        text = load_text_dataset("pydocs", tokenizer=tokenizer, seed=0)
        bound = dataset_device_bytes(shape_of_data(text), dataset_items("rnn_lm", "pydocs"))
        assert _device_bytes(text) <= bound
    assert _device_bytes(load_text_dataset("pydocs", tokenizer="char", seed=0)) > bound / 2
    # an upload's summary says how many images or characters it holds
    assert dataset_items("cnn", "mine", {"examples": 500, "channels": 3}) == 500
    assert dataset_items("rnn_lm", "novel", {"characters": 12_345}) == 12_345
    assert dataset_items("cnn", "mine", {"format": "npz"}) == 0  # not said: nothing counted


def test_a_jobs_gpu_memory_counts_its_dataset():
    hp = validate_hyperparameters("cnn", {})
    shape = shape_for_dataset("cnn", hp, "cifar10")
    sized = estimate("cnn", hp, shape)
    cifar = 60_000 * (3 * 32 * 32 * 4 + 8)  # 737 MB: more than the small CNN itself
    assert training_memory_bytes("cnn", hp, "cifar10", None) == (
        sized.state_bytes + sized.peak_bytes + cifar)
    assert cifar > sized.state_bytes + sized.peak_bytes


def test_vocabulary_bounds_before_tokenizing():
    word = validate_hyperparameters("rnn_lm", {"tokenizer": "word", "max_vocab": 777})
    assert shape_for_dataset("rnn_lm", word, "pydocs") == DataShape(vocab_size=777,
                                                                     vocab_is_bound=True)
    char = validate_hyperparameters("rnn_lm", {"tokenizer": "char"})
    assert shape_for_dataset("rnn_lm", char, "pydocs").vocab_size == CHAR_VOCAB_BOUND
    # the bound holds for the built-in corpus that every machine has (+1: <unk>)
    assert len(set("".join(pydocs_documents()))) + 1 <= CHAR_VOCAB_BOUND


def test_mnist_size_comes_from_its_idx_header(tmp_path):
    hp = validate_hyperparameters("mlp", {})
    assert shape_for_dataset("mlp", hp, "mnist", tmp_path) == DataShape(1, 28, 28, 10)
    folder = tmp_path / "mnist"
    folder.mkdir()
    # magic (ubyte, 3 dims), then 5 images of 12 x 10; the pixels do not matter here
    header = bytes([0, 0, 0x08, 3]) + (5).to_bytes(4, "big") + (12).to_bytes(4, "big") \
        + (10).to_bytes(4, "big")
    (folder / "train-images-idx3-ubyte").write_bytes(header + bytes(5 * 12 * 10))
    assert shape_for_dataset("mlp", hp, "mnist", tmp_path) == DataShape(1, 12, 10, 10)


def test_default_jobs_fit_the_default_caps_and_the_largest_lm_does_not():
    settings = Settings()
    for model, dataset in (("mlp", "cifar10"), ("cnn", "cifar10"), ("rnn_lm", "pydocs")):
        hp = validate_hyperparameters(model, {})
        est = estimate(model, hp, shape_for_dataset(model, hp, dataset))
        check_limits(est, settings.max_model_parameters, settings.max_activation_bytes)

    hp = validate_hyperparameters("rnn_lm", {
        "tokenizer": "word", "max_vocab": 50_000, "embedding_dim": 1024, "hidden_size": 1024,
        "num_layers": 4, "cell": "lstm"})
    est = estimate("rnn_lm", hp, shape_for_dataset("rnn_lm", hp, "pydocs"))
    # embedding 50000*1024, decoder 1024*50000 + 50000, LSTM 4 gates of 1024 on 4 layers
    lstm = 4 * 1024 * (1024 + 1024) * 4 + 2 * 4 * 1024 * 4
    assert est.params == 2 * 50_000 * 1024 + 50_000 + lstm
    with pytest.raises(SpecError) as err:
        check_limits(est, settings.max_model_parameters, settings.max_activation_bytes)
    assert err.value.field == "hyperparameters"
    assert f"estimated {est.params:,} parameters; the limit is 100,000,000 " \
           "(TRAINYARD_MAX_MODEL_PARAMETERS)" in err.value.message


def test_activation_cap_message_names_estimate_and_cap():
    hp = validate_hyperparameters("cnn", {"batch_size": 4096, "channels": [512]})
    est = estimate("cnn", hp, DataShape(3, 32, 32, 10))
    assert est.activation_bytes > 8 * 2**30  # two 4096 x 512 x 32 x 32 maps alone are 16 GiB
    with pytest.raises(SpecError) as err:
        check_limits(est, 100_000_000, 8 * 2**30)
    message = err.value.message
    assert f"{est.activation_bytes:,} bytes" in message
    assert "8.00 GiB (8,589,934,592 bytes, TRAINYARD_MAX_ACTIVATION_BYTES)" in message


def test_limits_module_imports_no_torch():
    code = "import sys, models.limits; sys.exit('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


# ---------------------------------------------------------------------------------------------
# check_job: the whole check before a job is queued

KINDS = {"digits": "images", "cifar10": "images", "pydocs": "text"}


def _check(model, hp, dataset, asked=None, **caps):
    def kind_of(name):
        if asked is not None:
            asked.append(name)
        return KINDS.get(name)

    limits = {"max_parameters": 100_000_000, "max_activation_bytes": 8 * 2**30, **caps}
    return check_job(model, hp, dataset, kind_of, data_dir=None, **limits)


def test_check_job_fills_the_hyperparameters_and_passes_a_default_job():
    assert _check("mlp", {"epochs": 2.0}, "digits") == validate_hyperparameters("mlp",
                                                                                {"epochs": 2})
    assert _check("rnn_lm", None, "pydocs") == validate_hyperparameters("rnn_lm", {})


@pytest.mark.parametrize("model,hp,dataset,caps,field,words", [
    ("nope", {}, "digits", {}, "model", ["mlp", "cnn", "rnn_lm"]),
    ("mlp", {"lr": 0}, "no-such-data", {}, "hyperparameters.lr", ["> 0"]),
    ("mlp", {}, "no-such-data", {}, "dataset", ["no-such-data", "GET /datasets"]),
    ("rnn_lm", {}, "digits", {}, "dataset", ["text"]),
    ("mlp", {"hidden_sizes": [16, 16]}, "digits", {"max_parameters": 1000}, "hyperparameters",
     ["1,482 parameters", "TRAINYARD_MAX_MODEL_PARAMETERS"]),
    ("cnn", {"batch_size": 4096, "channels": [512]}, "cifar10", {}, "hyperparameters",
     ["TRAINYARD_MAX_ACTIVATION_BYTES"]),
])
def test_check_job_names_the_first_field_at_fault(model, hp, dataset, caps, field, words):
    asked = []
    with pytest.raises(SpecError) as err:
        _check(model, hp, dataset, asked, **caps)
    assert err.value.field == field
    for word in words:
        assert word in err.value.message, (word, err.value.message)
    # the dataset is looked up only for valid hyperparameters
    assert asked == ([] if field in ("model", "hyperparameters.lr") else [dataset])

