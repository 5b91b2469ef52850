"""Scheduling at scale on Postgres + Redis: how fast workers claim from a deep queue, whether the
order holds, whether anything runs twice, and whether a backlog grows the broker.

Two phases, each on a throw-away Postgres database:

1. Claims. `--jobs` (10,000) queued jobs with random priorities (-100..100) from four owners;
   `--workers` (8) processes each run the worker's own loop (`JobRunner.run_next`: claim the best
   job, train it for real (a tiny MLP), write its metrics, claim the next) for `--seconds`. Every
   `claim_next_job` call is timed in the process that makes it. The same again with a queue of
   `--workers` x 3 jobs gives the figure at an (almost) empty queue. Before those, the same
   processes only claim (200 claims each, every job marked done at once, no training): the
   database's cost without eight trainings competing for the CPU; and first with one process
   alone (300 claims from the deep queue, 3 from one of 3 jobs): a claim's own cost. Afterwards, from the
   database: jobs run more than once, and priority inversions (a job claimed while one of strictly
   higher priority that could have been claimed instead was still queued: pairs of claims whose
   order disagrees with priority by more than the claims' overlap).
2. Broker. `--backlog` (1,000) queued jobs, each with its wake-up message on Redis (as POST /jobs
   sends it), behind `--busy-workers` real `trainyard worker` processes busy with long jobs, with
   a re-send period (TRAINYARD_ENQUEUE_GRACE_SECONDS) of 1 s and a reconciler pass every 0.5 s;
   the messages on Redis are counted at the start and after ten periods.

    .venv/bin/python bench/scheduling.py            # ~3 min; figures in bench/results/scheduling.json
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REDIS_URL,
    Postgres,
    flush_redis,
    latency_summary,
    positive_int,
    run_header,
    write_results,
)

TINY_MLP = {"epochs": 1, "steps_per_epoch": 1, "hidden_sizes": [8, 8], "batch_size": 16}
OWNERS = ("ada", "bo", "cy", "dee")


def queue_jobs(url: str, count: int, seed: int, hp: dict | None = None) -> None:
    """`count` queued CPU jobs with random priorities and owners, inserted in one transaction."""
    from sqlalchemy import insert

    from db.store import Store
    from db.tables import Job, utcnow

    rng = random.Random(seed)
    now = utcnow()
    rows = [{"name": f"bench-{i}", "model": "mlp", "dataset": "digits",
             "hyperparameters": hp or TINY_MLP, "device": "cpu", "status": "queued",
             "attempts": 0, "epoch": 0, "step": 0, "created_at": now, "updated_at": now,
             "enqueued_at": now, "infra_failures": 0, "owner": rng.choice(OWNERS),
             "priority": rng.randint(-100, 100)} for i in range(count)]
    store = Store(url)
    try:
        with store.engine.begin() as conn:
            conn.execute(insert(Job), rows)
        if store.dialect == "postgresql":  # as autovacuum does after this many inserted rows
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE jobs")
    finally:
        store.close()


def bare_claimer(url: str, name: str, claims: int, results) -> None:
    """`claims` claims, each job marked succeeded at once: the database's cost alone."""
    from db.store import Store

    store = Store(url)
    timings: list[float] = []
    for _ in range(claims):
        start = time.perf_counter()
        job = store.claim_next_job(name, ["cpu", "auto"])
        timings.append(time.perf_counter() - start)
        if job is None:
            break
        store.finish_job(job.id, "succeeded", attempt=job.attempts)
    results.put(timings)
    store.close()


def claimer(url: str, name: str, seconds: float, results) -> None:
    """One worker's loop (JobRunner.run_next) for `seconds`, timing every claim."""
    import torch

    from core.settings import Settings
    from db.store import Store
    from worker import runner as runner_module

    torch.set_num_threads(1)
    store = Store(url)
    timings: list[float] = []
    claim = store.claim_next_job

    def timed_claim(*args, **kwargs):
        start = time.perf_counter()
        try:
            return claim(*args, **kwargs)
        finally:
            timings.append(time.perf_counter() - start)

    store.claim_next_job = timed_claim
    settings = Settings(metrics_flush_seconds=1.0, heartbeat_seconds=5.0)
    threading.Timer(seconds, runner_module.DRAINING.set).start()  # stop: as a SIGTERM would
    runner_module.JobRunner(store, settings, name, ["cpu", "auto"]).run_next()
    results.put(timings)
    store.close()


