"""Submit-to-running latency: how long a job waits between POST /jobs and a worker claiming it.

    .venv/bin/python bench/latency.py                      # both transports, 30 jobs each
    .venv/bin/python bench/latency.py --transport redis --jobs 50

For each transport the real service is started (redis: `trainyard api` + `trainyard worker` on
Postgres and Redis; embedded: `trainyard up`, SQLite and kombu's file-system queue), one worker,
idle. Tiny jobs (an MLP, one step) are submitted one at a time; the next is submitted only after
the previous one has finished and the worker has been idle for a random 0.2-0.4 s (so the
submission falls at a random phase of the file-system queue's polling).

Two figures per job:
  claim:  jobs.created_at -> jobs.started_at in the database (the API's insert, then the
          worker's guarded queued -> running update): queue transit + task start + claim.
  client: the client's clock from just before POST /jobs to the first GET /jobs/{id} that
          answers anything but "queued", polling every --poll-ms (default 5 ms). This includes
          the HTTP round trips and up to one polling interval.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

TRANSPORTS = {"redis": "distributed", "embedded": "embedded"}
TINY_JOB = ("mlp", "digits", {"epochs": 1, "steps_per_epoch": 1, "hidden_sizes": [8, 8]})


def measure(transport: str, jobs: int, poll_s: float, seed: int) -> dict:
    rng = random.Random(seed)
    model, dataset, hp = TINY_JOB
    claim, client, post_rtt, get_rtt, gets = [], [], [], [], []
    with common.running_service(TRANSPORTS[transport]) as bench:
        common.wait_worker_ready(bench)
        for _ in range(3):  # warm the worker's and the API's code paths, not counted
            job = bench.submit(model, dataset, hp, name="warm-up")
            bench.wait(job["id"], poll_s=0.05)
        for i in range(jobs):
            time.sleep(rng.uniform(0.2, 0.4))
            t0 = time.perf_counter()
            job = bench.submit(model, dataset, hp, name=f"latency-{i}")
            t_post = time.perf_counter()
            n_gets = 0
            while True:
                t_get = time.perf_counter()
                status = bench.http.get(f"/jobs/{job['id']}").json()["status"]
                get_rtt.append(time.perf_counter() - t_get)
                n_gets += 1
                if status != "queued":
                    t_seen = time.perf_counter()
                    break
                if t_seen_timeout(t0):
                    raise TimeoutError(f"job {job['id']} still queued after 60 s\n"
                                       f"{bench.service.logs()}")
                time.sleep(poll_s)
            done, _ = bench.wait(job["id"], poll_s=0.02, timeout=120)
            if done["status"] != "succeeded":
                raise RuntimeError(f"job {job['id']} {done['status']}: {done.get('error')}")
            record = bench.store.get_job(job["id"])
            created = common.parse_time(record.created_at)
            claim.append(common.parse_time(record.started_at) - created)
            client.append(t_seen - t0)
            post_rtt.append(t_post - t0)
            gets.append(n_gets)
    return {
        "claim_created_to_started": common.latency_summary(claim),
        "client_submit_to_running": common.latency_summary(client),
        "post_jobs_round_trip": common.latency_summary(post_rtt),
        "get_job_round_trip": common.latency_summary(get_rtt),
        "gets_per_job_median": sorted(gets)[len(gets) // 2],
        "claim_ms": [round(v * 1000, 1) for v in claim],
        "client_ms": [round(v * 1000, 1) for v in client],
    }


def t_seen_timeout(t0: float, limit: float = 60.0) -> bool:
    return time.perf_counter() - t0 > limit


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--transport", choices=(*TRANSPORTS, "both"), default="both")
    ap.add_argument("--jobs", type=int, default=30, help="jobs per transport (default 30)")
    ap.add_argument("--poll-ms", type=float, default=5.0,
                    help="client polling interval while the job is queued (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the idle gaps between jobs")
    ap.add_argument("--out", default="latency", help="results name (default latency)")
    args = ap.parse_args(argv)

    transports = list(TRANSPORTS) if args.transport == "both" else [args.transport]
    result = common.run_header("latency", {
        "transports": transports, "jobs_per_transport": args.jobs, "poll_ms": args.poll_ms,
        "idle_gap_s": [0.2, 0.4], "tiny_job": {"model": TINY_JOB[0], "dataset": TINY_JOB[1],
                                               "hyperparameters": TINY_JOB[2]},
        "embedded_broker_poll_interval_s": "TRAINYARD_BROKER_POLL_INTERVAL (default 0.01)",
    })
    t_all = time.monotonic()
    result["figures"] = {}
    for transport in transports:
        print(f"latency ({transport}): {args.jobs} tiny jobs one at a time, client polls every "
              f"{args.poll_ms:g} ms, load {common.load_average()}", flush=True)
        fig = measure(transport, args.jobs, args.poll_ms / 1000, args.seed)
        fig["load_average_after"] = common.load_average()
        result["figures"][transport] = fig
        c, k = fig["claim_created_to_started"], fig["client_submit_to_running"]
        print(f"  {transport:8s} claim (created_at->started_at): p50 {c['p50_ms']:.1f} ms, "
              f"p95 {c['p95_ms']:.1f} ms, max {c['max_ms']:.1f} ms", flush=True)
        print(f"  {transport:8s} client (submit->sees running): p50 {k['p50_ms']:.1f} ms, "
              f"p95 {k['p95_ms']:.1f} ms, max {k['max_ms']:.1f} ms  (round trips p50: POST /jobs "
              f"{fig['post_jobs_round_trip']['p50_ms']:.1f} ms, GET /jobs/id "
              f"{fig['get_job_round_trip']['p50_ms']:.1f} ms; GETs per job "
              f"{fig['gets_per_job_median']})", flush=True)
    result["elapsed_s"] = round(time.monotonic() - t_all, 1)
    path = common.write_results(args.out, result)
    print(f"  wrote {path.relative_to(common.ROOT)} ({result['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
