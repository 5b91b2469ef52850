"""Requests/s of the API's busiest reads against a bare FastAPI endpoint, same uvicorn, same run.

Two servers run side by side with the same uvicorn settings (`uvicorn.run` defaults, the
service's log level, access log on) and the same number of worker processes: `trainyard api
--workers W` on a throw-away PostgreSQL database holding two jobs with 3 series x `--steps`
points each (train_loss, lr, samples_per_s, written through Store.add_metrics), one finished
an hour ago (its curves settled: kept by the API) and one running (downsampled on every
request, what a live job page's polls cost), and a bare
FastAPI app answering a constant JSON object. A load generator in its own process keeps
`--connections` keep-alive HTTP/1.1 connections busy (asyncio, a minimal client: the client's
own cost per request is small and the same for every endpoint) for `--seconds` per
endpoint, in `--rounds` interleaved rounds (bare, GET /jobs/{id}, GET /jobs/{id}/metrics, ...);
the figure per endpoint is the median round, and each ratio is the endpoint's requests/s over
the bare endpoint's.

    .venv/bin/python bench/api_capacity.py                         # W = 1 and 2 (~2.5 min)
    .venv/bin/python bench/api_capacity.py --workers 1 --seconds 4 --rounds 2
    .venv/bin/python bench/api_capacity.py --serve-bare --port 8123  # only the bare app
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import common
from common import Postgres, percentile, run_header, write_results
from fastapi import FastAPI
from sqlalchemy import update

# The bare endpoint: what FastAPI + uvicorn cost with no work behind them.
bare_app = FastAPI()


@bare_app.get("/bare")
def bare() -> dict:
    return {"status": "ok", "value": 1}


# ------------------------------------------------------------------ the load generator
async def _connection(port: int, path: str, until: float, latencies: list, bad: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            if head[9:12] != b"200":
                bad.append(head[:12].decode(errors="replace"))
    finally:
        writer.close()


def _load(port: int, path: str, connections: int, seconds: float, warmup: float,
          out: mp.Queue) -> None:
    """Run in its own process: requests completed after the warm-up, and their latencies."""
    async def run() -> tuple[list, list]:
        latencies: list[float] = []
        bad: list[str] = []
        start = time.perf_counter()
        await asyncio.gather(*(_connection(port, path, start + warmup + seconds, latencies,
                                           bad) for _ in range(connections)))
        return latencies, bad

    # Latencies of the warm-up are dropped by count: the first second's share.
    latencies, bad = asyncio.run(run())
    out.put((latencies, bad))


def measure(port: int, path: str, args) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_load, args=(port, path, args.connections, args.seconds,
                                           args.warmup, out))
    proc.start()
    latencies, bad = out.get(timeout=args.seconds + args.warmup + 120)
    proc.join(timeout=30)
    # Requests are spread evenly enough over the run to drop the warm-up's share by count.
    total = args.warmup + args.seconds
    kept = latencies[int(len(latencies) * args.warmup / total):]
    return {"requests_per_s": round(len(kept) / args.seconds, 1),
            "p50_ms": round(1000 * percentile(kept, 50), 2),
            "p99_ms": round(1000 * percentile(kept, 99), 2),
            "non_200": len(bad), "non_200_samples": bad[:3]}


# ------------------------------------------------------------------ the servers
def serve_bare(port: int, workers: int, log_level: str) -> None:
    import uvicorn

    # The same call as `trainyard api` makes (trainyard/cli.py cmd_api), app aside.
    if workers == 1:
        uvicorn.run(bare_app, host="127.0.0.1", port=port, log_level=log_level)
    else:
        uvicorn.run("api_capacity:bare_app", app_dir=str(BENCH_DIR), host="127.0.0.1",
                    port=port, workers=workers, log_level=log_level)


def _wait_ready(port: int, path: str, proc: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{path} on port {port} not ready:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def servers(url: str, workers: int, home: Path):
    """`trainyard api --workers W` and the bare app, each in its own process group."""
    from trainyard.local_service import free_port

    api_port, bare_port = free_port(), free_port()
    env = {**os.environ, "TRAINYARD_HOME": str(home), "TRAINYARD_DATABASE_URL": url,
           "TRAINYARD_BROKER_URL": common.REDIS_URL, "PYTHONUNBUFFERED": "1"}
    log_level = env.get("TRAINYARD_LOG_LEVEL", "INFO").lower()
    commands = {
        # (--workers only when > 1: the same command then runs on code from before it.)
        "api": [sys.executable, "-m", "trainyard", "api", "--port", str(api_port),
                *(["--workers", str(workers)] if workers > 1 else [])],
        "bare": [sys.executable, str(Path(__file__).resolve()), "--serve-bare", "--port",
                 str(bare_port), "--workers", str(workers), "--log-level", log_level],
    }
    procs = {}
    try:
        for name, command in commands.items():
            log = home / f"{name}-{workers}.log"
            procs[name] = (subprocess.Popen(command, env=env, stdout=log.open("wb"),
                                            stderr=subprocess.STDOUT, start_new_session=True),
                           log)
        _wait_ready(api_port, "/healthz", *procs["api"])
        _wait_ready(bare_port, "/bare", *procs["bare"])
        yield api_port, bare_port
    finally:
        for proc, _ in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _ in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def seed_job(store, steps: int, finish: bool = True) -> int:
    """A job with 3 series of `steps` points, written as a worker writes them: finished an
    hour ago (a settled run, whose curves the API keeps), or still running (`finish` false:
    its curves are downsampled afresh on every request)."""
    from db.tables import Job, utcnow

    job = store.create_job("mlp", "digits", {"epochs": 10}, device="cpu", name="capacity")
    store.claim_job(job.id, "bench-capacity")
    per_epoch = max(1, steps // 10)
    for first in range(1, steps + 1, 1000):
        points = []
        for step in range(first, min(first + 1000, steps + 1)):
            epoch = (step - 1) // per_epoch + 1
            points += [("train_loss", step, epoch, 2.3 / (1 + step * 1e-3)),
                       ("lr", step, epoch, 1e-3), ("samples_per_s", step, epoch, 15000.0)]
        store.add_metrics(job.id, points)
    if finish:
        store.finish_job(job.id, "succeeded")
        with store.engine.begin() as conn:
            conn.execute(update(Job).where(Job.id == job.id)
                         .values(finished_at=utcnow() - dt.timedelta(hours=1)))
    return job.id


def run_workers(url: str, job_id: int, live_id: int, workers: int, args, home: Path) -> dict:
    paths = {"bare": "/bare", "job": f"/jobs/{job_id}", "metrics": f"/jobs/{job_id}/metrics",
             "metrics_live": f"/jobs/{live_id}/metrics"}
    rounds: dict[str, list[dict]] = {name: [] for name in paths}
    load_before = common.load_average()
    with servers(url, workers, home) as (api_port, bare_port):
        for _ in range(args.rounds):
            for name, path in paths.items():
                port = bare_port if name == "bare" else api_port
                rounds[name].append(measure(port, path, args))
    result: dict = {"workers": workers, "load_average_before": load_before,
                    "load_average_after": common.load_average()}
    median = {name: statistics.median(r["requests_per_s"] for r in runs)
              for name, runs in rounds.items()}
    for name, runs in rounds.items():
        result[name] = {"path": paths[name], "requests_per_s": median[name],
                        "ratio_to_bare": round(median[name] / median["bare"], 3),
                        "rounds": runs}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=common.positive_int, nargs="+", default=[1, 2],
                        help="API worker processes, one measurement each")
    parser.add_argument("--steps", type=common.positive_int, default=10_000,
                        help="steps of the job's 3 series")
    parser.add_argument("--connections", type=common.positive_int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0, help="per endpoint and round")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=common.positive_int, default=3)
    parser.add_argument("--out", default="api_capacity")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=8123, help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default="info", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.port, args.workers[0], args.log_level)
        return

    from db.store import Store

    result = run_header("api_capacity", vars(args))
    postgres = Postgres()
    url = postgres.create()
    home = Path(tempfile.mkdtemp(prefix="trainyard-bench-capacity-"))
    store = Store(url)
    try:
        store.migrate()
        job_id = seed_job(store, args.steps)
        live_id = seed_job(store, args.steps, finish=False)
        result["runs"] = []
        for workers in args.workers:
            run = run_workers(url, job_id, live_id, workers, args, home)
            result["runs"].append(run)
            print(f"--workers {workers}: " + "; ".join(
                f"{name} {run[name]['requests_per_s']:,.0f}/s ({run[name]['ratio_to_bare']:.3f}"
                f" of bare, p50 {statistics.median(r['p50_ms'] for r in run[name]['rounds'])}"
                " ms)" for name in ("bare", "job", "metrics", "metrics_live"))
                + f"; load {run['load_average_after']}", flush=True)
    finally:
        store.close()
        postgres.drop(url)
        postgres.close()
        shutil.rmtree(home, ignore_errors=True)
    print(f"wrote {write_results(args.out, result)}")


if __name__ == "__main__":
    main()
