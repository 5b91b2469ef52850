"""Workers: who is consuming which queue (the presence beat), what each is doing (idle, busy,
draining), for the health report, the scheduler and GET /workers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.orm import Session

from db.store.records import WorkerRecord
from db.store.scheduling import device_class_of, gpu_ids_of
from db.tables import Job, Worker, utcnow


class WorkersMixin:
    """One row per worker process, renewed while its consumer runs."""

    def record_worker_seen(self, name: str, hostname: str, pid: int, queues: Sequence[str],
                           starting: bool = False, gpu_name: str | None = None,
                           gpu_memory_bytes: int | None = None,
                           torch_version: str | None = None, gpus: int | None = None,
                           gpu_free_bytes: int | None = None,
                           gpu_ids: Sequence[str] = ()) -> bool:
        """A worker's presence beat: insert its row or renew `seen_at` (one upsert). With
        `starting` (a process's first beat) the row starts over as idle, not draining, and
        takes the process's hardware description. Returns whether an admin has asked this
        worker to drain (POST /workers/{name}/drain): the beat is how the process learns it.
        `gpus` and `gpu_free_bytes` are renewed at every beat (free memory changes as the
        GPU's other jobs come and go); `gpu_ids` (its GPUs' UUIDs) with the description."""
        now = utcnow()
        described = {"device_class": device_class_of(queues), "gpu_name": gpu_name,
                     "gpu_memory_bytes": gpu_memory_bytes, "torch_version": torch_version,
                     "gpu_ids": ",".join(gpu_ids) or None}
        stmt = self._dialect_insert(Worker.__table__).values(
            name=name, hostname=hostname, pid=pid, queues=",".join(queues), started_at=now,
            seen_at=now, stopped_at=None, state="idle", jobs_done=0, infra_failures=0,
            **described)
        stmt = stmt.values(gpus=gpus, gpu_free_bytes=gpu_free_bytes)
        renewed = {"seen_at": now, "stopped_at": None, "pid": pid,
                   "queues": stmt.excluded.queues, "gpus": gpus,
                   "gpu_free_bytes": gpu_free_bytes}
        if starting:
            renewed.update(hostname=hostname, state="idle", job_id=None,
                           drain_requested_at=None, **described)
        stmt = stmt.on_conflict_do_update(index_elements=[Worker.__table__.c.name],
                                          set_=renewed).returning(Worker.drain_requested_at)
        with self._session() as s:
            return s.scalar(stmt) is not None

    def _release_worker(self, s: Session, job_id: int, lost: bool = False) -> None:
        """In session `s`, where an attempt of `job_id` ends: the worker that held it is idle
        again (a draining one stays draining) with one more job done, and one more
        infrastructure failure if it was `lost`."""
        s.execute(
            update(Worker).where(Worker.job_id == job_id).values(
                state=case((Worker.state == "draining", "draining"), else_="idle"),
                job_id=None, jobs_done=Worker.jobs_done + 1,
                infra_failures=Worker.infra_failures + (1 if lost else 0)))

    def idle_workers_by_queue(self, alive_seconds: float) -> dict[str, int]:
        """{queue: live idle workers serving it}: seen within `alive_seconds`, not stopped,
        idle (not busy, not draining). The reconciler re-sends a wake-up only where a worker
        sits idle, so a backlog behind busy workers never grows the broker."""
        cutoff = utcnow() - dt.timedelta(seconds=alive_seconds)
        with self._session() as s:
            served = s.scalars(select(Worker.queues).where(
                Worker.seen_at >= cutoff, Worker.stopped_at.is_(None),
                Worker.state == "idle")).all()
        idle: dict[str, int] = {}
        for queues in served:
            for queue in filter(None, queues.split(",")):
                idle[queue] = idle.get(queue, 0) + 1
        return idle

    def list_workers(self, lease_seconds: float) -> list[WorkerRecord]:
        """Every worker that has not stopped cleanly, by name, for GET /workers. One not seen
        for `lease_seconds` (killed, hung, cut off) is `lost`; the others are as stored."""
        now = utcnow()
        with self._session() as s:
            rows = s.execute(self._workers_query().order_by(Worker.name)).all()
            return [_worker_record(worker, owner, now, lease_seconds) for worker, owner in rows]

    def get_worker(self, name: str, lease_seconds: float) -> WorkerRecord | None:
        """One worker as `list_workers` shows it; None if unknown or stopped cleanly."""
        now = utcnow()
        with self._session() as s:
            row = s.execute(self._workers_query().where(Worker.name == name)).first()
            return _worker_record(row[0], row[1], now, lease_seconds) if row else None

    @staticmethod
    def _workers_query():
        # With the owner of the job each one runs: the API shows the job only to its owner.
        return (select(Worker, Job.owner).outerjoin(Job, Job.id == Worker.job_id)
                .where(Worker.stopped_at.is_(None)))

    def request_worker_drain(self, name: str, lease_seconds: float) -> WorkerRecord | None:
        """An admin's drain: the worker is `draining` (its process learns it at its next
        presence beat, gives its job back at the next step and takes no new one) until a
        process of this name starts again. Asking twice keeps the first request's time.
        None if the worker is unknown or stopped cleanly."""
        with self._session() as s:
            drained = s.execute(
                update(Worker).where(Worker.name == name, Worker.stopped_at.is_(None))
                .values(state="draining",
                        drain_requested_at=func.coalesce(Worker.drain_requested_at, utcnow()))
            ).rowcount
        return self.get_worker(name, lease_seconds) if drained else None

    def record_worker_stopped(self, name: str) -> None:
        with self._session() as s:
            s.execute(update(Worker).where(Worker.name == name).values(stopped_at=utcnow()))

    def prune_workers(self, older_than_seconds: float) -> int:
        """Forget workers not seen for `older_than_seconds` (dead or stopped long ago)."""
        cutoff = utcnow() - dt.timedelta(seconds=older_than_seconds)
        with self._session() as s:
            return s.execute(delete(Worker).where(Worker.seen_at < cutoff)).rowcount or 0

    def queue_health(self, alive_seconds: float) -> dict[str, dict[str, int]]:
        """For each queue that has queued jobs or live workers: {"queued": jobs waiting,
        "workers": workers seen within `alive_seconds`, not stopped and not draining, that
        serve it}."""
        cutoff = utcnow() - dt.timedelta(seconds=alive_seconds)
        with self._session() as s:
            queued = dict(s.execute(
                select(Job.device, func.count()).where(Job.status == "queued")
                .group_by(Job.device)).all())
            # A draining worker takes no job: it serves nothing any more.
            served = s.scalars(select(Worker.queues).where(
                Worker.seen_at >= cutoff, Worker.stopped_at.is_(None),
                Worker.state != "draining")).all()
        health = {queue: {"queued": int(n), "workers": 0} for queue, n in queued.items()}
        for queues in served:
            for queue in filter(None, queues.split(",")):
                health.setdefault(queue, {"queued": 0, "workers": 0})["workers"] += 1
        return health


def worker_state(state: str, seen_at: dt.datetime, now: dt.datetime,
                 lease_seconds: float) -> str:
    """A worker's state as shown: as stored (idle, busy, draining), or `lost` when it has not
    been seen for `lease_seconds`."""
    return "lost" if (now - seen_at).total_seconds() > lease_seconds else state


def _worker_record(worker: Worker, job_owner: str | None, now: dt.datetime,
                   lease_seconds: float) -> WorkerRecord:
    """The record of a `workers` row read at `now`: `lost` past the lease."""
    seen_ago = max(0.0, (now - worker.seen_at).total_seconds())
    return WorkerRecord(
        name=worker.name, hostname=worker.hostname, pid=worker.pid,
        queues=tuple(filter(None, worker.queues.split(","))),
        device_class=worker.device_class, gpu_name=worker.gpu_name,
        gpu_memory_bytes=worker.gpu_memory_bytes, torch_version=worker.torch_version,
        state=worker_state(worker.state, worker.seen_at, now, lease_seconds),
        job_id=worker.job_id, job_owner=job_owner if worker.job_id is not None else None,
        started_at=worker.started_at, seen_at=worker.seen_at, seen_seconds_ago=seen_ago,
        jobs_done=worker.jobs_done, infra_failures=worker.infra_failures,
        drain_requested_at=worker.drain_requested_at, gpus=worker.gpus,
        gpu_free_bytes=worker.gpu_free_bytes,
        gpu_ids=gpu_ids_of(worker.gpu_ids))
