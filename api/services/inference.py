"""Where trained networks run when someone uses them: in the API process, off the event loop.

Why here and not on the workers: the requests are small (one image, a few hundred tokens)
and people wait for them (the "Try it" panel redraws while they draw), so a trip through the
queue to a busy worker would cost more than the work; the checkpoints are already in the
database the API reads; the workers' GPUs stay on training. What keeps it safe:

- every model use runs through `run_inference`: in a worker thread (the event loop is never
  blocked), at most TRAINYARD_INFERENCE_THREADS at once per process, under a time limit
  (TRAINYARD_INFERENCE_TIMEOUT_SECONDS, waiting included: 503 past it). Generation checks the
  same deadline between tokens, so the work stops with the wait;
- inputs are bounded before they run (images per request, pixels per image, prompt tokens,
  new tokens: models/inference.py, api/services/images.py);
- networks and validation sets are cached per process, least recently used evicted, by bytes
  (TRAINYARD_INFERENCE_CACHE_BYTES), keyed by checkpoint id and sha256.

torch is imported on the first use, so an API that nobody asks for predictions never loads it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from fastapi import HTTPException, Request

from api.errors import conflict, invalid, not_found
from core.metrics import metric_goal
from db.store import CheckpointRecord, JobRecord, NotFound
from db.store.artifacts import best_checkpoint_of
from models.registry import Family, family

T = TypeVar("T")


class NoCheckpoint(Exception):
    """The job has written no checkpoint yet: nothing to run."""


class DamagedCheckpoint(Exception):
    """The checkpoint's stored bytes do not load as a network (never written by a worker, or
    damaged since): a 409, as nothing the request changes can fix it."""


# ---------------------------------------------------------------------------------------------
# the cache


class ByteLRU:
    """Values by key, at most `max_bytes` of them (each value's size given when it is put);
    least recently used evicted first. A value larger than the whole cache is used once and
    not kept. Safe to share between threads."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_load(self, key: Hashable, load: Callable[[], tuple[T, int]]) -> T:
        """The cached value of `key`, or `load()`'s (value, size in bytes), kept. Two threads
        missing the same key both load it (harmless: the second one's copy is kept)."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found[0]
            self.misses += 1
        value, size = load()
        if size <= self.max_bytes:
            with self._lock:
                old = self._entries.pop(key, None)
                if old is not None:
                    self.bytes -= old[1]
                self._entries[key] = (value, size)
                self.bytes += size
                while self.bytes > self.max_bytes:
                    _, (_, dropped) = self._entries.popitem(last=False)
                    self.bytes -= dropped
        return value

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class Inference:
    """An API process's inference state: `app.state.inference` (api/main.py)."""

    cache: ByteLRU
    threads: int
    timeout: float
    _limiter: anyio.CapacityLimiter | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Any) -> Inference:
        return cls(ByteLRU(settings.inference_cache_bytes), settings.inference_threads,
                   settings.inference_timeout_seconds)

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        # Made on first use: it belongs to the event loop that serves the app.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        return self._limiter


def inference_of(app: Any) -> Inference:
    state = getattr(app.state, "inference", None)
    if state is None:
        state = app.state.inference = Inference.from_settings(app.state.settings)
    return state


# ---------------------------------------------------------------------------------------------
# running a model use


def deadline(app: Any) -> float:
    """The monotonic time by which the current request's model use must end."""
    return time.monotonic() + inference_of(app).timeout


