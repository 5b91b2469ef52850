"""Webhooks: users' subscriptions, the outbox of their deliveries, and the senders' claims.

The outbox: `_queue_job_event` and `_queue_sweep_event` are called by the state changes
themselves (db/store/jobs.py `_transition`, db/store/scheduling.py `_claim_in`,
db/store/sweeps.py), inside their transaction, so a change and its deliveries commit or
roll back together. For an owner without webhooks they cost one seek on ix_webhooks_owner_id.

Sending (worker/webhook_sender.py): `claim_webhook_deliveries` takes due rows with a guarded
UPDATE that moves `next_attempt_at` to the end of a lease and stamps a token; only one sender
holds a row at a time, and a sender that dies leaves a lease that runs out, after which another
sends it again (at least once: the event id lets receivers drop the duplicate).
`finish_webhook_delivery` records the answer.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from core.metrics import finite_or_none, metric_goal
from db.store.base import json_safe
from db.store.records import Record, record_of
from db.tables import Job, Metric, Sweep, Webhook, WebhookDelivery, utcnow

# What a job event's `data` carries (the job's own fields, as GET /jobs/{id} names them).
JOB_FIELDS = ("id", "name", "owner", "model", "dataset", "device", "status", "error",
              "attempts", "epoch", "total_epochs", "step", "total_steps", "worker", "priority",
              "hyperparameters", "sweep_id", "trial", "created_at", "started_at", "finished_at")
SWEEP_FIELDS = ("id", "name", "owner", "model", "dataset", "method", "status", "error",
                "objective_metric", "objective_goal", "max_trials", "created_at",
                "finished_at")
FINISHED_EVENTS = {"succeeded", "failed", "cancelled", "pruned"}


@dataclass(frozen=True)
class WebhookRecord(Record):
    id: int
    owner: str
    url: str
    events: list[str]
    created_at: dt.datetime


@dataclass(frozen=True)
class DeliveryRecord(Record):
    id: int
    webhook_id: int
    event_id: str
    event_type: str
    subject: str
    status: str
    attempts: int
    next_attempt_at: dt.datetime
    last_status_code: int | None
    last_error: str | None
    created_at: dt.datetime
    last_attempt_at: dt.datetime | None
    delivered_at: dt.datetime | None


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a sender holds until `lease_until`: what to send where, signed how."""

    id: int
    token: str
    url: str
    secret: str
    event_id: str
    event_type: str
    payload: dict[str, Any]
    attempts: int
    created_at: dt.datetime


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def job_event_type(status: str, reason: str | None = None) -> str | None:
    """The event of a job entering `status` (`reason`: the attempt's outcome, for a
    requeue); None for a change no event names."""
    if status == "running":
        return "job.started"
    if status == "queued":
        return "job.preempted" if reason == "preempted" else "job.requeued"
    return f"job.{status}" if status in FINISHED_EVENTS else None


