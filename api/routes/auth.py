"""/auth/session: the dashboard signs in with an API key and gets an HttpOnly session cookie.

The cookie holds a random token (its SHA-256 is stored, as for keys); SameSite=Strict keeps
other sites from sending it, and every state-changing request made with it must also carry the
session's CSRF token in the X-CSRF-Token header, which only our own page can read (from the
answers below). Clients other than the browser send `Authorization: Bearer <key>` instead.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from api.auth import (
    SESSION_COOKIE,
    PrincipalDep,
    authenticate,
    hash_secret,
    principal_for_key,
    keys_required,
)
from api.deps import SettingsDep, StoreDep
from api.schemas import UNPARSABLE_BODY, ErrorOut

router = APIRouter(prefix="/auth", tags=["auth"])

UNAUTHORIZED = {401: {"model": ErrorOut, "description": "No valid API key or session."}}


class SignIn(BaseModel):
    key: str = Field(min_length=1, max_length=200, description="An API key (ty_...).")


class SessionOut(BaseModel):
    owner: str = Field(description="The user the requests act for.")
    is_admin: bool
    via: str = Field(description="key, session or local (no keys required on this address).")
    keys_required: bool
    csrf_token: str | None = Field(
        default=None, description="Send it as X-CSRF-Token with POST/PUT/DELETE (sessions)."
    )


def _session_out(principal: Any, settings: Any) -> SessionOut:
    return SessionOut(owner=principal.owner, is_admin=principal.is_admin, via=principal.via,
                      keys_required=keys_required(settings), csrf_token=principal.csrf_token)


@router.post(
    "/session",
    status_code=201,
    response_model=SessionOut,
    responses={**UNAUTHORIZED, **UNPARSABLE_BODY,
               413: {"model": ErrorOut, "description": "The body is over the size limit."}},
    summary="Sign the dashboard in with an API key (sets the session cookie)",
)
def sign_in(body: SignIn, request: Request, response: Response, store: StoreDep,
            settings: SettingsDep) -> SessionOut:
    record = store.find_api_key(hash_secret(body.key.strip()))
    if record is None:
        raise HTTPException(status_code=401, detail="invalid or revoked API key")
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
    responses={403: {"model": ErrorOut, "description": "Missing X-CSRF-Token."}, **UNAUTHORIZED},
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
