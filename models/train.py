"""The training core: `fit(spec, callbacks)` trains one job and reports through callbacks.

Pure torch: no Celery, FastAPI or SQLAlchemy. The worker subclasses `Callbacks` to persist what
fit() reports; tests use it directly. A `JobSpec` checks and fills its hyperparameters once,
when it is made; everything here reads them as they are.

Reading order: the two tasks (`_Classification`, `_LanguageModel`: batches and evaluation, by
the family's data kind), the run's state (`_Run`; its checkpoint is models/checkpoints.py),
the reporter that hands steps and progress to the callbacks (`Reporter`, models/reporting.py),
then `fit`, the loop itself.

Numbering: `step` counts optimizer steps done so far (the first on_step has step=1); `epoch` in
on_step is the epoch being trained (1-based); on_epoch / on_checkpoint get the number of epochs
completed. A checkpoint taken after epoch k resumes at epoch k+1; one taken when a run is stopped
mid-epoch (Callbacks.checkpoint_on_stop) resumes at the very next step of that epoch.

A fork (`init_from`: another job's checkpoint) starts from that checkpoint's weights (and, with
`init_optimizer`, its optimizer state) at its step: its first on_step has step = the parent's
step + 1, so its curves continue the parent's, while its epochs count from 1 and its schedule
is its own. on_progress counts the run's own steps (0 to epochs * steps per epoch, a fork's
too), so progress bars show the work of this run.

Reported metrics
  per step:  train_loss, lr (the rate used for that step), samples_per_s (LM: tokens_per_s),
             measured over the steps since the previous report (every step on CPU; on CUDA
             losses are collected on the device and read back every REPORT_EVERY_CUDA steps, so
             the loop does not wait for the GPU each step).
  per epoch: val_loss, val_accuracy (classifiers) | val_perplexity (LM), and grad_norm/<layer>:
             the L2 norm of the gradients of that layer's parameters (layers.0 is the first hidden
             layer) measured on the last step of the epoch, before gradient clipping. Comparing a
             sigmoid and a relu MLP shows the vanishing gradient in the early layers.
             Classifiers also report on_confusion: the validation confusion matrix.
             The LM also reports texts={"sample": ...}: text sampled from the model, prompted
             with the start of the validation text.
             Validation runs without autograd in passes planned by models.limits.eval_plan
             (the LM's decoder on a bounded number of positions at a time), so it stays within
             the memory the job was estimated and admitted with.
  With `compile` on: compile_seconds, once, at the first epoch's end: the first compiled
             step's time, where torch.compile compiles (models/acceleration.py).
  Each family names these (grad_norm/<layer> and compile_seconds aside) as its `metrics` in
  the family table, models/registry.py; tests/unit/test_train.py holds the two together.

A non-finite training loss ends fit() with FloatingPointError("training diverged ...") rather
than reporting NaN metrics.

Several processes (`ranks`, models/distributed.py): every rank runs this same loop on its part
of each global batch, wrapped in DistributedDataParallel; rank 0's callbacks report and decide
(stops reach every rank through `_stop_here`), rank 0 alone evaluates and writes checkpoints
(`_evaluate`, `_save`). With the default `ONE_PROCESS` each of those is the identity.

Determinism: on CPU the same spec gives bit-identical results; resuming from an epoch-end
checkpoint restores model, optimizer, scheduler, the torch RNG and the shuffling generator, so the
resumed run ends with exactly the metrics of an uninterrupted one. use_deterministic_algorithms
is not switched on (it is process-global and CPU kernels used here are deterministic already).
On CUDA some kernels are not deterministic (cuDNN's convolution backward, the embedding's
backward, which add with atomics): the same seed gives metrics that differ in their last digits,
and a resumed run continues from exactly its checkpoint's state, but is not bit-identical to an
uninterrupted one.
"""


