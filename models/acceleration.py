"""The fast path: what fit() switches on for a job beyond plain eager fp32, and on which device.

Each piece is a choice measured by bench/gpu.py (results in bench/results/gpu.json; the README
says what each gave). On the CPU only the fused optimizers apply, and `compile: on`.

- precision `auto` (the default): bf16 autocast on a CUDA GPU that supports it (Ampere and
  newer), fp32 elsewhere; `bf16` asks for it, `fp32` refuses it. The loss and the optimizer
  stay fp32 (autocast runs matmuls and convolutions in bf16 only), so no loss scaling is needed.
- fused optimizers (Adam, AdamW, SGD) on CUDA and on the CPU: one kernel updates every
  parameter, instead of a few per parameter. On one CPU core (bench/optimizer_kernels.py,
  results in bench/results/optimizer_kernels.json) the optimizer step took 37-60 % of the time
  of the per-parameter one and the whole training step went from 0.50 to 0.39 ms (digits
  MLP) and 1.46 to 1.34 ms (CNN); the RNN-LM's 21.6 ms did not change. An earlier reading of
  the CNN as slower (5.2 -> 7.8 ms) was not reproduced. On the digits MLP the fused kernels
  gave the very same losses, step for step, as the per-parameter ones. A checkpoint keeps its
  optimizer's choice (torch restores it with the param groups): a run resumed from one made
  before goes on with per-parameter kernels.
- channels_last for the CNN on CUDA: cuDNN's convolutions run NHWC without transposes. The
  weights keep their logical shape, so checkpoints are the same on either device.
- `compile`: `on` wraps the training forward in torch.compile (TorchInductor), `cudagraphs`
  also captures it in CUDA graphs (mode "reduce-overhead"), which removes the launch cost that
  dominates small models; `off` (the default until bench/gpu.py has measured it on the GPU
  machine) trains eagerly. Compiled kernels are cached on disk (TorchInductor's FX graph cache,
  under TRAINYARD_HOME/compile-cache when the worker sets TORCHINDUCTOR_CACHE_DIR), so a later
  job of the same shapes, in any process on that host, skips most of the compile: reported as
  `compile_seconds`, the first compiled step's time, at the first epoch's end.

Checkpoints never see any of this: fit() saves `run.model`, the plain module, and the compiled
or distributed wrappers only run its forward.
"""

from __future__ import annotations

import torch
from torch import nn

from models.registry import COMPILE_MODES, PRECISIONS  # noqa: F401 - the choices, declared once


def resolve_precision(precision: str, device: torch.device) -> str:
    """`fp32` or `bf16`: what a job of `precision` trains in on `device`."""
    if device.type != "cuda" or precision == "fp32":
        return "fp32"
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def optimizer_options(device: torch.device) -> dict:
    """Keyword arguments for torch.optim's Adam, AdamW and SGD on `device`."""
    return {"fused": True} if device.type in ("cuda", "cpu") else {}


def memory_format(model_name: str, device: torch.device) -> torch.memory_format | None:
    """channels_last for the CNN's images on CUDA; None: leave tensors as they are."""
    if device.type == "cuda" and model_name == "cnn":
        return torch.channels_last
    return None


class CompiledForward:
    """The training forward of `net`, compiled as `mode` asks. fit() times the first whole
    training step (forward, backward and optimizer: AOTAutograd compiles the backward at the
    first backward) and hands it to `first_step_done`: that is compile_seconds."""

    def __init__(self, net: nn.Module, mode: str, device: torch.device):
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, not {mode!r}")
        self.mode = mode
        # CUDA graphs replay into the same output buffers: a loss kept past its step (the
        # reporter keeps REPORT_EVERY_CUDA of them) must be copied out.
        self.cudagraphs = mode == "cudagraphs" and device.type == "cuda"
        self.compile_seconds: float | None = None
        self._reported = False
        if mode == "off":
            self.forward = net
        else:
            self.forward = torch.compile(
                net, mode="reduce-overhead" if self.cudagraphs else "default")

    @property
    def timing_first_step(self) -> bool:
        return self.mode != "off" and self.compile_seconds is None

    def __call__(self, *args):
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        return self.forward(*args)

    def keep(self, loss: torch.Tensor) -> torch.Tensor:
        """`loss`, detached, safe to keep past this step."""
        return loss.detach().clone() if self.cudagraphs else loss.detach()

    def first_step_done(self, seconds: float) -> None:
        self.compile_seconds = seconds

    def take_metrics(self) -> dict[str, float]:
        """{"compile_seconds": ...} once, after the first compiled step; {} otherwise."""
        if self.compile_seconds is None or self._reported:
            return {}
        self._reported = True
        return {"compile_seconds": self.compile_seconds}
