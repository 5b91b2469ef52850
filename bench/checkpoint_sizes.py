"""Checkpoints of every size the limits allow, on SQLite and PostgreSQL: stored, read back whole
(as a resuming worker reads them) and streamed (as a download is), with time and memory.

A model at TRAINYARD_MAX_MODEL_PARAMETERS (100M) trained with Adam checkpoints 1.2 GB; one
database value holds at most 1 GB. Before migration 0019 a checkpoint was one value; since, the
first 16 MiB sit in the checkpoint's row and the rest in checkpoint_chunks. For each size the
bench also tries the old way, the whole file as one value in a scratch table, and reports what
the database said.

Each (backend, size) runs in a fresh process, so its peak memory (ru_maxrss) is its own: reported
beyond the checkpoint's own bytes, which the process holds throughout (as fit() does).

    .venv/bin/python bench/checkpoint_sizes.py    # ~3 min; bench/results/checkpoint_sizes.json
    .venv/bin/python bench/checkpoint_sizes.py --job    # + a real job whose checkpoint is 1.16 GB

`--job` also runs one real job through the worker's JobRunner on PostgreSQL (writer process,
checkpoint and all): a word-level 4-layer LSTM language model on fortunes (~97M parameters) for
one step, whose checkpoint is about 1.16 GB (~1.5 min, ~3 GB of memory).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Postgres, run_header, write_results

MIB = 2**20
SIZES = (64 * MIB, 1_200_000_000)  # a 5M-parameter Adam run; the largest the limits allow


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _as_one_value(store, blob: bytes) -> str:
    """The old way: the whole file as one value. 'ok', or the database's error."""
    from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table

    table = Table("bench_one_value", MetaData(), Column("id", Integer, primary_key=True),
                  Column("data", LargeBinary))
    table.create(store.engine, checkfirst=True)
    try:
        with store.engine.begin() as conn:
            conn.execute(table.insert(), {"id": 1, "data": blob})
        return "ok"
    except Exception as exc:  # noqa: BLE001 - what the database said is the figure
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    finally:
        table.drop(store.engine, checkfirst=True)


def _case(url: str, size: int, out) -> None:
    from db.store import Store

    blob = bytes(size) if size > 256 * MIB else bytes(range(256)) * (size // 256)
    blob = blob[:size]
    digest = hashlib.sha256(blob).hexdigest()
    store = Store(url)
    store.migrate()
    job = store.create_job("mlp", "digits", {"epochs": 1})
    base = _peak_mib()
    t = time.perf_counter()
    record = store.add_checkpoint(job.id, 1, 1, blob, {})
    write_s = time.perf_counter() - t
    after_write = _peak_mib()
    t = time.perf_counter()
    _, back = store.get_checkpoint_data(job.id, record.id)
    read_s = time.perf_counter() - t
    whole_ok = len(back) == size and hashlib.sha256(back).hexdigest() == digest
    del back
    after_read = _peak_mib()
    t = time.perf_counter()
    streamed, h = 0, hashlib.sha256()
    _, pieces = store.iter_checkpoint_data(job.id, record.id)
    for piece in pieces:
        streamed += len(piece)
        h.update(piece)
    stream_s = time.perf_counter() - t
    stream_ok = streamed == size and h.hexdigest() == digest
    one_value = _as_one_value(store, blob)
    store.close()
    out.put({
        "size_bytes": size, "stored": record.size == size and record.sha256 == digest,
        "read_back_whole": whole_ok, "streamed_whole": stream_ok,
        "write_s": round(write_s, 2), "read_s": round(read_s, 2), "stream_s": round(stream_s, 2),
        "write_mb_per_s": round(size / 1e6 / write_s, 1),
        "read_mb_per_s": round(size / 1e6 / read_s, 1),
        "extra_peak_mib_writing": round(after_write - base, 1),
        "extra_peak_mib_reading_whole": round(after_read - after_write, 1),
        "as_one_value_before_0019": one_value,
    })


# ~97M parameters: embedding and decoder over fortunes' ~30,000 words, four 1024-unit LSTM layers
BIG_JOB = {"epochs": 1, "steps_per_epoch": 1, "batch_size": 8, "seq_len": 32,
           "tokenizer": "word", "max_vocab": 50_000, "embedding_dim": 1024, "hidden_size": 1024,
           "cell": "lstm", "num_layers": 4}


def big_job(url: str) -> dict:
    """The real job (see the module), its outcome and its checkpoints' sizes."""
    from core.settings import Settings
    from db.store import Store
    from worker.runner import JobRunner

    store = Store(url)
    store.migrate()
    with tempfile.TemporaryDirectory(prefix="trainyard-bench-ckpt-home-") as home:
        job = store.create_job("rnn_lm", "fortunes", BIG_JOB, device="cpu")
        t = time.perf_counter()
        outcome = JobRunner(store, Settings(home=home), "bench").run(job.id)
        seconds = time.perf_counter() - t
        done = store.get_job(job.id)
        sizes = [c.size for c in store.list_checkpoints(job.id)]
    store.close()
    return {"hyperparameters": BIG_JOB, "outcome": outcome, "status": done.status,
            "error": done.error, "seconds": round(seconds, 1), "checkpoint_bytes": sizes,
            "peak_rss_mib": round(_peak_mib())}


def run(url: str, size: int) -> dict:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_case, args=(url, size, out))
    proc.start()
    result = out.get(timeout=1800)
    proc.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="checkpoint_sizes")
    ap.add_argument("--job", action="store_true", help="also run the real job (see the module)")
    args = ap.parse_args()
    result = run_header("checkpoint_sizes", {"sizes": list(SIZES), "job": args.job})
    cases = []
    postgres = Postgres()
    try:
        with tempfile.TemporaryDirectory(prefix="trainyard-bench-ckpt-") as tmp:
            for size in SIZES:
                for backend in ("sqlite", "postgresql"):
                    url = (f"sqlite:///{tmp}/{size}.db" if backend == "sqlite"
                           else postgres.create())
                    case = {"backend": backend, **run(url, size)}
                    print(case, flush=True)
                    cases.append(case)
                    if backend == "postgresql":
                        postgres.drop(url)
        if args.job:
            url = postgres.create()
            result["job"] = big_job(url)
            print(result["job"], flush=True)
            postgres.drop(url)
    finally:
        postgres.close()
    result["cases"] = cases
    print(f"wrote {write_results(args.out, result)}")


if __name__ == "__main__":
    main()