from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.states import FitEnd
from models.acceleration import (
    CompiledForward,
    memory_format,
    optimizer_options,
    resolve_precision,
)
from models.checkpoints import (  # noqa: F401 - also read from here (worker, tests)
    CHECKPOINT_FORMAT,
    Position,
    checkpoint_bytes,
    load_checkpoint,
    model_from_checkpoint,
    restore,
    start_from,
)
from models.data import (
    ImageData,
    TextData,
    load_image_dataset,
    load_text_dataset,
    text_data_from_string,
)
from models.distributed import ONE_PROCESS, Ranks
from models.family import Family
from models.limits import EvalPlan, eval_plan, shape_of_data
from models.prepared import load_prepared
from models.registry import FAMILIES, family, validate_hyperparameters
from models.reporting import REPORT_EVERY_CUDA, Reporter

log = logging.getLogger("trainyard.train")  # what a job's log shows of training
SAMPLE_PROMPT_TOKENS = 16
SAMPLE_TOKENS = {"char": 240, "word": 60}
SAMPLE_TEMPERATURE = 0.8


@dataclass
class JobSpec:
    model: str  # a family of the table: "mlp" | "cnn" | "rnn_lm"
    dataset: str  # a built-in dataset name, or a label for data passed to fit()
    hyperparameters: dict = field(default_factory=dict)  # filled and checked on construction
    device: str = "auto"  # "auto" | "cpu" | "cuda"

    def __post_init__(self) -> None:
        # The training side's one check of the hyperparameters (the worker makes its JobSpec
        # from the stored, API-checked ones): defaults filled, so nothing after re-validates.
        self.hyperparameters = validate_hyperparameters(self.model, self.hyperparameters)

    @property
    def family(self) -> Family:
        return FAMILIES[self.model]


class Callbacks:
    """No-op base; the worker overrides what it persists. Exceptions propagate out of fit()."""

    def on_step(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def on_epoch(self, epoch: int, step: int, metrics: dict[str, float],
                 texts: dict[str, str]) -> None:
        pass

    def on_confusion(self, epoch: int, step: int, matrix: list[list[int]]) -> None:
        """Classifiers, each epoch just before on_epoch: the validation confusion matrix
        (matrix[true][predicted] counts; its trace / sum is that epoch's val_accuracy). A hook
        of its own, so on_epoch's signature, which subclasses override, stays as it was."""

    def on_checkpoint(self, epoch: int, step: int, blob: bytes, metrics: dict) -> None:
        pass

    def on_progress(self, epoch: int, total_epochs: int, step: int, total_steps: int,
                    eta_seconds: float | None) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def checkpoint_on_stop(self) -> bool:
        """Asked once when should_stop() ends a run mid-epoch: True writes a checkpoint at that
        step (on_checkpoint), so a run given back (a drained worker) resumes exactly there."""
        return False


@dataclass
class FitResult:
    status: FitEnd
    final_metrics: dict
    epochs_done: int
    steps_done: int


# ---------------------------------------------------------------------------------------------
# building blocks


def resolve_device(requested: str) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("this job asks for device 'cuda', but CUDA is not available on "
                               "this machine (run it on a GPU worker, or use device 'auto'/'cpu')")
        return torch.device("cuda")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raise ValueError(f"unknown device {requested!r}; allowed: auto, cpu, cuda")


def autocast_for(device: torch.device, precision: str):
    """What fit() enters around each forward pass: bf16 autocast on CUDA when `precision`
    (auto, bf16, fp32) resolves to it there (models/acceleration.py)."""
    if resolve_precision(precision, device) == "bf16":
        return functools.partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def load_data(spec: JobSpec, data_dir: Path | None = None,
              uploaded: tuple[Path, str] | None = None) -> ImageData | TextData:
    """Load the job's dataset: a built-in one, or with `uploaded` = (path, kind) the file of
    an uploaded version (a prepared image file, models/prepared.py, or UTF-8 text; the worker
    fetches it into its cache)."""
    hp = spec.hyperparameters
    if uploaded is not None:
        path, kind = uploaded
        if kind == "images":
            return load_prepared(path, seed=hp["seed"])
        return text_data_from_string(Path(path).read_text(encoding="utf-8"),
                                     tokenizer=hp["tokenizer"], max_vocab=hp["max_vocab"])
    if spec.family.data_kind == "images":
        return load_image_dataset(spec.dataset, data_dir, seed=hp["seed"])
    return load_text_dataset(spec.dataset, tokenizer=hp["tokenizer"], seed=hp["seed"],
                             max_vocab=hp["max_vocab"], data_dir=data_dir)


def model_config(model: str, hp: dict, data: Any):
    """The family's config for validated `hp` on `data` (loaded data or a DataShape)."""
    return family(model).build_config(hp, data)


def build_model_from_config(model: str, config) -> nn.Module:
    return family(model).build(config)


def build_optimizer(model: nn.Module, hp: dict,
                    device: torch.device | None = None) -> torch.optim.Optimizer:
    """The job's optimizer; fused kernels on CUDA and the CPU (models/acceleration.py)."""
    params = model.parameters()
    options = optimizer_options(device) if device is not None else {}
    if hp["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=hp["lr"], weight_decay=hp["weight_decay"], **options)
    if hp["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"],
                                 **options)
    return torch.optim.SGD(params, lr=hp["lr"], momentum=hp["momentum"],
                           weight_decay=hp["weight_decay"], **options)


class _Cosine:
    """Cosine factor: 1 at step 0, 0 after the last step (an object, so its state is saved)."""

    def __init__(self, total_steps: int):
        self.total = max(1, total_steps)

    def __call__(self, step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.total) / self.total))


