"""The sweep page with 1,000 trials: how long `GET /sweeps/{id}` takes and how long Debian's
chromium takes to open the page until it marks itself ready (every chart drawn, the trials
table built). Target (issue 12): under 1.5 s.

    .venv/bin/python bench/sweep_page.py [--trials 1000] [--epochs 9] [--repeats 5]

The sweep is written straight into the database of an embedded service (`trainyard up`, its
worker idle: every trial is finished), each trial with per-step train_loss and per-epoch
validation metrics, a third of them pruned early as ASHA would. Writes
bench/results/sweep_page.json.
"""

from __future__ import annotations

import argparse
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
STEPS_PER_EPOCH = 20


def seed_sweep(store, trials: int, epochs: int) -> int:
    """A finished random sweep of `trials` MLP trials with their metrics; returns its id."""
    rng = random.Random(0)
    sweep = store.create_sweep(
        name="bench-sweep", model="mlp", dataset="digits",
        hyperparameters={"epochs": epochs}, method="random",
        space={"lr": {"low": 1e-4, "high": 0.1, "log": True, "step": None},
               "hidden_sizes": {"values": [[64, 64], [128, 128], [256, 256, 256]]},
               "activation": {"values": ["relu", "sigmoid", "tanh"]}},
        objective_metric="val_accuracy", objective_goal="max", max_trials=trials,
        max_concurrent=trials,
        early_stopping={"method": "asha", "min_epochs": 1, "reduction_factor": 3},
        seed=0, device="cpu", priority=0)
    for number in range(trials):
        lr = 10 ** rng.uniform(-4, -1)
        hp = {"epochs": epochs, "lr": lr, "activation": rng.choice(["relu", "sigmoid", "tanh"]),
              "hidden_sizes": rng.choice([[64, 64], [128, 128], [256, 256, 256]])}
        job = store.launch_trial(sweep.id, number, hp)
        ran = epochs if number % 3 else rng.choice([1, 3])
        points = []
        for step in range(1, ran * STEPS_PER_EPOCH + 1):
            epoch = (step - 1) // STEPS_PER_EPOCH + 1
            points.append(("train_loss", step, epoch, 2.3 * math.exp(-step * lr), None))
            if step % STEPS_PER_EPOCH == 0:
                points.append(("val_loss", step, epoch, 2.2 * math.exp(-step * lr), None))
                points.append(("val_accuracy", step, epoch,
                               1 - 0.9 * math.exp(-step * lr * 2) * rng.uniform(0.9, 1.1),
                               None))
        store.add_metrics(job.id, points)
        store.claim_job(job.id, worker="bench")
        store.update_progress(job.id, epoch=ran, total_epochs=epochs,
                              step=ran * STEPS_PER_EPOCH, total_steps=epochs * STEPS_PER_EPOCH,
                              eta_seconds=None)
        store.finish_job(job.id, "succeeded" if ran == epochs else "pruned")
    store.finish_sweep(sweep.id, "succeeded")
    return sweep.id


def bench_api(http, sweep_id: int, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        response = http.get(f"/sweeps/{sweep_id}")
        response.raise_for_status()
        times.append((time.perf_counter() - t0) * 1000)
    return {"get_sweep_ms": common.summary(times, 1),
            "trials_answered": len(response.json()["trials"]),
            "answer_bytes": len(response.content)}


def bench_browser(url: str, sweep_id: int, repeats: int) -> dict:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed"}
    if not Path(CHROMIUM).exists():
        return {"skipped": f"{CHROMIUM} is missing (scripts/install-test-tools.sh)"}
    target = f"{url}/#/sweeps/{sweep_id}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()

            def open_ready() -> float:
                page.goto("about:blank")
                t0 = time.perf_counter()
                page.goto(target)
                page.wait_for_selector("#view[data-state=ready]", timeout=120_000)
                return time.perf_counter() - t0

            cold = open_ready()
            warm = [open_ready() for _ in range(repeats)]
            rows = page.locator("table tbody tr").count()
        finally:
            browser.close()
    return {"sweep_page_cold_s": round(cold, 3),
            "sweep_page_warm_s": {"median": round(statistics.median(warm), 3),
                                  "values": [round(w, 3) for w in warm]},
            "table_rows": rows,
            "note": "from navigation until the page marks itself ready (#view[data-state="
                    "ready]): the sweep and its curves answered, every chart drawn, the "
                    "trials table built"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=common.positive_int, default=1000)
    parser.add_argument("--epochs", type=common.positive_int, default=9)
    parser.add_argument("--repeats", type=common.positive_int, default=5)
    args = parser.parse_args()
    result = common.run_header("sweep_page", vars(args))
    with common.running_service("embedded") as bench:
        from db.store import Store

        store = Store(bench.database_url)
        t0 = time.perf_counter()
        sweep_id = seed_sweep(store, args.trials, args.epochs)
        result["seed_s"] = round(time.perf_counter() - t0, 1)
        store.close()
        result["api"] = bench_api(bench.service.http, sweep_id, args.repeats)
        result["browser"] = bench_browser(bench.service.url, sweep_id, args.repeats)
    print(f"GET /sweeps/{{id}} with {args.trials} trials: "
          f"{result['api']['get_sweep_ms']}")
    print(f"sweep page in chromium: {result['browser']}")
    print(f"written to {common.write_results('sweep_page', result)}")


if __name__ == "__main__":
    main()
