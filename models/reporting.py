"""How fit() hands its steps and progress to the callbacks (models/train.py): in batches, with
the throughput over each batch, and progress at most every PROGRESS_EVERY_S."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch

from models.distributed import ONE_PROCESS, Ranks

if TYPE_CHECKING:
    from models.train import Callbacks

REPORT_EVERY_CUDA = 50  # steps between device->host reads of the loss on CUDA
PROGRESS_EVERY_S = 0.5  # at most this often on_progress between epoch ends



class Reporter:
    """Hands the steps to the callbacks in batches (on CUDA the losses stay on the device until
    a batch of REPORT_EVERY_CUDA is read back at once), with the throughput over the batch, and
    progress at most every PROGRESS_EVERY_S. A non-finite loss ends the run."""

    def __init__(self, cb: Callbacks, rate_name: str, every: int, epochs: int,
                 total_steps: int, start_step: int, first_step: int = 0,
                 ranks: Ranks = ONE_PROCESS):
        # steps are counted as on_step counts them; progress from `first_step` (a fork's
        # parent step), over this run's `total_steps`; each rank's losses are its share of
        # the batch's, summed over the ranks at each flush (every rank flushes at the same steps)
        self.cb, self.rate_name, self.every, self.ranks = cb, rate_name, every, ranks
        self.epochs, self.total_steps, self.start_step = epochs, total_steps, start_step
        self.first_step = first_step
        # step, epoch (1-based), loss (on the device), lr, examples or tokens
        self.pending: list[tuple[int, int, torch.Tensor, float, int]] = []
        self.last_loss: float | None = None  # the newest reported train_loss
        self.last_progress = 0.0
        self.t_fit = self.t_mark = time.perf_counter()

    def start_epoch(self) -> None:
        self.t_mark = time.perf_counter()

    def step(self, step: int, epoch: int, loss: torch.Tensor, lr: float, n: int) -> None:
        """Step `step` of epoch `epoch` (1-based) is done: `loss` (on the device), `n` examples
        or tokens."""
        self.pending.append((step, epoch, loss, lr, n))
        if len(self.pending) >= self.every:
            self.flush(epoch)

    def flush(self, epoch: int) -> None:  # epoch: the one in progress (1-based)
        pending = self.pending
        if not pending:
            return
        if len(pending) == 1:  # every step on the CPU: .item() runs ~26,000 instructions a
            losses = [self.ranks.sum(pending[0][2]).item()]  # step fewer than stack + tolist
        else:
            losses = self.ranks.sum(torch.stack([p[2] for p in pending])).tolist()
        now = time.perf_counter()
        rate = sum(p[4] for p in pending) / max(now - self.t_mark, 1e-9)
        self.t_mark = now
        for (s, e, _, lr, _), loss in zip(pending, losses):
            if not math.isfinite(loss):
                raise FloatingPointError(f"training diverged: train_loss is {loss} at step {s} "
                                         "(try a lower lr, or grad_clip)")
            self.cb.on_step(s, e, {"train_loss": loss, "lr": lr, self.rate_name: rate})
        self.last_loss = losses[-1]
        self.pending = []
        if now - self.last_progress >= PROGRESS_EVERY_S:
            self.last_progress = now
            self.progress(epoch, pending[-1][0])

    def progress(self, epoch: int, step: int) -> None:
        done = step - self.start_step
        own = step - self.first_step
        eta = None
        if done:
            eta = (time.perf_counter() - self.t_fit) / done * (self.total_steps - own)
        self.cb.on_progress(epoch, self.epochs, own, self.total_steps, eta)

    def epoch_done(self, epoch: int, step: int) -> None:
        self.last_progress = time.perf_counter()
        self.progress(epoch, step)

    def with_train_loss(self, metrics: dict) -> dict:
        """`metrics`, with the newest train_loss once a step was reported."""
        if self.last_loss is not None:
            metrics["train_loss"] = self.last_loss
        return metrics