def build_scheduler(optimizer, hp: dict, total_steps: int):
    fn = _Cosine(total_steps) if hp["lr_schedule"] == "cosine" else (lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


@torch.no_grad()
def grad_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of the current gradients per reported layer (one device read)."""
    names, values = [], []
    for name, ps in model.layer_groups().items():
        grads = [p.grad for p in ps if p.grad is not None]
        if grads:
            names.append(name)
            values.append(torch.linalg.vector_norm(torch.stack(
                [torch.linalg.vector_norm(g.float()) for g in grads])))
    if not values:
        return {}
    return {f"grad_norm/{n}": v for n, v in zip(names, torch.stack(values).tolist())}


# ---------------------------------------------------------------------------------------------
# the two tasks: batches and evaluation


class _Classification:
    rate_name = "samples_per_s"

    def __init__(self, data: ImageData, hp: dict, plan: EvalPlan):
        self.data = data
        self.plan = plan  # plan.rows images per validation pass (models.limits.eval_plan)
        self.bs = hp["batch_size"]
        self.n = data.x_train.shape[0]
        full = math.ceil(self.n / self.bs)
        self.steps_per_epoch = min(full, hp["steps_per_epoch"]) if hp["steps_per_epoch"] else full
        self.order = None

    def start_epoch(self, gen: torch.Generator, device) -> None:
        self.order = torch.randperm(self.n, generator=gen).to(device)

    def batch(self, i: int, ranks: Ranks = ONE_PROCESS):
        """Batch i's images and labels (this rank's part of it), the images in the whole
        batch, and this rank's share of them."""
        rows = self.order[i * self.bs:(i + 1) * self.bs]
        idx, share = ranks.shard(rows)
        return self.data.x_train[idx], self.data.y_train[idx], rows.shape[0], share

    @torch.no_grad()
    def evaluate(self, model, autocast) -> tuple[dict[str, float], list[list[int]]]:
        """val_loss, val_accuracy, and the confusion matrix the accuracy is read from (K x K
        counts, rows the true label, columns the predicted one), so the two always agree."""
        d, k = self.data, self.data.num_classes
        loss_sum = torch.zeros((), device=d.x_val.device)
        counts = torch.zeros(k * k, device=d.x_val.device, dtype=torch.long)
        rows = self.plan.rows
        for s in range(0, d.x_val.shape[0], rows):
            x, y = d.x_val[s:s + rows], d.y_val[s:s + rows]
            with autocast():
                logits, _ = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            counts += torch.bincount(k * y + logits.argmax(-1), minlength=k * k)
        confusion = counts.view(k, k)
        n = max(1, d.x_val.shape[0])
        loss, acc = torch.stack([loss_sum / n, confusion.diagonal().sum().float() / n]).tolist()
        return {"val_loss": loss, "val_accuracy": acc}, confusion.tolist()

    def texts(self, model, seed: int, epoch: int) -> dict[str, str]:
        return {}


