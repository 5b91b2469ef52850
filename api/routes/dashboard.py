"""The dashboard: its page at `/`, and plotly.js served from the installed `plotly` package.

Our own HTML, CSS and JavaScript live in api/dashboard/ (static files, no build step); the
chart library is the `plotly` PyPI package, a dependency, whose wheel ships the browser bundle
(plotly/package_data/plotly.min.js). It is served gzipped, with a content hash in its URL and a
one-year immutable cache, so a browser downloads it once per plotly version.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from api.errors import not_found

router = APIRouter(include_in_schema=False)

# Our page and its static files; create_app mounts DASHBOARD_DIR / "static" at /static.
DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
PLOTLY_URL = "static/vendor/plotly.min.js"
LONG_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    raw: bytes
    gzipped: bytes
    etag: str


def plotly_js_path() -> Path | None:
    """plotly.min.js inside the installed plotly package, found without importing plotly."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


@functools.cache
def plotly_asset() -> Asset | None:
    path = plotly_js_path()
    if path is None:
        return None
    raw = path.read_bytes()
    return Asset(raw, gzip.compress(raw, compresslevel=6, mtime=0),
                 hashlib.sha256(raw).hexdigest()[:16])


@functools.cache
def index_html() -> str:
    html = (DASHBOARD_DIR / "index.html").read_text(encoding="utf-8")
    asset = plotly_asset()
    version = asset.etag if asset is not None else "missing"
    # The page's own script loads plotly only on the pages with charts; it finds the URL here.
    return html.replace("{{plotly_url}}", f"{PLOTLY_URL}?v={version}")


@router.get("/", response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    return HTMLResponse(index_html(), headers={"Cache-Control": "no-cache"})


@router.get("/" + PLOTLY_URL)
def plotly_js(request: Request) -> Response:
    asset = plotly_asset()
    if asset is None:
        raise not_found("plotly is not installed: pip install plotly")
    headers = {"Cache-Control": LONG_CACHE, "ETag": f'"{asset.etag}"', "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == f'"{asset.etag}"':
        return Response(status_code=304, headers=headers)
    body = asset.raw
    if "gzip" in request.headers.get("accept-encoding", ""):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    return Response(content=body, media_type="text/javascript", headers=headers)
