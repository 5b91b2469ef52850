"""Preemption: which running jobs are asked to give their worker to a queued job of higher
priority.

A queued job J that cannot start because every live worker serving its device (seen within
the lease, not stopped, not draining) is busy with a job of strictly lower priority takes the
worker of the lowest-priority of those jobs; among equals, the one whose attempt started last
(it has the least work since it was claimed). The request is only a mark on the victim,
`jobs.preempt_requested_at`: its worker notices it at its next status check, stops at the next
step with a checkpoint there, and puts the job back in the queue (attempt outcome
`preempted`); then that worker claims the best queued job, which is J (or better).

Queued jobs, highest priority first, are paired with workers greedily, as the claims will go:
an idle worker that serves J takes J (no preemption); so does a worker whose job was already
asked to stop (it is about to be free); otherwise J takes a victim. So each queued job that
needs a worker causes at most one request, and passes repeated before the victim stops request
nothing more. A victim whose attempt has run less than `min_run_seconds` is reserved for J but
not asked yet (J waits for it rather than taking a job of higher priority): a job that has just
started or resumed is never stopped again at once, so two jobs cannot take a worker from each
other in turn. Among victims of the same lowest priority, one that has run long enough is
preferred to a younger one.

A pass is a bounded number of queries whatever the queue's length (the live workers with their
jobs, then for each device at most as many queued jobs as live workers serve it), plus one
guarded UPDATE per request (still running, same attempt, not yet asked, started at least
`min_run_seconds` ago), so any number of reconcilers may run it at once: each request is made
once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, func, select

from core.states import JobStatus
from db.tables import Job, Worker, utcnow


@dataclass(frozen=True)
class Preemption:
    """A running job asked to give its worker to a queued job of higher priority."""

    job_id: int
    priority: int
    worker: str
    for_job_id: int  # a queued job it makes room for (one of that priority and device)
    for_priority: int


@dataclass(frozen=True)
class _LiveWorker:
    """A live worker as the pairing sees it; `job_*` describe its running job (busy only)."""

    name: str
    devices: frozenset[str]
    job_id: int | None = None
    priority: int = 0
    attempt: int = 0
    started_at: dt.datetime | None = None
    asked: bool = False  # its job was already asked to stop: the worker is about to be free


@dataclass(frozen=True)
class _Queued:
    id: int
    priority: int
    device: str


def _most_specific(workers: Sequence[_LiveWorker], device: str) -> _LiveWorker | None:
    """Of `workers`, one that serves `device`, serving as few other devices as possible (a cpu
    worker for an `auto` job leaves a cuda one for cuda jobs); None if none serves it."""
    serving = [w for w in workers if device in w.devices]
    return min(serving, key=lambda w: (len(w.devices), w.name)) if serving else None


def _victim_for(job: _Queued, candidates: Sequence[_LiveWorker],
                started_before: dt.datetime) -> _LiveWorker | None:
    """The busy worker whose job `job` takes, if any serves its device with a job of strictly
    lower priority: the lowest priority; among those, one that has run long enough; then the
    one that started last (the least work since its claim)."""
    victims = [w for w in candidates if job.device in w.devices and w.priority < job.priority]

    def order(w: _LiveWorker):
        young = w.started_at is None or w.started_at > started_before
        started = w.started_at.timestamp() if w.started_at is not None else 0.0
        return (w.priority, young, -started, -(w.job_id or 0))

    return min(victims, key=order) if victims else None


def _plan(queued: Sequence[_Queued], idle: Sequence[_LiveWorker], busy: Sequence[_LiveWorker],
          started_before: dt.datetime) -> list[tuple[_LiveWorker, _Queued]]:
    """(victim, queued job) pairs to request now: the greedy pairing of the module's docstring.
    `queued` is in priority order; a victim must have started before `started_before`."""
    free = list(idle)
    leaving = [w for w in busy if w.asked]
    candidates = [w for w in busy if not w.asked]
    requests: list[tuple[_LiveWorker, _Queued]] = []
    for job in queued:
        for pool in (free, leaving):  # a worker free now, or about to be: no preemption
            taken = _most_specific(pool, job.device)
            if taken is not None:
                pool.remove(taken)
                break
        else:
            victim = _victim_for(job, candidates, started_before)
            if victim is None:
                continue
            candidates.remove(victim)  # reserved for `job`, even while too young to ask
            if victim.started_at is not None and victim.started_at <= started_before:
                requests.append((victim, job))
    return requests


class PreemptionMixin:
    """request_preemptions (the reconciler's pass) and what a worker asks of its job."""

    def request_preemptions(self, alive_seconds: float, min_run_seconds: float,
                            max_running_per_owner: int | None = None) -> list[Preemption]:
        """Ask the running jobs that must give their worker to a queued job of higher priority
        to stop (see the module's docstring). `alive_seconds`: how recently a worker must have
        been seen to count; `max_running_per_owner`: queued jobs of owners already running
        that many jobs are left out (a freed worker could not take them). Returns the
        requests made by this call."""
        now = utcnow()
        idle, busy = self._live_workers(now - dt.timedelta(seconds=alive_seconds))
        victims = [w for w in busy if not w.asked]
        if not victims:
            return []
        served: dict[str, int] = {}
        for w in (*idle, *busy):
            for device in w.devices:
                served[device] = served.get(device, 0) + 1
        queued = self._queued_above(min(w.priority for w in victims), served,
                                    max_running_per_owner)
        started_before = now - dt.timedelta(seconds=min_run_seconds)
        made = []
        for victim, job in _plan(queued, idle, busy, started_before):
            if self._mark_preempted(victim, started_before, now):
                made.append(Preemption(victim.job_id, victim.priority, victim.name, job.id,
                                       job.priority))
        return made

    def _live_workers(self, seen_after: dt.datetime
                      ) -> tuple[list[_LiveWorker], list[_LiveWorker]]:
        """(idle, busy) live workers that are not draining; a busy one with its running job.
        A worker marked busy whose job is not running on it any more counts as neither."""
        running_here = and_(Job.id == Worker.job_id, Job.status == JobStatus.RUNNING,
                            Job.worker == Worker.name)
        stmt = (select(Worker.name, Worker.queues, Worker.state, Job.id, Job.priority,
                       Job.attempts, Job.started_at, Job.preempt_requested_at)
                .outerjoin(Job, running_here)
                .where(Worker.seen_at >= seen_after, Worker.stopped_at.is_(None),
                       Worker.state != "draining"))
        idle: list[_LiveWorker] = []
        busy: list[_LiveWorker] = []
        with self._session() as s:
            rows = s.execute(stmt).all()
        for name, queues, state, job_id, priority, attempt, started_at, asked_at in rows:
            devices = frozenset(filter(None, (queues or "").split(",")))
            if state == "idle":
                idle.append(_LiveWorker(name, devices))
            elif state == "busy" and job_id is not None:
                busy.append(_LiveWorker(name, devices, job_id, priority, attempt, started_at,
                                        asked=asked_at is not None))
        return idle, busy

    def _queued_above(self, priority: int, served: dict[str, int],
                      max_running_per_owner: int | None) -> list[_Queued]:
        """For each device, its queued jobs of the highest priorities above `priority`, as
        many as live workers serve it (`served`), all in priority order. No job further back
        can matter: the ones before it of its device either take every worker serving it or
        found no victim, and a later job of that device, of no higher priority, finds none
        either. Which of several jobs of the same priority and device is taken does not change
        which jobs are asked to stop (only `Preemption.for_job_id`), so the newest are: the
        index (status, priority, id) read backwards answers at once however long the queue.
        One query per device served (three at most)."""
        queued: list[_Queued] = []
        with self._session() as s:
            for device, workers in sorted(served.items()):
                stmt = (select(Job.id, Job.priority, Job.device)
                        .where(Job.status == JobStatus.QUEUED, Job.device == device,
                               Job.priority > priority))
                if max_running_per_owner is not None:
                    running = (select(Job.owner, func.count().label("n"))
                               .where(Job.status == JobStatus.RUNNING)
                               .group_by(Job.owner).subquery("running"))
                    stmt = (stmt.outerjoin(running, running.c.owner == Job.owner)
                            .where(func.coalesce(running.c.n, 0) < max_running_per_owner))
                stmt = stmt.order_by(Job.priority.desc(), Job.id.desc()).limit(workers)
                queued.extend(_Queued(*row) for row in s.execute(stmt).all())
        return sorted(queued, key=lambda job: (-job.priority, job.id))

    def _mark_preempted(self, victim: _LiveWorker, started_before: dt.datetime,
                        now: dt.datetime) -> bool:
        """The guarded request: still running in the same attempt, not asked yet, and started
        before `started_before`. False when another reconciler (or the job) got there first."""
        guards = [Job.preempt_requested_at.is_(None), Job.started_at <= started_before]
        return self._transition(victim.job_id, (JobStatus.RUNNING,),
                                {"preempt_requested_at": now}, where=guards,
                                attempt=victim.attempt) is not None

    def run_signals(self, job_id: int) -> tuple[str | None, dt.datetime | None]:
        """(status, preempt_requested_at) of a job, in one query: what its worker polls to
        learn that it was cancelled (status) or must give its worker back (preemption).
        (None, None) for a job that does not exist."""
        with self._session() as s:
            row = s.execute(select(Job.status, Job.preempt_requested_at)
                            .where(Job.id == job_id)).first()
        return (row[0], row[1]) if row is not None else (None, None)
