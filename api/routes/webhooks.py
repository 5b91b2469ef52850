"""/webhooks: a user's subscriptions to job and sweep events, and their recent deliveries.

Deliveries are written by the state changes themselves (the outbox, db/store/webhooks.py) and
sent by workers and the reconciling API (worker/webhook_sender.py), never here. Another user's
webhook is answered as one that does not exist (404); an admin may see and delete any.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import MAX_ID, PrincipalDep, SettingsDep, StoreDep
from api.errors import UNPARSABLE_BODY, answer, invalid, not_found
from api.schemas.webhooks import DeliveryOut, WebhookCreated, WebhookIn, WebhookOut
from api.security import Principal
from api.services.webhook_urls import check_webhook_url
from db.store import Store
from db.store.webhooks import WebhookRecord

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

WEBHOOK_NOT_FOUND = answer(404, "No such webhook (or it is another user's).")


def _webhook_or_404(store: Store, principal: Principal, webhook_id: int) -> WebhookRecord:
    hook = store.get_webhook(webhook_id) if 1 <= webhook_id <= MAX_ID else None
    if hook is None or not principal.can_see(hook.owner):
        raise not_found(f"webhook {webhook_id} not found")
    return hook


@router.post("", response_model=WebhookCreated, status_code=201,
             responses={**UNPARSABLE_BODY, **answer(
                 422, "A bad URL (not http(s), or to a private address), an unknown event, or "
                      "the user's limit of webhooks reached.")},
             summary="Register a webhook")
def create_webhook(body: WebhookIn, settings: SettingsDep, store: StoreDep,
                   principal: PrincipalDep) -> WebhookCreated:
    """Subscribe the caller to `events` of their own jobs and sweeps. The answer holds the
    signing secret (the one given, or one generated): it is not shown again."""
    check_webhook_url(body.url, settings)
    secret = body.secret or secrets.token_urlsafe(32)
    hook = store.create_webhook(principal.owner, body.url, body.events, secret,
                                max_per_owner=settings.webhooks_max_per_user)
    if hook is None:
        raise invalid(("body",), f"{principal.owner} has {settings.webhooks_max_per_user} "
                      "webhooks, the most allowed (TRAINYARD_WEBHOOKS_MAX_PER_USER); delete "
                      "one first")
    return WebhookCreated(**hook.to_dict(), secret=secret)


@router.get("", response_model=list[WebhookOut], summary="The caller's webhooks")
def list_webhooks(store: StoreDep, principal: PrincipalDep) -> list[WebhookOut]:
    return [WebhookOut(**hook.to_dict()) for hook in store.list_webhooks(principal.owner)]


@router.delete("/{webhook_id}", status_code=204, responses=WEBHOOK_NOT_FOUND,
               summary="Delete a webhook (its pending deliveries are not sent)")
def delete_webhook(webhook_id: int, store: StoreDep, principal: PrincipalDep) -> Response:
    _webhook_or_404(store, principal, webhook_id)
    if not store.delete_webhook(webhook_id):
        raise not_found(f"webhook {webhook_id} not found")
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryOut],
            responses=WEBHOOK_NOT_FOUND, summary="A webhook's recent deliveries, newest first")
def list_deliveries(webhook_id: int, store: StoreDep, principal: PrincipalDep,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[DeliveryOut]:
    _webhook_or_404(store, principal, webhook_id)
    return [DeliveryOut(**d.to_dict()) for d in store.list_webhook_deliveries(webhook_id, limit)]
