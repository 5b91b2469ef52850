"""The family table: one entry per model family (`FAMILIES`), holding everything the service
knows about it (its hyperparameters with type, default and allowed range; the data it trains
on; the metrics it reports and its headline one; how hyperparameters become its config; how
big it is), and the validation that turns a user's partial hyperparameters into a complete,
checked dict.

Adding a family: a file with its config dataclass and nn.Module (as models/mlp.py), and a
section plus one table entry here.

Imports no torch (the API uses it on every request). Defaults are sized so each model's
default job finishes in well under a minute on 2 CPU cores and still learns (see
tests/unit/test_train.py). Upper bounds keep a single job from being absurd in memory or time.
The size estimates follow the rules models/limits.py describes.
"""

from __future__ import annotations

from typing import Any

from core.metrics import metric_goal
from models.family import FLOAT, INDEX, DataShape, Family, Param, Sizes, SpecError, plain

# What models/acceleration.py can do for a job (see there).
PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("off", "on", "cudagraphs")

# An LM batch is batch_size * seq_len tokens; cap it so the logits tensor stays sane.
MAX_TOKENS_PER_BATCH = 65_536


def _common(*, epochs, batch_size, lr, optimizer="adam", lr_schedule="constant", grad_clip=0.0,
            steps_per_epoch=0, batch_max=4096) -> tuple[Param, ...]:
    return (
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
        Param("precision", "str", "auto", choices=PRECISIONS,
              description="auto: bf16 autocast on a CUDA GPU that supports it, else fp32; "
                          "bf16 asks for it on CUDA; fp32 never. The CPU trains in fp32."),
        Param("compile", "str", "off", choices=COMPILE_MODES,
              description="off: eager; on: torch.compile the training step; cudagraphs: also "
                          "capture it in CUDA graphs (small models on a GPU). Compile time is "
                          "reported as compile_seconds."),
    )


_ACTIVATION = ("relu", "sigmoid", "tanh")
# What models/train.py reports per step and per epoch for each kind of task.
_CLASSIFIER_METRICS = ("train_loss", "val_loss", "val_accuracy", "lr", "samples_per_s")
_LM_METRICS = ("train_loss", "val_loss", "val_perplexity", "lr", "tokens_per_s")


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _dropout_factor(p: float) -> int:
    # Training-mode dropout stores its output and a mask of the same size (fp32 on CPU).
    return 2 if p > 0 else 0


# ---------------------------------------------------------------------------------------------
# mlp (models/mlp.py)

_MLP_PARAMS = _common(epochs=40, batch_size=32, lr=2e-3, lr_schedule="cosine") + (
    Param("hidden_sizes", "int_list", (256, 128), 1, 2048, min_items=2, max_items=8,
          description="Width of each hidden layer (2 to 8 layers)."),
    Param("activation", "str", "relu", choices=_ACTIVATION,
          description="Hidden activation; sigmoid shows vanishing gradients."),
    Param("dropout", "float", 0.1, 0.0, 0.9,
          description="Dropout after each hidden layer."),
)


def _mlp_config(hp: dict, data: Any) -> dict:
    return dict(in_features=data.channels * data.height * data.width,
                num_classes=data.num_classes, hidden_sizes=list(hp["hidden_sizes"]),
                activation=hp["activation"], dropout=hp["dropout"])


def _mlp_size(hp: dict, s: DataShape) -> Sizes:
    b, in_features = hp["batch_size"], s.channels * s.height * s.width
    widths = [in_features, *hp["hidden_sizes"]]
    params = sum(_linear(a, w) for a, w in zip(widths[:-1], widths[1:]))
    params += _linear(widths[-1], s.num_classes)
    # per hidden layer: pre-activation, activation, dropout output + mask
    per_example = in_features + sum(
        (2 + _dropout_factor(hp["dropout"])) * w for w in hp["hidden_sizes"])
    per_example += 2 * s.num_classes  # logits and their log-softmax
    largest = max(in_features, *hp["hidden_sizes"], s.num_classes)
    item = per_example * FLOAT + INDEX  # + the int64 target
    return Sizes(params, b * item, b * largest * FLOAT, item)


# ---------------------------------------------------------------------------------------------
# cnn (models/cnn.py)

HEAD_GRID = 4  # models.cnn.HEAD_GRID (not imported: models/cnn.py imports torch)

_CNN_PARAMS = _common(epochs=30, batch_size=32, lr=2e-3, lr_schedule="cosine") + (
    Param("channels", "int_list", (32, 64), 1, 512, min_items=1, max_items=6,
          description="Output channels of each conv block (1 to 6 blocks)."),
    Param("kernel_size", "int", 3, choices=(1, 3, 5, 7),
          description="Square, odd kernel with 'same' padding."),
    Param("pooling", "str", "max", choices=("max", "avg"),
          description="2x2 pooling after each block (while the map is >= 2 pixels)."),
    Param("activation", "str", "relu", choices=_ACTIVATION, description="Activation."),
    Param("dropout", "float", 0.1, 0.0, 0.9, description="Dropout before the head."),
)


