"""Is a webhook URL one the service may POST to? The API's side of the SSRF check.

The address rules live in core/net.py, shared with the sender (worker/webhook_sender.py), which
checks again, resolving anew, before every delivery (DNS rebinding). Here a refused URL is a
422 naming the `url` field.
"""

from __future__ import annotations

from api.errors import invalid
from core.net import UnsafeURL, check_url
from core.settings import Settings


def check_webhook_url(url: str, settings: Settings) -> str:
    """`url` if it is http(s) and its host resolves only to addresses a webhook may reach;
    a 422 on the body's `url` otherwise."""
    try:
        check_url(url, allow_private=settings.webhooks_allow_private)
    except UnsafeURL as exc:
        raise invalid(("body", "url"), str(exc)) from exc
    return url
