"""How errors leave the API: always JSON, never a stack trace or a statement.

- 422: FastAPI's validation shape without echoing the input (`validation_error_handler`).
- 507: the disk under the database or the state folder is full. The request changed nothing
  (its transaction rolled back); `/healthz` says `storage: full` until space is freed.
- 503: the database cannot be reached; try again.
- 500: anything else, logged with its traceback here, answered with a plain sentence.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from db.store import is_connection_error, is_storage_full

log = logging.getLogger("trainyard.api")

STORAGE_FULL_DETAIL = (
    "storage is full: the server could not save this request (nothing was changed); free disk "
    "space where the database and TRAINYARD_HOME live, then try again"
)


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
