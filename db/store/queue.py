"""The queue as a waiting job sees it: its place in line, the workers that could run it, and
what those workers are doing. The facts only; api/services/queue.py turns them into a reason
and an estimated start.

**Jobs that could take the same workers** (a job's competitors): the queued jobs whose device
is the same as its own or `auto`; for an `auto` job, every queued job. A job's **position**
is 1 + the competitors ahead of it, in the order the claim takes them (db/store/scheduling.py)
without its middle term: priority (highest first), then id (oldest first). Fair share is left
out because it depends on who runs what at the moment a worker claims, so the position is
the place the job holds if fair share does not reorder owners of equal priority.

**Workers that could run a job**: live workers (seen within the lease, not stopped) that
serve its device's queue. Draining workers are reported too (they explain why nobody serves
a device) but take no job.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, case, func, or_, select, true
from sqlalchemy.orm import Session

from core.states import DEVICES
from db.store.scheduling import committed_on, gpu_ids_of, running_on_gpus
from db.tables import Job, Worker, utcnow

# How many of the latest succeeded jobs give the mean duration of a job.
RECENT_JOBS_FOR_MEAN = 20
# The devices that are a kind of worker; `auto` jobs go to either.
CONCRETE_DEVICES = tuple(d for d in DEVICES if d != "auto")


@dataclass(frozen=True)
class QueueWorker:
    """A live worker that serves the waiting job's device, and the job it is running."""

    name: str
    state: str  # idle | busy | draining
    job_priority: int | None  # of the job it runs; None when idle
    remaining_seconds: float | None  # that job's ETA, counted down since it was reported
    preempt_requested: bool  # that job has been asked to stop for one of higher priority
    gpus: int | None = None  # how many GPUs (CPU: processes) it can give one job
    gpu_free_bytes: int | None = None  # its fullest GPU's free memory (None: no CUDA)
    gpu_total_bytes: int | None = None  # that GPU's total memory
    gpu_committed_bytes: int = 0  # estimates of the jobs running on the GPUs it shares
    gpu_committed_jobs: int = 0  # how many jobs those are


@dataclass(frozen=True)
class QueueFacts:
    """What a queued job waits for, read in one transaction."""

    job_id: int
    device: str
    priority: int
    owner: str
    position: int  # 1-based among its competitors (see the module)
    higher_priority_ahead: int  # competitors ahead of it with a higher priority
    workers: tuple[QueueWorker, ...]  # live workers serving its device (draining included)
    owner_running: int  # the owner's running jobs, on any device (as the claim counts them)
    owner_remaining_seconds: tuple[float | None, ...]  # their ETAs, counted down
    mean_job_seconds: float | None  # of the latest succeeded jobs; None without any
    gpus: int = 1  # GPUs (CPU: processes) the job asks for
    memory_bytes: int | None = None  # its estimated memory per GPU (None: not recorded)
    memory_wait_seconds: float | None = None  # since a claim first passed it over for memory
    # The competitor ahead of it that has waited longest for GPU memory, if any: its id,
    # estimate and wait (past the backfill limit, GPUs where it fits take no job behind it).
    held_by_job_id: int | None = None
    held_by_memory_bytes: int | None = None
    held_by_seconds: float | None = None


def _competitors(device: str):
    """The queued jobs that could take the workers a job of `device` waits for."""
    return true() if device == "auto" else Job.device.in_((device, "auto"))


def _remaining(eta: float | None, as_of: dt.datetime | None, now: dt.datetime) -> float | None:
    """An ETA reported at `as_of`, counted down to `now`; never negative."""
    if eta is None or as_of is None:
        return None
    return max(0.0, eta - (now - as_of).total_seconds())


def _waited(since: dt.datetime | None, now: dt.datetime) -> float | None:
    return None if since is None else max(0.0, (now - since).total_seconds())


