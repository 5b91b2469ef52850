"""What one sweep decision costs as a sweep grows: Optuna's study is rebuilt from the trial
rows for every proposal and every pruning decision (sweeps/search.py), so the rebuild is the
price of keeping the database the one truth. Pure CPU: no database, no training.

    .venv/bin/python bench/sweep_decisions.py [--trials 10 100 1000] [--repeat 5]

Prints the median time of one proposal (random, TPE) and one ASHA decision per sweep size,
and writes bench/results/sweep_decisions.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import time

from common import run_header, write_results

from db.store import TrialRecord
from sweeps.search import propose, should_prune
from sweeps.space import check_sweep, dimensions_from_json

NOW = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
SPACE = {"lr": {"low": 1e-4, "high": 1e-1, "log": True},
         "hidden_sizes": {"values": [[64, 64], [128, 128], [256, 256, 256]]},
         "activation": {"values": ["relu", "sigmoid", "tanh"]},
         "dropout": {"low": 0.0, "high": 0.5}}


def sweep_of(method: str, n: int):
    spec = check_sweep({"model": "mlp", "dataset": "digits", "method": method,
                        "max_trials": max(n + 1, 2), "hyperparameters": {"epochs": 9},
                        "space": SPACE, "early_stopping": {"method": "asha"}}, 100_000)
    sweep = type("Sweep", (), dict(
        method=method, seed=0, objective_metric="val_accuracy", objective_goal="max",
        max_trials=spec.max_trials, early_stopping=spec.early_stopping.to_dict()))
    return sweep, dimensions_from_json(spec.space_json(), "mlp")


def history(sweep, space, n: int) -> list[TrialRecord]:
    rng = random.Random(0)
    trials = []
    for number in range(n):
        params = propose(sweep, space, trials) if number < 3 else {
            "lr": 10 ** rng.uniform(-4, -1), "hidden_sizes": rng.choice(SPACE["hidden_sizes"][
                "values"]), "activation": rng.choice(["relu", "sigmoid", "tanh"]),
            "dropout": rng.uniform(0, 0.5)}
        epochs = rng.choice([1, 3, 9])
        objective = {e: min(0.99, rng.uniform(0.5, 0.9) + 0.01 * e) for e in range(1, epochs + 1)}
        trials.append(TrialRecord(
            job_id=number + 1, number=number, name=f"t{number}",
            status="succeeded" if epochs == 9 else "pruned", hyperparameters=params,
            epoch=epochs, total_epochs=9, step=0, error=None, created_at=NOW, finished_at=NOW,
            objective=objective))
    return trials


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[10, 100, 1000],
                        help="sweep sizes (trials already in the sweep)")
    parser.add_argument("--repeat", type=int, default=5, help="timings per figure (median)")
    args = parser.parse_args()
    rows = []
    for n in args.trials:
        row = {"trials": n}
        for method in ("random", "tpe"):
            sweep, space = sweep_of(method, n)
            trials = history(sweep, space, n)
            row[f"propose_{method}_ms"] = median_ms(lambda: propose(sweep, space, trials),
                                                    args.repeat)
        sweep, space = sweep_of("random", n)
        trials = history(sweep, space, n)
        judged = TrialRecord(**{**trials[-1].to_dict(), "job_id": n + 1, "number": n,
                                "status": "running", "objective": {1: 0.7, 2: 0.72, 3: 0.75},
                                "epoch": 3})
        row["asha_decision_ms"] = median_ms(
            lambda: should_prune(sweep, space, [*trials, judged], n + 1, 3), args.repeat)
        rows.append(row)
        print(f"{n:>6} trials: propose random {row['propose_random_ms']:>8} ms, "
              f"tpe {row['propose_tpe_ms']:>8} ms, ASHA decision {row['asha_decision_ms']:>8} ms")
    result = run_header("sweep_decisions", vars(args))
    result["rows"] = rows
    print(f"written to {write_results('sweep_decisions', result)}")


if __name__ == "__main__":
    main()
