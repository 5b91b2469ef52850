"""Fault tolerance with real processes: uvicorn, Celery workers, Postgres, Redis.

Workers are killed with SIGKILL at random steps, drained with SIGTERM, the broker is emptied
under queued jobs, and one key is POSTed a hundred times at once; every job must end in the
right state with exactly its metrics. Settings are shrunk so each recovery takes seconds:
a 3 s lease renewed every 0.5 s, a reconciler pass every 0.5 s.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import text

from db.store import Store
from tests.e2e.services import failed
from trainyard.local_service import LocalService, RedisServer, free_port

pytestmark = pytest.mark.e2e

FAST_RECOVERY = {
    "TRAINYARD_LEASE_SECONDS": "3",
    "TRAINYARD_HEARTBEAT_SECONDS": "0.5",
    "TRAINYARD_RECONCILE_SECONDS": "0.5",
    "TRAINYARD_ENQUEUE_GRACE_SECONDS": "30",
    "TRAINYARD_METRICS_FLUSH_SECONDS": "0.1",
    "TRAINYARD_CANCEL_CHECK_SECONDS": "0.2",
    "TRAINYARD_TORCH_THREADS": "1",  # two workers share the machine; also keeps runs identical
}
# ~8 ms a step on one core: 45 steps (an epoch) of digits, 16 epochs.
SLOW_MLP = {"epochs": 16, "hidden_sizes": [1024, 1024], "batch_size": 32, "seed": 7}
STEPS_PER_EPOCH = 45


class Cluster(LocalService):
    """An API and named workers on Postgres + Redis, plus a direct look at the database."""

    def __init__(self, tmp_path, postgres_url, redis_url, **env):
        super().__init__(tmp_path, {"TRAINYARD_DATABASE_URL": postgres_url,
                                    "TRAINYARD_BROKER_URL": redis_url, **FAST_RECOVERY, **env},
                         free_port())
        self.store = Store(postgres_url)
        self.workers = 0

    def start_worker(self) -> str:
        self.workers += 1
        label = f"w{self.workers}"
        self.start(label, "worker", "--name", f"{label}@%h")
        return label

    def label_of(self, worker: str | None) -> str | None:
        return worker.split("@", 1)[0] if worker else None

    def kill(self, label: str, sig=signal.SIGKILL) -> None:
        os.killpg(self.processes[label].pid, sig)

    def row(self, job_id: int):
        with self.store.engine.connect() as conn:
            return conn.execute(text(
                "SELECT j.status, j.attempts, j.worker, (SELECT max(step) FROM metrics m"
                " WHERE m.job_id = j.id AND m.name = 'train_loss') FROM jobs j WHERE j.id = :id"
            ), {"id": job_id}).one()

    def submit(self, hp: dict, **headers) -> dict:
        response = self.http.post("/jobs", headers=headers, json={
            "model": "mlp", "dataset": "digits", "hyperparameters": hp})
        assert response.status_code == 201, response.text
        return response.json()

    def series(self, job_id: int) -> dict:
        return {name: [(p["step"], p["epoch"], p["value"]) for p in points]
                for name, points in self.store.get_metrics(job_id).items()
                if not name.endswith("_per_s")}

    def stop(self) -> None:
        super().stop()
        self.store.close()


@pytest.fixture
def cluster_factory(tmp_path, fresh_postgres_url, redis_url, request):
    clusters = []

    def make(database_url: str | None = None, **env) -> Cluster:
        cluster = Cluster(tmp_path, database_url or fresh_postgres_url, redis_url, **env)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        if failed(request):
            print(cluster.logs())
        cluster.stop()


def test_sigkill_at_random_steps_resumes_with_identical_metrics(cluster_factory):
    cluster = cluster_factory(TRAINYARD_MAX_INFRA_RETRIES="20")
    cluster.start("api", "api", "--port", str(cluster.port))
    cluster.start_worker(), cluster.start_worker()
    cluster.wait_healthy()

    reference = cluster.submit(SLOW_MLP)
    assert cluster.wait_status(reference["id"], {"succeeded", "failed"})["status"] == "succeeded"

    rng = random.Random(20261126)
    job = cluster.submit(SLOW_MLP)
    kills: list[tuple[int, int]] = []  # (attempt, step when killed)
    total_steps = SLOW_MLP["epochs"] * STEPS_PER_EPOCH
    t0 = time.monotonic()
    while len(kills) < 10:
        attempt = len(kills) + 1

        def running_attempt():
            status, attempts, worker, step = cluster.row(job["id"])
            return (status == "running" and attempts == attempt and step is not None
                    and (worker, step))

        worker, step = cluster.wait_for(running_attempt, f"attempt {attempt} not running", 60)
        # A random step inside this epoch or the next, away from its ends: mid-epoch.
        epoch_start = STEPS_PER_EPOCH * (step // STEPS_PER_EPOCH + rng.randint(0, 1))
        target = max(epoch_start + rng.randint(5, STEPS_PER_EPOCH - 12), step + 1)
        assert target < total_steps - 50, "the job is too short for this many kills"

        def reached_target():
            status, attempts, worker, step = cluster.row(job["id"])
            assert (status, attempts) == ("running", attempt), cluster.logs()
            return step >= target and (worker, step)

        worker, step = cluster.wait_for(reached_target, f"step {target} not reached", 60)
        cluster.kill(cluster.label_of(worker))
        kills.append((attempt, step))
        cluster.start_worker()  # a replacement; the surviving worker picks the job up first
    done = cluster.wait_status(job["id"], {"succeeded", "failed"})
    elapsed = time.monotonic() - t0
    print(f"10 kills at steps {[s for _, s in kills]} "
          f"({sum(s % STEPS_PER_EPOCH != 0 for _, s in kills)} mid-epoch); "
          f"job done {elapsed:.1f} s after submission")

    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 11 and done["infra_failures"] == 10
    history = done["attempt_history"]
    assert [a["outcome"] for a in history] == ["worker_lost"] * 10 + ["succeeded"]
    assert history[0]["resumed_from_epoch"] is None
    for (_, killed_at), following in zip(kills, history[1:]):
        # Each resume starts from the newest checkpoint written before the kill.
        assert following["resumed_from_epoch"] in (killed_at // STEPS_PER_EPOCH,
                                                   killed_at // STEPS_PER_EPOCH - 1, None)
    assert len({a["worker"] for a in history}) >= 3

    got, want = cluster.series(job["id"]), cluster.series(reference["id"])
    assert [s for s, _, _ in got["train_loss"]] == list(range(1, total_steps + 1))
    assert [e for _, e, _ in got["val_accuracy"]] == list(range(1, SLOW_MLP["epochs"] + 1))
    assert got == want, "every step's value equals the uninterrupted run's: none lost or doubled"
    final = {k: v for k, v in done["latest_metrics"].items() if not k.endswith("_per_s")}
    ref_final = cluster.http.get(f"/jobs/{reference['id']}").json()["latest_metrics"]
    assert final == {k: v for k, v in ref_final.items() if not k.endswith("_per_s")}


def test_a_job_that_keeps_losing_its_worker_fails_with_a_reason(cluster_factory):
    cluster = cluster_factory(TRAINYARD_MAX_INFRA_RETRIES="2")
    cluster.start("api", "api", "--port", str(cluster.port))
    cluster.start_worker(), cluster.start_worker()
    cluster.wait_healthy()
    job = cluster.submit({**SLOW_MLP, "epochs": 200})
    for attempt in range(1, 4):  # a poison job: its worker dies every time it runs
        def claimed():
            status, attempts, worker, _ = cluster.row(job["id"])
            return status == "running" and attempts == attempt and worker
        cluster.kill(cluster.label_of(cluster.wait_for(claimed, f"attempt {attempt}", 60)))
        cluster.start_worker()
    failed = cluster.wait_status(job["id"], {"failed", "succeeded"}, timeout=60)
    assert failed["status"] == "failed"
    assert failed["error"] == "worker lost 3 times; giving up"
    assert [a["outcome"] for a in failed["attempt_history"]] == ["worker_lost"] * 3
    time.sleep(2)  # no fourth attempt: it stays failed
    assert cluster.http.get(f"/jobs/{job['id']}").json()["attempts"] == 3


def test_sigterm_drains_the_job_back_to_the_queue(cluster_factory):
    cluster = cluster_factory()
    cluster.start("api", "api", "--port", str(cluster.port))
    first = cluster.start_worker()
    cluster.wait_healthy()
    job = cluster.submit({**SLOW_MLP, "epochs": 6})
    cluster.wait_for(lambda: (r := cluster.row(job["id"]))[0] == "running"
                     and (r[3] or 0) > STEPS_PER_EPOCH + 5, "second epoch not reached", 60)
    second = cluster.start_worker()
    cluster.kill(first, signal.SIGTERM)
    code = cluster.processes[first].wait(timeout=30)
    assert code == 0, "the worker exits by itself once its job is given back"
    drained = cluster.http.get(f"/jobs/{job['id']}").json()
    assert drained["attempt_history"][0]["outcome"] == "drained"
    done = cluster.wait_status(job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded" and done["infra_failures"] == 0
    history = done["attempt_history"]
    assert [a["outcome"] for a in history] == ["drained", "succeeded"]
    assert cluster.label_of(history[1]["worker"]) == second
    assert history[1]["resumed_from_epoch"] >= 1
    steps = [s for s, _, _ in cluster.series(job["id"])["train_loss"]]
    assert steps == list(range(1, 6 * STEPS_PER_EPOCH + 1))


def test_training_goes_on_through_a_database_restart(cluster_factory, own_postgres):
    cluster = cluster_factory(database_url=own_postgres.url)
    cluster.start("api", "api", "--port", str(cluster.port))
    cluster.start_worker()
    cluster.wait_healthy()
    epochs = 30
    job = cluster.submit({**SLOW_MLP, "epochs": epochs})
    cluster.wait_for(lambda: (cluster.row(job["id"])[3] or 0) > 60, "not training", 60)
    own_postgres.stop()
    down_at = time.time()
    time.sleep(6)  # twice the lease: no heartbeat gets through meanwhile
    up_at = time.time()
    own_postgres.start()

    done = cluster.wait_status(job["id"], {"succeeded", "failed"}, timeout=180)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 1 and done["infra_failures"] == 0, "not mistaken for a lost worker"
    points = cluster.store.get_metrics(job["id"])
    steps = [p["step"] for p in points["train_loss"]]
    assert steps == list(range(1, epochs * STEPS_PER_EPOCH + 1)), "no metric lost"
    assert [p["epoch"] for p in points["val_accuracy"]] == list(range(1, epochs + 1))
    with cluster.store.engine.connect() as conn:
        during = conn.execute(text(
            "SELECT count(*) FROM metrics WHERE job_id = :id AND name = 'train_loss'"
            " AND time BETWEEN :a AND :b"), {"id": job["id"], "a": down_at, "b": up_at}).scalar()
    assert during > 10, "the worker kept training while the database was down"
    print(f"database down {up_at - down_at:.1f} s; {during} steps trained meanwhile")


@pytest.fixture
def own_redis(tmp_path):
    if shutil.which("redis-server") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server is needed", pytrace=False)
        pytest.skip("redis-server not found")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_jobs_survive_a_broker_restarted_empty_an_api_restart_and_duplicates(
    cluster_factory, own_redis
):
    import redis

    from core.settings import Settings
    from worker.celery_app import enqueue_job, make_celery

    # The API's own reconciler stays off here: it would re-send the waiting jobs within the
    # instant between Redis coming back and the check below that it came back empty. The
    # workers' reconcilers, whose recovery this test is about, run as ever.
    cluster = cluster_factory(TRAINYARD_BROKER_URL=own_redis.url,
                              TRAINYARD_ENQUEUE_GRACE_SECONDS="2",
                              TRAINYARD_RECONCILE_IN_API="0")
    cluster.start("api", "api", "--port", str(cluster.port))
    cluster.start_worker(), cluster.start_worker()
    cluster.wait_healthy()
    running = [cluster.submit({**SLOW_MLP, "epochs": 5, "seed": i}) for i in range(2)]
    queued = [cluster.submit({"epochs": 2, "hidden_sizes": [32, 32], "seed": i})
              for i in range(4)]
    # Duplicate delivery on purpose: every job's message sent twice more.
    producer = make_celery(Settings(broker_url=own_redis.url))
    for job in [*running, *queued]:
        enqueue_job(producer, job["id"], "auto")
        enqueue_job(producer, job["id"], "auto")
    cluster.wait_for(lambda: all(cluster.row(j["id"])[0] == "running" for j in running),
                     "not both running", 60)
    assert redis.Redis.from_url(own_redis.url).llen("auto") > 0, "queued messages in Redis"

    # Redis restarted without persistence: every message is gone, queued and unacked alike.
    own_redis.stop()
    own_redis.start()
    assert redis.Redis.from_url(own_redis.url).dbsize() == 0
    # And the API restarted meanwhile (SIGKILL, then a new process on the same port).
    api = cluster.processes.pop("api")
    os.killpg(api.pid, signal.SIGKILL)
    api.wait()
    cluster.start("api-2", "api", "--port", str(cluster.port))
    cluster.wait_healthy()

    for job in [*running, *queued]:
        done = cluster.wait_status(job["id"], {"succeeded", "failed"}, timeout=120)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 1 and len(done["attempt_history"]) == 1, \
            "duplicates and re-sent messages were skipped: one run each, on one worker"
    for job in running:  # running jobs were not disturbed: each step once
        steps = [s for s, _, _ in cluster.series(job["id"])["train_loss"]]
        assert steps == list(range(1, 5 * STEPS_PER_EPOCH + 1))
    producer.close()

    # A job submitted while Redis is down: saved, its wake-up lost. The workers sit idle, so
    # after the grace period a reconciler wakes one for it (behind busy workers, it would not).
    own_redis.stop()
    late = cluster.submit({"epochs": 1, "hidden_sizes": [32, 32]})
    own_redis.start()
    done = cluster.wait_status(late["id"], {"succeeded", "failed"}, timeout=120)
    assert done["status"] == "succeeded" and done["attempts"] == 1
    logs = "".join(path.read_text(errors="replace") for path in cluster.home.glob("w*.log"))
    assert f"job {late['id']} queued for over" in logs and "is idle: waking it again" in logs


def test_one_idempotency_key_posted_100_times_at_once_makes_one_job(cluster_factory):
    cluster = cluster_factory()
    cluster.start("api", "api", "--port", str(cluster.port))
    cluster.wait_healthy()
    body = {"model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": 1}}
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    with httpx.Client(base_url=cluster.url, timeout=60, limits=limits) as http:
        def post(_):
            return http.post("/jobs", json=body, headers={"Idempotency-Key": "order-42"})

        with ThreadPoolExecutor(100) as pool:
            responses = list(pool.map(post, range(100)))
    assert all(r.status_code in (200, 201) for r in responses), {r.text for r in responses}
    assert sorted(r.status_code for r in responses) == [200] * 99 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    other = cluster.http.post("/jobs", json=body, headers={"Idempotency-Key": "order-43"})
    assert other.status_code == 201 and other.json()["id"] != responses[0].json()["id"]
    assert cluster.http.get("/jobs").json()["total"] == 2
