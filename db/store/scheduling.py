"""Scheduling: which queued job a worker claims next, and changing a job's priority.

The database decides the order; the broker only wakes workers. A worker that is woken (or
has just finished a job) claims, in one transaction, the best queued job it can run:

1. highest `priority` first;
2. then fair share: the owner with the fewest jobs running on workers of this worker's device
   class (`cpu` or `cuda`) goes first;
3. then the oldest job (lowest id: a job queued again after a lost worker, a drain or a
   preemption keeps its place).

The claim reads only index entries, never the whole queue: the top priority level (one step down
the (status, priority, owner, id) index), the owners with jobs at that level (one seek per
owner), each one's oldest job (one seek), and the running jobs (a handful); ten thousand queued
jobs cost what ten do. On PostgreSQL the chosen row is locked with FOR UPDATE SKIP LOCKED, so
concurrent claimers each take a different job without waiting for one another; on SQLite the
claim holds the database's single write lock from its first read (BEGIN IMMEDIATE). Either way
the UPDATE is still guarded by `status = 'queued'`: every job runs exactly once. Two limits
need the claims that count them to take turns on PostgreSQL (an advisory lock each, held to the
commit): the per-owner running limit, and the GPU memory of a shared GPU (see Capacity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlalchemy import bindparam, case, func, insert, or_, select, text, update

from db.store.records import JobRecord, record_of
from db.tables import PRIORITY_MAX, Checkpoint, Job, JobAttempt, Worker, utcnow

# Jobs whose priority can still change: a finished job's order means nothing.
REPRIORITIZABLE = ("queued", "running")


# Two-int Postgres advisory lock (this, 0) held while a claim under a per-owner limit counts
# the chosen job's owner's running jobs again.
OWNER_LIMIT_LOCK_CLASS = 0x7479_6F77  # "tyow"

# First half of the two-int Postgres advisory lock held while a claim counts the memory of
# the jobs on one GPU (the second half: hashtext of the GPU's UUID).
GPU_MEMORY_LOCK_CLASS = 0x7479_6770  # "tygp"


@dataclass(frozen=True)
class Capacity:
    """What a worker can give the job it claims: `gpus` GPUs (on CPU: processes for a
    distributed job), and on a GPU `free_memory_bytes` (its fullest GPU's free memory, less
    the reserve for a CUDA context; None: not measured, memory is not checked).

    Free memory is a snapshot: a job claimed a moment ago by another process on the same GPU
    has not allocated yet. So a worker that names its GPUs (`gpu_ids`, UUIDs) and their
    `total_memory_bytes` (the smallest, less the reserve) has the claim also subtract the
    estimates of the jobs running on any GPU it shares, plus `reserve_bytes` for each of
    their CUDA contexts (see `memory_for_next_job`)."""

    gpus: int = 1
    free_memory_bytes: int | None = None
    gpu_ids: tuple[str, ...] = ()
    total_memory_bytes: int | None = None
    reserve_bytes: int = 0


def memory_for_next_job(free_bytes: int | None, total_bytes: int | None, committed_bytes: int,
                        committed_jobs: int, reserve_bytes: int) -> int | None:
    """How much GPU memory a job claimed now may use: the GPU's measured free memory, and no
    more than what the estimates of the `committed_jobs` already running there (together
    `committed_bytes`, plus a reserve each) leave of its total. Both inputs are already less
    the new job's own reserve; None when free memory is not measured."""
    if free_bytes is None:
        return None
    if total_bytes is None:
        return max(0, free_bytes)
    unclaimed = total_bytes - committed_bytes - committed_jobs * reserve_bytes
    return max(0, min(free_bytes, unclaimed))


def gpu_ids_of(stored: str | None) -> tuple[str, ...]:
    """The UUIDs in a `workers.gpu_ids` value (comma-separated; NULL without CUDA)."""
    return tuple(filter(None, (stored or "").split(",")))


def running_on_gpus(s) -> list[tuple[int, frozenset[str]]]:
    """(memory estimate, its worker's GPU UUIDs) of each running job that has both: what a
    claim on one of those GPUs subtracts. As many rows as jobs running, a handful."""
    rows = s.execute(select(Job.memory_bytes, Worker.gpu_ids)
                     .join(Worker, Worker.name == Job.worker)
                     .where(Job.status == "running", Job.memory_bytes.is_not(None),
                            Worker.gpu_ids.is_not(None))).all()
    return [(int(memory), frozenset(gpu_ids_of(ids))) for memory, ids in rows]


