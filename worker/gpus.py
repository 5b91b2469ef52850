"""What this worker process has to give a job: GPUs (or CPU processes) and free GPU memory.

A worker process sees the GPUs in its CUDA_VISIBLE_DEVICES (`trainyard worker --jobs N
--gpus ...` gives each of its job processes its share: trainyard/worker_pool.py). Before each
claim it measures the free memory of its fullest GPU (torch.cuda.mem_get_info: what every process on
that GPU has left, not only this one), so a job whose estimated memory (jobs.memory_bytes,
models.training_memory_bytes) plus TRAINYARD_GPU_MEMORY_RESERVE_BYTES does not fit is left for
later, or for a worker with room. That measure is a snapshot, blind to a job another process
on the same GPU claimed a moment ago and has not allocated for yet; so a worker also names its
GPUs (their UUIDs, on its row) and total memory, and its claim subtracts the estimates of the
jobs running on any GPU it shares (db/store/scheduling.py: claims on one GPU take turns).
An estimate can still be short: a job that then runs out of memory fails alone with a clear
message (worker/runner.py), its neighbours in their own processes untouched.

CUDA is initialised here only in a process that serves the cuda queue, which is the process
that will train on it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from db.store.scheduling import Capacity

# Kept out of a GPU's UUID as stored: the separator of workers.gpu_ids, among others.
_UNSAFE = re.compile(r"[^A-Za-z0-9-]")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def free_memory_bytes() -> int | None:
    """Free memory of the fullest visible GPU (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return min(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))


def gpu_ids() -> tuple[str, ...]:
    """The UUIDs of the visible GPUs (empty without CUDA, or where torch does not tell them:
    then claims count free memory only): the same GPU has the same UUID in every process and
    on every host, whatever CUDA_VISIBLE_DEVICES numbers it."""
    import torch

    if not torch.cuda.is_available():
        return ()
    ids = [getattr(torch.cuda.get_device_properties(i), "uuid", None)
           for i in range(torch.cuda.device_count())]
    if any(uuid is None for uuid in ids):
        return ()
    return tuple(_UNSAFE.sub("", str(uuid)) for uuid in ids)


def total_memory_bytes() -> int | None:
    """Total memory of the smallest visible GPU (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return min(torch.cuda.get_device_properties(i).total_memory
               for i in range(torch.cuda.device_count()))


def capacity(queues: Sequence[str], reserve_bytes: int) -> Capacity:
    """What a worker serving `queues` can give the next job. A worker for cuda jobs gives its
    visible GPUs, their free and total memory less the reserve, and their UUIDs (so that its
    claim counts the jobs of other processes on them); a CPU-only one gives a process per core
    to a distributed job (gloo) and has no GPU memory to check."""
    if "cuda" in queues and cuda_available():
        free, total = free_memory_bytes(), total_memory_bytes()
        return Capacity(gpus=max(1, gpu_count()),
                        free_memory_bytes=None if free is None else max(0, free - reserve_bytes),
                        gpu_ids=gpu_ids(),
                        total_memory_bytes=None if total is None else total - reserve_bytes,
                        reserve_bytes=reserve_bytes)
    return Capacity(gpus=max(1, os.cpu_count() or 1))


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error (torch raises torch.cuda.OutOfMemoryError; some kernels
    still raise a RuntimeError that says so)."""
    import torch

    return (isinstance(exc, torch.cuda.OutOfMemoryError)
            or (isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)))


def out_of_memory_message(exc: BaseException) -> str:
    """What a user reads when their job ran out of GPU memory: what happened and what to do,
    then torch's own first line (which says how much it tried to allocate)."""
    first = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
    return ("CUDA out of memory: the job needed more GPU memory than was free on its GPU "
            "(other jobs may share it: trainyard worker --jobs). Try a smaller batch_size or "
            "model, or TRAINYARD_GPU_MEMORY_RESERVE_BYTES larger so that fewer jobs share a "
            f"GPU. torch said: {first}")


def release_cached_memory() -> None:
    """Give the GPU memory torch caches for this process back to the GPU (after a failed job,
    so the next job, or a neighbour, has it)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
