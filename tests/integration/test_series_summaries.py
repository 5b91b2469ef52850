"""Series summaries: the curves of runs that finished over a lease ago, stored once computed
(db/store/summaries.py) by GET /compare/series and by the reconciler's pass, and read back
instead of the rollups, with the very same answer. On SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import math

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text, update

from api.main import create_app
from core.metrics import COMPARE_NAMES, SUMMARY_LEVELS
from core.settings import Settings
from db.tables import Job, SeriesSummary, utcnow
from worker.reconciler import reconcile_once

NAMES = ["train_loss", "val_loss", "val_accuracy", "val_perplexity", "lr"]


def _run(store, steps: int, per_epoch: int, finish: str | None = "succeeded",
         settled: bool = True) -> int:
    """A run of `steps` steps (epochs of `per_epoch`): train_loss and lr at every step (a
    NaN now and then), val_loss and val_accuracy at each epoch's end; finished over an hour
    ago when `settled`."""
    job = store.create_job("mlp", "digits", {"epochs": 1, "lr": 0.001 * (steps % 7 + 1)})
    store.claim_job(job.id, "w")
    points = []
    for step in range(1, steps + 1):
        epoch = (step - 1) // per_epoch + 1
        loss = math.nan if step % 997 == 0 else 2.0 * math.exp(-step / 900) + (step % 13) / 97
        points += [("train_loss", step, epoch, loss, 0.0), ("lr", step, epoch, 0.1 / step, 0.0)]
        if step % per_epoch == 0 or step == steps:
            points += [("val_loss", step, epoch, 1.0 / epoch + step / 1e5, 0.0),
                       ("val_accuracy", step, epoch, 1 - 0.5 / epoch, 0.0)]
    for start in range(0, len(points), 5000):
        store.add_metrics(job.id, points[start:start + 5000])
    if finish:
        store.finish_job(job.id, finish)
        if settled:
            with store.engine.begin() as conn:
                conn.execute(update(Job).where(Job.id == job.id)
                             .values(finished_at=utcnow() - dt.timedelta(hours=1)))
    return job.id


def _runs(store) -> list[int]:
    """Curves bulk_series reads each way: from points (30 steps), from 16-step rollups (2,000
    steps: 125 blocks, over the 49 or 99 buckets of 50 or 100 points) and, at 50 points, from
    128-step rollups (7,000 steps: 55 coarse blocks); and a run of one point."""
    return [_run(store, 30, 10), _run(store, 2_000, 400), _run(store, 7_000, 700, "cancelled"),
            _run(store, 1, 1, "failed")]


def _summary_rows(store, job_ids=None) -> list[tuple]:
    stmt = select(SeriesSummary.job_id, SeriesSummary.name, SeriesSummary.max_points)
    if job_ids is not None:
        stmt = stmt.where(SeriesSummary.job_id.in_(job_ids))
    with store.engine.connect() as conn:
        return sorted(tuple(row) for row in conn.execute(stmt))


def _exact(value) -> str:
    """A canonical text of a series (or of many): equal texts, the same numbers to the bit
    and the same key order."""
    return json.dumps(value, sort_keys=False)


def test_the_background_pass_stores_exactly_what_bulk_series_computes(store):
    ids = _runs(store)
    done = store.summarise_settled_runs(30, SUMMARY_LEVELS, names=COMPARE_NAMES, limit=100)
    assert done == ids
    assert store.summarise_settled_runs(30, SUMMARY_LEVELS, names=COMPARE_NAMES) == [], \
        "each run is summarised once"
    for level in SUMMARY_LEVELS:
        computed = store.bulk_series(ids, NAMES, level)
        stored = store.series_summaries(ids, NAMES, level)
        assert set(stored) == {(i, n) for i in ids for n in NAMES}, "every asked name is known"
        for job_id in ids:
            for name in NAMES:
                assert _exact(stored[job_id, name]) == _exact(
                    computed.get(job_id, {}).get(name)), (job_id, name, level)
    assert store.series_summaries(ids, ["val_perplexity"], 50) == {
        (i, "val_perplexity"): None for i in ids}, "a missing metric is stored as missing"


def test_runs_live_or_finished_within_a_lease_are_never_summarised(store):
    running = _run(store, 500, 100, finish=None)
    just_done = _run(store, 500, 100, settled=False)  # finished now: within the lease
    settled = _run(store, 500, 100)
    assert store.summarise_settled_runs(30, SUMMARY_LEVELS, names=COMPARE_NAMES) == [settled]
    assert store.summarise_settled_runs(30, SUMMARY_LEVELS, names=COMPARE_NAMES) == []
    assert {row[0] for row in _summary_rows(store)} == {settled}
    with store.engine.connect() as conn:
        marked = dict(conn.execute(select(Job.id, Job.summarised_at)).all())
    assert marked[running] is None and marked[just_done] is None
    assert marked[settled] is not None


def test_deleting_a_job_deletes_its_summaries(store):
    keep, gone = _run(store, 300, 100), _run(store, 300, 100)
    store.summarise_settled_runs(30, SUMMARY_LEVELS, names=COMPARE_NAMES)
    assert {row[0] for row in _summary_rows(store)} == {keep, gone}
    with store.engine.begin() as conn:
        conn.execute(Job.__table__.delete().where(Job.id == gone))
    assert {row[0] for row in _summary_rows(store)} == {keep}


def test_summaries_are_written_once_and_racing_writers_store_one_row(store):
    job_id = _run(store, 300, 100)
    series = store.bulk_series([job_id], ["train_loss"], 50)[job_id]["train_loss"]
    store.put_series_summaries(50, {(job_id, "train_loss"): series, (job_id, "nope"): None})
    store.put_series_summaries(50, {(job_id, "train_loss"): {"other": 1}})  # conflict: kept
    assert store.series_summaries([job_id], ["train_loss", "nope", "lr"], 50) == {
        (job_id, "train_loss"): series, (job_id, "nope"): None}
    with store.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(SeriesSummary)) == 2


def test_the_reconciler_summarises_settled_runs_and_only_them(store, tmp_path):
    settings = Settings(home=tmp_path / "home", broker_url=None, database_url=None,
                        data_dir=tmp_path / "data")
    settled, live = _run(store, 300, 100), _run(store, 300, 100, finish=None)
    # Within a lease of a database outage (recover_lost false) nothing is summarised yet.
    assert reconcile_once(store, lambda *a: None, settings, recover_lost=False).summarised == []
    off = settings.model_copy(update={"compare_summaries": False})
    assert reconcile_once(store, lambda *a: None, off).summarised == []
    report = reconcile_once(store, lambda *a: None, settings)
    assert report.summarised == [settled] and report.requeued == []
    assert {row[0] for row in _summary_rows(store)} == {settled} and live != settled
    assert {row[2] for row in _summary_rows(store)} == set(SUMMARY_LEVELS)
    assert reconcile_once(store, lambda *a: None, settings).summarised == []


# ---- GET /compare/series ---------------------------------------------------------------------


def _settings(tmp_path, **changes) -> Settings:
    return Settings(home=tmp_path / "home", broker_url=None, database_url=None,
                    data_dir=tmp_path / "data", reconcile_in_api=False, **changes)


def _get(app, ids, max_points: int) -> bytes:
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        answer = client.get("/compare/series", params={
            "ids": ",".join(map(str, ids)), "names": ",".join(NAMES), "max_points": max_points})
    assert answer.status_code == 200, answer.text
    return answer.content


def test_the_answer_is_the_same_with_and_without_summaries(store, tmp_path):
    settled = _runs(store)
    live = _run(store, 1_500, 300, finish=None)
    just_done = _run(store, 800, 200, settled=False)
    ids = [live, *reversed(settled), just_done]  # any order: the answer's is bulk_series'
    answers = {}
    for max_points in (50, 77):
        without = create_app(_settings(tmp_path, compare_summaries=False,
                                       compare_cache_bytes=0), store=store)
        computed = _get(without, ids, max_points)
        assert not [r for r in _summary_rows(store) if r[2] == max_points], "none stored"
        first = _get(create_app(_settings(tmp_path), store=store), ids, max_points)
        # The read path stored the settled runs' curves (every name asked, those missing as
        # missing) once it had answered, and nothing of the live or just finished runs.
        assert {(j, n) for j, n, mp in _summary_rows(store) if mp == max_points} == {
            (j, n) for j in settled for n in NAMES}
        stored = store.series_summaries(settled, NAMES, max_points)
        recomputed = store.bulk_series(settled, NAMES, max_points)
        for (job_id, name), series in stored.items():
            assert _exact(series) == _exact(recomputed.get(job_id, {}).get(name))
        # A fresh API process (its LRU empty) reads them back, then keeps them: same bytes.
        fresh = create_app(_settings(tmp_path), store=store)
        assert _get(fresh, ids, max_points) == first == computed
        assert fresh.state.series_cache.hits == 0
        assert _get(fresh, ids, max_points) == computed
        assert fresh.state.series_cache.hits == len(settled)
        answers[max_points] = computed
    # The settled runs' points vanish behind the service's back: an API process that reads
    # the summaries still draws the same curves; one that does not, none of theirs.
    with store.engine.begin() as conn:
        for table in ("metrics", "metric_rollups", "metric_rollups_coarse"):
            conn.execute(text(f"DELETE FROM {table} WHERE job_id IN "
                              f"({','.join(map(str, settled))})"))
    before = json.loads(answers[50])["series"]
    reader = create_app(_settings(tmp_path, compare_cache_bytes=0), store=store)
    assert _exact(json.loads(_get(reader, ids, 50))["series"]) == _exact(before)
    without = create_app(_settings(tmp_path, compare_summaries=False), store=store)
    assert json.loads(_get(without, ids, 50))["series"].keys() == {str(live), str(just_done)}
