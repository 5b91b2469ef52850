"""The API's docs page air-gapped: /docs in a real browser with every request that leaves the
machine blocked. Swagger UI must come from the service itself (the fastapi-offline package's
files), render every operation, and never try to reach another host."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from test_dashboard import SHOTS, Page, wait_js
from test_dashboard import browser as browser  # noqa: F401 - fixtures of this module too
from test_dashboard import service as service  # noqa: F401

pytestmark = pytest.mark.e2e

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def test_docs_render_every_operation_with_the_network_cut_off(browser, service):
    tab = Page(browser, service)
    outside: list[str] = []

    def only_local(route, request) -> None:
        if urlsplit(request.url).hostname in LOCAL_HOSTS or request.url.startswith("data:"):
            route.continue_()
        else:
            outside.append(request.url)
            route.abort()

    tab.context.route("**/*", only_local)
    page = tab.page
    page.goto(service.url + "/docs")
    wait_js(page, "document.querySelectorAll('.opblock').length > 0")

    paths = page.eval_on_selector_all(".opblock .opblock-summary-path",
                                      "els => els.map(e => e.getAttribute('data-path'))")
    schema = service.http.get("/openapi.json").json()
    operations = sum(len(methods) for methods in schema["paths"].values())
    assert len(paths) == operations, (len(paths), operations)
    for path in ("/jobs", "/jobs/{job_id}", "/datasets", "/sweeps"):
        assert path in paths, path
    # Styled by Swagger UI's own sheet (served from /docs/assets), not unstyled HTML.
    assert page.eval_on_selector(".swagger-ui", "el => getComputedStyle(el).fontFamily") != ""
    assert outside == [], f"/docs tried to reach other hosts: {outside}"
    page.screenshot(path=str(SHOTS / "api-docs-offline.png"))
    tab.close()  # fails on any JavaScript error (a Content-Security-Policy refusal included)


def test_docs_assets_are_only_the_ones_the_page_uses(service):
    assert service.http.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert service.http.get("/docs/assets/index.html").status_code == 404
    assert service.http.get("/docs/assets/..%2F..%2Fpyproject.toml").status_code == 404