def _cnn_config(hp: dict, data: Any) -> dict:
    return dict(in_channels=data.channels, height=data.height, width=data.width,
                num_classes=data.num_classes, channels=list(hp["channels"]),
                kernel_size=hp["kernel_size"], activation=hp["activation"],
                pooling=hp["pooling"], dropout=hp["dropout"])


def _cnn_size(hp: dict, s: DataShape) -> Sizes:
    b, k, is_max = hp["batch_size"], hp["kernel_size"], hp["pooling"] == "max"
    h, w, c_in = s.height, s.width, s.channels
    params = 0
    floats, indices = c_in * h * w, 0  # per example; the input batch
    largest = floats
    for c_out in hp["channels"]:
        params += c_in * c_out * k * k + c_out
        floats += 2 * c_out * h * w  # conv output and activation ('same' padding)
        largest = max(largest, c_out * h * w)
        if min(h, w) >= 2:  # the same rule as models.cnn: never pool below 1x1
            h, w = h // 2, w // 2
            floats += c_out * h * w
            indices += c_out * h * w if is_max else 0
        c_in = c_out
    gh, gw = min(h, HEAD_GRID), min(w, HEAD_GRID)
    features = c_in * gh * gw
    floats += features * (1 + _dropout_factor(hp["dropout"]))  # adaptive pool, dropout
    indices += features if is_max else 0
    params += _linear(features, s.num_classes)
    floats += 2 * s.num_classes  # logits and their log-softmax
    largest = max(largest, features, s.num_classes)
    item = floats * FLOAT + (indices + 1) * INDEX  # + the int64 target
    return Sizes(params, b * item, b * largest * FLOAT, item)


# ---------------------------------------------------------------------------------------------
# rnn_lm (models/rnn_lm.py)

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
# What one recurrent layer keeps for backward, in fp32 values per (batch element, time step),
# as (a, b): a * hidden + b * max(layer input, hidden). Measured on CPU (torch 2.13): Elman keeps
# ~1 * hidden + input (per-step autograd graph), GRU ~7 * hidden + input, LSTM's oneDNN
# workspace ~15 * hidden + 6 * input with hidden padded to at least 16. cuDNN's reserve space
# (gates and states of every step) fits within the same figures. Counted over T + 1 steps:
# the initial state is stored with the others.
RNN_WORKSPACE = {"rnn": (3, 1), "gru": (9, 1), "lstm": (16, 8)}
RNN_MIN_HIDDEN = 16  # oneDNN pads narrow LSTM layers
# Without autograd (validation) a layer needs far less: its gates' input projections for the
# whole sequence and ~3 more hidden-sized values per token (fp32 values per token: GATES + 3).
RNN_EVAL_PER_LAYER = 3
# oneDNN page-aligns each of the ~7 parts of an LSTM layer's workspace (28 KiB at 1 unit).
LSTM_LAYER_OVERHEAD = 32 * 1024

_RNN_LM_PARAMS = _common(epochs=4, batch_size=32, lr=3e-3, lr_schedule="cosine", grad_clip=1.0,
                         steps_per_epoch=150, batch_max=1024) + (
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
)


def _rnn_lm_check(hp: dict) -> None:
    if hp["batch_size"] * hp["seq_len"] > MAX_TOKENS_PER_BATCH:
        raise SpecError("hyperparameters.batch_size",
                        f"batch_size * seq_len must be <= {MAX_TOKENS_PER_BATCH} tokens; "
                        f"got {hp['batch_size']} * {hp['seq_len']}")


def _rnn_lm_config(hp: dict, data: Any) -> dict:
    return dict(vocab_size=data.vocab_size, cell=hp["cell"], embedding_dim=hp["embedding_dim"],
                hidden_size=hp["hidden_size"], num_layers=hp["num_layers"],
                dropout=hp["dropout"], tie_weights=hp["tie_weights"])


