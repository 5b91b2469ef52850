"""GET /compare/series at scale: many runs x many metric names, time and database memory.

    .venv/bin/python bench/compare.py                        # both modes, both cases (~25 min)
    .venv/bin/python bench/compare.py --modes distributed --cases small
    .venv/bin/python bench/compare.py --long-runs 200 --repeats 3     # a quicker, smaller look

Two cases, each on a fresh service (embedded: `trainyard up` on SQLite; distributed: `trainyard
api` + a worker on PostgreSQL and Redis; see bench/common.py), its database filled directly:

  long:   1,000 runs x 3 names x 10,000 steps: train_loss, lr and samples_per_s recorded at every
          step over 20 epochs (30 million metric rows, 1.9 million rollup rows, 0.24 million coarse).
  small:  300 small runs of an 8-hidden-layer MLP, each with its 14 metric names: train_loss, lr,
          samples_per_s per step, val_loss, val_accuracy and grad_norm/<layer> for 9 layers
          (layers.0-7, head) per epoch; 5 epochs of 45 steps (digits at batch 32).

One run of each case is written through Store.add_metrics, as a worker writes it (so its
rollups are the service's own); the others are copies of it made in SQL (INSERT ... SELECT),
each run's values scaled by its own factor 1 + (id % 89) / 1000 (positive, so the scaled block
summaries still summarise the scaled points, to the last bit of rounding). On PostgreSQL the
tables are then VACUUM ANALYZEd, as autovacuum would. Seeding takes most of the time: about 2
minutes for the long case on SQLite, 10 on PostgreSQL, on a 2-core machine.

Then GET /compare/series for every run of the case and all its names, as the compare page asks
(max_points = what compare.js picks for that many runs: 50 for 1,000, 66 for 300) and with the
API's default max_points=200, each `--repeats` times after one warm-up; request time is the
client's wall clock around the HTTP request (answer received and read). Memory, during each
measured request:

  postgres backend: for every server process of the bench database but the bench's own (the
      API's pooled connections, the worker's), the peak resident set (`VmHWM` of
      /proc/<pid>/status), reset before each request by writing 5 to /proc/<pid>/clear_refs,
      and the peak of its private memory (`RssAnon`, sampled every 2 ms); the largest of them is
      reported. VmHWM also counts the shared buffers the process touched (`RssShmem`), which
      are the server's cache, not memory the request allocated; RssAnon is what it allocated.
      Resetting and reading another user's /proc files needs root (or the postgres user).
  api process: the same two figures for the API's process (on SQLite, the database engine
      runs inside it).

Cold, cached and summarised: the service runs with the API's cache of finished runs' curves
turned off (TRAINYARD_COMPARE_CACHE_BYTES=0) and without series summaries
(TRAINYARD_COMPARE_SUMMARIES=false, so neither the API nor the worker's reconciler stores any),
so the figures above are the full read every time. Then, each on the same database:

  cached:      a second `trainyard api` with the cache on answers the page's request once (cold:
               every curve read and cached) and `--repeats` times more (warm: what the compare
               page's polling costs while every run has finished);
  summarised:  the reconciler's pass (Store.summarise_settled_runs, SUMMARISE_RUNS runs a pass)
               is run here until every run is summarised, as the worker's reconciler would
               have left the table, and timed; then an API just started with summaries on
               and its cache off answers the page's request (and the default 200 points, which
               it computes once and stores) `--repeats` times: each answer read from the
               stored summaries, with the memory figures above; and one more API just started
               with both on answers once (its cache empty: the first visit after a restart)
               and `--repeats` times more (warm).

The cap: the results record TRAINYARD_MAX_COMPARE_SERIES and the answer to one request just
over it (cap / 20 + 1 runs x 20 names): a 422 naming the field.

Results go to bench/results/compare.json (a run of some modes or cases keeps the others').
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import math
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

GRAD_LAYERS = [f"grad_norm/layers.{i}" for i in range(8)] + ["grad_norm/head"]
CASES = {
    "long": {"runs": 1000, "names": ["train_loss", "lr", "samples_per_s"], "steps": 10_000,
             "epochs": 20, "per_epoch_names": []},
    "small": {"runs": 300, "names": ["train_loss", "lr", "samples_per_s", "val_loss",
                                     "val_accuracy", *GRAD_LAYERS],
              "steps": 225, "epochs": 5, "per_epoch_names": ["val_loss", "val_accuracy",
                                                             *GRAD_LAYERS]},
}
COPY_BATCH = 25  # runs copied per INSERT ... SELECT


def page_max_points(runs: int) -> int:
    """What api/dashboard/static/js/compare.js asks for (maxPointsFor): a 20,000-point budget
    per chart shared by the runs, rounded down to a level of COMPARE_LEVELS (at least 50)."""
    from core.metrics import COMPARE_LEVELS

    share = 20_000 // max(1, runs)
    return max([level for level in COMPARE_LEVELS if level <= share] or [min(COMPARE_LEVELS)])


# ------------------------------------------------------------------ seeding
HOUR = dt.timedelta(hours=1)


def seed_jobs(store, n: int) -> list[int]:
    """n finished MLP runs differing in lr and seed, in multi-row INSERTs."""
    from sqlalchemy import insert, select

    from db.tables import Job, utcnow

    now = utcnow()
    rows = [{
        "name": f"cmp-{i}", "model": "mlp", "dataset": "digits",
        "hyperparameters": {"hidden_sizes": [64] * 8, "lr": [1e-3, 3e-3, 1e-2][i % 3],
                            "seed": i},
        "device": "cpu", "status": "succeeded", "attempts": 1, "epoch": 5, "total_epochs": 5,
        "step": 0, "created_at": now - HOUR * 2, "updated_at": now - HOUR,
        "started_at": now - HOUR * 2, "finished_at": now - HOUR,  # runs of the past
    } for i in range(n)]
    with store.engine.begin() as conn:
        before = conn.scalar(select(Job.id).order_by(Job.id.desc()).limit(1)) or 0
        for start in range(0, n, 2000):
            conn.execute(insert(Job.__table__), rows[start:start + 2000])
        return list(conn.scalars(select(Job.id).where(Job.id > before).order_by(Job.id)))


def template_points(case: dict, seed: int = 0) -> list[tuple]:
    rng = random.Random(seed)
    steps, epochs = case["steps"], case["epochs"]
    per_epoch = steps // epochs
    points = []
    for step in range(1, steps + 1):
        epoch = (step - 1) // per_epoch + 1
        points.append(("train_loss", step, epoch,
                       2.3 * math.exp(-step / (steps / 4)) + 0.1 * rng.random(), None))
        points.append(("lr", step, epoch, 1e-3 * 0.5 * (1 + math.cos(math.pi * step / steps)),
                       None))
        points.append(("samples_per_s", step, epoch, 5000 + 500 * rng.random(), None))
        if step % per_epoch == 0:
            for name in case["per_epoch_names"]:
                points.append((name, step, epoch, rng.random(), None))
    return points


def seed_metrics(store, job_ids: list[int], case: dict) -> int:
    """The first run through Store.add_metrics, the others copied from it in SQL."""
    from sqlalchemy import text

    template = job_ids[0]
    points = template_points(case)
    for start in range(0, len(points), 50_000):  # batches a worker could send
        store.add_metrics(template, points[start:start + 50_000])
    copy_metrics = text(
        "INSERT INTO metrics (job_id, name, step, epoch, value, time) "
        "SELECT j.id, m.name, m.step, m.epoch, m.value * (1 + (j.id % 89) / 1000.0), m.time "
        "FROM jobs j JOIN metrics m ON m.job_id = :template "
        "WHERE j.id >= :first AND j.id <= :last ORDER BY j.id, m.name, m.step")
    copy_rollups = text(
        "INSERT INTO metric_rollups (job_id, name, block, epoch, last_step, n, total, low, high) "
        "SELECT j.id, r.name, r.block, r.epoch, r.last_step, r.n, "
        "r.total * (1 + (j.id % 89) / 1000.0), r.low * (1 + (j.id % 89) / 1000.0), "
        "r.high * (1 + (j.id % 89) / 1000.0) "
        "FROM jobs j JOIN metric_rollups r ON r.job_id = :template "
        "WHERE j.id >= :first AND j.id <= :last")
    copy_coarse = text(copy_rollups.text.replace("metric_rollups", "metric_rollups_coarse"))
    others = job_ids[1:]
    for start in range(0, len(others), COPY_BATCH):
        batch = others[start:start + COPY_BATCH]
        params = {"template": template, "first": batch[0], "last": batch[-1]}
        with store.engine.begin() as conn:
            conn.execute(copy_metrics, params)
            conn.execute(copy_rollups, params)
            conn.execute(copy_coarse, params)
    return len(points) * len(job_ids)


# ------------------------------------------------------------------ memory
def _status(pid: int) -> dict[str, int]:
    """The kB figures of /proc/<pid>/status (VmHWM, VmRSS, RssAnon, RssShmem, ...)."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                out[key] = int(value.split()[0])
    return out


