"""The words for where a job is and how a run ended: one vocabulary for the database, the
API, the worker and the training core.

String enums, so a member compares equal to (and serialises as) its word: the database, the
JSON answers and old clients keep the plain strings.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """A job's state: queued -> running -> succeeded | failed | cancelled | pruned (and back to
    queued only by recovery, a drain or preemption). `pruned`: a sweep's early stopping ended
    the trial; its metrics and checkpoints stay."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PRUNED = "pruned"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PRUNED}
)
# Not finished: waiting for a worker, or on one (a tuple, so SQL's IN takes it as it is).
ACTIVE: tuple[JobStatus, ...] = (JobStatus.QUEUED, JobStatus.RUNNING)


class Outcome(StrEnum):
    """How one attempt (one worker's run of a job) ended: a finished job's status, or one of
    the ways a job goes back to the queue (its worker vanished; its worker was drained; a job
    of higher priority needed its worker)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PRUNED = "pruned"
    WORKER_LOST = "worker_lost"
    DRAINED = "drained"
    PREEMPTED = "preempted"


class FitEnd(StrEnum):
    """How the training core's fit() returned: every epoch done, or stopped at a step by its
    caller (cancel or drain; the caller knows which)."""

    COMPLETED = "completed"
    STOPPED = "stopped"


# The devices a job may ask for; each is a queue of its own, and a worker serves those its
# hardware can run: cpu and auto everywhere, cuda only where CUDA exists.
DEVICES = ("cpu", "cuda", "auto")
