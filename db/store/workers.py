"""Worker presence: who is consuming which queue, for the health report."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import delete, func, select, update

from db.tables import Job, Worker, utcnow


class WorkersMixin:
    """One row per worker process, renewed while its consumer runs."""

    def record_worker_seen(self, name: str, hostname: str, pid: int, queues: Sequence[str]
                           ) -> None:
        """A worker's presence beat: insert its row or renew `seen_at` (one upsert)."""
        now = utcnow()
        stmt = self._dialect_insert(Worker.__table__).values(
            name=name, hostname=hostname, pid=pid, queues=",".join(queues), started_at=now,
            seen_at=now, stopped_at=None)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Worker.__table__.c.name],
            set_={"seen_at": now, "stopped_at": None, "pid": pid,
                  "queues": stmt.excluded.queues})
        with self._session() as s:
            s.execute(stmt)

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
        "workers": workers seen within `alive_seconds` and not stopped that serve it}."""
        cutoff = utcnow() - dt.timedelta(seconds=alive_seconds)
        with self._session() as s:
            queued = dict(s.execute(
                select(Job.device, func.count()).where(Job.status == "queued")
                .group_by(Job.device)).all())
            served = s.scalars(select(Worker.queues).where(
                Worker.seen_at >= cutoff, Worker.stopped_at.is_(None))).all()
        health = {queue: {"queued": int(n), "workers": 0} for queue, n in queued.items()}
        for queues in served:
            for queue in filter(None, queues.split(",")):
                health.setdefault(queue, {"queued": 0, "workers": 0})["workers"] += 1
        return health
