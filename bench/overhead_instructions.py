"""What the service adds to a training process, counted in CPU instructions: a figure that does
not move with the machine's load, where bench/overhead.py's wall-clock ratio moves by several
per cent between runs on a shared machine.

    .venv/bin/python bench/overhead_instructions.py            # about 10 minutes on 2 cores

Each arm runs in its own process under valgrind's callgrind, which counts the instructions the
process executes (all its threads: the trainer, and the queue's feeder thread that sends the
writes). Counting is switched on only around the measured call, after imports and a two-step
warm-up, and each arm runs twice, for 1 and for 3 epochs: the difference over 2 is one epoch's
instructions, setup and teardown cancelled out. The arms, the same job (the CNN on digits, 45
steps an epoch, as bench/overhead.py):
  bare_with_epoch_eval   overhead.bare_run(evaluate=True): the plain loop plus a validation pass
                         after each epoch (what bench/overhead.py pairs the service with);
  fit_noop_callbacks     fit() with the no-op Callbacks: fit()'s own work (per-step loss
                         reporting, stop checks, gradient norms, the confusion matrix, the
                         checkpoint for exact resume);
  fit_no_checkpoint      the same with checkpoint serialization replaced by nothing: the
                         checkpoint's share (measurement only; the service always checkpoints);
  fit_persisting         fit() with the worker's PersistingCallbacks on a SQLite Store and the
                         writer process (the trainer's side of persistence; the writer child's
                         own work runs on another core and is not counted).
callgrind runs a program about 50 times slower, so the service's clocks (metric flushes and
cancel checks every TRAINYARD_*_SECONDS, progress every PROGRESS_EVERY_S) are stretched by
CLOCK_STRETCH for the persisting arm: they fire as often per step as they do at full speed.

Instructions are not time: a cache miss costs no instruction, so this says what work is added,
not what it costs on a given machine. Results: bench/results/overhead_instructions.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

MODEL, DATASET, SEED = "cnn", "digits", 0
EPOCHS_SHORT, EPOCHS_LONG = 1, 3
ARMS = ("bare_with_epoch_eval", "fit_noop_callbacks", "fit_no_checkpoint", "fit_persisting")
CLOCK_STRETCH = 50  # callgrind's slowdown, roughly: the persisting arm's clocks run this slower
TARGET = 0.98  # issue 13's service/bare ratio, here read as a ratio of work


# ------------------------------------------------------------------ the child, under callgrind
def _instrument(on: bool) -> None:
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
                   check=True, capture_output=True)


def child(arm: str, epochs: int, work: Path) -> None:
    """Run `arm` for `epochs` epochs with callgrind counting only that."""
    if arm == "fit_persisting":  # before Settings() is read
        os.environ["TRAINYARD_METRICS_FLUSH_SECONDS"] = str(1.0 * CLOCK_STRETCH)
        os.environ["TRAINYARD_CANCEL_CHECK_SECONDS"] = str(1.0 * CLOCK_STRETCH)
    import torch

    torch.set_num_threads(1)
    import overhead

    from models import reporting, train

    reporting.PROGRESS_EVERY_S *= CLOCK_STRETCH
    hp = {"epochs": epochs, "seed": SEED}
    warm = {"epochs": 1, "seed": SEED, "steps_per_epoch": 2}
    store = None
    if arm == "fit_persisting":
        from db.store import Store

        store = Store(f"sqlite:///{work / f'{arm}-{epochs}.db'}")
        store.migrate()
    if arm == "fit_no_checkpoint":
        train.checkpoint_bytes = lambda *args, **kwargs: b""
    if arm == "bare_with_epoch_eval":
        overhead.bare_run(MODEL, DATASET, warm, evaluate=True)
        _instrument(True)
        overhead.bare_run(MODEL, DATASET, hp, evaluate=True)
    else:
        overhead._fit_in_process(MODEL, DATASET, warm, store=store)
        _instrument(True)
        overhead._fit_in_process(MODEL, DATASET, hp, store=store)
    _instrument(False)


# ------------------------------------------------------------------ the parent
def count(arm: str, epochs: int, work: Path) -> int:
    """Instructions of one arm's measured call, from callgrind's output file."""
    out = work / f"callgrind-{arm}-{epochs}.out"
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         sys.executable, __file__, "--child", arm, str(epochs), str(work)],
        env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{arm} ({epochs} epochs) failed:\n{run.stderr[-3000:]}")
    match = re.search(r"^totals:\s+(\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no totals in {out}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=3, metavar=("ARM", "EPOCHS", "WORK"), help=argparse.SUPPRESS)
    ap.add_argument("--parallel", type=int, default=2, help="arms counted at once (default 2)")
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), Path(args.child[2]))
        return 0
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (callgrind) is not installed: apt-get install valgrind", file=sys.stderr)
        return 2

    result = common.run_header("overhead_instructions", {
        "model": MODEL, "dataset": DATASET, "seed": SEED, "arms": list(ARMS),
        "epochs_counted": [EPOCHS_SHORT, EPOCHS_LONG], "clock_stretch": CLOCK_STRETCH,
        "threads": 1, "store": "sqlite, writer process",
    })
    print(f"overhead_instructions: {len(ARMS)} arms x {EPOCHS_SHORT} and {EPOCHS_LONG} epochs "
          f"under callgrind, {args.parallel} at a time (load {common.load_average()})",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="trainyard-bench-instructions-") as tmp:
        work = Path(tmp)
        runs = [(arm, e) for arm in ARMS for e in (EPOCHS_SHORT, EPOCHS_LONG)]
        with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
            counts = dict(zip(runs, pool.map(lambda r: count(r[0], r[1], work), runs)))
    per_epoch = {arm: (counts[arm, EPOCHS_LONG] - counts[arm, EPOCHS_SHORT])
                 / (EPOCHS_LONG - EPOCHS_SHORT) for arm in ARMS}
    bare = per_epoch["bare_with_epoch_eval"]
    figures = {
        "instructions_per_epoch": {arm: round(v) for arm, v in per_epoch.items()},
        "ratio_bare_to_arm": {arm: round(bare / v, 4) for arm, v in per_epoch.items()},
        "added_per_epoch_pct_of_bare": {
            "fit_own_work": round((per_epoch["fit_noop_callbacks"] - bare) / bare * 100, 3),
            "of_which_checkpoint": round((per_epoch["fit_noop_callbacks"]
                                          - per_epoch["fit_no_checkpoint"]) / bare * 100, 3),
            "persistence": round((per_epoch["fit_persisting"]
                                  - per_epoch["fit_noop_callbacks"]) / bare * 100, 3),
        },
        "raw_counts": {f"{arm}@{e}": c for (arm, e), c in counts.items()},
        "target": TARGET,
        "meets_target": bare / per_epoch["fit_persisting"] >= TARGET,
    }
    result["figures"] = figures
    for arm in ARMS:
        print(f"  {arm:22s} {per_epoch[arm] / 1e6:8.1f} M instructions an epoch, "
              f"bare/arm {figures['ratio_bare_to_arm'][arm]:.4f}")
    print(f"  added, % of the bare epoch: {figures['added_per_epoch_pct_of_bare']}")
    path = common.write_results("overhead_instructions", result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
