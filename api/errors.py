"""How errors leave the API: always JSON, never a stack trace or a statement.

Two shapes, the ones clients parse:
- 422: FastAPI's validation shape, {"detail": [{"type", "loc", "msg", "ctx"?}]}, also for the
  checks only the server can make (catalogue ranges, dataset kinds, query lists): `invalid`.
  The input is never echoed (`validation_error_handler`).
- everything else: {"detail": "a sentence"} (ErrorOut):
  401/403 credentials, 404 not found (or not yours: the same answer), 409 conflicts, 413 too
  large, 429 too many queued jobs,
  507: the disk under the database or the state folder is full. The request changed nothing
  (its transaction rolled back); `/healthz` says `storage: full` until space is freed.
  503: the database cannot be reached; try again.
  500: anything else, logged with its traceback here, answered with a plain sentence.

The helpers below build those errors; the dicts after them describe them on the OpenAPI page.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.schemas import ErrorOut, ValidationErrorOut
from db.store import is_connection_error, is_storage_full

log = logging.getLogger("trainyard.api")

STORAGE_FULL_DETAIL = (
    "storage is full: the server could not save this request (nothing was changed); free disk "
    "space where the database and TRAINYARD_HOME live, then try again"
)

# ---- errors routes raise -------------------------------------------------------------------


def invalid(loc: Sequence[str | int], msg: str) -> RequestValidationError:
    """A 422 naming one field, in the same shape as FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": tuple(loc), "msg": msg}])


def unauthorized(detail: str, *, challenge: bool = True) -> HTTPException:
    """A 401; with `challenge`, it names the scheme to use (WWW-Authenticate: Bearer). The
    sign-in form's own 401 has none: the key it was sent is the only way in it offers."""
    headers = {"WWW-Authenticate": "Bearer"} if challenge else None
    return HTTPException(status_code=401, detail=detail, headers=headers)


def forbidden(detail: str) -> HTTPException:
    return HTTPException(status_code=403, detail=detail)


def not_found(detail: str) -> HTTPException:
    return HTTPException(status_code=404, detail=detail)


def job_not_found(job_id: int) -> HTTPException:
    return not_found(f"job {job_id} not found")


def jobs_not_found(job_ids: Sequence[int]) -> HTTPException:
    """A 404 naming the first 20 ids of a request for several jobs."""
    shown = ", ".join(str(i) for i in job_ids[:20]) + (" ..." if len(job_ids) > 20 else "")
    noun = "job" if len(job_ids) == 1 else "jobs"
    return not_found(f"{noun} {shown} not found")


def checkpoint_not_found(job_id: int, checkpoint_id: int) -> HTTPException:
    return not_found(f"checkpoint {checkpoint_id} of job {job_id} not found")


def worker_not_found(name: str) -> HTTPException:
    return not_found(f"worker {name!r} not found (unknown, or stopped)")


def conflict(detail: str) -> HTTPException:
    return HTTPException(status_code=409, detail=detail)


def too_large(detail: str) -> HTTPException:
    return HTTPException(status_code=413, detail=detail)


def too_many_queued(owner: str, queued: int, limit: int) -> HTTPException:
    """A 429 for a user at the queue cap; a client may retry after some jobs have started."""
    return HTTPException(
        status_code=429,
        detail=f"{owner} has {queued} queued jobs; the limit is {limit} "
        "(TRAINYARD_MAX_QUEUED_JOBS_PER_USER): wait for some to start, or cancel some",
        headers={"Retry-After": "30"},
    )


# ---- handlers: the last word on what leaves the app ----------------------------------------


def _printable(text: str) -> str:
    """Text that encodes as UTF-8: a lone surrogate sent as "\\ud800" becomes that escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body, {"detail": [{"type", "loc", "msg", "ctx"?}]}, without echoing input.

    The default handler also returns each error's `input`: the whole offending value, which may
    be megabytes long, nested past the recursion limit, or hold a lone surrogate that cannot be
    encoded, turning a 422 into a 500. The message names the problem without it.
    """
    errors = []
    for error in exc.errors():
        item: dict[str, Any] = {
            "type": error.get("type", "value_error"),
            "loc": [_printable(p) if isinstance(p, str) else p for p in error.get("loc", ())],
            "msg": _printable(str(error.get("msg", ""))),
        }
        if error.get("ctx"):
            item["ctx"] = {
                _printable(str(k)): v if isinstance(v, int | float | bool) else _printable(str(v))
                for k, v in error["ctx"].items()
            }
        errors.append(item)
    return JSONResponse(status_code=422, content={"detail": errors})


async def unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """The last resort: 507 for a full disk, 503 for an unreachable database, else 500."""
    if is_storage_full(exc):
        request.app.state.storage_full_at = time.monotonic()
        log.error("%s %s: storage is full (%s)", request.method, request.url.path,
                  type(exc).__name__)
        return JSONResponse(status_code=507, content={"detail": STORAGE_FULL_DETAIL})
    if is_connection_error(exc):
        log.error("%s %s: the database cannot be reached (%s)", request.method,
                  request.url.path, type(exc).__name__)
        return JSONResponse(status_code=503, content={
            "detail": "the database cannot be reached; try again shortly"})
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(status_code=500, content={"detail": "internal server error"})


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)
    app.state.storage_full_at = None  # monotonic time of the last 507, read by /healthz


# ---- the errors on the OpenAPI page ---------------------------------------------------------

Responses = dict[int | str, dict[str, Any]]


def answer(status: int, description: str) -> Responses:
    """One error answer for the OpenAPI page: FastAPI's validation shape for 422, ErrorOut for
    every other status. Several combine with `|`."""
    model = ValidationErrorOut if status == 422 else ErrorOut
    return {status: {"model": model, "description": description}}


# Every protected route: added once, where create_app includes the protected routers.
AUTH_RESPONSES = (
    answer(401, "No API key or session, or a wrong or revoked one.")
    | answer(403, "A session request that changes state without its X-CSRF-Token.")
    | answer(413, "The body is larger than the request size limit.")
)
# FastAPI answers 400 itself, before the route runs, for a body it cannot parse: JSON that is
# not UTF-8, or a broken multipart envelope.
UNPARSABLE_BODY = answer(
    400, "The body cannot be parsed (not UTF-8, or a broken multipart envelope).")
NOT_FOUND = answer(404, "No such job (or checkpoint).")
RUNS_NOT_FOUND = answer(404, "Some of the ids are unknown.")
QUEUE_FULL = answer(429, "The user has as many queued jobs as allowed.")
JOB_FINISHED = answer(409, "The job already finished.")
SERIES_REQUEST_INVALID = answer(
    422, "Bad ids, names or max_points, or more runs x names (or points) than one request may "
    "read (TRAINYARD_MAX_COMPARE_SERIES), with the field to change and the maximum.")
DATASET_NAME_TAKEN = answer(409, "The name is taken.")
WORKER_NOT_FOUND = answer(404, "No such worker (or it stopped cleanly).")
ADMIN_ONLY = answer(403, "The caller is not an admin (or a session request that changes state "
                         "came without its X-CSRF-Token).")
UPLOAD_TOO_LARGE = answer(413, "The file is larger than the upload limit.")
# The /auth routes are public (they check credentials themselves), so they list their own.
UNAUTHORIZED = answer(401, "No valid API key or session.")
SIGN_IN_TOO_LARGE = answer(413, "The body is over the size limit.")
CSRF_MISSING = answer(403, "Missing X-CSRF-Token.")
