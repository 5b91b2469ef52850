"""The webhook sender: POSTs the outbox's due deliveries (db/store/webhooks.py), signed.

Every worker process runs one beside its reconciler (worker/lifecycle.py), and so does the API
when it reconciles (api/lifespan.py): never a request. Each pass claims up to BATCH due
deliveries (a lease each: no other sender touches them meanwhile), sends them on a few threads
and records the answers:

- 2xx: delivered. Anything else (an error status, a redirect, which is never followed, a
  timeout, a refused connection, an address that is not allowed): retried after
  `webhooks_retry_base_seconds * 2**(attempts-1)` (at most `webhooks_retry_max_seconds`),
  scaled by a random factor in [0.5, 1] so that a receiver back from an outage is not hit by
  every retry at once; once the next retry would come later than `webhooks_retry_for_seconds`
  after the event, the delivery is marked failed.
- Every PRUNE_SECONDS, delivered and failed deliveries older than `webhooks_keep_seconds`
  are deleted.
- A sender killed mid-send leaves its lease; when it runs out another sender sends the event
  again (at least once; the event id, in the body and X-Trainyard-Delivery, is the same).

Before each send the URL's host is resolved again and every address checked (core/net.py),
and the request goes to the checked address itself (Host header and TLS server name from the
URL), so a name that now resolves to a private address (DNS rebinding) is refused, not
followed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from core.net import UnsafeURL, check_url
from core.settings import Settings
from db.store.webhooks import ClaimedDelivery
from db.tables import utcnow
from worker.periodic import PeriodicThread

log = logging.getLogger("trainyard.webhooks")

THREADS = 4  # deliveries sent at once by one process
BATCH = 2 * THREADS  # claimed per round: all sent well within a lease
USER_AGENT = "Trainyard-Webhooks/1"
PRUNE_SECONDS = 600  # how often a sender deletes deliveries older than webhooks_keep_seconds


def body_of(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, keys sorted, the same at every
    attempt."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False).encode()


def signature(secret: str, body: bytes) -> str:
    """The X-Trainyard-Signature header's value: `sha256=<hex HMAC-SHA256 of the body>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_at(attempts: int, created_at: dt.datetime, now: dt.datetime,
             settings: Settings, rng: random.Random | None = None) -> dt.datetime | None:
    """When to try again after `attempts` failed sends (exponential backoff, jitter in
    [0.5, 1]); None once that would be past the event's retry window."""
    wait = min(settings.webhooks_retry_base_seconds * 2 ** max(attempts - 1, 0),
               settings.webhooks_retry_max_seconds)
    wait *= (rng or random).uniform(0.5, 1.0)
    at = now + dt.timedelta(seconds=wait)
    return at if at <= created_at + dt.timedelta(seconds=settings.webhooks_retry_for_seconds) \
        else None


class WebhookSender(PeriodicThread):
    """Sends due deliveries every `webhooks_poll_seconds` in a daemon thread."""

    def __init__(self, store, settings: Settings) -> None:
        super().__init__("webhooks", settings.webhooks_poll_seconds)
        self.store, self.settings = store, settings
        timeout = settings.webhooks_timeout_seconds
        self.http = httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
                                 follow_redirects=False, trust_env=False)
        self.next_prune = 0.0  # monotonic time of the next pruning of old deliveries

    def tick(self) -> None:
        try:
            while self.send_due() == BATCH and not self._stop.is_set():
                pass
            if time.monotonic() >= self.next_prune:
                self.next_prune = time.monotonic() + PRUNE_SECONDS
                self.store.prune_webhook_deliveries(self.settings.webhooks_keep_seconds)
        except Exception:  # noqa: BLE001 - database away: try again next time
            log.warning("webhook sending failed", exc_info=True)

    def send_due(self) -> int:
        """Claim and send one batch of due deliveries; returns how many were claimed."""
        batch = self.store.claim_webhook_deliveries(BATCH, self.settings.webhooks_lease_seconds)
        if batch:
            with ThreadPoolExecutor(THREADS, thread_name_prefix="webhook") as pool:
                list(pool.map(self.deliver, batch))
        return len(batch)

    def deliver(self, delivery: ClaimedDelivery) -> bool:
        """Send one delivery and record the outcome; True if delivered."""
        status_code, error = None, None
        try:
            status_code = self.post(delivery)
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}" + (
                    " (a redirect: never followed)" if 300 <= status_code < 400 else "")
        except UnsafeURL as exc:
            error = f"refused: {exc}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - one bad delivery must not stop the others
            error = f"{type(exc).__name__}: {exc}"
        delivered = error is None
        when = None if delivered else retry_at(delivery.attempts, delivery.created_at,
                                               utcnow(), self.settings)
        try:
            self.store.finish_webhook_delivery(delivery, delivered=delivered,
                                               status_code=status_code, error=error,
                                               retry_at=when)
        except Exception:  # noqa: BLE001 - the lease runs out; it is sent again
            log.warning("could not record delivery %s", delivery.id, exc_info=True)
        if not delivered:
            log.info("webhook delivery %s (%s, attempt %d) failed: %s; %s", delivery.id,
                     delivery.event_type, delivery.attempts, error,
                     f"retry at {when:%H:%M:%S}" if when else "giving up")
        return delivered

    def post(self, delivery: ClaimedDelivery) -> int:
        """POST the delivery to the address its host resolves to now (checked); the answer's
        status code (its body is not read)."""
        target = check_url(delivery.url, self.settings.webhooks_allow_private)
        ip = target.addresses[0]
        parts = urlsplit(delivery.url)
        literal = f"[{ip}]" if ip.version == 6 else str(ip)
        pinned = urlunsplit((parts.scheme, f"{literal}:{target.port}", parts.path or "/",
                             parts.query, ""))
        body = body_of(delivery.payload)
        headers = {"Host": parts.netloc, "Content-Type": "application/json",
                   "User-Agent": USER_AGENT, "X-Trainyard-Event": delivery.event_type,
                   "X-Trainyard-Delivery": delivery.event_id,
                   "X-Trainyard-Signature": signature(delivery.secret, body)}
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        with self.http.stream("POST", pinned, content=body, headers=headers,
                              extensions=extensions) as response:
            return response.status_code

    def stop(self) -> None:
        if self._thread.ident is not None:  # started (tests drive `send_due` themselves)
            super().stop()
        self.http.close()
