"""One job on several processes: what fit() needs to know about the other ranks.

fit() takes a `Ranks`. The default, `ONE_PROCESS`, does nothing (every method is the identity),
so a one-process run is the same code and the same numbers as before. `GroupRanks` is one rank
of a torch.distributed process group (NCCL on CUDA, gloo on CPU), made by `join`; the worker
side (worker/distributed.py) spawns and supervises the processes.

Design, and why:
- Data parallel with the GLOBAL batch: every rank draws the same permutation from the same
  seeded generator, takes its contiguous slice of each global batch (`shard`), and weights its
  mean loss by its share of the batch (`share` = its rows / the batch's rows). Backward runs on
  loss * share * world_size; DistributedDataParallel averages gradients over the ranks, so
  the step is the gradient of the global batch's mean loss, whatever the slices' sizes: the same
  step as one process with the same batch_size, up to the order of float additions.
  A rank whose slice would be empty (a last batch smaller than the world) trains on one row
  with weight 0: it still joins DDP's all-reduce, with a zero gradient.
- Reported train_loss is the global mean: each rank's weighted losses are summed over the
  ranks (`sum`), once per report batch, not per step (see SYNC_EVERY).
- Validation and sampled text run on rank 0 only, on the unwrapped module: the weights are the
  same on every rank, so the figures are exactly what one process would compute from them (a
  sharded evaluation would cost a reduction and change float order, to save little: validation
  is a small part of a run here). The other ranks go on to their next collective and wait there.
- Stops (cancel, drain, preemption, time limit, pruning) are decided by rank 0's callbacks and
  broadcast (`decide`), with whether to checkpoint there, so every rank stops before the same
  batch. On gloo one small collective costs about as much as DDP's own gradient all-reduce of a
  small model (~0.8 ms on a busy 2-core machine: deciding and reducing every batch took a
  digits-MLP step from ~3.4-4.3 ms to ~5.2-6.1 ms; every 8 batches is within the noise of
  never), so the decision and the loss reduction are made every SYNC_EVERY batches (and at
  every epoch's first batch, where a sweep's pruning lands): a stop lands up to SYNC_EVERY - 1
  steps later than in one process. On NCCL reading the flag back also waits for the GPU, so
  there it is every SYNC_EVERY_CUDA batches, as often as one process reads its losses back.
- Checkpoints are written by rank 0 from the unwrapped module (no `module.` prefix: they load in
  a one-process job and the other way round). Each rank's own RNG state (dropout) is gathered
  into the checkpoint (`rng.ranks`), so a resumed run at the same world size is exact.
- Helper ranks reseed their torch RNG after the weights are built (same init everywhere; DDP
  also broadcasts rank 0's weights), so their dropout masks differ from rank 0's.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
from torch import nn

from models.checkpoints import load_checkpoint

SYNC_EVERY = 8  # batches between stop decisions / loss reductions in a multi-process run
SYNC_EVERY_CUDA = 50  # on NCCL each one is also a host-device sync (as REPORT_EVERY_CUDA)
TIMEOUT = datetime.timedelta(minutes=30)  # a collective that waits longer fails the job
# Joining takes well under a second once every rank has reached its TCPStore; a rank that dies
# (or hangs) after that would otherwise keep the others in the rendezvous for all of TIMEOUT.
JOIN_TIMEOUT = datetime.timedelta(seconds=60)
RANK_SEED_STRIDE = 1_000_003  # helper rank r reseeds with seed + r * this


class Ranks:
    """One process: no other ranks. The base of `GroupRanks`, with the same methods."""

    rank = 0
    world_size = 1
    sync_every = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        return device

    def wrap(self, model: nn.Module) -> nn.Module:
        """What the training step calls forward on."""
        return model

    def shard(self, rows: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This rank's part of a global batch's `rows`, and its share of the batch."""
        return rows, 1.0

    def asks_at(self, batch: int) -> bool:
        """Whether the stop decision is made before batch `batch` of an epoch."""
        return True

    def decide(self, stop: bool, save: bool) -> tuple[bool, bool]:
        """Rank 0's stop decision (and whether to checkpoint there), known to every rank."""
        return stop, save

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` summed over the ranks."""
        return values

    def gather_rng(self) -> list[dict] | None:
        """Every rank's own RNG states, on rank 0 (None: one process, or not rank 0)."""
        return None

    def own_rng(self, seed: int, resume_from: bytes | None) -> None:
        """Give this rank its own RNG stream: from the checkpoint's `rng.ranks`, or fresh."""

    def close(self) -> None:
        pass


ONE_PROCESS = Ranks()


class GroupRanks(Ranks):
    """Rank `rank` of a process group of `world_size` (made by `join`)."""

    def __init__(self, rank: int, world_size: int, backend: str):
        self.rank, self.world_size, self.backend = rank, world_size, backend
        self.sync_every = SYNC_EVERY_CUDA if backend == "nccl" else SYNC_EVERY
        # NCCL collectives need CUDA tensors; gloo's are on the CPU
        self._dev = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")

    def device(self, device: torch.device) -> torch.device:
        if device.type == "cuda":
            return torch.device("cuda", self.rank)  # device r of the visible devices
        return device

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        p = next(model.parameters())
        ids = [p.device.index] if p.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, rows: torch.Tensor) -> tuple[torch.Tensor, float]:
        total = rows.shape[0]
        mine = torch.tensor_split(rows, self.world_size)[self.rank]
        if mine.shape[0] == 0:
            return rows[:1], 0.0  # joins the all-reduce with a zero gradient
        return mine, mine.shape[0] / total

    def asks_at(self, batch: int) -> bool:
        return batch % self.sync_every == 0

    def decide(self, stop: bool, save: bool) -> tuple[bool, bool]:
        flags = torch.tensor([float(stop), float(save)], device=self._dev)
        dist.broadcast(flags, src=0)
        stop_all, save_all = flags.tolist()
        return stop_all > 0, save_all > 0

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        values = values.to(self._dev, copy=True)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def _rng_states(self) -> dict:
        cuda = torch.cuda.get_rng_state(self.rank) if self.backend == "nccl" else None
        return {"torch": torch.get_rng_state(), "cuda": cuda}

    def gather_rng(self) -> list[dict] | None:
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(self._rng_states(), out, dst=0)
        return out

    def own_rng(self, seed: int, resume_from: bytes | None) -> None:
        if resume_from is not None:
            states = load_checkpoint(resume_from)["rng"].get("ranks") or []
            if len(states) == self.world_size:
                torch.set_rng_state(states[self.rank]["torch"])
                if states[self.rank].get("cuda") is not None and self.backend == "nccl":
                    torch.cuda.set_rng_state(states[self.rank]["cuda"], self.rank)
                return
        # fresh, or a checkpoint of another world size: rank 0 keeps the stream one process
        # has; the others get their own (so their dropout masks differ from rank 0's)
        if self.rank:
            torch.manual_seed(seed + self.rank * RANK_SEED_STRIDE)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def abort(self) -> None:
        """Stop the group's pending work now. After a rank has died its collectives never
        complete, and the group's threads (joined when the last reference goes: the DDP
        reducer's, held by the exception's traceback) would wait out the timeout."""
        if dist.is_initialized():
            dist.distributed_c10d._abort_process_group()


def join(rank: int, world_size: int, store: dist.Store, backend: str,
         timeout: datetime.timedelta = TIMEOUT,
         join_timeout: datetime.timedelta = JOIN_TIMEOUT) -> GroupRanks:
    """Join the default process group as `rank` through `store` (rank 0's TCPStore).

    The rendezvous (gloo connects its mesh inside init_process_group, bounded by the group's
    timeout) waits at most `join_timeout`; collectives afterwards wait up to `timeout`."""
    if backend == "nccl":
        torch.cuda.set_device(rank)
    named = dist.distributed_c10d._world.group_count
    try:
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                                timeout=min(timeout, join_timeout))
    except BaseException:
        # The failed group kept its name (a counter): give it back, or this process's next
        # group would be named "1" while its fresh helpers' are "0", and never meet.
        dist.distributed_c10d._world.group_count = named
        raise
    dist.distributed_c10d._set_pg_timeout(timeout)
    return GroupRanks(rank, world_size, backend)


def threads_per_rank(world_size: int) -> int:
    """CPU threads each rank may use: the cores shared out, at least one (gloo ranks on a
    2-core machine each get one, so they do not fight over the cores)."""
    return max(1, (os.cpu_count() or 1) // world_size)
