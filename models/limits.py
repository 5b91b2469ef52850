"""How big a job is before it runs: parameter count and training memory from the spec alone.

Imports no torch (the API calls it on every submit). `estimate(model, hp, shape)` takes the
validated hyperparameters (models.registry.validate_hyperparameters) and a `DataShape`, the few
facts about the dataset that size a model; `shape_for_dataset` builds that shape from what is
known before training, `shape_of_data` from loaded data (exact; the worker re-checks with it).

Figures (all fp32, one optimizer step):
  params            exact number of trainable parameters (a tied weight counted once); equals
                    sum(p.numel() for p in model.parameters()) of the built model.
  activation_bytes  what one training batch keeps alive for the backward pass. Deliberately
                    conservative: every intermediate tensor the forward pass produces is counted
                    as kept until backward (autograd keeps fewer: e.g. ReLU keeps its output but
                    not its input), plus the input batch and targets. Dropout counts twice
                    (output and mask), max pooling adds its int64 indices. Recurrent layers
                    count a per-step workspace (models.registry.RNN_WORKSPACE) sized above
                    what the CPU (oneDNN / per-step autograd) keeps, with room for cuDNN's
                    reserve space.
                    Against torch's saved tensors (CPU) it came to 1.0x-3.2x.
  peak_bytes        the working memory of the job at its worst moment, besides the state below;
                    what the activation cap is compared with. The largest of
                    - the training step: activation_bytes plus the largest activation tensor
                      once more, for the gradients in flight during backward. For an LM the
                      (batch * seq_len, vocab) tensors dominate: activation_bytes counts two
                      (logits, log-softmax); the loss (models.rnn_lm.TokenCrossEntropy) keeps
                      two alive, in forward and in backward, and the third is headroom;
                    - the validation pass (no_grad), planned by `eval_plan`: models/train.py
                      evaluates `rows` images or LM windows per pass, and the LM's decoder runs
                      on `chunk_tokens` positions at a time, so no logits tensor bigger than
                      (chunk_tokens, vocab) exists. A pass gets the training step's figure, at
                      least EVAL_MIN_BYTES; an image counts as in training (every
                      intermediate), an LM token as models.registry.RNN_EVAL_PER_LAYER says
                      plus its logits;
                    - sampling text (LM): the prompt's features and a few (1, vocab) tensors;
                    - writing a checkpoint: a serialized copy of weights and optimizer state.
                    Measured on CPU (resident memory, tests/unit/test_lm_memory.py): a word LM
                    of 2,000-50,000 tokens peaked at 0.55x-0.7x of it in training steps and
                    0.5x-0.65x in validation.
  state_bytes       parameters + gradients + optimizer state: 4 bytes each per parameter;
                    Adam/AdamW keep two moments, SGD one momentum buffer (none at momentum 0).

Each family's own figures (params, activation, largest tensor, per evaluated item) come
from its `size` hook in the family table (models/registry.py); this module turns them into the
estimate, the validation plan and the caps, by the family's data kind (images or text).

Not covered by the caps: the dataset itself, allocator fragmentation, CUDA context and kernel
workspaces; the caps are guards against absurd jobs. What a job needs of a GPU's memory
(models.training_memory_bytes, which workers sharing a GPU add up) also counts the dataset,
which fit() moves to the device whole: `dataset_device_bytes`, fp32 images and int64 labels or
token ids (CIFAR-10's 60,000 images are 737 MB, more than a small CNN's whole estimate).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from models.data import builtin_datasets, idx_image_size
from models.family import FLOAT, INDEX, DataShape, Sizes, SpecError
from models.registry import family

# Char-level vocabulary bound used before the text is tokenized: the built-in corpora have
# ~110 distinct characters; an upload may have more (non-Latin scripts), which the worker
# catches with the exact vocabulary before training (`shape_of_data`).
CHAR_VOCAB_BOUND = 256
# Built-in image datasets: (channels, height, width, classes); IDX files are read for their
# real size when present (the reader accepts any image size).
IMAGE_SHAPES = {
    "digits": (1, 8, 8, 10),
    "mnist": (1, 28, 28, 10),
    "fashion_mnist": (1, 28, 28, 10),
    "cifar10": (3, 32, 32, 10),
}
# How many images a built-in dataset loads (training and validation or test together): what
# fit() moves to the device. MNIST's are the standard files' (IDX files of fewer count less).
IMAGE_EXAMPLES = {"digits": 1797, "mnist": 70_000, "fashion_mnist": 70_000, "cifar10": 60_000}
# Validation (models/train.py, planned by eval_plan): at most this many images, or LM tokens,
# per no_grad forward pass, and never more working memory than the training step's figure or
# EVAL_MIN_BYTES, whichever is larger (a tiny model still evaluates in large passes).
EVAL_BATCH_IMAGES = 2048
EVAL_BATCH_TOKENS = 32_768
EVAL_MIN_BYTES = 32 * 2**20
# Bytes per element of an evaluated chunk of LM logits: the logits, their fp32 copy (under bf16
# autocast) and their log-softmax (models.rnn_lm.TokenCrossEntropy).
EVAL_LOGIT_BYTES = 3 * FLOAT
# The environment variables of the Settings fields the caps come from (named in messages).
ENV_MAX_PARAMETERS = "TRAINYARD_MAX_MODEL_PARAMETERS"
ENV_MAX_ACTIVATION_BYTES = "TRAINYARD_MAX_ACTIVATION_BYTES"


@dataclass(frozen=True)
class EvalPlan:
    """How models/train.py evaluates: `rows` images, or LM windows of seq_len tokens, per no_grad
    forward pass; the LM decoder (and its cross-entropy) on `chunk_tokens` positions at a time
    (0 for classifiers). `bytes` is the estimated working memory of one pass."""

    rows: int
    chunk_tokens: int
    bytes: int


@dataclass(frozen=True)
class Estimate:
    params: int
    activation_bytes: int  # kept for backward by one training step
    state_bytes: int  # weights, gradients, optimizer state
    peak_bytes: int  # working memory at the worst moment (training, evaluation, sampling)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# the dataset's shape


def shape_for_dataset(model: str, hp: dict, dataset: str,
                      data_dir: Path | None = None,
                      image_shape: tuple[int, int, int, int] | None = None) -> DataShape:
    """What is known about `dataset` before it is loaded: sizes of the built-in image sets
    (an uploaded one's `image_shape`: channels, height, width, classes, from its summary),
    and for text an upper bound of the vocabulary (`vocab_is_bound`)."""
    if family(model).data_kind == "text":
        if hp["tokenizer"] == "word":
            # build_vocab keeps at most max_vocab tokens, <unk> included: a true bound
            return DataShape(vocab_size=hp["max_vocab"], vocab_is_bound=True)
        return DataShape(vocab_size=CHAR_VOCAB_BOUND, vocab_is_bound=True)
    if image_shape is not None:
        channels, height, width, classes = image_shape
        return DataShape(channels=channels, height=height, width=width, num_classes=classes)
    # An unknown name (an upload whose shape was not given) gets the largest built-in geometry.
    channels, height, width, classes = IMAGE_SHAPES.get(dataset, IMAGE_SHAPES["cifar10"])
    if dataset in ("mnist", "fashion_mnist") and data_dir is not None:
        found = idx_image_size(Path(data_dir) / dataset)
        if found is not None:
            height, width = found
    return DataShape(channels=channels, height=height, width=width, num_classes=classes)


def dataset_device_bytes(shape: DataShape, items: int) -> int:
    """Bytes of a dataset of `items` images (fp32 pixels, an int64 label each) or tokens (int64
    ids) of `shape` once fit() has moved it to the device."""
    if shape.vocab_size:
        return items * INDEX
    return items * (shape.channels * shape.height * shape.width * FLOAT + INDEX)


def loaded_dataset_bytes(data) -> int:
    """Bytes of loaded data (models.data.ImageData or TextData): every tensor of it, all of
    which fit() moves to the device."""
    return sum(value.nbytes for value in vars(data).values() if hasattr(value, "nbytes"))


def dataset_items(model: str, dataset: str, summary: dict[str, Any] | None = None) -> int:
    """How many images, or at most how many tokens, `dataset` puts on the device: an upload's
    from its `summary` (images: examples; text: characters, which no tokenizer exceeds), a
    built-in one's from IMAGE_EXAMPLES or its text's bytes; 0 when not known."""
    text = family(model).data_kind == "text"
    if summary:
        value = summary.get("characters" if text else "examples")
        return value if isinstance(value, int) and value > 0 else 0
    return _builtin_text_bytes().get(dataset, 0) if text else IMAGE_EXAMPLES.get(dataset, 0)


@functools.cache
def _builtin_text_bytes() -> dict[str, int]:
    """The built-in texts' sizes in bytes (at least their characters), read once a process."""
    return {d["name"]: d["size_bytes"] for d in builtin_datasets() if d["kind"] == "text"}


def shape_of_data(data) -> DataShape:
    """The exact shape of loaded data (models.data.ImageData or TextData)."""
    if hasattr(data, "vocab"):
        return DataShape(vocab_size=len(data.vocab))
    return DataShape(channels=data.channels, height=data.height, width=data.width,
                     num_classes=data.num_classes)


# ---------------------------------------------------------------------------------------------
# the estimate


def _optimizer_slots(hp: dict) -> int:
    if hp["optimizer"] in ("adam", "adamw"):
        return 2  # exp_avg, exp_avg_sq
    return 1 if hp["momentum"] > 0 else 0


def _sizes(model: str, hp: dict, shape: DataShape) -> Sizes:
    return family(model).size(hp, shape)


def _train_peak(sizes: Sizes) -> int:
    # backward holds, besides what forward kept, the gradients of the op it is at: the largest
    # tensor once more (activation counts logits and log-softmax, autograd keeps one of them)
    return sizes.activation + sizes.largest


def _plan(model: str, hp: dict, shape: DataShape, sizes: Sizes) -> EvalPlan:
    budget = max(_train_peak(sizes), EVAL_MIN_BYTES)
    if family(model).data_kind == "images":
        rows = max(1, min(EVAL_BATCH_IMAGES, budget // sizes.eval_item))
        return EvalPlan(rows=rows, chunk_tokens=0, bytes=rows * sizes.eval_item)
    # LM: half the budget for the windows' features, the rest for a chunk of logits
    t = hp["seq_len"]
    window = t * sizes.eval_item
    rows = max(1, min(EVAL_BATCH_TOKENS // t, budget // 2 // window))
    per_logit_token = shape.vocab_size * EVAL_LOGIT_BYTES
    chunk = max(1, min(rows * t, (budget - rows * window) // per_logit_token))
    return EvalPlan(rows=rows, chunk_tokens=chunk, bytes=rows * window + chunk * per_logit_token)


def eval_plan(model: str, hp: dict, shape: DataShape) -> EvalPlan:
    """How the validation pass of `model` (validated `hp`, data of `shape`) is cut up: the one
    source for models/train.py and for the estimate's peak_bytes."""
    return _plan(model, hp, shape, _sizes(model, hp, shape))


def _sample_bytes(hp: dict, shape: DataShape, sizes: Sizes) -> int:
    # the prompt's features (SAMPLE_PROMPT_TOKENS of models/train.py, 16), then per token its
    # logits, probabilities and multinomial's workspace: a few (1, vocab) tensors
    return 16 * sizes.eval_item + 4 * shape.vocab_size * FLOAT


def estimate(model: str, hp: dict, shape: DataShape) -> Estimate:
    """Size of `model` with validated hyperparameters `hp` on data of `shape`."""
    sizes = _sizes(model, hp, shape)
    params = sizes.params
    # weights + gradients + optimizer state, fp32
    state_bytes = params * FLOAT * (2 + _optimizer_slots(hp))
    peak = max(
        _train_peak(sizes),
        _plan(model, hp, shape, sizes).bytes,
        _sample_bytes(hp, shape, sizes) if family(model).data_kind == "text" else 0,
        # a checkpoint serializes weights and optimizer state (and the buffer may be copied
        # once while it grows)
        2 * params * FLOAT * (1 + _optimizer_slots(hp)),
    )
    return Estimate(params=params, activation_bytes=sizes.activation, state_bytes=state_bytes,
                    peak_bytes=peak)


# ---------------------------------------------------------------------------------------------
# the caps


def _bytes_text(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_limits(est: Estimate, max_parameters: int, max_activation_bytes: int) -> None:
    """SpecError("hyperparameters", ...) naming the estimate and the cap that it exceeds."""
    if est.params > max_parameters:
        raise SpecError(
            "hyperparameters",
            f"this model has an estimated {est.params:,} parameters; the limit is "
            f"{max_parameters:,} ({ENV_MAX_PARAMETERS}). Use smaller layers "
            "(or a smaller vocabulary)",
        )
    if est.peak_bytes > max_activation_bytes:
        raise SpecError(
            "hyperparameters",
            f"this model needs an estimated {_bytes_text(est.peak_bytes)} "
            f"({est.peak_bytes:,} bytes) of working memory at its peak (training step, "
            f"validation or checkpoint; one "
            f"training step keeps {est.activation_bytes:,} bytes of activations for backward), "
            f"besides {_bytes_text(est.state_bytes)} of weights, gradients and optimizer state; "
            f"the limit is {_bytes_text(max_activation_bytes)} ({max_activation_bytes:,} bytes, "
            f"{ENV_MAX_ACTIVATION_BYTES}). Use a smaller batch_size (or seq_len, or layers)",
        )
