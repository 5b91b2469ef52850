"""What one Prometheus scrape of GET /metrics costs with many jobs and points stored.

    .venv/bin/python bench/metrics_scrape.py                      # SQLite and PostgreSQL
    .venv/bin/python bench/metrics_scrape.py --dialects sqlite --jobs 10000 --points 300000

Writes JOBS jobs (mostly finished, 500 queued, 8 running, each with an attempt) and POINTS
metric points straight into a fresh database (a temporary SQLite file; a throw-away PostgreSQL
database, dropped at the end), then times GET /metrics through the real app in this process:
the first scrape after the app starts (it counts every job once) and the median of the next
ones, with the scrape's own database time (`trainyard_metrics_database_read_seconds`).
Results: bench/results/metrics_scrape.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

from common import Postgres, positive_int, run_header, write_results  # noqa: I001
from sqlalchemy import insert

from db.store import Store
from db.tables import Job, JobAttempt, Metric, utcnow

FINISHED = ["succeeded"] * 6 + ["failed", "cancelled", "pruned"]
QUEUED, RUNNING = 500, 8


def fill(store: Store, jobs: int, points: int) -> None:
    """`jobs` jobs and about `points` points, the running jobs' curves 50 times longer."""
    rng, now = random.Random(1), utcnow()
    with store.engine.begin() as conn:
        rows, attempts = [], []
        for i in range(1, jobs + 1):
            status = ("running" if i > jobs - RUNNING else "queued" if i > jobs - QUEUED
                      else rng.choice(FINISHED))
            created = now - dt.timedelta(seconds=(jobs - i) * 30)
            started = None if status == "queued" else created + dt.timedelta(seconds=5)
            rows.append(dict(
                id=i, name=f"job-{i}", model=rng.choice(["mlp", "cnn", "rnn_lm"]),
                dataset="digits", hyperparameters={}, device="cpu", status=status,
                attempts=0 if status == "queued" else 1, epoch=0, step=0, created_at=created,
                updated_at=created, started_at=started,
                device_class=None if status == "queued" else "cpu",
                finished_at=None if status in ("queued", "running")
                else started + dt.timedelta(seconds=60)))
            if started is not None:
                attempts.append(dict(job_id=i, number=1, worker="bench", started_at=started))
            if len(rows) >= 20_000 or i == jobs:
                conn.execute(insert(Job), rows)
                if attempts:
                    conn.execute(insert(JobAttempt), attempts)
                rows, attempts = [], []
        per_job = max(2, points // jobs)
        batch = []
        for job_id in range(1, jobs + 1):
            steps = per_job * (50 if job_id > jobs - RUNNING else 1) // 2
            for step in range(1, steps + 1):
                batch.append(dict(job_id=job_id, name="train_loss", step=step, epoch=1,
                                  value=0.1, time=1e9 + step))
                batch.append(dict(job_id=job_id, name="samples_per_s", step=step, epoch=1,
                                  value=1000.0, time=1e9 + step))
            if len(batch) >= 100_000 or job_id == jobs:
                conn.execute(insert(Metric), batch)
                batch = []
    if store.dialect == "postgresql":
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


def scrape_times(store: Store, home: Path, repeats: int) -> dict:
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.settings import Settings

    settings = Settings(home=home, broker_url=None, database_url=None, reconcile_in_api=False)
    with TestClient(create_app(settings, store=store), base_url="http://127.0.0.1:8000") as c:
        started = time.perf_counter()
        assert c.get("/metrics").status_code == 200
        first = time.perf_counter() - started
        times, database = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            answer = c.get("/metrics")
            times.append(time.perf_counter() - started)
            database.append(float(re.search(
                r"^trainyard_metrics_database_read_seconds ([0-9.e+-]+)$", answer.text,
                re.MULTILINE).group(1)))
    return {"first_scrape_ms": round(first * 1000, 1),
            "scrape_ms_median": round(statistics.median(times) * 1000, 1),
            "scrape_ms_min_max": [round(min(times) * 1000, 1), round(max(times) * 1000, 1)],
            "database_read_ms_median": round(statistics.median(database) * 1000, 1),
            "answer_bytes": len(answer.content)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialects", default="sqlite,postgresql")
    parser.add_argument("--jobs", type=positive_int, default=100_000)
    parser.add_argument("--points", type=positive_int, default=3_000_000)
    parser.add_argument("--repeats", type=positive_int, default=9)
    args = parser.parse_args()
    result = run_header("metrics_scrape", {"jobs": args.jobs, "points": args.points,
                                           "repeats": args.repeats})
    result["figures"] = {}
    with tempfile.TemporaryDirectory(prefix="trainyard-scrape-") as tmp:
        for dialect in args.dialects.split(","):
            postgres = Postgres() if dialect == "postgresql" else None
            url = postgres.create() if postgres else f"sqlite:///{tmp}/bench.db"
            store = Store(url)
            try:
                store.migrate()
                started = time.perf_counter()
                fill(store, args.jobs, args.points)
                figures = {"fill_s": round(time.perf_counter() - started, 1),
                           **scrape_times(store, Path(tmp), args.repeats)}
            finally:
                store.close()
                if postgres:
                    postgres.drop(url)
                    postgres.close()
            print(f"{dialect}: {args.jobs:,} jobs, ~{args.points:,} points: " + ", ".join(
                f"{key} {value}" for key, value in figures.items()), flush=True)
            result["figures"][dialect] = figures
    print(f"results: {write_results('metrics_scrape', result)}")


if __name__ == "__main__":
    main()
