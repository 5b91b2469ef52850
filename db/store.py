"""The one gateway to SQL: every query of Trainyard lives in `Store`.

Each public method is one short unit of work in its own transaction (`session_scope`), and
returns plain frozen dataclasses or dicts, never ORM objects, so callers cannot lazy-load or
hold a session open by accident.

Job states: queued -> running -> succeeded | failed | cancelled, plus running -> queued for the
recovery path (`requeue_job`). Every transition is one conditional UPDATE guarded by the
current status (`... WHERE id = :id AND status = 'queued'`), so two workers racing for the
same job cannot both win: the database serialises the updates and only the first matches.
"""

from __future__ import annotations

import datetime as dt
import errno
import functools
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    URL,
    and_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)
from sqlalchemy.orm import Session

from db.session import make_engine, make_session_factory, normalize_url, session_scope
from db.tables import (
    DATASET_KINDS,
    JOB_STATUSES,
    LOCAL_OWNER,
    ApiKey,
    Checkpoint,
    Dataset,
    Job,
    JobAttempt,
    JobText,
    COARSE_BLOCK_STEPS,
    COARSE_ROLLUP_BLOCKS,
    ROLLUP_BLOCK_STEPS,
    Metric,
    MetricRollup,
    MetricRollupCoarse,
    WebSession,
    Worker,
    utcnow,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Postgres advisory-lock key held while migrating: any constant shared by every process.
MIGRATION_LOCK_KEY = 0x7472_6169_6E79_6172  # "trainyar" in ASCII
# First half of the two-int Postgres advisory lock held while a job is counted against its
# owner's queue cap and inserted (the second half: hashtext(owner)). The two-int keys are a
# space apart from the one-bigint keys, so it never meets MIGRATION_LOCK_KEY.
QUEUE_CAP_LOCK_CLASS = 0x7479_6A62  # "tyjb"
FINAL_STATUSES = ("succeeded", "failed", "cancelled")


class StoreError(Exception):
    """Base class of the store's own errors."""


class NotFound(StoreError, LookupError):
    """The job (or other row) does not exist."""


class InvalidTransition(StoreError):
    """The job is not in a state that allows the requested change."""

    def __init__(self, current_status: str, message: str | None = None) -> None:
        self.current_status = current_status
        super().__init__(message or f"job is {current_status}")


class Conflict(StoreError):
    """A row with the same unique key already exists."""


class QuotaExceeded(StoreError):
    """The owner already has as many queued jobs as allowed (`max_queued` of create_job)."""

    def __init__(self, owner: str, queued: int, limit: int) -> None:
        self.owner, self.queued, self.limit = owner, queued, limit
        super().__init__(f"{owner} has {queued} queued jobs; the limit is {limit}")


def is_connection_error(exc: BaseException) -> bool:
    """True for a database that is unreachable (stopped, restarting, network), as opposed to
    an error of the statement itself, which no retry would fix."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def describe_db_error(exc: BaseException) -> str | None:
    """A short, SQL-free account of a database error, for users to read (a failed job's
    error); None when `exc` is not one (nor raised `from` one). SQLAlchemy's own str() adds
    the statement and its parameters (users' data, the schema): here only the first line of
    the driver's message is kept. Our StoreErrors already speak plainly: None for them.
    Like is_connection_error, it keeps the worker from importing SQLAlchemy."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and not isinstance(current, StoreError):
        seen.add(id(current))
        if isinstance(current, StatementError):
            # The driver's error (orig), else SQLAlchemy's own message: args[0] has no SQL.
            source = current.orig if current.orig is not None else current
            message = str(source) if source is not current else str(next(iter(current.args), ""))
            lines = message.strip().splitlines() or ["no message"]
            return f"database error ({type(source).__name__}): {lines[0]}"[:500]
        current = current.__cause__
    return None


# SQLSTATE 53100 (disk_full) on PostgreSQL; SQLITE_FULL is SQLite's result code 13.
_POSTGRES_DISK_FULL, _SQLITE_FULL = "53100", 13


def is_storage_full(exc: BaseException) -> bool:
    """True when `exc` (or what it was raised from) says the disk is full: an OSError with
    ENOSPC or EDQUOT, SQLite's "database or disk is full", PostgreSQL's disk_full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(current, "sqlite_errorcode", None) == _SQLITE_FULL:
            return True
        if getattr(current, "sqlstate", None) == _POSTGRES_DISK_FULL:
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


@dataclass(frozen=True)
class Record:
    """What the store returns: an immutable snapshot of a row, never a live ORM object."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JobRecord(Record):
    id: int
    name: str
    model: str
    dataset: str
    hyperparameters: dict[str, Any]
    device: str
    status: str
    attempts: int
    error: str | None
    epoch: int
    total_epochs: int | None
    step: int
    total_steps: int | None
    eta_seconds: float | None
    worker: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    updated_at: dt.datetime | None = None
    infra_failures: int = 0
    enqueued_at: dt.datetime | None = None
    idempotency_key: str | None = None
    owner: str = LOCAL_OWNER

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True)
class CheckpointRecord(Record):
    id: int
    job_id: int
    epoch: int
    step: int
    size: int
    sha256: str
    metrics: dict[str, Any]
    created_at: dt.datetime


@dataclass(frozen=True)
class DatasetRecord(Record):
    id: int
    name: str
    kind: str
    size: int
    sha256: str
    description: str
    created_at: dt.datetime
    owner: str = LOCAL_OWNER


@dataclass(frozen=True)
class ApiKeyRecord(Record):
    id: int
    owner: str
    prefix: str
    is_admin: bool
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


def _record(cls: type, row: Any) -> Any:
    """Build a record dataclass from an ORM object or a result row with the same names."""
    return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf (invalid in JSON, rejected by Postgres JSONB) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _best_is_min(name: str) -> bool | None:
    """True: lower is better; False: higher is better; None: no notion of best."""
    lowered = name.lower()
    if "loss" in lowered or "perplexity" in lowered:
        return True
    if "accuracy" in lowered:
        return False
    return None


# Columns of the records: everything but the bytes.
_CHECKPOINT_COLUMNS = tuple(getattr(Checkpoint, f.name) for f in fields(CheckpointRecord))
_DATASET_COLUMNS = tuple(getattr(Dataset, f.name) for f in fields(DatasetRecord))


def _series_path(first: int, last: int, many: bool, buckets: int) -> str:
    """How bulk_series reads a series from `first` to `last` step cut into `buckets`: from its
    points when it has at most `buckets` rollup rows (`many` false); else from the coarse
    rollups when they alone give every bucket a block (so coarse blocks cost no resolution
    the answer asks for), else from the 16-step rollups."""
    if not many:
        return "points"
    if last // COARSE_BLOCK_STEPS - first // COARSE_BLOCK_STEPS + 1 >= buckets:
        return "coarse"
    return "rollups"


def _job_filters(status: str | Sequence[str] | None, model: str | None,
                 owner: str | None) -> list[Any]:
    """WHERE terms of the job lists: status (one or several), model, owner; None: any."""
    filters = [] if owner is None else [Job.owner == owner]
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        filters.append(Job.status.in_(statuses))
    if model is not None:
        filters.append(Job.model == model)
    return filters


class Store:
    """Database access for jobs, metrics, texts, checkpoints and uploaded datasets.

    `Store(url)` opens an engine (see `db.session.make_engine`); call `migrate()` once at
    start-up. A Store is safe to share between threads; each call uses its own session.
    """

    def __init__(self, url: str | URL) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)
        self.dialect = self.engine.dialect.name
        self._sessions = make_session_factory(self.engine)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _dialect_insert(self, table: Any) -> Any:
        """This backend's INSERT, the one with ON CONFLICT."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    @functools.cached_property
    def _metric_upsert(self) -> Any:
        """INSERT ... ON CONFLICT (job_id, name, step) DO UPDATE, for this backend."""
        table = Metric.__table__
        stmt = self._dialect_insert(table)
        return stmt.on_conflict_do_update(
            index_elements=[table.c.job_id, table.c.name, table.c.step],
            set_={
                "epoch": stmt.excluded.epoch,
                "value": stmt.excluded.value,
                "time": stmt.excluded.time,
            },
        )

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with session_scope(self._sessions) as session:
            yield session

    # ---- schema -----------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (`upgrade head`).

        Safe to call on every start: at head it changes nothing. Concurrent callers are
        serialised, so a fleet of workers starting together cannot trip over each other:
        Postgres takes a transaction-scoped advisory lock; SQLite takes the database's write
        lock up front (BEGIN IMMEDIATE). The whole upgrade commits as one transaction.
        """
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        url = self.url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
            elif self.dialect == "sqlite":
                # SQLite alters a table by rebuilding it (copy, drop, rename); with foreign
                # keys on, dropping `jobs` would cascade-delete every metric and checkpoint.
                # The pragma only takes effect outside a transaction: before BEGIN.
                conn.exec_driver_sql("PRAGMA foreign_keys = OFF")
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            config.attributes["connection"] = conn
            try:
                command.upgrade(config, "head")
                if self.dialect == "sqlite":
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration left dangling references: {broken[:5]}")
                conn.commit()
            finally:
                if self.dialect == "sqlite":
                    conn.rollback()  # no-op after the commit; needed before the pragma
                    conn.exec_driver_sql("PRAGMA foreign_keys = ON")

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - a health check reports, it does not raise
            return False

    # ---- jobs -------------------------------------------------------------------------

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
    ) -> JobRecord:
        """Insert a queued job (attempts 0); unnamed jobs are called `<model>-<dataset>-<id>`.

        `enqueued_at` is set to now: the caller sends it to the broker next. A second job
        of the same owner with the same `idempotency_key` raises Conflict (see
        `create_job_once`). With `max_queued`, QuotaExceeded when the owner already has that
        many queued jobs: counted and inserted as one step, so concurrent calls never
        overshoot it (see `_insert_job`).
        """
        try:
            job, _ = self._insert_job(model, dataset, hyperparameters, device, name,
                                      idempotency_key, utcnow(), owner, max_queued)
            return job
        except IntegrityError as exc:
            if idempotency_key is not None:
                raise Conflict(f"a job with idempotency key {idempotency_key!r} exists") from exc
            raise

    def create_job_once(
        self, idempotency_key: str, model: str, dataset: str,
        hyperparameters: Mapping[str, Any], device: str = "auto", name: str | None = None,
        owner: str = LOCAL_OWNER, max_queued: int | None = None,
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
                                    reuse_key=True)
        except IntegrityError as exc:
            existing = self.get_job_by_idempotency_key(idempotency_key, owner)
            if existing is None:  # pragma: no cover - the winner's row was deleted meanwhile
                raise Conflict(f"a job with idempotency key {idempotency_key!r} exists") from exc
            return existing, False

    def get_job_by_idempotency_key(self, key: str, owner: str = LOCAL_OWNER) -> JobRecord | None:
        with self._session() as s:
            job = s.scalar(select(Job).where(Job.owner == owner, Job.idempotency_key == key))
            return _record(JobRecord, job) if job is not None else None

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
                    now, owner, max_queued=None, reuse_key=False) -> tuple[JobRecord, bool]:
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
                        return _record(JobRecord, existing), False
                queued = self._count_jobs(s, owner, ["queued"])
                if queued >= max_queued:
                    raise QuotaExceeded(owner, queued, max_queued)
            job = Job(
                name=name or "",
                model=model,
                dataset=dataset,
                hyperparameters=_json_safe(dict(hyperparameters)),
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
            )
            s.add(job)
            s.flush()
            if not name:
                job.name = f"{model}-{dataset}-{job.id}"
            return _record(JobRecord, job), True

    def get_job(self, job_id: int) -> JobRecord | None:
        with self._session() as s:
            job = s.get(Job, job_id)
            return _record(JobRecord, job) if job is not None else None

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
    ) -> tuple[list[JobRecord], int]:
        """One page of jobs, newest first, and the total number matching the filters
        (`owner`: only that user's jobs; None: everyone's)."""
        filters = _job_filters(status, model, owner)
        with self._session() as s:
            total = s.scalar(select(func.count()).select_from(Job).where(*filters)) or 0
            page = s.scalars(
                select(Job)
                .where(*filters)
                .order_by(Job.id.desc())
                .limit(max(limit, 0))
                .offset(max(offset, 0))
            ).all()
            return [_record(JobRecord, job) for job in page], total

    def count_jobs(self, owner: str, statuses: Sequence[str]) -> int:
        """How many of the owner's jobs are in one of `statuses`. (The queue cap itself is
        checked by create_job's `max_queued`, in the transaction that inserts.)"""
        with self._session() as s:
            return self._count_jobs(s, owner, statuses)

    @staticmethod
    def _count_jobs(session: Session, owner: str, statuses: Sequence[str]) -> int:
        stmt = select(func.count()).select_from(Job).where(
            Job.owner == owner, Job.status.in_(list(statuses))
        )
        return session.scalar(stmt) or 0

    def queued_job_ids(self) -> list[int]:
        """Ids of every queued job, oldest first (e.g. to re-enqueue after a broker loss)."""
        with self._session() as s:
            return list(s.scalars(select(Job.id).where(Job.status == "queued").order_by(Job.id)))

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
            return _record(JobRecord, row)

    def claim_job(self, job_id: int, worker: str) -> JobRecord | None:
        """Atomically move a queued job to running for `worker` (attempts += 1), and record
        the attempt (its number is the new `attempts`; it resumes from the newest checkpoint's
        epoch, if any) in the same transaction.

        Returns None when the job is not queued (already claimed, cancelled, unknown).
        """
        now = utcnow()
        with self._session() as s:
            row = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(
                    status="running",
                    worker=worker,
                    attempts=Job.attempts + 1,
                    started_at=now,
                    heartbeat_at=now,
                    finished_at=None,
                    error=None,
                    updated_at=now,
                )
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
            return _record(JobRecord, row)

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
            "eta_seconds": _finite_or_none(eta_seconds),
            "heartbeat_at": utcnow(),
        }
        return self._transition(job_id, ("running",), values, attempt=attempt) is not None

    def finish_job(
        self, job_id: int, status: str, error: str | None = None, attempt: int | None = None
    ) -> bool:
        """running -> succeeded | failed | cancelled, with finished_at; ends the attempt.
        False if not running (or, given `attempt`, not in that attempt any more)."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(FINAL_STATUSES)}, not {status!r}")
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
        """running -> queued (the recovery path: a worker died, or drained its job), ending
        the attempt with `outcome`. The caller sends the job to the broker again (enqueued_at
        is set to now). False if not running (or not in `attempt` any more)."""
        now = utcnow()
        values = {"status": "queued", "worker": None, "heartbeat_at": None, "error": error,
                  "enqueued_at": now}
        if outcome == "worker_lost":
            values["infra_failures"] = Job.infra_failures + 1
        return self._transition(job_id, ("running",), values, attempt=attempt,
                                close_attempt=outcome) is not None

    # ---- recovery (the reconciler) ---------------------------------------------------

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

    def claim_unsent_jobs(self, grace_seconds: float) -> list[JobRecord]:
        """Queued jobs last sent to the broker more than `grace_seconds` ago (their message
        may be lost: a broker restarted empty). Marks each as sent now, with a guarded UPDATE,
        so that of several reconcilers only one re-sends a job; the caller sends them."""
        now = utcnow()
        cutoff = now - dt.timedelta(seconds=grace_seconds)
        due = or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff)
        with self._session() as s:
            ids = list(s.scalars(
                select(Job.id).where(Job.status == "queued", due).order_by(Job.id)
            ))
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
        if record is not None:
            return record
        current = self.get_status(job_id)
        if current is None:
            raise NotFound(f"job {job_id} does not exist")
        raise InvalidTransition(current, f"job {job_id} is {current}; only queued or running "
                                         "jobs can be cancelled")

    # ---- metrics ----------------------------------------------------------------------

    def add_metrics(self, job_id: int, points: Iterable[Sequence[Any]]) -> None:
        """Store points `(name, step, epoch, value, time)` in one transaction.

        Upsert on (job_id, name, step): a point written again replaces value, epoch and time
        (so a resumed run that repeats steps leaves no duplicates). Within one call the last
        point for a key wins. Non-finite values are stored as NULL (None). `time` (seconds
        since the epoch) may be omitted or None: now. Steps must be >= 0. Raises NotFound for
        an unknown job. The block summaries (`metric_rollups`) of the touched steps are
        rewritten in the same transaction, so they always agree with the points.
        """
        now = utcnow().timestamp()
        rows: dict[tuple[str, int], dict[str, Any]] = {}
        for point in points:
            name, step, epoch, value = str(point[0]), int(point[1]), int(point[2]), point[3]
            if step < 0:
                raise ValueError(f"metric {name!r}: step {step} is negative")
            when = point[4] if len(point) > 4 and point[4] is not None else now
            rows[(name, step)] = {
                "job_id": job_id,
                "name": name,
                "step": step,
                "epoch": epoch,
                "value": _finite_or_none(value),
                "time": float(when),
            }
        if not rows:
            return
        try:
            with self._session() as s:
                # executemany of one upsert: the driver batches it (psycopg pipelines it,
                # SQLAlchemy packs rows into multi-row VALUES); ~20x faster than
                # compiling big multi-row statements ourselves.
                rewritten = self._stored_keys(s, job_id, rows)
                s.connection().execute(self._metric_upsert, list(rows.values()))
                self._add_to_rollups(s, job_id, [r for k, r in rows.items() if k not in rewritten])
                if rewritten:
                    self._recompute_rollups(s, job_id, rewritten)
        except IntegrityError as exc:
            raise NotFound(f"job {job_id} does not exist") from exc

    # Rollups (`metric_rollups`) are kept in the batch's own transaction. Appended points, the
    # normal case, are added to their block's count/sum/min/max (one small upsert); the blocks of
    # points written again (a resumed run repeating steps) are recomputed from the points.

    @staticmethod
    def _stored_keys(s: Session, job_id: int, rows: dict[tuple[str, int], Any]) -> set:
        """Which (name, step) of the batch are stored already: one index range per name."""
        steps = [step for _, step in rows]
        stmt = select(Metric.name, Metric.step).where(
            Metric.job_id == job_id,
            Metric.name.in_(sorted({name for name, _ in rows})),
            Metric.step.between(min(steps), max(steps)),
        )
        return {key for key in map(tuple, s.execute(stmt)) if key in rows}

    @functools.cache  # noqa: B019 - one statement per store and table, for the store's life
    def _rollup_add(self, table: Any) -> Any:
        """Upsert adding a batch's block summaries to the stored ones of `table` (a rollup
        table; NULL-safe min/max/sum)."""
        stmt = self._dialect_insert(table)
        old, new = table.c, stmt.excluded

        def merged(column: str, combine: Any) -> Any:
            a, b = old[column], new[column]
            return case((a.is_(None), b), (b.is_(None), a), else_=combine(a, b))

        return stmt.on_conflict_do_update(
            index_elements=["job_id", "name", "block", "epoch"],
            set_={
                "last_step": case((new.last_step > old.last_step, new.last_step),
                                  else_=old.last_step),
                "n": old.n + new.n,
                "total": merged("total", lambda a, b: a + b),
                "low": merged("low", lambda a, b: case((b < a, b), else_=a)),
                "high": merged("high", lambda a, b: case((b > a, b), else_=a)),
            },
        )

    def _add_to_rollups(self, s: Session, job_id: int, points: list[dict[str, Any]]) -> None:
        for table, block_steps in ((MetricRollup, ROLLUP_BLOCK_STEPS),
                                   (MetricRollupCoarse, COARSE_BLOCK_STEPS)):
            summaries = self._block_summaries(job_id, points, block_steps)
            if summaries:
                s.connection().execute(self._rollup_add(table.__table__), summaries)

    @staticmethod
    def _block_summaries(job_id: int, points: list[dict[str, Any]],
                         block_steps: int) -> list[dict[str, Any]]:
        """The rollup rows of `points` alone, per (name, block of `block_steps`, epoch)."""
        summaries: dict[tuple[str, int, int], dict[str, Any]] = {}
        for p in points:
            key = (p["name"], p["step"] // block_steps, p["epoch"])
            acc = summaries.get(key)
            if acc is None:
                acc = summaries[key] = {"job_id": job_id, "name": key[0], "block": key[1],
                                        "epoch": key[2], "last_step": p["step"], "n": 0,
                                        "total": None, "low": None, "high": None}
            acc["last_step"] = max(acc["last_step"], p["step"])
            value = p["value"]
            if value is not None:
                acc["n"] += 1
                acc["total"] = value if acc["total"] is None else acc["total"] + value
                acc["low"] = value if acc["low"] is None else min(acc["low"], value)
                acc["high"] = value if acc["high"] is None else max(acc["high"], value)
        return list(summaries.values())

    def _recompute_rollups(self, s: Session, job_id: int, keys: set) -> None:
        """Rewrite the rollup rows of the blocks holding `keys`: the fine ones from the stored
        points, then the coarse ones from the fine ones."""
        B, C = ROLLUP_BLOCK_STEPS, COARSE_ROLLUP_BLOCKS
        blocks: dict[str, set[int]] = {}
        for name, step in keys:
            blocks.setdefault(name, set()).add(step // B)
        columns = ["job_id", "name", "block", "epoch", "last_step", "n", "total", "low", "high"]
        for name, numbers in blocks.items():
            # Whole coarse blocks, so both levels are rewritten over the same steps.
            first, last = min(numbers) // C * C, max(numbers) // C * C + C - 1
            s.execute(delete(MetricRollup).where(
                MetricRollup.job_id == job_id, MetricRollup.name == name,
                MetricRollup.block.between(first, last)))
            block = Metric.step // B
            summary = (
                select(Metric.job_id, Metric.name, block, Metric.epoch, func.max(Metric.step),
                       func.count(Metric.value), func.sum(Metric.value), func.min(Metric.value),
                       func.max(Metric.value))
                .where(Metric.job_id == job_id, Metric.name == name,
                       Metric.step.between(first * B, last * B + B - 1))
                .group_by(Metric.job_id, Metric.name, block, Metric.epoch)
            )
            s.execute(self._dialect_insert(MetricRollup.__table__).from_select(columns, summary))
            s.execute(delete(MetricRollupCoarse).where(
                MetricRollupCoarse.job_id == job_id, MetricRollupCoarse.name == name,
                MetricRollupCoarse.block.between(first // C, last // C)))
            coarse = MetricRollup.block // C
            summary = (
                select(MetricRollup.job_id, MetricRollup.name, coarse, MetricRollup.epoch,
                       func.max(MetricRollup.last_step), func.sum(MetricRollup.n),
                       func.sum(MetricRollup.total), func.min(MetricRollup.low),
                       func.max(MetricRollup.high))
                .where(MetricRollup.job_id == job_id, MetricRollup.name == name,
                       MetricRollup.block.between(first, last))
                .group_by(MetricRollup.job_id, MetricRollup.name, coarse, MetricRollup.epoch)
            )
            s.execute(self._dialect_insert(MetricRollupCoarse.__table__)
                      .from_select(columns, summary))

    def get_metrics(
        self,
        job_id: int,
        names: Iterable[str] | None = None,
        max_points: int | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """Series of `{"step", "epoch", "value"}` by metric name, ordered by step.

        With `max_points`, a series longer than that is downsampled in SQL to exactly
        `max_points` points: the last point is the exact final point (so the curve ends on
        the true final value), and the points before it are split by row order
        (row_number) into `max_points - 1` buckets of near-equal size; each bucket becomes
        one point with the mean value of its rows (NULLs ignored), at the bucket's last step
        and epoch. The mean keeps the shape of noisy curves such as train_loss without
        aliasing; shorter series come back whole. One query per call, whatever the
        number of series.
        """
        filters = [Metric.job_id == job_id]
        if names is not None:
            wanted = list(names)
            if not wanted:
                return {}
            filters.append(Metric.name.in_(wanted))
        if max_points is None:
            stmt = (
                select(Metric.name, Metric.step, Metric.epoch, Metric.value)
                .where(*filters)
                .order_by(Metric.name, Metric.step)
            )
        else:
            stmt = self._downsampled_metrics(filters, int(max_points))
        series: dict[str, list[dict[str, Any]]] = {}
        with self._session() as s:
            for name, step, epoch, value in s.execute(stmt):
                series.setdefault(name, []).append(
                    {"step": int(step), "epoch": int(epoch), "value": _finite_or_none(value)}
                )
        return series

    @staticmethod
    def _downsampled_metrics(filters: list[Any], max_points: int) -> Any:
        if max_points < 1:
            raise ValueError("max_points must be at least 1")
        ranked = (
            select(
                Metric.name,
                Metric.step,
                Metric.epoch,
                Metric.value,
                func.row_number()
                .over(partition_by=Metric.name, order_by=Metric.step)
                .label("rn"),
                func.count().over(partition_by=Metric.name).label("n"),
            )
            .where(*filters)
            .subquery("ranked")
        )
        r = ranked.c
        bucket = case(
            (r.n <= max_points, r.rn),  # short series: every point is its own bucket
            (r.rn == r.n, -1),  # the final point: always a bucket of its own
            # rows 1..n-1 -> buckets 0..max_points-2, in order, none empty since n > max_points
            else_=((r.rn - 1) * (max_points - 1)) // (r.n - 1),
        )
        bucketed = select(r.name, r.step, r.epoch, r.value, bucket.label("bucket"))
        if max_points == 1:
            bucketed = bucketed.where(r.rn == r.n)
        b = bucketed.subquery("bucketed").c
        last_step = func.max(b.step)
        return (
            select(b.name, last_step, func.max(b.epoch), func.avg(b.value))
            .group_by(b.name, b.bucket)
            .order_by(b.name, last_step)
        )

    def metric_names(self, job_id: int) -> list[str]:
        with self._session() as s:
            stmt = select(Metric.name).where(Metric.job_id == job_id).distinct()
            return list(s.scalars(stmt.order_by(Metric.name)))

    def latest_metrics(self, job_id: int) -> dict[str, float | None]:
        """The value at the highest step of each metric of the job."""
        ranked = (
            select(
                Metric.name,
                Metric.value,
                func.row_number()
                .over(partition_by=Metric.name, order_by=Metric.step.desc())
                .label("rn"),
            )
            .where(Metric.job_id == job_id)
            .subquery()
        )
        with self._session() as s:
            r = ranked.c
            rows = s.execute(select(r.name, r.value).where(r.rn == 1).order_by(r.name))
            return {name: _finite_or_none(value) for name, value in rows}

    def metric_summaries(self, job_ids: Iterable[int]) -> dict[int, dict[str, dict[str, Any]]]:
        """`{job_id: {name: {"final": v, "best": v}}}` for several jobs in one query.

        final = the value at the highest step; best = the minimum for names containing
        "loss" or "perplexity", the maximum for names containing "accuracy", otherwise the
        final value. Every requested id is a key, with {} when it has no metrics.
        """
        ids = sorted({int(i) for i in job_ids})
        result: dict[int, dict[str, dict[str, Any]]] = {i: {} for i in ids}
        if not ids:
            return result
        # The bounds, lowest and highest value from the coarse block summaries (1/128 of the
        # points of a long run), then one index seek per series for the value at its last
        # step: no window function, no sort.
        R = MetricRollupCoarse
        agg = (
            select(
                R.job_id,
                R.name,
                func.max(R.last_step).label("last"),
                func.min(R.low).label("low"),
                func.max(R.high).label("high"),
            )
            .where(R.job_id.in_(ids))
            .group_by(R.job_id, R.name)
            .subquery()
        )
        stmt = (
            select(agg.c.job_id, agg.c.name, Metric.value, agg.c.low, agg.c.high)
            .join(
                Metric,
                and_(
                    Metric.job_id == agg.c.job_id,
                    Metric.name == agg.c.name,
                    Metric.step == agg.c.last,
                ),
            )
            .order_by(agg.c.job_id, agg.c.name)
        )
        with self._session() as s:
            for job_id, name, final, low, high in s.execute(stmt):
                final = _finite_or_none(final)
                lower_is_better = _best_is_min(name)
                if lower_is_better is None:
                    best = final
                else:
                    best = _finite_or_none(low if lower_is_better else high)
                result[job_id][name] = {"final": final, "best": best}
        return result

    # ---- many jobs at once (the dashboard) -------------------------------------------

    def get_jobs(self, job_ids: Iterable[int]) -> dict[int, JobRecord]:
        """`{id: JobRecord}` for the ids that exist, in one query."""
        ids = sorted({int(i) for i in job_ids})
        if not ids:
            return {}
        with self._session() as s:
            rows = s.scalars(select(Job).where(Job.id.in_(ids)))
            return {job.id: _record(JobRecord, job) for job in rows}

    def list_jobs_keyset(
        self,
        status: str | Sequence[str] | None = None,
        model: str | None = None,
        limit: int = 50,
        before: int | None = None,
        after: int | None = None,
        owner: str | None = None,
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
        filters = _job_filters(status, model, owner)
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
            page = [_record(JobRecord, job) for job in s.scalars(stmt.limit(limit))]
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

    def best_metrics(
        self, job_ids: Iterable[int], names: Iterable[str]
    ) -> dict[int, dict[str, float | None]]:
        """`{job_id: {name: best}}` for names with a notion of best (losses, perplexity:
        lowest; accuracy: highest), in one grouped query over the (job_id, name, step) index.
        A job without such a metric is absent."""
        ids = sorted({int(i) for i in job_ids})
        wanted = [n for n in dict.fromkeys(names) if _best_is_min(n) is not None]
        result: dict[int, dict[str, float | None]] = {}
        if not ids or not wanted:
            return result
        stmt = (
            select(Metric.job_id, Metric.name, func.min(Metric.value), func.max(Metric.value))
            .where(Metric.job_id.in_(ids), Metric.name.in_(wanted))
            .group_by(Metric.job_id, Metric.name)
        )
        with self._session() as s:
            for job_id, name, low, high in s.execute(stmt):
                best = low if _best_is_min(name) else high
                result.setdefault(job_id, {})[name] = _finite_or_none(best)
        return result

    def metric_names_many(self, job_ids: Iterable[int]) -> dict[int, list[str]]:
        """`{job_id: [metric names, sorted]}` for several jobs, every requested id a key.

        A loose index scan: a recursive query hops from each name to the next through the
        (job_id, name, step) index, so the cost grows with the number of names, not of points.
        """
        ids = sorted({int(i) for i in job_ids})
        result: dict[int, list[str]] = {i: [] for i in ids}
        if not ids:
            return result
        stmt = text(
            """
            WITH RECURSIVE found(job_id, name) AS (
                SELECT j.id, (SELECT min(m.name) FROM metrics m WHERE m.job_id = j.id)
                FROM jobs j WHERE j.id IN :ids
                UNION ALL
                SELECT f.job_id,
                       (SELECT min(m.name) FROM metrics m
                        WHERE m.job_id = f.job_id AND m.name > f.name)
                FROM found f WHERE f.name IS NOT NULL
            )
            SELECT job_id, name FROM found WHERE name IS NOT NULL ORDER BY job_id, name
            """
        ).bindparams(bindparam("ids", expanding=True))
        with self._session() as s:
            for job_id, name in s.execute(stmt, {"ids": ids}):
                result[job_id].append(name)
        return result

    # How many series (one job's one metric) one statement of bulk_series reads: its text, its
    # parameters, the server's memory and the rows fetched at once stay this size whatever
    # the number of runs compared.
    SERIES_PER_QUERY = 256

    def bulk_series(
        self, job_ids: Iterable[int], names: Iterable[str], max_points: int
    ) -> dict[int, dict[str, dict[str, Any]]]:
        """Several metric series of many jobs, downsampled, a bounded batch of series at a time.

        Returns `{job_id: {name: series}}` for the series that exist, each series
        `{"step": [...], "epoch": [...], "value": [...], "final", "best",
        "epochs": {"epoch": [...], "mean": [...]}}` (columns rather than point objects: a
        hundred runs make a compact answer).

        Downsampling is by step range, not row number. With `lo`/`hi` the series' first and
        last step, the point at `hi` is always a bucket of its own (the curve ends on its exact
        final value) and the steps before it are cut into at most `max_points - 1` buckets of
        consecutive steps. Each non-empty bucket becomes one point: the mean of its values
        (NULLs ignored; null when all are null) at its last step and that step's epoch.

        - A short series (at most `max_points - 1` rollup rows, i.e. few points or points few
          blocks apart) is bucketed from its points: buckets of
          `w = ceil((hi - lo) / (max_points - 1))` steps from `lo`. A series with at most
          `max_points - 1` points spaced at least `w` apart (per-epoch metrics) comes back
          exactly. Reading it scans at most 16 points per rollup row.
        - A long series is bucketed from its rollup rows (`metric_rollups`: count, sum, min,
          max per block of 16 steps and epoch, kept by add_metrics): buckets of `wb` whole
          blocks, `wb = ceil((hi // 16 - lo // 16 + 1) / (max_points - 1))`, counted from the
          block of `lo`; the last block's points are read themselves, to split off `hi`. A
          10,000-step series is ~625 rollup rows instead of 10,000 points.
        - When its step range spans at least `max_points - 1` blocks of 128 steps, the same
          from `metric_rollups_coarse` (blocks of 128 steps; the last one read from its 16-step
          rows and its last 16 points): ~79 rows for 10,000 steps, which is what a chart of a
          thousand runs at 50 points each needs.

        Also from the same rows: `final` (the value at the last step), `best` (lowest for
        losses and perplexity, highest for accuracy, else the final value) and the mean of
        each epoch's values (`epochs`), so "the value at epoch E" needs no further query.

        Cost: the (job, name) pairs go SERIES_PER_QUERY at a time, as parameters of a
        statement of fixed text (`_series_source`), and each series is read on its own by
        index range scans: its bounds (two seeks and at most `max_points` rollup keys), then
        its points or rollup rows, summed by bucket and epoch in a small group of its own. So
        the work is linear in the series and the rows they are bucketed from (at most ~16 per
        point returned for a short series; 1/16 or 1/128 of the points for a long one, plus
        at most 24 rows for its last block), and neither
        the statements nor the server's memory grow with the number of runs.
        """
        if max_points < 2:
            raise ValueError("max_points must be at least 2")
        ids = sorted({int(i) for i in job_ids})
        wanted = [str(n) for n in dict.fromkeys(names)]
        pairs = [(job_id, name) for job_id in ids for name in wanted]
        buckets = max_points - 1
        result: dict[int, dict[str, dict[str, Any]]] = {}
        with self._session() as s:
            if self.dialect == "postgresql":
                # A statement of a few hundred small per-series groups is estimated costly
                # enough to be JIT-compiled: ~40 ms each that buy nothing. This transaction only.
                s.execute(text("SET LOCAL jit = off"))
            for start in range(0, len(pairs), self.SERIES_PER_QUERY):
                found = self._series_bounds(s, pairs[start:start + self.SERIES_PER_QUERY], buckets)
                merged: dict[tuple[int, str], dict[str, Any]] = {}
                paths = {"points": self._short_series,
                         "rollups": functools.partial(self._long_series, coarse=False),
                         "coarse": functools.partial(self._long_series, coarse=True)}
                for path, read in paths.items():
                    group = [(j, n, lo, hi) for j, n, lo, hi, many in found
                             if _series_path(lo, hi, many, buckets) == path]
                    if not group:
                        continue
                    for (job_id, name, _, _), got in zip(group, read(s, group, buckets),
                                                         strict=True):
                        if got is not None:
                            merged[job_id, name] = self._merge_series(name, *got)
                for job_id, name, *_ in found:  # in the order asked for
                    if (job_id, name) in merged:
                        result.setdefault(job_id, {})[name] = merged[job_id, name]
        return result

    def _series_source(self, columns: list[str], rows: list[tuple]) -> tuple[str, str, dict]:
        """`rows` as the table `s` of one statement, passed as parameters however many there
        are: (WITH clause, FROM item, parameters). Column "name" holds text, the others
        integers. Postgres: one array per column, unnested; SQLite: one JSON text read by
        json_each, materialized once (else every reference would parse it again).

        (The literal table of one `SELECT ... UNION ALL` per series that bulk_series once
        built failed on SQLite past 500 series, its limit on the terms of a compound SELECT,
        and on Postgres took seconds and gigabytes to plan past a thousand, then "stack depth
        limit exceeded".)"""
        if self.dialect == "postgresql":
            arrays = ", ".join(
                f"CAST(:s_{c} AS {'varchar' if c == 'name' else 'integer'}[])" for c in columns
            )
            params = {f"s_{c}": [row[i] for row in rows] for i, c in enumerate(columns)}
            return "", f"unnest({arrays}) AS s({', '.join(columns)})", params
        cells = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(columns)))
        with_clause = (f"WITH series({', '.join(columns)}) AS MATERIALIZED "
                       f"(SELECT {cells} FROM json_each(:series))")
        return with_clause, "series AS s", {"series": json.dumps([list(row) for row in rows])}

    def _series_bounds(self, s: Session, pairs: list[tuple], buckets: int) -> list[tuple]:
        """(job_id, name, first step, last step, long) for each (job_id, name) of `pairs` that
        has points; long: more than `buckets` rollup rows (found reading at most buckets + 1
        of their keys, so the bounds cost two index seeks and one short range per series)."""
        with_clause, source, params = self._series_source(["job_id", "name"], pairs)
        in_series = "m.job_id = s.job_id AND m.name = s.name"
        stmt = text(
            f"""
            {with_clause}
            SELECT s.job_id, s.name,
                   (SELECT min(m.step) FROM metrics m WHERE {in_series}),
                   (SELECT max(m.step) FROM metrics m WHERE {in_series}),
                   (SELECT r.block FROM metric_rollups r
                    WHERE r.job_id = s.job_id AND r.name = s.name
                    LIMIT 1 OFFSET :buckets) IS NOT NULL
            FROM {source}
            """
        )
        rows = s.connection().execute(stmt, {**params, "buckets": buckets}).all()
        return [(j, n, lo, hi, bool(many)) for j, n, lo, hi, many in rows if hi is not None]

    def _grouped_rows(self, s: Session, columns: list[str], table: list[tuple],
                      groups_sql: str) -> list[tuple | None]:
        """For each series of `table` (its first column `sid` is its position), the rows that
        `groups_sql` selects for it, columns k, e, ms, c, t, mn, mx (bucket, epoch, last step,
        count, sum, min, max), as `([(k, e, ms, c, t), ...], min, max)` (t as text on SQLite), or
        None if it has none.

        `groups_sql` is a correlated subquery: each series is read by index ranges of its own
        and grouped alone, whatever the planner estimates (a join grouping the whole batch
        could hash or sort all of it at once, or scan the whole table). Each comes back as one
        JSON array; on SQLite the floats travel as text printed with 17 digits (printf's '!'
        flag), as its JSON would keep only 15. (Merging the groups into points and epoch
        means in SQL as well was slower on both databases than `_merge_series`.)"""
        with_clause, source, params = self._series_source(columns, table)
        if self.dialect == "postgresql":
            packed = ("json_build_array(json_agg(json_build_array(k, e, ms, c, t)), "
                      "min(mn), max(mx))")
        else:
            exact = "CASE WHEN {0} IS NULL THEN NULL ELSE printf('%!.17g', {0}) END".format
            packed = (f"json_array(json_group_array(json_array(k, e, ms, c, {exact('t')})), "
                      f"{exact('min(mn)')}, {exact('max(mx)')})")
        stmt = text(f"{with_clause} SELECT s.sid, (SELECT {packed} FROM ({groups_sql}) AS g) "
                    f"FROM {source}")
        out: list[tuple | None] = [None for _ in table]
        for sid, packed_rows in s.connection().execute(stmt, params).all():
            if isinstance(packed_rows, str):  # SQLite; psycopg has parsed the JSON already
                packed_rows = json.loads(packed_rows)
            rows, low, high = packed_rows
            if rows:
                out[sid] = (rows, None if low is None else float(low),
                            None if high is None else float(high))
        return out

    def _short_series(self, s: Session, found: list[tuple], buckets: int) -> list:
        """bulk_series for short series, from their points: for each series of `found`, its
        rows (bucket, epoch, last step, count, sum), one per bucket and epoch, and its min and
        max (see `_grouped_rows`)."""
        table = []
        for sid, (job_id, name, first, last) in enumerate(found):
            width = max(1, -(-(last - first) // buckets))  # ceil((last - first) / buckets)
            table.append((sid, job_id, name, first, last, width))
        groups = """
            SELECT CASE WHEN m.step = s.hi THEN -1 ELSE (m.step - s.lo) / s.w END AS k,
                   m.epoch AS e, max(m.step) AS ms, count(m.value) AS c,
                   sum(m.value) AS t, min(m.value) AS mn, max(m.value) AS mx
            FROM metrics m
            -- points written after the bounds were read wait for the next request
            WHERE m.job_id = s.job_id AND m.name = s.name AND m.step <= s.hi
            GROUP BY 1, 2
        """
        return self._grouped_rows(s, ["sid", "job_id", "name", "lo", "hi", "w"], table, groups)

    def _long_series(self, s: Session, found: list[tuple], buckets: int, coarse: bool) -> list:
        """bulk_series for long series, from their rollup rows (the coarse ones if `coarse`):
        for each series of `found`, its rows (bucket, epoch, last step, count, sum), one per
        bucket and epoch, and its min and max (see `_grouped_rows`)."""
        B = COARSE_BLOCK_STEPS if coarse else ROLLUP_BLOCK_STEPS
        table = []
        for sid, (job_id, name, first, last) in enumerate(found):
            lo_b, hi_b = first // B, last // B
            width = max(1, -(-(hi_b - lo_b + 1) // buckets))  # ceil(blocks / buckets)
            table.append((sid, job_id, name, lo_b, hi_b, width, last,
                          last // ROLLUP_BLOCK_STEPS))
        # Every block before the last one summed by bucket and epoch; then the last block:
        # from coarse rows, its fine rows but the last; then the last fine block point by
        # point (at most 16), its final point a bucket of its own.
        last_bucket = "(s.hi_b - s.lo_b) / s.wb"
        groups = f"""
            SELECT (r.block - s.lo_b) / s.wb AS k, r.epoch AS e, max(r.last_step) AS ms,
                   sum(r.n) AS c, sum(r.total) AS t, min(r.low) AS mn, max(r.high) AS mx
            FROM {"metric_rollups_coarse" if coarse else "metric_rollups"} r
            WHERE r.job_id = s.job_id AND r.name = s.name AND r.block < s.hi_b
            GROUP BY 1, 2
        """
        if coarse:
            groups += f"""
            UNION ALL
            SELECT {last_bucket}, r.epoch, max(r.last_step), sum(r.n), sum(r.total),
                   min(r.low), max(r.high)
            FROM metric_rollups r
            WHERE r.job_id = s.job_id AND r.name = s.name
              AND r.block >= s.hi_b * {COARSE_ROLLUP_BLOCKS} AND r.block < s.hi_f
            GROUP BY 1, 2
            """
        groups += f"""
            UNION ALL
            SELECT CASE WHEN m.step = s.hi THEN -1 ELSE {last_bucket} END,
                   m.epoch, m.step, CASE WHEN m.value IS NULL THEN 0 ELSE 1 END,
                   m.value, m.value, m.value
            FROM metrics m
            WHERE m.job_id = s.job_id AND m.name = s.name
              AND m.step >= s.hi_f * {ROLLUP_BLOCK_STEPS} AND m.step <= s.hi
        """
        return self._grouped_rows(
            s, ["sid", "job_id", "name", "lo_b", "hi_b", "wb", "hi", "hi_f"], table, groups
        )

    @staticmethod
    def _merge_series(
        name: str, rows: list[list], low: float | None, high: float | None
    ) -> dict[str, Any]:
        """One series of bulk_series' answer from its (bucket, epoch, last step, count, sum)
        rows (the sum a float, or its exact text from SQLite) and its lowest and highest
        value: one point per bucket, final and best values, each epoch's mean. One pass over
        the rows: this runs for every bucket of every series of the answer."""
        points: dict[int, list[Any]] = {}  # bucket -> [last step, epoch at it, count, sum]
        epochs: dict[int, list[Any]] = {}  # epoch -> [count, sum]
        for bucket, epoch, last, count, total in rows:
            total = float(total) if count else 0.0
            acc = epochs.get(epoch)
            if acc is None:
                epochs[epoch] = [count, total]
            else:
                acc[0] += count
                acc[1] += total
            point = points.get(bucket)
            if point is None:
                points[bucket] = [last, epoch, count, total]
            else:
                if last > point[0]:
                    point[0], point[1] = last, epoch
                point[2] += count
                point[3] += total
        ordered = sorted(points.values(), key=lambda p: p[0])
        values = [_finite_or_none(p[3] / p[2]) if p[2] else None for p in ordered]
        final = values[-1]
        lower_is_better = _best_is_min(name)
        if lower_is_better is None or low is None:
            best = final
        else:
            best = _finite_or_none(low if lower_is_better else high)
        by_epoch = sorted(epochs.items())
        return {
            "step": [p[0] for p in ordered],
            "epoch": [p[1] for p in ordered],
            "value": values,
            "final": final,
            "best": best,
            "epochs": {
                "epoch": [e for e, _ in by_epoch],
                "mean": [_finite_or_none(t / c) if c else None for _, (c, t) in by_epoch],
            },
        }

    # ---- texts ------------------------------------------------------------------------

    def add_text(self, job_id: int, epoch: int, step: int, name: str, text: str) -> None:
        """Keep a text artifact (e.g. a sampled text). Raises NotFound for an unknown job."""
        try:
            with self._session() as s:
                s.add(JobText(job_id=job_id, epoch=epoch, step=step, name=name, text=text))
        except IntegrityError as exc:
            raise NotFound(f"job {job_id} does not exist") from exc

    def get_texts(self, job_id: int) -> list[dict[str, Any]]:
        """`[{"epoch", "step", "name", "text"}]` in the order they were written."""
        with self._session() as s:
            rows = s.execute(
                select(JobText.epoch, JobText.step, JobText.name, JobText.text)
                .where(JobText.job_id == job_id)
                .order_by(JobText.step, JobText.id)
            )
            return [dict(row._mapping) for row in rows]

    # ---- checkpoints ------------------------------------------------------------------

    def add_checkpoint(
        self,
        job_id: int,
        epoch: int,
        step: int,
        data: bytes,
        metrics: Mapping[str, Any] | None = None,
        keep_last: int | None = None,
    ) -> CheckpointRecord:
        """Store checkpoint bytes with their sha256 and size. NotFound for an unknown job.

        With `keep_last`, older checkpoints beyond the newest `keep_last` are deleted in the same
        transaction (see prune_checkpoints)."""
        blob = bytes(data)
        try:
            with self._session() as s:
                row = Checkpoint(
                    job_id=job_id,
                    epoch=epoch,
                    step=step,
                    data=blob,
                    sha256=hashlib.sha256(blob).hexdigest(),
                    size=len(blob),
                    metrics=_json_safe(dict(metrics or {})),
                    created_at=utcnow(),
                )
                s.add(row)
                s.flush()
                if keep_last:
                    self._prune_checkpoints(s, job_id, keep_last)
                return _record(CheckpointRecord, row)
        except IntegrityError as exc:
            raise NotFound(f"job {job_id} does not exist") from exc

    def list_checkpoints(self, job_id: int) -> list[CheckpointRecord]:
        """The job's checkpoints in training order, without their bytes."""
        with self._session() as s:
            rows = s.execute(
                select(*_CHECKPOINT_COLUMNS)
                .where(Checkpoint.job_id == job_id)
                .order_by(Checkpoint.step, Checkpoint.id)
            )
            return [_record(CheckpointRecord, row) for row in rows]

    def get_checkpoint_data(
        self, job_id: int, checkpoint_id: int
    ) -> tuple[CheckpointRecord, bytes] | None:
        with self._session() as s:
            row = s.execute(
                select(*_CHECKPOINT_COLUMNS, Checkpoint.data).where(
                    Checkpoint.job_id == job_id, Checkpoint.id == checkpoint_id
                )
            ).first()
            return (_record(CheckpointRecord, row), bytes(row.data)) if row is not None else None

    def latest_checkpoint(self, job_id: int) -> tuple[CheckpointRecord, bytes] | None:
        """The checkpoint at the highest step (the newest one on a tie), with its bytes."""
        with self._session() as s:
            row = s.execute(
                select(*_CHECKPOINT_COLUMNS, Checkpoint.data)
                .where(Checkpoint.job_id == job_id)
                .order_by(Checkpoint.step.desc(), Checkpoint.id.desc())
                .limit(1)
            ).first()
            return (_record(CheckpointRecord, row), bytes(row.data)) if row is not None else None

    def prune_checkpoints(self, job_id: int, keep_last: int) -> int:
        """Delete all but the `keep_last` newest checkpoints of a job; returns how many went.

        Checkpoints are megabytes each and written every epoch: keeping the last few bounds the
        database while a corrupt newest one still has older ones to fall back on."""
        with self._session() as s:
            return self._prune_checkpoints(s, job_id, keep_last)

    @staticmethod
    def _prune_checkpoints(s: Session, job_id: int, keep_last: int) -> int:
        if keep_last < 1:
            raise ValueError("keep_last must be >= 1")
        keep = (
            select(Checkpoint.id)
            .where(Checkpoint.job_id == job_id)
            .order_by(Checkpoint.step.desc(), Checkpoint.id.desc())
            .limit(keep_last)
            .scalar_subquery()
        )
        result = s.execute(
            delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.id.not_in(keep))
        )
        return result.rowcount or 0

    # ---- datasets ---------------------------------------------------------------------

    def add_dataset(
        self, name: str, kind: str, data: bytes, description: str = "",
        owner: str = LOCAL_OWNER,
    ) -> DatasetRecord:
        """Store an uploaded dataset. Raises Conflict when the owner has one of that name."""
        if kind not in DATASET_KINDS:
            raise ValueError(f"kind must be one of {', '.join(DATASET_KINDS)}, not {kind!r}")
        blob = bytes(data)
        try:
            with self._session() as s:
                row = Dataset(
                    name=name,
                    kind=kind,
                    data=blob,
                    size=len(blob),
                    sha256=hashlib.sha256(blob).hexdigest(),
                    description=description or "",
                    created_at=utcnow(),
                    owner=owner,
                )
                s.add(row)
                s.flush()
                return _record(DatasetRecord, row)
        except IntegrityError as exc:
            raise Conflict(f"a dataset named {name!r} already exists") from exc

    def list_datasets(self, owner: str | None = None) -> list[DatasetRecord]:
        """Uploaded datasets by name, without their bytes (`owner`: only theirs; None: all)."""
        with self._session() as s:
            stmt = select(*_DATASET_COLUMNS).order_by(Dataset.name, Dataset.owner)
            if owner is not None:
                stmt = stmt.where(Dataset.owner == owner)
            return [_record(DatasetRecord, row) for row in s.execute(stmt)]

    def get_dataset(self, name: str, owner: str = LOCAL_OWNER) -> DatasetRecord | None:
        with self._session() as s:
            row = s.execute(
                select(*_DATASET_COLUMNS).where(Dataset.owner == owner, Dataset.name == name)
            ).first()
            return _record(DatasetRecord, row) if row is not None else None

    def get_dataset_data(self, name: str, owner: str = LOCAL_OWNER) -> bytes | None:
        with self._session() as s:
            data = s.scalar(
                select(Dataset.data).where(Dataset.owner == owner, Dataset.name == name)
            )
            return bytes(data) if data is not None else None

    # ---- workers ----------------------------------------------------------------------

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

    # ---- API keys and dashboard sessions -----------------------------------------------

    def add_api_key(self, owner: str, prefix: str, key_hash: str,
                    is_admin: bool = False) -> ApiKeyRecord:
        """Record a new key by its hash (the caller made the key and shows it once)."""
        with self._session() as s:
            row = ApiKey(owner=owner, prefix=prefix, key_hash=key_hash, is_admin=is_admin,
                         created_at=utcnow())
            s.add(row)
            s.flush()
            return _record(ApiKeyRecord, row)

    def list_api_keys(self) -> list[ApiKeyRecord]:
        with self._session() as s:
            return [_record(ApiKeyRecord, k) for k in s.scalars(select(ApiKey).order_by(ApiKey.id))]

    def count_active_api_keys(self) -> int:
        with self._session() as s:
            stmt = select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
            return s.scalar(stmt) or 0

    def revoke_api_key(self, key_id: int) -> ApiKeyRecord:
        """Revoke a key (its dashboard sessions end with it). Raises NotFound."""
        with self._session() as s:
            row = s.get(ApiKey, key_id)
            if row is None:
                raise NotFound(f"API key {key_id} does not exist")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            s.execute(delete(WebSession).where(WebSession.key_id == key_id))
            return _record(ApiKeyRecord, row)

    def find_api_key(self, key_hash: str, touch_after_seconds: float = 60.0) -> ApiKeyRecord | None:
        """The active key with this hash, or None; notes its use at most once a minute (a
        write per request would be a write per dashboard poll)."""
        now = utcnow()
        with self._session() as s:
            row = s.scalar(
                select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
            )
            if row is None:
                return None
            if row.last_used_at is None or (now - row.last_used_at).total_seconds() > (
                touch_after_seconds
            ):
                row.last_used_at = now
            return _record(ApiKeyRecord, row)

    def create_web_session(self, key_id: int, token_hash: str, csrf_token: str,
                           expires_at: dt.datetime) -> None:
        with self._session() as s:
            # Expired sessions go whenever a new one is made: no sweeper needed.
            s.execute(delete(WebSession).where(WebSession.expires_at < utcnow()))
            s.add(WebSession(token_hash=token_hash, key_id=key_id, csrf_token=csrf_token,
                             created_at=utcnow(), expires_at=expires_at))

    def find_web_session(self, token_hash: str) -> tuple[ApiKeyRecord, str] | None:
        """(the session's key, its CSRF token) for a live session of an active key, or None."""
        with self._session() as s:
            row = s.execute(
                select(ApiKey, WebSession.csrf_token)
                .join(WebSession, WebSession.key_id == ApiKey.id)
                .where(WebSession.token_hash == token_hash, WebSession.expires_at > utcnow(),
                       ApiKey.revoked_at.is_(None))
            ).first()
            return (_record(ApiKeyRecord, row[0]), row[1]) if row is not None else None

    def delete_web_session(self, token_hash: str) -> None:
        with self._session() as s:
            s.execute(delete(WebSession).where(WebSession.token_hash == token_hash))


__all__ = [
    "JOB_STATUSES",
    "LOCAL_OWNER",
    "ApiKeyRecord",
    "CheckpointRecord",
    "Conflict",
    "DatasetRecord",
    "InvalidTransition",
    "JobRecord",
    "NotFound",
    "Store",
    "StoreError",
    "is_storage_full",
]
