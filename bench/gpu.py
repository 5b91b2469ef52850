"""The GPU bench: one script, a few minutes, for the GPU machine lent to some sessions.

    .venv/bin/python bench/gpu.py --prepare            # here: data the GPU machine cannot make
    python bench/gpu.py                                # there (torch alone is enough)
    python bench/gpu.py --device cpu --quick           # a dry run of every section, on a CPU

The GPU machine has torch but neither scikit-learn nor Debian's fortunes, so `--prepare` saves
the digits images and a tokenised fortunes text as tensors in bench/.gpu-data (ignored by git;
carry it). The training core (models/) imports torch only, so it runs there as it is; the
service's database path (worker.persistence + db.store) needs SQLAlchemy and pydantic, which
the `service` section uses when they import and otherwise reports as not measured.

Sections, each written to the results file as soon as it is done (a run cut short by its time
limit keeps what it measured), in order of value (the first takes a second):
  gpu_capacity what a GPU worker reports before it claims (its GPUs' UUIDs, free and total
               memory: worker/gpus.capacity) and a claim through the store with it
  memory_estimates  per family, a small and a larger job in fp32 and bf16: the most GPU memory
               fit() allocated (torch.cuda.max_memory_allocated, the dataset included) against
               the estimate workers sharing a GPU add up (models/limits.py; measured/estimate
               above 1 means the accounting is short)
  fast_path    per family: fit() plain (eager fp32) vs fit() fast (precision auto, compile
               cudagraphs) vs a bare eager loop; samples/s (tokens/s for the LM) of the
               training steps, and compile_seconds (target: fast >= 2x plain on small models)
  jobs_per_hour  32 small digits MLP jobs spread over N = 1, 2, 4, 8, 16 processes sharing the
               GPU, as `trainyard worker --jobs N` does (target: >= 4x the N = 1 rate);
               processes start and load data before the clock starts, as long-lived workers do
  service      per family: fit() with the worker's PersistingCallbacks on a SQLite store vs
               fit() with no-op callbacks (the same loop, evaluation and checkpoint
               serialisation; only the service's database work differs), wall time of the
               whole run, median of 3 alternated pairs (target >= 0.98)
  time_to_98   the CNN on digits, fast path: wall seconds until val_accuracy >= 0.98
  cifar_shaped images/s of the CNN on a synthetic CIFAR-10-shaped set (3x32x32), plain vs fast
  mps          jobs_per_hour at N = 8 again under CUDA MPS, when nvidia-cuda-mps-control exists

Results: bench/results/gpu.json (bench/results/gpu-cpu-dryrun.json for --device cpu).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from models.data import ImageData, TextData  # noqa: E402
from models.train import Callbacks, JobSpec, fit  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent / ".gpu-data"
RESULTS = Path(__file__).resolve().parent / "results"
FAMILIES = ("mlp", "cnn", "rnn_lm")
PLAIN = {"precision": "fp32", "compile": "off"}
FAST = {"precision": "auto", "compile": "cudagraphs"}


# ------------------------------------------------------------------ data
def prepare(data_dir: Path) -> None:
    """Save what the GPU machine cannot build: digits (scikit-learn) and fortunes text."""
    from models.data import load_image_dataset, load_text_dataset

    data_dir.mkdir(parents=True, exist_ok=True)
    digits = load_image_dataset("digits", seed=0)
    torch.save(vars(digits), data_dir / "digits.pt")
    text = load_text_dataset("fortunes", tokenizer="char", seed=0, max_vocab=256)
    torch.save({"train_ids": text.train_ids, "val_ids": text.val_ids, "vocab": text.vocab,
                "tokenizer": text.tokenizer}, data_dir / "fortunes-char.pt")
    print(f"prepared {data_dir}: digits {tuple(digits.x_train.shape)}, "
          f"fortunes {text.train_ids.numel()} tokens")


def load(data_dir: Path) -> dict:
    digits = ImageData(**torch.load(data_dir / "digits.pt", weights_only=True))
    saved = torch.load(data_dir / "fortunes-char.pt", weights_only=True)
    text = TextData(train_ids=saved["train_ids"], val_ids=saved["val_ids"],
                    vocab=saved["vocab"], tokenizer=saved["tokenizer"])
    return {"mlp": digits, "cnn": digits, "rnn_lm": text}


def cifar_shaped(n: int, seed: int = 0) -> ImageData:
    """Random images in CIFAR-10's shape; labels a fixed function of the image, so there is
    something to learn (the throughput is what is measured, not the accuracy)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=g)
    y = (x[:, :, :4, :4].mean(dim=(1, 2, 3)) * 40).long().clamp(0, 9)
    cut = n * 9 // 10
    return ImageData(x[:cut], y[:cut], x[cut:], y[cut:], 10, 3, 32, 32)


