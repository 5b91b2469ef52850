"""Sweeps through the API, with their trials run by the real JobRunner, on SQLite and Postgres:
a grid runs exactly its combinations, launches never exceed max_concurrent or max_trials
however many processes advance the sweep at once, pruned trials keep what they made, failed
trials are counted, a cancel stops them all, and every bad spec gets its 4xx."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.security import new_api_key
from core.settings import Settings
from db.store import Store
from sweeps import driver
from worker.runner import JobRunner

TINY = {"epochs": 3, "steps_per_epoch": 3, "batch_size": 32, "seed": 1}
GRID = {
    "model": "mlp", "dataset": "digits", "method": "grid", "hyperparameters": TINY,
    "space": {"hidden_sizes": {"values": [[8, 8], [16, 16]]},
              "activation": {"values": ["relu", "tanh"]}},
    "max_concurrent": 2,
}


def run_all(store: Store, settings: Settings) -> list:
    """Run queued jobs with one in-process worker until none is left (each ended trial lets
    its sweep launch the next)."""
    return JobRunner(store, settings, "w").run_next()


def trial_numbers(store: Store, sweep_id: int) -> list[int]:
    return sorted(t.number for t in store.sweep_trials(sweep_id, "val_accuracy"))


def test_a_grid_runs_each_combination_exactly_once(client, store, api_settings):
    created = client.post("/sweeps", json={**GRID, "name": "depth-and-activation"})
    assert created.status_code == 201, created.text
    sweep = created.json()
    assert sweep["max_trials"] == 4 and sweep["launched"] == 2
    assert sweep["counts"] == {"queued": 2}
    run_all(store, api_settings)

    done = client.get(f"/sweeps/{sweep['id']}").json()
    assert done["status"] == "succeeded" and done["counts"] == {"succeeded": 4}
    combos = sorted((str(t["params"]["hidden_sizes"]), t["params"]["activation"])
                    for t in done["trials"])
    assert combos == sorted((str(h), a) for h, a in itertools.product(
        [[8, 8], [16, 16]], ["relu", "tanh"]))
    assert [t["number"] for t in done["trials"]] == [0, 1, 2, 3]
    best = max(done["trials"], key=lambda t: t["objective"])
    assert done["best"]["job_id"] == best["job_id"]
    # Trials are ordinary jobs: listed with their sweep, named after it.
    job = client.get(f"/jobs/{best['job_id']}").json()
    assert job["sweep_id"] == sweep["id"] and job["trial"] == best["number"]
    assert job["name"] == f"depth-and-activation-t{best['number']}"
    assert job["hyperparameters"]["epochs"] == 3  # the fixed values are every trial's
    trials = client.get(f"/jobs?sweep_id={sweep['id']}&status=succeeded").json()
    assert trials["total"] == 4 and {j["trial"] for j in trials["items"]} == {0, 1, 2, 3}
    assert client.get("/jobs?sweep_id=999").json()["total"] == 0
    assert all(t["total_epochs"] == 3 and t["started_at"] for t in done["trials"])
    listed = client.get("/sweeps").json()
    assert listed["total"] == 1 and listed["items"][0]["trials"] == []
    assert listed["items"][0]["best"]["job_id"] == best["job_id"]


def test_racing_advances_never_exceed_max_concurrent_or_max_trials(client, store,
                                                                    api_settings):
    sweep = client.post("/sweeps", json={
        "model": "mlp", "dataset": "digits", "method": "random", "max_trials": 7,
        "max_concurrent": 3, "hyperparameters": TINY,
        "space": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}}}).json()
    sweep_id = sweep["id"]

    def race() -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: driver.advance(store, sweep_id, api_settings), range(8)))

    for _ in range(10):  # end the active trials one by one, eight advancers racing each time
        race()
        trials = store.sweep_trials(sweep_id, "val_accuracy")
        active = [t for t in trials if t.status in ("queued", "running")]
        assert len(active) <= 3
        assert [t.number for t in trials] == list(range(len(trials)))
        if not active:
            break
        job = store.claim_job(active[0].job_id, worker="w")
        assert job is not None
        store.finish_job(job.id, "failed" if active[0].number == 0 else "succeeded",
                         error="one failure" if active[0].number == 0 else None)
    race()
    assert trial_numbers(store, sweep_id) == list(range(7))
    done = client.get(f"/sweeps/{sweep_id}").json()
    # Trial 0 failed and the sweep went on; the others succeeded without a metric, so none
    # has an objective: the sweep says so.
    assert done["counts"] == {"failed": 1, "succeeded": 6}
    assert done["status"] == "failed"
    assert "none of the 7 trials reported val_accuracy" in done["error"]


def test_asha_prunes_and_a_pruned_trial_keeps_its_metrics_and_checkpoints(client, store,
                                                                          api_settings):
    sweep = client.post("/sweeps", json={
        **GRID, "max_concurrent": 1,
        "space": {"lr": {"values": [0.3, 0.1, 0.03, 0.01, 0.003, 0.001]}},
        "early_stopping": {"method": "asha", "min_epochs": 1, "reduction_factor": 2}}).json()
    run_all(store, api_settings)
    done = client.get(f"/sweeps/{sweep['id']}").json()
    assert done["status"] == "succeeded"
    pruned = [t for t in done["trials"] if t["status"] == "pruned"]
    assert pruned, done["counts"]
    for trial in pruned:
        assert trial["pruned_at_epoch"] in (1, 2) and trial["objective"] is None
        assert trial["last_objective"] is not None
        job = client.get(f"/jobs/{trial['job_id']}").json()
        assert job["status"] == "pruned" and job["attempt_history"][-1]["outcome"] == "pruned"
        metrics = client.get(f"/jobs/{trial['job_id']}/metrics").json()
        epochs = {p["epoch"] for p in metrics["series"]["val_accuracy"]}
        assert epochs == set(range(1, trial["pruned_at_epoch"] + 1))
        checkpoints = client.get(f"/jobs/{trial['job_id']}/checkpoints").json()
        assert checkpoints and checkpoints[-1]["epoch"] == trial["pruned_at_epoch"]
    # Pruned trials are a status of their own in the job lists.
    assert client.get("/jobs?status=pruned").json()["total"] == len(pruned)
    importance = client.get(f"/sweeps/{sweep['id']}/importance").json()
    completed = done["counts"]["succeeded"]
    assert importance["trials_used"] == completed
    if completed >= 2:
        assert set(importance["importances"]) == {"lr"}
        assert f"the {len(pruned)} pruned ones" in importance["note"]


def test_all_trials_failing_ends_the_sweep_failed_without_burning_its_budget(client, store,
                                                                             api_settings):
    sweep = client.post("/sweeps", json={
        "model": "mlp", "dataset": "digits", "method": "random", "max_trials": 50,
        "max_concurrent": 1, "hyperparameters": TINY,
        "space": {"lr": {"low": 1e-3, "high": 1e-1}}}).json()
    for _ in range(10):
        trials = store.sweep_trials(sweep["id"], "val_accuracy")
        active = [t for t in trials if t.status == "queued"]
        if not active:
            break
        store.claim_job(active[0].job_id, worker="w")
        store.finish_job(active[0].job_id, "failed", error="CUDA out of memory")
        driver.advance(store, sweep["id"], api_settings)
    done = client.get(f"/sweeps/{sweep['id']}").json()
    assert done["status"] == "failed" and done["launched"] == 3
    assert "the first 3 trials all failed" in done["error"] and "CUDA out of memory" in \
        done["error"]


def test_cancel_stops_queued_and_running_trials(client, store, api_settings):
    sweep = client.post("/sweeps", json={**GRID, "max_concurrent": 3}).json()
    first = store.sweep_trials(sweep["id"], "val_accuracy")[0]
    store.claim_job(first.job_id, worker="w")
    cancelled = client.post(f"/sweeps/{sweep['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["counts"] == {"cancelled": 3}
    assert store.get_job(first.job_id).status == "cancelled"
    again = client.post(f"/sweeps/{sweep['id']}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    assert driver.advance(store, sweep["id"], api_settings) == []  # nothing more launches
    assert len(trial_numbers(store, sweep["id"])) == 3


@pytest.mark.parametrize(("change", "loc"), [
    ({"space": {}}, ["body", "space"]),
    ({"space": {"lr": {"low": 0.1, "high": 0.01}}}, ["body", "space", "lr"]),
    ({"space": {"lr": {"low": 0, "high": 0.1, "log": True}}}, ["body", "space", "lr", "low"]),
    ({"space": {"hidden_sizes": {"values": [[8, 8], [4096, 8]]}}},
     ["body", "space", "hidden_sizes", "values[1]"]),
    ({"method": "random"}, ["body", "max_trials"]),
    ({"method": "bayes"}, ["body", "method"]),
    ({"space": {"epochs": {"low": 1, "high": 1000}, "seed": {"low": 0, "high": 10}}},
     ["body", "space"]),
    ({"objective": {"metric": "val_perplexity"}}, ["body", "objective", "metric"]),
    ({"dataset": "nope"}, ["body", "dataset"]),
    ({"early_stopping": {"method": "hyperband"}}, ["body", "early_stopping", "method"]),
])
def test_every_bad_spec_gets_a_422_naming_its_field(client, change, loc):
    response = client.post("/sweeps", json={**GRID, **change})
    assert response.status_code == 422, response.text
    issues = response.json()["detail"]
    assert any(issue["loc"][:len(loc)] == loc for issue in issues), issues


def test_a_sweep_over_the_cap_names_the_setting(store, tmp_path: Path):
    settings = Settings(home=tmp_path / "home", broker_url=None, database_url=None,
                        data_dir=tmp_path / "data", reconcile_in_api=False, max_sweep_trials=3)
    with TestClient(create_app(settings, store=store),
                    base_url="http://127.0.0.1:8000") as client:
        response = client.post("/sweeps", json=GRID)
    assert response.status_code == 422
    assert "4 combinations; at most 3 (TRAINYARD_MAX_SWEEP_TRIALS)" in response.text


def test_another_users_sweep_is_not_found(store, tmp_path: Path):
    keys = {}
    for owner, admin in (("alice", False), ("bob", False), ("root", True)):
        key, prefix, digest = new_api_key()
        store.add_api_key(owner, prefix, digest, is_admin=admin)
        keys[owner] = {"Authorization": f"Bearer {key}"}
    settings = Settings(home=tmp_path / "home", broker_url=None, database_url=None,
                        data_dir=tmp_path / "data", require_keys=True, reconcile_in_api=False)
    with TestClient(create_app(settings, store=store)) as client:
        too_urgent = client.post("/sweeps", json={**GRID, "priority": 50},
                                 headers=keys["alice"])
        assert too_urgent.status_code == 422 and too_urgent.json()["detail"][0]["loc"] == [
            "body", "priority"]
        sweep = client.post("/sweeps", json=GRID, headers=keys["alice"]).json()
        assert sweep["owner"] == "alice"
        for path in (f"/sweeps/{sweep['id']}", f"/sweeps/{sweep['id']}/importance"):
            assert client.get(path, headers=keys["bob"]).status_code == 404
        assert client.post(f"/sweeps/{sweep['id']}/cancel",
                           headers=keys["bob"]).status_code == 404
        assert client.get("/sweeps", headers=keys["bob"]).json()["total"] == 0
        assert client.get(f"/sweeps/{sweep['id']}", headers=keys["root"]).status_code == 200
        trial = sweep["trials"][0]
        assert store.get_job(trial["job_id"]).owner == "alice"  # trials are the owner's jobs


def test_trials_respect_their_owners_queued_job_cap(store, tmp_path: Path):
    settings = Settings(home=tmp_path / "home", broker_url=None, database_url=None,
                        data_dir=tmp_path / "data", reconcile_in_api=False,
                        max_queued_jobs_per_user=3)
    with TestClient(create_app(settings, store=store),
                    base_url="http://127.0.0.1:8000") as client:
        own = client.post("/jobs", json={"model": "mlp", "dataset": "digits",
                                         "hyperparameters": TINY})
        assert own.status_code == 201
        sweep = client.post("/sweeps", json={**GRID, "max_concurrent": 4}).json()
        assert sweep["launched"] == 2  # 1 queued job of the user's + 2 trials = the cap of 3
        assert driver.advance(store, sweep["id"], settings) == []
        store.claim_job(own.json()["id"], worker="w")  # the user's own job leaves the queue
        assert len(driver.advance(store, sweep["id"], settings)) == 1
        assert client.get(f"/sweeps/{sweep['id']}").json()["launched"] == 3


def test_a_sweep_that_cannot_decide_spoils_no_other_reconciler_step(client, store,
                                                                     api_settings):
    from worker.reconciler import reconcile_once

    broken = store.create_sweep(
        name=None, model="mlp", dataset="digits", hyperparameters={}, method="random",
        space={"no_such_parameter": {"values": [1]}}, objective_metric="val_accuracy",
        objective_goal="max", max_trials=3, max_concurrent=1,
        early_stopping={"method": "none"}, seed=0, device="cpu", priority=0)
    good = client.post("/sweeps", json={**GRID, "max_concurrent": 1}).json()
    first = store.sweep_trials(good["id"], "val_accuracy")[0]
    store.claim_job(first.job_id, worker="w")
    store.finish_job(first.job_id, "succeeded")
    sent = []
    report = reconcile_once(store, lambda job_id, device: sent.append(job_id), api_settings)
    assert len(report.launched) == 1 and sent == report.launched
    assert store.get_sweep(broken.id).status == "running"  # left alone, and logged
