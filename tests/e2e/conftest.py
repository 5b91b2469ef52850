"""Real processes for end-to-end tests: `trainyard api`, `trainyard worker`, `trainyard up`.

Each service runs as its own OS process on a free port and is reached over HTTP only (see
trainyard/local_service.py). Logs are printed when a test fails.
"""

from __future__ import annotations

import pytest

from trainyard.local_service import LocalService


def _failed(request) -> bool:
    report = getattr(request.node, "rep_call", None)
    return bool(report and report.failed)


@pytest.fixture
def distributed_service(tmp_path, fresh_postgres_url, redis_url, request):
    """Postgres + Redis, a uvicorn API process and one Celery worker process."""
    service = LocalService.distributed(tmp_path, fresh_postgres_url, redis_url, "e2e-worker-1@%h")
    try:
        service.wait_healthy()
        yield service
    finally:
        if _failed(request):
            print(service.logs())
        service.stop()


@pytest.fixture
def embedded_service(tmp_path, request):
    """`trainyard up`: API, dashboard and a worker on SQLite and the file-system broker."""
    service = LocalService.embedded(tmp_path)
    try:
        service.wait_healthy()
        yield service
    finally:
        if _failed(request):
            print(service.logs())
        service.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
