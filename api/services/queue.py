"""Why a queued job waits, and when it should start: the `queue` block of GET /jobs/{id},
made from the store's facts (db/store/queue.py says which jobs and workers count).

The reason is the first of these that holds:

1. `no_worker`: no live worker serves the job's device (draining workers take no job, so
   they do not count; the message says so when they are the only ones).
2. `gpus`: the job asks for more GPUs (`gpus`; on CPU: processes) than any live worker for
   its device has; it waits for one that has them (the claim passes it over until then).
3. `owner_limit`: the owner already runs TRAINYARD_MAX_RUNNING_JOBS_PER_USER jobs; the claim
   passes the job over, wherever it stands, until one of them ends.
4. `gpu_memory`: every worker that could run it is on a GPU without the job's estimated memory
   (plus TRAINYARD_GPU_MEMORY_RESERVE_BYTES) free at its latest beat, or whose jobs' estimates
   leave less than that of its total: other jobs on those GPUs hold it; the claim passes the
   job over until one of them frees enough. For the job first in line it also says how long
   smaller jobs behind it may still start first (TRAINYARD_GPU_BACKFILL_SECONDS).
5. `gpu_held`: a job ahead of it has waited for GPU memory past TRAINYARD_GPU_BACKFILL_SECONDS,
   and every worker that could run this one is on a GPU where that job fits: those GPUs take
   no job behind it until it starts (db/store/scheduling.py).
6. `next`: a worker is idle for it (fewer jobs ahead than idle workers): it starts as soon as
   a worker claims it.
7. `preempting`: a running job of lower priority has been asked to stop (checkpointed), and
   the worker it frees will come to this job (fewer jobs ahead than idle workers plus such
   workers).
8. `next`: it is first in line; every worker is busy, and the first to finish takes it.
9. `higher_priority`: jobs of higher priority are ahead of it.
10. `workers_busy`: the jobs ahead, of its priority, take the workers first.

The estimated start counts each worker's free time: 0 for an idle one or one whose job is
being preempted, else its running job's remaining ETA (as of that job's last report;
unknown before its first). With k jobs ahead and n such workers (free times sorted):
k < n: the (k+1)-th free time; k >= n: each worker in turn takes one more job of the mean
duration of the latest succeeded jobs, so the free time k mod n plus (k div n) mean
durations. An owner at the limit also waits for the soonest of its own running jobs to end.
Null when any term is unknown, or nobody serves the device. Jobs ahead that wait for their
owner's limit are counted as if they would run: an estimate, not a promise.
"""

from __future__ import annotations

from api.schemas import QueueInfo, QueueReason
from db.store.queue import QueueFacts, QueueWorker
from db.store.scheduling import memory_for_next_job


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _are(n: int) -> str:
    return "is" if n == 1 else "are"


def _workers_busy(n: int, idle: int, device: str) -> str:
    """'all 3 workers that can run cuda jobs are busy', or what the idle ones do instead."""
    if idle == 0:
        workers = "the worker" if n == 1 else f"all {n} workers"
        return f"{workers} that can run {device} jobs {_are(n)} busy"
    return (f"the {_count(n, 'worker')} that can run {device} jobs ({idle} idle) take the "
            "jobs ahead first")


def _free_times(serving: list[QueueWorker], priority: int) -> list[float | None]:
    """When each serving worker is free for the queue, soonest first (None: unknown, last)."""
    times = [0.0 if w.state == "idle" or _stopping_for(w, priority) else w.remaining_seconds
             for w in serving]
    return sorted(times, key=lambda t: (t is None, t or 0.0))


def _stopping_for(worker: QueueWorker, priority: int) -> bool:
    """Its job was asked to stop, and a job of `priority` may take the freed worker."""
    return (worker.state == "busy" and worker.preempt_requested
            and worker.job_priority is not None and worker.job_priority < priority)