class PeakMemory:
    """Peak VmHWM and sampled peak RssAnon of some processes over a `with` block."""

    def __init__(self, pids: list[int], interval_s: float = 0.002):
        self.pids = pids
        self.interval_s = interval_s
        self.anon_kb = {pid: 0 for pid in pids}
        self.reset_ok = True
        self._stop = threading.Event()

    def __enter__(self) -> Self:
        for pid in self.pids:
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to VmRSS
            except OSError:
                self.reset_ok = False
            self.anon_kb[pid] = _status(pid).get("RssAnon", 0)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                self.anon_kb[pid] = max(self.anon_kb[pid], _status(pid).get("RssAnon", 0))
            time.sleep(self.interval_s)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.result = {}
        for pid in self.pids:
            status = _status(pid)
            private = max(self.anon_kb[pid], status.get("RssAnon", 0))
            self.result[pid] = {
                "peak_rss_mb": round(status.get("VmHWM", 0) / 1024, 1),
                "peak_private_mb": round(private / 1024, 1),
                "shared_buffers_touched_mb": round(status.get("RssShmem", 0) / 1024, 1),
            }

    def largest(self) -> dict:
        if not self.result:
            return {}
        pid = max(self.result, key=lambda p: (self.result[p]["peak_rss_mb"],
                                              self.result[p]["peak_private_mb"]))
        return {**self.result[pid], "processes": len(self.result), "peak_reset": self.reset_ok}


