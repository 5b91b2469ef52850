"""A job with `"gpus": k` > 1: k processes train it together (torch.distributed + DDP).

`fit_job` is what the runner calls: plain models.train.fit() for one process; for k the worker
process itself is rank 0 and runs fit() with the job's callbacks (metrics, checkpoints, stop
decisions: exactly the one-process path), while k - 1 helper ranks, spawned here, run the same
fit() with no-op callbacks. Training semantics (sharding, stops, checkpoints) are in
models/distributed.py; this module only starts, watches and ends processes.

- Processes: the 'spawn' start method (a fork would copy the worker's threads, its database
  connections and, on a GPU worker, its CUDA context); each helper gets the spec, the loaded
  data (tensors through shared memory) and the checkpoint bytes to resume or fork from, so
  every rank starts from the same bytes. On CUDA rank r uses device r of the worker's visible
  devices (NCCL); on CPU the ranks are gloo processes with the cores shared out between them.
- Rendezvous: rank 0 opens a TCPStore on a free localhost port (port 0: the OS picks, no race
  between picking and binding) and the helpers connect to it; every collective has a timeout
  (models.distributed.TIMEOUT).
- Supervision: rank 0 first waits until every helper reports ready or dies (a helper that fails
  to start fails the job at once, with its traceback). One that dies between ready and the
  group's rendezvous fails it within models.distributed.JOIN_TIMEOUT (60 s). A helper that
  dies mid-run breaks the group: gloo raises in rank 0's next collective at once (measured:
  0.3 s after a kill -9); for NCCL, which may wait for the timeout instead, a watcher thread
  aborts the group when a helper exits. The job then FAILS, with a message that names the
  rank and its exit code or signal: its checkpoints stay, and the error says what happened;
  it is not requeued, because a deterministic death (out of memory, a bug) would otherwise
  loop through the queue.
- A helper polls its parent: when the worker process is gone (killed), it exits too.
"""

from __future__ import annotations

import datetime
import logging
import multiprocessing.connection
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from models.data import ImageData, TextData
from models.distributed import TIMEOUT, join, threads_per_rank
from models.train import Callbacks, FitResult, JobSpec, fit, load_data, resolve_device

log = logging.getLogger("trainyard.worker")

PARENT_POLL_S = 0.5  # how often a helper checks that the worker process still lives
EXIT_GRACE_S = 30.0  # after the run, how long helpers may take to exit before being killed
FAILED_GRACE_S = 3.0  # the same after a failed run (a helper may be stuck in a rendezvous)


_BROKEN: list[BaseException] = []  # see _Group.run


class RankFailed(RuntimeError):
    """A helper rank of a multi-process job died or failed; the job fails with this."""


