"""ASGI middlewares around the whole app: a cap on request bodies, and security headers
(with the Content-Security-Policy strings) on every response."""

from __future__ import annotations

import re

from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import too_large

# Image files sent to a classifier (api/routes/inference.py) have their own cap.
PREDICT_PATH = re.compile(r"/jobs/[0-9]+/predict")
# Room for the multipart envelope (boundaries, headers, the small form fields) around a file.
MULTIPART_OVERHEAD = 64 * 1024


class BodySizeLimit:
    """Cap every request body: dataset uploads at the upload limit, anything else at
    TRAINYARD_MAX_REQUEST_BYTES (a job spec is a few hundred bytes).

    A declared Content-Length over the cap is refused before a byte is read; a body sent without
    one (chunked) is counted as it arrives and refused with 413 as soon as it passes the cap, so
    no request can make the server buffer more than the cap.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int,
                 max_predict_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes
        self.max_predict_bytes = max_predict_bytes or max_bytes

    def _limit(self, scope: Scope) -> tuple[int, int, str]:
        """(cap in bytes, the figure shown, its name) for this request."""
        path = scope["path"].rstrip("/")
        if scope["method"] == "POST" and path == "/datasets":
            return (self.max_upload_bytes + MULTIPART_OVERHEAD, self.max_upload_bytes,
                    "upload limit")
        if scope["method"] == "POST" and PREDICT_PATH.fullmatch(path):
            return self.max_predict_bytes, self.max_predict_bytes, "predict request limit"
        return self.max_bytes, self.max_bytes, "request size limit"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap, shown, what = self._limit(scope)
        detail = f"the request is larger than the {what} of {shown} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            await JSONResponse(status_code=413, content={"detail": detail})(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    # Propagates out of the body parser as this 413 (FastAPI re-raises
                    # HTTPExceptions met while reading a body).
                    raise too_large(detail)
            return message

        await self.app(scope, counted_receive, send)


# The dashboard loads only its own files: no inline script, no other origin. Inline styles are
# allowed because plotly.js sets chart styles at run time; frame-ancestors forbids framing.
DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
class SecurityHeaders:
    """Headers on every response: a Content-Security-Policy, no MIME sniffing, no framing, no
    referrer, and no caching of API answers (they hold users' data)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # /docs is Swagger UI from files we serve, started by a script file: the same policy.
        csp = DASHBOARD_CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = csp
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "no-referrer"
                if "cache-control" not in headers and headers.get("content-type", "").startswith(
                    "application/json"
                ):
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
