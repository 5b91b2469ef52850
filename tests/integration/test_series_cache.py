"""GET /compare/series keeps the curves of runs that finished over a lease ago (they no longer
change) and re-reads only live ones, within a memory bound (api/services/series_cache.py)."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient
from sqlalchemy import text, update

from api.main import create_app
from api.services.series_cache import FinishedSeriesCache, series_bytes
from core.settings import Settings
from db.tables import Job, utcnow


def _run(store, steps: int, finish: bool) -> int:
    job = store.create_job("mlp", "digits", {"epochs": 1, "lr": 0.01 * (steps % 7 + 1)})
    store.claim_job(job.id, "w")
    store.add_metrics(job.id, [("train_loss", s, 1, 1.0 / s, 0.0) for s in range(1, steps + 1)])
    if finish:
        store.finish_job(job.id, "succeeded")
    return job.id


def _curves(client, ids) -> dict:
    answer = client.get("/compare/series", params={
        "ids": ",".join(map(str, ids)), "names": "train_loss", "max_points": 20})
    assert answer.status_code == 200, answer.text
    return {int(i): s["train_loss"]["value"] for i, s in answer.json()["series"].items()}


def test_finished_runs_are_read_once_and_live_runs_every_time(store, tmp_path):
    settings = Settings(home=tmp_path / "home", broker_url=None, database_url=None,
                        data_dir=tmp_path / "data", reconcile_in_api=False, lease_seconds=5)
    done, live = _run(store, 300, finish=True), _run(store, 100, finish=False)
    with store.engine.begin() as conn:  # `done` finished over a lease ago
        conn.execute(update(Job).where(Job.id == done)
                     .values(finished_at=utcnow() - dt.timedelta(hours=1)))
    just_done = _run(store, 50, finish=True)  # finished, but within the lease
    app = create_app(settings, store=store)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        first = _curves(client, [done, live, just_done])
        # Behind the cache's back, the finished runs' points vanish.
        with store.engine.begin() as conn:
            for table in ("metrics", "metric_rollups", "metric_rollups_coarse"):
                conn.execute(text(f"DELETE FROM {table} WHERE job_id IN (:a, :b)"),
                             {"a": done, "b": just_done})
        store.add_metrics(live, [("train_loss", 101, 1, 5.0, 0.0)])
        second = _curves(client, [done, live, just_done])
        cache = app.state.series_cache
    assert second[done] == first[done], "a settled run's curve comes from the cache"
    assert second[live] != first[live] and second[live][-1] == 5.0, "a live run is re-read"
    assert just_done in first and just_done not in second, "not cached within a lease"
    assert cache.hits == 1 and cache.misses == 5


def read_through(cache, read, job_ids, finished, names, max_points):
    """What GET /compare/series does with the cache (api/services/settled_series.py), the
    stored summaries left out: the cached curves, `read` for the rest, the finished ones kept."""
    result, to_read = cache.take(job_ids, finished, names, max_points)
    if to_read:
        fresh = read(to_read, names, max_points)
        result.update(fresh)
        cache.put([i for i in to_read if i in finished], names, max_points, fresh)
    return result


def test_the_cache_keeps_the_most_recently_used_curves_within_its_bound():
    series = {"step": list(range(50)), "epoch": [1] * 50, "value": [0.5] * 50,
              "epochs": {"epoch": [1], "mean": [0.5]}}
    size = series_bytes(series)
    cache = FinishedSeriesCache(max_bytes=3 * size)
    reads = []

    def read(ids, names, max_points):
        reads.append(list(ids))
        return {i: {name: series for name in names} for i in ids}

    for job_id in (1, 2, 3):
        read_through(cache, read, [job_id], {1, 2, 3, 4}, ["loss"], 50)
    read_through(cache, read, [1], {1, 2, 3, 4}, ["loss"], 50)  # 1 is now the most recent
    read_through(cache, read, [4], {1, 2, 3, 4}, ["loss"], 50)  # evicts 2, the least recent
    assert cache.bytes <= 3 * size
    reads.clear()
    assert read_through(cache, read, [1, 2, 3, 4, 5], {1, 2, 3, 4}, ["loss"], 50).keys() == {
        1, 2, 3, 4, 5}
    assert reads == [[2, 5]], "2 was evicted; 5 is not finished, so never cached"
    assert read_through(FinishedSeriesCache(0), read, [1], {1}, ["loss"], 50) and not \
        FinishedSeriesCache(0).bytes
