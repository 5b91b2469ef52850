"""Metric ingestion into PostgreSQL while a client polls GET /jobs/{id}.

For each N in --jobs: N writer processes (as N workers would be), each owning one running job,
send per-step train_loss / lr / samples_per_s points as the worker's PersistingCallbacks does
(buffered, one batch every `metrics_flush_seconds`, written beside the trainer by
Store.add_metrics, rollups included in the same transaction, behind a bounded queue) and renew
the job's heartbeat. At the same time a client polls GET /jobs/{id} of one of those jobs over
HTTP against a running `trainyard api` on the same database. Figures: points/s that landed in
the database, the add_metrics time per batch, the GET latency percentiles, the load average.

Offered load: `--points-per-s` in total (default 120,000, split over the N jobs; 0: each writer
as fast as the database takes its batches, two batches waiting at most). Sustained means the
points landed at the offered rate and the last batch was written within about one flush after
the writers stopped (`drain_s`); a database that falls behind slows the writers down (the queue
is bounded), which shows as generated < offered.

    .venv/bin/python bench/ingestion.py                       # N = 1, 4, 8, 20 s each (~2 min)
    .venv/bin/python bench/ingestion.py --jobs 4 --seconds 10 --points-per-s 0
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import queue
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import Postgres, latency_summary, percentile, run_header, write_results

NAMES = ("train_loss", "lr", "samples_per_s")


# ------------------------------------------------------------------ one writer process
def _writer(url: str, job_id: int, start_at: float, seconds: float, steps_per_s: float,
            flush_seconds: float, steps_per_epoch: int, out: mp.Queue) -> None:
    """One job's metric stream as the worker sends it (worker/runner.py PersistingCallbacks):
    per step one point per name stamped with the step's time, buffered, and every
    `flush_seconds` handed as one batch to Store.add_metrics, which runs beside the trainer
    (here a thread; the worker's writer thread or process) behind a short bounded queue, so a
    database that falls behind slows the trainer instead of growing memory."""
    from db.store import Store

    store = Store(url)
    batches: list[tuple[float, float, int]] = []  # (start, end, points) of each add_metrics
    pending: queue.Queue = queue.Queue(maxsize=2)
    failures: list[str] = []

    def write() -> None:
        while (points := pending.get()) is not None:
            t0 = time.time()
            try:
                store.add_metrics(job_id, points)
            except Exception as exc:  # noqa: BLE001 - reported with the results
                failures.append(repr(exc))
            batches.append((t0, time.time(), len(points)))

    writer = threading.Thread(target=write, name="metrics-writer")
    writer.start()
    while time.time() < start_at:
        time.sleep(0.005)
    began = time.time()
    step, next_beat, last_flush = 0, began, began
    buffer: list[tuple[str, int, int, float, float]] = []
    while (now := time.time()) < began + seconds:
        if now >= next_beat:  # as the worker's heartbeat does, every 5 s
            store.heartbeat(job_id)
            next_beat = now + 5.0
        if now - last_flush >= flush_seconds:
            pending.put(buffer)  # blocks while two batches wait: the trainer slows down
            buffer, last_flush = [], time.time()
            continue
        if steps_per_s > 0:
            todo = min(int((now - began) * steps_per_s) - step, 500)
            if todo <= 0:
                time.sleep(0.001)
                continue
        else:
            todo = 200
        for _ in range(todo):
            step += 1
            epoch = (step - 1) // steps_per_epoch + 1
            buffer.extend((name, step, epoch, value, now) for name, value in
                          zip(NAMES, (2.3 / (1 + step * 1e-3), 1e-3, 15000.0), strict=True))
    stopped = time.time()
    pending.put(buffer)
    pending.put(None)
    writer.join()
    out.put({"job_id": job_id, "began": began, "stopped": stopped, "drained": time.time(),
             "steps": step, "points": step * len(NAMES), "batches": batches,
             "failures": failures})
    store.close()


# ------------------------------------------------------------------ the GET poller
def _poll(http, job_id: int, until: float, interval: float, latencies: list, errors: list) -> None:
    while time.time() < until:
        t0 = time.perf_counter()
        try:
            response = http.get(f"/jobs/{job_id}")
            elapsed = time.perf_counter() - t0
            if response.status_code == 200:
                latencies.append(elapsed)
            else:
                errors.append(response.status_code)
        except Exception as exc:  # noqa: BLE001 - counted, the run goes on
            errors.append(repr(exc))
        time.sleep(max(0.0, interval - (time.perf_counter() - t0)))


def _landed_rate(batches: list[tuple[float, float, int]], t_a: float, t_b: float) -> float:
    """Points landed per second within [t_a, t_b], each batch's points spread over its write."""
    total = 0.0
    for t0, t1, n in batches:
        span = max(t1 - t0, 1e-6)
        overlap = min(t1, t_b) - max(t0, t_a)
        if overlap > 0:
            total += n * overlap / span
    return total / (t_b - t_a)


def run_level(service, store, url: str, n_jobs: int, args) -> dict:
    jobs = []
    for i in range(n_jobs):
        job = store.create_job("mlp", "digits", {"epochs": 100}, device="cpu",
                               name=f"ingest-{n_jobs}-{i}")
        store.claim_job(job.id, f"bench-ingest-{i}")
        jobs.append(job.id)
    total_rate = args.points_per_s
    steps_per_s = total_rate / len(NAMES) / n_jobs if total_rate > 0 else 0.0
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0 + 0.3 * n_jobs  # each spawned interpreter imports the store
    procs = [ctx.Process(target=_writer, args=(url, job_id, start_at, args.seconds, steps_per_s,
                                               args.flush_seconds, args.steps_per_epoch, out))
             for job_id in jobs]
    load_before = common.load_average()
    for proc in procs:
        proc.start()
    latencies: list[float] = []
    errors: list = []
    while time.time() < start_at:
        time.sleep(0.01)
    _poll(service.http, jobs[0], start_at + args.seconds, args.poll_ms / 1000, latencies, errors)
    results = [out.get(timeout=120 + args.seconds) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    load_after = common.load_average()
    batches = [b for r in results for b in r["batches"]]
    # The writers start together unless one was still importing at start_at: the window is
    # the time all of them were offering points, less the warm-up.
    began = max(r["began"] for r in results)
    t_a, t_b = began + args.warmup, min(r["stopped"] for r in results)
    write_s = [t1 - t0 for t0, t1, _ in batches]
    sizes = [n for _, _, n in batches]
    per_point_us = [1e6 * (t1 - t0) / n for t0, t1, n in batches if n]
    landed = _landed_rate(batches, t_a, t_b)
    level = {
        "jobs": n_jobs,
        "offered_points_per_s": round(total_rate) if total_rate > 0 else "max",
        "generated_points_per_s": round(sum(r["points"] for r in results) / args.seconds),
        "late_start_s": round(began - start_at, 2),
        "landed_points_per_s": round(landed),
        "drain_s": round(max(r["drained"] - r["stopped"] for r in results), 2),
        "batches": len(batches),
        "write_failures": [f for r in results for f in r["failures"]][:5],
        "batch_points_p50": round(percentile(sizes, 50)),
        "add_metrics_ms": {"p50": round(1000 * percentile(write_s, 50), 1),
                           "p95": round(1000 * percentile(write_s, 95), 1),
                           "max": round(1000 * max(write_s), 1) if write_s else None},
        "us_per_point_p50": round(percentile(per_point_us, 50), 2),
        "get_job": {**latency_summary(latencies),
                    "p99_ms": round(1000 * percentile(latencies, 99), 1),
                    "errors": len(errors), "error_samples": [str(e) for e in errors[:5]]},
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    for job_id in jobs:  # give the jobs an end, as their workers would
        with contextlib.suppress(Exception):
            store.finish_job(job_id, "succeeded")
    return level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=common.positive_int, nargs="+", default=[1, 4, 8],
                        help="numbers of concurrent writing jobs, one level each")
    parser.add_argument("--seconds", type=float, default=20.0, help="writing time per level")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds at the start of a level left out of points/s")
    parser.add_argument("--points-per-s", type=float, default=120_000,
                        help="offered points/s over all jobs; 0: as fast as they land")
    parser.add_argument("--flush-seconds", type=float, default=1.0,
                        help="TRAINYARD_METRICS_FLUSH_SECONDS of the writers")
    parser.add_argument("--steps-per-epoch", type=common.positive_int, default=1000)
    parser.add_argument("--poll-ms", type=float, default=20.0,
                        help="the GET /jobs/{id} client's period")
    parser.add_argument("--out", default="ingestion")
    args = parser.parse_args()

    from db.store import Store
    from trainyard.local_service import LocalService, free_port

    result = run_header("ingestion", vars(args))
    postgres = Postgres()
    url = postgres.create()
    home = Path(tempfile.mkdtemp(prefix="trainyard-bench-ingest-api-"))
    service = None
    store = Store(url)
    try:
        store.migrate()
        env = {"TRAINYARD_DATABASE_URL": url, "TRAINYARD_BROKER_URL": common.REDIS_URL}
        service = LocalService(home, env, free_port())
        service.start("api", "api", "--port", str(service.port))
        service.wait_healthy(timeout=90)
        levels = []
        for n_jobs in args.jobs:
            level = run_level(service, store, url, n_jobs, args)
            levels.append(level)
            g = level["get_job"]
            print(f"N={n_jobs:>2}: offered {level['offered_points_per_s']} points/s, landed "
                  f"{level['landed_points_per_s']:,}/s (drain {level['drain_s']} s, add_metrics "
                  f"p50 {level['add_metrics_ms']['p50']} ms for {level['batch_points_p50']} "
                  f"points); GET /jobs/{{id}} p50/p95/p99 {g['p50_ms']}/{g['p95_ms']}/"
                  f"{g['p99_ms']} ms ({g['n']} requests, {g['errors']} errors); load "
                  f"{level['load_average_after']}", flush=True)
        result["levels"] = levels
    finally:
        store.close()
        if service is not None:
            service.stop()
        postgres.drop(url)
        postgres.close()
        shutil.rmtree(home, ignore_errors=True)
    print(f"wrote {write_results(args.out, result)}")


if __name__ == "__main__":
    main()
