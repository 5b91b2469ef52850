"""A trained network as a file that runs without Trainyard: ONNX (onnxruntime, any language)
or TorchScript (torch.jit.load, no Trainyard code needed).

What the file computes, for each family:
- mlp, cnn: "images" (B, C, H, W) float32 in [0, 1] -> "probabilities" (B, num_classes), the
  softmax that POST /jobs/{id}/predict answers. B is free; C, H, W are the checkpoint's.
- rnn_lm: "tokens" (B, T) int64 ids -> "logits" (B, T, V), the network's forward from a zero
  state. B and T are free. The vocabulary (id -> token) and tokenizer are in the metadata.

Metadata, the same string keys in both formats (ONNX: the model's metadata_props; TorchScript:
`_extra_files`): trainyard.model, .dataset, .job, .checkpoint, .epoch, .step, .input,
.input_shape, .input_dtype, .output, .output_shape, and for a language model .vocab (a JSON
list) and .tokenizer. Shapes are JSON lists; "batch" and "time" name the free axes.

Every file is checked before it is returned: it runs on inputs of another batch size (and
sequence length) than the one it was built from, and must agree with the network within
TOLERANCE. The network passed in is never changed (the API shares it between requests): the
export works on a deep copy.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from models.inference import InputError, image_shape

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}  # format -> file suffix
TOLERANCE = 1e-4  # absolute and relative, between the file's outputs and the network's
# Past this many bytes of weights torch.onnx saves them beside the .onnx file (a protobuf
# holds at most 2 GB), and one download could not carry them.
ONNX_MAX_WEIGHT_BYTES = int(1.5 * 2**30)

# torch.export and the tracer keep process-wide state (the ONNX export flag, warning filters),
# and an export uses every core anyway: one at a time per process.
_LOCK = threading.Lock()

# torch gate blocks in the order ONNX's recurrent operators expect them
# (torch GRU: r, z, n; ONNX: z, r, h. torch LSTM: i, f, g, o; ONNX: i, o, f, c).
_GATE_ORDER = {"rnn": (0,), "gru": (1, 0, 2), "lstm": (0, 3, 1, 2)}
_ONNX_CELL = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}


class ExportError(RuntimeError):
    """The exported file does not compute what the network does (a defect, not bad input)."""


@dataclass(frozen=True)
class Signature:
    """The file's one input and one output: names, shapes (ints, or names of free axes)."""

    input: str
    input_shape: list
    input_dtype: torch.dtype
    output: str
    output_shape: list


def signature(ckpt: dict) -> Signature:
    cfg = ckpt["model_config"]
    if ckpt["model"] == "rnn_lm":
        return Signature("tokens", ["batch", "time"], torch.int64, "logits",
                         ["batch", "time", cfg["vocab_size"]])
    return Signature("images", ["batch", *image_shape(ckpt)], torch.float32, "probabilities",
                     ["batch", cfg["num_classes"]])


def metadata(ckpt: dict, job_id: int, checkpoint_id: int) -> dict[str, str]:
    """What a user needs to feed the file and read its output, as strings."""
    sig = signature(ckpt)
    meta = {
        "trainyard.model": ckpt["model"],
        "trainyard.dataset": str(ckpt.get("dataset", "")),
        "trainyard.job": str(job_id),
        "trainyard.checkpoint": str(checkpoint_id),
        "trainyard.epoch": str(ckpt.get("epoch", "")),
        "trainyard.step": str(ckpt.get("step", "")),
        "trainyard.input": sig.input,
        "trainyard.input_shape": json.dumps(sig.input_shape),
        "trainyard.input_dtype": str(sig.input_dtype).removeprefix("torch."),
        "trainyard.output": sig.output,
        "trainyard.output_shape": json.dumps(sig.output_shape),
    }
    if ckpt["model"] == "rnn_lm":
        meta["trainyard.vocab"] = json.dumps(list(ckpt["vocab"]), ensure_ascii=False)
        meta["trainyard.tokenizer"] = ckpt["tokenizer"]
    return meta


