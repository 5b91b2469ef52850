"""DELETE /jobs/{id} and POST /jobs/delete on SQLite and Postgres: a deleted job leaves no
row behind in any table with a job_id (read from the live schema, so tables added later are
covered), compare of the remaining runs is unchanged, running jobs, forks' parents and
running sweeps' trials are refused, another user's job is a 404, a dry run counts what the
real delete deletes, and SQLite gives the space back."""

from __future__ import annotations

import pytest

from db.store.lifecycle import DeleteRefused
from tests.integration.lifecycle_runs import age, finished_run, rows_by_table

pytestmark = pytest.mark.postgres


def _compare(client, ids):
    joined = ",".join(str(i) for i in ids)
    series = client.get(f"/compare/series?ids={joined}&names=train_loss,val_loss,val_accuracy"
                        "&max_points=50")
    summary = client.get(f"/compare?ids={joined}")
    assert series.status_code == 200 and summary.status_code == 200, series.text
    return series.json(), summary.json()


def test_a_deleted_job_leaves_no_row_and_compare_of_the_others_is_unchanged(client, store):
    keep_a = finished_run(store, lr=0.1)
    gone = finished_run(store, lr=0.2, status="failed")
    keep_c = finished_run(store, lr=0.3, status="cancelled")
    before_gone = rows_by_table(store, gone.id)
    # The fixture really wrote into every table a run writes (the test is not vacuous).
    for name in ("jobs", "metrics", "metric_rollups", "metric_rollups_coarse",
                 "series_summaries", "job_texts", "checkpoints", "confusion_matrices",
                 "job_attempts", "job_logs"):
        assert before_gone[name] > 0, name
    before = _compare(client, [keep_a.id, keep_c.id])
    kept_rows = {j: rows_by_table(store, j) for j in (keep_a.id, keep_c.id)}

    answer = client.delete(f"/jobs/{gone.id}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == gone.id and answer.json()["deleted"] is True

    after_gone = rows_by_table(store, gone.id)
    assert set(after_gone) == set(before_gone)
    assert all(n == 0 for n in after_gone.values()), after_gone
    assert client.get(f"/jobs/{gone.id}").status_code == 404
    assert client.delete(f"/jobs/{gone.id}").status_code == 404
    assert _compare(client, [keep_a.id, keep_c.id]) == before
    assert {j: rows_by_table(store, j) for j in (keep_a.id, keep_c.id)} == kept_rows
    assert client.get(f"/compare/series?ids={gone.id},{keep_a.id}").status_code == 404


def test_running_and_queued_jobs_are_refused_until_cancelled(client, store):
    running = store.create_job("mlp", "mnist", {"lr": 0.1}, "cpu")
    store.claim_job(running.id, "w")
    queued = store.create_job("mlp", "mnist", {"lr": 0.1}, "cpu")
    for job, status in ((running, "running"), (queued, "queued")):
        answer = client.delete(f"/jobs/{job.id}")
        assert answer.status_code == 409
        assert status in answer.json()["detail"] and "cancel it first" in answer.json()["detail"]
    assert store.get_job(running.id).status == "running"
    assert client.post(f"/jobs/{running.id}/cancel").status_code == 200
    assert client.delete(f"/jobs/{running.id}").status_code == 200
    assert store.get_job(running.id) is None


def test_another_users_job_is_a_404_and_an_owner_deletes_their_own(keyed_client, store,
                                                                    user_keys):
    alices = finished_run(store, owner="alice")
    bobs = finished_run(store, owner="bob")
    answer = keyed_client.delete(f"/jobs/{alices.id}", headers=user_keys["bob"])
    assert answer.status_code == 404
    assert store.get_job(alices.id) is not None
    assert keyed_client.delete(f"/jobs/{alices.id}").status_code == 401
    assert keyed_client.delete(f"/jobs/{alices.id}",
                               headers=user_keys["alice"]).status_code == 200
    # A bulk delete by bob matches only bob's jobs.
    both = keyed_client.post("/jobs/delete", json={"status": ["succeeded"], "dry_run": True},
                             headers=user_keys["bob"])
    assert both.status_code == 200 and both.json()["ids"] == [bobs.id]
    other = keyed_client.post("/jobs/delete", json={"status": ["succeeded"], "owner": "alice"},
                              headers=user_keys["bob"])
    assert other.status_code == 403


def test_parents_of_forks_and_trials_of_running_sweeps_are_refused(client, store):
    parent = finished_run(store)
    fork = finished_run(store, parent_job_id=parent.id, parent_step=100, parent_epoch=1)
    answer = client.delete(f"/jobs/{parent.id}")
    assert answer.status_code == 409 and f"fork(s) {fork.id}" in answer.json()["detail"]
    sweep = store.create_sweep(
        name="s", model="mlp", dataset="mnist", hyperparameters={}, space={"lr": [0.1]},
        method="grid", objective_metric="val_loss", objective_goal="min", max_trials=2,
        max_concurrent=1, early_stopping={}, seed=0, device="cpu", priority=0)
    trial = finished_run(store, sweep_id=sweep.id, trial=0)
    answer = client.delete(f"/jobs/{trial.id}")
    assert answer.status_code == 409 and f"sweep {sweep.id}" in answer.json()["detail"]
    # The bulk delete skips the trial, but takes the fork and then its parent (newest first).
    bulk = client.post("/jobs/delete", json={"status": ["succeeded"]}).json()
    assert bulk["matched"] == 3 and bulk["deleted"] == 2
    assert bulk["ids"] == [fork.id, parent.id]
    assert [s["id"] for s in bulk["skipped"]] == [trial.id]
    assert "still running" in bulk["skipped"][0]["reason"]
    store.finish_sweep(sweep.id, "succeeded")
    assert client.delete(f"/jobs/{trial.id}").status_code == 200
    assert store.get_sweep(sweep.id) is not None  # the sweep stays, with fewer trials


def test_bulk_delete_by_filter_dry_run_counts_what_is_deleted(client, store):
    old_failed = [finished_run(store, status="failed", steps=50) for _ in range(3)]
    new_failed = finished_run(store, status="failed", steps=50)
    old_cnn = finished_run(store, status="failed", steps=50, model="cnn")
    kept = finished_run(store, status="succeeded", steps=50)
    for job in (*old_failed, old_cnn, kept):
        age(store, job.id, 40)
    running = store.create_job("mlp", "mnist", {"lr": 0.1}, "cpu")
    store.claim_job(running.id, "w")
    body = {"status": ["failed"], "older_than_days": 30, "model": "mlp"}
    dry = client.post("/jobs/delete", json={**body, "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True and dry.json()["deleted"] == 3
    assert all(store.get_job(j.id) is not None for j in old_failed)
    real = client.post("/jobs/delete", json=body).json()
    assert (real["matched"], real["deleted"], real["skipped"]) == (3, 3, [])
    assert sorted(real["ids"]) == sorted(dry.json()["ids"]) == sorted(j.id for j in old_failed)
    for job in (new_failed, old_cnn, kept, running):
        assert store.get_job(job.id) is not None
    for job in old_failed:
        assert all(n == 0 for n in rows_by_table(store, job.id).values())


@pytest.mark.parametrize("body, field", [
    ({"status": ["running"]}, "status"),
    ({"status": []}, "status"),
    ({"older_than_days": -1}, "older_than_days"),
    ({"sweep_id": 0}, "sweep_id"),
    ({"dry_run": True}, "status"),
    ({"status": ["failed"], "colour": "red"}, "colour"),
])
def test_bad_filters_are_a_422_naming_the_field(client, store, body, field):
    answer = client.post("/jobs/delete", json=body)
    assert answer.status_code == 422, answer.text
    assert field in str(answer.json()["detail"])


def test_bulk_batches_are_bounded_and_each_job_goes_whole(store):
    jobs = [finished_run(store, status="failed", steps=100) for _ in range(5)]
    report = store.delete_jobs([j.id for j in jobs], batch_jobs=2, batch_points=250)
    assert report.deleted == 5 and report.skipped == []
    for job in jobs:
        assert all(n == 0 for n in rows_by_table(store, job.id).values())
    batches = list(store._batches([5, 4, 3, 2, 1], {5: 300, 4: 100, 3: 100, 2: 100}, 2, 250))
    assert batches == [[5], [4, 3], [2, 1]]  # a big job alone, then at most 2 or 250 points


def test_store_refusal_names_the_reason(store):
    job = store.create_job("mlp", "mnist", {"lr": 0.1}, "cpu")
    with pytest.raises(DeleteRefused, match="queued"):
        store.delete_job(job.id)


def test_sqlite_gives_the_space_back(store):
    if store.dialect != "sqlite":
        pytest.skip("Postgres: autovacuum makes the space reusable (README)")
    assert store.sqlite_space()["auto_vacuum"] == 2  # INCREMENTAL from the first connection
    job = finished_run(store, steps=20_000, checkpoint_bytes=4 * 2**20)
    full = store.sqlite_space()
    store.delete_job(job.id)
    empty = store.sqlite_space()
    assert empty["freelist_count"] < 10
    freed = (full["page_count"] - empty["page_count"]) * full["page_size"]
    assert freed > 4 * 2**20, (full, empty)


def test_an_old_sqlite_file_is_converted_to_incremental_vacuum(tmp_path):
    import sqlite3

    from db.store import Store

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE leftover (a)")  # tables exist: the pragma alone does nothing
    conn.commit()
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()
    with Store(f"sqlite:///{path}") as store:
        store.migrate()
        assert store.sqlite_space()["auto_vacuum"] == 2


def test_a_deleted_jobs_id_is_never_given_again(client, store):
    older = finished_run(store, steps=10)
    newest = finished_run(store, steps=10)
    assert client.delete(f"/jobs/{newest.id}").status_code == 200
    after = store.create_job("mlp", "mnist", {"lr": 0.1}, "cpu")
    assert after.id > newest.id > older.id  # SQLite too: AUTOINCREMENT (migration 0016)