def postgres_backends(store) -> list[int]:
    """Server processes connected to the bench database, but this script's own."""
    from sqlalchemy import text

    with store.engine.connect() as conn:
        return list(conn.scalars(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")))


# ------------------------------------------------------------------ measuring
def measure(bench, run_ids: list[int], names: list[str], max_points: int, repeats: int,
            api: tuple | None = None) -> dict:
    """The request, once to warm up (`first_ms`), then `repeats` times with memory figures;
    on the service's API, or on `api` = (httpx client, pid) of another."""
    params = {"ids": f"{run_ids[0]}-{run_ids[-1]}", "names": ",".join(names),
              "max_points": max_points}
    assert run_ids == list(range(run_ids[0], run_ids[-1] + 1))
    if api is None:
        api_label = "api" if "api" in bench.service.processes else "up"
        api = bench.http, bench.service.processes[api_label].pid
    http, api_pid = api
    t0 = time.perf_counter()
    warm = http.get("/compare/series", params=params, timeout=600)
    first_ms = (time.perf_counter() - t0) * 1000
    if warm.status_code != 200:
        raise RuntimeError(f"GET /compare/series: {warm.status_code} {warm.text[:300]}")
    time.sleep(1)  # what the first answer stores once it has gone (summaries) is written
    times, backend, api_memory = [], [], []
    body = warm.json()
    for _ in range(repeats):
        pg_pids = postgres_backends(bench.store) if bench.mode == "distributed" else []
        with PeakMemory(pg_pids) as pg_peak, PeakMemory([api_pid]) as api_peak:
            t0 = time.perf_counter()
            response = http.get("/compare/series", params=params, timeout=600)
            content = response.content
            times.append(time.perf_counter() - t0)
        if response.status_code != 200:
            raise RuntimeError(f"GET /compare/series: {response.status_code} {content[:300]}")
        if pg_pids:
            backend.append(pg_peak.largest())
        api_memory.append(api_peak.largest())
    if content != warm.content:
        raise RuntimeError("GET /compare/series answered differently the second time")
    series = [s for by in body["series"].values() for s in by.values()]
    ms = [t * 1000 for t in times]
    out = {
        "runs": len(body["runs"]), "names": len(names), "series": len(series),
        "max_points": max_points, "points": sum(len(s["step"]) for s in series),
        "bytes": len(content), "first_ms": round(first_ms, 1),
        "request_ms": {"median": round(statistics.median(ms), 1), "min": round(min(ms), 1),
                       "max": round(max(ms), 1), "values": [round(m, 1) for m in ms]},
        "api_process": _worst(api_memory),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    if backend:
        out["postgres_backend"] = _worst(backend)
    return out


@contextlib.contextmanager
def extra_api(bench, label: str, env: dict[str, str | None]):
    """Another `trainyard api` on the service's database, just started, with the settings of
    `env` changed (None: the default): (httpx client, pid); stopped on leaving."""
    import os
    import signal

    import httpx

    from trainyard.local_service import free_port

    port = free_port()
    saved = dict(bench.service.env)
    for key, value in env.items():
        if value is None:
            bench.service.env.pop(key, None)
        else:
            bench.service.env[key] = value
    try:
        proc = bench.service.start(label, "api", "--port", str(port))
    finally:
        bench.service.env = saved
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{label} did not start:\n" + bench.service.logs())
                time.sleep(0.2)
            yield http, proc.pid
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def first_and_warm(http, params: dict, repeats: int) -> dict:
    """The first answer of a just-started API (its cache empty) and the median of `repeats`
    more (warm)."""
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        response = http.get("/compare/series", params=params)
        response.content  # noqa: B018 - read the whole answer, as a browser does
        times.append((time.perf_counter() - t0) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"GET /compare/series: {response.status_code}")
    warm = times[1:]
    return {"max_points": params["max_points"], "cold_ms": round(times[0], 1),
            "warm_ms": {"median": round(statistics.median(warm), 1),
                        "min": round(min(warm), 1), "max": round(max(warm), 1),
                        "values": [round(m, 1) for m in warm]}}


def _page_params(run_ids: list[int], names: list[str], max_points: int) -> dict:
    return {"ids": f"{run_ids[0]}-{run_ids[-1]}", "names": ",".join(names),
            "max_points": max_points}


def measure_cached(bench, run_ids: list[int], names: list[str], max_points: int,
                   repeats: int) -> dict:
    """The page's request to a second API process with the cache of finished runs' curves on
    (and no summaries): the first answer (cold) and the median of `repeats` more (warm)."""
    with extra_api(bench, "api-cached", {"TRAINYARD_COMPARE_CACHE_BYTES": None}) as (http, _):
        return first_and_warm(http, _page_params(run_ids, names, max_points), repeats)


def summarise_all(bench) -> dict:
    """The reconciler's summary pass, run here until every finished run is summarised: what
    the worker's reconciler leaves in series_summaries, a pass every reconcile_seconds."""
    from sqlalchemy import func, select

    from core.metrics import COMPARE_NAMES, SUMMARY_LEVELS
    from core.settings import Settings
    from db.tables import SeriesSummary
    from worker.reconciler import SUMMARISE_RUNS

    lease = Settings().lease_seconds
    passes, runs = [], 0
    t0 = time.perf_counter()
    while True:
        p0 = time.perf_counter()
        done = bench.store.summarise_settled_runs(lease, SUMMARY_LEVELS, names=COMPARE_NAMES,
                                                  limit=SUMMARISE_RUNS)
        if not done:
            break
        passes.append((time.perf_counter() - p0) * 1000)
        runs += len(done)
    seconds = time.perf_counter() - t0
    with bench.store.engine.connect() as conn:
        rows, stored_bytes = conn.execute(select(
            func.count(), func.coalesce(func.sum(func.length(SeriesSummary.data)), 0))).one()
        table_mb = None
        if bench.mode == "distributed":
            table_mb = round(conn.exec_driver_sql(
                "SELECT pg_total_relation_size('series_summaries')").scalar() / 2**20, 1)
    return {"runs": runs, "passes": len(passes), "runs_per_pass": SUMMARISE_RUNS,
            "levels": list(SUMMARY_LEVELS), "seconds": round(seconds, 1),
            "pass_ms": {"median": round(statistics.median(passes), 1) if passes else None,
                        "max": round(max(passes), 1) if passes else None},
            "rows": rows, "json_mb": round(stored_bytes / 2**20, 1), "table_mb": table_mb}


def _worst(samples: list[dict]) -> dict:
    """The largest figures over the repeats (each already the largest over processes)."""
    keys = ("peak_rss_mb", "peak_private_mb", "shared_buffers_touched_mb")
    out = {k: max(s.get(k, 0) for s in samples) for k in keys}
    out["peak_reset"] = all(s.get("peak_reset", True) for s in samples)
    return out


def check_cap(bench, run_ids: list[int]) -> dict:
    """One request just over the cap (20 names): the 422 and its message."""
    from core.settings import Settings

    cap = Settings().max_compare_series  # the service's environment is this process's
    runs = cap // 20 + 1
    if runs > len(run_ids):
        return {"max_compare_series": cap, "skipped": f"needs {runs} runs"}
    response = bench.http.get("/compare/series", params={
        "ids": f"{run_ids[0]}-{run_ids[runs - 1]}", "names": ",".join(f"m{i}" for i in range(20))})
    return {"max_compare_series": cap, "asked_series": runs * 20,
            "status": response.status_code, "detail": response.json().get("detail")}


def run_case(mode: str, case_name: str, args) -> dict:
    case = dict(CASES[case_name])
    if case_name == "long":
        case["runs"] = args.long_runs
    print(f"== {mode}: {case_name} ({case['runs']} runs x {len(case['names'])} names x "
          f"{case['steps']:,} steps)", flush=True)
    without = {"TRAINYARD_COMPARE_CACHE_BYTES": "0", "TRAINYARD_COMPARE_SUMMARIES": "false"}
    with common.running_service(mode, without) as bench:
        store = bench.store
        t0 = time.perf_counter()
        run_ids = seed_jobs(store, case["runs"])
        rows = seed_metrics(store, run_ids, case)
        if mode == "distributed":
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        seeded_s = time.perf_counter() - t0
        print(f"   seeded {rows:,} metric rows in {seeded_s:.0f} s", flush=True)
        result = {"database": "postgresql" if mode == "distributed" else "sqlite",
                  "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                  "load_average_start": common.load_average(),
                  "seed": {**case, "metric_rows": rows, "seconds": round(seeded_s, 1)},
                  "requests": {}}
        for label, max_points in (("page", page_max_points(case["runs"])), ("default", 200)):
            figures = measure(bench, run_ids, case["names"], max_points, args.repeats)
            result["requests"][label] = figures
            pg = figures.get("postgres_backend", {})
            print(f"   max_points={max_points}: {figures['request_ms']['median']} ms median "
                  f"({figures['points']:,} points, {figures['bytes']:,} bytes); "
                  + (f"postgres backend peak RSS {pg['peak_rss_mb']} MB, private "
                     f"{pg['peak_private_mb']} MB; " if pg else "")
                  + f"api process peak RSS {figures['api_process']['peak_rss_mb']} MB",
                  flush=True)
        page_points = page_max_points(case["runs"])
        result["requests"]["page_cached"] = measure_cached(
            bench, run_ids, case["names"], page_points, args.repeats)
        print(f"   with the cache: {result['requests']['page_cached']}", flush=True)
        result["summaries"] = summarise_all(bench)
        print(f"   summarised: {result['summaries']}", flush=True)
        on = {"TRAINYARD_COMPARE_SUMMARIES": "true"}
        with extra_api(bench, "api-summaries", {**on, "TRAINYARD_COMPARE_CACHE_BYTES": "0"}
                       ) as api:
            for label, max_points in (("page_summaries", page_points),
                                      ("default_summaries", 200)):
                figures = measure(bench, run_ids, case["names"], max_points, args.repeats, api)
                same = figures["sha256"] == result["requests"][label.split("_")[0]]["sha256"]
                figures["same_answer_as_computed"] = same
                result["requests"][label] = figures
                print(f"   from the summaries, max_points={max_points}: first "
                      f"{figures['first_ms']} ms, then {figures['request_ms']['median']} ms "
                      f"median; same answer: {same}", flush=True)
        with extra_api(bench, "api-restarted", {**on, "TRAINYARD_COMPARE_CACHE_BYTES": None}
                       ) as (http, _):
            result["requests"]["page_summaries_cached"] = first_and_warm(
                http, _page_params(run_ids, case["names"], page_points), args.repeats)
        print(f"   summaries and cache: {result['requests']['page_summaries_cached']}",
              flush=True)
        result["cap"] = check_cap(bench, run_ids)
        result["load_average_end"] = common.load_average()
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", choices=common.MODES, default=list(common.MODES),
                        help="embedded: trainyard up on SQLite; distributed: PostgreSQL + Redis")
    parser.add_argument("--cases", nargs="+", choices=tuple(CASES), default=list(CASES))
    parser.add_argument("--long-runs", type=common.positive_int, default=CASES["long"]["runs"],
                        help="runs of the long case (default 1000)")
    parser.add_argument("--repeats", type=common.positive_int, default=5)
    args = parser.parse_args()
    modes = list(dict.fromkeys(args.modes))
    result = common.run_header("compare", {**vars(args), "modes": modes})
    previous = common.RESULTS_DIR / "compare.json"
    result["results"] = {}
    if previous.exists():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            result["results"] = json.loads(previous.read_text())["results"]
    for mode in modes:
        for case_name in args.cases:
            result["results"].setdefault(mode, {})[case_name] = run_case(mode, case_name, args)
    path = common.write_results("compare", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
