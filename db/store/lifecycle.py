"""Data lifecycle: deleting finished jobs with everything they left, alone or by filter, the
retention pass, what each user stores (GET /usage), and giving SQLite's freed pages back.

What a deletion removes: the `jobs` row and every row of every table of the live schema that
has a `job_id` column (metrics, rollups, summaries, texts, checkpoints, confusion matrices,
attempts, logs, and whatever later tables carry one), by explicit DELETEs in one
transaction per batch, children first, rather than trusting ON DELETE CASCADE alone (a
table added later may have no foreign key; explicit statements use each table's job_id
index). `workers.job_id` names what a worker runs: it is cleared, not deleted.

What is refused (`Refusal`, 409 for one job; skipped and reported by a bulk delete):
- a queued or running job: cancel it first;
- the parent of a fork that stays (`jobs.parent_job_id`): the fork starts from, and its
  curves continue, the parent's checkpoint. Delete the forks first, or together: a bulk
  delete runs newest first, so forks go before their parents in the same request;
- a trial of a sweep that is still running: the sweep's decisions read its trials.
A finished sweep's trials may go; the sweep row stays, with fewer trials.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import MetaData, column, delete, func, select, table, update
from sqlalchemy.orm import Session, aliased

from core.states import ACTIVE, FINISHED
from db.store.errors import NotFound
from db.tables import Checkpoint, Dataset, Job, JobLog, MetricRollupCoarse, Sweep, utcnow

log = logging.getLogger("trainyard.lifecycle")

# Jobs per transaction of a bulk delete, and a soft cap on their metric points: a batch
# stops growing past either, so no transaction holds locks for long (one job of a million
# points is still one transaction: a job is deleted whole or not at all).
BATCH_JOBS = 50
BATCH_POINTS = 500_000
# Ids per IN (...) list of the reads.
IN_CHUNK = 500
# Tables whose job_id says what a row points at, not whose it is: cleared, not deleted.
DETACH_TABLES = frozenset({"workers"})
# A SQLite file without auto_vacuum is converted (one VACUUM) at migrate when it is at most
# this big; a bigger one is left as it is, with a logged hint (VACUUM rewrites the whole file
# with every process waiting).
AUTO_VACUUM_CONVERT_MAX_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Refusal:
    job_id: int
    reason: str


class DeleteRefused(Exception):
    """The job exists but may not be deleted now; `reason` says why and what to do."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


@dataclass
class DeleteReport:
    matched: int = 0
    deleted: int = 0
    deleted_ids: list[int] = field(default_factory=list)
    skipped: list[Refusal] = field(default_factory=list)
    seconds: float = 0.0


def _chunks(ids: Sequence[int], size: int = IN_CHUNK) -> Iterable[list[int]]:
    for i in range(0, len(ids), size):
        yield list(ids[i:i + size])


