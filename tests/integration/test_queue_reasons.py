"""Queue transparency: GET /jobs/{id}'s `queue` (position, reason, estimated start) and GET
/jobs's `queue_position`, on SQLite and Postgres, with worker rows and claims made through the
store exactly as workers make them (record_worker_seen, claim_job, update_progress).

Estimated starts are compared with bounds, not exact values: an ETA counts down from the
moment it was reported, so a slow test run sees it a little smaller.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from sqlalchemy import event, update

from api.services.queue import estimated_start
from db.tables import Job
from trainyard.local_service import LocalService, free_port

HP = {"epochs": 2, "hidden_sizes": [16, 16], "seed": 1}
CPU_QUEUES = ["cpu", "auto"]
CUDA_QUEUES = ["cpu", "cuda", "auto"]
LIMIT = 1  # TRAINYARD_MAX_RUNNING_JOBS_PER_USER for these tests


@pytest.fixture
def api_settings(api_settings):
    return api_settings.model_copy(update={"max_running_jobs_per_user": LIMIT,
                                           "lease_seconds": 30.0})


def queued(store, device="cpu", priority=0, owner="local") -> int:
    return store.create_job("mlp", "digits", HP, device=device, priority=priority,
                            owner=owner).id


def worker(store, name, queues=CPU_QUEUES) -> str:
    store.record_worker_seen(name, "host", 1, queues, starting=True)
    return name


def running(store, worker_name, eta=None, priority=0, owner="others", device="cpu") -> int:
    """A job claimed by `worker_name`, with an ETA reported when given. Its owner is not the
    queued jobs' (`local`), so the limit of LIMIT running jobs holds none of them back."""
    job_id = queued(store, device=device, priority=priority, owner=owner)
    claimed = store.claim_job(job_id, worker_name, "cuda" if device == "cuda" else "cpu")
    assert claimed is not None
    if eta is not None:
        assert store.update_progress(job_id, 1, 2, 1, 20, eta)
    return job_id


def queue_of(client, job_id) -> dict | None:
    response = client.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()["queue"]


def test_no_worker_for_the_device_then_only_draining_ones(client, store):
    job = queued(store, "cuda")
    q = queue_of(client, job)
    assert (q["position"], q["jobs_ahead"], q["estimated_start_seconds"]) == (1, 0, None)
    assert q["reason"] == {"code": "no_worker", "message": "no worker that can run cuda jobs is "
                           "connected; start one with trainyard worker"}

    # A cpu worker cannot run it; a cuda one that shut down is not connected.
    worker(store, "cpu-1")
    worker(store, "gpu-1", CUDA_QUEUES)
    store.record_worker_stopped("gpu-1")
    assert queue_of(client, job)["reason"]["code"] == "no_worker"

    # A live cuda worker that is draining takes no job, and the message says that is why.
    worker(store, "gpu-2", CUDA_QUEUES)
    store.request_worker_drain("gpu-2", lease_seconds=30)
    reason = queue_of(client, job)["reason"]
    assert reason["code"] == "no_worker"
    assert reason["message"].startswith("the only workers for cuda are draining")

    worker(store, "gpu-3", CUDA_QUEUES)
    q = queue_of(client, job)
    assert q["reason"]["code"] == "next" and q["estimated_start_seconds"] == 0
    assert "a worker is idle" in q["reason"]["message"]


def test_positions_and_reasons_for_a_mix_of_priorities_and_devices(client, store):
    worker(store, "cpu-1")
    running(store, "cpu-1", eta=600)
    a = queued(store, "cpu")
    b = queued(store, "cuda")
    c = queued(store, "cpu", priority=5)
    d = queued(store, "auto")
    e = queued(store, "cpu")
    f = queued(store, "auto", priority=9)
    # cpu jobs wait with cpu and auto jobs; an auto job with every queued job; cuda with
    # cuda and auto. Each in claim order: priority, then age.
    expected = {f: (1, 0), c: (2, 1), a: (3, 2), b: (2, 1), d: (5, 2), e: (5, 2)}
    for job, (position, higher) in expected.items():
        q = queue_of(client, job)
        assert (q["position"], q["jobs_ahead"]) == (position, position - 1), job
        if q["reason"]["code"] == "higher_priority":
            assert q["reason"]["message"].startswith(
                f"{higher} job{'' if higher == 1 else 's'} of higher priority"), job

    first = queue_of(client, f)
    assert first["reason"]["code"] == "next"
    assert first["reason"]["message"] == ("it is first in line and the worker that can run "
                                          "auto jobs is busy: it starts when it finishes")
    assert 570 < first["estimated_start_seconds"] <= 600
    for job in (c, a, d, e):
        assert queue_of(client, job)["reason"]["code"] == "higher_priority", job
    assert queue_of(client, e)["reason"]["message"] == (
        "2 jobs of higher priority are ahead of it (4 ahead in all), and the worker that can "
        "run cpu jobs is busy")
    assert queue_of(client, b)["reason"]["code"] == "no_worker"

    # GET /jobs gives each queued job the same position, in one page.
    items = {j["id"]: j for j in client.get("/jobs?status=queued").json()["items"]}
    assert {i: items[i]["queue_position"] for i in expected} == {
        i: p for i, (p, _) in expected.items()}