async def run_inference(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a worker thread, at most `inference_threads` at once, within the time
    limit; the failures of a model use answered as HTTP errors (see `http_error`)."""
    state = inference_of(request.app)
    try:
        with anyio.fail_after(state.timeout):
            return await anyio.to_thread.run_sync(fn, *args, limiter=state.limiter,
                                                  abandon_on_cancel=True)
    except (TimeoutError, NoCheckpoint, DamagedCheckpoint, NotFound, ValueError) as exc:
        raise http_error(exc, state.timeout) from exc


def http_error(exc: Exception, timeout: float) -> HTTPException:
    from api.services.images import ImageError
    from models.inference import InputError

    if isinstance(exc, (InputError, ImageError)):
        loc = exc.field.split(".")
        loc = loc if loc[0] in ("query", "path", "body") else ["body", *loc]
        return invalid([int(p) if p.isdigit() else p for p in loc], exc.message)
    if isinstance(exc, TimeoutError):
        return HTTPException(503, f"the model did not answer within {timeout:g} s (the time "
                             "limit, TRAINYARD_INFERENCE_TIMEOUT_SECONDS); try a smaller "
                             "request")
    if isinstance(exc, (NoCheckpoint, DamagedCheckpoint)):
        return conflict(str(exc))
    if isinstance(exc, NotFound):
        return not_found(str(exc))
    raise exc  # any other ValueError is a defect: a 500, logged


# ---------------------------------------------------------------------------------------------
# what a model use needs: the network, the validation set


@dataclass(frozen=True)
class Loaded:
    """A network ready to run (eval mode, CPU), with its checkpoint's description."""

    model: Any  # nn.Module
    ckpt: dict[str, Any]  # the checkpoint dict without its states: model, model_config,
    # hyperparameters, dataset, epoch, step, metrics, input_shape / vocab, tokenizer
    record: CheckpointRecord
    family: Family
    nbytes: int


def choose_checkpoint(store: Any, job: JobRecord, checkpoint_id: int | None) -> CheckpointRecord:
    checkpoints = store.list_checkpoints(job.id)
    if checkpoint_id is not None:
        for c in checkpoints:
            if c.id == checkpoint_id:
                return c
        raise NotFound(f"checkpoint {checkpoint_id} of job {job.id} not found")
    if not checkpoints:
        raise NoCheckpoint(f"job {job.id} has no checkpoint yet: a job writes one at the end "
                           "of each epoch")
    # the best by the headline metric (the one pruning keeps), else the newest
    metric = family(job.model).headline_metric
    return best_checkpoint_of(checkpoints, metric, metric_goal(metric)) or checkpoints[-1]


_threads_set = False


def _set_torch_threads(threads: int) -> None:
    """Once per process: a tiny network run on several threads spends more time handing work
    between them than computing (measured: a digits CNN 0.35 ms on one thread, ~10 ms on two
    of a busy 2-core machine)."""
    global _threads_set
    if threads and not _threads_set:
        import torch

        torch.set_num_threads(threads)
        _threads_set = True


def load_model(app: Any, store: Any, job: JobRecord, checkpoint_id: int | None) -> Loaded:
    """The job's network at `checkpoint_id` (default: its best), from the cache or the
    database. Call inside run_inference (it reads the database and may unpickle megabytes)."""
    record = choose_checkpoint(store, job, checkpoint_id)

    def load() -> tuple[Loaded, int]:
        from models.checkpoints import model_from_checkpoint

        _set_torch_threads(app.state.settings.inference_torch_threads)
        found = store.get_checkpoint_data(job.id, record.id)
        if found is None:  # pruned between the listing and now
            raise NotFound(f"checkpoint {record.id} of job {job.id} not found")
        try:
            model, ckpt = model_from_checkpoint(found[1])
        except Exception as exc:  # any unpickling or shape error: the bytes are not a network
            raise DamagedCheckpoint(f"checkpoint {record.id} of job {job.id} cannot be loaded "
                                    f"({type(exc).__name__}: {str(exc)[:200]})") from exc
        described = {k: v for k, v in ckpt.items() if not k.endswith("_state") and k != "rng"}
        nbytes = sum(t.numel() * t.element_size()
                     for t in (*model.parameters(), *model.buffers()))
        return Loaded(model, described, record, family(ckpt["model"]), nbytes), nbytes

    return inference_of(app).cache.get_or_load(("model", record.id, record.sha256), load)


def _uploaded_version(app: Any, job: JobRecord):
    """The uploaded dataset version a job trained on, as its worker found it
    (Store.find_upload), or None for a built-in dataset."""
    name, version, record = app.state.store.find_upload(job.dataset, job.owner,
                                                        job.dataset_version)
    if record is None and version is not None:
        raise NotFound(f"dataset {name}@{version}, which job {job.id} trained on, no longer "
                       "exists")
    return record


def validation_images(app: Any, job: JobRecord):
    """The job's validation split (models.data.ImageData with only x_val / y_val filled,
    CPU), cached: the split depends on the dataset (version) and the job's seed only. An
    uploaded dataset is read from this machine's dataset cache, fetched once as a worker
    would (worker/dataset_cache.py)."""
    settings = app.state.settings
    seed = int(job.hyperparameters.get("seed", 0))
    upload = _uploaded_version(app, job)

    def load():
        import torch

        from models.data import ImageData, load_image_dataset
        from models.prepared import load_prepared
        from worker import dataset_cache

        if upload is not None:
            cached = dataset_cache.ensure(app.state.store, upload, settings.home,
                                          settings.dataset_cache_bytes)
            data = load_prepared(cached.path, seed=seed)
        else:
            data = load_image_dataset(job.dataset, settings.resolved_data_dir, seed=seed)
        empty = torch.empty(0)
        kept = ImageData(empty, empty, data.x_val, data.y_val, data.num_classes,
                         data.channels, data.height, data.width)
        return kept, data.x_val.numel() * 4 + data.y_val.numel() * 8

    key = upload.sha256 if upload is not None else job.dataset
    return inference_of(app).cache.get_or_load(("validation", key, seed), load)


def require_model(job: JobRecord, allowed: tuple[str, ...], use: str) -> None:
    """422 (naming the path's job) when `use` does not apply to this job's model family."""
    if job.model not in allowed:
        raise invalid(("path", "job_id"),
                      f"job {job.id} trains model {job.model!r}; {use} is for "
                      f"{' and '.join(allowed)} jobs")


CLASSIFIERS = ("mlp", "cnn")
LANGUAGE_MODELS = ("rnn_lm",)