class _LanguageModel:
    rate_name = "tokens_per_s"

    def __init__(self, data: TextData, hp: dict, plan: EvalPlan):
        self.data = data
        # validation: plan.rows windows per pass, the decoder on plan.chunk_tokens positions at
        # a time (models.limits.eval_plan), so its logits never grow with the vocabulary
        self.plan = plan
        self.bs, self.T = hp["batch_size"], hp["seq_len"]
        n_tokens = data.train_ids.shape[0]
        if n_tokens < self.T + 1:
            raise ValueError(f"the training text is {n_tokens} tokens long; seq_len={self.T} "
                             f"needs at least {self.T + 1} (use more text or a smaller seq_len)")
        if data.val_ids.shape[0] < 2:
            raise ValueError("the validation text is shorter than 2 tokens")
        full_windows = (n_tokens - 1) // self.T
        # one window of slack so each epoch can start at a random offset
        self.n_windows = full_windows - 1 if full_windows >= 2 else full_windows
        self.max_offset = min(self.T - 1, n_tokens - 1 - self.n_windows * self.T)
        full = math.ceil(self.n_windows / self.bs)
        self.steps_per_epoch = min(full, hp["steps_per_epoch"]) if hp["steps_per_epoch"] else full
        self.arange = torch.arange(self.T, device=data.train_ids.device)  # (T,)
        self.starts = None

    def start_epoch(self, gen: torch.Generator, device) -> None:
        offset = int(torch.randint(0, self.max_offset + 1, (1,), generator=gen))
        perm = torch.randperm(self.n_windows, generator=gen)
        self.starts = (offset + perm * self.T).to(device)  # (n_windows,)

    def batch(self, i: int, ranks: Ranks = ONE_PROCESS):
        """As _Classification.batch: windows of seq_len tokens, counted in tokens."""
        rows = self.starts[i * self.bs:(i + 1) * self.bs]  # (B,)
        starts, share = ranks.shard(rows)  # (b,)
        idx = starts[:, None] + self.arange[None, :]  # (b, T)
        ids = self.data.train_ids
        return ids[idx], ids[idx + 1], rows.shape[0] * self.T, share

    @torch.no_grad()
    def evaluate(self, model, autocast) -> tuple[dict[str, float], None]:
        """Mean cross-entropy of every validation token given the ones before it in its window
        of seq_len (each window from a zero state; a shorter last one)."""
        ids = self.data.val_ids  # (M,)
        T, rows, chunk = self.T, self.plan.rows, self.plan.chunk_tokens
        n_pred = ids.shape[0] - 1
        n_full = n_pred // T
        loss_sum = torch.zeros((), device=ids.device)
        ar = torch.arange(T, device=ids.device)
        for s in range(0, n_full, rows):
            starts = torch.arange(s, min(n_full, s + rows), device=ids.device) * T
            idx = starts[:, None] + ar[None, :]  # (b, T)
            loss_sum += model.loss_sum(ids[idx], ids[idx + 1], chunk, autocast)
        rest = n_pred - n_full * T
        if rest:
            x = ids[n_full * T:n_full * T + rest][None]  # (1, rest)
            y = ids[n_full * T + 1:n_full * T + rest + 1][None]
            loss_sum += model.loss_sum(x, y, chunk, autocast)
        loss = float(loss_sum) / n_pred
        return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 700.0))}, None

    def texts(self, model, seed: int, epoch: int) -> dict[str, str]:
        return {"sample": self.sample(model, seed, epoch)}

    def sample(self, model, seed: int, epoch: int) -> str:
        prompt = self.data.val_ids[:SAMPLE_PROMPT_TOKENS].tolist()
        device = next(model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed * 100_003 + epoch)
        new = model.generate(prompt, SAMPLE_TOKENS.get(self.data.tokenizer, 60),
                             temperature=SAMPLE_TEMPERATURE, generator=gen)
        return self.data.decode(prompt + new)


_TASKS = {"images": _Classification, "text": _LanguageModel}  # by the family's data kind


# ---------------------------------------------------------------------------------------------
# the run's state and its checkpoint


@dataclass
class _Run:
    """What one fit() trains and a checkpoint saves and restores, with what the checkpoint
    describes itself by."""

    spec: JobSpec
    config: Any  # the family's config dataclass
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    shuffle_gen: torch.Generator  # draws each epoch's order (CPU)
    device: torch.device
    data: ImageData | TextData