def test_workers_busy_and_the_estimated_start_from_running_etas(client, store):
    worker(store, "w1")
    worker(store, "w2")
    running(store, "w1", eta=100)
    running(store, "w2", eta=1000)
    q1, q2, q3 = queued(store), queued(store), queued(store)

    first = queue_of(client, q1)
    assert first["reason"]["code"] == "next"
    assert "all 2 workers that can run cpu jobs are busy" in first["reason"]["message"]
    assert 70 < first["estimated_start_seconds"] <= 100  # the soonest ETA
    second = queue_of(client, q2)
    assert second["reason"] == {"code": "workers_busy", "message": (
        "all 2 workers that can run cpu jobs are busy, and 1 job is ahead of it")}
    assert 970 < second["estimated_start_seconds"] <= 1000  # the second soonest
    # More jobs ahead than workers: unknown until a finished job gives a mean duration.
    assert queue_of(client, q3)["estimated_start_seconds"] is None
    done = running(store, worker(store, "w-old"))
    assert store.finish_job(done, "succeeded")
    store.record_worker_stopped("w-old")
    finished_at = store.get_job(done).finished_at
    with store.engine.begin() as conn:  # it ran for 300 s
        conn.execute(update(Job).where(Job.id == done)
                     .values(started_at=finished_at - dt.timedelta(seconds=300)))
    third = queue_of(client, q3)
    assert third["reason"]["code"] == "workers_busy" and third["jobs_ahead"] == 2
    # w1 frees at ~100 s and runs one more job of the mean length (300 s) before q3.
    assert 370 < third["estimated_start_seconds"] <= 400

    # An idle worker: the first job is next and starts now; the others count it as free.
    worker(store, "w3")
    now = queue_of(client, q1)
    assert now["reason"]["code"] == "next" and now["estimated_start_seconds"] == 0
    later = queue_of(client, q2)
    assert later["reason"]["code"] == "workers_busy"
    assert "(1 idle) take the jobs ahead first" in later["reason"]["message"]
    assert 70 < later["estimated_start_seconds"] <= 100


def test_owner_limit_is_reported_even_with_a_worker_idle(client, store):
    worker(store, "w1")
    worker(store, "w2")
    running(store, "w1", eta=50, owner="alice")
    waiting = queued(store, owner="alice")
    q = queue_of(client, waiting)
    assert q["position"] == 1 and q["reason"]["code"] == "owner_limit"
    assert q["reason"]["message"].startswith(
        f"alice already runs 1 job, the most one user may run at once "
        f"(TRAINYARD_MAX_RUNNING_JOBS_PER_USER={LIMIT})")
    # A worker is idle, but alice's job waits for her running one (~50 s).
    assert 20 < q["estimated_start_seconds"] <= 50
    # Another owner's job is not held back by alice's limit.
    assert queue_of(client, queued(store, owner="bob"))["reason"]["code"] != "owner_limit"


def test_preempting_when_a_lower_priority_job_is_asked_to_stop_for_it(client, store):
    worker(store, "w1")
    low = running(store, "w1", eta=3000, priority=-5)
    urgent = queued(store, priority=5)
    lowest = queued(store, priority=-10)
    assert queue_of(client, urgent)["reason"]["code"] == "next"  # first, the worker busy

    made = store.request_preemptions(alive_seconds=30, min_run_seconds=0)
    assert [(p.job_id, p.for_job_id) for p in made] == [(low, urgent)]
    q = queue_of(client, urgent)
    assert q["reason"]["code"] == "preempting" and q["estimated_start_seconds"] == 0
    assert q["reason"]["message"].startswith("1 running job of lower priority is being stopped")
    # The stopped job is of higher priority than this one: nothing is stopped for it.
    assert queue_of(client, lowest)["reason"]["code"] == "higher_priority"