def claims_phase(postgres: Postgres, jobs: int, workers: int, seconds: float,
                 bare_claims: int = 0) -> dict:
    """Workers training tiny jobs for `seconds`, or, with `bare_claims`, claiming that many
    jobs each without training them."""
    from db.store import Store

    url = postgres.create()
    try:
        Store(url).migrate()
        queue_jobs(url, jobs, seed=jobs)
        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        target, work = (bare_claimer, bare_claims) if bare_claims else (claimer, seconds)
        processes = [ctx.Process(target=target, args=(url, f"bench-{i}", work, results))
                     for i in range(workers)]
        for process in processes:
            process.start()
        # The first claim of each process also opens its connection: left out.
        timings = [t for _ in processes for t in results.get(timeout=seconds + 300)[1:]]
        for process in processes:
            process.join(timeout=120)
        what = {"claims_each": bare_claims} if bare_claims else {"seconds": seconds}
        return {"queued_at_start": jobs, "workers": workers, "training": not bare_claims, **what,
                "claim": latency_summary(timings), **order_report(url)}
    finally:
        postgres.drop(url)


def order_report(url: str) -> dict:
    """From the attempts: jobs run twice, and priority inversions. Claims overlap in time (eight
    claimers); an inversion is a job claimed while a job of strictly higher priority stayed
    queued until after that claim had committed, so a concurrent claim of the better job by
    another worker (skipped because locked) does not count."""
    from sqlalchemy import text

    from db.store import Store

    store = Store(url)
    try:
        with store.engine.connect() as conn:
            # Run twice: two attempts of a job of which the earlier one did not end by giving
            # the job back (drained, preempted, worker lost), or that overlap in time.
            claimed = conn.execute(text(
                "SELECT j.id, j.priority, a.started_at, j.attempts, "
                "(SELECT count(*) FROM job_attempts b JOIN job_attempts c "
                "  ON c.job_id = b.job_id AND c.number = b.number + 1 WHERE b.job_id = j.id "
                "  AND (b.outcome IS NULL OR b.outcome NOT IN ('drained', 'preempted', "
                "       'worker_lost') OR b.ended_at > c.started_at)) "
                "FROM jobs j JOIN job_attempts a ON a.job_id = j.id AND a.number = 1 "
                "ORDER BY a.started_at")).all()
            top_left = conn.execute(text(
                "SELECT max(priority) FROM jobs WHERE status = 'queued' AND attempts = 0")).scalar()
    finally:
        store.close()
    # Each claim against the claims well after it (all jobs were queued from the start), and
    # against the jobs never claimed: both mean a better job waited while this one started.
    inversions = 0
    for i, (_, priority, started, _, _) in enumerate(claimed):
        inversions += any(p > priority for _, p, s, _, _ in claimed[i + 1:]
                          if (s - started).total_seconds() > 0.05)
        inversions += top_left is not None and top_left > priority
    return {
        "jobs_claimed": len(claimed),
        "jobs_run_twice": sum(n > 0 for *_, n in claimed),
        "jobs_given_back_and_resumed": sum(attempts > 1 for *_, attempts, _ in claimed),
        "priority_inversions": inversions,
    }


