"""GET /metrics of a real `trainyard api --workers 2` (Postgres, Redis, keys required) with a
real worker: the request counts of both processes are summed exactly, whichever process
answers the scrape; the job figures move as the worker trains; the scrape token opens it.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.services import serving
from trainyard.local_service import LocalService, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

ADMIN_KEY = "a" * 40
TOKEN = "m" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def sample(body: str, name: str, **labels: str) -> float:
    found = [s.value for f in text_string_to_metric_families(body) for s in f.samples
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


@pytest.fixture
def service(tmp_path, fresh_postgres_url, redis_url, request):
    service = LocalService(tmp_path, {"TRAINYARD_DATABASE_URL": fresh_postgres_url,
                                      "TRAINYARD_BROKER_URL": redis_url,
                                      "TRAINYARD_REQUIRE_KEYS": "1",
                                      "TRAINYARD_ADMIN_KEY": ADMIN_KEY,
                                      "TRAINYARD_METRICS_TOKEN": TOKEN,
                                      "TRAINYARD_METRICS_PROBE_TIMEOUT_SECONDS": "15"},
                           free_port())
    service.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # A previous run's file, as a crash would leave it: the command must empty the folder.
    stale = tmp_path / "prometheus" / str(service.port) / "counter_1.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by an earlier run")
    service.start("api", "api", "--port", str(service.port), "--workers", "2")
    with serving(service, request, timeout=90):
        yield service


def fresh_get(service: LocalService, path: str, headers: dict | None = None) -> httpx.Response:
    """One request on a connection of its own, so either process may accept it."""
    return httpx.get(service.url + path, headers={"Connection": "close", **(headers or {})},
                     timeout=30)


def scrape(service: LocalService) -> str:
    response = fresh_get(service, "/metrics", AUTH)
    assert response.status_code == 200, response.text
    return response.text


def test_two_processes_sum_their_requests_exactly(service: LocalService, tmp_path: Path):
    files = tmp_path / "prometheus" / str(service.port)
    assert fresh_get(service, "/metrics").status_code == 401
    assert fresh_get(service, "/metrics", {"Authorization": "Bearer nope"}).status_code == 401
    assert fresh_get(service, "/metrics",
                     {"Authorization": f"Bearer {ADMIN_KEY}"}).status_code == 200

    healthz = {"method": "GET", "route": "/healthz", "status": "200"}
    before = sample(scrape(service), "trainyard_http_requests_total", **healthz)
    sent = 0
    # New connections until both processes have counted requests (their files), then more.
    deadline = time.monotonic() + 60
    while len(list(files.glob("counter_*.db"))) < 2 or sent < 300:
        assert time.monotonic() < deadline, sorted(p.name for p in files.iterdir())
        assert fresh_get(service, "/healthz").status_code == 200
        sent += 1
    # One file per process; the stale one was removed before they started.
    assert len(list(files.glob("counter_*.db"))) == 2
    assert not (files / "counter_1.db").exists()
    # Every scrape, whichever process answers it, sums both processes' counts.
    totals = {sample(scrape(service), "trainyard_http_requests_total", **healthz)
              for _ in range(10)}
    assert totals == {before + sent}


def test_figures_move_as_a_real_worker_trains(service: LocalService):
    service.start("worker", "worker", "--name", "e2e-prometheus@%h")
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    service.wait_for(lambda: sample(scrape(service), "trainyard_workers", device_class="cpu",
                                    state="idle") == 1, "an idle worker in /metrics")
    job = httpx.post(service.url + "/jobs", headers=admin, timeout=30, json={
        "model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": 2},
        "device": "cpu"}).json()
    assert sample(scrape(service), "trainyard_jobs_submitted_total") == 1
    service.http.headers.update(admin)
    service.wait_status(job["id"], {"succeeded"})
    body = scrape(service)
    assert sample(body, "trainyard_jobs", status="succeeded", model="mlp") == 1
    assert sample(body, "trainyard_jobs", status="running", model="mlp") == 0
    assert sample(body, "trainyard_queue_depth", device="cpu") == 0
    assert sample(body, "trainyard_job_duration_seconds_gcount", status="succeeded") == 1
    assert sample(body, "trainyard_job_queue_wait_seconds_gcount", device="cpu") == 1
    points = httpx.get(f"{service.url}/jobs/{job['id']}/metrics", headers=admin,
                       timeout=30).json()
    assert points  # the run wrote points, and the counter counts at least those
    assert sample(body, "trainyard_metric_points_written_total") >= 10
    assert sample(body, "trainyard_database_up") == 1
    assert sample(body, "trainyard_broker_up") == 1
    service.wait_for(lambda: sample(scrape(service), "trainyard_workers", device_class="cpu",
                                    state="idle") == 1, "the worker idle again")