def test_running_and_finished_jobs_have_no_queue(client, store):
    worker(store, "w1")
    job = running(store, "w1", eta=10)
    waiting = queued(store)
    assert queue_of(client, job) is None
    assert store.finish_job(job, "succeeded")
    assert queue_of(client, job) is None
    items = {j["id"]: j for j in client.get("/jobs").json()["items"]}
    assert items[job]["queue_position"] is None and items[waiting]["queue_position"] == 1
    assert client.get(f"/jobs/{waiting}").json()["queue_position"] == 1


def test_get_jobs_queries_do_not_grow_with_the_page(client, store):
    worker(store, "w1")
    running(store, "w1", eta=10)
    ids = [queued(store, priority=i % 3) for i in range(40)]
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        sizes = {}
        for limit in (5, 40):
            statements.clear()
            page = client.get(f"/jobs?limit={limit}").json()["items"]
            assert all(j["queue_position"] is not None for j in page if j["status"] == "queued")
            sizes[limit] = len(statements)
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert sizes[5] == sizes[40], sizes
    # Claim order: priority 2 first, oldest first: the newest of the 13 of priority 2 is 13th.
    newest_of_2 = max(i for n, i in enumerate(ids) if n % 3 == 2)
    assert queue_of(client, newest_of_2)["position"] == 13


# ---- the estimate's rule, alone ------------------------------------------------------------


@pytest.mark.parametrize(("free", "ahead", "mean", "expected"), [
    ([0.0, 10.0, 100.0], 0, None, 0.0),  # an idle worker
    ([0.0, 10.0, 100.0], 2, None, 100.0),  # the third to be free
    ([10.0, 100.0], 2, 50.0, 60.0),  # the first worker, after one more job
    ([10.0, 100.0], 5, 50.0, 200.0),  # the second worker, after two more jobs
    ([10.0, 100.0], 2, None, None),  # no mean duration yet
    ([10.0, None], 1, 50.0, None),  # a running job without an ETA
    ([], 0, 50.0, None),  # nobody serves the device
])
def test_estimated_start_rule(free, ahead, mean, expected):
    assert estimated_start(free, ahead, mean) == expected


# ---- the dashboard -------------------------------------------------------------------------


CHROMIUM = os.environ.get("TRAINYARD_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.mark.e2e
def test_dashboard_shows_the_queue_on_the_job_page_and_in_the_list(tmp_path: Path):
    """A real `trainyard api` (no worker) and chromium: a cuda job waits with its reason."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: pip install -e '.[test]'")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: run scripts/install-test-tools.sh")
    service = LocalService(tmp_path, {}, free_port())
    for key in ("TRAINYARD_DATABASE_URL", "TRAINYARD_BROKER_URL"):
        service.env.pop(key, None)
    service.start("api", "api", "--port", str(service.port))
    try:
        service.wait_healthy()
        body = {"model": "mlp", "dataset": "digits", "hyperparameters": HP, "device": "cuda"}
        job_id = service.http.post("/jobs", json=body).json()["id"]
        errors: list[str] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                 args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{service.url}/#/jobs/{job_id}")
                page.wait_for_selector("#view[data-state=ready]", timeout=20_000)
                assert page.inner_text("#queue-position") == "#1 in queue · 0 jobs ahead"
                assert page.inner_text("#queue-reason").startswith(
                    "no worker that can run cuda jobs is connected")
                assert page.inner_text("#queue-start").startswith("Estimated start: unknown")
                # Its priority, changed from the page (PATCH), shows in the summary.
                page.fill("#job-priority", "7")
                page.click("#set-priority")
                expect(page.locator(".summary [data-key=priority] dd")).to_have_text(
                    "7", timeout=20_000)
                assert service.http.get(f"/jobs/{job_id}").json()["priority"] == 7
                page.goto(f"{service.url}/#/")
                page.wait_for_selector(f"tr[data-job-id='{job_id}'] .queue-pos",
                                       timeout=20_000)
                status = page.inner_text(f"tr[data-job-id='{job_id}'] .col-status")
                assert "queued" in status and "#1 in queue" in status
                priority = page.inner_text(f"tr[data-job-id='{job_id}'] td[data-label=priority]")
                assert priority == "7"
            finally:
                browser.close()
        assert errors == []
    finally:
        service.stop()
