"""Sweeps: what ASHA early stopping saves, and the README's two lecture sweeps.

The issue's benchmark: one seeded random sweep of `--trials` (27) MLP trials on digits, run twice
with the same spec and seed, once with ASHA (`--min-epochs` 1, `--reduction-factor` 3: rungs at
epochs 1, 3, 9 of `--epochs` 9) and once without early stopping. Figures: the compute each used
(total optimizer steps of its trials, the jobs' own `step`) and the best objective each found
(val_accuracy of its best completed trial). Target: ASHA uses at most 40 % of the steps and finds
a best objective within 0.5 point (0.005) of the full sweep's.

Both sweeps run with `max_concurrent` 1, so their proposals are the same (the random sampler is
seeded per trial number) and every trial trains as its twin does in the other sweep (same seed,
one torch thread): a trial ASHA lets finish must end with exactly the full sweep's value. The
script checks both (`proposals_identical`, `completed_objectives_identical`), and replays ASHA's
rule by hand over the full sweep's curves to check each pruning decision the service took
(`asha_decisions_match_replay`). digits' validation split is 359 images, so one image is 0.28
point of accuracy: the 0.5-point target allows one image.

Each sweep runs in process, as the service would run it but without servers: a fresh SQLite file,
the API app (`POST /sweeps`, `GET /sweeps/{id}`) through fastapi's TestClient, and one worker loop
(`JobRunner.run_next`) that trains the queued trials one after another; each trial that ends
launches the next (sweeps/driver.py), and at each epoch end the worker asks the sweep's pruner.

`--lecture` also runs the README's two lecture sweeps and prints what they found:
(a) a grid over depth x width x activation for the MLP on digits (18 trials, no early stopping);
(b) an ASHA random sweep over embedding_dim and hidden_size of the RNN language model on the
    built-in `fortunes` text (needs Debian's fortunes package), objective val_perplexity (min).

    .venv/bin/python bench/sweep.py                       # ~40 s; bench/results/sweep.json
    .venv/bin/python bench/sweep.py --lecture             # + the lecture sweeps (~2-3 min more)
    .venv/bin/python bench/sweep.py --seeds 0 1 2 3 4     # the comparison for five seeds (~3 min)
    .venv/bin/python bench/sweep.py --early-stopping median --no-comparison --lecture
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import positive_int, run_header, write_results

MACHINE_NOTE = "CPU, 2 cores"

# The sweep: a learning rate over three decades and two categorical choices, where a
# poor choice of any one of them costs accuracy (too small an lr trains too slowly in 9 epochs,
# too large a one diverges; sigmoid learns slowest).
COMPARISON_SPACE = {
    "lr": {"low": 1e-4, "high": 1e-1, "log": True},
    "hidden_sizes": {"values": [[32, 32], [128, 128], [256, 128]]},
    "activation": {"values": ["relu", "sigmoid", "tanh"]},
}

# Lecture (a): does depth help, and with which activation?
LECTURE_GRID = {
    "name": "depth-width-activation",
    "model": "mlp", "dataset": "digits", "method": "grid", "max_concurrent": 1,
    "hyperparameters": {"epochs": 5},
    "space": {
        "hidden_sizes": {"values": [[64, 64], [64, 64, 64], [64, 64, 64, 64],
                                    [256, 256], [256, 256, 256], [256, 256, 256, 256]]},
        "activation": {"values": ["relu", "sigmoid", "tanh"]},
    },
    "objective": {"metric": "val_accuracy", "goal": "max"},
}

# Lecture (b): how big must a character-level language model be? Small trials (75 steps of 32
# windows of 32 characters an epoch, 4 epochs) so the sweep runs in a few minutes on a CPU; each
# epoch also evaluates on the whole validation text (256,088 characters), which costs more than
# the epoch's training for the larger models. ASHA halves: rungs at epochs 1 and 2.
LECTURE_ASHA = {
    "name": "rnn-lm-size",
    "model": "rnn_lm", "dataset": "fortunes", "method": "random", "max_trials": 12,
    "max_concurrent": 1, "seed": 0,
    "hyperparameters": {"epochs": 4, "steps_per_epoch": 75, "seq_len": 32, "batch_size": 32,
                        "cell": "gru", "tokenizer": "char"},
    "space": {"embedding_dim": {"low": 8, "high": 128, "log": True},
              "hidden_size": {"low": 16, "high": 256, "log": True}},
    "objective": {"metric": "val_perplexity", "goal": "min"},
    "early_stopping": {"method": "asha", "min_epochs": 1, "reduction_factor": 2},
}


# ------------------------------------------------------------------ running one sweep
def run_sweep(body: dict, grad_norms: bool = False) -> dict:
    """POST /sweeps `body` to a fresh in-process service, train its trials to the end with one
    worker loop, and return GET /sweeps/{id} with each trial's steps, epochs, seconds and
    objective per epoch (and, with `grad_norms`, its per-layer gradient norms per epoch)."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.settings import Settings
    from db.store import Store
    from worker.runner import JobRunner

    tmp = Path(tempfile.mkdtemp(prefix="trainyard-bench-sweep-"))
    store = Store(f"sqlite:///{tmp / 'trainyard.db'}")
    try:
        store.migrate()
        settings = Settings(home=tmp / "home", broker_url=None, database_url=None,
                            data_dir=tmp / "data", reconcile_in_api=False)
        app = create_app(settings, store=store)
        with TestClient(app, base_url="http://127.0.0.1:8000") as client:
            created = client.post("/sweeps", json=body)
            if created.status_code != 201:
                raise RuntimeError(f"POST /sweeps: {created.status_code} {created.text}")
            sweep_id = created.json()["id"]
            start = time.perf_counter()
            ran = JobRunner(store, settings, "bench-sweep").run_next()
            wall = time.perf_counter() - start
            sweep = client.get(f"/sweeps/{sweep_id}").json()
            importance = client.get(f"/sweeps/{sweep_id}/importance").json()
        curves = {r.job_id: {int(e): v for e, v in sorted(r.objective.items())}
                  for r in store.sweep_trials(sweep_id, sweep["objective"]["metric"])}
        trials = []
        for t in sweep["trials"]:
            job = store.get_job(t["job_id"])
            seconds = ((job.finished_at - job.started_at).total_seconds()
                       if job.finished_at and job.started_at else None)
            trials.append({"number": t["number"], "job_id": t["job_id"], "status": t["status"],
                           "params": t["params"], "epochs": t["epoch"], "steps": job.step,
                           "objective": t["objective"], "last_objective": t["last_objective"],
                           "pruned_at_epoch": t["pruned_at_epoch"], "error": t["error"],
                           "seconds": round(seconds, 3) if seconds is not None else None,
                           "curve": curves.get(t["job_id"], {})})
            if grad_norms:
                names = [n for n in store.metric_names(t["job_id"]) if n.startswith("grad_norm/")]
                series = store.get_metrics(t["job_id"], names=names)
                trials[-1]["grad_norms"] = {n.removeprefix("grad_norm/"): [
                    p["value"] for p in points] for n, points in series.items()}
        return {"sweep_status": sweep["status"], "counts": sweep["counts"],
                "jobs_run": len(ran), "wall_s": round(wall, 1),
                "total_steps": sum(t["steps"] for t in trials),
                "total_epochs": sum(t["epochs"] for t in trials),
                "best": sweep["best"] and {k: sweep["best"][k] for k in
                                           ("number", "job_id", "params", "objective")},
                "importance": importance, "trials": trials}
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ the comparison
def replay_asha(curves: list[dict[int, float]], epochs: int, min_epochs: int, factor: int,
                goal: str = "max") -> list[int]:
    """The epoch at which each trial (in launch order, one at a time) stops under ASHA as
    Optuna's SuccessiveHalvingPruner decides it, replayed by hand from the trials' full
    curves: at each rung below the last epoch, a trial goes on only if its value is among the
    top 1/factor of the values recorded at that rung so far, itself included (the best one
    while fewer than `factor` have been recorded). A cross-check of the service's decisions."""
    rungs: list[int] = []
    r = 0
    while min_epochs * factor**r < epochs:
        rungs.append(min_epochs * factor**r)
        r += 1
    recorded: dict[int, list[float]] = {step: [] for step in rungs}
    stops = []
    for curve in curves:
        stop = epochs
        for step in rungs:
            value = curve[step] if goal == "max" else -curve[step]
            recorded[step].append(value)
            ranked = sorted(recorded[step], reverse=True)
            keep = max(len(ranked) // factor, 1)
            if value < ranked[keep - 1]:
                stop = step
                break
        stops.append(stop)
    return stops


def comparison_body(args: argparse.Namespace, seed: int, early: str) -> dict:
    body = {
        "name": f"bench-{early}-seed{seed}", "model": "mlp", "dataset": "digits",
        "method": args.method, "max_trials": args.trials, "max_concurrent": 1, "seed": seed,
        "device": "cpu", "hyperparameters": {"epochs": args.epochs},
        "space": COMPARISON_SPACE,
        "objective": {"metric": "val_accuracy", "goal": "max"},
    }
    if early != "none":
        body["early_stopping"] = {"method": early, "min_epochs": args.min_epochs,
                                  "reduction_factor": args.reduction_factor}
    return body


def compare(args: argparse.Namespace, seed: int) -> dict:
    full_body = comparison_body(args, seed, "none")
    early_body = comparison_body(args, seed, args.early_stopping)
    full = run_sweep(full_body)
    print(f"  seed {seed}: without early stopping: {full['total_steps']} steps, best "
          f"{full['best']['objective']:.4f}, {full['wall_s']} s")
    early = run_sweep(early_body)
    print(f"  seed {seed}: {args.early_stopping}: {early['total_steps']} steps, best "
          f"{early['best']['objective']:.4f}, {early['wall_s']} s")
    full_by_n = {t["number"]: t for t in full["trials"]}
    identical_params = all(full_by_n[t["number"]]["params"] == t["params"]
                           for t in early["trials"])
    completed = [t for t in early["trials"] if t["status"] == "succeeded"]
    identical_objectives = all(t["objective"] == full_by_n[t["number"]]["objective"]
                               for t in completed)
    # Where the full sweep's best trial went under early stopping, and where ASHA's best ranks.
    # rank 1 = no trial of the full sweep did better (ties share a rank)
    rank = {t["number"]: 1 + sum((u["objective"] or 0.0) > (t["objective"] or 0.0)
                                 for u in full["trials"]) for t in full["trials"]}
    full_best = full["best"]["number"]
    steps_ratio = early["total_steps"] / full["total_steps"]
    replay = replay_asha([{int(e): v for e, v in t["curve"].items()} for t in full["trials"]],
                         args.epochs, args.min_epochs, args.reduction_factor)
    service_stops = [t["epochs"] for t in early["trials"]]
    gap = full["best"]["objective"] - early["best"]["objective"]
    return {
        "seed": seed, "body_full": full_body, "body_early": early_body,
        "full": full, "early": early,
        "proposals_identical": identical_params,
        "completed_objectives_identical": identical_objectives,
        "steps_ratio": round(steps_ratio, 4),
        "best_gap": round(gap, 6),
        "full_best_trial": full_best,
        "full_best_under_early_stopping": next(
            {k: t[k] for k in ("status", "epochs", "last_objective")}
            for t in early["trials"] if t["number"] == full_best),
        "early_best_rank_in_full_sweep": rank[early["best"]["number"]],
        "asha_replayed_stops": replay if args.early_stopping == "asha" else None,
        "asha_decisions_match_replay": (replay == service_stops
                                        if args.early_stopping == "asha" else None),
        "target_steps_met": steps_ratio <= args.target_steps,
        "target_objective_met": gap <= args.target_gap,
    }


def fmt_params(params: dict) -> str:
    out = []
    for k, v in params.items():
        if isinstance(v, float):
            out.append(f"{k}={v:.2e}")
        elif isinstance(v, list):
            out.append(f"{k}=[{','.join(map(str, v))}]")
        else:
            out.append(f"{k}={v}")
    return " ".join(out)


def print_comparison(run: dict, args: argparse.Namespace) -> None:
    full, early = run["full"], run["early"]
    name = args.early_stopping
    print(f"\nseed {run['seed']}: {args.trials} {args.method} trials of {args.epochs} epochs, "
          f"MLP on digits (val_accuracy)")
    def counts(sweep: dict) -> str:
        return f"{sweep['counts'].get('succeeded', 0)} / {sweep['counts'].get('pruned', 0)}"

    def best(sweep: dict) -> str:
        return f"{sweep['best']['objective']:.4f} (trial {sweep['best']['number']})"

    steps = f"{early['total_steps']:,} ({100 * run['steps_ratio']:.1f} %)"
    gap = f"{best(early)}, gap {100 * run['best_gap']:.2f} points"
    rows = [
        ("trials succeeded / pruned", counts(full), counts(early)),
        ("epochs trained", str(full["total_epochs"]), str(early["total_epochs"])),
        ("optimizer steps", f"{full['total_steps']:,}", steps),
        ("best val_accuracy", best(full), gap),
        ("wall time (s)", str(full["wall_s"]), str(early["wall_s"])),
    ]
    print(f"| figure | no early stopping | {name} |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"target: steps <= {100 * args.target_steps:.0f} %: "
          f"{'met' if run['target_steps_met'] else 'NOT met'}; best within "
          f"{100 * args.target_gap:.1f} point: "
          f"{'met' if run['target_objective_met'] else 'NOT met'}")
    print(f"proposals identical: {run['proposals_identical']}; completed trials' objectives "
          f"identical to the full sweep's: {run['completed_objectives_identical']}; "
          f"pruning decisions as replayed by hand: {run['asha_decisions_match_replay']}")
    fb = run["full_best_under_early_stopping"]
    print(f"the full sweep's best trial ({run['full_best_trial']}) under {name}: {fb['status']} "
          f"at epoch {fb['epochs']}; {name}'s best ranks "
          f"{run['early_best_rank_in_full_sweep']} of {len(full['trials'])} in the full sweep")
    print(f"\n| trial | params | full: val_accuracy | {name}: status (epoch) | {name}: value |")
    print("|---|---|---|---|---|")
    early_by_n = {t["number"]: t for t in early["trials"]}
    for t in full["trials"]:
        e = early_by_n[t["number"]]
        print(f"| {t['number']} | {fmt_params(t['params'])} | {t['objective']:.4f} | "
              f"{e['status']} ({e['epochs']}) | {e['last_objective']:.4f} |")


# ------------------------------------------------------------------ the lectures
def lecture_grid() -> dict:
    body = {**LECTURE_GRID, "device": "cpu"}
    result = run_sweep(body, grad_norms=True)
    print(f"\nlecture (a): grid, MLP on digits, {body['hyperparameters']['epochs']} epochs, "
          f"{len(result['trials'])} trials, {result['wall_s']} s; final val_accuracy:")
    acts = body["space"]["activation"]["values"]
    print("| hidden_sizes | " + " | ".join(acts) + " |\n|---|" + "---|" * len(acts))
    table: dict[str, dict[str, float]] = {}
    for t in result["trials"]:
        key = json.dumps(t["params"]["hidden_sizes"])
        table.setdefault(key, {})[t["params"]["activation"]] = t["objective"]
    for hs in body["space"]["hidden_sizes"]["values"]:
        cells = table.get(json.dumps(hs), {})
        print(f"| {hs} | " + " | ".join(f"{cells.get(a, float('nan')):.4f}" for a in acts) + " |")
    # The vanishing gradient itself: the first hidden layer's gradient norm over the output
    # layer's, at the end of the first epoch (grad_norm/<layer>, measured before any clipping).
    ratios: dict[str, dict[str, float]] = {}
    for t in result["trials"]:
        norms = t.get("grad_norms", {})
        if norms.get("layers.0") and norms.get("head") and norms["head"][0] > 0:
            ratios.setdefault(json.dumps(t["params"]["hidden_sizes"]), {})[
                t["params"]["activation"]] = norms["layers.0"][0] / norms["head"][0]
    print("\ngradient norm of the first hidden layer / the output layer, end of epoch 1:")
    print("| hidden_sizes | " + " | ".join(acts) + " |\n|---|" + "---|" * len(acts))
    for hs in body["space"]["hidden_sizes"]["values"]:
        cells = ratios.get(json.dumps(hs), {})
        print(f"| {hs} | " + " | ".join(f"{cells.get(a, float('nan')):.3f}" for a in acts) + " |")
    best = result["best"]
    print(f"best: {fmt_params(best['params'])} -> {best['objective']:.4f}; importance: "
          f"{result['importance']['importances']}")
    return {"body": body, **result, "table": table, "first_layer_over_head_grad_norm": ratios}


def lecture_asha() -> dict:
    body = {**LECTURE_ASHA, "device": "cpu"}
    result = run_sweep(body)
    print(f"\nlecture (b): ASHA random sweep, rnn_lm on fortunes, {len(result['trials'])} "
          f"trials, {result['total_steps']:,} steps, {result['wall_s']} s:")
    print("| trial | embedding_dim | hidden_size | status (epoch) | val_perplexity (last) |"
          "\n|---|---|---|---|---|")
    for t in result["trials"]:
        print(f"| {t['number']} | {t['params']['embedding_dim']} | {t['params']['hidden_size']}"
              f" | {t['status']} ({t['epochs']}) | {t['last_objective']:.3f} |")
    best = result["best"]
    full_steps = len(result["trials"]) * body["hyperparameters"]["epochs"] * \
        body["hyperparameters"]["steps_per_epoch"]
    print(f"best: {fmt_params(best['params'])} -> {best['objective']:.3f}; steps "
          f"{result['total_steps']:,} of {full_steps:,} without pruning; importance: "
          f"{result['importance']['importances']}")
    return {"body": body, **result, "steps_without_pruning": full_steps}


# ------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=positive_int, default=27)
    parser.add_argument("--epochs", type=positive_int, default=9)
    parser.add_argument("--min-epochs", type=positive_int, default=1)
    parser.add_argument("--reduction-factor", type=int, choices=range(2, 11), default=3,
                        metavar="{2..10}")
    parser.add_argument("--method", choices=("random", "tpe"), default="random")
    parser.add_argument("--early-stopping", choices=("asha", "median"), default="asha",
                        help="the pruner compared with no early stopping")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="sweep seeds; the first one is the headline")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1, the default, is robust to other load; "
                             "0 keeps torch's default)")
    parser.add_argument("--target-steps", type=float, default=0.40)
    parser.add_argument("--target-gap", type=float, default=0.005)
    parser.add_argument("--lecture", action="store_true",
                        help="also run the README's two lecture sweeps")
    parser.add_argument("--no-comparison", action="store_true",
                        help="skip the ASHA / no early stopping comparison")
    parser.add_argument("--out", default="sweep")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 for early stopping")

    import torch

    logging.basicConfig(level=logging.WARNING)
    for noisy in ("api.lifespan", "kombu.connection"):  # "no authentication", "no hostname"
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*httpx")  # starlette.testclient on import
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    result = run_header("sweep", vars(args))
    result["machine_note"] = MACHINE_NOTE
    result["space"] = COMPARISON_SPACE
    from models.data import load_image_dataset

    result["digits_val_examples"] = int(load_image_dataset("digits", seed=0).x_val.shape[0])
    # One tiny sweep first: imports and first-use costs out of the sweeps' wall times.
    run_sweep({"model": "mlp", "dataset": "digits", "method": "random", "max_trials": 1,
               "device": "cpu", "hyperparameters": {"epochs": 2, "steps_per_epoch": 2},
               "space": {"lr": {"values": [0.01]}},
               "early_stopping": {"method": "asha"}})
    if not args.no_comparison:
        print(f"comparison: {args.trials} trials x {args.epochs} epochs, no early stopping vs "
              f"{args.early_stopping}, seeds {args.seeds}")
        runs = [compare(args, seed) for seed in args.seeds]
        for run in runs:
            print_comparison(run, args)
        result["comparison"] = runs
        result["headline"] = {k: runs[0][k] for k in (
            "seed", "steps_ratio", "best_gap", "target_steps_met", "target_objective_met",
            "proposals_identical", "completed_objectives_identical", "asha_decisions_match_replay",
            "full_best_trial", "full_best_under_early_stopping",
            "early_best_rank_in_full_sweep")}
        result["headline"].update(
            full_steps=runs[0]["full"]["total_steps"], early_steps=runs[0]["early"]["total_steps"],
            full_best=runs[0]["full"]["best"]["objective"],
            early_best=runs[0]["early"]["best"]["objective"])
        if len(runs) > 1:
            result["over_seeds"] = [{k: r[k] for k in (
                "seed", "steps_ratio", "best_gap", "target_steps_met", "target_objective_met",
                "early_best_rank_in_full_sweep", "full_best_under_early_stopping",
                "asha_decisions_match_replay")}
                | {"full_best": r["full"]["best"]["objective"],
                   "early_best": r["early"]["best"]["objective"]} for r in runs]
            print("\n| seed | steps | full best | early best (rank in full) | gap (points) | "
                  "full best trial under early stopping |\n|---|---|---|---|---|---|")
            for r in result["over_seeds"]:
                fb = r["full_best_under_early_stopping"]
                print(f"| {r['seed']} | {100 * r['steps_ratio']:.1f} % | {r['full_best']:.4f} | "
                      f"{r['early_best']:.4f} ({r['early_best_rank_in_full_sweep']}) | "
                      f"{100 * r['best_gap']:.2f} | {fb['status']} "
                      f"({fb['epochs']}) |")
    if args.lecture:
        result["lecture"] = {"grid": lecture_grid(), "asha": lecture_asha()}
    print(f"written to {write_results(args.out, result)}")


if __name__ == "__main__":
    main()