# ------------------------------------------------------------------ measuring fit()
class Clock(Callbacks):
    """Records each reported training rate (the reporter's own samples/s or tokens/s over the
    steps since its last report, evaluation excluded), each epoch's metrics and their times."""

    def __init__(self, stop_at_accuracy: float | None = None):
        self.rates: list[float] = []
        self.epochs: list[tuple[float, dict]] = []
        self.t0 = time.perf_counter()
        self.stop_at = stop_at_accuracy
        self.reached: float | None = None

    def on_step(self, step, epoch, metrics):
        rate = metrics.get("samples_per_s", metrics.get("tokens_per_s"))
        if rate is not None:
            self.rates.append(rate)

    def on_epoch(self, epoch, step, metrics, texts):
        now = time.perf_counter() - self.t0
        self.epochs.append((now, dict(metrics)))
        acc = metrics.get("val_accuracy")
        if self.stop_at is not None and acc is not None and acc >= self.stop_at:
            self.reached = self.reached or now

    def should_stop(self):
        return self.reached is not None


def steady_rate(rates: list[float]) -> float | None:
    """The median rate after the first reports (compilation, warm-up)."""
    tail = rates[len(rates) // 4:] or rates
    return statistics.median(tail) if tail else None


def run_fit(model: str, data, hp: dict, device: str, callbacks: Callbacks | None = None):
    spec = JobSpec(model=model, dataset="bench", hyperparameters=hp, device=device)
    clock = callbacks or Clock()
    start = time.perf_counter()
    fit(spec, clock, data=data)
    return clock, time.perf_counter() - start


def bare_rate(model: str, data, hp: dict, device: str, steps: int) -> float:
    """A plain eager fp32 loop (same model class, data on the device, Adam): samples/s."""
    from models.train import build_model_from_config, model_config

    spec = JobSpec(model=model, dataset="bench", hyperparameters=hp, device=device)
    hp = spec.hyperparameters
    data = data.to(device)
    torch.manual_seed(0)
    net = build_model_from_config(model, model_config(model, hp, data)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=hp["lr"])
    bs = hp["batch_size"]
    if isinstance(data, ImageData):
        def batch(i):
            idx = torch.randint(0, data.x_train.shape[0], (bs,), device=device)
            return data.x_train[idx], data.y_train[idx], bs
    else:
        T = hp["seq_len"]
        n = data.train_ids.shape[0] - T - 1

        def batch(i):
            s = torch.randint(0, n, (bs, 1), device=device) + torch.arange(T, device=device)
            return data.train_ids[s], data.train_ids[s + 1], bs * T
    warm = max(5, steps // 10)
    total = 0
    for i in range(steps + warm):
        if i == warm:
            _sync(device)
            start, total = time.perf_counter(), 0
        x, y, n_items = batch(i)
        loss = net(x, y)[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += n_items
    _sync(device)
    return total / (time.perf_counter() - start)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------ sections
def small_hp(model: str, quick: bool) -> dict:
    """Each family's small job: the catalogue's defaults, a few epochs."""
    epochs = 2 if quick else 5
    hp = {"epochs": epochs, "seed": 0}
    if model == "rnn_lm":
        hp.update(tokenizer="char", steps_per_epoch=20 if quick else 200)
    return hp


def section_fast_path(data: dict, device: str, quick: bool) -> dict:
    out = {}
    for model in FAMILIES:
        hp = small_hp(model, quick)
        plain, _ = run_fit(model, data[model], {**hp, **PLAIN}, device)
        fast, _ = run_fit(model, data[model], {**hp, **FAST}, device)
        bare = bare_rate(model, data[model], hp, device, steps=50 if quick else 500)
        p, f = steady_rate(plain.rates), steady_rate(fast.rates)
        compile_s = next((m["compile_seconds"] for _, m in fast.epochs
                          if "compile_seconds" in m), None)
        out[model] = {"plain_rate": p, "fast_rate": f, "bare_eager_rate": bare,
                      "fast_over_plain": f / p if p and f else None,
                      "compile_seconds": compile_s}
        print(f"fast_path {model}: plain {p:.0f}/s, fast {f:.0f}/s, bare {bare:.0f}/s, "
              f"compile {compile_s}", flush=True)
    return out


def _pool_worker(rank, device, data_path, hp, jobs, ready, done):
    torch.set_num_threads(1)
    data = ImageData(**torch.load(data_path, weights_only=True)).to(device)
    spec = JobSpec(model="mlp", dataset="bench", hyperparameters=hp, device=device)
    if device == "cuda":
        torch.zeros(1, device=device)  # CUDA context before the clock
    ready.put(rank)
    while True:
        job = jobs.get()
        if job is None:
            return
        fit(JobSpec(spec.model, spec.dataset, {**hp, "seed": job}, device), Callbacks(), data=data)
        done.put(job)


def jobs_per_hour(device: str, n: int, n_jobs: int, hp: dict, data_path: Path) -> dict:
    ctx = torch.multiprocessing.get_context("spawn")
    jobs, ready, done = ctx.Queue(), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_pool_worker, args=(r, device, str(data_path), hp, jobs, ready,
                                                    done)) for r in range(n)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=300)
    warm = time.perf_counter()
    for j in range(n_jobs):
        jobs.put(j)
    for _ in procs:
        jobs.put(None)
    for _ in range(n_jobs):
        done.get(timeout=600)
    end = time.perf_counter()
    for p in procs:
        p.join(timeout=60)
    return {"processes": n, "jobs": n_jobs, "seconds": end - warm,
            "jobs_per_hour": n_jobs / (end - warm) * 3600, "startup_seconds": warm - started}


def section_jobs_per_hour(device: str, quick: bool, data_dir: Path, ns=None) -> dict:
    hp = {"epochs": 3, "seed": 0, **FAST} if device == "cuda" else {"epochs": 1, "seed": 0}
    n_jobs = 8 if quick else 32
    ns = ns or ((1, 2) if quick else (1, 2, 4, 8, 16))
    rows = []
    for n in ns:
        row = jobs_per_hour(device, n, n_jobs, hp, data_dir / "digits.pt")
        rows.append(row)
        print(f"jobs_per_hour N={n}: {row['jobs_per_hour']:.0f}", flush=True)
    base = rows[0]["jobs_per_hour"]
    return {"hyperparameters": hp, "rows": rows,
            "best_over_one": max(r["jobs_per_hour"] for r in rows) / base}


def section_service(data: dict, device: str, quick: bool) -> dict:
    try:
        from core.settings import Settings
        from db.store import Store
        from worker.persistence import PersistingCallbacks
    except ImportError as exc:
        return {"measured": False, "why": f"the service's dependencies are missing here: {exc}"}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp))
        store = Store(f"sqlite:///{tmp}/bench.db")
        store.migrate()
        for model in FAMILIES:
            hp = {**small_hp(model, quick), **PLAIN}
            run_fit(model, data[model], hp, device)  # warm-up: kernels, allocator
            pairs = []
            for _ in range(1 if quick else 3):  # alternated, so drift hits both alike
                job = store.create_job(model, "digits" if model != "rnn_lm" else "fortunes", hp)
                store.claim_job(job.id, "bench", "cuda" if device == "cuda" else "cpu")
                callbacks = PersistingCallbacks(store, job.id, settings, attempt=1)
                _, service_s = run_fit(model, data[model], hp, device, callbacks)
                callbacks.close()
                _, noop_s = run_fit(model, data[model], hp, device)
                pairs.append((service_s, noop_s))
            ratio = statistics.median(noop / service for service, noop in pairs)
            out[model] = {"pairs_seconds": pairs, "service_over_noop": ratio}
            print(f"service {model}: {ratio:.3f}", flush=True)
    return out


