"""Shared pieces of the benchmarks: starting the real service, machine facts, statistics, results.

The service is started exactly as tests/e2e does it (trainyard.local_service.LocalService):
- embedded:    `trainyard up` (API + worker, SQLite file, kombu file-system broker);
- distributed: `trainyard api` + `trainyard worker` on a throw-away Postgres database
               (created here, dropped at the end) and Redis database 12 (flushed first).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
if str(ROOT) not in sys.path:  # `python bench/x.py` from the repository root
    sys.path.insert(0, str(ROOT))

from trainyard.local_service import LocalService  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get(
    "TRAINYARD_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TRAINYARD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
MODES = ("embedded", "distributed")


# ------------------------------------------------------------------ machine and run facts
def git_commit() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status)}


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def busy_processes(min_cpu: float = 20.0) -> list[str]:
    """Other processes using CPU right now (for the results file: was the machine quiet?)."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True,
                             text=True, timeout=10).stdout.splitlines()[1:]
    except (OSError, subprocess.SubprocessError):
        return []
    busy = []
    for line in out:
        pid, cpu, args = line.strip().split(None, 2)
        if int(pid) != os.getpid() and float(cpu) >= min_cpu:
            busy.append(f"{pid} {cpu}% {args[:120]}")
    return busy


def machine_info() -> dict:
    import torch

    return {
        "nproc": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def run_header(name: str, parameters: dict) -> dict:
    return {
        "benchmark": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git_commit(),
        "machine": machine_info(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "parameters": parameters,
        "load_average_start": load_average(),
        "busy_processes_start": busy_processes(),
    }


def write_results(name: str, result: dict) -> Path:
    result["load_average_end"] = load_average()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    return path


# ------------------------------------------------------------------ statistics
def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values: list[float], digits: int = 4) -> dict:
    """median, min, max, and the spread (max-min)/median, of a few repeats."""
    if not values:
        return {}
    med = statistics.median(values)
    return {
        "median": round(med, digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "spread_pct": round(100 * (max(values) - min(values)) / med, 1) if med else None,
        "values": [round(v, digits) for v in values],
    }


def latency_summary(values_s: list[float]) -> dict:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "max_ms": round(max(ms), 1) if ms else None,
        "min_ms": round(min(ms), 1) if ms else None,
        "mean_ms": round(statistics.fmean(ms), 1) if ms else None,
    }


def parse_time(value: str | None) -> float | None:
    """An ISO timestamp from the API (or a datetime from the DB) -> seconds since the epoch."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        moment = value
    else:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


# ------------------------------------------------------------------ the service
class Postgres:
    """Creates and drops a throw-away database (as tests/conftest.py does)."""

    def __init__(self, admin_url: str = POSTGRES_ADMIN_URL):
        from sqlalchemy import create_engine, make_url

        self.admin_url = make_url(admin_url)
        self.engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT",
                                    connect_args={"connect_timeout": 3})

    def create(self) -> str:
        name = f"trainyard_bench_{uuid.uuid4().hex[:12]}"
        with self.engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        from sqlalchemy import make_url

        with self.engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    def close(self) -> None:
        self.engine.dispose()


def flush_redis(url: str = REDIS_URL) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.flushdb()
    finally:
        client.close()


class BenchService:
    """A running service plus what the benchmark needs around it: its database URL, and a way to
    freeze its processes (SIGSTOP) while a bare-torch run measures the machine without it."""

    def __init__(self, mode: str, service: LocalService, database_url: str):
        self.mode = mode
        self.service = service
        self.http = service.http
        self.database_url = database_url
        self._store = None

    @property
    def store(self):
        """A db.store.Store on the service's database (read-only use: timestamps, metrics)."""
        if self._store is None:
            from db.store import Store

            self._store = Store(self.database_url)
        return self._store

    def submit(self, model: str, dataset: str, hp: dict, device: str = "cpu",
               name: str | None = None) -> dict:
        body = {"model": model, "dataset": dataset, "hyperparameters": hp, "device": device}
        if name:
            body["name"] = name
        response = self.http.post("/jobs", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"submit failed: {response.status_code} {response.text}")
        return response.json()

    def wait(self, job_id: int, statuses=("succeeded", "failed", "cancelled"), poll_s: float = 0.5,
             timeout: float = 600) -> tuple[dict, float]:
        """Poll GET /jobs/{id} until its status is one of `statuses`; (job, time.time() seen)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.http.get(f"/jobs/{job_id}").json()
            if job["status"] in statuses:
                return job, time.time()
            time.sleep(poll_s)
        raise TimeoutError(f"job {job_id} not in {statuses} after {timeout} s:\n"
                           f"{self.service.logs()}")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP every process of the service (each runs in its own session/process group,
        `trainyard up` with its worker child), SIGCONT afterwards. Only our own processes."""
        groups = [p.pid for p in self.service.processes.values() if p.poll() is None]
        for pgid in groups:
            os.killpg(pgid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pgid in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGCONT)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


@contextlib.contextmanager
def running_service(mode: str, extra_env: dict[str, str] | None = None,
                    keep_home: bool = False) -> Iterator[BenchService]:
    """Start the service in `mode` on a free port, with its state in a temporary folder."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    home = Path(tempfile.mkdtemp(prefix=f"trainyard-bench-{mode}-"))
    env = dict(extra_env or {})
    postgres = None
    db_url = ""
    service = None
    try:
        if mode == "distributed":
            postgres = Postgres()
            db_url = postgres.create()
            flush_redis(REDIS_URL)
            service = LocalService.distributed(home, db_url, REDIS_URL,
                                               f"bench-worker-{os.getpid()}@%h", env)
        else:
            service = LocalService.embedded(home, env)
            db_url = f"sqlite:///{home / 'trainyard.db'}"
        service.wait_healthy(timeout=90)
        bench = BenchService(mode, service, db_url)
        try:
            yield bench
        finally:
            bench.close()
    finally:
        if service is not None:
            service.stop()
        if postgres is not None:
            if db_url:
                postgres.drop(db_url)
            postgres.close()
        if mode == "distributed":
            with contextlib.suppress(Exception):
                flush_redis(REDIS_URL)
        if not keep_home:
            import shutil

            shutil.rmtree(home, ignore_errors=True)


def wait_worker_ready(bench: BenchService, timeout: float = 120) -> None:
    """The API answers before the worker consumes: run one trivial job to be sure it does."""
    job = bench.submit("mlp", "digits", {"epochs": 1, "steps_per_epoch": 1,
                                         "hidden_sizes": [8, 8]}, name="warm-up")
    done, _ = bench.wait(job["id"], poll_s=0.1, timeout=timeout)
    if done["status"] != "succeeded":
        raise RuntimeError(f"warm-up job ended {done['status']}: {done.get('error')}\n"
                           f"{bench.service.logs()}")


def positive_int(text: str) -> int:
    """argparse type for counts: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value