def broker_phase(postgres: Postgres, backlog: int, busy_workers: int) -> dict:
    import tempfile

    import redis
    from sqlalchemy import text

    from core.settings import Settings
    from db.store import Store
    from trainyard.local_service import LocalService, free_port
    from worker.celery_app import enqueue_job, make_celery

    url = postgres.create()
    flush_redis(REDIS_URL)
    home = Path(tempfile.mkdtemp(prefix="trainyard-bench-sched-"))
    grace = 1.0
    env = {"TRAINYARD_DATABASE_URL": url, "TRAINYARD_BROKER_URL": REDIS_URL,
           "TRAINYARD_ENQUEUE_GRACE_SECONDS": str(grace), "TRAINYARD_RECONCILE_SECONDS": "0.5",
           "TRAINYARD_HEARTBEAT_SECONDS": "0.5", "TRAINYARD_TORCH_THREADS": "1",
           "TRAINYARD_RECONCILE_IN_API": "false"}
    service = LocalService(home, env, free_port())
    client = redis.Redis.from_url(REDIS_URL)

    def messages() -> int:
        lists = sum(client.llen(k) for k in client.scan_iter() if client.type(k) == b"list")
        return lists + client.hlen("unacked")

    try:
        store = Store(url)
        store.migrate()
        long_jobs = [store.create_job("mlp", "digits", {"epochs": 1000, "steps_per_epoch": 50},
                                      device="cpu", priority=100).id
                     for _ in range(busy_workers)]
        for i in range(busy_workers):
            service.start(f"w{i}", "worker", "--name", f"busy-{i}@%h")
        deadline = time.monotonic() + 120
        while not all(store.get_status(j) == "running" for j in long_jobs):
            if time.monotonic() > deadline:
                raise RuntimeError("the busy workers did not start:\n" + service.logs())
            time.sleep(0.2)
        queue_jobs(url, backlog, seed=backlog)
        app = make_celery(Settings(broker_url=REDIS_URL, database_url=url, home=home))
        with store.engine.connect() as conn:
            ids = [i for (i,) in conn.execute(text(
                "SELECT id FROM jobs WHERE status = 'queued' ORDER BY id"))]
        for job_id in ids:  # the wake-ups POST /jobs would have sent
            enqueue_job(app, job_id, "cpu")
        time.sleep(2 * grace)  # every backlog job is past its grace period now
        at_start = messages()
        samples = []
        for _ in range(10):
            time.sleep(grace)
            samples.append(messages())
        still_queued = sum(store.get_status(i) == "queued" for i in ids)
        busy = sum(store.get_status(j) == "running" for j in long_jobs)
        store.close()
        return {"backlog": backlog, "busy_workers": busy, "resend_period_s": grace,
                "broker_messages_at_start": at_start, "broker_messages_each_period": samples,
                "broker_messages_after_10_periods": samples[-1],
                "grew": samples[-1] > at_start, "backlog_still_queued": still_queued}
    finally:
        client.close()
        service.stop()
        flush_redis(REDIS_URL)
        postgres.drop(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=positive_int, default=10_000)
    parser.add_argument("--workers", type=positive_int, default=8)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--backlog", type=positive_int, default=1_000)
    parser.add_argument("--busy-workers", type=positive_int, default=2)
    parser.add_argument("--out", default="scheduling")
    args = parser.parse_args()
    result = run_header("scheduling", vars(args))
    postgres = Postgres()
    try:
        phases = {
            # the database's cost alone, one claimer: a deep and an almost empty queue
            "one_claimer_deep_queue": (args.jobs, 1, 300),
            "one_claimer_empty_queue": (3, 1, 3),
            # the same with as many claimers as workers, all at once
            "claims_only_deep_queue": (args.jobs, args.workers, 200),
            "claims_only_empty_queue": (args.workers * 3, args.workers, 3),
            # workers training tiny jobs, as the bench describes
            "deep_queue": (args.jobs, args.workers, 0),
            "empty_queue": (args.workers * 3, args.workers, 0),
        }
        for label, (jobs, workers, bare_claims) in phases.items():
            result[label] = claims_phase(postgres, jobs, workers, args.seconds, bare_claims)
            print(f"{label}:", result[label])
        result["broker"] = broker_phase(postgres, args.backlog, args.busy_workers)
        print("broker:", result["broker"])
    finally:
        postgres.close()
    print(f"written to {write_results(args.out, result)}")


if __name__ == "__main__":
    main()