def section_gpu_capacity(device: str) -> dict:
    """What a GPU worker reports before it claims (worker/gpus.capacity: its GPUs' UUIDs, free
    and total memory) and a claim through the store with it: the CUDA side of the memory
    accounting that tests cover without a GPU (tests/integration/test_gpu_capacity.py)."""
    if device != "cuda":
        return {"measured": False, "why": "needs CUDA"}
    try:
        from db.store import Store
        from models import training_memory_bytes
        from worker import gpus  # (not worker.lifecycle: it needs Celery)
    except ImportError as exc:
        return {"measured": False, "why": f"the service's dependencies are missing here: {exc}"}
    has = gpus.capacity(["cuda", "auto"], reserve_bytes=2**30)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        store.migrate()
        # what worker.lifecycle's first presence beat records
        store.record_worker_seen("bench-gpu", "bench", os.getpid(), ["cuda", "auto"],
                                 starting=True, gpus=has.gpus,
                                 gpu_free_bytes=has.free_memory_bytes, gpu_ids=gpus.gpu_ids(),
                                 gpu_memory_bytes=gpus.total_memory_bytes())
        hp = JobSpec(model="cnn", dataset="digits", hyperparameters=small_hp("cnn", quick=True),
                     device="cuda").hyperparameters  # with the defaults, as stored
        memory = training_memory_bytes("cnn", hp, "digits", None)
        job = store.create_job("cnn", "digits", hp, device="cuda", memory_bytes=memory)
        claimed = store.claim_next_job("bench-gpu", ["cuda", "auto"], "cuda", capacity=has,
                                       backfill_seconds=300)
        stored_ids = store.get_worker("bench-gpu", lease_seconds=30).gpu_ids
        store.close()
    out = {"gpu_ids": list(has.gpu_ids), "stored_gpu_ids": list(stored_ids),
           "free_memory_bytes": has.free_memory_bytes,
           "total_memory_bytes": has.total_memory_bytes, "job_memory_bytes": memory,
           "claimed": claimed is not None and claimed.id == job.id}
    print(f"gpu_capacity: {out}", flush=True)
    return out


