"""Per-parameter vs fused optimizer kernels on this machine's CPU, per model family.

For each family (default hyperparameters; digits for the MLP and the CNN, fortunes for the
RNN-LM) one process alternates the two kernels `--rounds` times: a fresh model and Adam with
the default (per-parameter) or `fused=True` kernels, a few warm-up steps, then `--steps` timed
training steps on one batch (forward, backward, optimizer step). Figures: the median whole-step
and optimizer-step times in ms, and the fused/per-parameter ratio. This is the measurement
behind models/acceleration.optimizer_options picking fused kernels on the CPU.

    .venv/bin/python bench/optimizer_kernels.py               # ~1 min
    .venv/bin/python bench/optimizer_kernels.py --threads 2 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import run_header, write_results

FAMILIES = (("mlp", "digits"), ("cnn", "digits"), ("rnn_lm", "fortunes"))
KERNELS = {"per_parameter": {}, "fused": {"fused": True}}


def one_batch(data, hp: dict):
    """The first training batch, as fit() would draw its shape."""
    import torch

    if hasattr(data, "x_train"):
        return data.x_train[:hp["batch_size"]], data.y_train[:hp["batch_size"]]
    t, ids = hp["seq_len"], data.train_ids
    starts = range(0, hp["batch_size"] * t, t)
    return (torch.stack([ids[s:s + t] for s in starts]),
            torch.stack([ids[s + 1:s + t + 1] for s in starts]))


def time_steps(model_name: str, data, hp: dict, kernel: dict, steps: int) -> tuple[float, float]:
    """(whole step ms, optimizer step ms), means over `steps` after 5 warm-up steps."""
    import torch

    from models.train import build_model_from_config, model_config

    torch.manual_seed(hp["seed"])
    model = build_model_from_config(model_name, model_config(model_name, hp, data))
    opt = torch.optim.Adam(model.parameters(), lr=hp["lr"], **kernel)
    x, y = one_batch(data, hp)
    optimizer_s = 0.0
    for i in range(5 + steps):
        if i == 5:
            started, optimizer_s = time.perf_counter(), 0.0
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t = time.perf_counter()
        opt.step()
        optimizer_s += time.perf_counter() - t
    whole_s = time.perf_counter() - started
    return whole_s / steps * 1e3, optimizer_s / steps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the worker's default)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=0,
                    help="timed steps per round (default: 200 MLP, 60 CNN, 20 RNN-LM)")
    args = ap.parse_args()

    import torch

    from models.registry import validate_hyperparameters
    from models.train import JobSpec, load_data

    torch.set_num_threads(args.threads)
    result = run_header("optimizer_kernels", vars(args))
    figures = {}
    for model_name, dataset in FAMILIES:
        hp = validate_hyperparameters(model_name, {})
        data = load_data(JobSpec(model_name, dataset, hp, "cpu"), None)
        steps = args.steps or {"mlp": 200, "cnn": 60, "rnn_lm": 20}[model_name]
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in KERNELS}
        for _ in range(args.rounds):
            for name, kernel in KERNELS.items():
                runs[name].append(time_steps(model_name, data, hp, kernel, steps))
        row = {name: {"step_ms": round(statistics.median(r[0] for r in rs), 3),
                      "optimizer_ms": round(statistics.median(r[1] for r in rs), 3)}
               for name, rs in runs.items()}
        row["fused_over_per_parameter_step"] = round(
            row["fused"]["step_ms"] / row["per_parameter"]["step_ms"], 3)
        row["fused_over_per_parameter_optimizer"] = round(
            row["fused"]["optimizer_ms"] / row["per_parameter"]["optimizer_ms"], 3)
        figures[model_name] = row
        print(f"{model_name}: step {row['per_parameter']['step_ms']} -> {row['fused']['step_ms']}"
              f" ms ({row['fused_over_per_parameter_step']}), optimizer "
              f"{row['per_parameter']['optimizer_ms']} -> {row['fused']['optimizer_ms']} ms "
              f"({row['fused_over_per_parameter_optimizer']})", flush=True)
    result["figures"] = figures
    print(f"wrote {write_results('optimizer_kernels', result)}")


if __name__ == "__main__":
    main()