class WebhooksMixin:
    """Webhook rows, the outbox inserts, and the senders' claims (see the module docstring)."""

    # ---- subscriptions ----
    def create_webhook(self, owner: str, url: str, events: Sequence[str], secret: str,
                       max_per_owner: int | None = None) -> WebhookRecord | None:
        """Register a webhook; None (nothing inserted) when the owner has `max_per_owner`."""
        with self._session() as s:
            if max_per_owner is not None:
                held = s.scalar(select(func.count()).select_from(Webhook)
                                .where(Webhook.owner == owner)) or 0
                if held >= max_per_owner:
                    return None
            hook = Webhook(owner=owner, url=url, events=list(dict.fromkeys(events)),
                           secret=secret, created_at=utcnow())
            s.add(hook)
            s.flush()
            return record_of(WebhookRecord, hook)

    def list_webhooks(self, owner: str) -> list[WebhookRecord]:
        with self._session() as s:
            rows = s.scalars(select(Webhook).where(Webhook.owner == owner).order_by(Webhook.id))
            return [record_of(WebhookRecord, r) for r in rows]

    def get_webhook(self, webhook_id: int) -> WebhookRecord | None:
        with self._session() as s:
            hook = s.get(Webhook, webhook_id)
            return record_of(WebhookRecord, hook) if hook is not None else None

    def delete_webhook(self, webhook_id: int) -> bool:
        """Delete a webhook and its deliveries (pending ones are not sent); False if none."""
        with self._session() as s:
            s.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id))
            return s.execute(delete(Webhook).where(Webhook.id == webhook_id)).rowcount == 1

    def list_webhook_deliveries(self, webhook_id: int, limit: int = 50) -> list[DeliveryRecord]:
        """The webhook's newest deliveries first, at most `limit`."""
        with self._session() as s:
            rows = s.scalars(select(WebhookDelivery)
                             .where(WebhookDelivery.webhook_id == webhook_id)
                             .order_by(WebhookDelivery.id.desc()).limit(max(limit, 0)))
            return [record_of(DeliveryRecord, r) for r in rows]

    def prune_webhook_deliveries(self, older_than_seconds: float) -> int:
        """Delete delivered and failed deliveries whose last attempt is older than that (a
        range of ix_webhook_deliveries_status_next_attempt_at); how many."""
        cutoff = utcnow() - dt.timedelta(seconds=older_than_seconds)
        with self._session() as s:
            return s.execute(delete(WebhookDelivery).where(
                WebhookDelivery.status.in_(("delivered", "failed")),
                WebhookDelivery.next_attempt_at < cutoff)).rowcount or 0

    # ---- the outbox: called inside the transaction of a state change ----
    @staticmethod
    def _subscribers(s: Session, owner: str, event_type: str) -> list[int]:
        """Ids of `owner`'s webhooks that receive `event_type`: one seek on
        ix_webhooks_owner_id (the whole cost when the owner has none)."""
        rows = s.execute(select(Webhook.id, Webhook.events).where(Webhook.owner == owner))
        return [hook_id for hook_id, events in rows if event_type in (events or ())]

    @staticmethod
    def _queue_event(s: Session, hooks: Sequence[int], event_type: str, subject: str,
                     data: dict[str, Any]) -> str:
        """One pending delivery per webhook of one new event; returns the event id."""
        now = utcnow()
        event_id = str(uuid.uuid4())
        body = {"id": event_id, "type": event_type, "created_at": now.isoformat(),
                "data": json_safe({k: _plain(v) for k, v in data.items()})}
        s.execute(insert(WebhookDelivery), [
            {"webhook_id": hook, "event_id": event_id, "event_type": event_type,
             "subject": subject, "payload": body, "status": "pending", "attempts": 0,
             "next_attempt_at": now, "created_at": now} for hook in hooks])
        return event_id

    def _queue_job_event(self, s: Session, job: Any, reason: str | None = None) -> None:
        """Deliveries of the event of `job` (a row just changed, in this transaction) having
        entered its status, to its owner's webhooks that want it."""
        event_type = job_event_type(job.status, reason)
        if event_type is None:
            return
        hooks = self._subscribers(s, job.owner, event_type)
        if not hooks:
            return
        data = {name: getattr(job, name) for name in JOB_FIELDS}
        if job.status in FINISHED_EVENTS:
            data["best_metrics"] = self._best_of_job(s, job.id)
        self._queue_event(s, hooks, event_type, f"job:{job.id}", data)

    def _queue_jobs_event(self, s: Session, owner: str, job_ids: Sequence[int]) -> None:
        """As `_queue_job_event` for several jobs of one owner (a cancelled sweep's trials)."""
        if not job_ids or not self._subscribers(s, owner, "job.cancelled"):
            return
        for job in s.scalars(select(Job).where(Job.id.in_(list(job_ids))).order_by(Job.id)):
            self._queue_job_event(s, job)

    @staticmethod
    def _best_of_job(s: Session, job_id: int) -> dict[str, float | None]:
        """The job's best value of each metric with a notion of best (lowest loss, highest
        accuracy): one grouped read of the (job_id, name, step) index."""
        rows = s.execute(select(Metric.name, func.min(Metric.value), func.max(Metric.value))
                         .where(Metric.job_id == job_id).group_by(Metric.name))
        best = {}
        for name, low, high in rows:
            goal = metric_goal(name)
            if goal is not None:
                best[name] = finite_or_none(low if goal == "min" else high)
        return best

    def _queue_sweep_event(self, s: Session, sweep_id: int) -> None:
        """The `sweep.finished` event of a sweep that has just ended, in this transaction."""
        sweep = s.get(Sweep, sweep_id)
        if sweep is None:
            return
        hooks = self._subscribers(s, sweep.owner, "sweep.finished")
        if not hooks:
            return
        data = {name: getattr(sweep, name) for name in SWEEP_FIELDS}
        counts = s.execute(select(Job.status, func.count()).where(Job.sweep_id == sweep_id)
                           .group_by(Job.status)).all()
        data["trials"] = {status: n for status, n in counts}
        scored = s.execute(select(Job.id, Job.trial, Job.name, Metric.value).join(
            Metric, (Metric.job_id == Job.id) & (Metric.name == sweep.objective_metric)
            & (Metric.epoch == Job.epoch)).where(
            Job.sweep_id == sweep_id, Job.status == "succeeded",
            Metric.value.is_not(None))).all()
        sign = 1 if sweep.objective_goal == "max" else -1
        top = max(scored, key=lambda r: (sign * r.value, -r.trial), default=None)
        data["best"] = None if top is None else {
            "job_id": top.id, "trial": top.trial, "name": top.name,
            "objective": finite_or_none(top.value)}
        self._queue_event(s, hooks, "sweep.finished", f"sweep:{sweep_id}", data)

    # ---- sending ----
    def claim_webhook_deliveries(self, limit: int, lease_seconds: float
                                 ) -> list[ClaimedDelivery]:
        """Up to `limit` due pending deliveries, each claimed for `lease_seconds` with a
        guarded UPDATE (still pending and due), so concurrent senders never hold the same
        one; `attempts` counts the send about to begin."""
        now = utcnow()
        due = (WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        with self._session() as s:
            ids = list(s.scalars(select(WebhookDelivery.id).where(*due)
                                 .order_by(WebhookDelivery.next_attempt_at)
                                 .limit(max(limit, 0))))
        claimed = []
        for delivery_id in ids:
            token = str(uuid.uuid4())
            with self._session() as s:
                row = s.execute(
                    update(WebhookDelivery).where(WebhookDelivery.id == delivery_id, *due)
                    .values(next_attempt_at=now + dt.timedelta(seconds=lease_seconds),
                            lease_token=token, attempts=WebhookDelivery.attempts + 1,
                            last_attempt_at=now)
                    .returning(WebhookDelivery.webhook_id, WebhookDelivery.event_id,
                               WebhookDelivery.event_type, WebhookDelivery.payload,
                               WebhookDelivery.attempts, WebhookDelivery.created_at)
                ).first()
                if row is None:  # another sender took it first
                    continue
                hook = s.execute(select(Webhook.url, Webhook.secret)
                                 .where(Webhook.id == row.webhook_id)).first()
            if hook is not None:
                claimed.append(ClaimedDelivery(
                    id=delivery_id, token=token, url=hook.url, secret=hook.secret,
                    event_id=row.event_id, event_type=row.event_type, payload=row.payload,
                    attempts=row.attempts, created_at=row.created_at))
        return claimed

    def finish_webhook_delivery(self, delivery: ClaimedDelivery, *, delivered: bool,
                                status_code: int | None = None, error: str | None = None,
                                retry_at: dt.datetime | None = None) -> bool:
        """Record a send's outcome: delivered; or due again at `retry_at`; or (no `retry_at`)
        failed for good. A failure is recorded only while the sender's claim is still its
        own (its lease may have run out and another sender taken over); a delivery is
        recorded whenever the row is still pending: it is true whoever sent it."""
        now = utcnow()
        guards = [WebhookDelivery.id == delivery.id, WebhookDelivery.status == "pending"]
        values: dict[str, Any] = {"last_status_code": status_code}
        if delivered:
            values.update(status="delivered", delivered_at=now, last_error=None)
        else:
            guards.append(WebhookDelivery.lease_token == delivery.token)
            values["last_error"] = (error or "")[:2000]
            if retry_at is None:
                values.update(status="failed")
            else:
                values.update(next_attempt_at=retry_at)
        with self._session() as s:
            return s.execute(update(WebhookDelivery).where(*guards).values(**values)
                             ).rowcount == 1
