"""Real processes for end-to-end tests: `trainyard api`, `trainyard worker`, `trainyard up`.

Each service runs as its own OS process on a free port and is reached over HTTP only (see
trainyard/local_service.py). Logs are printed when a test fails.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.e2e.services import serving
from trainyard.local_service import LocalService, PostgresServer


@pytest.fixture
def distributed_service(tmp_path, fresh_postgres_url, redis_url, request):
    """Postgres + Redis, a uvicorn API process and one Celery worker process."""
    service = LocalService.distributed(tmp_path, fresh_postgres_url, redis_url, "e2e-worker-1@%h")
    with serving(service, request):
        yield service


@pytest.fixture
def embedded_service(tmp_path, request):
    """`trainyard up`: API, dashboard and a worker on SQLite and the file-system broker."""
    with serving(LocalService.embedded(tmp_path), request) as service:
        yield service


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of the test's own (initdb, pg_ctl), to stop and start at will."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("initdb/pg_ctl (PostgreSQL server binaries) are needed", pytrace=False)
        pytest.skip("initdb/pg_ctl (PostgreSQL server binaries) not found")
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
