"""Webhooks: what POST /webhooks accepts, and how webhooks and their deliveries are answered."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas.common import StorableStr
from db.tables import WEBHOOK_EVENTS

ALLOWED = ", ".join(WEBHOOK_EVENTS)


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: StorableStr = Field(
        max_length=2000, description="Where deliveries are POSTed: http or https, to a public "
        "address (loopback, link-local and private ones are refused unless "
        "TRAINYARD_WEBHOOKS_ALLOW_PRIVATE=1).")
    events: list[str] = Field(
        min_length=1, max_length=len(WEBHOOK_EVENTS),
        description=f"The events to receive, one or more of: {ALLOWED}.")
    secret: StorableStr | None = Field(
        default=None, min_length=16, max_length=200,
        description="The key of the HMAC-SHA256 signature (16 to 200 characters); default: "
        "one generated and answered once, here.")

    @field_validator("events")
    @classmethod
    def known_events(cls, events: list[str]) -> list[str]:
        unknown = [e for e in events if e not in WEBHOOK_EVENTS]
        if unknown:
            raise ValueError(f"unknown event {unknown[0]!r}; the events are {ALLOWED}")
        return list(dict.fromkeys(events))


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    owner: str
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="The signing key: shown this once, keep it.")


class DeliveryOut(BaseModel):
    id: int
    event_id: str = Field(description="The event's id (X-Trainyard-Delivery): the same at "
                          "every retry.")
    event_type: str
    subject: str = Field(description="What the event is about: `job:<id>` or `sweep:<id>`.")
    status: str = Field(description="pending (to send, or being sent), delivered or failed.")
    attempts: int = Field(description="Sends begun so far.")
    last_status_code: int | None = Field(description="The HTTP status of the last answer.")
    last_error: str | None = Field(description="Why the last attempt did not deliver.")
    created_at: datetime = Field(description="When the event happened.")
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = Field(description="While pending: when it is due "
                                             "(or its sender's lease ends).")
    delivered_at: datetime | None
