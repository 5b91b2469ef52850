"""GET /metrics read by Prometheus' own text parser, on SQLite and Postgres: the figures move as
jobs are submitted, claimed, report points and finish (written through the store the way
workers write them); counters survive an API restart and a job deletion; request metrics are
labelled by route template; who may scrape; unreachable database and broker; and no query of
a scrape scans the metrics table. With real processes (two API processes, a real worker):
tests/e2e/test_prometheus_workers.py.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, func, select, update

from api.main import create_app
from api.security import new_api_key
from core.settings import Settings
from db.store import Store
from db.tables import Job, JobAttempt, utcnow

CPU = ["cpu", "auto"]
TOKEN = "scrape-" + "t" * 40
JOB = {"model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": 1}, "device": "cpu"}


class Scrape:
    """One /metrics answer, parsed: every sample by name, with its labels."""

    def __init__(self, body: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(body)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        """The one sample of `name` whose labels include `labels`; 0 when there is none."""
        found = [s.value for s in self.samples if s.name == name
                 and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) <= 1, f"{name}{labels}: {found}"
        return found[0] if found else 0.0

    def labels(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name and label in s.labels}


def scrape(client: TestClient, headers: dict[str, str] | None = None) -> Scrape:
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


def make_settings(tmp_path: Path, **overrides) -> Settings:
    # A generous probe timeout: a loaded test machine must not read as a database down.
    values = {"home": tmp_path / "home", "broker_url": None, "database_url": None,
              "data_dir": tmp_path / "data", "reconcile_in_api": False,
              "metrics_probe_timeout_seconds": 15.0, **overrides}
    return Settings(**values)


def local_client(store: Store, settings: Settings) -> TestClient:
    return TestClient(create_app(settings, store=store), raise_server_exceptions=False,
                      base_url="http://127.0.0.1:8000")


@pytest.fixture
def client(store: Store, tmp_path: Path) -> Iterator[TestClient]:
    with local_client(store, make_settings(tmp_path)) as c:
        yield c


def test_figures_move_as_jobs_run(client: TestClient, store: Store, tmp_path: Path):
    before = scrape(client)
    assert before.value("trainyard_database_up") == 1
    assert before.value("trainyard_broker_up") == 1
    assert before.value("trainyard_jobs_submitted_total") == 0
    assert before.value("trainyard_queue_depth", device="cpu") == 0
    assert before.labels("trainyard_queue_depth", "device") == {"cpu", "cuda", "auto"}

    ids = [client.post("/jobs", json=JOB).json()["id"] for _ in range(3)]
    store.record_worker_seen("w1@box", "box", 4242, CPU, starting=True)
    queued = scrape(client)
    assert queued.value("trainyard_jobs", status="queued", model="mlp") == 3
    assert queued.value("trainyard_queue_depth", device="cpu") == 3
    assert queued.value("trainyard_queue_oldest_wait_seconds", device="cpu") >= 0
    assert queued.value("trainyard_jobs_submitted_total") == 3
    assert queued.value("trainyard_workers", device_class="cpu", state="idle") == 1

    # The oldest waiting job has waited as long as its submission is old.
    backdate(store, ids[0], seconds=600)
    assert 600 <= scrape(client).value("trainyard_queue_oldest_wait_seconds",
                                       device="cpu") < 700

    # A worker claims the oldest job and reports 20 steps, 0.5 s apart: 2 steps/s.
    job = store.claim_next_job("w1@box", CPU)
    assert job.id == ids[0]
    t0 = time.time() - 30
    points = [("train_loss", step, 1, 1.0 / step, t0 + 0.5 * step) for step in range(1, 21)]
    points += [("samples_per_s", step, 1, 1000.0 + step, t0 + 0.5 * step)
               for step in range(1, 21)]
    store.add_metrics(job.id, points)
    running = scrape(client)
    labels = {"job_id": str(job.id), "model": "mlp", "device": "cpu"}
    assert running.value("trainyard_jobs", status="running", model="mlp") == 1
    assert running.value("trainyard_queue_depth", device="cpu") == 2
    assert running.value("trainyard_workers", device_class="cpu", state="busy") == 1
    assert running.value("trainyard_running_job_steps_per_second", **labels) == pytest.approx(2.0)
    assert running.value("trainyard_running_job_throughput_per_second", unit="samples",
                         **labels) == 1020.0
    assert running.value("trainyard_metric_points_written_total") >= 40
    # Its wait, submission to claim, is in the queue-wait distribution: above 600 s.
    assert running.value("trainyard_job_queue_wait_seconds_gcount", device="cpu") == 1
    assert running.value("trainyard_job_queue_wait_seconds_bucket", device="cpu",
                         le="300.0") == 0
    assert running.value("trainyard_job_queue_wait_seconds_bucket", device="cpu",
                         le="900.0") == 1

    assert store.finish_job(job.id, "succeeded")
    client.post(f"/jobs/{ids[1]}/cancel")
    done = scrape(client)
    assert done.value("trainyard_jobs", status="succeeded", model="mlp") == 1
    assert done.value("trainyard_jobs", status="cancelled", model="mlp") == 1
    assert done.value("trainyard_jobs", status="queued", model="mlp") == 1
    assert done.value("trainyard_jobs", status="running", model="mlp") == 0
    assert done.value("trainyard_running_job_steps_per_second", **labels) == 0  # gone
    assert done.value("trainyard_workers", device_class="cpu", state="idle") == 1
    assert done.value("trainyard_job_duration_seconds_gcount", status="succeeded") == 1
    assert done.value("trainyard_job_duration_seconds_bucket", status="succeeded",
                      le="+Inf") == 1
    # The cancelled job never started: no run time.
    assert done.value("trainyard_job_duration_seconds_gcount", status="cancelled") == 0
    assert done.families["trainyard_jobs_submitted"].type == "counter"
    assert done.families["trainyard_job_duration_seconds"].type == "histogram"

    # The counters come from the database: a new API process reads the same, and deleting a
    # finished job (here: the one with every point) does not lower them.
    points_written = done.value("trainyard_metric_points_written_total")
    with local_client(store, make_settings(tmp_path)) as restarted:
        assert scrape(restarted).value("trainyard_metric_points_written_total") == points_written
    store.delete_job(job.id)
    after = scrape(client)
    assert after.value("trainyard_jobs_submitted_total") == 3
    assert after.value("trainyard_metric_points_written_total") == points_written
    assert after.value("trainyard_jobs", status="succeeded", model="mlp") == 0
    with local_client(store, make_settings(tmp_path)) as restarted:
        fresh = scrape(restarted)
    assert fresh.value("trainyard_jobs_submitted_total") == 3  # job 3 is still there
    # Postgres reads the id sequence; SQLite has none: a process started after the newest
    # points were deleted reads the largest id left (a counter reset for Prometheus).
    expected = points_written if store.dialect == "postgresql" else 0
    assert fresh.value("trainyard_metric_points_written_total") == expected


def backdate(store: Store, job_id: int, seconds: float) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(
            created_at=utcnow() - dt.timedelta(seconds=seconds)))


def test_windowed_distributions_forget_old_jobs(client: TestClient, store: Store):
    store.record_worker_seen("w1@box", "box", 4242, CPU, starting=True)
    job_id = client.post("/jobs", json=JOB).json()["id"]
    assert store.claim_next_job("w1@box", CPU).id == job_id
    assert store.finish_job(job_id, "failed", error="boom")
    assert scrape(client).value("trainyard_job_duration_seconds_gcount", status="failed") == 1
    old = utcnow() - dt.timedelta(hours=3)
    with store.engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(
            started_at=old, finished_at=old, created_at=old))
        conn.execute(update(JobAttempt).where(JobAttempt.job_id == job_id).values(
            started_at=old, ended_at=old))
    later = scrape(client)
    assert later.value("trainyard_job_duration_seconds_gcount", status="failed") == 0
    assert later.value("trainyard_job_queue_wait_seconds_gcount", device="cpu") == 0
    assert later.value("trainyard_jobs", status="failed", model="mlp") == 1


def test_requests_are_labelled_by_route_template(client: TestClient):
    client.get("/jobs/987654")
    client.get("/jobs/987655")
    client.get("/jobs/987654/metrics")
    client.get("/no/such/path/123")
    client.get("/static/no-such-file.css")
    client.request("BREW", "/jobs")
    body = client.get("/metrics").text
    parsed = Scrape(body)
    name = "trainyard_http_requests_total"
    assert parsed.value(name, method="GET", route="/jobs/{job_id}", status="404") == 2
    assert parsed.value(name, method="GET", route="/jobs/{job_id}/metrics", status="404") == 1
    assert parsed.value(name, method="GET", route="<unmatched>", status="404") == 1
    assert parsed.value(name, method="GET", route="/static/{path}", status="404") == 1
    assert parsed.value(name, method="OTHER", route="/jobs", status="405") == 1
    assert parsed.value("trainyard_http_request_duration_seconds_count", method="GET",
                        route="/jobs/{job_id}") == 2
    routes = parsed.labels(name, "route")
    assert not any(re.search(r"\d{3,}", route) for route in routes), routes
    # A request counts once it is answered: this scrape is in the next one.
    again = scrape(client)
    assert again.value(name, method="GET", route="/metrics", status="200") >= 1


def test_scraping_needs_an_admin_key_or_the_token_when_keys_are_required(
        store: Store, tmp_path: Path):
    keys = {}
    for owner, admin in (("alice", False), ("root", True)):
        key, prefix, digest = new_api_key()
        store.add_api_key(owner, prefix, digest, is_admin=admin)
        keys[owner] = {"Authorization": f"Bearer {key}"}
    settings = make_settings(tmp_path, require_keys=True, metrics_token=TOKEN)
    with TestClient(create_app(settings, store=store), raise_server_exceptions=False) as c:
        refused = c.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert c.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
        forbidden = c.get("/metrics", headers=keys["alice"])
        assert forbidden.status_code == 403
        assert "TRAINYARD_METRICS_TOKEN" in forbidden.json()["detail"]
        assert scrape(c, keys["root"]).value("trainyard_database_up") == 1
        assert scrape(c, {"Authorization": f"Bearer {TOKEN}"}).value("trainyard_database_up") == 1
        # The token opens /metrics only: it is not an API key.
        assert c.get("/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401


def test_keyless_local_service_serves_metrics_openly(client: TestClient):
    assert scrape(client).value("trainyard_database_up") == 1


def test_the_format_follows_the_accept_header_as_prometheus_sends_it(client: TestClient):
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as openmetrics_families,
    )

    client.post("/jobs", json=JOB)
    plain = client.get("/metrics")
    assert plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    accept = ("application/openmetrics-text;version=1.0.0;q=0.5,"
              "application/openmetrics-text;version=0.0.1;q=0.4,"
              "text/plain;version=0.0.4;q=0.3,*/*;q=0.2")  # Prometheus 2's scrape request
    answer = client.get("/metrics", headers={"Accept": accept})
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics_families(answer.text)}
    assert families["trainyard_job_duration_seconds"].type == "gaugehistogram"
    assert families["trainyard_jobs_submitted"].type == "counter"
    (queued,) = [s for s in families["trainyard_jobs"].samples
                 if s.labels == {"status": "queued", "model": "mlp"}]
    assert queued.value == 1


def test_a_short_scrape_token_is_refused_at_start(tmp_path: Path):
    with pytest.raises(ValueError, match="metrics_token"):
        make_settings(tmp_path, metrics_token="too-short")


def test_unreachable_database_and_broker_read_zero_quickly(tmp_path: Path):
    # Nothing listens on port 1: both refuse at once; the scrape still answers 200.
    settings = make_settings(tmp_path, broker_url="redis://127.0.0.1:1/0",
                             metrics_probe_timeout_seconds=1.0)
    down = Store("postgresql+psycopg://trainyard@127.0.0.1:1/nothing")
    try:
        # No lifespan (no `with`): it would migrate the database that is not there.
        c = TestClient(create_app(settings, store=down), raise_server_exceptions=False,
                       base_url="http://127.0.0.1:8000")
        started = time.monotonic()
        parsed = scrape(c)
        assert time.monotonic() - started < 5
    finally:
        down.close()
    assert parsed.value("trainyard_database_up") == 0
    assert parsed.value("trainyard_broker_up") == 0
    assert "trainyard_jobs" not in parsed.families


@pytest.mark.redis
def test_a_reachable_redis_broker_reads_one(store: Store, tmp_path: Path, redis_url: str):
    with local_client(store, make_settings(tmp_path, broker_url=redis_url)) as c:
        assert scrape(c).value("trainyard_broker_up") == 1


def test_no_scrape_query_scans_the_metrics_table(tmp_path: Path):
    """SQLite's plan of every statement a scrape runs (with a job running, so the throughput
    seeks run too): the metrics table is only ever searched through an index, never scanned,
    so a scrape costs the same at 10^8 points as at 10."""
    store = Store(f"sqlite:///{tmp_path / 'plan.db'}")
    store.migrate()
    statements: list[tuple[str, object]] = []
    try:
        with local_client(store, make_settings(tmp_path)) as c:
            store.record_worker_seen("w1@box", "box", 1, CPU, starting=True)
            c.post("/jobs", json=JOB)
            job = store.claim_next_job("w1@box", CPU)
            store.add_metrics(job.id, [("train_loss", s, 1, 0.5, None) for s in (1, 2, 3)])

            def note(conn, cursor, statement, parameters, context, executemany):
                statements.append((statement, parameters))

            event.listen(store.engine, "before_cursor_execute", note)
            try:
                assert scrape(c).value("trainyard_running_job_steps_per_second",
                                       job_id=str(job.id), model="mlp", device="cpu") >= 0
            finally:
                event.remove(store.engine, "before_cursor_execute", note)
        touching = [(sql, params) for sql, params in statements if "metrics" in sql]
        assert len(touching) >= 3  # the id high-water mark and the two throughput seeks
        with store.engine.connect() as conn:
            for sql, params in touching:
                plan = " | ".join(row[-1] for row in conn.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {sql}", params).fetchall())
                assert not re.search(r"\bSCAN metrics\b", plan), (sql, plan)
                assert "metrics" in plan, plan
    finally:
        store.close()


def test_the_metrics_are_listed_in_the_schema(client: TestClient):
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/metrics"]["get"]["responses"]) >= {"200", "401", "403"}


def test_job_counts_kept_between_scrapes_match_a_full_count(store: Store):
    """The finished jobs' counts are kept between scrapes (db/store/telemetry.py): jobs that
    finish out of order, new ones, and deletions below the kept range all come out as a
    plain GROUP BY over every job says."""

    def full_count() -> dict[tuple[str, str], int]:
        with store.engine.connect() as conn:
            return {(st, m): n for st, m, n in conn.execute(
                select(Job.status, Job.model, func.count()).group_by(Job.status, Job.model))}

    def scraped() -> dict[tuple[str, str], int]:
        return {k: n for k, n in store.telemetry(30.0, 3600.0).jobs.items() if n}

    rng = random.Random(16)
    store.record_worker_seen("w1@box", "box", 1, CPU, starting=True)
    ids: list[int] = []
    for round_ in range(12):
        for _ in range(rng.randint(0, 4)):
            model = rng.choice(["mlp", "cnn"])
            ids.append(store.create_job(model, "digits", {"epochs": 1}, device="cpu").id)
        for _ in range(rng.randint(0, 3)):
            job = store.claim_next_job("w1@box", CPU)
            if job is not None:
                store.finish_job(job.id, rng.choice(["succeeded", "failed", "pruned"]))
        finished = [i for i in ids if store.get_status(i) in ("succeeded", "failed", "pruned")]
        if round_ % 4 == 3 and finished:
            gone = rng.choice(finished)
            store.delete_job(gone)
            ids.remove(gone)
        assert scraped() == full_count(), f"round {round_}"


def test_deleting_the_newest_job_lowers_no_counter_and_no_count_goes_stale(store: Store):
    """The newest finished mlp job deleted, and a cnn job submitted and finished before the
    next scrape (before migration 0016 SQLite gave it the deleted job's id)."""
    store.record_worker_seen("w1@box", "box", 1, CPU, starting=True)
    for _ in range(2):
        store.create_job("mlp", "digits", {"epochs": 1}, device="cpu")
        store.finish_job(store.claim_next_job("w1@box", CPU).id, "succeeded")
    assert store.telemetry(30.0, 3600.0).jobs[("succeeded", "mlp")] == 2
    store.delete_job(2)
    # A fresh Store, as a restarted API has: the id high-water mark is the database's.
    with Store(store.url) as restarted:
        assert restarted.telemetry(30.0, 3600.0).jobs_id_high_water == 2
    store.create_job("cnn", "digits", {"epochs": 1}, device="cpu")
    store.finish_job(store.claim_next_job("w1@box", CPU).id, "succeeded")
    figures = store.telemetry(30.0, 3600.0)
    assert (figures.jobs.get(("succeeded", "mlp")), figures.jobs.get(("succeeded", "cnn"))) \
        == (1, 1)
    assert figures.jobs_id_high_water == 3


def test_the_multiprocess_folder_is_emptied_before_the_processes_start(tmp_path, monkeypatch):
    from api.request_metrics import MULTIPROC_ENV, prepare_multiprocess_dir

    monkeypatch.setenv(MULTIPROC_ENV, "")  # unset again after the test
    folder = tmp_path / "prometheus" / "8123"
    folder.mkdir(parents=True)
    (folder / "counter_4242.db").write_bytes(b"stale")
    (folder / "notes.txt").write_text("not prometheus_client's: kept")
    assert prepare_multiprocess_dir(tmp_path, 8123) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert os.environ[MULTIPROC_ENV] == str(folder)
