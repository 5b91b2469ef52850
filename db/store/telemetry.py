"""The service's figures for GET /metrics (api/services/prometheus.py), read at scrape time.

Everything here is read from the database when Prometheus scrapes, so the figures are the
same whichever API process answers, and survive API restarts. Each query is cheap however
large the tables:

- jobs per (status, model): the queued and running ones through the status index; the
  finished ones counted once and kept (see `_job_counts`): a finished job never changes
  status, so only the jobs from the oldest queued or running one up are counted again at each
  scrape, and a per-status count of the status index (an index-only scan) checks that no job
  was deleted below (else all are counted again). The queued ones per device and their oldest
  wait: a range of the status index, plus one seek in `job_attempts` per queued job.
- workers per state: the `workers` table (one row per worker; pruned).
- the counters (ids assigned to jobs and to metric points): the primary key's last entry, or
  on Postgres the id sequence, one seek each; never a scan of `metrics`.
- running jobs' throughput: per running job, the latest points of its throughput and loss
  series, seeks in the points' index (`uq_metrics_job_id_name_step` on PostgreSQL,
  `ix_metrics_job_id_name_step_epoch_value` on SQLite).
- the windowed duration and wait distributions: one pass over `job_attempts` (narrow rows,
  one per claim) for the attempts that ended (first claims made) within the window, with a
  seek in `jobs` for each first claim found; their times are bucketed in Python.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field

from sqlalchemy import and_, func, or_, select, text, tuple_
from sqlalchemy.orm import Session

from core.states import ACTIVE, DEVICES, FINISHED, JobStatus
from db.store.workers import worker_state
from db.tables import Job, JobAttempt, Metric, Worker, utcnow

# The throughput series a run writes every step (models/train.py): classifiers count samples,
# language models tokens.
THROUGHPUT_SERIES = {"samples_per_s": "samples", "tokens_per_s": "tokens"}
# Steps/s of a running job: over its latest points of this series (one per reported step).
STEP_SERIES = "train_loss"
STEP_RATE_POINTS = 20
WORKER_STATES = ("idle", "busy", "draining", "lost", "stopped")
_SETTLED_LOCK = threading.Lock()


@dataclass(frozen=True)
class QueueFigures:
    """The queued jobs of one device queue (`cpu`, `cuda`, `auto`)."""

    queued: int
    oldest_wait_seconds: float  # 0 when none waits


@dataclass(frozen=True)
class RunningJob:
    """A running job and how fast it trains, from its latest points."""

    job_id: int
    model: str
    device: str  # the device class of the worker that claimed it (`cpu`, `cuda`)
    steps_per_second: float | None
    throughput: float | None  # its latest samples/s or tokens/s
    throughput_unit: str | None  # "samples" or "tokens"


@dataclass(frozen=True)
class Telemetry:
    """One reading of the database's figures (see the module)."""

    jobs: dict[tuple[str, str], int]  # (status, model) -> jobs
    queues: dict[str, QueueFigures]  # device queue -> figures; every device present
    workers: dict[tuple[str, str], int]  # (device class, state) -> workers
    jobs_id_high_water: int  # the largest job id assigned: jobs submitted
    metric_points_high_water: int  # the largest metric point id assigned: points written
    running: list[RunningJob] = field(default_factory=list)
    # (status, seconds) of jobs that finished within the window: latest attempt's run time
    durations: list[tuple[str, float]] = field(default_factory=list)
    # (device, seconds) of jobs first claimed within the window: submission to first claim
    queue_waits: list[tuple[str, float]] = field(default_factory=list)


def _marginals_agree(finished: dict[tuple[str, str], int], active: dict[tuple[str, str], int],
                     by_status: dict[str, int], by_model: dict[str, int] | None) -> bool:
    """Whether the (status, model) counts add up to the per-status counts (and, given, the
    per-model ones): else jobs were deleted from the kept range."""
    if any(sum(n for (st, _), n in finished.items() if st == status) != by_status.get(status, 0)
           for status in FINISHED):
        return False
    if by_model is None:
        return True
    totals: dict[str, int] = {}
    for (_, model), n in (*finished.items(), *active.items()):
        totals[model] = totals.get(model, 0) + n
    return {m: n for m, n in totals.items() if n} == {m: n for m, n in by_model.items() if n}