class QueueMixin:
    """queue_facts (one queued job) and queue_positions (a page of jobs)."""

    def queue_facts(self, job_id: int, alive_seconds: float) -> QueueFacts | None:
        """The facts behind a queued job's place and wait (see the module); None when the
        job does not exist or is not queued. Workers count as live when seen within
        `alive_seconds` (the lease). Five small queries whatever the queue's length, one more
        when a job ahead waits for GPU memory, and one more when workers name their GPUs."""
        now = utcnow()
        with self._session() as s:
            job = s.execute(select(Job.device, Job.priority, Job.owner, Job.status, Job.gpus,
                                   Job.memory_bytes, Job.memory_wait_since)
                            .where(Job.id == job_id)).first()
            if job is None or job.status != "queued":
                return None
            ahead_of_it = (Job.status == "queued", _competitors(job.device),
                           or_(Job.priority > job.priority,
                               and_(Job.priority == job.priority, Job.id < job_id)))
            ahead, higher, longest_wait = s.execute(
                select(func.count(), func.coalesce(
                    func.sum(case((Job.priority > job.priority, 1), else_=0)), 0),
                    func.min(Job.memory_wait_since))
                .where(*ahead_of_it)).one()
            held_by = None if longest_wait is None else s.execute(
                select(Job.id, Job.memory_bytes).where(*ahead_of_it,
                                                       Job.memory_wait_since == longest_wait)
                .limit(1)).first()
            owner_jobs = s.execute(select(Job.eta_seconds, Job.updated_at).where(
                Job.owner == job.owner, Job.status == "running")).all()
            return QueueFacts(
                job_id=job_id, device=job.device, priority=job.priority, owner=job.owner,
                position=int(ahead) + 1, higher_priority_ahead=int(higher),
                workers=self._workers_serving(s, job.device, alive_seconds, now),
                owner_running=len(owner_jobs),
                owner_remaining_seconds=tuple(_remaining(eta, at, now) for eta, at in owner_jobs),
                mean_job_seconds=self._mean_job_seconds(s), gpus=job.gpus,
                memory_bytes=job.memory_bytes,
                memory_wait_seconds=_waited(job.memory_wait_since, now),
                held_by_job_id=held_by.id if held_by else None,
                held_by_memory_bytes=held_by.memory_bytes if held_by else None,
                held_by_seconds=_waited(longest_wait, now) if held_by else None)

    @staticmethod
    def _workers_serving(s: Session, device: str, alive_seconds: float,
                         now: dt.datetime) -> tuple[QueueWorker, ...]:
        """Live workers whose queues include `device`, with the running job of each."""
        cutoff = now - dt.timedelta(seconds=alive_seconds)
        rows = s.execute(
            select(Worker.name, Worker.queues, Worker.state, Job.priority, Job.eta_seconds,
                   Job.updated_at, Job.preempt_requested_at, Worker.gpus, Worker.gpu_free_bytes,
                   Worker.gpu_memory_bytes, Worker.gpu_ids)
            .outerjoin(Job, and_(Job.id == Worker.job_id, Job.status == "running"))
            .where(Worker.seen_at >= cutoff, Worker.stopped_at.is_(None))
            .order_by(Worker.name)).all()
        rows = [row for row in rows if device in row.queues.split(",")]
        running = running_on_gpus(s) if any(row.gpu_ids for row in rows) else []
        workers = []
        for row in rows:
            ids = gpu_ids_of(row.gpu_ids)
            committed, jobs = committed_on(running, ids)
            workers.append(QueueWorker(
                name=row.name, state=row.state, job_priority=row.priority,
                remaining_seconds=_remaining(row.eta_seconds, row.updated_at, now),
                preempt_requested=row.preempt_requested_at is not None, gpus=row.gpus,
                gpu_free_bytes=row.gpu_free_bytes,
                gpu_total_bytes=row.gpu_memory_bytes if ids else None,
                gpu_committed_bytes=committed, gpu_committed_jobs=jobs))
        return tuple(workers)

    @staticmethod
    def _mean_job_seconds(s: Session) -> float | None:
        """The mean running time (latest attempt's start to finish) of the latest succeeded
        jobs, whatever their device; None before any."""
        rows = s.execute(select(Job.started_at, Job.finished_at)
                         .where(Job.status == "succeeded")
                         .order_by(Job.id.desc()).limit(RECENT_JOBS_FOR_MEAN)).all()
        durations = [(end - start).total_seconds() for start, end in rows
                     if start is not None and end is not None and end >= start]
        return sum(durations) / len(durations) if durations else None

    def queue_positions(self, job_ids: list[int]) -> dict[int, int]:
        """{job id: position} for those of `job_ids` that are queued (see the module), in
        one query whatever their number: a window over the queued jobs counts, in claim
        order, the competitors of each kind of job up to each row."""
        if not job_ids:
            return {}
        order = (Job.priority.desc(), Job.id)
        ranks = [func.row_number().over(order_by=order).label("auto")]
        ranks += [func.sum(case((Job.device.in_((device, "auto")), 1), else_=0))
                  .over(order_by=order).label(device) for device in CONCRETE_DEVICES]
        ranked = select(Job.id, Job.device, *ranks).where(Job.status == "queued").subquery()
        with self._session() as s:
            rows = s.execute(select(ranked).where(ranked.c.id.in_(list(job_ids)))).all()
        return {row.id: int(row._mapping[row.device] if row.device in CONCRETE_DEVICES
                            else row.auto) for row in rows}