def export_model(model: nn.Module, ckpt: dict, fmt: str, *, job_id: int,
                 checkpoint_id: int) -> bytes:
    """The file's bytes: `model` (as model_from_checkpoint built it from `ckpt`, the
    checkpoint's description) in format `fmt` ("onnx" or "torchscript")."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
    size = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    if fmt == "onnx" and size > ONNX_MAX_WEIGHT_BYTES:
        raise InputError("query.format", f"the network's weights ({size / 2**30:.1f} GiB) do "
                         "not fit in one ONNX file; export it as torchscript")
    # A private copy, in eval mode, without gradients: tracing and torch.export must neither
    # see dropout nor touch the shared network (non-strict export swaps parameters for fakes
    # while it traces).
    net = copy.deepcopy(model).eval().requires_grad_(False)
    sig = signature(ckpt)
    meta = metadata(ckpt, job_id, checkpoint_id)
    example, check = _inputs(ckpt, sig)
    with _LOCK, torch.no_grad():
        if fmt == "onnx":
            return _onnx(net, ckpt, sig, meta, example, check)
        return _torchscript(net, ckpt, meta, example, check)


def _inputs(ckpt: dict, sig: Signature) -> tuple[torch.Tensor, torch.Tensor]:
    """An example to build the file from and a check input of other free sizes, so a size
    frozen into the file by mistake shows up as an error."""
    gen = torch.Generator().manual_seed(0)
    if sig.input == "tokens":
        vocab = ckpt["model_config"]["vocab_size"]
        return (torch.randint(0, vocab, (2, 8), generator=gen),
                torch.randint(0, vocab, (3, 5), generator=gen))
    shape = sig.input_shape[1:]
    return torch.rand(2, *shape, generator=gen), torch.rand(3, *shape, generator=gen)


class _Probabilities(nn.Module):
    """A classifier with predict's softmax: images (B, C, H, W) -> probabilities (B, K)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits, _ = self.net(images)  # (B, K)
        return torch.softmax(logits.float(), dim=-1)


