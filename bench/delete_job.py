"""How long DELETE /jobs/{id} holds its one transaction for a big run: a finished job with
POINTS metric points (3 names, with their rollups), deleted by Store.delete_job.

    .venv/bin/python bench/delete_job.py postgresql+psycopg://postgres@127.0.0.1:5432/test 1000000
    .venv/bin/python bench/delete_job.py sqlite:////tmp/trainyard-bench/t.db 1000000

Prints the seconds to write, to answer GET /usage (store.usage()) and to delete, and the SQLite
file space given back; writes them to bench/results/delete_job-<dialect>.json.
"""

from __future__ import annotations

import sys
import time

from common import run_header, write_results  # noqa: I001 - bench/common.py sets sys.path

from db.store import Store

CHUNK = 30_000


def main(url: str, points: int) -> None:
    result = run_header("delete_job", {"points": points})
    store = Store(url)
    store.migrate()
    job = store.create_job("mlp", "mnist", {"lr": 0.1}, "cpu", owner="bench")
    store.claim_job(job.id, "bench")
    steps = points // 3
    started = time.perf_counter()
    for first in range(0, steps, CHUNK // 3):
        store.add_metrics(job.id, [(name, step, 1, 1.0 / (step + 1), None)
                                   for name in ("train_loss", "val_loss", "val_accuracy")
                                   for step in range(first, min(steps, first + CHUNK // 3))])
    wrote = time.perf_counter() - started
    store.add_checkpoint(job.id, 1, steps, b"c" * 2**20)
    store.finish_job(job.id, "succeeded")
    counted = store.metric_points_of([job.id])[job.id]
    timed = time.perf_counter()
    store.usage()
    usage = time.perf_counter() - timed
    space = store.sqlite_space()
    report = store.delete_job(job.id)
    freed_mib = None
    if space:
        after = store.sqlite_space()
        freed_mib = (space["page_count"] - after["page_count"]) * space["page_size"] / 2**20
    figures = {"dialect": store.dialect, "points": counted, "write_s": round(wrote, 1),
               "usage_s": round(usage, 3), "delete_s": round(report.seconds, 2),
               "sqlite_freed_mib": None if freed_mib is None else round(freed_mib)}
    print(" ".join(f"{key}={value}" for key, value in figures.items()))
    result["figures"] = figures
    write_results(f"delete_job-{store.dialect}", result)
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000)
