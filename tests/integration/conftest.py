"""Fixtures for the HTTP API tests: the real app on a real Store and a real Celery broker.

`store` (tests/conftest.py) runs each test on SQLite and on Postgres. The Celery app is the
one `create_app` builds from Settings: the embedded file-system broker under a temporary
home, so a submitted job is a real message file that a worker could consume.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.security import new_api_key
from core.settings import Settings


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    # Every value that matters is explicit, so TRAINYARD_* variables of the shell running the
    # tests cannot point them at a real broker or data folder.
    return Settings(
        home=tmp_path / "home",
        broker_url=None,
        database_url=None,
        data_dir=tmp_path / "data",
        max_upload_bytes=4096,  # UPLOAD_LIMIT in test_api.py
        # The Postgres test database is shared by the session: an in-process API must not
        # requeue the rows other tests left "running" (the e2e tests run the real reconciler).
        reconcile_in_api=False,
    )


@pytest.fixture
def client(store, api_settings: Settings) -> Iterator[TestClient]:
    app = create_app(api_settings, store=store)
    # A loopback host, as a local program would use: keyless access is refused for any other.
    with TestClient(app, raise_server_exceptions=False,
                    base_url="http://127.0.0.1:8000") as test_client:
        yield test_client


@pytest.fixture
def user_keys(store) -> dict[str, dict[str, str]]:
    """The Authorization headers of two users, alice and bob (neither an admin)."""
    headers = {}
    for owner in ("alice", "bob"):
        key, prefix, digest = new_api_key()
        store.add_api_key(owner, prefix, digest)
        headers[owner] = {"Authorization": f"Bearer {key}"}
    return headers


@pytest.fixture
def keyed_client(store, user_keys, api_settings: Settings) -> Iterator[TestClient]:
    """The app with API keys required (made after the keys: it refuses to start without one)."""
    settings = api_settings.model_copy(update={"require_keys": True})
    with TestClient(create_app(settings, store=store), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def big_client(store, api_settings: Settings) -> Iterator[TestClient]:
    """The keyless (local admin) app with room for image uploads (8 MiB)."""
    settings = api_settings.model_copy(update={"max_upload_bytes": 8 * 2**20})
    with TestClient(create_app(settings, store=store), raise_server_exceptions=False,
                    base_url="http://127.0.0.1:8000") as client:
        yield client
