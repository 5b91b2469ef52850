"""/healthz tells the truth about workers and storage; a full disk answers 507, not a bare 500.

Once, with the only worker dead, /healthz said ok while 226 jobs waited; and with the state
folder on a full filesystem, POST /jobs and /datasets answered a text/plain "Internal Server
Error". The disk here is a real tmpfs of a few MiB, filled up.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.main import create_app
from db.store import Store
from db.tables import Worker
from tests.conftest import _unavailable
from core.settings import Settings

JOB = {"model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": 1}}


def _client(store: Store, settings: Settings) -> TestClient:
    return TestClient(create_app(settings, store=store), raise_server_exceptions=False,
                      base_url="http://127.0.0.1:8000")


def test_healthz_is_degraded_while_a_queue_has_jobs_and_no_live_worker(store, api_settings):
    with _client(store, api_settings) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        job = client.post("/jobs", json={**JOB, "device": "cpu"}).json()

        health = client.get("/healthz").json()
        assert health["status"] == "degraded"
        assert health["queues"]["cpu"]["queued"] >= 1 and health["queues"]["cpu"]["workers"] == 0
        assert any("no live worker" in p and "'cpu'" in p for p in health["problems"])

        # A worker serving cpu beats: the queue is served again.
        store.record_worker_seen("w1@host", "host", 123, ["cpu", "auto"])
        health = client.get("/healthz").json()
        assert health["queues"]["cpu"]["workers"] == 1
        assert not [p for p in health["problems"] if "'cpu'" in p]

        # Its beat goes stale (no beat for longer than a lease): dead, degraded again.
        stale = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=api_settings.lease_seconds + 1)
        with store.engine.begin() as conn:
            conn.execute(update(Worker).where(Worker.name == "w1@host").values(seen_at=stale))
        assert client.get("/healthz").json()["queues"]["cpu"]["workers"] == 0

        # A worker that says it stopped is not counted either.
        store.record_worker_seen("w2@host", "host", 124, ["cpu"])
        store.record_worker_stopped("w2@host")
        assert client.get("/healthz").json()["queues"]["cpu"]["workers"] == 0
        client.post(f"/jobs/{job['id']}/cancel")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB filesystem (tmpfs), mounted for this test."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        _unavailable(f"cannot mount a small tmpfs to fill up (needs root): {result.stderr}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def _fill(folder: Path) -> None:
    """Write until the filesystem says ENOSPC, in big blocks and then in small ones."""
    for n, block in enumerate((1 << 16, 512)):
        fd = os.open(folder / f"filler-{n}", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * block)
        except OSError:
            pass
        finally:
            os.close(fd)


def test_a_full_disk_answers_507_and_health_degrades_until_space_is_freed(small_disk):
    home = small_disk / "home"
    settings = Settings(home=home, broker_url=None, database_url=None,
                        data_dir=small_disk / "data", min_free_bytes=256 * 1024,
                        reconcile_in_api=False)
    home.mkdir()
    store = Store(settings.resolved_database_url)
    try:
        with _client(store, settings) as client:
            assert client.post("/jobs", json=JOB).status_code == 201
            _fill(small_disk)

            job = client.post("/jobs", json=JOB)
            upload = client.post("/datasets", data={"name": "notes"},
                                 files={"file": ("notes.txt", b"some words here\n" * 20000,
                                                 "text/plain")})
            health = client.get("/healthz")
            for response in (job, upload):
                assert response.status_code == 507, response.text
                assert response.headers["content-type"] == "application/json"
                assert "storage is full" in response.json()["detail"]
            assert health.status_code == 200
            assert health.json()["status"] == "degraded"
            assert health.json()["storage"] == "full"

            for filler in small_disk.glob("filler*"):
                os.remove(filler)
            assert client.get("/healthz").json()["storage"] == "ok"
            again = client.post("/jobs", json=JOB)
            assert again.status_code == 201, again.text
            jobs = client.get("/jobs").json()
            # The database is intact: the first job and the new one, nothing half-written.
            assert jobs["total"] == 2
    finally:
        store.close()
