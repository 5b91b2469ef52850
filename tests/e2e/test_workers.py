"""Workers with real processes: GET /workers, `trainyard workers`, drains and lost workers.

On Postgres + Redis: a worker shows idle, then busy with its job; an admin's drain hands the
job back at the next step (attempt outcome `drained`), the worker stays draining and takes no
new job nor any wake-up (they wait in the broker), and a second worker resumes the job to the
same final metrics as an undisturbed run. A worker killed with SIGKILL shows `lost`; one
stopped cleanly is not listed. The drain on the embedded file-system broker too.

Settings are shrunk so each step takes seconds: a 3 s lease renewed every 0.25 s. Wake-ups are
never re-sent by the reconciler within a test (a 600 s grace): what the second worker runs, it
was woken for by messages that the drained worker left in the broker.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from tests.e2e.services import failed
from trainyard.local_service import LocalService, free_port

pytestmark = pytest.mark.e2e

FAST = {
    "TRAINYARD_LEASE_SECONDS": "3",
    "TRAINYARD_HEARTBEAT_SECONDS": "0.25",
    "TRAINYARD_RECONCILE_SECONDS": "0.5",
    "TRAINYARD_ENQUEUE_GRACE_SECONDS": "600",
    "TRAINYARD_METRICS_FLUSH_SECONDS": "0.1",
    "TRAINYARD_CANCEL_CHECK_SECONDS": "0.2",
    "TRAINYARD_TORCH_THREADS": "1",  # two workers share the machine; also keeps runs identical
    "COLUMNS": "200",  # `trainyard workers` prints its table whole
}
# ~8 ms a step on one core: 45 steps (an epoch) of digits, 6 epochs: drained in its second
# epoch, it still has over a second to go (several presence beats).
SLOW_MLP = {"epochs": 6, "hidden_sizes": [1024, 1024], "batch_size": 32, "seed": 7}
STEPS_PER_EPOCH = 45
TINY_MLP = {"epochs": 1, "steps_per_epoch": 2, "hidden_sizes": [8, 8], "seed": 1}
CHROMIUM = os.environ.get("TRAINYARD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"


def _unavailable(message: str) -> None:
    """Fail under CI (a missing tool is a broken pipeline), skip elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class Fleet(LocalService):
    """An API and named workers sharing one database and broker."""

    def start_worker(self, label: str) -> None:
        self.start(label, "worker", "--name", f"{label}@%h")

    def kill(self, label: str, sig: int) -> int:
        os.killpg(self.processes[label].pid, sig)
        return self.processes[label].wait(timeout=60)

    def submit(self, hp: dict) -> int:
        response = self.http.post("/jobs", json={"model": "mlp", "dataset": "digits",
                                                 "hyperparameters": hp})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def workers(self) -> dict[str, dict]:
        """GET /workers by label (the name before the @)."""
        response = self.http.get("/workers")
        assert response.status_code == 200, response.text
        return {w["name"].split("@", 1)[0]: w for w in response.json()["items"]}

    def log(self, label: str) -> str:
        return (self.home / f"{label}.log").read_text(errors="replace")

    def job(self, job_id: int) -> dict:
        return self.http.get(f"/jobs/{job_id}").json()

    def step(self, job_id: int) -> int:
        return self.job(job_id)["progress"]["step"] or 0

    def series(self, job_id: int) -> dict:
        series = self.http.get(f"/jobs/{job_id}/metrics", params={"max_points": 10_000}).json()
        return {name: [(p["step"], p["value"]) for p in points]
                for name, points in series["series"].items() if not name.endswith("_per_s")}

    def wait_state(self, label: str, state: str) -> dict:
        return self.wait_for(lambda: (w := self.workers().get(label)) and w["state"] == state
                             and w, f"worker {label} not {state}")


@pytest.fixture
def fleet_factory(tmp_path, request):
    fleets: list[Fleet] = []

    def make(home: Path, **env) -> Fleet:
        home.mkdir(parents=True, exist_ok=True)
        fleet = Fleet(home, {**FAST, **env}, free_port())
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        if failed(request):
            print(fleet.logs())
        fleet.stop()


def redis_messages(url: str) -> int:
    """Wake-ups waiting in the Redis broker's queue lists."""
    client = redis.Redis.from_url(url)
    try:
        return sum(client.llen(key) for key in client.scan_iter() if client.type(key) == b"list")
    finally:
        client.close()


