"""/auth/session: the dashboard signs in with an API key and gets an HttpOnly session cookie.

The cookie holds a random token (its SHA-256 is stored, as for keys); SameSite=Strict keeps
other sites from sending it, and every state-changing request made with it must also carry the
session's CSRF token in the X-CSRF-Token header, which only our own page can read (from the
answers below). Clients other than the browser send `Authorization: Bearer <key>` instead.
"""

from __future__ import annotations

import datetime as dt
import secrets

from fastapi import APIRouter, Request, Response

from api.deps import PrincipalDep, SettingsDep, StoreDep
from api.errors import (
    CSRF_MISSING,
    SIGN_IN_TOO_LARGE,
    UNAUTHORIZED,
    UNPARSABLE_BODY,
    unauthorized,
)
from api.schemas import SessionOut, SignIn
from api.security import (
    SESSION_COOKIE,
    Principal,
    authenticate,
    hash_secret,
    keys_required,
    principal_for_key,
)
from core.settings import Settings

router = APIRouter(prefix="/auth", tags=["auth"])


def _session_out(principal: Principal, settings: Settings) -> SessionOut:
    return SessionOut(owner=principal.owner, is_admin=principal.is_admin, via=principal.via,
                      keys_required=keys_required(settings), csrf_token=principal.csrf_token)


@router.post(
    "/session",
    status_code=201,
    response_model=SessionOut,
    responses={**UNAUTHORIZED, **UNPARSABLE_BODY, **SIGN_IN_TOO_LARGE},
    summary="Sign the dashboard in with an API key (sets the session cookie)",
)
def sign_in(body: SignIn, request: Request, response: Response, store: StoreDep,
            settings: SettingsDep) -> SessionOut:
    record = store.find_api_key(hash_secret(body.key.strip()))
    if record is None:
        raise unauthorized("invalid or revoked API key", challenge=False)
    token, csrf_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    lifetime = dt.timedelta(hours=settings.session_hours)
    store.create_web_session(record.id, hash_secret(token), csrf_token,
                             dt.datetime.now(dt.UTC) + lifetime)
    response.set_cookie(
        SESSION_COOKIE, token, max_age=int(lifetime.total_seconds()), path="/",
        httponly=True, samesite="strict", secure=request.url.scheme == "https",
    )
    return _session_out(principal_for_key(record, "session", csrf_token), settings)


@router.get(
    "/session",
    response_model=SessionOut,
    responses=UNAUTHORIZED,
    summary="Who am I: the caller's user, rights and (for a session) CSRF token",
)
def whoami(principal: PrincipalDep, settings: SettingsDep) -> SessionOut:
    return _session_out(principal, settings)


@router.delete(
    "/session",
    status_code=204,
    responses={**CSRF_MISSING, **UNAUTHORIZED},
    summary="Sign out: end the dashboard session",
)
def sign_out(request: Request, store: StoreDep) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        authenticate(request)  # a cookie-borne DELETE needs its CSRF token like any other
        store.delete_web_session(hash_secret(token))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