class TelemetryMixin:
    """telemetry(): the figures GET /metrics exposes, read in one transaction."""

    def telemetry(self, lease_seconds: float, window_seconds: float) -> Telemetry:
        now = utcnow()
        window_start = now - dt.timedelta(seconds=window_seconds)
        with self._session() as s:
            durations, queue_waits = self._recent_attempts(s, window_start)
            return Telemetry(
                jobs=self._job_counts(s),
                queues=self._queue_figures(s, now),
                workers=self._worker_states(s, now, lease_seconds),
                jobs_id_high_water=self._id_high_water(s, Job.__table__),
                metric_points_high_water=self._id_high_water(s, Metric.__table__),
                running=self._running_jobs(s),
                durations=durations,
                queue_waits=queue_waits,
            )

    def _job_counts(self, s: Session) -> dict[tuple[str, str], int]:
        """Jobs per (status, model). Every job below the oldest queued or running one is
        finished, and stays so: their counts are kept on this Store (`_settled`: up to which
        id, and the counts) and only the jobs above are counted at each scrape."""
        counts = {(status, model): int(n) for status, model, n in s.execute(
            select(Job.status, Job.model, func.count()).where(Job.status.in_(ACTIVE))
            .group_by(Job.status, Job.model))}
        by_status = {status: int(n) for status, n in s.execute(
            select(Job.status, func.count()).group_by(Job.status))}
        # One seek in the status index per active status (an IN would walk the primary key).
        firsts = [s.execute(select(func.min(Job.id)).where(Job.status == status)).scalar()
                  for status in ACTIVE]
        first_active = min((i for i in firsts if i is not None), default=None)
        settled_upto = (first_active - 1 if first_active is not None
                        else int(s.execute(select(func.max(Job.id))).scalar() or 0))
        # Without AUTOINCREMENT (before migration 0016) SQLite reuses the ids of the newest
        # rows once they are deleted: a job deleted and another submitted (and finished)
        # between two scrapes can take an id of the kept range, with the same status but
        # another model. The per-model counts catch it.
        reuses_ids = self.dialect == "sqlite" and self._sqlite_sequence(s, "jobs") is None
        by_model = {model: int(n) for model, n in s.execute(
            select(Job.model, func.count()).group_by(Job.model))} if reuses_ids else None
        with _SETTLED_LOCK:
            cached_upto, cached = self.__dict__.get("_settled", (0, {}))
        for attempt in range(2):
            if attempt or settled_upto < cached_upto:
                cached_upto, cached = 0, {}  # jobs were deleted below: count them all again
            finished, settled = dict(cached), dict(cached)
            below_upto = (Job.id <= settled_upto).label("below_upto")
            for status, model, below, n in s.execute(
                    select(Job.status, Job.model, below_upto, func.count())
                    .where(Job.id > cached_upto, Job.status.in_(tuple(FINISHED)))
                    .group_by(Job.status, Job.model, below_upto)):
                finished[status, model] = finished.get((status, model), 0) + int(n)
                if below:
                    settled[status, model] = settled.get((status, model), 0) + int(n)
            if _marginals_agree(finished, counts, by_status, by_model):
                break
        with _SETTLED_LOCK:
            self.__dict__["_settled"] = (settled_upto, settled)
        counts.update(finished)
        return counts

    @staticmethod
    def _queue_figures(s: Session, now: dt.datetime) -> dict[str, QueueFigures]:
        """Per device queue: its queued jobs, and how long the oldest has waited (since it was
        submitted, or since its latest attempt ended for a job queued again)."""
        queued = s.execute(select(Job.id, Job.device, Job.created_at, Job.attempts)
                           .where(Job.status == JobStatus.QUEUED)).all()
        # Jobs queued again (after a lost worker, a drain, a preemption): their latest
        # attempt's end, one seek each in the (job_id, number) key.
        again = [(row.id, row.attempts) for row in queued if row.attempts]
        ended = dict(s.execute(
            select(JobAttempt.job_id, JobAttempt.ended_at)
            .where(tuple_(JobAttempt.job_id, JobAttempt.number).in_(again))).all()
        ) if again else {}
        oldest: dict[str, dt.datetime] = {}
        counts: dict[str, int] = {}
        for job_id, device, created_at, _ in queued:
            since = ended.get(job_id) or created_at
            counts[device] = counts.get(device, 0) + 1
            if device not in oldest or since < oldest[device]:
                oldest[device] = since
        return {device: QueueFigures(
            queued=counts.get(device, 0),
            oldest_wait_seconds=max(0.0, (now - oldest[device]).total_seconds())
            if device in oldest else 0.0)
            for device in sorted(set(DEVICES) | set(counts))}

    @staticmethod
    def _worker_states(s: Session, now: dt.datetime,
                       lease_seconds: float) -> dict[tuple[str, str], int]:
        """Workers per (device class, state): idle, busy, draining, lost (not seen for a
        lease), stopped (shut down cleanly, not yet forgotten)."""
        figures = {(cls, state): 0 for cls in ("cpu", "cuda") for state in WORKER_STATES}
        rows = s.execute(select(Worker.device_class, Worker.state, Worker.seen_at,
                                Worker.stopped_at)).all()
        for device_class, state, seen_at, stopped_at in rows:
            shown = ("stopped" if stopped_at is not None
                     else worker_state(state, seen_at, now, lease_seconds))
            key = (device_class, shown)
            figures[key] = figures.get(key, 0) + 1
        return figures

    def _id_high_water(self, s: Session, table) -> int:
        """The largest id the table has assigned. Postgres: its id sequence's last value,
        which never goes down, even when the newest rows are deleted. SQLite: for a table
        declared AUTOINCREMENT (`jobs`, migration 0016) the same from `sqlite_sequence`;
        otherwise (`metrics`) the largest id present, the primary key's last entry."""
        if self.dialect == "postgresql":
            value = s.execute(text(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence(:t, 'id')::regclass)"),
                {"t": table.name}).scalar()
            if value is not None:
                return int(value)
        largest = int(s.execute(select(func.max(table.c.id))).scalar() or 0)
        return max(largest, self._sqlite_sequence(s, table.name) or 0)

    def _sqlite_sequence(self, s: Session, table_name: str) -> int | None:
        """SQLite's record of the largest id an AUTOINCREMENT table has used; None for
        another table, before its first row, or on another database."""
        if self.dialect != "sqlite":
            return None
        has_sequences = s.execute(text(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"
        )).first()
        if has_sequences is None:
            return None
        value = s.execute(text("SELECT seq FROM sqlite_sequence WHERE name = :t"),
                          {"t": table_name}).scalar()
        return None if value is None else int(value)

    @staticmethod
    def _running_jobs(s: Session) -> list[RunningJob]:
        """Running jobs with their step rate (over their latest loss points, by the worker's
        clock) and their latest throughput point. A few seeks per running job."""
        running = s.execute(select(Job.id, Job.model, Job.device_class, Job.device)
                            .where(Job.status == JobStatus.RUNNING).order_by(Job.id)).all()
        result = []
        for job_id, model, device_class, device in running:
            points = s.execute(
                select(Metric.step, Metric.time)
                .where(Metric.job_id == job_id, Metric.name == STEP_SERIES)
                .order_by(Metric.step.desc()).limit(STEP_RATE_POINTS)).all()
            steps_per_second = None
            if len(points) >= 2:
                (last_step, last_time), (first_step, first_time) = points[0], points[-1]
                if last_time > first_time:
                    steps_per_second = (last_step - first_step) / (last_time - first_time)
            throughput = unit = None
            for series, series_unit in THROUGHPUT_SERIES.items():
                value = s.execute(
                    select(Metric.value)
                    .where(Metric.job_id == job_id, Metric.name == series)
                    .order_by(Metric.step.desc()).limit(1)).scalar()
                if value is not None:
                    throughput, unit = float(value), series_unit
                    break
            result.append(RunningJob(job_id=job_id, model=model,
                                     device=device_class or device,
                                     steps_per_second=steps_per_second,
                                     throughput=throughput, throughput_unit=unit))
        return result

    @staticmethod
    def _recent_attempts(s: Session, since: dt.datetime
                         ) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """One pass over `job_attempts`: (final status, run time) of the attempts that ended
        since `since` with their job's final status (the job's last attempt), and (device,
        submission to claim) of the first claims made since then."""
        ended = and_(JobAttempt.ended_at >= since, JobAttempt.outcome.in_(tuple(FINISHED)))
        first = and_(JobAttempt.number == 1, JobAttempt.started_at >= since)
        rows = s.execute(
            select(JobAttempt.number, JobAttempt.outcome, JobAttempt.started_at,
                   JobAttempt.ended_at, Job.device, Job.created_at)
            .join(Job, Job.id == JobAttempt.job_id).where(or_(ended, first))).all()
        durations, waits = [], []
        for number, outcome, started, ended_at, device, created in rows:
            if ended_at is not None and ended_at >= since and outcome in FINISHED:
                durations.append((outcome, max(0.0, (ended_at - started).total_seconds())))
            if number == 1 and started >= since:
                waits.append((device, max(0.0, (started - created).total_seconds())))
        return durations, waits