def estimated_start(free_times: list[float | None], ahead: int,
                    mean_job_seconds: float | None) -> float | None:
    """Seconds until a worker takes the job with `ahead` jobs before it (module's rule)."""
    n = len(free_times)
    if n == 0:
        return None
    if ahead < n:
        return free_times[ahead]
    first = free_times[ahead % n]
    if first is None or mean_job_seconds is None:
        return None
    return first + (ahead // n) * mean_job_seconds


def _no_worker(facts: QueueFacts) -> QueueReason:
    device = facts.device
    draining = sum(w.state == "draining" for w in facts.workers)
    if draining:
        message = (f"the only workers for {device} are draining ({draining}): they take no "
                   f"new job; start another with trainyard worker")
    else:
        message = (f"no worker that can run {device} jobs is connected; start one with "
                   "trainyard worker")
    return QueueReason(code="no_worker", message=message)


def _owner_limit(facts: QueueFacts, limit: int) -> QueueReason:
    return QueueReason(code="owner_limit", message=(
        f"{facts.owner} already runs {_count(facts.owner_running, 'job')}, the most one user "
        f"may run at once (TRAINYARD_MAX_RUNNING_JOBS_PER_USER={limit}); it waits for one of "
        "them to finish"))


GIB = 1024**3


def _gpus(facts: QueueFacts, serving: list[QueueWorker]) -> QueueReason | None:
    """`gpus` when no serving worker has as many GPUs as the job asks for."""
    most = max((w.gpus or 1) for w in serving)
    if facts.gpus <= most:
        return None
    unit = "processes" if facts.device == "cpu" else "GPUs"
    return QueueReason(code="gpus", message=(
        f"it asks for {facts.gpus} {unit}; the most a connected worker for {facts.device} "
        f"jobs has is {most}: it waits for a worker with {facts.gpus} (trainyard worker "
        "--gpus gives a worker several)"))


def _gpu_memory(facts: QueueFacts, serving: list[QueueWorker], reserve_bytes: int,
                backfill_seconds: float | None = None) -> QueueReason | None:
    """`gpu_memory` when the job has an estimate and every serving worker is on a GPU that
    has less room for it than that, as its claim would count it (db/store/scheduling.py):
    free memory at its latest beat, less the estimates of the jobs running on the GPUs it
    shares, each less a reserve. A CPU worker (no GPU memory) never is."""
    if facts.memory_bytes is None:
        return None
    room = [_room(w, reserve_bytes) for w in serving]
    if any(r is None or r >= facts.memory_bytes for r in room):
        return None
    return QueueReason(code="gpu_memory", message=(
        f"it needs about {(facts.memory_bytes + reserve_bytes) / GIB:.1f} GiB of GPU memory "
        f"(its estimate plus TRAINYARD_GPU_MEMORY_RESERVE_BYTES); the most the GPU of "
        f"{_count(len(serving), 'worker')} that can run it has left, after the jobs running "
        f"on it, is {(max(room) + reserve_bytes) / GIB:.1f} GiB: it starts when jobs on those "
        f"GPUs end and free it{_backfill(facts, backfill_seconds)}"))


def _backfill(facts: QueueFacts, backfill_seconds: float | None) -> str:
    """What happens meanwhile to the jobs behind one waiting first in line for GPU memory
    (db/store/scheduling.py: SchedulingMixin._first_in_line)."""
    waited = facts.memory_wait_seconds
    if waited is None or backfill_seconds is None:
        return ""
    if waited >= backfill_seconds:
        return (f". It has waited {waited:.0f} s for memory, past "
                f"TRAINYARD_GPU_BACKFILL_SECONDS ({backfill_seconds:.0f} s): the GPUs where it "
                "fits take no job behind it until it starts")
    return (f". Jobs behind it that fit may start first for another "
            f"{backfill_seconds - waited:.0f} s (TRAINYARD_GPU_BACKFILL_SECONDS); then the GPUs "
            "where it fits take no job behind it until it starts")


def _room(worker: QueueWorker, reserve_bytes: int) -> int | None:
    """What a job claimed by `worker` now may use of its GPU (None: not a GPU worker)."""
    if worker.gpu_free_bytes is None:
        return None
    total = None if worker.gpu_total_bytes is None else worker.gpu_total_bytes - reserve_bytes
    return memory_for_next_job(worker.gpu_free_bytes - reserve_bytes, total,
                               worker.gpu_committed_bytes, worker.gpu_committed_jobs,
                               reserve_bytes)


def _gpu_held(facts: QueueFacts, serving: list[QueueWorker], reserve_bytes: int,
              backfill_seconds: float | None) -> QueueReason | None:
    """`gpu_held` when a job ahead has waited for GPU memory past the backfill limit and
    every serving worker is on a GPU where that job fits (the GPUs it holds to drain)."""
    waited = facts.held_by_seconds
    if waited is None or backfill_seconds is None or waited < backfill_seconds:
        return None
    need = facts.held_by_memory_bytes or 0
    held = [w for w in serving if w.gpu_free_bytes is not None
            and (w.gpu_total_bytes is None or w.gpu_total_bytes - reserve_bytes >= need)]
    if len(held) < len(serving):
        return None  # a CPU worker, or a GPU too small for that job, still takes jobs
    return QueueReason(code="gpu_held", message=(
        f"job {facts.held_by_job_id}, ahead of it, has waited {waited:.0f} s for "
        f"{(need + reserve_bytes) / GIB:.1f} GiB of GPU memory, past "
        f"TRAINYARD_GPU_BACKFILL_SECONDS ({backfill_seconds:.0f} s): the GPUs that could run "
        "this job take no job behind it until it starts"))


def _waiting(facts: QueueFacts, serving: list[QueueWorker]) -> QueueReason:
    """The reasons 6 to 10, for a job that some worker serves and its owner's limit allows."""
    ahead, device = facts.position - 1, facts.device
    idle = sum(w.state == "idle" for w in serving)
    stopping = sum(_stopping_for(w, facts.priority) for w in serving)
    if ahead < idle:
        where = ("it is first in line and a worker is idle" if ahead == 0 else
                 f"{_count(ahead, 'job')} {_are(ahead)} ahead of it and {idle} workers are idle")
        return QueueReason(code="next", message=(
            f"{where}: it starts as soon as a worker claims it"))
    if ahead < idle + stopping:
        return QueueReason(code="preempting", message=(
            f"{_count(stopping, 'running job')} of lower priority {_are(stopping)} being "
            "stopped (with a checkpoint) to free a worker for it; it starts when that worker "
            "is free"))
    busy = _workers_busy(len(serving), idle, device)
    if ahead == 0:
        return QueueReason(code="next", message=(
            f"it is first in line and {busy}: it starts when "
            f"{'it finishes' if len(serving) == 1 else 'the first of them finishes'}"))
    higher = facts.higher_priority_ahead
    if higher:
        return QueueReason(code="higher_priority", message=(
            f"{_count(higher, 'job')} of higher priority {_are(higher)} ahead of it "
            f"({ahead} ahead in all), and {busy}"))
    return QueueReason(code="workers_busy", message=(
        f"{busy}, and {_count(ahead, 'job')} {_are(ahead)} ahead of it"))


def queue_info(facts: QueueFacts, max_running_per_owner: int | None,
               gpu_memory_reserve_bytes: int = 0,
               gpu_backfill_seconds: float | None = None) -> QueueInfo:
    """The `queue` block of a queued job: position, reason and estimated start."""
    ahead = facts.position - 1
    serving = [w for w in facts.workers if w.state != "draining"]
    at_limit = (max_running_per_owner is not None
                and facts.owner_running >= max_running_per_owner)
    too_few = _gpus(facts, serving) if serving else None
    if not serving:
        reason, start = _no_worker(facts), None
    elif too_few is not None:
        reason, start = too_few, None
    else:
        serving = [w for w in serving if (w.gpus or 1) >= facts.gpus]
        start = estimated_start(_free_times(serving, facts.priority), ahead,
                                facts.mean_job_seconds)
        if at_limit:
            reason = _owner_limit(facts, max_running_per_owner)
            own = [t for t in facts.owner_remaining_seconds if t is not None]
            start = max(start, min(own)) if start is not None and own else None
        else:
            reason = (_gpu_memory(facts, serving, gpu_memory_reserve_bytes,
                                  gpu_backfill_seconds)
                      or _gpu_held(facts, serving, gpu_memory_reserve_bytes,
                                   gpu_backfill_seconds)
                      or _waiting(facts, serving))
    return QueueInfo(position=facts.position, jobs_ahead=ahead, reason=reason,
                     estimated_start_seconds=None if start is None else max(0.0, start))
