"""Webhooks: users' subscriptions to job and sweep events, and the outbox of their deliveries.

A delivery row is written in the same transaction as the state change that causes it (the
outbox), so an event is never lost to a process that dies right after the change; workers and
the API send due rows (worker/webhook_sender.py). A delivery keeps its whole body, and has no
foreign key to the job or sweep it is about: deleting a job leaves its deliveries intact.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from db.tables.base import Base, BigIntPK, JSONType, UTCDateTime, _in, utcnow

# The events a webhook may subscribe to (POST /webhooks `events`).
WEBHOOK_EVENTS = ("job.started", "job.succeeded", "job.failed", "job.cancelled", "job.pruned",
                  "job.requeued", "job.preempted", "sweep.finished")
DELIVERY_STATUSES = ("pending", "delivered", "failed")


class Webhook(Base):
    """One user's subscription: where to POST which events, and the secret that signs them."""

    __tablename__ = "webhooks"
    __table_args__ = (
        Index("ix_webhooks_owner_id", "owner", "id", info={"serves": (
            "A user's webhooks (GET /webhooks), and at each job or sweep state change whether "
            "its owner subscribes to anything: one index seek, the whole cost of a change "
            "for an owner without webhooks.")}),
        {"info": {"pk_serves": "One webhook by id (DELETE /webhooks/{id}, its deliveries)."}},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, doc=(
        "The webhook's number, as in /webhooks/{id}."))
    owner: Mapped[str] = mapped_column(String(100), doc=(
        "The user who registered it; it receives events about that user's jobs and sweeps "
        "only."))
    url: Mapped[str] = mapped_column(String(2000), doc=(
        "Where deliveries are POSTed (http or https; checked against private addresses at "
        "registration and again before each send)."))
    events: Mapped[list[str]] = mapped_column(JSONType, doc=(
        "The event types it receives, e.g. `[\"job.succeeded\", \"job.failed\"]`."))
    secret: Mapped[str] = mapped_column(String(200), doc=(
        "The HMAC-SHA256 key of the X-Trainyard-Signature header (the sender needs it in "
        "clear; shown to the user once, at registration)."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When it was registered."))


class WebhookDelivery(Base):
    """One event to one webhook (the outbox): its body, and how sending it has gone."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(DELIVERY_STATUSES)})", name="status"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at",
              info={"serves": (
                  "The senders' poll: pending deliveries that are due (WHERE status = "
                  "'pending' AND next_attempt_at <= now), oldest due first.")}),
        Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id", info={"serves": (
            "A webhook's recent deliveries, newest first (GET /webhooks/{id}/deliveries), "
            "and the deliveries deleted with their webhook.")}),
        {"info": {"pk_serves": "One delivery by id (its claim and its result, guarded)."}},
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True, doc=(
        "Row id."))
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"), doc=(
        "The webhook it goes to (deleting the webhook deletes its deliveries)."))
    event_id: Mapped[str] = mapped_column(String(36), doc=(
        "The event's id (a UUID), the body's `id` and the X-Trainyard-Delivery header: the "
        "same for every webhook the event goes to and every retry, so a receiver drops "
        "duplicates by it."))
    event_type: Mapped[str] = mapped_column(String(40), doc=(
        "The event, e.g. `job.succeeded` (X-Trainyard-Event)."))
    subject: Mapped[str] = mapped_column(String(40), doc=(
        "What it is about, e.g. `job:12` or `sweep:3` (no foreign key: a deleted job's "
        "deliveries stay)."))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, doc=(
        "The body `{id, type, created_at, data}`; it is serialised the same way at every "
        "attempt and signed as sent."))
    status: Mapped[str] = mapped_column(String(16), default="pending", doc=(
        "`pending` (to send, or being sent), `delivered` (a 2xx answer) or `failed` (retries "
        "ran out: TRAINYARD_WEBHOOKS_RETRY_FOR_SECONDS after the event)."))
    attempts: Mapped[int] = mapped_column(Integer, default=0, doc=(
        "Sends begun (a sender that dies mid-send has begun one)."))
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When it is due: the next retry, or while a sender holds it, the end of that "
        "sender's lease (after which another sends it again)."))
    lease_token: Mapped[str | None] = mapped_column(String(36), doc=(
        "The claim of the sender that holds it now (or held it last): its result is written "
        "only while the token is still its own."))
    last_status_code: Mapped[int | None] = mapped_column(Integer, doc=(
        "The HTTP status of the last answer (NULL: none, e.g. a timeout)."))
    last_error: Mapped[str | None] = mapped_column(Text, doc=(
        "Why the last attempt did not deliver (NULL once delivered)."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When the event happened (the outbox row was written in its transaction)."))
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When the last send began."))
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When a 2xx answer came."))