class _Logits(nn.Module):
    """A language model's forward without the loss: tokens (B, T) -> logits (B, T, V)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits, _ = self.net(tokens)
        return logits


def _expected(net: nn.Module, ckpt: dict, x: torch.Tensor) -> torch.Tensor:
    wrapper = _Logits(net) if ckpt["model"] == "rnn_lm" else _Probabilities(net)
    return wrapper(x)


def _agree(got: torch.Tensor, want: torch.Tensor, fmt: str) -> None:
    if got.shape != want.shape or not torch.allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE):
        diff = (got - want).abs().max().item() if got.shape == want.shape else "n/a"
        raise ExportError(f"the {fmt} file disagrees with the network (output shape "
                          f"{tuple(got.shape)} vs {tuple(want.shape)}, max difference {diff})")


# ---------------------------------------------------------------------------------------------
# ONNX


class _OnnxLanguageModel(nn.Module):
    """RNNLM's forward written with ONNX's own RNN / GRU / LSTM operators, one per layer.

    Why not export RNNLM itself: torch.export traces nn.RNN / GRU / LSTM through their
    step-by-step decomposition, which fixes the sequence length to the example's (and, for
    the Elman cell, unrolls the loop into the graph). An ONNX recurrent operator takes any
    length. The torch-side op (torch.onnx.ops.symbolic) only stands in for it while tracing;
    this module is never run eagerly."""

    def __init__(self, net: nn.Module):
        super().__init__()
        cfg = net.config
        self.cell, self.hidden, self.layers = cfg.cell, cfg.hidden_size, cfg.num_layers
        self.embedding, self.proj, self.decoder = net.embedding, net.proj, net.decoder
        for layer in range(self.layers):
            w = {name: getattr(net.rnn, f"{name}_l{layer}")
                 for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            # ONNX shapes: W (1, G*H, in), R (1, G*H, H), B (1, 2*G*H) = [input bias, hidden bias]
            self.register_buffer(f"w{layer}", self._gates(w["weight_ih"])[None])
            self.register_buffer(f"r{layer}", self._gates(w["weight_hh"])[None])
            self.register_buffer(f"b{layer}", torch.cat([self._gates(w["bias_ih"]),
                                                         self._gates(w["bias_hh"])])[None])

    def _gates(self, t: torch.Tensor) -> torch.Tensor:
        blocks = t.detach().split(self.hidden, dim=0)
        return torch.cat([blocks[i] for i in _GATE_ORDER[self.cell]]).clone()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens).transpose(0, 1)  # (T, B, E): ONNX's sequence-first layout
        steps, batch = x.shape[0], x.shape[1]
        attrs = {"hidden_size": self.hidden}
        if self.cell == "gru":
            attrs["linear_before_reset"] = 1  # torch applies the reset gate after R h + b
        for layer in range(self.layers):  # the initial state is zero, as in RNNLM.forward
            y = torch.onnx.ops.symbolic(
                f"::{_ONNX_CELL[self.cell]}",
                (x, getattr(self, f"w{layer}"), getattr(self, f"r{layer}"),
                 getattr(self, f"b{layer}")),
                attrs, dtype=x.dtype, shape=(steps, 1, batch, self.hidden))  # (T, dirs, B, H)
            x = y.squeeze(1)  # (T, B, H)
        out = x.transpose(0, 1)  # (B, T, H)
        if self.proj is not None:
            out = self.proj(out)  # (B, T, E)
        return self.decoder(out)  # (B, T, V)


def _onnx(net: nn.Module, ckpt: dict, sig: Signature, meta: dict[str, str],
          example: torch.Tensor, check: torch.Tensor) -> bytes:
    lm = ckpt["model"] == "rnn_lm"
    wrapper = (_OnnxLanguageModel(net) if lm else _Probabilities(net)).eval()
    free = {i: torch.export.Dim(name) for i, name in enumerate(sig.input_shape)
            if isinstance(name, str)}
    with _quiet_onnx():
        program = torch.onnx.export(
            wrapper, (example,), dynamo=True, verbose=False,  # verbose: no progress lines
            input_names=[sig.input], output_names=[sig.output],
            dynamic_shapes={sig.input: free},
        )
        program.model.metadata_props.update(meta)
        # ONNXProgram runs itself in onnxruntime: the check runs the graph being returned.
        [got] = program(check)
    _agree(got, _expected(net, ckpt, check), "ONNX")
    with tempfile.TemporaryDirectory(prefix="trainyard-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        # One self-contained file, weights inside (ONNX_MAX_WEIGHT_BYTES is checked above).
        program.save(path, external_data=False)
        return path.read_bytes()


@contextmanager
def _quiet_onnx() -> Iterator[None]:
    """The exporter's own warnings, about torch internals a user cannot act on (deprecations
    inside torch.export, torchvision operators it skips registering), out of the server's
    log. Only around the export call."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        registration.setLevel(level)


# ---------------------------------------------------------------------------------------------
# TorchScript


def _torchscript(net: nn.Module, ckpt: dict, meta: dict[str, str], example: torch.Tensor,
                 check: torch.Tensor) -> bytes:
    wrapper = (_Logits(net) if ckpt["model"] == "rnn_lm" else _Probabilities(net)).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # torch 2.13 deprecates torch.jit.trace and torch.jit.save in favour of torch.export,
        # yet a TorchScript file is what a user can torch.jit.load without our code, and
        # tracing is the way to it that works for all three families (torch.jit.script stops
        # at RNNLM's autograd Function). Revisit when torch drops TorchScript.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # nn.RNN's argument checks compare the (fixed) feature size with Python ints while
        # tracing; the batch and time sizes stay free (the check below proves it).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        _agree(traced(check), _expected(net, ckpt, check), "TorchScript")
        torch.jit.save(traced, buf, _extra_files=meta)
    return buf.getvalue()