# (family, hyperparameters, data: None for the family's own, or a CIFAR-10-shaped set)
MEMORY_CASES = [
    ("mlp", {}, None),
    ("mlp", {"hidden_sizes": [2048, 2048], "batch_size": 1024}, None),
    ("cnn", {}, None),
    ("cnn", {"batch_size": 256, "channels": [64, 128]}, "cifar_shaped"),
    ("rnn_lm", {"tokenizer": "char"}, None),
    ("rnn_lm", {"tokenizer": "char", "cell": "lstm", "hidden_size": 512, "num_layers": 2,
                "seq_len": 128, "batch_size": 64}, None),
]


def section_memory_estimates(data: dict, device: str, quick: bool) -> dict:
    """The peak of GPU memory a short fit() allocates (a few steps, a whole validation pass and
    a checkpoint) against its estimate from the loaded data's exact shape; on a CPU the same
    runs, with nothing to measure (the dry run checks the code)."""
    from models.limits import dataset_device_bytes, estimate, shape_of_data

    cifar = cifar_shaped(2_000 if quick else 20_000)
    cases = []
    for model, extra, which in MEMORY_CASES:
        images = cifar if which == "cifar_shaped" else data[model]
        for precision in ("fp32", "auto"):
            hp = {"epochs": 1, "steps_per_epoch": 3, "seed": 0, "precision": precision,
                  **extra}
            full = JobSpec(model=model, dataset="bench", hyperparameters=hp,
                           device=device).hyperparameters
            shape = shape_of_data(images)
            items = (images.train_ids.numel() + images.val_ids.numel() if shape.vocab_size
                     else images.x_train.shape[0] + images.x_val.shape[0])
            sized = estimate(model, full, shape)
            est = sized.state_bytes + sized.peak_bytes + dataset_device_bytes(shape, items)
            case = {"model": model, "hyperparameters": {**extra, "precision": precision},
                    "estimate_bytes": est, "measured_peak_bytes": None}
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            run_fit(model, images, hp, device)  # on a CPU too: the dry run runs every case
            if device == "cuda":
                case["measured_peak_bytes"] = torch.cuda.max_memory_allocated() - base
                case["measured_reserved_bytes"] = torch.cuda.max_memory_reserved()
                case["measured_over_estimate"] = round(case["measured_peak_bytes"] / est, 3)
            cases.append(case)
            print(f"memory {model} {extra} {precision}: estimate {est / 2**20:.1f} MiB, "
                  f"measured {case['measured_peak_bytes']}", flush=True)
    ratios = [c["measured_over_estimate"] for c in cases if "measured_over_estimate" in c]
    return {"cases": cases, "largest_measured_over_estimate": max(ratios) if ratios else None}


