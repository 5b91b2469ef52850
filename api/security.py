"""Who is calling: API keys (Bearer), dashboard sessions (cookie + CSRF token), keyless local use.

(The sign-in and sign-out routes that use this are api/routes/auth.py.)

Every route but /healthz, the dashboard's static shell and the sign-in itself depends on
`current_principal`. A key is `ty_` and 43 random URL-safe characters (256 bits); only its
SHA-256 is stored. A fast hash is enough for keys this random: nobody can guess one to hash,
and a slow hash would cost every request. Keys are made by `trainyard keys create` (the
operator, with database access) or taken from TRAINYARD_ADMIN_KEY at start (compose).

When keys are not required (the API bound to a loopback address and TRAINYARD_REQUIRE_KEYS not
set) a request without credentials acts as the local user with admin rights: everyone who can
reach 127.0.0.1 on this machine. A key sent anyway is still checked and acts as its owner.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from api.errors import forbidden, unauthorized
from core.settings import Settings
from db.store import LOCAL_OWNER, ApiKeyRecord, Store

log = logging.getLogger(__name__)

KEY_PREFIX = "ty_"
SESSION_COOKIE = "trainyard_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# User names: what `keys create --name` accepts; shown in lists and stored on every job.
# Use it with re.fullmatch: match() and "$" would let a name ending in "\n" through.
OWNER_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}"


@dataclass(frozen=True)
class Principal:
    """The caller: the user whose jobs and datasets it may see, and how it proved it."""

    owner: str
    is_admin: bool
    via: str  # "key" (Authorization: Bearer), "session" (dashboard cookie) or "local" (keyless)
    key_id: int | None = None
    csrf_token: str | None = None

    def can_see(self, owner: str) -> bool:
        return self.is_admin or owner == self.owner

    @property
    def owner_filter(self) -> str | None:
        """The owner to filter lists by; None: everyone's (admins)."""
        return None if self.is_admin else self.owner


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_api_key() -> tuple[str, str, str]:
    """A fresh key: (the key, its displayable prefix, its hash)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[: len(KEY_PREFIX) + 6], hash_secret(key)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _hostname(host_header: str) -> str:
    """The name in a Host header, without the port: "[::1]:8000" -> "::1"."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0]


def keys_required(settings: Settings) -> bool:
    if settings.require_keys is not None:
        return settings.require_keys
    return not is_loopback(settings.api_host)


def prepare_auth(settings: Settings, store: Store) -> str:
    """Check at start that the service is not open to the network; register TRAINYARD_ADMIN_KEY.

    Returns the line to log about authentication; raises RuntimeError (the service does not
    start) when it would serve a non-loopback address without keys.
    """
    admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
    if admin_key is not None:
        if len(admin_key) < 32:
            raise RuntimeError(
                "TRAINYARD_ADMIN_KEY is too short: use at least 32 random characters "
                "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        digest = hash_secret(admin_key)
        if store.find_api_key(digest) is None:
            store.add_api_key("admin", admin_key[:6] + "…", digest, is_admin=True)
    public = not is_loopback(settings.api_host)
    if public and settings.require_keys is False:
        raise RuntimeError(
            f"refusing to serve {settings.api_host} without API keys: anyone who can reach it "
            "could run code on your workers; unset TRAINYARD_REQUIRE_KEYS or bind 127.0.0.1"
        )
    if not keys_required(settings):
        return (
            f"no authentication: the API is bound to {settings.api_host}, so anyone on this "
            "machine can use it; set TRAINYARD_REQUIRE_KEYS=1 to require API keys"
        )
    if store.count_active_api_keys() == 0:
        raise RuntimeError(
            "API keys are required (the API is not bound to a loopback address, or "
            "TRAINYARD_REQUIRE_KEYS is set) but none exists: create one with "
            "`trainyard keys create --name admin --admin`, or set TRAINYARD_ADMIN_KEY"
        )
    return "API keys required on every endpoint but /healthz"


def principal_for_key(record: ApiKeyRecord, via: str,
                      csrf_token: str | None = None) -> Principal:
    return Principal(owner=record.owner, is_admin=record.is_admin, via=via, key_id=record.id,
                     csrf_token=csrf_token)


def authenticate(request: Request) -> Principal | None:
    """The caller by its Bearer key or session cookie; None when it sent neither.

    Raises 401 for a wrong, revoked or malformed credential (never falls back to keyless)."""
    store: Store = request.app.state.store
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise unauthorized("the Authorization header must be 'Bearer <API key>'")
        record = store.find_api_key(hash_secret(key.strip()))
        if record is None:
            raise unauthorized("invalid or revoked API key")
        return principal_for_key(record, "key")
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        found = store.find_web_session(hash_secret(token))
        if found is None:
            if not keys_required(request.app.state.settings):
                return None  # a stale cookie on a keyless service: as if there were none
            raise unauthorized("your dashboard session has expired: sign in again")
        record, csrf_token = found
        principal = principal_for_key(record, "session", csrf_token)
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), csrf_token.encode()):
                raise forbidden(
                    f"missing or wrong {CSRF_HEADER} header (cross-site request refused)"
                )
        return principal
    return None


def _check_local_request(request: Request) -> None:
    """Keyless access is for programs on this machine, not for web pages it visits.

    A page on another site can make the browser send requests to 127.0.0.1 (a form posting to
    /jobs/1/cancel), or rebind its own host name to 127.0.0.1 to read the answers. So keyless
    requests must name a loopback host, and a state-changing one from a browser must come from
    a page of this service (its Origin header, which browsers always send on such requests).
    """
    host = _hostname(request.headers.get("host") or "")
    if host and not is_loopback(host):
        raise forbidden(f"keyless access needs a loopback host, not {host!r}: use 127.0.0.1, "
                        "or an API key")
    origin = request.headers.get("origin")
    host_header = request.headers.get("host", "")
    cross_site = origin is not None and origin.split("://", 1)[-1] != host_header
    if request.method not in SAFE_METHODS and cross_site:
        raise forbidden("cross-site request refused (Origin does not match Host)")


async def current_principal(request: Request) -> Principal:
    """Dependency of every protected route (as PrincipalDep in api/deps.py).

    Async so that a keyless request (nothing to look up) costs no worker-thread hop; a key or
    session is looked up in the database on a worker thread."""
    if request.headers.get("authorization") is None and not request.cookies.get(SESSION_COOKIE):
        return resolve_principal(request)
    return await run_in_threadpool(resolve_principal, request)


def resolve_principal(request: Request) -> Principal:
    """The caller, or 401/403: `current_principal`'s work, for callers outside dependencies."""
    principal = authenticate(request)
    if principal is not None:
        return principal
    settings: Settings = request.app.state.settings
    if keys_required(settings):
        raise unauthorized(
            "an API key is required: send 'Authorization: Bearer <key>' "
            "(create one with `trainyard keys create --name <you>`) or sign in on the dashboard"
        )
    _check_local_request(request)
    return Principal(owner=LOCAL_OWNER, is_admin=True, via="local")
