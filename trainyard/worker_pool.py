"""`trainyard worker --jobs N`: N jobs at once on one host, each in its own worker process.

A small model (a digits MLP step is a handful of tiny kernels) leaves a modern GPU mostly idle,
so a host runs several jobs at once. Each runs in its own worker process (a whole `trainyard
worker`: Celery consumer with --pool=solo, presence beat, reconciler), never in threads of one:

- CUDA is initialised only in the children; this process never touches a GPU (it reads the
  device count, which torch answers through NVML without creating a context).
- A job that fails (a CUDA out-of-memory included) fails alone: its neighbours are other
  processes, and its own process lives on for the next job.
- A child that dies (a crash in a library, the OOM killer, kill -9) is started again with its
  name (trainyard/supervisor.py); its job's lease runs out and it is requeued and resumed
  from its last checkpoint, as for any lost worker.

GPUs are shared out by CUDA_VISIBLE_DEVICES (`plan_gpus`): with at least as many GPUs as jobs,
each child gets its own group of GPUs (so `gpus: k` jobs can run on a child with k); with more
jobs than GPUs, children share GPUs round robin and each checks its GPU's free memory before
it claims (worker/gpus.py). On a CPU-only host every child gets the cores in equal shares
(TRAINYARD_TORCH_THREADS), so N jobs do not oversubscribe the cores.

SIGTERM or Ctrl-C drains every child (each gives its running job back at its next step) and
waits for them; a child whose parent dies gets SIGTERM from the kernel (TRAINYARD_SUPERVISED).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from trainyard.supervisor import Supervisor

log = logging.getLogger("trainyard.worker")

SUPERVISED_ENV = "TRAINYARD_SUPERVISED"  # the child exits (drains) when this process dies
GPUS_ENV = "CUDA_VISIBLE_DEVICES"


def plan_gpus(jobs: int, gpus: Sequence[str]) -> list[list[str]]:
    """The GPUs each of `jobs` children sees: contiguous groups when there are at least as many
    GPUs as jobs (the first `len(gpus) % jobs` groups one larger), else one GPU each, round
    robin; no GPUs: an empty list per child (CPU)."""
    if jobs < 1:
        raise ValueError("jobs must be at least 1")
    gpus = list(gpus)
    if not gpus:
        return [[] for _ in range(jobs)]
    if jobs > len(gpus):
        return [[gpus[i % len(gpus)]] for i in range(jobs)]
    size, extra = divmod(len(gpus), jobs)
    plan, start = [], 0
    for i in range(jobs):
        end = start + size + (1 if i < extra else 0)
        plan.append(gpus[start:end])
        start = end
    return plan


def visible_gpus(requested: str | None) -> list[str]:
    """The GPUs to share out: `--gpus 0,1` as given, else every GPU this host shows (those in
    CUDA_VISIBLE_DEVICES when it is set). None without CUDA."""
    if requested:
        return [g.strip() for g in requested.split(",") if g.strip()]
    inherited = os.environ.get(GPUS_ENV)
    if inherited is not None:
        return [g.strip() for g in inherited.split(",") if g.strip()]
    import torch

    # device_count asks NVML where it can: no CUDA context is created in this process.
    return [str(i) for i in range(torch.cuda.device_count())]


def child_name(base: str, index: int) -> str:
    """`worker-12@box` -> `worker-12-1@box`: the index before the host, so names stay unique
    on the service and still read as <worker>@<host>."""
    worker, at, host = base.partition("@")
    return f"{worker}-{index}{at}{host}"


def child_env(gpus: list[str], jobs: int, has_gpus: bool, torch_threads: int) -> dict[str, str]:
    """The environment of one child: its GPUs, and its share of the cores when it trains on
    the CPU (unless TRAINYARD_TORCH_THREADS says otherwise)."""
    env = dict(os.environ)
    env[SUPERVISED_ENV] = "1"
    if has_gpus:
        env[GPUS_ENV] = ",".join(gpus)
    if torch_threads <= 0 and jobs > 1:
        env["TRAINYARD_TORCH_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


class WorkerPool:
    """Starts and supervises one `trainyard worker` process per job slot."""

    def __init__(self, jobs: int, base_name: str, gpus: Sequence[str], extra_args: Sequence[str],
                 torch_threads: int = 0):
        self.plan = plan_gpus(jobs, gpus)
        self.jobs, self.base_name, self.extra_args = jobs, base_name, list(extra_args)
        self.torch_threads = torch_threads
        self.has_gpus = bool(gpus)
        self.supervisors: list[Supervisor] = []
        self._stop = threading.Event()

    def _starter(self, index: int):
        name = child_name(self.base_name, index)
        env = child_env(self.plan[index], self.jobs, self.has_gpus, self.torch_threads)
        argv = [sys.executable, "-m", "trainyard", "worker", "--jobs", "1", "--name", name,
                *self.extra_args]
        # Its own session: a Ctrl-C reaches this process only, which then drains the children
        # in order instead of racing them.
        return lambda: subprocess.Popen(argv, env=env, start_new_session=True)

    def describe(self) -> str:
        slots = [f"{child_name(self.base_name, i)} on "
                 + (f"GPU {','.join(g)}" if self.has_gpus else "CPU")
                 for i, g in enumerate(self.plan)]
        return f"{self.jobs} jobs at once: " + "; ".join(slots)

    def run(self) -> int:
        """Start the children and wait until SIGTERM/SIGINT, then drain them all."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        self.supervisors = [Supervisor(child_name(self.base_name, i), self._starter(i)).start()
                            for i in range(self.jobs)]
        print(self.describe(), flush=True)
        self._stop.wait()
        log.info("worker pool stopping: draining %s workers", self.jobs)
        threads = [threading.Thread(target=s.stop, kwargs={"timeout": 120})
                   for s in self.supervisors]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return 0