def section_time_to_98(data: dict, device: str, quick: bool) -> dict:
    hp = {"epochs": 5 if quick else 60, "seed": 0, **FAST}
    clock, wall = run_fit("cnn", data["cnn"], hp, device, Clock(stop_at_accuracy=0.98))
    best = max((m.get("val_accuracy", 0.0) for _, m in clock.epochs), default=None)
    return {"hyperparameters": hp, "seconds_to_98": clock.reached, "epochs": len(clock.epochs),
            "best_val_accuracy": best, "wall_seconds": wall}


def section_cifar_shaped(device: str, quick: bool) -> dict:
    data = cifar_shaped(2_000 if quick else 50_000)
    hp = {"epochs": 1, "seed": 0, "batch_size": 256, "steps_per_epoch": 10 if quick else 150}
    out = {}
    for label, extra in (("plain", PLAIN), ("fast", FAST)):
        clock, _ = run_fit("cnn", data, {**hp, **extra}, device)
        out[f"{label}_images_per_s"] = steady_rate(clock.rates)
    print(f"cifar_shaped: {out}", flush=True)
    return out


@contextlib.contextmanager
def mps_daemon():
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        yield False
        return
    tmp = Path(tempfile.mkdtemp())
    env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": str(tmp / "pipe"),
           "CUDA_MPS_LOG_DIRECTORY": str(tmp / "log")}
    (tmp / "pipe").mkdir()
    (tmp / "log").mkdir()
    started = subprocess.run([control, "-d"], env=env, capture_output=True,
                             check=False).returncode == 0
    saved = {k: os.environ.get(k) for k in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")}
    os.environ.update({k: env[k] for k in saved})
    try:
        yield started
    finally:
        subprocess.run([control], input=b"quit\n", env=env, capture_output=True, check=False)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def section_mps(device: str, quick: bool, data_dir: Path) -> dict:
    if device != "cuda":
        return {"measured": False, "why": "CUDA MPS needs a CUDA GPU"}
    with mps_daemon() as started:
        if not started:
            return {"measured": False, "why": "nvidia-cuda-mps-control missing or refused"}
        return section_jobs_per_hour(device, quick, data_dir, ns=(8,))


# ------------------------------------------------------------------ main
def environment(device: str) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(),
            "device": device, "cpu_count": os.cpu_count()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 1024**3, 1),
                    bf16=torch.cuda.is_bf16_supported(), cuda=torch.version.cuda)
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepare", action="store_true", help="save the data, then stop")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check it runs")
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    parser.add_argument("--budget-seconds", type=float, default=480,
                        help="skip the sections left once this much time has passed")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.data)
        return 0
    out = args.out or RESULTS / ("gpu.json" if args.device == "cuda" else "gpu-cpu-dryrun.json")
    if args.device == "cpu":
        # A dry run on a small shared CPU: two threads spinning against other work made a
        # digits MLP step 70 ms instead of 1 ms. One thread gives figures that mean something.
        torch.set_num_threads(1)
    result = {"environment": environment(args.device), "quick": args.quick, "sections": {}}
    data = load(args.data)
    start = time.perf_counter()
    sections = [
        ("gpu_capacity", lambda: section_gpu_capacity(args.device)),
        ("memory_estimates", lambda: section_memory_estimates(data, args.device, args.quick)),
        ("fast_path", lambda: section_fast_path(data, args.device, args.quick)),
        ("jobs_per_hour", lambda: section_jobs_per_hour(args.device, args.quick, args.data)),
        ("service", lambda: section_service(data, args.device, args.quick)),
        ("time_to_98", lambda: section_time_to_98(data, args.device, args.quick)),
        ("cifar_shaped", lambda: section_cifar_shaped(args.device, args.quick)),
        ("mps", lambda: section_mps(args.device, args.quick, args.data)),
    ]
    for name, run in sections:
        if time.perf_counter() - start > args.budget_seconds:
            result["sections"][name] = {"measured": False, "why": "out of time budget"}
            continue
        t = time.perf_counter()
        try:
            result["sections"][name] = run()
        except Exception as exc:  # noqa: BLE001 - one failed section must not lose the others
            result["sections"][name] = {"measured": False, "error": repr(exc)[:2000]}
            print(f"{name} failed: {exc!r}", flush=True)
        result["sections"][name]["section_seconds"] = round(time.perf_counter() - t, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
