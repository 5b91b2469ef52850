"""What the API does when it starts and stops: migrate the database, check that it is not open
to the network without keys, start its reconciler; then release what it opened."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from celery import Celery
from fastapi import FastAPI

from api.security import keys_required, prepare_auth
from core.settings import Settings
from db.store import Store
from worker.celery_app import enqueue_job
from worker.reconciler import Reconciler
from worker.webhook_sender import WebhookSender

log = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def redacted_url(url: str) -> str:
    """A URL fit for a log line: its password, if any, replaced by ***."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy-style URL: keep only scheme and host
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}" if rest else "<url>"


def make_lifespan(settings: Settings, store: Store, celery_app: Celery, *,
                  owns_store: bool, owns_celery: bool) -> Lifespan:
    """The app's lifespan. It closes the store and the Celery app only when it owns them (a
    store or Celery app passed to create_app is the caller's)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.migrate()
        auth_line = prepare_auth(settings, store)  # raises (no start) when open to the network
        if keys_required(settings):
            log.info(auth_line)
        else:
            log.warning(auth_line)
        log.info("API ready: database migrated, broker %s",
                 redacted_url(settings.resolved_broker_url))
        # Recovery must not hang on one worker being alive: the API reconciles too.
        reconciler = Reconciler(
            store, lambda job_id, device: enqueue_job(celery_app, job_id, device), settings
        ).start() if settings.reconcile_in_api else None
        # The API sends the webhook outbox's due deliveries too when it reconciles.
        webhooks = WebhookSender(store, settings).start() if settings.reconcile_in_api else None
        try:
            yield
        finally:
            if webhooks is not None:
                webhooks.stop()
            if reconciler is not None:
                reconciler.stop()
            if owns_celery:
                celery_app.close()
            if owns_store:
                store.close()

    return lifespan
