"""Service overhead: one training job through the whole service vs the same training in bare torch.

    .venv/bin/python bench/overhead.py                      # embedded (SQLite + file queue)
    .venv/bin/python bench/overhead.py --mode distributed   # Postgres + Redis

Each repeat runs, alternately, (1) a bare torch loop in this process: the same model class from
models/, the same data tensors, seed, batch size, optimizer and epochs, a plain for loop with
backward/step and nothing else; (2) the same job submitted over HTTP to the running service
(API -> queue -> worker -> fit() with PersistingCallbacks -> database). While the bare loop
runs, the service's processes are paused (SIGSTOP) so an idle worker's queue polling does not
slow the bare loop down.

Headline figure (see bench/README.md for why): steady-state training throughput.
  service: samples of steps 2..N / (time of the step-N train_loss row - time of the step-1
           row), from the metrics table: the worker's own clock, and everything the worker does
           between those steps (metric batches, progress updates, cancel checks, per-epoch
           evaluation, gradient norms, checkpoints written to the DB) but not process start-up,
           imports, data loading or model building.
  bare:    the same steps 2..N, timed the same way.
Also reported: job wall time (started_at..finished_at: includes data loading and the last
epoch's evaluation and checkpoint) and end to end (created_at..finished_at in the DB, and
submit..`succeeded` as a polling client sees it).

Each run's step timestamps are also split into a per-step time and a per-epoch-end extra
(medians, robust to bursts of other load), which say where the difference comes from and what it
would be for longer epochs. A breakdown then runs, in this process, the bare loop, the bare loop
plus a per-epoch evaluation, fit() with no-op callbacks and fit() with the worker's
PersistingCallbacks on a real Store of the same backend (with the writer process, and with the
writer thread it replaced: the same conditions for both), and one more fit() with timers around
each callback, each writer call and fit()'s own per-epoch work, to say what costs what.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

DEFAULT_MODEL = "cnn"
DEFAULT_DATASET = "digits"
# The CNN's default hyperparameters on digits (whatever models/registry.py says today; the
# results file records them all, filled in), with epochs and seed pinned so that the measured
# window (a few seconds) spans many epoch ends: evaluations, metric flushes, progress updates
# and checkpoints.
DEFAULT_HP = {"epochs": 30, "seed": 0}
TARGET = 0.98  # service/bare steady-state throughput (issue 13)


# ------------------------------------------------------------------ bare torch
def bare_run(model_name: str, dataset: str, hp_in: dict, evaluate: bool = False) -> dict:
    """The plain loop. Returns per-step wall-clock marks, batch sizes and losses.

    evaluate=True (breakdown only) adds what a hand-written loop usually does after each epoch:
    validation loss and accuracy in batches of 2048 under no_grad, as fit() does."""
    import torch

    from models.data import load_image_dataset
    from models.registry import validate_hyperparameters
    from models.train import (
        build_model_from_config,
        build_optimizer,
        build_scheduler,
        model_config,
    )

    t_start = time.perf_counter()
    hp = validate_hyperparameters(model_name, hp_in)
    data = load_image_dataset(dataset, None, seed=hp["seed"])
    torch.manual_seed(hp["seed"])
    model = build_model_from_config(model_name, model_config(model_name, hp, data))
    # the service's own optimizer, kernels included (fused on the CPU and CUDA): the pair
    # measures what the service adds, not a choice of optimizer (optimizer_kernels.py does)
    opt = build_optimizer(model, hp, torch.device("cpu"))
    x_train, y_train = data.x_train, data.y_train
    n, bs, epochs = x_train.shape[0], hp["batch_size"], hp["epochs"]
    spe = math.ceil(n / bs)
    if hp["steps_per_epoch"]:
        spe = min(spe, hp["steps_per_epoch"])
    sched = (build_scheduler(opt, hp, epochs * spe) if hp["lr_schedule"] != "constant" else None)
    gen = torch.Generator().manual_seed(hp["seed"])

    marks, sizes, losses = [], [], []
    t_loop = time.perf_counter()
    model.train()
    for _epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(spe):
            idx = order[i * bs:(i + 1) * bs]
            _, loss = model(x_train[idx], y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if hp["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.detach())
            sizes.append(idx.shape[0])
            marks.append(time.perf_counter())
        if evaluate:
            model.eval()
            with torch.no_grad():
                loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
                for s in range(0, data.x_val.shape[0], 2048):
                    logits, _ = model(data.x_val[s:s + 2048])
                    y = data.y_val[s:s + 2048]
                    loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum")
                    correct += (logits.argmax(-1) == y).sum()
                _val = torch.stack([loss_sum, correct.float()]).tolist()
            model.train()
    t_end = time.perf_counter()
    return {
        "marks": marks, "sizes": sizes, "losses": torch.stack(losses).tolist(),
        "setup_s": t_loop - t_start, "loop_s": t_end - t_loop, "total_s": t_end - t_start,
    }


def window_throughput(marks: list[float], sizes: list[int]) -> tuple[float, float, int]:
    """Samples of steps 2..N over the time from the end of step 1 to the end of step N."""
    window = marks[-1] - marks[0]
    samples = sum(sizes[1:])
    return samples / window, window, samples


def decompose(marks: list[float], epochs: int) -> dict:
    """Split a run's step marks into a per-step time and a per-epoch-end extra (robust medians).

    step_ms:       median time between consecutive steps inside an epoch;
    epoch_end_ms:  median time between the last step of an epoch and the first of the next,
                   minus step_ms: what happens at each epoch end (nothing much in the bare loop;
                   evaluation, gradient norms, checkpoint and DB writes in the service).
    Medians make this insensitive to the bursts of other load on a shared machine; periodic work
    rarer than once per epoch (metric flushes, cancel checks) is not in these medians."""
    spe = len(marks) // epochs
    inner, boundary = [], []
    for i in range(1, len(marks)):
        (boundary if i % spe == 0 else inner).append(marks[i] - marks[i - 1])
    step = statistics.median(inner)
    return {"steps_per_epoch": spe, "step_ms": step * 1000,
            "epoch_end_ms": (statistics.median(boundary) - step) * 1000 if boundary else 0.0}


# ------------------------------------------------------------------ the service
def service_run(bench: common.BenchService, model: str, dataset: str, hp: dict,
                sizes: list[int], label: str) -> dict:
    from sqlalchemy import text

    t_submit = time.time()
    job = bench.submit(model, dataset, hp, device="cpu", name=label)
    done, t_seen = bench.wait(job["id"], poll_s=0.5)
    if done["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} {done['status']}: {done.get('error')}\n"
                           f"{bench.service.logs()}")
    with bench.store.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT step, value, time FROM metrics WHERE job_id = :j AND name = 'train_loss' "
            "ORDER BY step"), {"j": job["id"]}).all()
        rates = [r[0] for r in conn.execute(text(
            "SELECT value FROM metrics WHERE job_id = :j AND name = 'samples_per_s'"),
            {"j": job["id"]}).all()]
    record = bench.store.get_job(job["id"])
    if len(rows) != len(sizes):
        raise RuntimeError(f"job {job['id']}: {len(rows)} train_loss rows, bare loop had "
                           f"{len(sizes)} steps: not the same work")
    marks = [r[2] for r in rows]
    thr, window, samples = window_throughput(marks, sizes)
    created, started, finished = (common.parse_time(v) for v in
                                  (record.created_at, record.started_at, record.finished_at))
    total_samples = sum(sizes)
    return {
        "job_id": job["id"],
        "window_s": window, "window_samples": samples, "throughput": thr,
        "losses": [r[1] for r in rows], "marks": marks,
        "job_wall_s": finished - started,
        "job_wall_throughput": total_samples / (finished - started),
        "queue_wait_s": started - created,
        "e2e_db_s": finished - created,
        "e2e_client_s": t_seen - t_submit,
        "worker_reported_samples_per_s_median": statistics.median(rates) if rates else None,
    }


# ------------------------------------------------------------------ breakdown in this process
class _Timers:
    def __init__(self):
        self.total: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total[name] = self.total.get(name, 0.0) + time.perf_counter() - t
                self.calls[name] = self.calls.get(name, 0) + 1
        return timed

    def report(self) -> dict:
        return {k: {"calls": self.calls[k], "total_ms": round(self.total[k] * 1000, 1),
                    "per_call_ms": round(self.total[k] * 1000 / self.calls[k], 3)}
                for k in sorted(self.total, key=lambda k: -self.total[k])}


def _fit_in_process(model: str, dataset: str, hp: dict, store=None, timers: _Timers | None = None,
                    writer: str = "process") -> dict:
    """fit() with no-op callbacks (store None) or PersistingCallbacks on `store` with a writer
    process or thread (`writer`); timers wrap the callbacks, the writer's calls (what the
    trainer pays), the store's methods (called here only by a writer thread) and fit()'s
    per-epoch work (patched in this process only)."""
    import torch

    from core.settings import Settings
    from models import train
    from models.train import Callbacks, JobSpec, fit
    from worker.persistence import PersistingCallbacks

    spec = JobSpec(model, dataset, hp, "cpu")
    data = train.load_data(spec)
    marks: list[float] = []

    if store is None:
        class Marks(Callbacks):
            def on_step(self, step, epoch, metrics):
                marks.append(time.perf_counter())
        callbacks = Marks()
    else:
        job = store.create_job(model, dataset, hp, device="cpu", name="breakdown")
        store.claim_job(job.id, worker="bench")

        class MarkingPersist(PersistingCallbacks):
            def on_step(self, step, epoch, metrics):
                super().on_step(step, epoch, metrics)
                marks.append(time.perf_counter())
        callbacks = MarkingPersist(store, job.id, Settings(db_writer=writer))

    patched = []
    if timers is not None:
        if store is not None:
            for name in ("add_metrics", "update_progress", "get_status", "add_checkpoint",
                         "add_text"):
                setattr(store, name, timers.wrap(f"store.{name}", getattr(store, name)))
        for owner, name, label in ((train._Classification, "evaluate", "fit.evaluate"),
                                   (train, "grad_norms", "fit.grad_norms"),
                                   (torch, "save", "fit.checkpoint_serialize(torch.save)")):
            original = getattr(owner, name)
            patched.append((owner, name, original))
            setattr(owner, name, timers.wrap(label, original))
        for name in ("on_step", "on_progress", "should_stop", "on_epoch", "on_checkpoint"):
            setattr(callbacks, name, timers.wrap(f"callbacks.{name}", getattr(callbacks, name)))
        if store is not None:
            for name in ("call", "ask", "answers"):
                setattr(callbacks.writer, name,
                        timers.wrap(f"writer.{name}", getattr(callbacks.writer, name)))
    try:
        t0 = time.perf_counter()
        result = fit(spec, callbacks, data=data)
        total = time.perf_counter() - t0
    finally:
        for owner, name, original in patched:
            setattr(owner, name, original)
    if store is not None:
        callbacks.close()  # every write landed (after the measured steps)
        store.finish_job(job.id, "succeeded")
    return {"marks": marks, "total_s": total, "steps": result.steps_done}


def breakdown(mode: str, model: str, dataset: str, hp: dict, sizes: list[int], repeats: int
              ) -> dict:
    """Alternate bare / bare+eval / fit(no-op) / fit(PersistingCallbacks, real Store) with the
    writer process and with the writer thread, then one run with timers."""
    from db.store import Store

    postgres = None
    tmp = None
    if mode == "distributed":
        postgres = common.Postgres()
        url = postgres.create()
    else:
        tmp = tempfile.TemporaryDirectory(prefix="trainyard-bench-breakdown-")
        url = f"sqlite:///{Path(tmp.name) / 'trainyard.db'}"
    store = Store(url)
    try:
        store.migrate()
        thr = {"bare": [], "bare_with_epoch_eval": [], "fit_noop_callbacks": [],
               "fit_persisting_callbacks": [], "fit_persisting_callbacks_thread_writer": []}
        decs = {k: [] for k in thr}
        for _ in range(repeats):
            runs = {
                "bare": bare_run(model, dataset, hp),
                "bare_with_epoch_eval": bare_run(model, dataset, hp, evaluate=True),
                "fit_noop_callbacks": _fit_in_process(model, dataset, hp),
                "fit_persisting_callbacks": _fit_in_process(model, dataset, hp, store=store),
                "fit_persisting_callbacks_thread_writer": _fit_in_process(
                    model, dataset, hp, store=store, writer="thread"),
            }
            for k, run in runs.items():
                thr[k].append(window_throughput(run["marks"], sizes)[0])
                decs[k].append(decompose(run["marks"], hp["epochs"]))
        timers = _Timers()
        timed = _fit_in_process(model, dataset, hp, store=store, timers=timers)
        bare_med = statistics.median(thr["bare"])
        window = timed["marks"][-1] - timed["marks"][0]
        return {
            "backend": store.dialect,
            "throughput_samples_per_s": {k: common.summary(v, 1) for k, v in thr.items()},
            "ratio_to_bare_median": {k: round(statistics.median(v) / bare_med, 4)
                                     for k, v in thr.items()},
            "per_step_and_epoch_end_ms": {
                k: {"step_ms": round(statistics.median(d["step_ms"] for d in v), 3),
                    "epoch_end_ms": round(statistics.median(d["epoch_end_ms"] for d in v), 3)}
                for k, v in decs.items()},
            "timed_run": {
                "note": "one fit() with PersistingCallbacks (writer process) and timers (timer "
                        "overhead included); writer.* calls happen inside callbacks.* and are "
                        "what the trainer pays for persistence (the store's work runs in the "
                        "writer process); evaluate/grad_norms/checkpoint_serialize are fit()'s "
                        "own work, not persistence",
                "fit_total_s": round(timed["total_s"], 3),
                "window_s": round(window, 3),
                "timers": timers.report(),
            },
        }
    finally:
        store.close()
        if postgres is not None:
            postgres.drop(url)
            postgres.close()
        if tmp is not None:
            tmp.cleanup()


# ------------------------------------------------------------------ main
def parse_set(pairs: list[str]) -> dict:
    hp = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            hp[key] = json.loads(raw)
        except json.JSONDecodeError:
            hp[key] = raw
    return hp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=common.MODES, default="embedded")
    ap.add_argument("--model", choices=("mlp", "cnn"), default=DEFAULT_MODEL)
    ap.add_argument("--dataset", default=DEFAULT_DATASET)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help=f"hyperparameter (JSON value); defaults: {DEFAULT_HP}")
    ap.add_argument("--repeats", type=int, default=5, help="bare/service pairs (default 5)")
    ap.add_argument("--breakdown-repeats", type=int, default=2,
                    help="in-process bare / fit(no-op) / fit(persisting) triples; 0 skips")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/OpenMP threads (OMP_NUM_THREADS) for the bare loop and the "
                         "worker alike (default 1; 0 = torch's default, one per core, which "
                         "is what a worker gets; see bench/README.md)")
    ap.add_argument("--no-pause", action="store_true",
                    help="leave the service running during bare runs")
    ap.add_argument("--bare-eval", action=argparse.BooleanOptionalAction, default=True,
                    help="the paired bare loop evaluates on the validation set after each epoch, "
                         "as a hand-written loop (pytorch/examples mnist) does and as the service "
                         "does (default); --no-bare-eval compares with training alone")
    ap.add_argument("--writer", choices=("process", "thread"), default="process",
                    help="where the service's worker runs a job's database writes "
                         "(TRAINYARD_DB_WRITER; default process); the breakdown measures both")
    ap.add_argument("--out", default=None, help="results name (default overhead-<mode>)")
    args = ap.parse_args(argv)

    extra_env = {"TRAINYARD_DB_WRITER": args.writer}
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        extra_env["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    from models.registry import validate_hyperparameters

    if args.threads:
        torch.set_num_threads(args.threads)
    hp = {**DEFAULT_HP, **parse_set(args.set)}
    name = args.out or f"overhead-{args.mode}"
    result = common.run_header("overhead", {
        "mode": args.mode, "model": args.model, "dataset": args.dataset, "hyperparameters": hp,
        "hyperparameters_filled": validate_hyperparameters(args.model, hp),
        "repeats": args.repeats, "breakdown_repeats": args.breakdown_repeats,
        "threads": torch.get_num_threads(), "service_paused_during_bare": not args.no_pause,
        "bare_loop_evaluates_each_epoch": args.bare_eval, "service_db_writer": args.writer,
    })
    print(f"overhead ({args.mode}): {args.model} on {args.dataset} {hp}, "
          f"{args.repeats} alternating pairs, torch threads {torch.get_num_threads()}, "
          f"load {common.load_average()}", flush=True)

    pairs = []
    t_all = time.monotonic()
    with common.running_service(args.mode, extra_env) as bench:
        common.wait_worker_ready(bench)
        # warm-up, not counted: one short run of each (first-call costs in both processes)
        warm_hp = {**hp, "epochs": 1}
        bare_run(args.model, args.dataset, warm_hp)
        warm_sizes = bare_run(args.model, args.dataset, warm_hp)["sizes"]
        service_run(bench, args.model, args.dataset, warm_hp, warm_sizes, "warm-up")
        for r in range(args.repeats):
            if args.no_pause:
                bare = bare_run(args.model, args.dataset, hp, evaluate=args.bare_eval)
            else:
                with bench.paused():
                    bare = bare_run(args.model, args.dataset, hp, evaluate=args.bare_eval)
            b_thr, b_window, _ = window_throughput(bare["marks"], bare["sizes"])
            svc = service_run(bench, args.model, args.dataset, hp, bare["sizes"], f"bench-{r}")
            same = max(abs(a - b) for a, b in zip(bare["losses"], svc["losses"]))
            b_dec = decompose(bare["marks"], hp["epochs"])
            s_dec = decompose(svc["marks"], hp["epochs"])
            pair = {
                "bare_throughput": b_thr, "bare_window_s": b_window,
                "bare_loop_s": bare["loop_s"], "bare_total_s": bare["total_s"],
                "bare_loop_throughput": sum(bare["sizes"]) / bare["loop_s"],
                **{f"service_{k}": v for k, v in svc.items() if k not in ("losses", "marks")},
                "bare_step_ms": b_dec["step_ms"], "bare_epoch_end_ms": b_dec["epoch_end_ms"],
                "service_step_ms": s_dec["step_ms"], "service_epoch_end_ms": s_dec["epoch_end_ms"],
                "ratio_window": svc["throughput"] / b_thr,
                "ratio_job_wall": svc["job_wall_throughput"]
                / (sum(bare["sizes"]) / bare["total_s"]),
                "ratio_e2e_db": bare["total_s"] / svc["e2e_db_s"],
                "max_abs_loss_diff_vs_bare": same,
                "load_average": common.load_average(),
                "busy_processes": common.busy_processes(),
            }
            pairs.append(pair)
            print(f"  pair {r + 1}: bare {b_thr:8.0f} samples/s ({b_window:.2f} s) | service "
                  f"{svc['throughput']:8.0f} samples/s ({svc['window_s']:.2f} s) | ratio "
                  f"{pair['ratio_window']:.3f} | job wall {svc['job_wall_s']:.2f} s, e2e "
                  f"{svc['e2e_db_s']:.2f} s | same losses: {same == 0.0} | load "
                  f"{pair['load_average'][0]}", flush=True)
    sizes = bare["sizes"]
    steps = len(sizes)

    figures = {
        "steps_per_run": steps,
        "samples_per_run": sum(sizes),
        "ratio_window": common.summary([p["ratio_window"] for p in pairs]),
        "bare_throughput_samples_per_s": common.summary([p["bare_throughput"] for p in pairs], 1),
        "service_throughput_samples_per_s": common.summary(
            [p["service_throughput"] for p in pairs], 1),
        "ratio_of_medians_window": round(
            statistics.median(p["service_throughput"] for p in pairs)
            / statistics.median(p["bare_throughput"] for p in pairs), 4),
        "ratio_of_bests_window": round(max(p["service_throughput"] for p in pairs)
                                      / max(p["bare_throughput"] for p in pairs), 4),
        "ratio_job_wall_vs_bare_total": common.summary([p["ratio_job_wall"] for p in pairs]),
        "ratio_e2e_vs_bare_total": common.summary([p["ratio_e2e_db"] for p in pairs]),
        "service_job_wall_s": common.summary([p["service_job_wall_s"] for p in pairs], 3),
        "service_e2e_db_s": common.summary([p["service_e2e_db_s"] for p in pairs], 3),
        "service_e2e_client_s (0.5 s polling)": common.summary(
            [p["service_e2e_client_s"] for p in pairs], 3),
        "service_queue_wait_s": common.summary([p["service_queue_wait_s"] for p in pairs], 3),
        "bare_total_s": common.summary([p["bare_total_s"] for p in pairs], 3),
        "losses_identical_to_bare": all(p["max_abs_loss_diff_vs_bare"] == 0.0 for p in pairs),
        "target": TARGET,
    }
    # Robust view: per-step time and per-epoch-end extra (medians within each run), and what
    # they imply for epochs of other lengths:
    #   ratio(S) = (S * bare_step + bare_end) / (S * service_step + service_end)
    dec = {k: statistics.median(p[k] for p in pairs) for k in
           ("bare_step_ms", "service_step_ms", "bare_epoch_end_ms", "service_epoch_end_ms")}
    spe = len(sizes) // hp["epochs"]

    def projected(steps_per_epoch: int) -> float:
        bare_epoch = steps_per_epoch * dec["bare_step_ms"] + dec["bare_epoch_end_ms"]
        svc_epoch = steps_per_epoch * dec["service_step_ms"] + dec["service_epoch_end_ms"]
        return round(bare_epoch / svc_epoch, 4)

    figures["per_step_and_epoch_end"] = {
        **{k: round(v, 3) for k, v in dec.items()},
        "steps_per_epoch": spe,
        "per_step_ratio": round(dec["bare_step_ms"] / dec["service_step_ms"], 4),
        "service_epoch_end_extra_ms": round(
            dec["service_epoch_end_ms"] - dec["bare_epoch_end_ms"], 3),
        "ratio_from_medians_at_this_epoch_length": projected(spe),
        "projected_ratio_by_steps_per_epoch": {n: projected(n) for n in (23, 100, 235, 938)},
    }
    figures["meets_target"] = figures["ratio_window"]["median"] >= TARGET
    result["figures"] = figures
    result["pairs"] = [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in p.items()}
                       for p in pairs]
    print(f"  -> throughput ratio service/bare (steady window): median "
          f"{figures['ratio_window']['median']:.3f} [min {figures['ratio_window']['min']:.3f}, "
          f"max {figures['ratio_window']['max']:.3f}] target >= {TARGET}: "
          f"{'met' if figures['meets_target'] else 'NOT met'}; best/best "
          f"{figures['ratio_of_bests_window']:.3f}", flush=True)
    d = figures["per_step_and_epoch_end"]
    print(f"     per step: bare {d['bare_step_ms']:.3f} ms, service {d['service_step_ms']:.3f} ms"
          f" (ratio {d['per_step_ratio']:.3f}); epoch end: service "
          f"+{d['service_epoch_end_extra_ms']:.1f} ms per epoch of {spe} steps -> ratio "
          f"{d['ratio_from_medians_at_this_epoch_length']:.3f}; projected at 100 / 938 steps "
          f"per epoch: "
          f"{d['projected_ratio_by_steps_per_epoch'][100]:.3f} / "
          f"{d['projected_ratio_by_steps_per_epoch'][938]:.3f}", flush=True)
    print(f"     job wall (started..finished) vs bare total: "
          f"{figures['ratio_job_wall_vs_bare_total']['median']:.3f}; end to end "
          f"(created..finished) vs bare total: {figures['ratio_e2e_vs_bare_total']['median']:.3f} "
          f"({figures['service_e2e_db_s']['median']:.2f} s vs "
          f"{figures['bare_total_s']['median']:.2f} s)", flush=True)

    if args.breakdown_repeats > 0:
        print("  breakdown in this process (bare / bare+eval / fit no-op / fit persisting) ...",
              flush=True)
        bd = breakdown(args.mode, args.model, args.dataset, hp, sizes, args.breakdown_repeats)
        # The service against a hand-written loop that also evaluates after every epoch:
        # what the service costs beyond the training work itself.
        ev = bd["per_step_and_epoch_end_ms"]["bare_with_epoch_eval"]
        bare_eval_epoch = spe * dec["bare_step_ms"] + ev["epoch_end_ms"]
        svc_epoch = spe * dec["service_step_ms"] + dec["service_epoch_end_ms"]
        figures["ratio_vs_bare_with_epoch_eval_from_medians"] = round(
            bare_eval_epoch / svc_epoch, 4)
        result["breakdown"] = bd
        r = bd["ratio_to_bare_median"]
        print(f"  -> bare+epoch eval/bare {r['bare_with_epoch_eval']:.3f}, "
              f"fit(no-op callbacks)/bare {r['fit_noop_callbacks']:.3f}, "
              f"fit(PersistingCallbacks, {bd['backend']})/bare "
              f"{r['fit_persisting_callbacks']:.3f} with the writer process, "
              f"{r['fit_persisting_callbacks_thread_writer']:.3f} with a writer thread",
              flush=True)
        for k, v in bd["per_step_and_epoch_end_ms"].items():
            print(f"     {k:28s} step {v['step_ms']:.3f} ms, epoch end +{v['epoch_end_ms']:.2f} ms")
        for k, v in bd["timed_run"]["timers"].items():
            print(f"     {k:40s} {v['calls']:5d} calls {v['total_ms']:9.1f} ms "
                  f"({v['per_call_ms']:.3f} ms each)")
        print(f"     (timed run window {bd['timed_run']['window_s']:.2f} s)")
        print(f"  -> service vs a bare loop that also evaluates each epoch (from the medians): "
              f"{figures['ratio_vs_bare_with_epoch_eval_from_medians']:.3f}", flush=True)
    result["elapsed_s"] = round(time.monotonic() - t_all, 1)
    path = common.write_results(name, result)
    print(f"  wrote {path.relative_to(common.ROOT)} ({result['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