def fit_job(spec: JobSpec, callbacks: Callbacks, *, gpus: int = 1,
            data: ImageData | TextData | None = None, data_dir: Path | None = None,
            resume_from: bytes | None = None, init_from: bytes | None = None,
            init_optimizer: bool = False,
            timeout: datetime.timedelta = TIMEOUT) -> FitResult:
    """fit() on `gpus` processes (one: fit() itself, in this process)."""
    if gpus <= 1:
        return fit(spec, callbacks, data=data, data_dir=data_dir, resume_from=resume_from,
                   init_from=init_from, init_optimizer=init_optimizer)
    device = resolve_device(spec.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and torch.cuda.device_count() < gpus:
        raise ValueError(f"this job asks for {gpus} GPUs; this worker sees "
                         f"{torch.cuda.device_count()}")
    if data is None:
        data = load_data(spec, data_dir)  # once, here: the helpers get these tensors
    group = _Group(spec, gpus, backend, timeout)
    return group.run(callbacks, data=data, resume_from=resume_from, init_from=init_from,
                     init_optimizer=init_optimizer)


@dataclass
class _Helper:
    rank: int
    process: multiprocessing.Process
    conn: multiprocessing.connection.Connection  # the helper's ("ready",) or ("error", text)
    ready: bool = False
    error: str | None = None

    def poll(self) -> None:
        """Read what the helper sent so far."""
        try:
            while self.conn.poll():
                message = self.conn.recv()
                if message[0] == "ready":
                    self.ready = True
                elif message[0] == "error":
                    self.error = message[1]
        except (EOFError, OSError):
            pass

    def failure(self) -> str | None:
        """Why this helper failed, in words (None while it is alive or exited cleanly)."""
        self.poll()
        code = self.process.exitcode
        if self.error is not None:
            return f"rank {self.rank} failed:\n{self.error}"
        if code is None or code == 0:
            return None
        if code < 0:
            name = signal.Signals(-code).name
            return f"rank {self.rank} (pid {self.process.pid}) was killed by {name}"
        return f"rank {self.rank} (pid {self.process.pid}) exited with code {code}"


class _Group:
    """Rank 0 (this process) and its helper ranks, for one run."""

    def __init__(self, spec: JobSpec, world_size: int, backend: str,
                 timeout: datetime.timedelta):
        self.spec, self.world_size, self.backend, self.timeout = spec, world_size, backend, timeout
        self.threads = threads_per_rank(world_size)
        self.helpers: list[_Helper] = []

    def run(self, callbacks: Callbacks, **fit_args) -> FitResult:
        store = dist.TCPStore("127.0.0.1", 0, self.world_size, is_master=True,
                              timeout=self.timeout, wait_for_workers=False)
        threads_before = torch.get_num_threads()
        finished = False
        try:
            self._spawn(store.port, fit_args)
            self._wait_ready()
            torch.set_num_threads(self.threads)
            try:
                ranks = join(0, self.world_size, store, self.backend, self.timeout)
            except RuntimeError as exc:  # DistStoreError included: a rank never arrived
                cause = self._helper_failure(wait_s=2.0)
                if cause is not None:
                    raise RankFailed(self._message(cause)) from exc
                raise RankFailed(self._message(
                    f"the {self.world_size} processes could not form their group ({exc})")
                ) from exc
            watcher = _Watcher(self.helpers, self.backend).start()
            try:
                result = fit(self.spec, callbacks, ranks=ranks, **fit_args)
                finished = True
                return result
            except RuntimeError as exc:
                cause = self._helper_failure(wait_s=2.0)
                if cause is not None:  # the group broke because a helper went first
                    ranks.abort()
                    # Kept, never freed: freeing it frees the DDP reducer, whose gloo group
                    # joins threads that can wait out the 30-minute timeout (seen in CI).
                    _BROKEN.append(exc)
                    raise RankFailed(self._message(cause)) from exc
                raise
            finally:
                watcher.stop()
                ranks.close()
        finally:
            torch.set_num_threads(threads_before)
            # after a failure the helpers have nothing left to finish
            self._end_helpers(EXIT_GRACE_S if finished else FAILED_GRACE_S)

    def _spawn(self, port: int, fit_args: dict) -> None:
        ctx = torch.multiprocessing.get_context("spawn")
        for rank in range(1, self.world_size):
            receive, send = ctx.Pipe(duplex=False)
            process = ctx.Process(
                target=_helper_main, name=f"trainyard-rank-{rank}", daemon=True,
                args=(rank, self.world_size, port, self.backend, self.timeout, os.getpid(),
                      self.threads, self.spec, fit_args, send))
            process.start()
            send.close()  # ours is the receiving end; EOF once the helper is gone
            self.helpers.append(_Helper(rank, process, receive))
        log.info("started %d helper ranks for a %d-process %s run: pids %s",
                 len(self.helpers), self.world_size, self.backend,
                 [h.process.pid for h in self.helpers])

    def _wait_ready(self) -> None:
        """Until every helper is about to join the group; a helper that dies first fails the
        job now, instead of rank 0 waiting for the rendezvous to time out."""
        deadline = time.monotonic() + self.timeout.total_seconds()
        while True:
            waiting = []
            for h in self.helpers:
                cause = h.failure()
                if cause is not None:
                    raise RankFailed(self._message(cause))
                if not h.ready:
                    waiting.append(h)
            if not waiting:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise RankFailed(f"helper ranks {[h.rank for h in waiting]} did not start "
                                 f"within {self.timeout.total_seconds():.0f} s")
            multiprocessing.connection.wait(
                [h.conn for h in waiting] + [h.process.sentinel for h in waiting],
                timeout=min(left, 1.0))

    def _helper_failure(self, wait_s: float) -> str | None:
        """The first helper failure seen within `wait_s` (a killed helper's exit code may
        arrive a moment after rank 0's collective broke)."""
        deadline = time.monotonic() + wait_s
        while True:
            for h in self.helpers:
                cause = h.failure()
                if cause is not None:
                    return cause
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def _message(self, cause: str) -> str:
        return (f"{cause}. This job trains on {self.world_size} processes and stops when one of "
                "them dies; it keeps its checkpoints (submit it again, or fork its last "
                "checkpoint, to go on)")

    def _end_helpers(self, grace_s: float) -> None:
        """Wait up to `grace_s` for the helpers to end (they end with rank 0), then kill what
        is left."""
        deadline = time.monotonic() + grace_s
        for h in self.helpers:
            h.process.join(max(0.0, deadline - time.monotonic()))
            if h.process.is_alive():
                log.warning("rank %s (pid %s) did not exit: killing it", h.rank, h.process.pid)
                h.process.kill()
                h.process.join(5.0)
            h.conn.close()


class _Watcher:
    """Aborts an NCCL group when a helper dies (NCCL may otherwise wait for the timeout;
    gloo notices a closed connection by itself)."""

    def __init__(self, helpers: list[_Helper], backend: str):
        self.helpers, self.backend = helpers, backend
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rank-watcher", daemon=True)

    def start(self) -> _Watcher:
        if self.backend == "nccl":
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopped.is_set():
            multiprocessing.connection.wait([h.process.sentinel for h in self.helpers],
                                            timeout=0.5)
            if any(h.process.exitcode not in (None, 0) for h in self.helpers):
                if not self._stopped.is_set():
                    log.error("a helper rank died: aborting the process group")
                    dist.distributed_c10d._abort_process_group()
                return

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(2.0)


# ---------------------------------------------------------------------------------------------
# a helper rank's process


def _watch_parent(parent_pid: int) -> None:
    # The worker was killed (we were re-parented): nothing would end this process otherwise
    # while it is not inside a collective.
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent_pid:
            os._exit(3)


def _helper_main(rank: int, world_size: int, port: int, backend: str,
                 timeout: datetime.timedelta, parent_pid: int, threads: int, spec: JobSpec,
                 fit_args: dict, conn: multiprocessing.connection.Connection) -> None:
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watch",
                     daemon=True).start()
    ranks = None
    try:
        torch.set_num_threads(threads)
        store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False, timeout=timeout)
        conn.send(("ready",))
        ranks = join(rank, world_size, store, backend, timeout)
        fit(spec, Callbacks(), ranks=ranks, **fit_args)
    except BaseException:  # noqa: BLE001 - told to rank 0, which fails the job with it
        try:
            conn.send(("error", traceback.format_exc()[-3000:]))
        except OSError:
            pass
        raise SystemExit(1) from None
    finally:
        if ranks is not None:
            ranks.close()