# ---------------------------------------------------------------------------------------------
# fit


def _train_step(run: _Run, net: CompiledForward, x, y, share: float, world_size: int, autocast,
                grad_clip: float, measure_norms: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """One optimizer step on a batch: its loss (on the device) and, when asked, the gradient
    norm of each layer before clipping. `net` runs the forward of run.model, or of its DDP
    wrapper, compiled or not; this rank holds `share` of the batch (1 in one process), so its
    loss is weighted by it: DDP's mean over the ranks then gives the gradient of the whole
    batch's mean loss."""
    with autocast():
        loss = net(x, y)[1]  # the logits are not kept alive through backward
    run.optimizer.zero_grad(set_to_none=True)
    if share != 1.0:
        loss = loss * share  # this rank's part of the whole batch's mean loss
    # DDP divides the summed gradients by the world size: multiplied back here
    (loss * world_size if world_size > 1 else loss).backward()
    norms = grad_norms(run.model) if measure_norms else {}
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    return net.keep(loss), norms


def fit(
    spec: JobSpec,
    callbacks: Callbacks | None = None,
    *,
    data: ImageData | TextData | None = None,
    data_dir: Path | None = None,
    resume_from: bytes | None = None,
    init_from: bytes | None = None,
    init_optimizer: bool = False,
    ranks: Ranks = ONE_PROCESS,
) -> FitResult:
    """Train `spec` to completion (or until callbacks.should_stop()); see the module docstring.

    `resume_from`: this job's own checkpoint, resumed exactly. `init_from` (ignored when
    resuming): another job's checkpoint a fork starts from, with its optimizer state too when
    `init_optimizer`. `ranks`: this process's place in a multi-process run (every rank passes
    the same spec, data and checkpoint bytes)."""
    cb = callbacks or Callbacks()
    hp, kind = spec.hyperparameters, spec.family.data_kind
    device = ranks.device(resolve_device(spec.device))
    if data is None:
        data = load_data(spec, data_dir)
    if (kind == "images") != isinstance(data, ImageData):
        raise ValueError(f"model {spec.model!r} needs {kind} data")
    data = data.to(device)

    # the network, its task, optimizer and schedule; a checkpoint's states over them to resume
    torch.manual_seed(hp["seed"])  # weights init; also seeds CUDA
    config = model_config(spec.model, hp, data)
    model = build_model_from_config(spec.model, config).to(device)
    layout = memory_format(spec.model, device)  # channels_last for the CNN on CUDA
    if layout is not None:
        model = model.to(memory_format=layout)
    task = _TASKS[kind](data, hp, eval_plan(spec.model, hp, shape_of_data(data)))
    optimizer = build_optimizer(model, hp, device)
    epochs, spe = hp["epochs"], task.steps_per_epoch
    scheduler = build_scheduler(optimizer, hp, epochs * spe)
    run = _Run(spec, config, model, optimizer, scheduler,
               torch.Generator().manual_seed(hp["seed"]), device, data)
    at, final_metrics = Position(), {}
    if resume_from is not None:
        at, final_metrics = restore(run, resume_from)
    elif init_from is not None:
        at = start_from(run, init_from, optimizer_state=init_optimizer)
    ranks.own_rng(hp["seed"], resume_from)
    net = ranks.wrap(model)  # after the weights are final: DDP copies rank 0's to the others
    forward = CompiledForward(net, hp["compile"], device)
    # the step this run started at: 0, or a fork's parent step (its own checkpoints carry it)
    first_step = max(0, at.step - at.epoch * spe - at.batch)
    autocast = autocast_for(device, hp["precision"])
    report = Reporter(cb, task.rate_name,
                       REPORT_EVERY_CUDA if device.type == "cuda" else ranks.sync_every,
                       epochs, epochs * spe, at.step, first_step, ranks)

    step, start_batch = at.step, at.batch
    if ranks.is_main:  # a line of the job's log (worker/job_log.py)
        log.info("training %s on %s%s: %s parameters, %d epochs of %d steps, from epoch %d "
                 "step %d", spec.model, device.type,
                 f" ({ranks.world_size} processes)" if ranks.world_size > 1 else "",
                 f"{sum(p.numel() for p in model.parameters()):,}", epochs, spe, at.epoch + 1,
                 step)
    report.progress(at.epoch, step)
    for epoch in range(at.epoch, epochs):
        net.train()
        epoch_shuffle_state = run.shuffle_gen.get_state()
        task.start_epoch(run.shuffle_gen, device)
        report.start_epoch()
        norms: dict[str, float] = {}
        first_batch, start_batch = start_batch, 0
        for i in range(first_batch, spe):
            stop, save = _stop_here(cb, ranks, i, can_save=i > first_batch)
            if stop:
                if ranks.is_main:
                    log.info("stopping at epoch %d, step %d%s", epoch + 1, step,
                             " with a checkpoint there" if save else "")
                report.flush(epoch + 1)
                final_metrics = report.with_train_loss(final_metrics)
                if save:
                    _save(cb, run, ranks, Position(epoch, i, step), final_metrics,
                          epoch_shuffle_state)
                return FitResult(FitEnd.STOPPED, final_metrics, epoch, step)
            x, y, n, share = task.batch(i, ranks)
            if layout is not None:
                x = x.contiguous(memory_format=layout)
            lr = optimizer.param_groups[0]["lr"]
            started = time.perf_counter() if forward.timing_first_step else None
            loss, step_norms = _train_step(run, forward, x, y, share, ranks.world_size,
                                           autocast, hp["grad_clip"],
                                           measure_norms=i == spe - 1)
            if started is not None:  # the first compiled step: where the compiling happens
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                forward.first_step_done(time.perf_counter() - started)
            norms.update(step_norms)  # only the epoch's last step measures them
            step += 1
            report.step(step, epoch + 1, loss, lr, n)
        report.flush(epoch + 1)

        model.eval()
        metrics, texts, confusion = _evaluate(task, model, autocast, ranks, hp["seed"],
                                              epoch + 1)
        metrics.update(norms)
        if ranks.is_main:
            metrics.update(forward.take_metrics())  # compile_seconds, once
        if confusion is not None:  # before on_epoch: stored no later than its val_accuracy
            cb.on_confusion(epoch + 1, step, confusion)
        cb.on_epoch(epoch + 1, step, dict(metrics), texts)
        if ranks.is_main:
            log.info("epoch %d/%d done at step %d: %s", epoch + 1, epochs, step, ", ".join(
                f"{k} {v:.4g}" for k, v in sorted(metrics.items()) if "/" not in k))
        final_metrics = report.with_train_loss(dict(metrics))
        _save(cb, run, ranks, Position(epoch + 1, 0, step), final_metrics)
        report.epoch_done(epoch + 1, step)
    return FitResult(FitEnd.COMPLETED, final_metrics, epochs, step)


def _stop_here(cb: Callbacks, ranks: Ranks, batch: int, can_save: bool) -> tuple[bool, bool]:
    """Whether to stop before `batch`, and checkpoint there: rank 0's callbacks decide, every
    rank learns it at this same batch (asked every ranks.sync_every batches when there are
    several ranks, every batch in one process)."""
    if not ranks.asks_at(batch):
        return False, False
    stop = cb.should_stop()
    return ranks.decide(stop, stop and can_save and cb.checkpoint_on_stop())


def _evaluate(task, model: nn.Module, autocast, ranks: Ranks, seed: int, epoch: int
              ) -> tuple[dict[str, float], dict[str, str], list[list[int]] | None]:
    """Validation metrics, texts and (classifiers) confusion matrix after `epoch`: on rank 0,
    over the whole validation set (the others report nothing)."""
    if not ranks.is_main:
        return {}, {}, None
    metrics, confusion = task.evaluate(model, autocast)
    return metrics, task.texts(model, seed, epoch), confusion


def _save(cb: Callbacks, run: _Run, ranks: Ranks, at: Position, metrics: dict,
          shuffle_state: torch.Tensor | None = None) -> None:
    """Checkpoint `run` at `at` (rank 0 writes it; every rank adds its RNG states)."""
    rank_rng = ranks.gather_rng()
    if ranks.is_main:
        blob = checkpoint_bytes(run, at, metrics, shuffle_state, rank_rng)
        cb.on_checkpoint(at.epoch, at.step, blob, dict(metrics))