class LifecycleMixin:
    """Deletion, retention, usage, space reclaim."""

    _job_tables_cache: list[tuple[str, bool]] | None = None

    # ---- the schema ----

    def _job_tables(self) -> list[tuple[str, bool]]:
        """(table, detach) for every table of the live schema with a `job_id` column except
        `jobs`, children before parents. Read once per Store (the schema changes only by
        migrations, at start)."""
        if self._job_tables_cache is None:
            meta = MetaData()
            meta.reflect(bind=self.engine)
            found = [t.name for t in reversed(meta.sorted_tables)
                     if "job_id" in t.c and t.name != "jobs"]
            self._job_tables_cache = [(name, name in DETACH_TABLES) for name in found]
        return self._job_tables_cache

    # ---- what may go ----

    def _plan(self, s: Session, ids: Sequence[int], gone: set[int] | None = None
              ) -> tuple[list[int], list[Refusal]]:
        """Which of `ids` may be deleted now, newest first, and why the others may not.
        `gone`: jobs deleted already (or about to be) whose forks no longer hold a parent."""
        ordered = sorted(set(ids), reverse=True)
        status: dict[int, tuple[str, int | None, str | None]] = {}
        forks: dict[int, list[int]] = {}
        for chunk in _chunks(ordered):
            rows = s.execute(
                select(Job.id, Job.status, Job.sweep_id, Sweep.status)
                .outerjoin(Sweep, Sweep.id == Job.sweep_id).where(Job.id.in_(chunk)))
            for job_id, st, sweep_id, sweep_status in rows:
                status[job_id] = (st, sweep_id, sweep_status)
            for parent, child in s.execute(select(Job.parent_job_id, Job.id)
                                           .where(Job.parent_job_id.in_(chunk))):
                forks.setdefault(parent, []).append(child)
        ok: list[int] = []
        skipped: list[Refusal] = []
        deleting = set(gone or ())
        for job_id in ordered:
            if job_id not in status:
                continue  # deleted meanwhile: nothing to do
            st, sweep_id, sweep_status = status[job_id]
            staying = sorted(c for c in forks.get(job_id, ()) if c not in deleting)
            if st in ACTIVE:
                reason = f"job {job_id} is {st}; cancel it first (POST /jobs/{job_id}/cancel)"
            elif staying:
                named = ", ".join(str(c) for c in staying[:10])
                reason = (f"job {job_id} is the parent of fork(s) {named}, which start from its "
                          "checkpoint; delete the forks first (or with it)")
            elif sweep_id is not None and sweep_status == "running":
                reason = (f"job {job_id} is a trial of sweep {sweep_id}, which is still "
                          "running; cancel the sweep or wait for it to end")
            else:
                ok.append(job_id)
                deleting.add(job_id)
                continue
            skipped.append(Refusal(job_id, reason))
        return ok, skipped

    def _lock_jobs(self, s: Session, ids: Sequence[int], skip_locked: bool = False
                   ) -> list[int]:
        """Lock the rows before reading what decides, so no fork of them, status change or
        second deleter slips in before the commit. Postgres: row locks, in id order (two
        deleters cannot deadlock). SQLite: a no-op write takes the one write lock first
        (waiting its turn), so the reads after it cannot go stale. Returns the ids held
        (`skip_locked`: those another deleter holds are left out, to the next pass)."""
        if not ids:
            return []
        if self.dialect == "postgresql":
            return list(s.scalars(select(Job.id).where(Job.id.in_(list(ids))).order_by(Job.id)
                                  .with_for_update(skip_locked=skip_locked)))
        if self.dialect == "sqlite":
            s.execute(update(Job).where(Job.id.in_(list(ids)))
                      .values(updated_at=Job.updated_at))
        return list(ids)

    def _delete_rows(self, s: Session, ids: Sequence[int]) -> int:
        """Delete `ids` (finished) and every row that refers to them; the jobs deleted."""
        ids = list(ids)
        for name, detach in self._job_tables():
            t = table(name, column("job_id"))
            if detach:
                s.execute(update(t).where(t.c.job_id.in_(ids)).values(job_id=None))
            else:
                s.execute(delete(t).where(t.c.job_id.in_(ids)))
        result = s.execute(delete(Job).where(Job.id.in_(ids), Job.status.in_(list(FINISHED))))
        return result.rowcount or 0

    # ---- one job ----

    def delete_job(self, job_id: int, owner: str | None = None) -> DeleteReport:
        """Delete a finished job and everything it left, in one transaction. `owner`: only
        that user's job (None: anyone's). NotFound for a job that does not exist (or is
        another's); DeleteRefused for one that may not go now (see the module)."""
        started = time.perf_counter()
        self._job_tables()  # read the schema before taking any lock
        with self._session() as s:
            self._lock_jobs(s, [job_id])
            found = s.scalar(select(Job.owner).where(Job.id == job_id))
            if found is None or (owner is not None and found != owner):
                raise NotFound(f"job {job_id} does not exist")
            ok, skipped = self._plan(s, [job_id])
            if skipped:
                raise DeleteRefused(skipped[0])
            deleted = self._delete_rows(s, ok)
        self.reclaim_space()
        report = DeleteReport(matched=1, deleted=deleted, deleted_ids=ok if deleted else [],
                              seconds=time.perf_counter() - started)
        log.info("job %s deleted (%.2f s)", job_id, report.seconds)
        return report

    # ---- many jobs ----

    def match_jobs(self, *, owner: str | None = None, statuses: Sequence[str] | None = None,
                   model: str | None = None, older_than: dt.datetime | None = None,
                   sweep_id: int | None = None, limit: int | None = None,
                   deletable_only: bool = False) -> list[int]:
        """Ids of the finished jobs matching every filter, newest first. `older_than`: the
        job finished (or, never started, was created) before it. `deletable_only`: leave out
        parents of forks and trials of running sweeps (the retention pass, so a limited page
        is never filled by jobs it would skip every time)."""
        wanted = [str(x) for x in (statuses or FINISHED) if x in FINISHED]
        where: list[Any] = [Job.status.in_(wanted)]
        if owner is not None:
            where.append(Job.owner == owner)
        if model is not None:
            where.append(Job.model == model)
        if sweep_id is not None:
            where.append(Job.sweep_id == sweep_id)
        if older_than is not None:
            where.append(func.coalesce(Job.finished_at, Job.created_at) < older_than)
        if deletable_only:
            child = aliased(Job)
            where.append(~select(child.id).where(child.parent_job_id == Job.id).exists())
            where.append(~select(Sweep.id).where(Sweep.id == Job.sweep_id,
                                                 Sweep.status == "running").exists())
        stmt = select(Job.id).where(*where).order_by(Job.id.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._session() as s:
            return list(s.scalars(stmt))

    def plan_deletion(self, ids: Sequence[int]) -> tuple[list[int], list[Refusal]]:
        """What delete_jobs(ids) would delete and skip, deleting nothing (a dry run)."""
        with self._session() as s:
            return self._plan(s, ids)

    def delete_jobs(self, ids: Sequence[int], *, batch_jobs: int = BATCH_JOBS,
                    batch_points: int = BATCH_POINTS, reclaim: bool = True) -> DeleteReport:
        """Delete these jobs in bounded batches (each its own short transaction: at most
        `batch_jobs` jobs and, past the first job, about `batch_points` metric points),
        newest first, skipping (and reporting) those that may not go."""
        started = time.perf_counter()
        self._job_tables()  # read the schema before taking any lock
        report = DeleteReport(matched=len(set(ids)))
        with self._session() as s:
            ok, skipped = self._plan(s, ids)
        report.skipped.extend(skipped)
        points = self.metric_points_of(ok)
        gone: set[int] = set()
        for batch in self._batches(ok, points, batch_jobs, batch_points):
            with self._session() as s:
                held = self._lock_jobs(s, batch, skip_locked=True)
                # Again under the lock: a status, fork or sweep may have changed since.
                # Forks are newer than their parents: in this batch they come first.
                now_ok, now_skipped = self._plan(s, held, gone)
                report.skipped.extend(Refusal(i, f"job {i} is being deleted by another request")
                                      for i in batch if i not in set(held))
                report.skipped.extend(now_skipped)
                if now_ok:
                    report.deleted += self._delete_rows(s, now_ok)
            gone.update(now_ok)
            report.deleted_ids.extend(now_ok)
        if reclaim and report.deleted:
            self.reclaim_space()
        report.seconds = time.perf_counter() - started
        return report

    @staticmethod
    def _batches(ids: Sequence[int], points: dict[int, int], batch_jobs: int,
                 batch_points: int) -> Iterable[list[int]]:
        batch: list[int] = []
        held = 0
        for job_id in ids:
            n = points.get(job_id, 0)
            if batch and (len(batch) >= batch_jobs or held + n > batch_points):
                yield batch
                batch, held = [], 0
            batch.append(job_id)
            held += n
        if batch:
            yield batch

    def metric_points_of(self, ids: Sequence[int]) -> dict[int, int]:
        """Metric points per job, from the coarse rollups (128 times fewer rows than points;
        they count points with a finite value, so a NaN point is not counted)."""
        out: dict[int, int] = {}
        with self._session() as s:
            for chunk in _chunks(list(ids)):
                rows = s.execute(select(MetricRollupCoarse.job_id, func.sum(MetricRollupCoarse.n))
                                 .where(MetricRollupCoarse.job_id.in_(chunk))
                                 .group_by(MetricRollupCoarse.job_id))
                out.update({j: int(n or 0) for j, n in rows})
        return out

    # ---- retention ----

    def apply_retention(self, days_by_status: dict[str, float | None], limit: int
                        ) -> DeleteReport:
        """Delete up to `limit` finished jobs per status older than its days (finished that
        long ago); a status with None or 0 days is kept forever."""
        ids: list[int] = []
        now = utcnow()
        for status, days in sorted(days_by_status.items()):
            if days and days > 0 and status in FINISHED:
                ids += self.match_jobs(statuses=[status], limit=limit, deletable_only=True,
                                       older_than=now - dt.timedelta(days=days))
        if not ids:
            return DeleteReport()
        return self.delete_jobs(ids)

    # ---- usage ----

    def usage(self, owner: str | None = None) -> dict[str, dict[str, Any]]:
        """Per owner: jobs by status, metric points, checkpoints (count, bytes), dataset
        bytes, log lines. One grouped query per table, each on an index or a small table;
        metric points from the coarse rollups (see metric_points_of). A named `owner` has a
        row even when they store nothing."""
        users: dict[str, dict[str, Any]] = {}

        def row(who: str) -> dict[str, Any]:
            return users.setdefault(who, {
                "owner": who, "jobs": {}, "jobs_total": 0, "metric_points": 0,
                "checkpoints": 0, "checkpoint_bytes": 0, "datasets": 0, "dataset_bytes": 0,
                "log_lines": 0})

        def mine(stmt: Any, col: Any) -> Any:
            return stmt if owner is None else stmt.where(col == owner)

        with self._session() as s:
            for who, st, n in s.execute(mine(select(Job.owner, Job.status, func.count()),
                                             Job.owner).group_by(Job.owner, Job.status)):
                r = row(who)
                r["jobs"][st] = int(n)
                r["jobs_total"] += int(n)
            for who, n in s.execute(mine(
                    select(Job.owner, func.sum(MetricRollupCoarse.n))
                    .join(MetricRollupCoarse, MetricRollupCoarse.job_id == Job.id),
                    Job.owner).group_by(Job.owner)):
                row(who)["metric_points"] = int(n or 0)
            for who, n, size in s.execute(mine(
                    select(Job.owner, func.count(), func.sum(Checkpoint.size))
                    .join(Checkpoint, Checkpoint.job_id == Job.id),
                    Job.owner).group_by(Job.owner)):
                r = row(who)
                r["checkpoints"], r["checkpoint_bytes"] = int(n), int(size or 0)
            for who, n, size in s.execute(mine(
                    select(Dataset.owner, func.count(), func.sum(Dataset.size)),
                    Dataset.owner).group_by(Dataset.owner)):
                r = row(who)
                r["datasets"], r["dataset_bytes"] = int(n), int(size or 0)
            for who, n in s.execute(mine(
                    select(Job.owner, func.count()).join(JobLog, JobLog.job_id == Job.id),
                    Job.owner).group_by(Job.owner)):
                row(who)["log_lines"] = int(n)
        if owner is not None:
            row(owner)
        return dict(sorted(users.items()))

    # ---- space ----

    def reclaim_space(self, pages: int | None = None) -> int:
        """SQLite: give free pages back to the file system (`PRAGMA incremental_vacuum`, a
        no-op unless the file has auto_vacuum = INCREMENTAL); the pages freed. Postgres:
        nothing to do (autovacuum makes deleted rows' space reusable)."""
        if self.dialect != "sqlite":
            return 0
        try:
            raw = self.engine.raw_connection()
            try:
                cursor = raw.cursor()
                before = cursor.execute("PRAGMA freelist_count").fetchone()[0]
                arg = f"({int(pages)})" if pages else ""
                # Each step of the statement frees one page, and the sqlite3 module's
                # execute() steps once: executescript() steps to the end.
                raw.commit()
                raw.driver_connection.executescript(f"PRAGMA incremental_vacuum{arg};")
                after = cursor.execute("PRAGMA freelist_count").fetchone()[0]
            finally:
                raw.close()
        except Exception:  # noqa: BLE001 - the deletion stands; the space comes back later
            log.warning("incremental vacuum failed", exc_info=True)
            return 0
        return max(0, before - after)

    def sqlite_space(self) -> dict[str, int]:
        """SQLite: page_size, page_count, freelist_count, auto_vacuum (0 none, 1 full,
        2 incremental); {} on Postgres."""
        if self.dialect != "sqlite":
            return {}
        with self.engine.connect() as conn:
            return {p: int(conn.exec_driver_sql(f"PRAGMA {p}").scalar() or 0)
                    for p in ("page_size", "page_count", "freelist_count", "auto_vacuum")}

    def migrate(self) -> None:
        """StoreBase.migrate, then (SQLite) make sure the file reclaims space: a new file got
        auto_vacuum = INCREMENTAL on its first connection (db/session.py); an older file is
        converted with one VACUUM when it is small, else a warning says how."""
        super().migrate()  # type: ignore[misc]
        if self.dialect != "sqlite" or str(self.url.database or "") in ("", ":memory:"):
            return
        space = self.sqlite_space()
        if space.get("auto_vacuum") == 2:
            return
        size = space["page_size"] * space["page_count"]
        if size > AUTO_VACUUM_CONVERT_MAX_BYTES:
            log.warning("the SQLite file (%s MiB) does not give deleted space back; stop the "
                        "service and run: sqlite3 FILE 'PRAGMA auto_vacuum = INCREMENTAL; "
                        "VACUUM;'", size // 2**20)
            return
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA auto_vacuum = INCREMENTAL")
                conn.exec_driver_sql("VACUUM")
        except Exception:  # noqa: BLE001 - another process holds the file: it converts later
            log.warning("could not convert the SQLite file to incremental vacuum", exc_info=True)