def _rnn_lm_size(hp: dict, s: DataShape) -> Sizes:
    b, t, v = hp["batch_size"], hp["seq_len"], s.vocab_size
    e, h, layers, cell = hp["embedding_dim"], hp["hidden_size"], hp["num_layers"], hp["cell"]
    drop = _dropout_factor(hp["dropout"])
    gates = GATES[cell]
    params = v * e  # embedding
    for layer in range(layers):
        n_in = e if layer == 0 else h
        params += gates * h * (n_in + h) + 2 * gates * h  # W_ih, W_hh, b_ih, b_hh
    out_dim = h
    projected = hp["tie_weights"] and e != h
    if projected:
        params += _linear(h, e)
        out_dim = e
    # a tied decoder weight is the embedding matrix: only its bias is new
    params += v if hp["tie_weights"] else _linear(out_dim, v)

    tokens = b * t
    floats = tokens * e * (1 + drop)  # embedding output, dropout
    a, b_in = RNN_WORKSPACE[cell]
    padded = max(h, RNN_MIN_HIDDEN) if cell == "lstm" else h
    for layer in range(layers):
        n_in = e if layer == 0 else h
        floats += b * (t + 1) * (a * padded + b_in * max(n_in, padded))
        floats += tokens * h  # the layer's output sequence
        if layer < layers - 1:
            floats += tokens * h * drop  # nn.RNN's dropout between layers
    floats += tokens * h * drop  # dropout before the decoder
    floats += tokens * e if projected else 0
    # no_grad, per evaluated token, what the layers produce before the decoder: the embedding
    # (and a copy of it), per layer the input projections of its gates, the output and state
    # (RNN_EVAL_PER_LAYER), the projection. Measured on CPU: 1.0x-3.5x of the real peak.
    per_token = 2 * e + layers * (GATES[cell] + RNN_EVAL_PER_LAYER) * padded
    per_token += e if projected else 0
    floats += 2 * tokens * v  # logits and their log-softmax: the big one for large vocabularies
    overhead = layers * LSTM_LAYER_OVERHEAD if cell == "lstm" else 0
    activation = floats * FLOAT + 2 * tokens * INDEX + overhead  # + ids and targets
    largest = tokens * max(v, e, GATES[cell] * h) * FLOAT
    # an evaluated token also has its id, target and their index tensors (int64)
    return Sizes(params, activation, largest, per_token * FLOAT + 4 * INDEX)


# ---------------------------------------------------------------------------------------------
# the table

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family(
        name="mlp",
        description="Multi-layer perceptron (fully connected, >= 2 hidden layers) for images.",
        task="classification", data_kind="images", params=_MLP_PARAMS,
        headline_metric="val_accuracy", metrics=_CLASSIFIER_METRICS,
        module="models.mlp", config_class="MLPConfig", model_class="MLP",
        config_fields=_mlp_config, size=_mlp_size,
    ),
    Family(
        name="cnn",
        description="Convolutional network: conv blocks with pooling, then a linear head.",
        task="classification", data_kind="images", params=_CNN_PARAMS,
        headline_metric="val_accuracy", metrics=_CLASSIFIER_METRICS,
        module="models.cnn", config_class="CNNConfig", model_class="CNN",
        config_fields=_cnn_config, size=_cnn_size,
    ),
    Family(
        name="rnn_lm",
        description="Recurrent language model: embedding, RNN/GRU/LSTM layers, "
                    "next-token softmax.",
        task="language_modeling", data_kind="text", params=_RNN_LM_PARAMS,
        headline_metric="val_perplexity", metrics=_LM_METRICS,
        module="models.rnn_lm", config_class="RNNLMConfig", model_class="RNNLM",
        config_fields=_rnn_lm_config, size=_rnn_lm_size, check=_rnn_lm_check,
    ),
)}
MODEL_NAMES = tuple(FAMILIES)


# ---------------------------------------------------------------------------------------------
# reading the table


def family(model: str) -> Family:
    """The table entry of `model`; SpecError("model", ...) naming the known ones."""
    if model not in FAMILIES:
        raise SpecError("model", f"unknown model {model!r}; allowed: {', '.join(MODEL_NAMES)}")
    return FAMILIES[model]


def params(model: str) -> dict[str, Param]:
    """The Param objects of one model, by name."""
    return family(model).param_map()


def defaults(model: str) -> dict:
    return {p.name: plain(p.default) for p in family(model).params}


def catalogue() -> dict[str, dict]:
    """What GET /models answers: per family its hyperparameters and the metrics it reports,
    each with which way is better."""
    return {
        f.name: {
            "description": f.description,
            "task": f.task,
            "datasets_kind": f.data_kind,
            "hyperparameters": {p.name: p.to_dict() for p in f.params},
            "headline_metric": f.headline_metric,
            "metrics": {name: metric_goal(name) for name in f.metrics},
        }
        for f in FAMILIES.values()
    }


def dataset_kind_for(model: str) -> str:
    return family(model).data_kind


def check_dataset_kind(model: str, dataset: str, kind: str) -> None:
    """SpecError("dataset", ...) when a dataset of `kind` cannot train `model`."""
    want = dataset_kind_for(model)
    if kind != want:
        raise SpecError("dataset", f"dataset {dataset!r} holds {kind}; model {model!r} "
                                   f"needs a dataset of kind {want!r}")


def validate_hyperparameters(model: str, hp: dict | None) -> dict:
    """Fill defaults, coerce types, check ranges; SpecError names the field and what is allowed."""
    fam = family(model)
    spec = fam.param_map()
    hp = {} if hp is None else hp
    if not isinstance(hp, dict):
        raise SpecError("hyperparameters", "must be an object of name: value")
    out = {}
    for key, value in hp.items():
        if key not in spec:
            raise SpecError(f"hyperparameters.{key}",
                            f"unknown hyperparameter {key!r} for model {model!r}; "
                            f"allowed: {', '.join(sorted(spec))}")
        out[key] = spec[key].coerce(value)
    for name, p in spec.items():
        out.setdefault(name, plain(p.default))
    if fam.check is not None:
        fam.check(out)
    return {name: out[name] for name in spec}  # catalogue order