def committed_on(running: list[tuple[int, frozenset[str]]],
                 gpu_ids: Sequence[str]) -> tuple[int, int]:
    """(summed estimates, how many jobs) of the `running` jobs on any of `gpu_ids`."""
    sharing = [memory for memory, ids in running if ids.intersection(gpu_ids)]
    return sum(sharing), len(sharing)


def device_class_of(queues: Sequence[str]) -> str:
    """A worker's device class from the queues it serves: `cuda` where it serves cuda jobs."""
    return "cuda" if "cuda" in queues else "cpu"


class SchedulingMixin:
    """claim_next_job and set_priority (the queue's order lives in the jobs table)."""

    def claim_next_job(
        self,
        worker: str,
        devices: Sequence[str],
        device_class: str = "cpu",
        max_running_per_owner: int | None = None,
        capacity: Capacity | None = None,
        backfill_seconds: float | None = None,
    ) -> JobRecord | None:
        """Claim the best queued job whose `device` is one of `devices` for `worker` (see the
        module's order), as `claim_job` does: running, attempts += 1, an attempt row, and the
        worker's row marked busy with it, all in one transaction. With
        `max_running_per_owner`, owners already running that many jobs (on any device) are
        passed over. With `capacity`, jobs that ask for more GPUs or GPU memory than the worker
        has are passed over too (smaller ones behind them may start first; the queue reason
        of the passed-over job says what it waits for). With `backfill_seconds` as well, that
        lasts only so long for the job first in line: see `_first_in_line`. None when
        no job is eligible."""
        devices = list(devices)
        if not devices:
            return None
        with self._session() as s:
            if self.dialect == "sqlite":
                s.connection().exec_driver_sql("BEGIN IMMEDIATE")
            share, blocked = self._running_by_owner(s, device_class, max_running_per_owner)
            drained = None
            if capacity is not None and capacity.gpu_ids:
                capacity, drained = self._less_committed_memory(s, capacity)
            job_id = None
            if backfill_seconds is not None:
                hold, first = self._first_in_line(s, devices, blocked, share, capacity,
                                                  drained, backfill_seconds)
                if hold:
                    return None
                if first is not None:  # it fits now: take it without searching again
                    job_id = self._take_head(s, *first, devices=devices, capacity=capacity)
            if job_id is None:
                job_id = self._best_job(s, devices, blocked, share, capacity)
            if job_id is not None and max_running_per_owner is not None \
                    and self.dialect == "postgresql":
                job_id = self._within_owner_limit(s, job_id, devices, blocked, share, capacity,
                                                  max_running_per_owner)
            return None if job_id is None else self._claim_in(s, job_id, worker, device_class)

    def _within_owner_limit(self, s, job_id: int, devices, blocked: list[str],
                            share: dict[str, int], capacity: Capacity | None,
                            max_running: int) -> int | None:
        """PostgreSQL: `job_id`, or the next best job, whose owner still runs fewer than
        `max_running` jobs, counted again now that the claims with owner limits take turns
        (one advisory lock, to their commit): the first count was read without a lock, so
        claims at the same moment could each start one more job for an owner one below the
        limit. Under the lock only rows that can be skipped are locked, so it waits for no
        other claim (the per-GPU locks, when taken, come before it)."""
        s.execute(text("SELECT pg_advisory_xact_lock(CAST(:cls AS integer), 0)"),
                  {"cls": OWNER_LIMIT_LOCK_CLASS})
        while job_id is not None:
            owner = s.execute(select(Job.owner).where(Job.id == job_id)).scalar()
            running = s.execute(select(func.count()).select_from(Job).where(
                Job.owner == owner, Job.status == "running")).scalar()
            if running < max_running:
                return job_id
            blocked = [*blocked, owner]
            job_id = self._best_job(s, devices, blocked, share, capacity)
        return None

    def _best_job(self, s, devices, blocked, share: dict[str, int],
                  capacity: Capacity | None) -> int | None:
        """The id of the best eligible job (see the module's order), locked for this claim
        on PostgreSQL; None when none is eligible."""
        below = None  # look at the priority levels from the top down
        while heads := self._heads_of_top_level(s, devices, blocked, below, capacity):
            level = heads[0][0]
            # Fair share: the owner with the fewest running jobs in this class first; among
            # equals, the one whose oldest job is oldest.
            for _, head, owner in sorted((share.get(o, 0), head, o) for _, o, head in heads):
                job_id = self._take_head(s, level, owner, head, devices=devices,
                                         capacity=capacity)
                if job_id is not None:
                    return job_id
            below = level  # every job of this level is being claimed by someone else
        return None

    @staticmethod
    def _running_by_owner(s, device_class: str, max_running: int | None
                          ) -> tuple[dict[str, int], list[str]]:
        """({owner: running jobs in `device_class`}, owners already running `max_running`
        jobs on any device): one pass over the running jobs, a handful."""
        rows = s.connection().execute(
            select(Job.owner, func.count(), func.sum(case((Job.device_class == device_class, 1),
                                                          else_=0)))
            .where(Job.status == "running").group_by(Job.owner)).all()
        blocked = [o for o, total, _ in rows if max_running is not None and total >= max_running]
        return {o: int(n or 0) for o, _, n in rows}, blocked

    def _less_committed_memory(self, s, capacity: Capacity) -> tuple[Capacity, int | None]:
        """`capacity` with its free memory lowered to what the jobs running on its GPUs leave
        (see Capacity), and what a job would have once those jobs ended (what they hold by
        their estimates given back; None when free memory is not measured). Claims on one GPU
        take turns from here to their commit (PostgreSQL: an advisory lock per GPU, taken in
        UUID order so two claims never wait on each other; SQLite: the claim already holds
        the write lock), so each counts the jobs the others claimed."""
        if self.dialect == "postgresql":
            for gpu_id in sorted(set(capacity.gpu_ids)):
                s.execute(text("SELECT pg_advisory_xact_lock(CAST(:cls AS integer), "
                               "hashtext(:gpu))"), {"cls": GPU_MEMORY_LOCK_CLASS, "gpu": gpu_id})
        committed, jobs = committed_on(running_on_gpus(s), capacity.gpu_ids)
        held = committed + jobs * capacity.reserve_bytes
        free = memory_for_next_job(capacity.free_memory_bytes, capacity.total_memory_bytes,
                                   committed, jobs, capacity.reserve_bytes)
        drained = None
        if capacity.free_memory_bytes is not None:
            drained = capacity.free_memory_bytes + held
            if capacity.total_memory_bytes is not None:
                drained = min(drained, capacity.total_memory_bytes)
        return replace(capacity, free_memory_bytes=free), drained

    def _first_in_line(self, s, devices, blocked, share: dict[str, int],
                       capacity: Capacity | None, drained: int | None, backfill_seconds: float
                       ) -> tuple[bool, tuple[int, str, int] | None]:
        """(hold, first). `hold`: whether this GPU worker should take nothing now, to make
        room for the job first in line among those that would fit its GPU once the GPU's
        jobs end (`drained`; jobs that never would, for a smaller GPU or memory that
        processes not ours hold, wait for another GPU and hold nothing back here). Such a
        job is passed over while it does not fit, and smaller jobs behind it start first
        (backfill), which could go on for ever on a busy GPU. So the first claim to pass it
        over records the time (jobs.memory_wait_since); once it has waited
        `backfill_seconds`, every claim on such a GPU takes nothing, the GPU drains, and the
        job starts. `first`: (priority, owner, id) of that job when it fits now, so that the
        claim takes it without searching again."""
        if capacity is None or capacity.free_memory_bytes is None:
            return False, None
        room_when_drained = capacity.total_memory_bytes if drained is None else drained
        if room_when_drained is None:
            return False, None
        heads = self._heads_of_top_level(s, devices, blocked, None,
                                         replace(capacity, free_memory_bytes=room_when_drained))
        if not heads:
            return False, None
        _, first, owner = min((share.get(o, 0), head, o) for _, o, head in heads)
        memory, since = s.execute(select(Job.memory_bytes, Job.memory_wait_since)
                                  .where(Job.id == first)).one()
        if memory is None or memory <= capacity.free_memory_bytes:
            return False, (heads[0][0], owner, first)
        now = utcnow()
        if since is None:
            s.execute(update(Job).where(Job.id == first, Job.memory_wait_since.is_(None))
                      .values(memory_wait_since=now))
            since = now
        return (now - since).total_seconds() >= backfill_seconds, None

    def _heads_of_top_level(self, s, devices, blocked, below: int | None,
                            capacity: Capacity | None = None) -> list[tuple[int, str, int]]:
        """(priority, owner, id of their oldest eligible job) for each owner with an eligible
        queued job at the highest priority level (below `below`, if given); [] when none.
        One statement of index seeks, whatever the queue's length: one step down the
        (status, priority, owner, id) index for the level, then one seek per owner found by
        skipping through that level (a recursive query) and one for each owner's oldest job,
        so a level of ten thousand jobs from three owners costs seven seeks, not a scan."""
        eligible = "j.status = 'queued' AND j.device IN :devices"
        if blocked:
            eligible += " AND j.owner NOT IN :blocked"
        fit_params = {}
        if capacity is not None:
            eligible += " AND j.gpus <= :max_gpus"
            fit_params["max_gpus"] = capacity.gpus
            if capacity.free_memory_bytes is not None:
                eligible += " AND (j.memory_bytes IS NULL OR j.memory_bytes <= :free_memory)"
                fit_params["free_memory"] = capacity.free_memory_bytes
        stmt = text(f"""
            WITH RECURSIVE top(level) AS (
                SELECT j.priority FROM jobs j
                WHERE {eligible} AND j.priority < :below
                ORDER BY j.priority DESC LIMIT 1
            ), o(owner) AS (
                SELECT min(j.owner) FROM jobs j, top
                WHERE j.status = 'queued' AND j.priority = top.level
                UNION ALL
                SELECT (SELECT min(j.owner) FROM jobs j, top
                        WHERE j.status = 'queued' AND j.priority = top.level
                          AND j.owner > o.owner)
                FROM o WHERE o.owner IS NOT NULL
            )
            SELECT top.level, o.owner,
                   (SELECT j.id FROM jobs j
                    WHERE {eligible} AND j.priority = top.level AND j.owner = o.owner
                    ORDER BY j.id LIMIT 1) AS head
            FROM o, top WHERE o.owner IS NOT NULL
            """).bindparams(bindparam("devices", expanding=True),
                            *([bindparam("blocked", expanding=True)] if blocked else []))
        params = {"devices": list(devices), "below": PRIORITY_MAX + 1 if below is None else below,
                  **fit_params}
        if blocked:
            params["blocked"] = list(blocked)
        rows = s.connection().execute(stmt, params).all()
        return [(level, owner, head) for level, owner, head in rows if head is not None]

    def _take_head(self, s, level: int, owner: str, head: int, *, devices,
                   capacity: Capacity | None = None) -> int | None:
        """The owner's oldest eligible job of priority `level` that no other claim holds.
        SQLite: `head` itself (the claim holds the single write lock). PostgreSQL: locked
        with FOR UPDATE SKIP LOCKED, so concurrent claimers take the next one instead of
        waiting for each other."""
        if self.dialect != "postgresql":
            return head
        stmt = (select(Job.id).where(Job.status == "queued", Job.device.in_(devices),
                                     Job.priority == level, Job.owner == owner)
                .order_by(Job.id).limit(1).with_for_update(skip_locked=True))
        if capacity is not None:
            stmt = stmt.where(Job.gpus <= capacity.gpus)
            if capacity.free_memory_bytes is not None:
                stmt = stmt.where(or_(Job.memory_bytes.is_(None),
                                      Job.memory_bytes <= capacity.free_memory_bytes))
        return s.connection().execute(stmt).scalar()

    def _claim_in(self, s, job_id: int, worker: str, device_class: str | None
                  ) -> JobRecord | None:
        """The claim of `job_id` inside session `s` (see `claim_job`); None if not queued."""
        now = utcnow()
        conn = s.connection()
        row = conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(status="running", worker=worker, attempts=Job.attempts + 1,
                    started_at=now, heartbeat_at=now, finished_at=None, error=None,
                    updated_at=now, device_class=device_class, preempt_requested_at=None,
                    memory_wait_since=None)
            .returning(*Job.__table__.c)
        ).first()
        if row is None:
            return None
        # The attempt resumes from the newest checkpoint's epoch, if any.
        newest_epoch = (select(Checkpoint.epoch).where(Checkpoint.job_id == job_id)
                        .order_by(Checkpoint.step.desc(), Checkpoint.id.desc()).limit(1)
                        .scalar_subquery())
        conn.execute(insert(JobAttempt).values(
            job_id=job_id, number=row.attempts, worker=worker, started_at=now,
            resumed_from_epoch=newest_epoch))
        # A draining worker stays draining: it gives this job back at its first step.
        conn.execute(
            update(Worker).where(Worker.name == worker).values(
                state=case((Worker.state == "draining", "draining"), else_="busy"),
                job_id=job_id))
        self._queue_job_event(s, row)  # job.started, same transaction
        return record_of(JobRecord, row)

    def set_priority(self, job_id: int, priority: int) -> JobRecord:
        """Change a queued or running job's priority (a queued one moves in the order at
        once; a running one keeps running, and the new value counts for preemption and for
        its place if it goes back to the queue). Raises NotFound, or InvalidTransition when
        the job has finished."""
        record = self._transition(job_id, REPRIORITIZABLE, {"priority": int(priority)})
        return record or self._refuse(job_id, "only a queued or running job's priority can "
                                              "change")
