"""Dashboard speed: the jobs list with 10,000 jobs, and comparing 100 runs of 10,000 steps.

    .venv/bin/python bench/dashboard.py                          # both modes, browser included
    .venv/bin/python bench/dashboard.py --modes embedded --no-browser   # keeps the other mode's figures
    (--modes takes embedded and/or distributed: SQLite, or PostgreSQL and Redis)
    .venv/bin/python bench/dashboard.py --jobs 10000 --runs 100 --steps 10000

For each mode the real service is started (embedded: `trainyard up` on SQLite; distributed:
`trainyard api` + a worker on PostgreSQL and Redis, see bench/common.py) and its database is
filled directly: 10,000 jobs in mixed states and models (one multi-row INSERT, as if they had
run), and for 100 of them the metrics of a 10,000-step run (train_loss, lr and samples_per_s per
step; val_loss, val_accuracy and three grad_norm layers per epoch, 20 epochs: 3 million rows),
written through Store.add_metrics as a worker writes them. On PostgreSQL the tables are then
VACUUM ANALYZEd (as autovacuum does on a live server). Then, over HTTP, median of several repeats:

  jobs:     GET /jobs pages as the jobs page asks for them (limit 50): the newest page, the last
            page by offset and by keyset (before=id), a deep keyset page under a status filter
            and under a model filter, each with its best-metric lookup.
  compare:  GET /compare/series for the 100 runs with the names and max_points the compare page
            asks for (train_loss, val_loss, val_accuracy, val_perplexity; 200 points per run),
            the one request behind the page; and, for scale, the same curves fetched the naive
            way, GET /jobs/{id}/metrics once per run.
  browser:  Debian's chromium (Playwright) opening the compare page for the 100 runs until it
            marks itself ready (curves, scatter and tables drawn): as a user gets there (from
            the jobs page, which preloads plotly.js, by "Compare selected": no reload), and by
            loading its URL, cold (fresh profile: plotly.js downloaded and compiled) and warm
            (plotly.js in the HTTP cache but compiled again); and the jobs page with 10,000
            jobs. Skipped with a note when /usr/bin/chromium or playwright is missing.

Results go to bench/results/dashboard.json. Figures are wall-clock on this machine, which other
work may share: the results record the load average and busy processes at start and end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
COMPARE_NAMES = "train_loss,val_loss,val_accuracy,val_perplexity"
COMPARE_MAX_POINTS = 200  # what compare.js asks for 100 runs (a 20,000-point budget per chart)
# Finished states only: a queued or "running" row without a worker would be picked up (or
# recovered) by the service's own worker and trained during the measurement.
STATUSES = ("succeeded", "succeeded", "succeeded", "failed", "cancelled")
MODELS = ("mlp", "cnn", "rnn_lm")


def seed_jobs(store, n: int) -> list[int]:
    """n jobs in one multi-row INSERT (as a long-lived service would have them)."""
    from sqlalchemy import insert

    from db.tables import Job, utcnow

    now = utcnow()
    rows = []
    for i in range(n):
        model = MODELS[i % 3]
        status = STATUSES[i % len(STATUSES)]
        rows.append({
            "name": f"bench-{i}", "model": model,
            "dataset": "pydocs" if model == "rnn_lm" else "digits",
            "hyperparameters": {"epochs": 20, "lr": [0.001, 0.003, 0.01][i % 3], "seed": i},
            "device": "cpu", "status": status, "attempts": 1,
            "epoch": 20 if status == "succeeded" else 3, "total_epochs": 20, "step": 0,
            "created_at": now, "updated_at": now, "started_at": now, "finished_at": now,
        })
    with store.engine.begin() as conn:
        for start in range(0, n, 2000):
            conn.execute(insert(Job.__table__), rows[start:start + 2000])
    ids = [j.id for j in store.list_jobs(limit=n)[0]]
    return sorted(ids)


def seed_run_metrics(store, job_id: int, steps: int, epochs: int, seed: int) -> int:
    rng = random.Random(seed)
    lr = [1e-3, 3e-3, 1e-2, 3e-2][seed % 4]
    per_epoch = steps // epochs
    points = []
    for step in range(1, steps + 1):
        epoch = (step - 1) // per_epoch + 1
        points.append(("train_loss", step, epoch,
                       2.3 * math.exp(-step * lr / 20) + 0.1 * rng.random(), None))
        points.append(("lr", step, epoch, lr * 0.5 * (1 + math.cos(math.pi * step / steps)), None))
        points.append(("samples_per_s", step, epoch, 5000 + 500 * rng.random(), None))
        if step % per_epoch == 0:
            points.append(("val_loss", step, epoch, 2.2 * math.exp(-step * lr / 20), None))
            points.append(("val_accuracy", step, epoch, 1 - 0.9 * math.exp(-step * lr / 20), None))
            for layer in range(3):
                points.append((f"grad_norm/layers.{layer}", step, epoch, rng.random(), None))
    store.add_metrics(job_id, points)
    return len(points)


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def ms_summary(times: list[float]) -> dict:
    ms = [t * 1000 for t in times]
    return {"median_ms": round(statistics.median(ms), 1), "min_ms": round(min(ms), 1),
            "max_ms": round(max(ms), 1), "n": len(ms)}


def get_ok(http, url: str, **params):
    response = http.get(url, params=params)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} {params}: {response.status_code} {response.text[:300]}")
    return response


def bench_jobs(http, ids: list[int], repeats: int) -> dict:
    out = {}
    total = len(ids)
    newest = get_ok(http, "/jobs", limit=50).json()
    assert newest["total"] >= total
    cases = {
        "newest_page": {"limit": 50},
        "last_page_by_offset": {"limit": 50, "offset": newest["total"] - 50},
        "last_page_by_keyset": {"limit": 50, "before": ids[50]},
        "middle_page_by_keyset": {"limit": 50, "before": ids[total // 2]},
        "status_filter_deep_keyset": {"limit": 50, "status": "failed", "before": ids[total // 10]},
        "model_filter_deep_keyset": {"limit": 50, "model": "cnn", "before": ids[total // 10]},
        "newest_page_200": {"limit": 200},
    }
    for label, params in cases.items():
        times, response = timed(lambda p=params: get_ok(http, "/jobs", **p), repeats)
        body = response.json()
        out[label] = {**ms_summary(times), "params": params, "items": len(body["items"]),
                      "offset": body["offset"], "total": body["total"]}
    return out


def bench_compare(http, run_ids: list[int], repeats: int) -> dict:
    ids = ",".join(map(str, run_ids))
    params = {"ids": ids, "names": COMPARE_NAMES, "max_points": COMPARE_MAX_POINTS}
    get_ok(http, "/compare/series", **params)  # warm the process (imports, caches)
    times, response = timed(lambda: get_ok(http, "/compare/series", **params), repeats)
    body = response.json()
    points = sum(len(s["step"]) for by in body["series"].values() for s in by.values())
    out = {"bulk_series": {**ms_summary(times), "runs": len(body["runs"]),
                           "points": points, "bytes": len(response.content),
                           "max_points": COMPARE_MAX_POINTS, "names": COMPARE_NAMES}}

    def naive():
        for job_id in run_ids:
            get_ok(http, f"/jobs/{job_id}/metrics", names="train_loss", max_points=200)

    times, _ = timed(naive, max(1, repeats // 3))
    out["naive_per_run_metrics_train_loss_only"] = ms_summary(times)
    return out


def bench_browser(url: str, run_ids: list[int]) -> dict:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed"}
    if not Path(CHROMIUM).exists():
        return {"skipped": f"{CHROMIUM} is missing (scripts/install-test-tools.sh)"}
    out: dict = {}
    compare = f"{url}/#/compare?ids={run_ids[0]}-{run_ids[-1]}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            def open_ready(page, target: str) -> float:
                t0 = time.perf_counter()
                page.goto(target)
                page.wait_for_selector("#view[data-state=ready]", timeout=120_000)
                return time.perf_counter() - t0

            def marks(page) -> dict:
                return page.evaluate("""() => Object.fromEntries(performance.getEntriesByType('mark')
                    .map(m => [m.name, Math.round(m.startTime)]))""")

            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            cold = open_ready(page, compare)
            out["compare_100_runs_cold_s"] = round(cold, 3)
            out["compare_100_runs_cold_marks_ms"] = marks(page)
            warm = []
            for _ in range(3):
                page.goto("about:blank")
                warm.append(open_ready(page, compare))
            out["compare_100_runs_warm_s"] = {"median": round(statistics.median(warm), 3),
                                              "values": [round(w, 3) for w in warm]}
            out["compare_100_runs_warm_marks_ms"] = marks(page)
            # As a user gets there: on the jobs page (which preloads plotly.js when idle),
            # then "Compare selected": an in-page navigation, no reload.
            in_app = []
            for _ in range(3):
                page.goto("about:blank")
                open_ready(page, f"{url}/")
                # polled from here: wait_for_function uses eval(), which the page's CSP refuses
                deadline = time.perf_counter() + 60
                while not page.evaluate("window.Plotly !== undefined"):
                    if time.perf_counter() > deadline:
                        raise TimeoutError("plotly.js was not preloaded on the jobs page")
                    time.sleep(0.02)
                t0 = time.perf_counter()
                page.evaluate("""hash => new Promise(done => {
                    window.addEventListener('hashchange', () => done(), { once: true });
                    location.hash = hash; })""", f"#/compare?ids={run_ids[0]}-{run_ids[-1]}")
                page.wait_for_selector("#view[data-state=ready]", timeout=120_000)
                in_app.append(time.perf_counter() - t0)
            out["compare_100_runs_from_jobs_page_s"] = {
                "median": round(statistics.median(in_app), 3),
                "values": [round(w, 3) for w in in_app]}
            out["compare_traces_drawn"] = page.eval_on_selector(
                "#compare-chart-a", "el => el.querySelectorAll('g.trace').length")
            jobs_times = []
            for _ in range(3):
                page.goto("about:blank")
                jobs_times.append(open_ready(page, f"{url}/"))
            out["jobs_page_10000_jobs_s"] = {"median": round(statistics.median(jobs_times), 3),
                                             "values": [round(w, 3) for w in jobs_times]}
            context.close()
        finally:
            browser.close()
    out["note"] = ("time from navigation to the page marking itself ready: request(s) answered, "
                   "every chart drawn by plotly and every table built")
    return out


def run_mode(mode: str, args) -> dict:
    print(f"== {mode}", flush=True)
    with common.running_service(mode) as bench:
        store = bench.store
        t0 = time.perf_counter()
        ids = seed_jobs(store, args.jobs)
        seeded_jobs_s = time.perf_counter() - t0
        run_ids = ids[-args.runs:]
        t0 = time.perf_counter()
        rows = sum(seed_run_metrics(store, job_id, args.steps, args.epochs, i)
                   for i, job_id in enumerate(run_ids))
        seeded_metrics_s = time.perf_counter() - t0
        if mode == "distributed":
            # What autovacuum does on a live server after a big insert: statistics for the
            # planner and the visibility map that lets index-only scans skip the table.
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        print(f"   seeded {len(ids)} jobs in {seeded_jobs_s:.1f} s, {rows:,} metric rows in "
              f"{seeded_metrics_s:.1f} s", flush=True)
        result = {
            "database": "postgresql" if mode == "distributed" else "sqlite",
            "seed": {"jobs": len(ids), "runs_with_metrics": len(run_ids), "steps": args.steps,
                     "epochs": args.epochs, "metric_rows": rows,
                     "seconds": {"jobs": round(seeded_jobs_s, 1),
                                 "metrics": round(seeded_metrics_s, 1)}},
            "jobs_list": bench_jobs(bench.http, ids, args.repeats),
            "compare": bench_compare(bench.http, run_ids, args.repeats),
        }
        if args.browser:
            result["browser"] = bench_browser(bench.service.url, run_ids)
        jl, cmp_ = result["jobs_list"], result["compare"]["bulk_series"]
        print(f"   jobs: newest {jl['newest_page']['median_ms']} ms, last page keyset "
              f"{jl['last_page_by_keyset']['median_ms']} ms, by offset "
              f"{jl['last_page_by_offset']['median_ms']} ms", flush=True)
        print(f"   compare/series {cmp_['runs']} runs: {cmp_['median_ms']} ms "
              f"({cmp_['bytes']:,} bytes, {cmp_['points']:,} points); naive per-run: "
              f"{result['compare']['naive_per_run_metrics_train_loss_only']['median_ms']} ms",
              flush=True)
        if "browser" in result:
            print(f"   browser: {result['browser']}", flush=True)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", choices=common.MODES, default=list(common.MODES),
                        help="embedded: trainyard up on SQLite; distributed: PostgreSQL + Redis")
    parser.add_argument("--jobs", type=common.positive_int, default=10_000)
    parser.add_argument("--runs", type=common.positive_int, default=100)
    parser.add_argument("--steps", type=common.positive_int, default=10_000)
    parser.add_argument("--epochs", type=common.positive_int, default=20)
    parser.add_argument("--repeats", type=common.positive_int, default=7)
    parser.add_argument("--no-browser", dest="browser", action="store_false")
    args = parser.parse_args()
    if args.runs > args.jobs or args.epochs > args.steps:
        parser.error("--runs must be at most --jobs, and --epochs at most --steps")
    modes = list(dict.fromkeys(args.modes))
    result = common.run_header("dashboard", vars(args))
    # A run of some modes keeps the other modes' figures from the results file (each mode
    # records its own date and load average).
    previous = common.RESULTS_DIR / "dashboard.json"
    result["modes"] = {}
    if previous.exists():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            old = json.loads(previous.read_text())
            if old.get("parameters", {}).get("steps") == args.steps:
                result["modes"] = {m: v for m, v in old["modes"].items() if m not in modes}
    for mode in modes:
        started = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                   "load_average_start": common.load_average()}
        result["modes"][mode] = {**started, **run_mode(mode, args),
                                 "load_average_end": common.load_average()}
    path = common.write_results("dashboard", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
