"""Claims on one shared GPU, on PostgreSQL: what GPU memory accounting costs a claim, whether the
GPU is ever overcommitted, and how long a big job waits behind a stream of small ones.

No GPU is needed. `--processes` (16) claimer processes share one 80 GiB GPU, as `trainyard worker
--jobs 16` on one GPU does: each has a worker row naming the GPU's UUID, and claims through
Store.claim_next_job with the Capacity a GPU worker reports, measuring an idle GPU every time
(the worst case for a free-memory snapshot: a neighbour's job claimed a moment ago has not
allocated yet). A claimed job "runs" for a while (sleeps) and is marked succeeded; a claim that
finds nothing waits 0.25 s before the next, as a worker waits for its next wake-up.

1. **Accounting.** `--jobs` (10,000) queued jobs with estimates of 1-8 GiB, claimed for
   `--seconds` with the GPU's UUID and total (claims count the jobs running on it, one claim
   at a time per GPU) and then without them (free memory only, as before migration 0018).
   Claims pass the default backfill limit (300 s), as a worker's do. Reported: claim latency,
   and after every claim the sum of the estimates (each plus the 1 GiB reserve) of the jobs
   then running, whose largest value must stay within the total.
2. **Starvation.** A submitter keeps about 50 small jobs (4 GiB) queued for `--stream` seconds,
   enough to keep the GPU full, and submits three big jobs (60 GiB) on the way. Reported: how
   long each big job waited, with the backfill limit (`--backfill` s, as
   TRAINYARD_GPU_BACKFILL_SECONDS) and without one (smaller jobs behind it start first for as
   long as any fit).

    .venv/bin/python bench/gpu_claims.py          # ~2 min; figures in bench/results/gpu_claims.json
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Postgres, latency_summary, positive_int, run_header, write_results

GIB = 1024**3
TOTAL = 80 * GIB
RESERVE = GIB
GPU = "GPU-bench-0"
TINY_MLP = {"epochs": 1, "hidden_sizes": [8, 8]}
# A claimer that found nothing to run waits this long before it claims again. A worker waits
# for its next wake-up (a job submitted, or the reconciler sending a waiting job again);
# it claims again at once after each job it ran.
IDLE_WAIT_S = 0.25


def capacity(accounting: bool):
    from db.store.scheduling import Capacity

    if not accounting:  # free memory only: every process sees an idle GPU
        return Capacity(gpus=1, free_memory_bytes=TOTAL - RESERVE)
    return Capacity(gpus=1, free_memory_bytes=TOTAL - RESERVE, gpu_ids=(GPU,),
                    total_memory_bytes=TOTAL - RESERVE, reserve_bytes=RESERVE)


def insert_jobs(store, sizes: list[int]) -> None:
    from sqlalchemy import insert

    from db.tables import Job, utcnow

    now = utcnow()
    rows = [{"name": "bench", "model": "mlp", "dataset": "digits", "hyperparameters": TINY_MLP,
             "device": "cuda", "status": "queued", "attempts": 0, "epoch": 0, "step": 0,
             "created_at": now, "updated_at": now, "enqueued_at": now, "infra_failures": 0,
             "owner": "local", "priority": 0, "memory_bytes": size} for size in sizes]
    with store.engine.begin() as conn:
        conn.execute(insert(Job), rows)


def running_on_gpu(store) -> int:
    """The estimates plus a reserve each of the jobs running now (all on the one GPU)."""
    from sqlalchemy import func, select

    from db.tables import Job

    with store.engine.connect() as conn:
        total, count = conn.execute(select(func.coalesce(func.sum(Job.memory_bytes), 0),
                                           func.count()).where(Job.status == "running")).one()
    return int(total) + int(count) * RESERVE


def claimer(url: str, name: str, seconds: float, accounting: bool, backfill: float | None,
            hold: tuple[float, float], ready, go, results) -> None:
    from db.store import Store

    store = Store(url)
    store.record_worker_seen(name, "bench", 1, ["cuda"], starting=True, gpus=1,
                             gpu_free_bytes=TOTAL, gpu_ids=[GPU], gpu_memory_bytes=TOTAL)
    rng = random.Random(name)
    timings, held, waits = [], [], []
    ready.release()
    go.wait()  # every process started and connected: the clock starts now
    until = time.time() + seconds
    while time.time() < until:
        start = time.perf_counter()
        job = store.claim_next_job(name, ["cuda"], "cuda", capacity=capacity(accounting),
                                   backfill_seconds=backfill)
        timings.append(time.perf_counter() - start)
        if job is None:
            time.sleep(IDLE_WAIT_S)
            continue
        held.append(running_on_gpu(store))
        waits.append((job.memory_bytes, (job.started_at - job.created_at).total_seconds()))
        time.sleep(rng.uniform(*hold))
        store.finish_job(job.id, "succeeded", attempt=job.attempts)
    results.put((timings, held, waits))
    store.close()


def run_claimers(url: str, processes: int, seconds: float, accounting: bool,
                 backfill: float | None, hold: tuple[float, float],
                 on_start=None) -> tuple[list, list, list]:
    """`processes` claimers for `seconds` from the moment all are connected (`on_start`
    is called then): (claim latencies, GPU memory held after each claim, (estimate, wait)
    of each job claimed)."""
    ctx = multiprocessing.get_context("spawn")
    results, ready, go = ctx.Queue(), ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=claimer, args=(url, f"gpu-{i}", seconds, accounting, backfill,
                                               hold, ready, go, results))
             for i in range(processes)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire(timeout=120)
    if on_start is not None:
        on_start()
    go.set()
    timings, held, waits = [], [], []
    for _ in procs:
        t, h, w = results.get(timeout=seconds + 120)
        timings += t
        held += h
        waits += w
    for p in procs:
        p.join(timeout=60)
    return timings, held, waits


def accounting_phase(postgres: Postgres, jobs: int, processes: int, seconds: float) -> dict:
    from db.store import Store

    out = {}
    for accounting in (True, False):
        url = postgres.create()
        try:
            store = Store(url)
            store.migrate()
            rng = random.Random(jobs)
            insert_jobs(store, [rng.randint(1, 8) * GIB for _ in range(jobs)])
            store.close()
            # with the backfill limit a worker has by default (TRAINYARD_GPU_BACKFILL_SECONDS)
            timings, held, _ = run_claimers(url, processes, seconds, accounting, 300.0,
                                            (0.05, 0.15))
            largest = max(held) if held else 0
            key = "with_accounting" if accounting else "free_memory_only"
            out[key] = {"claim": latency_summary(timings), "jobs_claimed": len(held),
                        "largest_held_gib": round(largest / GIB, 1),
                        "gpu_total_gib": TOTAL / GIB, "overcommitted": largest > TOTAL}
            print(f"{key}: claim p50 {out[key]['claim']['p50_ms']} ms, p95 "
                  f"{out[key]['claim']['p95_ms']} ms; {len(held)} jobs; largest held "
                  f"{largest / GIB:.0f} of {TOTAL / GIB:.0f} GiB", flush=True)
        finally:
            postgres.drop(url)
    return out


def submitter(url: str, stream: float, bigs_at: tuple[float, ...]) -> None:
    """Keeps about 50 small jobs queued for `stream` s; submits one big job at each offset."""
    from sqlalchemy import func, select

    from db.store import Store
    from db.tables import Job

    store = Store(url)
    started, pending = time.time(), list(bigs_at)
    until = started + stream
    while time.time() < until:
        if pending and time.time() - started >= pending[0]:
            insert_jobs(store, [60 * GIB])
            pending.pop(0)
        with store.engine.connect() as conn:
            queued = conn.execute(select(func.count()).where(Job.status == "queued")).scalar()
        if queued < 50:
            insert_jobs(store, [4 * GIB] * (50 - queued))
        time.sleep(0.05)
    store.close()


def starvation_phase(postgres: Postgres, processes: int, stream: float,
                     backfill: float) -> dict:
    from sqlalchemy import select

    from db.store import Store
    from db.tables import Job

    out = {}
    bigs_at = (2.0, stream * 0.35, stream * 0.6)
    for limit in (backfill, None):
        url = postgres.create()
        try:
            Store(url).migrate()
            ctx = multiprocessing.get_context("spawn")
            feed = ctx.Process(target=submitter, args=(url, stream, bigs_at))
            _, _, waits = run_claimers(url, processes, stream + 15, True, limit, (0.15, 0.25),
                                       on_start=feed.start)
            feed.join(timeout=60)
            store = Store(url)
            with store.engine.connect() as conn:
                never = conn.execute(select(Job.id).where(Job.memory_bytes == 60 * GIB,
                                                          Job.status == "queued")).all()
            store.close()
            big = sorted(w for size, w in waits if size == 60 * GIB)
            small = [w for size, w in waits if size != 60 * GIB]
            key = f"backfill_limit_{limit:g}s" if limit is not None else "no_backfill_limit"
            out[key] = {"big_job_waits_s": [round(w, 1) for w in big],
                        "big_jobs_not_started": len(never),
                        "small_jobs_run": len(small),
                        "small_wait_p50_s": round(sorted(small)[len(small) // 2], 2)
                        if small else None}
            print(f"{key}: big jobs waited {out[key]['big_job_waits_s']} s "
                  f"({len(never)} not started after the stream + 15 s); "
                  f"{len(small)} small jobs ran", flush=True)
        finally:
            postgres.drop(url)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=positive_int, default=10_000)
    parser.add_argument("--processes", type=positive_int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--stream", type=float, default=20.0)
    parser.add_argument("--backfill", type=float, default=2.0)
    parser.add_argument("--phases", default="accounting,starvation",
                        help="which phases to run, comma-separated")
    parser.add_argument("--out", default="gpu_claims")
    args = parser.parse_args()
    result = run_header("gpu_claims", vars(args))
    postgres = Postgres()
    try:
        phases = args.phases.split(",")
        if "accounting" in phases:
            result["accounting"] = accounting_phase(postgres, args.jobs, args.processes,
                                                    args.seconds)
        if "starvation" in phases:
            result["starvation"] = starvation_phase(postgres, args.processes, args.stream,
                                                    args.backfill)
    finally:
        postgres.close()
    print(f"wrote {write_results(args.out, result)}")


if __name__ == "__main__":
    main()
