"""Where GET /compare/series finds each curve, cheapest first.

A run that finished more than a lease ago ("settled") has curves that no longer change. For
those, in order:

1. this API process's LRU (api/services/series_cache.py): no database at all, what the compare
   page's polls find;
2. the stored summaries (`series_summaries`, db/store/summaries.py): one batched read of
   indexed rows and one `json.loads` each, what a page opened on a freshly started API (or on
   another API process) finds;
3. the store's bulk_series, downsampling the rollups in SQL: what is left, and every curve of
   a live run.

What step 3 computes for settled runs is then stored as summaries after the answer has gone
(`write_behind`), so the next read of those curves, from any process, is step 2. The answer
is the same whichever step found a curve: the summaries hold bulk_series' own dicts as exact
JSON, and the curves are put in bulk_series' order (runs by id, names as asked).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

from starlette.background import BackgroundTask

from api.services.series_cache import FinishedSeriesCache, JobSeries
from db.store import JobRecord, Store
from db.tables import utcnow

log = logging.getLogger("trainyard.api.series")

Pair = tuple[int, str]


def settled_ids(jobs: Iterable[JobRecord], lease_seconds: float) -> set[int]:
    """The ids of the runs that finished more than a lease ago: their curves no longer
    change (a worker that still held one has dropped its writes at its next heartbeat)."""
    before = utcnow() - dt.timedelta(seconds=lease_seconds)
    return {job.id for job in jobs
            if job.finished and job.finished_at is not None and job.finished_at < before}


def settled_series(
    store: Store,
    cache: FinishedSeriesCache,
    job_ids: list[int],
    settled: set[int],
    names: list[str],
    max_points: int,
    summaries: bool = True,
) -> tuple[dict[int, JobSeries], dict[Pair, dict[str, Any] | None]]:
    """Every curve of `job_ids` x `names` at `max_points`, as `{job_id: {name: series}}` in
    bulk_series' order, and the settled runs' curves that had to be computed, `{(job_id,
    name): series or None}`, for `write_behind`. `summaries`: read the stored summaries
    (else only the LRU and bulk_series, as before them)."""
    found, to_read = cache.take(job_ids, settled, names, max_points)
    curves: dict[Pair, dict[str, Any] | None] = {
        (job_id, name): series for job_id, by_name in found.items()
        for name, series in by_name.items()}
    missing = [job_id for job_id in to_read if job_id in settled]
    if summaries and missing:
        curves.update(store.series_summaries(missing, names, max_points))
    pairs = [(job_id, name) for job_id in to_read for name in names
             if (job_id, name) not in curves]
    computed: dict[Pair, dict[str, Any] | None] = {}
    if pairs:
        fresh = store.bulk_series_pairs(pairs, max_points)
        computed = {pair: fresh.get(pair[0], {}).get(pair[1]) for pair in pairs}
        curves.update(computed)
    if missing:
        cache.put(missing, names, max_points, _by_job(curves, missing))
    result: dict[int, JobSeries] = {}
    for job_id in sorted(set(job_ids)):
        by_name = {name: curves[job_id, name] for name in names
                   if curves.get((job_id, name)) is not None}
        if by_name:
            result[job_id] = by_name
    to_store = {pair: series for pair, series in computed.items() if pair[0] in settled}
    return result, to_store if summaries else {}


def _by_job(curves: dict[Pair, dict[str, Any] | None], only: list[int]
            ) -> dict[int, JobSeries]:
    """`{job_id: {name: series}}` of the curves that exist, of the jobs `only`."""
    wanted = set(only)
    out: dict[int, JobSeries] = {}
    for (job_id, name), series in curves.items():
        if series is not None and job_id in wanted:
            out.setdefault(job_id, {})[name] = series
    return out


def write_behind(store: Store, max_points: int,
                 to_store: dict[Pair, dict[str, Any] | None]) -> BackgroundTask | None:
    """A task that stores `to_store` as summaries once the answer is sent (None: nothing to
    store). A failure is logged, never raised: the summaries only spare later reads."""
    if not to_store:
        return None
    return BackgroundTask(_store_summaries, store, max_points, to_store)


def _store_summaries(store: Store, max_points: int,
                     to_store: dict[Pair, dict[str, Any] | None]) -> None:
    try:
        store.put_series_summaries(max_points, to_store)
    except Exception:  # noqa: BLE001 - the answer has gone; the next read computes them again
        log.warning("could not store %s series summaries", len(to_store), exc_info=True)
