"""Jobs: submission (with the owner's queue cap), the guarded state transitions, claiming,
progress, recovery of lost and unsent jobs, attempts, and the job lists.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.metrics import finite_or_none
from core.states import FINISHED, JobStatus
from db.store.base import json_safe
from db.store.errors import Conflict, InvalidTransition, NotFound, QuotaExceeded
from db.store.records import JobRecord, record_of
from db.tables import LOCAL_OWNER, Job, JobAttempt, utcnow

# First half of the two-int Postgres advisory lock held while a job is counted against its
# owner's queue cap and inserted (the second half: hashtext(owner)). The two-int keys are a
# space apart from the one-bigint keys, so it never meets MIGRATION_LOCK_KEY.
QUEUE_CAP_LOCK_CLASS = 0x7479_6A62  # "tyjb"


def _job_filters(status: str | Sequence[str] | None, model: str | None,
                 owner: str | None, sweep_id: int | None = None) -> list[Any]:
    """WHERE terms of the job lists: status (one or several), model, owner, sweep (its
    trials); None: any."""
    filters = [] if owner is None else [Job.owner == owner]
    if sweep_id is not None:
        filters.append(Job.sweep_id == sweep_id)
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        filters.append(Job.status.in_(statuses))
    if model is not None:
        filters.append(Job.model == model)
    return filters



class JobsMixin:
    """Job rows and their attempts. Every transition is one conditional UPDATE guarded by the
    current status, so two workers racing for the same job cannot both win."""

    def create_job(
        self,
        model: str,
        dataset: str,
        hyperparameters: Mapping[str, Any],
        device: str = "auto",
        name: str | None = None,
        idempotency_key: str | None = None,
        owner: str = LOCAL_OWNER,
        max_queued: int | None = None,
        priority: int = 0,
        **extra: Any,
    ) -> JobRecord:
        """Insert a queued job (attempts 0); unnamed jobs are called `<model>-<dataset>-<id>`.

        `enqueued_at` is set to now: the caller sends it to the broker next. A second job
        of the same owner with the same `idempotency_key` raises Conflict (see
        `create_job_once`). With `max_queued`, QuotaExceeded when the owner already has that
        many queued jobs: counted and inserted as one step, so concurrent calls never
        overshoot it (see `_insert_job`). `extra`: further columns of the row (a fork's
        `parent_*`, `resume_optimizer`).
        """
        try:
            job, _ = self._insert_job(model, dataset, hyperparameters, device, name,
                                      idempotency_key, utcnow(), owner, max_queued,
                                      priority=priority, **extra)
            return job
        except IntegrityError as exc:
            if idempotency_key is not None:
                raise Conflict(f"a job with idempotency key {idempotency_key!r} exists") from exc
            raise

    def create_job_once(
        self, idempotency_key: str, model: str, dataset: str,
        hyperparameters: Mapping[str, Any], device: str = "auto", name: str | None = None,
        owner: str = LOCAL_OWNER, max_queued: int | None = None, priority: int = 0,
        **extra: Any,
    ) -> tuple[JobRecord, bool]:
        """The owner's job created with `idempotency_key`, creating it if none is:
        (job, created). A retry is answered with its job even when the queue cap
        (`max_queued`, as in create_job) is reached meanwhile.

        Concurrent callers with the same key race on the unique constraint; the losers'
        INSERT fails and they read the winner's job. (With `max_queued` they do not even
        race: the owner's lock orders them, and the later ones find the key taken.)
        """
        existing = self.get_job_by_idempotency_key(idempotency_key, owner)
        if existing is not None:
            return existing, False
        try:
            return self._insert_job(model, dataset, hyperparameters, device, name,
                                    idempotency_key, utcnow(), owner, max_queued,
                                    reuse_key=True, priority=priority, **extra)
        except IntegrityError as exc:
            existing = self.get_job_by_idempotency_key(idempotency_key, owner)
            if existing is None:  # pragma: no cover - the winner's row was deleted meanwhile
                raise Conflict(f"a job with idempotency key {idempotency_key!r} exists") from exc
            return existing, False

    def get_job_by_idempotency_key(self, key: str, owner: str = LOCAL_OWNER) -> JobRecord | None:
        with self._session() as s:
            job = s.scalar(select(Job).where(Job.owner == owner, Job.idempotency_key == key))
            return record_of(JobRecord, job) if job is not None else None

    def _lock_owner_queue(self, session: Session, owner: str) -> None:
        """Hold off, until this transaction ends, every other transaction that takes the same
        lock for `owner`: what it counts then cannot change before it inserts. Postgres: a
        transaction-scoped advisory lock on (QUEUE_CAP_LOCK_CLASS, hashtext(owner)), so other
        owners are not held up (a hash collision only makes two owners take turns). SQLite:
        the database's write lock, taken before anything is read (BEGIN IMMEDIATE, waiting
        for the busy timeout): SQLite has one writer anyway, and pysqlite would otherwise read
        outside a transaction and begin one only at the INSERT."""
        if self.dialect == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(CAST(:cls AS integer), "
                                 "hashtext(:owner))"), {"cls": QUEUE_CAP_LOCK_CLASS,
                                                         "owner": owner})
        elif self.dialect == "sqlite":
            session.connection().exec_driver_sql("BEGIN IMMEDIATE")

    def _insert_job(self, model, dataset, hyperparameters, device, name, idempotency_key,
                    now, owner, max_queued=None, reuse_key=False,
                    priority: int = 0, **extra: Any) -> tuple[JobRecord, bool]:
        """(job, created). With `max_queued`, one transaction locks the owner's queue
        (`_lock_owner_queue`), counts its queued jobs (QuotaExceeded at the cap) and inserts.
        With `reuse_key` too, the owner's job already made with `idempotency_key` is returned
        (created False) before anything is counted: a retry is not a new job."""
        with self._session() as s:
            if max_queued is not None:
                self._lock_owner_queue(s, owner)
                if reuse_key and idempotency_key is not None:
                    existing = s.scalar(select(Job).where(
                        Job.owner == owner, Job.idempotency_key == idempotency_key))
                    if existing is not None:
                        return record_of(JobRecord, existing), False
                queued = self._count_jobs(s, owner, ["queued"])
                if queued >= max_queued:
                    raise QuotaExceeded(owner, queued, max_queued)
            job = Job(
                name=name or "",
                model=model,
                dataset=dataset,
                hyperparameters=json_safe(dict(hyperparameters)),
                device=device,
                status="queued",
                attempts=0,
                epoch=0,
                step=0,
                created_at=now,
                updated_at=now,
                enqueued_at=now,
                infra_failures=0,
                idempotency_key=idempotency_key,
                owner=owner,
                priority=priority,
                **extra,
            )
            s.add(job)
            s.flush()
            if not name:
                job.name = f"{model}-{dataset}-{job.id}"
            return record_of(JobRecord, job), True

    def get_job(self, job_id: int) -> JobRecord | None:
        with self._session() as s:
            job = s.get(Job, job_id)
            return record_of(JobRecord, job) if job is not None else None

    def get_status(self, job_id: int) -> str | None:
        with self._session() as s:
            return s.scalar(select(Job.status).where(Job.id == job_id))

    def list_jobs(
        self,
        status: str | Sequence[str] | None = None,
        model: str | None = None,
        limit: int = 50,
        offset: int = 0,
        owner: str | None = None,
        sweep_id: int | None = None,
    ) -> tuple[list[JobRecord], int]:
        """One page of jobs, newest first, and the total number matching the filters
        (`owner`: only that user's jobs; None: everyone's)."""
        filters = _job_filters(status, model, owner, sweep_id)
        with self._session() as s:
            total = s.scalar(select(func.count()).select_from(Job).where(*filters)) or 0
            page = s.scalars(
                select(Job)
                .where(*filters)
                .order_by(Job.id.desc())
                .limit(max(limit, 0))
                .offset(max(offset, 0))
            ).all()
            return [record_of(JobRecord, job) for job in page], total

    @staticmethod
    def _count_jobs(session: Session, owner: str, statuses: Sequence[str]) -> int:
        stmt = select(func.count()).select_from(Job).where(
            Job.owner == owner, Job.status.in_(list(statuses))
        )
        return session.scalar(stmt) or 0

    def _transition(
        self,
        job_id: int,
        from_statuses: Sequence[str],
        values: dict[str, Any],
        where: Sequence[Any] = (),
        attempt: int | None = None,
        close_attempt: str | None = None,
    ) -> JobRecord | None:
        """Apply `values` only if the job's status is one of `from_statuses` (and `where`
        holds, and, given `attempt`, the job is still in that attempt); None otherwise.

        With `close_attempt`, the same transaction ends the job's current attempt row with that
        outcome (what `attempts` counted before this update).
        """
        values = {**values, "updated_at": utcnow()}
        guards = [Job.id == job_id, Job.status.in_(from_statuses), *where]
        if attempt is not None:
            guards.append(Job.attempts == attempt)
        with self._session() as s:
            row = s.execute(
                update(Job).where(*guards).values(**values).returning(*Job.__table__.c)
            ).first()
            if row is None:
                return None
            if close_attempt is not None:
                s.execute(
                    update(JobAttempt)
                    .where(JobAttempt.job_id == job_id, JobAttempt.number == row.attempts,
                           JobAttempt.ended_at.is_(None))
                    .values(ended_at=values["updated_at"], outcome=close_attempt)
                )
                self._release_worker(s, job_id, lost=close_attempt == "worker_lost")
            if "status" in values:  # the event's outbox rows, same transaction
                self._queue_job_event(s, row, reason=close_attempt)
            return record_of(JobRecord, row)

    def claim_job(self, job_id: int, worker: str, device_class: str | None = None
                  ) -> JobRecord | None:
        """Atomically move this queued job to running for `worker` (attempts += 1), and record
        the attempt (its number is the new `attempts`; it resumes from the newest checkpoint's
        epoch, if any) in the same transaction. Workers claim with `claim_next_job` (the
        queue's order); this one is for a job chosen by id.

        Returns None when the job is not queued (already claimed, cancelled, unknown).
        """
        with self._session() as s:
            return self._claim_in(s, job_id, worker, device_class)

    def heartbeat(self, job_id: int, attempt: int | None = None) -> bool:
        """Record that the running job's worker is alive; False if the job is not running
        (or, given `attempt`, another attempt owns it now)."""
        return self._transition(job_id, ("running",), {"heartbeat_at": utcnow()},
                                attempt=attempt) is not None

    def update_progress(
        self,
        job_id: int,
        epoch: int,
        total_epochs: int | None,
        step: int,
        total_steps: int | None,
        eta_seconds: float | None,
        attempt: int | None = None,
    ) -> bool:
        """Store progress (also a heartbeat). False if the job is no longer running (or,
        given `attempt`, no longer in that attempt), which is how a worker learns that its job
        was cancelled or taken from it."""
        values = {
            "epoch": epoch,
            "total_epochs": total_epochs,
            "step": step,
            "total_steps": total_steps,
            "eta_seconds": finite_or_none(eta_seconds),
            "heartbeat_at": utcnow(),
        }
        return self._transition(job_id, ("running",), values, attempt=attempt) is not None

    def set_memory_bytes(self, job_id: int, memory_bytes: int, attempt: int) -> bool:
        """The running job's memory estimate, made exact once its worker loaded the data (the
        real vocabulary and dataset size): what claims on a GPU it shares count from now on.
        False if the job is no longer running in `attempt`."""
        return self._transition(job_id, ("running",), {"memory_bytes": int(memory_bytes)},
                                attempt=attempt) is not None

    def finish_job(
        self, job_id: int, status: str, error: str | None = None, attempt: int | None = None
    ) -> bool:
        """running -> succeeded | failed | cancelled | pruned, with finished_at; ends the attempt.
        False if not running (or, given `attempt`, not in that attempt any more)."""
        if status not in FINISHED:
            words = ", ".join(s for s in JobStatus if s.finished)
            raise ValueError(f"status must be one of {words}, not {status!r}")
        now = utcnow()
        values = {"status": status, "error": error, "finished_at": now, "heartbeat_at": now}
        if status == "succeeded":
            values["eta_seconds"] = 0.0
        return self._transition(job_id, ("running",), values, attempt=attempt,
                                close_attempt=status) is not None

    def requeue_job(
        self,
        job_id: int,
        error: str | None = None,
        outcome: str = "worker_lost",
        attempt: int | None = None,
    ) -> bool:
        """running -> queued (the recovery path: a worker died, or drained its job; or it was
        preempted), ending the attempt with `outcome`; a pending preemption request is cleared.
        Only `worker_lost` counts as an infrastructure failure. The caller sends the job to the
        broker again (enqueued_at is set to now), except a preempted job's worker: it goes on
        claiming from the database, and enqueued_at is cleared so that the reconciler's next
        pass wakes a worker for it at once if one sits idle. False if not running (or not in
        `attempt` any more)."""
        now = utcnow()
        values = {"status": "queued", "worker": None, "heartbeat_at": None, "error": error,
                  "enqueued_at": None if outcome == "preempted" else now,
                  "preempt_requested_at": None}
        if outcome == "worker_lost":
            values["infra_failures"] = Job.infra_failures + 1
        return self._transition(job_id, ("running",), values, attempt=attempt,
                                close_attempt=outcome) is not None

    def recover_lost_jobs(
        self, lease_seconds: float, max_infra_retries: int
    ) -> tuple[list[JobRecord], list[JobRecord]]:
        """Running jobs whose worker stopped heart-beating for `lease_seconds`: requeue each
        (an infrastructure failure, attempt outcome `worker_lost`), or, once it has been lost
        more than `max_infra_retries` times, fail it ("worker lost N times; giving up").

        Returns (requeued, failed). Each change is a guarded UPDATE (still running, same
        attempt, heartbeat still stale), so many reconcilers may run at once: one wins.
        """
        now = utcnow()
        cutoff = now - dt.timedelta(seconds=lease_seconds)
        stale = or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff)
        with self._session() as s:
            candidates = s.execute(
                select(Job.id, Job.attempts, Job.infra_failures)
                .where(Job.status == "running", stale)
                .order_by(Job.id)
            ).all()
        requeued: list[JobRecord] = []
        failed: list[JobRecord] = []
        for job_id, attempts, infra_failures in candidates:
            lost = int(infra_failures or 0) + 1
            if lost > max_infra_retries:
                values = {"status": "failed", "infra_failures": lost, "finished_at": now,
                          "error": f"worker lost {lost} times; giving up"}
            else:
                values = {"status": "queued", "infra_failures": lost, "worker": None,
                          "heartbeat_at": None, "enqueued_at": now,
                          "error": None}
            record = self._transition(job_id, ("running",), values, where=[stale],
                                      attempt=attempts, close_attempt="worker_lost")
            if record is not None:
                (failed if record.status == "failed" else requeued).append(record)
        return requeued, failed

    def take_jobs_to_resend(self, grace_seconds: float, device: str | None = None,
                            limit: int | None = None) -> list[JobRecord]:
        """Queued jobs last sent to the broker more than `grace_seconds` ago (their message
        may be lost: a broker restarted empty), of `device` if given, at most `limit`, in the
        queue's order (priority, then age). Marks each as sent now, with a guarded UPDATE, so
        that of several reconcilers only one re-sends a job; the caller sends them."""
        now = utcnow()
        cutoff = now - dt.timedelta(seconds=grace_seconds)
        due = or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff)
        stmt = (select(Job.id).where(Job.status == "queued", due)
                .order_by(Job.priority.desc(), Job.id))
        if device is not None:
            stmt = stmt.where(Job.device == device)
        if limit is not None:
            stmt = stmt.limit(max(0, limit))
        with self._session() as s:
            ids = list(s.scalars(stmt))
        claimed = []
        for job_id in ids:
            record = self._transition(job_id, ("queued",), {"enqueued_at": now}, where=[due])
            if record is not None:
                claimed.append(record)
        return claimed

    def set_attempt_resumed_from(self, job_id: int, number: int, epoch: int | None) -> None:
        """Correct where attempt `number` resumed (the worker fell back from a bad checkpoint)."""
        with self._session() as s:
            s.execute(
                update(JobAttempt)
                .where(JobAttempt.job_id == job_id, JobAttempt.number == number)
                .values(resumed_from_epoch=epoch)
            )

    def list_attempts(self, job_id: int) -> list[dict[str, Any]]:
        """The job's attempts, oldest first: number, worker, started_at, ended_at, outcome
        (None while running) and resumed_from_epoch (None: from scratch)."""
        with self._session() as s:
            rows = s.scalars(
                select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.number)
            )
            return [
                {"number": a.number, "worker": a.worker, "started_at": a.started_at,
                 "ended_at": a.ended_at, "outcome": a.outcome,
                 "resumed_from_epoch": a.resumed_from_epoch}
                for a in rows
            ]

    def cancel_job(self, job_id: int) -> JobRecord:
        """queued | running -> cancelled. Raises NotFound or InvalidTransition(current status).

        A running job's worker notices through `update_progress`/`get_status` and stops.
        """
        record = self._transition(
            job_id, ("queued", "running"), {"status": "cancelled", "finished_at": utcnow()},
            close_attempt="cancelled",
        )
        return record or self._refuse(job_id, "only queued or running jobs can be cancelled")

    def _refuse(self, job_id: int, rule: str):
        """After a guarded transition that matched no row: NotFound when the job does not
        exist, else InvalidTransition naming its status and the `rule` it broke."""
        current = self.get_status(job_id)
        if current is None:
            raise NotFound(f"job {job_id} does not exist")
        raise InvalidTransition(current, f"job {job_id} is {current}; {rule}")

    def get_jobs(self, job_ids: Iterable[int]) -> dict[int, JobRecord]:
        """`{id: JobRecord}` for the ids that exist, in one query."""
        ids = sorted({int(i) for i in job_ids})
        if not ids:
            return {}
        with self._session() as s:
            rows = s.scalars(select(Job).where(Job.id.in_(ids)))
            return {job.id: record_of(JobRecord, job) for job in rows}

    def list_jobs_keyset(
        self,
        status: str | Sequence[str] | None = None,
        model: str | None = None,
        limit: int = 50,
        before: int | None = None,
        after: int | None = None,
        owner: str | None = None,
        sweep_id: int | None = None,
    ) -> tuple[list[JobRecord], int, int]:
        """One page of jobs, newest first, found by id (keyset) rather than by offset.

        `before=N`: the `limit` newest jobs with id < N (the next, older page);
        `after=N`: the `limit` oldest jobs with id > N, still returned newest first (the
        previous, newer page); neither: the newest page. Returns (page, total, offset):
        `total` matches the filters, `offset` is how many matching jobs are newer than the
        page's first one (its position, for "51-100 of 10,000"). Each query walks an index
        ((status, id), (model, id) or the primary key) from the page's edge, so a page deep in
        a long list costs what the first one does; only the two counts grow with the table.
        `owner`: only that user's jobs (index (owner, status, id)); None: everyone's.
        """
        filters = _job_filters(status, model, owner, sweep_id)
        limit = max(int(limit), 0)
        stmt = select(Job).where(*filters)
        if after is not None:
            stmt = stmt.where(Job.id > after).order_by(Job.id.asc())
        else:
            if before is not None:
                stmt = stmt.where(Job.id < before)
            stmt = stmt.order_by(Job.id.desc())
        with self._session() as s:
            total = s.scalar(select(func.count()).select_from(Job).where(*filters)) or 0
            page = [record_of(JobRecord, job) for job in s.scalars(stmt.limit(limit))]
            if after is not None:
                page.reverse()
            if page:
                edge = page[0].id + 1
            elif after is not None:
                edge = after + 1
            else:
                edge = before if before is not None else None
            offset = 0
            if edge is not None:
                count = select(func.count()).select_from(Job).where(*filters, Job.id >= edge)
                offset = s.scalar(count) or 0
            return page, total, offset
