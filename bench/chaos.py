"""Chaos: a mixed workload on several workers while workers are killed and drained, and Redis and
Postgres are restarted, at random moments; then every job and every metric row is checked.

    .venv/bin/python bench/chaos.py                       # 30 jobs, 3 workers (~3 min on 2 cores)
    .venv/bin/python bench/chaos.py --jobs 12 --workers 2 --seed 7

Starts its own PostgreSQL (initdb, as the postgres user when run as root) and its own Redis
(no persistence: a restart comes back empty) on free ports, a `trainyard api` and `--workers`
`trainyard worker` processes (trainyard.local_service), with a short lease (3 s) so recoveries
take seconds. While jobs remain unfinished, every 2-6 s (random) one event:
  kill    SIGKILL a random worker, start a replacement
  drain   SIGTERM a random worker (it gives its job back and exits), start a replacement
  redis   restart Redis empty (every queued and unacknowledged message is lost)
  postgres stop Postgres for 1-4 s, then start it again (workers buffer and retry their writes)
Then checks: every job succeeded; for each, the train_loss steps are exactly 1..total_steps
and each per-epoch metric has exactly one row per epoch (rows lost = expected - present;
doubled = rows beyond one per (name, step), which the unique constraint also forbids).
Prints a summary and writes bench/results/chaos.json.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_header, write_results  # noqa: E402

from trainyard.local_service import (  # noqa: E402
    LocalService,
    PostgresServer,
    RedisServer,
    free_port,
)

CORPUS = "\n".join(f"the {a} sat on the {b} ." for a in ("cat", "dog", "fox") for b in
                   ("mat", "log", "hat")) * 20
WORKLOAD = [  # (model, dataset, hyperparameters): each 5-20 s of one CPU core
    ("mlp", "digits", {"epochs": 12, "hidden_sizes": [512, 512], "batch_size": 32}),
    ("mlp", "digits", {"epochs": 30, "hidden_sizes": [128, 64], "activation": "tanh"}),
    ("cnn", "digits", {"epochs": 6, "channels": [8, 16]}),
    ("rnn_lm", "chaos-corpus", {"epochs": 8, "hidden_size": 64, "embedding_dim": 32,
                                "seq_len": 16, "tokenizer": "word"}),
]
PER_EPOCH = {"mlp": "val_accuracy", "cnn": "val_accuracy", "rnn_lm": "val_perplexity"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    header = run_header("chaos", vars(args))

    home = Path(tempfile.mkdtemp(prefix="trainyard-chaos-"))
    postgres, redis_server = PostgresServer(), RedisServer(home)
    postgres.start()
    redis_server.start()
    service = LocalService(home, {
        "TRAINYARD_DATABASE_URL": postgres.url, "TRAINYARD_BROKER_URL": redis_server.url,
        "TRAINYARD_LEASE_SECONDS": "3", "TRAINYARD_HEARTBEAT_SECONDS": "0.5",
        "TRAINYARD_RECONCILE_SECONDS": "0.5", "TRAINYARD_ENQUEUE_GRACE_SECONDS": "5",
        "TRAINYARD_MAX_INFRA_RETRIES": "50", "TRAINYARD_TORCH_THREADS": "1",
        "TRAINYARD_METRICS_FLUSH_SECONDS": "0.2",
    }, free_port())
    events: dict[str, int] = {"kill": 0, "drain": 0, "redis": 0, "postgres": 0}
    workers: list[str] = []
    count = 0

    def start_worker() -> None:
        nonlocal count
        count += 1
        label = f"w{count}"
        service.start(label, "worker", "--name", f"{label}@%h")
        workers.append(label)

    try:
        service.start("api", "api", "--port", str(service.port))
        for _ in range(args.workers):
            start_worker()
        service.wait_healthy()
        upload = service.http.post("/datasets", data={"name": "chaos-corpus"},
                                   files={"file": ("c.txt", CORPUS.encode(), "text/plain")})
        assert upload.status_code == 201, upload.text
        jobs = []
        for i in range(args.jobs):
            model, dataset, hp = WORKLOAD[i % len(WORKLOAD)]
            response = service.http.post("/jobs", json={
                "model": model, "dataset": dataset, "hyperparameters": {**hp, "seed": i}})
            assert response.status_code == 201, response.text
            jobs.append(response.json())
        t0 = time.monotonic()
        print(f"{len(jobs)} jobs submitted to {args.workers} workers; chaos begins", flush=True)

        def unfinished() -> int:
            try:
                page = service.http.get("/jobs", params={"status": "queued", "limit": 1}).json()
                running = service.http.get("/jobs", params={"status": "running",
                                                            "limit": 1}).json()
                return page["total"] + running["total"]
            except Exception:  # noqa: BLE001 - the API answers 500 while Postgres is down
                return -1

        while (left := unfinished()) != 0:
            if time.monotonic() - t0 > args.timeout:
                raise TimeoutError(f"{left} jobs unfinished after {args.timeout} s")
            time.sleep(rng.uniform(2, 6))
            event = rng.choice(["kill", "kill", "drain", "redis", "postgres"])
            events[event] += 1
            if event in ("kill", "drain"):
                label = rng.choice(workers)
                workers.remove(label)
                os.killpg(service.processes[label].pid,
                          signal.SIGKILL if event == "kill" else signal.SIGTERM)
                start_worker()
            elif event == "redis":
                redis_server.stop()
                redis_server.start()
            else:
                postgres.stop()
                time.sleep(rng.uniform(1, 4))
                postgres.start()
            print(f"{time.monotonic() - t0:6.1f} s  {event:8s} ({left} unfinished)", flush=True)
        elapsed = time.monotonic() - t0

        from db.store import Store

        store = Store(postgres.url)
        lost_jobs, rows_lost, rows_doubled, rows_checked = [], 0, 0, 0
        statuses: dict[str, int] = {}
        infra_failures = attempts = 0
        for job in jobs:
            done = service.http.get(f"/jobs/{job['id']}").json()
            statuses[done["status"]] = statuses.get(done["status"], 0) + 1
            infra_failures += done["infra_failures"]
            attempts += done["attempts"]
            if done["status"] != "succeeded":
                lost_jobs.append(job["id"])
                continue
            series = store.get_metrics(job["id"], names=["train_loss", PER_EPOCH[job["model"]]])
            total, epochs = done["progress"]["total_steps"], done["hyperparameters"]["epochs"]
            steps = [p["step"] for p in series.get("train_loss", [])]
            per_epoch = [p["epoch"] for p in series.get(PER_EPOCH[job["model"]], [])]
            rows_checked += len(steps) + len(per_epoch)
            rows_lost += len(set(range(1, total + 1)) - set(steps))
            rows_lost += len(set(range(1, epochs + 1)) - set(per_epoch))
            rows_doubled += (len(steps) - len(set(steps))) + (len(per_epoch) - len(set(per_epoch)))
        store.close()
        result = {
            **header,
            "figures": {
                "jobs": len(jobs), "workers": args.workers, "seconds": round(elapsed, 1),
                "worker_kills": events["kill"], "worker_drains": events["drain"],
                "redis_restarts": events["redis"], "postgres_restarts": events["postgres"],
                "statuses": statuses, "attempts": attempts, "infra_failures": infra_failures,
                "jobs_lost": len(lost_jobs), "metric_rows_checked": rows_checked,
                "metric_rows_lost": rows_lost, "metric_rows_doubled": rows_doubled,
            },
        }
        path = write_results("chaos", result)
        print("\n".join(f"  {k}: {v}" for k, v in result["figures"].items()))
        print(f"written to {path}")
        return 0 if not lost_jobs and not rows_lost and not rows_doubled else 1
    except BaseException:
        print(service.logs())
        raise
    finally:
        service.stop()
        redis_server.stop()
        postgres.remove()


if __name__ == "__main__":
    sys.exit(main())