def test_a_drained_worker_hands_its_job_back_and_another_resumes_it(
        fleet_factory, tmp_path, fresh_postgres_url, redis_url):
    fleet = fleet_factory(tmp_path, TRAINYARD_DATABASE_URL=fresh_postgres_url,
                          TRAINYARD_BROKER_URL=redis_url)
    fleet.start("api", "api", "--port", str(fleet.port))
    fleet.start_worker("w1")
    fleet.wait_healthy()
    idle = fleet.wait_state("w1", "idle")
    assert (idle["job_id"], idle["device_class"], idle["jobs_done"]) == (None, "cpu", 0)
    assert idle["torch_version"] and idle["queues"] == ["auto", "cpu"]

    reference = fleet.submit(SLOW_MLP)  # undisturbed: what the drained job must end equal to
    assert fleet.wait_status(reference, {"succeeded", "failed"})["status"] == "succeeded"

    job = fleet.submit(SLOW_MLP)
    busy = fleet.wait_state("w1", "busy")
    assert busy["job_id"] == job
    fleet.wait_for(lambda: fleet.step(job) > STEPS_PER_EPOCH + 5, "second epoch not reached")
    drain = fleet.http.post(f"/workers/{busy['name']}/drain")
    assert drain.status_code == 200 and drain.json()["state"] == "draining", drain.text

    given_back = fleet.wait_status(job, {"queued", "succeeded", "failed"})
    assert given_back["status"] == "queued", "given back before the end"
    assert [a["outcome"] for a in given_back["attempt_history"]] == ["drained"]
    drained = fleet.wait_for(lambda: (w := fleet.workers()["w1"])["job_id"] is None and w,
                             "w1 still holds its job")
    assert (drained["state"], drained["jobs_done"]) == ("draining", 2)
    assert drained["drain_requested_at"] is not None

    # It takes no new job, and leaves the wake-ups (the given-back job's, the new one's) in
    # the broker for others instead of swallowing them.
    other = fleet.submit(TINY_MLP)
    fleet.wait_for(lambda: redis_messages(redis_url) == 2, "the wake-ups are not in the broker")
    time.sleep(2)  # eight presence beats: still nothing taken
    assert redis_messages(redis_url) == 2
    assert (fleet.job(job)["status"], fleet.job(other)["status"]) == ("queued", "queued")
    assert fleet.workers()["w1"]["state"] == "draining"
    listing = fleet.cli("workers")
    assert listing.returncode == 0, listing.stderr
    assert "w1@" in listing.stdout and "draining" in listing.stdout

    fleet.start_worker("w2")
    done = fleet.wait_status(job, {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert fleet.wait_status(other, {"succeeded", "failed"})["status"] == "succeeded"
    history = done["attempt_history"]
    assert [a["outcome"] for a in history] == ["drained", "succeeded"]
    assert history[1]["worker"].startswith("w2@") and history[1]["resumed_from_epoch"] >= 1
    assert done["infra_failures"] == 0
    assert fleet.series(job) == fleet.series(reference), "resumed exactly: every step equal"
    final = {k: v for k, v in done["latest_metrics"].items() if not k.endswith("_per_s")}
    ref_final = fleet.job(reference)["latest_metrics"]
    assert final == {k: v for k, v in ref_final.items() if not k.endswith("_per_s")}
    workers = fleet.workers()
    assert (workers["w1"]["state"], workers["w2"]["state"]) == ("draining", "idle")
    assert workers["w2"]["jobs_done"] == 2


def test_lost_stopped_and_idle_drained_workers(fleet_factory, tmp_path, fresh_postgres_url,
                                               redis_url):
    fleet = fleet_factory(tmp_path, TRAINYARD_DATABASE_URL=fresh_postgres_url,
                          TRAINYARD_BROKER_URL=redis_url)
    fleet.start("api", "api", "--port", str(fleet.port))
    for label in ("killed", "stopped", "drained"):
        fleet.start_worker(label)
    fleet.wait_healthy()
    for label in ("killed", "stopped", "drained"):
        fleet.wait_state(label, "idle")

    fleet.kill("killed", signal.SIGKILL)
    assert fleet.kill("stopped", signal.SIGTERM) == 0
    lost = fleet.wait_state("killed", "lost")
    assert lost["seen_seconds_ago"] > 3
    assert "stopped" not in fleet.workers(), "a cleanly stopped worker is not listed"
    listing = fleet.cli("workers")
    assert listing.returncode == 0, listing.stderr
    assert "killed@" in listing.stdout and "lost" in listing.stdout
    assert "stopped@" not in listing.stdout

    # Drained while idle: the first wake-up it gets after its beat learnt it is passed on,
    # once, and it stops consuming: the wake-up waits in the broker, the job in the queue.
    name = fleet.workers()["drained"]["name"]
    drain = fleet.cli("workers", "--drain", name)
    assert drain.returncode == 0, drain.stderr
    assert f"worker {name} is draining" in drain.stdout
    assert fleet.workers()["drained"]["state"] == "draining"
    fleet.wait_for(lambda: "drain requested by an admin" in fleet.log("drained"),
                   "the worker did not learn of its drain")
    job = fleet.submit(TINY_MLP)
    fleet.wait_for(lambda: "is passed on" in fleet.log("drained"), "the wake-up not passed on")
    fleet.wait_for(lambda: redis_messages(redis_url) == 1, "the wake-up is not in the broker")
    time.sleep(2)  # eight presence beats
    assert redis_messages(redis_url) == 1
    assert fleet.log("drained").count("is passed on") == 1, "taken once, then never again"
    assert fleet.job(job)["status"] == "queued"


def test_a_drain_on_the_embedded_broker(fleet_factory, tmp_path):
    """`trainyard up` (SQLite, the file-system queue): its worker, drained while idle, passes
    the next wake-up on and stops consuming; a worker joining on the same home runs the job."""
    fleet = fleet_factory(tmp_path / "home")
    fleet.start_embedded()
    fleet.wait_healthy()
    (first,) = fleet.wait_for(lambda: list(fleet.workers().values()), "no worker")
    drained = fleet.http.post(f"/workers/{first['name']}/drain")
    assert drained.status_code == 200 and drained.json()["state"] == "draining"
    fleet.wait_for(lambda: "drain requested by an admin" in fleet.log("up"),
                   "the worker did not learn of its drain")

    job = fleet.submit(TINY_MLP)
    queue = tmp_path / "home" / "broker" / "queue"
    fleet.wait_for(lambda: "is passed on" in fleet.log("up"), "the wake-up not passed on")
    fleet.wait_for(lambda: len(list(queue.glob("*.msg"))) == 1, "the wake-up not in the queue")
    time.sleep(2)  # eight presence beats: the drained worker does not take it again
    assert len(list(queue.glob("*.msg"))) == 1
    assert fleet.log("up").count("is passed on") == 1
    assert fleet.job(job)["status"] == "queued"

    fleet.start("joined", "worker", "--name", "joined@%h")
    done = fleet.wait_status(job, {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert done["worker"].startswith("joined@")
    states = {w["name"].split("@")[0]: w["state"] for w in fleet.workers().values()}
    assert states == {first["name"].split("@")[0]: "draining", "joined": "idle"}


def test_the_workers_page_shows_the_workers_and_drains_one(fleet_factory, tmp_path):
    """The dashboard's Workers page in Debian's chromium (see tests/e2e/test_dashboard.py):
    the worker's row, live, and the admin's Drain button (the keyless local user is admin)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is missing: pip install -e '.[test]'")
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing: run scripts/install-test-tools.sh as root")
    fleet = fleet_factory(tmp_path / "home")
    fleet.start_embedded()
    fleet.wait_healthy()
    (worker,) = fleet.wait_for(lambda: list(fleet.workers().values()), "no worker")
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{fleet.url}/#/workers")
            page.wait_for_selector("#view[data-state=ready]", timeout=20_000)
            assert page.locator("a[data-nav=workers].active").count() == 1
            row = page.locator("#workers tbody tr")
            assert row.count() == 1
            assert worker["name"] in row.inner_text() and "idle" in row.inner_text()
            assert "ago" in row.locator("td[data-label=heartbeat]").inner_text()
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "workers-1280.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})  # a card per worker
            page.screenshot(path=str(SHOTS / "workers-390.png"), full_page=True)
            row.locator("button", has_text="Drain").click()
            page.wait_for_selector("#workers .badge:text('draining')", timeout=20_000)
            assert row.locator("button", has_text="Drain").is_hidden(), "drained once is enough"
        finally:
            browser.close()
    assert errors == []
    assert fleet.workers()[worker["name"].split("@")[0]]["state"] == "draining"
