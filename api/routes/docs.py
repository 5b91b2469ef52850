"""/openapi.json and /docs (Swagger UI): served behind authentication like the API they
describe, so create_app turns FastAPI's own public ones off.

Swagger UI's files come from the static folder of the `fastapi-offline` package installed with
Trainyard (Swagger UI 5, which reads the OpenAPI 3.1 FastAPI writes), never from a CDN, so the
page works on a machine with no way out to the internet. The page is ours: no inline script
(the same Content-Security-Policy as the dashboard), Swagger UI started by
api/dashboard/static/docs.js.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from api.errors import not_found

router = APIRouter(include_in_schema=False)

# The only files of the package the page loads; anything else under /docs/assets is a 404.
SWAGGER_FILES = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon.png": "image/png",
}
DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Trainyard API</title>
<link rel="icon" type="image/png" href="/docs/assets/favicon.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script>
</body>
</html>
"""


@functools.cache
def swagger_ui_dir() -> Path | None:
    """The installed Swagger UI files, found without importing the package (its code patches
    FastAPI apps; we want only its files), or None when it is missing."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


@router.get("/openapi.json")
def openapi_schema(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def docs_page() -> HTMLResponse:
    if swagger_ui_dir() is None:
        return HTMLResponse(
            "<!doctype html><title>Trainyard API</title><p>Swagger UI is not installed "
            "(pip install fastapi-offline); the schema is at <a href=/openapi.json>"
            "/openapi.json</a>.</p>", status_code=503)
    return HTMLResponse(DOCS_PAGE)


@router.get("/docs/assets/{name}")
def docs_asset(name: str) -> FileResponse:
    folder = swagger_ui_dir()
    if folder is None or name not in SWAGGER_FILES:
        raise not_found(f"no docs asset {name!r}")
    # A day: the files change only when the package is upgraded.
    return FileResponse(folder / name, media_type=SWAGGER_FILES[name],
                        headers={"Cache-Control": "public, max-age=86400"})
