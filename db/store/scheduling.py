"""Scheduling: which queued job a worker claims next, and changing a job's priority.

The database decides the order; the broker only wakes workers. A worker that is woken (or
has just finished a job) claims, in one transaction, the best queued job it can run:

1. highest `priority` first;
2. then fair share: the owner with the fewest jobs running on workers of this worker's device
   class (`cpu` or `cuda`) goes first;
3. then the oldest job (lowest id: a job queued again after a lost worker, a drain or a
   preemption keeps its place).

On PostgreSQL the chosen row is locked with FOR UPDATE SKIP LOCKED, so concurrent claimers
each take a different job without waiting for one another; on SQLite the claim holds the
database's single write lock from its first read (BEGIN IMMEDIATE). Either way the UPDATE is
still guarded by `status = 'queued'`: every job runs exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update

from db.store.errors import InvalidTransition, NotFound
from db.store.records import JobRecord, record_of
from db.tables import Checkpoint, Job, JobAttempt, Worker, utcnow

# Jobs whose priority can still change: a finished job's order means nothing.
REPRIORITIZABLE = ("queued", "running")


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
    ) -> JobRecord | None:
        """Claim the best queued job whose `device` is one of `devices` for `worker` (see the
        module's order), as `claim_job` does: running, attempts += 1, an attempt row, and the
        worker's row marked busy with it, all in one transaction. With
        `max_running_per_owner`, owners already running that many jobs (on any device) are
        passed over. None when no job is eligible."""
        devices = list(devices)
        if not devices:
            return None
        with self._session() as s:
            if self.dialect == "sqlite":
                s.connection().exec_driver_sql("BEGIN IMMEDIATE")
            in_class = (select(Job.owner, func.count().label("n"))
                        .where(Job.status == "running", Job.device_class == device_class)
                        .group_by(Job.owner).subquery("in_class"))
            share = func.coalesce(in_class.c.n, 0)
            stmt = (select(Job.id)
                    .outerjoin(in_class, in_class.c.owner == Job.owner)
                    .where(Job.status == "queued", Job.device.in_(devices)))
            if max_running_per_owner is not None:
                everywhere = (select(Job.owner, func.count().label("n"))
                              .where(Job.status == "running")
                              .group_by(Job.owner).subquery("everywhere"))
                stmt = (stmt.outerjoin(everywhere, everywhere.c.owner == Job.owner)
                        .where(func.coalesce(everywhere.c.n, 0) < max_running_per_owner))
            stmt = stmt.order_by(Job.priority.desc(), share, Job.id).limit(1)
            if self.dialect == "postgresql":
                stmt = stmt.with_for_update(of=Job, skip_locked=True)
            job_id = s.scalar(stmt)
            if job_id is None:
                return None
            return self._claim_in(s, job_id, worker, device_class)

    def _claim_in(self, s, job_id: int, worker: str, device_class: str | None
                  ) -> JobRecord | None:
        """The claim of `job_id` inside session `s` (see `claim_job`); None if not queued."""
        now = utcnow()
        row = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(status="running", worker=worker, attempts=Job.attempts + 1,
                    started_at=now, heartbeat_at=now, finished_at=None, error=None,
                    updated_at=now, device_class=device_class, preempt_requested_at=None)
            .returning(*Job.__table__.c)
        ).first()
        if row is None:
            return None
        resumed_from = s.scalar(
            select(Checkpoint.epoch)
            .where(Checkpoint.job_id == job_id)
            .order_by(Checkpoint.step.desc(), Checkpoint.id.desc())
            .limit(1)
        )
        s.add(JobAttempt(job_id=job_id, number=row.attempts, worker=worker, started_at=now,
                         resumed_from_epoch=resumed_from))
        # A draining worker stays draining: it gives this job back at its first step.
        s.execute(update(Worker).where(Worker.name == worker, Worker.state != "draining")
                  .values(state="busy", job_id=job_id))
        s.execute(update(Worker).where(Worker.name == worker, Worker.state == "draining")
                  .values(job_id=job_id))
        return record_of(JobRecord, row)

    def set_priority(self, job_id: int, priority: int) -> JobRecord:
        """Change a queued or running job's priority (a queued one moves in the order at
        once; a running one keeps running, and the new value counts for preemption and for
        its place if it goes back to the queue). Raises NotFound, or InvalidTransition when
        the job has finished."""
        record = self._transition(job_id, REPRIORITIZABLE, {"priority": int(priority)})
        if record is not None:
            return record
        current = self.get_status(job_id)
        if current is None:
            raise NotFound(f"job {job_id} does not exist")
        raise InvalidTransition(current, f"job {job_id} is {current}; only a queued or running "
                                         "job's priority can change")
